"""Login, password reset and sign-up against enumeration and guessing; secrets out of logs.

Login and password reset must return the same response for a known and an
unknown email. Sign-up reports a taken email, so it is limited per client
address.
Failed logins are limited per account (fkod.auth.login_failures_per_account)
and per client address (fkod.ratelimit.per_address_per_minute). Each test
sends from its own REMOTE_ADDR so the per-address counters do not mix.
"""

from __future__ import annotations

import base64
import logging
import re
import shutil

import pytest

from fkod import shutdown
from fkod.admin.testing import ADMIN_TEST_PASSWORD, create_admin
from fkod.core.testing import TEST_PASSWORD, TestClient, auth_header, make_app, make_settings
from tests.functional.portal_pages import csrf_token

FAILURES_PER_ACCOUNT = 3
REQUESTS_PER_ADDRESS = 8
WRONG_PASSWORD = "not the password at all"


@pytest.fixture(scope="module")
def limited_client(tmp_path_factory, migrated_sqlite_template):
    tmp_path = tmp_path_factory.mktemp("limits")
    shutil.copy(migrated_sqlite_template, tmp_path / "fkod.sqlite")
    app = make_app(make_settings(tmp_path, extra={
        "fkod.auth.login_failures_per_account": str(FAILURES_PER_ACCOUNT),
        "fkod.ratelimit.per_address_per_minute": str(REQUESTS_PER_ADDRESS),
    }))
    yield TestClient(app)
    shutdown(app.registry)


def address(number: int) -> dict:
    return {"REMOTE_ADDR": f"127.0.3.{number}"}


def comparable(response) -> tuple:
    """Return what a caller sees of a response, minus the per-request id."""
    body = dict(response.json)
    body.pop("request_id", None)
    return response.status_int, body


def test_api_login_same_for_unknown_email(limited_client):
    client = limited_client
    email = client.register_partner()["user"]["email"]

    def attempt(login_email, number):
        return client.web.post_json("/api/auth/login", {"email": login_email,
                                                        "password": WRONG_PASSWORD},
                                    extra_environ=address(number), expect_errors=True)

    known = attempt(email, 1)
    unknown = attempt("nobody-here@acme.example", 2)

    assert known.status_int == 401
    assert comparable(known) == comparable(unknown)


def test_admin_api_login_same_for_unknown_email(limited_client):
    client = limited_client
    admin = create_admin(client.app)

    def attempt(login_email, number):
        return client.web.post_json("/api/admin/auth/login", {"email": login_email,
                                                              "password": WRONG_PASSWORD},
                                    extra_environ=address(number), expect_errors=True)

    known = attempt(admin["email"], 3)
    unknown = attempt("nobody@staff.fkod.example", 4)

    assert known.status_int == 401
    assert comparable(known) == comparable(unknown)


def test_password_reset_same_for_unknown_email(limited_client):
    client = limited_client
    email = client.register_partner()["user"]["email"]

    def attempt(reset_email, number):
        return client.web.post_json("/api/auth/password-reset", {"email": reset_email},
                                    extra_environ=address(number), expect_errors=True)

    known = attempt(email, 5)
    unknown = attempt("nobody-here@acme.example", 6)

    assert 200 <= known.status_int < 300
    assert known.status_int == unknown.status_int
    assert known.body == unknown.body


def form_attempt(web, path: str, fields: dict, number: int):
    page = web.get(path, extra_environ=address(number))
    return web.post(path, {"csrf_token": csrf_token(page), **fields},
                    extra_environ=address(number), expect_errors=True)


def visible_text(response) -> str:
    """Return the page without its CSRF token, which differs per session."""
    return re.sub(r'name="csrf_token" value="[^"]+"', "", response.text)


@pytest.mark.parametrize(("path", "known_email"), [
    ("/portal/login", "partner"),
    ("/portal/password-reset", "partner"),
    ("/admin/login", "admin"),
])
def test_pages_same_for_unknown_email(limited_client, path, known_email):
    client = limited_client
    if known_email == "admin":
        email = create_admin(client.app)["email"]
    else:
        email = client.register_partner()["user"]["email"]
    fields = {"password": WRONG_PASSWORD} if "login" in path else {}
    number = 10 + len(path)

    known = form_attempt(client.web, path, {"email": email, **fields}, number)
    unknown = form_attempt(client.web, path, {"email": f"x{email}", **fields}, number + 20)

    assert known.status_int == unknown.status_int
    assert visible_text(known).replace(email, "") == visible_text(unknown).replace(
        f"x{email}", "")


def test_signup_reveals_taken_email_and_is_limited(limited_client):
    client = limited_client
    email = client.register_partner()["user"]["email"]
    body = {"company_name": "Copy", "email": email, "password": TEST_PASSWORD}

    statuses = [client.web.post_json("/api/partners/register", body, extra_environ=address(40),
                                     expect_errors=True).status_int
                for _ in range(REQUESTS_PER_ADDRESS + 1)]

    assert statuses[0] == 409
    assert statuses[-1] == 429


def test_api_login_locks_account_after_failures(limited_client):
    client = limited_client
    email = client.register_partner()["user"]["email"]

    # Each attempt comes from another address, so only the account limit applies.
    for number in range(FAILURES_PER_ACCOUNT):
        client.web.post_json("/api/auth/login", {"email": email, "password": WRONG_PASSWORD},
                             extra_environ=address(50 + number), status=401)
    locked = client.web.post_json("/api/auth/login", {"email": email, "password": TEST_PASSWORD},
                                  extra_environ=address(60), expect_errors=True)

    assert locked.status_int == 429
    assert locked.json["code"] == "too_many_failed_logins"
    assert "Retry-After" in locked.headers


def test_admin_api_login_locks_account_after_failures(limited_client):
    client = limited_client
    email = create_admin(client.app)["email"]

    for number in range(FAILURES_PER_ACCOUNT):
        client.web.post_json("/api/admin/auth/login", {"email": email,
                                                       "password": WRONG_PASSWORD},
                             extra_environ=address(70 + number), status=401)
    locked = client.web.post_json("/api/admin/auth/login", {"email": email,
                                                            "password": ADMIN_TEST_PASSWORD},
                                  extra_environ=address(80), expect_errors=True)

    assert locked.status_int == 429


@pytest.mark.parametrize("path", ["/portal/login", "/admin/login"])
def test_login_page_locks_account_after_failures(limited_client, path):
    client = limited_client
    if path.startswith("/admin"):
        email, password = create_admin(client.app)["email"], ADMIN_TEST_PASSWORD
    else:
        email, password = client.register_partner()["user"]["email"], TEST_PASSWORD
    base = 90 if path.startswith("/admin") else 100

    for number in range(FAILURES_PER_ACCOUNT):
        failed = form_attempt(client.web, path, {"email": email, "password": WRONG_PASSWORD},
                              base + number)
        assert failed.status_int in (400, 401), failed.status_int
    locked = form_attempt(client.web, path, {"email": email, "password": password}, base + 9)

    assert locked.status_int == 429


@pytest.mark.parametrize(("path", "kind"), [
    ("/api/auth/login", "json"),
    ("/api/admin/auth/login", "json"),
    ("/portal/login", "form"),
    ("/admin/login", "form"),
])
def test_login_limited_per_address(limited_client, path, kind):
    client = limited_client
    number = {"/api/auth/login": 120, "/api/admin/auth/login": 121,
              "/portal/login": 122, "/admin/login": 123}[path]

    statuses = []
    for attempt in range(REQUESTS_PER_ADDRESS + 1):
        # A new email each time, so the per-account limit never applies.
        fields = {"email": f"guess-{attempt}@acme.example", "password": WRONG_PASSWORD}
        if kind == "json":
            response = client.web.post_json(path, fields, extra_environ=address(number),
                                            expect_errors=True)
        else:
            page = client.web.get(path, extra_environ=address(number), expect_errors=True)
            response = page if page.status_int == 429 else client.web.post(
                path, {"csrf_token": csrf_token(page), **fields},
                extra_environ=address(number), expect_errors=True)
        statuses.append(response.status_int)

    assert 429 in statuses, statuses


# Secrets in logs and error bodies ----------------------------------------------------


def test_secrets_absent_from_logs_and_errors(security_client, caplog):
    client = security_client
    web = client.web
    caplog.set_level(logging.DEBUG)

    registered = client.register_partner()
    email = registered["user"]["email"]
    token = client.login(email)
    owner = auth_header(token)
    key = client.create_key(token)["key"]
    web.get("/api/v1/users", headers=auth_header(key), status=200)
    web.get("/api/v1/users", headers=auth_header(key + "x"), status=401)
    webhook = web.post_json("/api/partners/webhooks", {
        "url": "http://127.0.0.1:9/hook", "event_types": ["partner.verified"],
        "headers": {"Authorization": "Bearer receiver-secret-123456"}},
        headers=owner, status=201).json
    application = web.post_json("/api/developers/applications", {
        "name": "Sync", "redirect_uris": ["https://acme.example/callback"],
        "scopes": ["users:read"]}, headers=owner, status=201).json
    basic = base64.b64encode(
        f"{application['client_id']}:{application['client_secret']}".encode()).decode()
    web.post("/oauth/introspect", {"token": "not-a-token"},
             headers={"Authorization": f"Basic {basic}"}, status=200)

    errors = [
        web.post_json("/api/auth/login", {"email": email, "password": TEST_PASSWORD,
                                          "unknown": key}, expect_errors=True),
        web.post_json("/api/auth/login", {"email": "not an email", "password": TEST_PASSWORD},
                      expect_errors=True),
        web.post_json("/api/partners/webhooks", {"url": key, "secret": webhook["secret"]},
                      headers=owner, expect_errors=True),
        web.post("/oauth/token", {"grant_type": "client_credentials", "scope": "nope",
                                  "client_id": application["client_id"],
                                  "client_secret": application["client_secret"] + "x"},
                 expect_errors=True),
    ]

    secrets_sent = {"password": TEST_PASSWORD, "api key": key, "login token": token,
                    "webhook secret": webhook["secret"],
                    "webhook header": "receiver-secret-123456",
                    "oauth client secret": application["client_secret"]}
    logged = "\n".join(f"{record.getMessage()} {record.__dict__}" for record in caplog.records)
    assert caplog.records, "no log record was captured"
    for name, secret in secrets_sent.items():
        assert secret not in logged, f"the {name} appears in a log record"
        for response in errors:
            assert response.status_int >= 400
            assert secret not in response.text, f"the {name} is echoed by {response.request.path}"
