"""Two-factor authentication with TOTP: setup, enable, login with a code, replay, disable."""

from __future__ import annotations

import urllib.parse

import pytest
import sqlalchemy as sa

from fkod.core.audit import AuditEntry
from fkod.core.auth import totp
from fkod.core.auth.models import User
from fkod.core.db import run_in_transaction
from fkod.core.testing import TEST_PASSWORD, auth_header
from tests.envelope import assert_envelope

pytestmark = pytest.mark.shared_app


@pytest.fixture
def owner(client):
    registered = client.register_partner()
    email = registered["user"]["email"]
    return {"email": email, "user_id": registered["user"]["id"],
            "token": client.login(email)}


def code(secret: str, offset: int = 0) -> str:
    """Return the code of the current time step plus ``offset`` steps."""
    return totp.code_at_step(secret, totp.current_step() + offset)


def wrong_code(secret: str) -> str:
    valid = {code(secret, offset) for offset in (-1, 0, 1, 2)}
    return next(candidate for candidate in ("000000", "111111", "222222", "333333", "444444")
                if candidate not in valid)


def stored_user(app, user_id: str) -> User:
    number = int(user_id.removeprefix("user_"))
    return run_in_transaction(app.registry["db.session_factory"],
                              lambda session: session.get(User, number))


def audit_actions(app) -> list[str]:
    return run_in_transaction(app.registry["db.session_factory"], lambda session: session.scalars(
        sa.select(AuditEntry.action).order_by(AuditEntry.id)).all())


def set_up(client, token: str) -> dict:
    return client.web.post_json("/api/auth/totp/setup", {}, headers=auth_header(token)).json


def enable(client, token: str, value: str, status: int = 200):
    return client.web.post_json("/api/auth/totp/enable",
                                {"password": TEST_PASSWORD, "code": value},
                                headers=auth_header(token), status=status)


def log_in(client, email: str, *, password: str = TEST_PASSWORD, totp_code: str | None = None,
           status: int = 200):
    body = {"email": email, "password": password}
    if totp_code is not None:
        body["totp_code"] = totp_code
    return client.web.post_json("/api/auth/login", body, status=status)


@pytest.fixture
def enabled(client, owner):
    """The owner with TOTP on; the step of the enabling code is used up."""
    secret = set_up(client, owner["token"])["secret"]
    enabling_code = code(secret)
    enable(client, owner["token"], enabling_code)
    return {**owner, "secret": secret, "enabling_code": enabling_code}


# Setup and enable ---------------------------------------------------------------------


def test_setup_returns_secret_and_uri(client, app, owner):
    response = client.web.post_json("/api/auth/totp/setup", {},
                                    headers=auth_header(owner["token"]))

    body = response.json
    assert response.headers["Cache-Control"] == "no-store"
    uri = urllib.parse.urlparse(body["otpauth_uri"])
    assert uri.scheme == "otpauth"
    assert urllib.parse.parse_qs(uri.query)["secret"] == [body["secret"]]
    assert owner["email"] in urllib.parse.unquote(uri.path)
    stored = stored_user(app, owner["user_id"])
    assert stored.totp_secret != body["secret"]
    assert app.registry["webhook_vault"].decrypt(stored.totp_secret) == body["secret"]
    assert stored.totp_enabled_at is None


def test_setup_alone_changes_nothing(client, owner):
    set_up(client, owner["token"])

    assert log_in(client, owner["email"]).json["access_token"]
    me = client.web.get("/api/auth/me", headers=auth_header(owner["token"])).json
    assert me["totp_enabled"] is False


def test_enable_with_code(client, app, owner):
    secret = set_up(client, owner["token"])["secret"]

    response = enable(client, owner["token"], code(secret))

    assert response.json["totp_enabled"] is True
    assert stored_user(app, owner["user_id"]).totp_enabled_at is not None
    assert "auth.totp_enabled" in audit_actions(app)


def test_enable_wrong_code_rejected(client, app, owner):
    secret = set_up(client, owner["token"])["secret"]

    response = enable(client, owner["token"], wrong_code(secret), status=400)

    body = assert_envelope(response, 400, "invalid_totp_code")
    assert [error["name"] for error in body["errors"]] == ["code"]
    assert stored_user(app, owner["user_id"]).totp_enabled_at is None


def test_enable_without_setup_conflicts(client, owner):
    response = enable(client, owner["token"], "123456", status=409)

    assert_envelope(response, 409, "totp_not_set_up")


def test_setup_when_enabled_conflicts(client, enabled):
    response = client.web.post_json("/api/auth/totp/setup", {},
                                    headers=auth_header(enabled["token"]), status=409)

    assert_envelope(response, 409, "totp_already_enabled")


def test_enable_twice_conflicts(client, enabled):
    response = enable(client, enabled["token"], code(enabled["secret"], 1), status=409)

    assert_envelope(response, 409, "totp_already_enabled")


@pytest.mark.parametrize("body,field", [
    ({"password": TEST_PASSWORD}, "code"),
    ({"password": TEST_PASSWORD, "code": 123456}, "code"),
    ({"password": TEST_PASSWORD, "code": "12345"}, "code"),
    ({"password": TEST_PASSWORD, "code": "abcdef"}, "code"),
    ({"code": "123456"}, "password"),
    ({"password": TEST_PASSWORD, "code": "123456", "secret": "x"}, "secret"),
])
def test_enable_bad_input_rejected(client, owner, body, field):
    set_up(client, owner["token"])

    response = client.web.post_json("/api/auth/totp/enable", body,
                                    headers=auth_header(owner["token"]), status=400)

    body = assert_envelope(response, 400, "validation_failed")
    assert [error["name"] for error in body["errors"]] == [field]


def test_enable_needs_password(client, owner, app):
    secret = set_up(client, owner["token"])["secret"]

    response = client.web.post_json(
        "/api/auth/totp/enable", {"password": "not the password", "code": code(secret)},
        headers=auth_header(owner["token"]), status=400)

    body = assert_envelope(response, 400, "invalid_password")
    assert [error["name"] for error in body["errors"]] == ["password"]
    me = client.web.get("/api/auth/me", headers=auth_header(owner["token"])).json
    assert me["totp_enabled"] is False


def test_setup_rejects_fields(client, owner):
    response = client.web.post_json("/api/auth/totp/setup", {"secret": "ABCDEF"},
                                    headers=auth_header(owner["token"]), status=400)

    assert_envelope(response, 400, "validation_failed")


# Login -------------------------------------------------------------------------------


def test_login_without_code_requires_it(client, enabled):
    response = log_in(client, enabled["email"], status=401)

    body = assert_envelope(response, 401, "totp_required")
    assert [error["name"] for error in body["errors"]] == ["totp_code"]


def test_wrong_password_hides_totp(client, enabled):
    response = log_in(client, enabled["email"], password="wrong password!!", status=401)

    assert_envelope(response, 401, "invalid_credentials")


def test_login_with_next_code(client, enabled):
    response = log_in(client, enabled["email"], totp_code=code(enabled["secret"], 1))

    assert response.json["access_token"]


@pytest.mark.shared_app(False)
def test_login_wrong_code_rejected(client, app, enabled):
    response = log_in(client, enabled["email"], totp_code=wrong_code(enabled["secret"]),
                      status=401)

    assert_envelope(response, 401, "invalid_credentials")
    failed = run_in_transaction(
        app.registry["db.session_factory"], lambda session: session.scalars(
            sa.select(AuditEntry).where(AuditEntry.action == "auth.login_failed")).all())
    assert [entry.details for entry in failed] == [{"reason": "wrong_totp_code"}]


def test_enabling_code_not_accepted_again(client, enabled):
    # The code that enabled TOTP belongs to a step already used.
    response = log_in(client, enabled["email"], totp_code=enabled["enabling_code"], status=401)

    assert_envelope(response, 401, "invalid_credentials")


def test_replayed_login_code_rejected(client, enabled):
    next_code = code(enabled["secret"], 1)
    log_in(client, enabled["email"], totp_code=next_code)

    response = log_in(client, enabled["email"], totp_code=next_code, status=401)

    assert_envelope(response, 401, "invalid_credentials")


def test_code_two_steps_ahead_rejected(client, enabled):
    response = log_in(client, enabled["email"], totp_code=code(enabled["secret"], 3),
                      status=401)

    assert_envelope(response, 401, "invalid_credentials")


# Disable -------------------------------------------------------------------------------


def disable(client, token: str, body: dict, status: int = 200):
    return client.web.post_json("/api/auth/totp/disable", body, headers=auth_header(token),
                                status=status)


def test_disable_with_password_and_code(client, app, enabled):
    response = disable(client, enabled["token"],
                       {"password": TEST_PASSWORD, "code": code(enabled["secret"], 1)})

    assert response.json["totp_enabled"] is False
    stored = stored_user(app, enabled["user_id"])
    assert stored.totp_secret is None
    assert stored.totp_enabled_at is None
    assert log_in(client, enabled["email"]).json["access_token"]
    assert "auth.totp_disabled" in audit_actions(app)


def test_disable_wrong_password_names_field(client, app, enabled):
    response = disable(client, enabled["token"],
                       {"password": "wrong password!!", "code": code(enabled["secret"], 1)},
                       status=400)

    body = assert_envelope(response, 400, "invalid_password")
    assert [error["name"] for error in body["errors"]] == ["password"]
    assert stored_user(app, enabled["user_id"]).totp_enabled_at is not None


def test_disable_wrong_code_names_field(client, app, enabled):
    response = disable(client, enabled["token"],
                       {"password": TEST_PASSWORD, "code": wrong_code(enabled["secret"])},
                       status=400)

    body = assert_envelope(response, 400, "invalid_totp_code")
    assert [error["name"] for error in body["errors"]] == ["code"]
    assert stored_user(app, enabled["user_id"]).totp_enabled_at is not None


def test_disable_replayed_code_rejected(client, enabled):
    used = code(enabled["secret"], 1)
    log_in(client, enabled["email"], totp_code=used)

    response = disable(client, enabled["token"], {"password": TEST_PASSWORD, "code": used},
                       status=400)

    assert_envelope(response, 400, "invalid_totp_code")


def test_disable_when_off_conflicts(client, owner):
    response = disable(client, owner["token"], {"password": TEST_PASSWORD, "code": "123456"},
                       status=409)

    assert_envelope(response, 409, "totp_not_enabled")


@pytest.mark.parametrize("body,field", [
    ({"code": "123456"}, "password"),
    ({"password": TEST_PASSWORD}, "code"),
    ({"password": TEST_PASSWORD, "code": "12 456"}, "code"),
    ({"password": 5, "code": "123456"}, "password"),
    ({"password": TEST_PASSWORD, "code": "123456", "force": True}, "force"),
])
def test_disable_bad_input_rejected(client, enabled, body, field):
    response = disable(client, enabled["token"], body, status=400)

    body = assert_envelope(response, 400, "validation_failed")
    assert [error["name"] for error in body["errors"]] == [field]


def test_totp_operations_need_token(client):
    for path in ("/api/auth/totp/setup", "/api/auth/totp/enable", "/api/auth/totp/disable"):
        response = client.web.post_json(path, {}, status=401)
        assert_envelope(response, 401, "missing_credentials")
