"""Portal account pages: sign-up, login with a second factor, logout, password reset, email."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fkod.core.auth import totp
from fkod.core.auth.models import Partner, User
from fkod.core.db import run_in_transaction
from fkod.core.testing import TEST_PASSWORD, TestClient, auth_header
from tests.functional.portal_pages import (
    csrf_token,
    field_errors,
    input_value,
    log_in,
    post_form,
    sign_up,
)
from tests.functional.test_auth_mail import mailed_token

pytestmark = pytest.mark.shared_app

NEW_PASSWORD = "another long passphrase 7"
SESSION_COOKIE = "fkod_portal_session"


def session_cookie_header(response) -> str:
    headers = [value for name, value in response.headerlist
               if name == "Set-Cookie" and value.startswith(SESSION_COOKIE + "=")]
    assert len(headers) == 1, response.headerlist
    return headers[0]


def count_rows(app, model, *conditions) -> int:
    return run_in_transaction(app.registry["db.session_factory"], lambda session: session.scalar(
        sa.select(sa.func.count()).select_from(model).where(*conditions)))


def test_signup_errors_keep_values_and_escape(client, app):
    company = "<script>alert(1)</script>"
    page = post_form(client.web, "/portal/signup", {
        "company_name": company, "name": "Ada", "email": "not-an-email", "password": "short"})

    assert page.status_int == 400
    assert field_errors(page, "email") == ["Not a valid email address."]
    assert field_errors(page, "password")
    assert field_errors(page, "company_name") == []
    assert input_value(page, "email") == "not-an-email"
    assert input_value(page, "name") == "Ada"
    assert input_value(page, "company_name") == "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert "<script>alert(1)" not in page.text
    assert input_value(page, "password") is None
    assert count_rows(app, Partner) == 0


def test_signup_creates_partner_then_login(client, app):
    company = "<script>alert(1)</script>"
    response = sign_up(client, "owner@acme.example", company_name=company)
    assert response.location.endswith("/portal/login?email=owner%40acme.example")

    login_page = response.follow()
    assert "owner@acme.example" in login_page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt; is registered" in login_page.text
    assert count_rows(app, Partner, Partner.company_name == company) == 1

    dashboard = log_in(client.web, "owner@acme.example").follow()
    assert dashboard.status_int == 200
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dashboard.text
    assert "<script>alert(1)" not in dashboard.text

    taken = post_form(client.web, "/portal/signup", {
        "company_name": "Other", "email": "owner@acme.example", "password": TEST_PASSWORD})
    assert taken.status_int == 409
    assert field_errors(taken, "email") == ["Already registered."]
    assert count_rows(app, Partner) == 1


def test_login_errors_and_redirects(client):
    registered = client.register_partner()
    email = registered["user"]["email"]

    assert client.web.get("/portal").location.endswith("/portal/login?next=%2Fportal")
    wrong = post_form(client.web, "/portal/login", {"email": email, "password": "wrong one!"})
    assert wrong.status_int == 401
    assert "The email, password or authentication code is incorrect." in wrong.text
    assert input_value(wrong, "email") == email

    empty = post_form(client.web, "/portal/login", {"email": email})
    assert empty.status_int == 400
    assert field_errors(empty, "password") == ["Missing data for required field."]

    page = client.web.get("/portal/login?next=/portal/webhooks")
    response = client.web.post("/portal/login?next=/portal/webhooks", {
        "csrf_token": csrf_token(page), "email": email, "password": TEST_PASSWORD}, status=303)
    assert response.location.endswith("/portal/webhooks")

    # A signed-in visitor is redirected, and a next= to another site is ignored.
    again = client.web.get("/portal/login?next=//evil.example/", status=303)
    assert again.location.endswith("/portal")


def test_login_asks_for_totp_code(client, app):
    registered = client.register_partner()
    email = registered["user"]["email"]
    token = client.login(email)
    secret = client.web.post_json("/api/auth/totp/setup", {}, headers=auth_header(token)).json[
        "secret"]
    client.web.post_json("/api/auth/totp/enable", {
        "password": TEST_PASSWORD, "code": totp.code_at_step(secret, totp.current_step())},
        headers=auth_header(token), status=200)

    asked = post_form(client.web, "/portal/login", {"email": email, "password": TEST_PASSWORD})
    assert asked.status_int == 401
    assert field_errors(asked, "totp_code") == [
        "Enter the 6-digit code from your authenticator app."]
    assert input_value(asked, "totp_code") is None

    bad = client.web.post("/portal/login", {"csrf_token": csrf_token(asked), "email": email,
                                            "password": TEST_PASSWORD, "totp_code": "12ab"},
                          status=400)
    assert field_errors(bad, "totp_code") == [
        "Must be the 6-digit code from the authenticator app."]

    code = totp.code_at_step(secret, totp.current_step() + 1)
    done = client.web.post("/portal/login", {"csrf_token": csrf_token(bad), "email": email,
                                             "password": TEST_PASSWORD, "totp_code": code},
                           status=303)
    assert done.location.endswith("/portal")
    assert client.web.get("/portal").status_int == 200


def test_session_cookie_attributes(client):
    page = client.web.get("/portal/login")
    header = session_cookie_header(page)
    assert "HttpOnly" in header
    assert "SameSite=Lax" in header
    assert "Path=/;" in header
    assert "secure" not in header.lower()


def test_session_cookie_secure_in_production(app_factory):
    # Production never creates a signing key file, so the test passes one.
    signing_key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()
    client = TestClient(app_factory(**{"fkod.environment": "production",
                                       "fkod.secrets.jwt_private_key": signing_key}))
    header = session_cookie_header(client.web.get("/portal/login"))
    assert "; secure" in header.lower()
    assert "HttpOnly" in header
    assert "SameSite=Lax" in header


@pytest.mark.shared_app(False)
def test_csrf_refused_on_account_forms(client, app):
    registered = client.register_partner()
    email = registered["user"]["email"]
    forms = {
        "/portal/signup": {"company_name": "X", "email": "x@x.example", "password": TEST_PASSWORD},
        "/portal/login": {"email": email, "password": TEST_PASSWORD},
        "/portal/password-reset": {"email": email},
        "/password-reset": {"token": "t", "new_password": NEW_PASSWORD},
        "/verify-email": {"token": "t"},
    }
    client.web.get("/portal/login")
    for path, fields in forms.items():
        for token in (None, "wrong-token"):
            body = dict(fields, **({"csrf_token": token} if token else {}))
            response = client.web.post(path, body, status=403)
            assert "The form expired or did not come from this site." in response.text, path
    assert count_rows(app, Partner) == 1

    log_in(client.web, email)
    client.web.post("/portal/logout", {"csrf_token": "wrong-token"}, status=403)
    assert client.web.get("/portal").status_int == 200


def test_logout_and_logout_everywhere(client, app):
    registered = client.register_partner()
    email = registered["user"]["email"]
    log_in(client.web, email)
    other = TestClient(app)
    log_in(other.web, email)

    response = post_form(client.web, "/portal/logout", {}, form_page="/portal", status=303)
    assert client.web.get("/portal").status_int == 303
    assert "You are logged out." in response.follow().text
    assert other.web.get("/portal").status_int == 200

    log_in(client.web, email)
    post_form(client.web, "/portal/logout", {"everywhere": "true"}, form_page="/portal",
              status=303)
    assert client.web.get("/portal").status_int == 303
    assert other.web.get("/portal").status_int == 303


def test_password_change_ends_session(client):
    registered = client.register_partner()
    email = registered["user"]["email"]
    log_in(client.web, email)
    token = client.login(email)
    client.web.post_json("/api/auth/password", {"current_password": TEST_PASSWORD,
                                                "new_password": NEW_PASSWORD},
                         headers=auth_header(token), status=200)
    assert client.web.get("/portal").status_int == 303


def test_password_reset_through_mail(client, app):
    registered = client.register_partner()
    email = registered["user"]["email"]
    log_in(client.web, email)

    bad = post_form(client.web, "/portal/password-reset", {"email": "nope"})
    assert bad.status_int == 400
    assert field_errors(bad, "email") == ["Not a valid email address."]
    assert input_value(bad, "email") == "nope"

    requested = post_form(client.web, "/portal/password-reset", {"email": email}, status=303)
    assert "a reset link is on its way" in requested.maybe_follow().text
    token = mailed_token(client, email, "Reset your F-KOD password")

    page = client.web.get(f"/password-reset?token={token}")
    assert input_value(page, "token") == token
    short = client.web.post("/password-reset", {"csrf_token": csrf_token(page), "token": token,
                                                "new_password": "short"}, status=400)
    assert field_errors(short, "new_password")

    wrong = client.web.post("/password-reset", {"csrf_token": csrf_token(page),
                                                "token": "not-the-token",
                                                "new_password": NEW_PASSWORD}, status=400)
    assert "The token is invalid, expired or already used" in wrong.text

    done = client.web.post("/password-reset", {"csrf_token": csrf_token(page), "token": token,
                                               "new_password": NEW_PASSWORD}, status=303)
    assert "Your password is changed" in done.follow().text
    assert client.web.get("/portal").status_int == 303
    log_in(client.web, email, NEW_PASSWORD)
    assert client.web.get("/portal").status_int == 200


@pytest.mark.shared_app(False)
def test_verify_email_page(client, app):
    sign_up(client, "verify@acme.example")
    token = mailed_token(client, "verify@acme.example", "Verify your email address for F-KOD")

    page = client.web.get(f"/verify-email?token={token}")
    assert input_value(page, "token") == token
    assert count_rows(app, User, User.email_verified_at.is_not(None)) == 0

    done = client.web.post("/verify-email", {"csrf_token": csrf_token(page), "token": token},
                           status=303)
    assert "verify@acme.example is verified." in done.follow().text
    assert count_rows(app, User, User.email_verified_at.is_not(None)) == 1

    reused = client.web.post("/verify-email", {"csrf_token": csrf_token(page), "token": token},
                             status=400)
    assert "The token is invalid, expired or already used" in reused.text


def test_login_rate_limited_per_account(app_factory):
    client = TestClient(app_factory(**{"fkod.auth.login_failures_per_account": "2"}))
    email = client.register_partner()["user"]["email"]
    for _ in range(2):
        post_form(client.web, "/portal/login", {"email": email, "password": "wrong one!"},
                  status=401)
    limited = post_form(client.web, "/portal/login", {"email": email, "password": TEST_PASSWORD},
                        status=429)
    assert int(limited.headers["Retry-After"]) > 0
    assert re.search(r"Too many failed logins for this account", limited.text)
