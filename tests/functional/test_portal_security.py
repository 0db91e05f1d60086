"""The portal's account security page: changing the password and the second factor."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa

from fkod.core.auth import totp
from fkod.core.auth.models import User
from fkod.core.db import read_only
from fkod.core.testing import TEST_PASSWORD, TestClient
from tests.functional.portal_pages import (
    field_errors,
    input_value,
    log_in,
    post_form,
    signed_in_owner,
)

pytestmark = pytest.mark.shared_app

SECURITY = "/portal/account/security"
NEW_PASSWORD = "a-new-password-42"
SECRET = re.compile(r'id="totp-secret" class="mono" readonly value="([A-Z2-7]+)"')


def stored_user(app, email: str) -> User:
    return read_only(app.registry["db.engine"], lambda connection: connection.execute(
        sa.select(User.__table__).where(User.email == email)).one())


def test_security_page_needs_login_and_csrf(client):
    assert "/portal/login?next=" in client.web.get(SECURITY, status=303).location
    signed_in_owner(client)
    assert "Change password" in client.web.get(SECURITY).text
    client.web.post("/portal/account/password", {"current_password": TEST_PASSWORD,
                                                 "new_password": NEW_PASSWORD}, status=403)


def test_change_password_keeps_this_session(client, app):
    email = signed_in_owner(client)["user"]["email"]

    wrong = post_form(client.web, "/portal/account/password", {
        "current_password": "not-the-password", "new_password": NEW_PASSWORD},
        form_page=SECURITY, status=400)
    assert field_errors(wrong, "current_password")
    assert input_value(wrong, "current_password") is None
    short = post_form(client.web, "/portal/account/password", {
        "current_password": TEST_PASSWORD, "new_password": "short"}, form_page=SECURITY,
        status=400)
    assert field_errors(short, "new_password")

    done = post_form(client.web, "/portal/account/password", {
        "current_password": TEST_PASSWORD, "new_password": NEW_PASSWORD}, form_page=SECURITY,
        status=303)
    assert done.location.endswith(SECURITY)
    assert "Password changed" in client.web.get(SECURITY).text
    assert client.web.get("/portal").status_int == 200

    other = TestClient(app)
    post_form(other.web, "/portal/login", {"email": email, "password": TEST_PASSWORD},
              status=401)
    log_in(other.web, email, NEW_PASSWORD)


def test_second_factor_on_and_off(client, app):
    email = signed_in_owner(client)["user"]["email"]
    started = post_form(client.web, "/portal/account/totp/setup", {}, form_page=SECURITY,
                        status=200)
    secret = SECRET.search(started.text).group(1)
    assert "otpauth://" in started.text
    assert stored_user(app, email).totp_enabled_at is None

    wrong = post_form(client.web, "/portal/account/totp/enable", {
        "password": TEST_PASSWORD, "code": "000000" if totp.code_at_step(
            secret, totp.current_step()) != "000000" else "111111"},
        form_page=SECURITY, status=400)
    assert field_errors(wrong, "code")
    assert stored_user(app, email).totp_enabled_at is None

    post_form(client.web, "/portal/account/totp/enable", {
        "password": TEST_PASSWORD, "code": totp.code_at_step(secret, totp.current_step())},
        form_page=SECURITY, status=303)
    assert stored_user(app, email).totp_enabled_at is not None
    assert "Login asks for a code" in client.web.get(SECURITY).text

    bad_password = post_form(client.web, "/portal/account/totp/disable", {
        "password": "not-the-password",
        "code": totp.code_at_step(secret, totp.current_step() + 1)},
        form_page=SECURITY, status=400)
    assert field_errors(bad_password, "password")
    assert stored_user(app, email).totp_enabled_at is not None

    post_form(client.web, "/portal/account/totp/disable", {
        "password": TEST_PASSWORD, "code": totp.code_at_step(secret, totp.current_step() + 1)},
        form_page=SECURITY, status=303)
    assert stored_user(app, email).totp_enabled_at is None
