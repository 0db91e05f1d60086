"""Login tokens: login audit, logout, logout everywhere, password change, suspension, /me."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest
import sqlalchemy as sa

from fkod.core.audit import AuditEntry
from fkod.core.auth.models import Partner, RevokedToken, User, UserToken
from fkod.core.db import run_in_transaction
from fkod.core.testing import TEST_PASSWORD, auth_header
from tests.envelope import assert_envelope

pytestmark = pytest.mark.shared_app

NEW_PASSWORD = "a brand new passphrase 42"


@pytest.fixture
def owner(client):
    """A registered partner owner: email, partner id, user id and a login token."""
    registered = client.register_partner()
    email = registered["user"]["email"]
    return {"email": email, "partner_id": registered["partner"]["id"],
            "user_id": registered["user"]["id"], "token": client.login(email)}


def in_db(app, work):
    return run_in_transaction(app.registry["db.session_factory"], work)


def audit_entries(app, action: str) -> list[AuditEntry]:
    return in_db(app, lambda session: session.scalars(
        sa.select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)).all())


def stored_user(app, user_id: str) -> User:
    return in_db(app, lambda session: session.get(User, int(user_id.removeprefix("user_"))))


def set_partner_status(app, partner_id: str, status: str) -> None:
    def work(session):
        session.get(Partner, int(partner_id.removeprefix("partner_"))).status = status

    in_db(app, work)


def wait_for_mail(client, address: str, count: int = 1, timeout: float = 15):
    """Return the messages sent to ``address`` once there are at least ``count``."""
    client.drain_tasks()
    deadline = time.monotonic() + timeout
    while True:
        messages = client.registry["mailer"].messages_to(address)
        if len(messages) >= count or time.monotonic() > deadline:
            return messages
        time.sleep(0.05)


def get_me(client, token: str, status: int = 200):
    return client.web.get("/api/auth/me", headers=auth_header(token), status=status)


# Login ---------------------------------------------------------------------------------


def test_login_audited_with_partner(client, app, owner):
    client.web.post_json("/api/auth/login", {"email": owner["email"], "password": TEST_PASSWORD},
                         extra_environ={"REMOTE_ADDR": "203.0.113.20"})

    entry = audit_entries(app, "auth.login")[-1]
    assert entry.partner_id == int(owner["partner_id"].removeprefix("partner_"))
    assert entry.actor_type == "user"
    assert entry.target_id == owner["user_id"]
    assert entry.ip_address == "203.0.113.20"


def test_failed_login_audited_without_password(client, app, owner):
    secret_attempt = "my-very-secret-attempt-123"
    response = client.web.post_json("/api/auth/login",
                                    {"email": owner["email"], "password": secret_attempt},
                                    status=401)

    assert_envelope(response, 401, "invalid_credentials")
    entries = audit_entries(app, "auth.login_failed")
    assert len(entries) == 1
    assert entries[0].partner_id == int(owner["partner_id"].removeprefix("partner_"))
    assert entries[0].target_id == owner["user_id"]
    assert entries[0].details == {"reason": "wrong_password"}
    assert secret_attempt not in json.dumps(entries[0].details)


@pytest.mark.shared_app(False)
def test_unknown_email_login_not_audited(client, app):
    response = client.web.post_json(
        "/api/auth/login", {"email": "nobody@acme.example", "password": TEST_PASSWORD},
        status=401)

    assert_envelope(response, 401, "invalid_credentials")
    assert audit_entries(app, "auth.login_failed") == []


def test_login_response_not_cached(client, owner):
    response = client.web.post_json("/api/auth/login",
                                    {"email": owner["email"], "password": TEST_PASSWORD})

    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("body,field", [
    ({"password": TEST_PASSWORD}, "email"),
    ({"email": "owner@acme.example"}, "password"),
    ({"email": 12, "password": TEST_PASSWORD}, "email"),
    ({"email": "owner@acme.example", "password": TEST_PASSWORD, "totp_code": "12ab56"},
     "totp_code"),
    ({"email": "owner@acme.example", "password": TEST_PASSWORD, "totp_code": 123456},
     "totp_code"),
    ({"email": "owner@acme.example", "password": TEST_PASSWORD, "remember": True}, "remember"),
])
def test_login_bad_input_rejected(client, body, field):
    response = client.web.post_json("/api/auth/login", body, status=400)

    body = assert_envelope(response, 400, "validation_failed")
    assert field in [error["name"] for error in body["errors"]]


# Per-account login limit -----------------------------------------------------------------


@pytest.fixture
def strict_login_client(app_factory):
    from fkod.core.testing import TestClient

    return TestClient(app_factory(**{"fkod.auth.login_failures_per_account": "3"}))


def failed_login(client, email: str, address: str, status: int = 401):
    return client.web.post_json("/api/auth/login", {"email": email, "password": "wrong guess 123"},
                                extra_environ={"REMOTE_ADDR": address}, status=status)


def test_account_limit_spans_addresses(strict_login_client):
    client = strict_login_client
    email = client.register_partner()["user"]["email"]
    for number in range(3):
        failed_login(client, email, f"198.51.100.{number + 1}")

    response = client.web.post_json("/api/auth/login", {"email": email, "password": TEST_PASSWORD},
                                    extra_environ={"REMOTE_ADDR": "198.51.100.99"}, status=429)

    assert_envelope(response, 429, "too_many_failed_logins")
    assert 1 <= int(response.headers["Retry-After"]) <= 900


def test_account_limit_spares_other_accounts(strict_login_client):
    client = strict_login_client
    locked = client.register_partner()["user"]["email"]
    other = client.register_partner()["user"]["email"]
    for _ in range(3):
        failed_login(client, locked, "198.51.100.1")

    assert client.login(other)
    failed_login(client, locked, "198.51.100.1", status=429)


def test_account_limit_same_for_unknown_email(strict_login_client):
    client = strict_login_client
    for number in range(3):
        failed_login(client, "nobody@acme.example", f"198.51.100.{number + 1}")

    response = failed_login(client, "NoBody@Acme.example", "198.51.100.50", status=429)

    assert_envelope(response, 429, "too_many_failed_logins")


def test_successful_login_clears_failures(strict_login_client):
    client = strict_login_client
    email = client.register_partner()["user"]["email"]
    for _ in range(2):
        failed_login(client, email, "198.51.100.1")
    client.login(email)
    for _ in range(2):
        failed_login(client, email, "198.51.100.1")

    assert client.login(email)


# Logout -----------------------------------------------------------------------------------


def test_logout_revokes_only_that_token(client, app, owner):
    other = client.login(owner["email"])

    response = client.web.post_json("/api/auth/logout", {}, headers=auth_header(owner["token"]),
                                    status=204)

    assert response.body == b""
    for path in ("/api/auth/me", "/api/partners/me"):
        rejected = client.web.get(path, headers=auth_header(owner["token"]), status=401)
        assert_envelope(rejected, 401, "token_revoked")
    assert get_me(client, other).json["email"] == owner["email"]


@pytest.mark.shared_app(False)
def test_logout_stores_jti_until_expiry(client, app, owner):
    claims = app.registry["token_signer"].verify(owner["token"])

    client.web.post_json("/api/auth/logout", {}, headers=auth_header(owner["token"]), status=204)

    rows = in_db(app, lambda session: session.scalars(sa.select(RevokedToken)).all())
    assert [row.jti for row in rows] == [claims["jti"]]
    expires_at = dt.datetime.fromtimestamp(claims["exp"], dt.UTC).replace(tzinfo=None)
    assert rows[0].expires_at == expires_at
    assert audit_entries(app, "auth.logout")[-1].details == {"everywhere": False}


def test_logout_twice_rejected(client, owner):
    client.web.post_json("/api/auth/logout", {}, headers=auth_header(owner["token"]), status=204)

    response = client.web.post_json("/api/auth/logout", {}, headers=auth_header(owner["token"]),
                                    status=401)

    assert_envelope(response, 401, "token_revoked")


def test_logout_everywhere_revokes_all(client, app, owner):
    other = client.login(owner["email"])

    client.web.post_json("/api/auth/logout", {"everywhere": True},
                         headers=auth_header(owner["token"]), status=204)

    for token in (owner["token"], other):
        assert_envelope(get_me(client, token, status=401), 401, "token_revoked")
    # A login right after, even within the same second, gets a working token.
    fresh = client.login(owner["email"])
    assert get_me(client, fresh).json["id"] == owner["user_id"]
    assert stored_user(app, owner["user_id"]).tokens_valid_after is not None


def test_logout_needs_token(client):
    response = client.web.post_json("/api/auth/logout", {}, status=401)

    assert_envelope(response, 401, "missing_credentials")


@pytest.mark.parametrize("body,field", [
    ({"everywhere": "yes"}, "everywhere"),
    ({"everywhere": 1}, "everywhere"),
    ({"all": True}, "all"),
])
def test_logout_bad_input_rejected(client, owner, body, field):
    response = client.web.post_json("/api/auth/logout", body,
                                    headers=auth_header(owner["token"]), status=400)

    body = assert_envelope(response, 400, "validation_failed")
    assert [error["name"] for error in body["errors"]] == [field]
    assert get_me(client, owner["token"]).status_int == 200


# Password change -----------------------------------------------------------------------------


def change_password(client, token: str, current: str = TEST_PASSWORD,
                    new: str = NEW_PASSWORD, status: int = 200):
    return client.web.post_json("/api/auth/password",
                                {"current_password": current, "new_password": new},
                                headers=auth_header(token), status=status)


def test_password_change_returns_working_token(client, app, owner):
    other = client.login(owner["email"])

    response = change_password(client, owner["token"])

    fresh = response.json["access_token"]
    assert response.headers["Cache-Control"] == "no-store"
    assert response.json["partner_id"] == owner["partner_id"]
    assert client.web.get("/api/partners/me", headers=auth_header(fresh)).status_int == 200
    for token in (owner["token"], other):
        assert_envelope(get_me(client, token, status=401), 401, "token_revoked")


def test_password_change_sets_new_password(client, app, owner):
    change_password(client, owner["token"])

    client.web.post_json("/api/auth/login", {"email": owner["email"], "password": TEST_PASSWORD},
                         status=401)
    assert client.login(owner["email"], NEW_PASSWORD)
    user = stored_user(app, owner["user_id"])
    assert user.password_changed_at is not None
    assert NEW_PASSWORD not in user.password_hash
    assert audit_entries(app, "auth.password_changed")[-1].target_id == owner["user_id"]


def test_password_change_mails_notice(client, owner):
    change_password(client, owner["token"])

    subjects = [message.subject for message in wait_for_mail(client, owner["email"], 2)]
    assert "Your F-KOD password was changed" in subjects


def test_wrong_current_password_names_field(client, app, owner):
    response = change_password(client, owner["token"], current="not my password", status=400)

    body = assert_envelope(response, 400, "invalid_password")
    assert [error["name"] for error in body["errors"]] == ["current_password"]
    assert get_me(client, owner["token"]).status_int == 200
    assert client.login(owner["email"])


@pytest.mark.parametrize("body,field", [
    ({"current_password": TEST_PASSWORD, "new_password": "short"}, "new_password"),
    ({"current_password": TEST_PASSWORD, "new_password": "x" * 257}, "new_password"),
    ({"current_password": TEST_PASSWORD, "new_password": TEST_PASSWORD}, "new_password"),
    ({"current_password": TEST_PASSWORD}, "new_password"),
    ({"new_password": NEW_PASSWORD}, "current_password"),
    ({"current_password": TEST_PASSWORD, "new_password": 1234567890123}, "new_password"),
    ({"current_password": TEST_PASSWORD, "new_password": NEW_PASSWORD, "logout": True},
     "logout"),
])
def test_password_change_bad_input_rejected(client, owner, body, field):
    response = client.web.post_json("/api/auth/password", body,
                                    headers=auth_header(owner["token"]), status=400)

    body = assert_envelope(response, 400, "validation_failed")
    assert field in [error["name"] for error in body["errors"]]
    assert client.login(owner["email"])


# Suspended partners and /me -------------------------------------------------------------------


def test_suspension_stops_member_token_at_once(client, app, owner):
    headers = auth_header(owner["token"])
    assert client.web.get("/api/partners/me", headers=headers).status_int == 200

    set_partner_status(app, owner["partner_id"], "suspended")

    for method, path in (("GET", "/api/partners/me"), ("GET", "/api/partners/api-keys")):
        response = client.web.request(path, method=method, headers=headers, status=403)
        assert_envelope(response, 403, "partner_suspended")
    set_partner_status(app, owner["partner_id"], "active")
    assert client.web.get("/api/partners/me", headers=headers).status_int == 200


def test_me_describes_account(client, owner):
    response = get_me(client, owner["token"])

    body = response.json
    assert response.headers["Cache-Control"] == "no-store"
    assert body["id"] == owner["user_id"]
    assert body["email"] == owner["email"]
    assert body["email_verified"] is False
    assert body["email_verified_at"] is None
    assert body["pending_email"] is None
    assert body["totp_enabled"] is False
    assert body["memberships"] == [{"partner_id": owner["partner_id"],
                                    "company_name": "Acme Learning", "role": "owner",
                                    "partner_status": "pending"}]
    assert "password_hash" not in body
    assert "totp_secret" not in body


def test_me_rejects_garbage_token(client):
    response = client.web.get("/api/auth/me", headers=auth_header("not.a.token"), status=401)

    assert_envelope(response, 401, "invalid_token")


def test_me_rejects_disabled_user(client, app, owner):
    def disable(session):
        session.get(User, int(owner["user_id"].removeprefix("user_"))).status = "disabled"

    in_db(app, disable)

    assert_envelope(get_me(client, owner["token"], status=401), 401, "invalid_token")


@pytest.mark.shared_app(False)
def test_purge_drops_only_expired_rows(client, app, owner):
    from fkod.core.auth.accounts import purge_expired_tokens

    past = dt.datetime(2020, 1, 1)
    future = dt.datetime(2999, 1, 1)

    user_id = int(owner["user_id"].removeprefix("user_"))

    def add(session):
        session.add_all([
            RevokedToken(jti="expired-jti", expires_at=past),
            RevokedToken(jti="live-jti", expires_at=future),
            UserToken(user_id=user_id, purpose="password_reset", token_hash="0" * 64,
                      email=owner["email"], expires_at=past),
        ])

    in_db(app, add)

    purge_expired_tokens(app.registry["db.session_factory"])

    revoked = in_db(app, lambda session: session.scalars(sa.select(RevokedToken.jti)).all())
    mailed = in_db(app, lambda session: session.scalars(sa.select(UserToken.purpose)).all())
    assert revoked == ["live-jti"]
    # The sign-up's verification token has not expired.
    assert mailed == ["email_verification"]



@pytest.mark.shared_app(False)
def test_revoking_jti_twice_keeps_one_row(app):
    from fkod.core.auth.accounts import _revoke_jti

    expires_at = dt.datetime(2999, 1, 1)

    def revoke_twice(session):
        _revoke_jti(session, "raced-jti", expires_at)
        _revoke_jti(session, "raced-jti", expires_at)

    in_db(app, revoke_twice)

    rows = in_db(app, lambda session: session.scalars(sa.select(RevokedToken.jti)).all())
    assert rows == ["raced-jti"]
