"""Mailed tokens: password reset, email verification at sign-up, email change."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import time

import pytest
import sqlalchemy as sa

from fkod.core.audit import AuditEntry
from fkod.core.auth.models import PartnerMember, User, UserToken
from fkod.core.db import run_in_transaction
from fkod.core.ids import parse_id
from fkod.core.testing import TEST_PASSWORD, TestClient, auth_header, verify_partner
from tests.envelope import assert_envelope

pytestmark = pytest.mark.shared_app

NEW_PASSWORD = "a brand new passphrase 42"
TOKEN_IN_LINK = re.compile(r"\?token=([A-Za-z0-9_-]+)")
RESET_ACCEPTED = {"message": "If an account uses this email, a reset link is on its way."}


@pytest.fixture
def owner(client):
    registered = client.register_partner()
    email = registered["user"]["email"]
    return {"email": email, "user_id": registered["user"]["id"],
            "token": client.login(email)}


def in_db(app, work):
    return run_in_transaction(app.registry["db.session_factory"], work)


def stored_user(app, user_id: str) -> User:
    return in_db(app, lambda session: session.get(User, int(user_id.removeprefix("user_"))))


def wait_for_mail(client, address: str, count: int = 1, timeout: float = 15) -> list:
    """Return the messages sent to ``address`` once there are at least ``count``."""
    client.drain_tasks()
    deadline = time.monotonic() + timeout
    while True:
        messages = client.registry["mailer"].messages_to(address)
        if len(messages) >= count or time.monotonic() > deadline:
            return messages
        time.sleep(0.05)


def settle_mail(client) -> None:
    """Give a queued message time to arrive, so a test can check that none did."""
    client.drain_tasks()
    time.sleep(0.5)


def mailed_token(client, address: str, subject: str, count: int = 1) -> str:
    """Return the token of the ``count``-th message with ``subject`` sent to ``address``."""
    deadline = time.monotonic() + 15
    while True:
        messages = [message for message in wait_for_mail(client, address)
                    if message.subject == subject]
        if len(messages) >= count:
            return TOKEN_IN_LINK.search(messages[count - 1].body).group(1)
        assert time.monotonic() < deadline, f"no message {subject!r} #{count} to {address}"
        time.sleep(0.05)


def reset_token(client, address: str, count: int = 1) -> str:
    return mailed_token(client, address, "Reset your F-KOD password", count)


def verification_token(client, address: str, count: int = 1) -> str:
    return mailed_token(client, address, "Verify your email address for F-KOD", count)


def expire_tokens(app) -> None:
    def work(session):
        session.execute(sa.update(UserToken).values(
            expires_at=dt.datetime(2020, 1, 1)))

    in_db(app, work)


def stored_partner_id(app, user_id: str) -> str:
    def work(session):
        return session.scalar(sa.select(PartnerMember.partner_id).where(
            PartnerMember.user_id == parse_id("user", user_id)))

    return f"partner_{in_db(app, work)}"


def audit_actions(app) -> list[str]:
    return in_db(app, lambda session: session.scalars(
        sa.select(AuditEntry.action).order_by(AuditEntry.id)).all())


def request_reset(client, email: str):
    return client.web.post_json("/api/auth/password-reset", {"email": email}, status=202)


def confirm_reset(client, token, password: str = NEW_PASSWORD, status: int = 200):
    return client.web.post_json("/api/auth/password-reset/confirm",
                                {"token": token, "new_password": password}, status=status)


def verify(client, token, status: int = 200):
    return client.web.post_json("/api/auth/email/verify", {"token": token}, status=status)


# Password reset ---------------------------------------------------------------------------


def test_reset_answer_same_for_unknown_email(client, owner):
    known = request_reset(client, owner["email"])
    unknown = request_reset(client, "nobody@acme.example")

    assert known.json == unknown.json == RESET_ACCEPTED
    assert reset_token(client, owner["email"])
    settle_mail(client)
    assert client.registry["mailer"].messages_to("nobody@acme.example") == []


@pytest.mark.shared_app(False)
def test_reset_stores_only_token_hash(client, app, owner):
    request_reset(client, owner["email"])
    token = reset_token(client, owner["email"])

    rows = in_db(app, lambda session: session.scalars(
        sa.select(UserToken).where(UserToken.purpose == "password_reset")).all())
    assert len(rows) == 1
    assert rows[0].token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in (rows[0].email, rows[0].token_hash)
    lifetime = rows[0].expires_at - rows[0].created_at
    assert dt.timedelta(minutes=59) < lifetime <= dt.timedelta(hours=1, seconds=5)


def test_reset_sets_password_and_revokes(client, app, owner):
    request_reset(client, owner["email"])
    token = reset_token(client, owner["email"])

    response = confirm_reset(client, token)

    assert response.headers["Cache-Control"] == "no-store"
    rejected = client.web.get("/api/auth/me", headers=auth_header(owner["token"]), status=401)
    assert_envelope(rejected, 401, "token_revoked")
    client.web.post_json("/api/auth/login", {"email": owner["email"], "password": TEST_PASSWORD},
                         status=401)
    assert client.login(owner["email"], NEW_PASSWORD)
    user = stored_user(app, owner["user_id"])
    assert user.password_changed_at is not None
    assert user.email_verified_at is not None
    assert "auth.password_reset_requested" in audit_actions(app)
    assert "auth.password_reset" in audit_actions(app)


def test_reset_token_single_use(client, owner):
    request_reset(client, owner["email"])
    token = reset_token(client, owner["email"])
    confirm_reset(client, token)

    response = confirm_reset(client, token, "yet another passphrase", status=400)

    body = assert_envelope(response, 400, "invalid_token")
    assert [error["name"] for error in body["errors"]] == ["token"]
    assert client.login(owner["email"], NEW_PASSWORD)


def test_reset_ends_other_reset_links(client, owner):
    request_reset(client, owner["email"])
    request_reset(client, owner["email"])
    first = reset_token(client, owner["email"], count=1)
    second = reset_token(client, owner["email"], count=2)
    confirm_reset(client, first)

    response = confirm_reset(client, second, "yet another passphrase", status=400)

    assert_envelope(response, 400, "invalid_token")
    assert client.login(owner["email"], NEW_PASSWORD)


def test_password_change_ends_reset_links(client, owner):
    request_reset(client, owner["email"])
    token = reset_token(client, owner["email"])
    client.web.post_json("/api/auth/password",
                         {"current_password": TEST_PASSWORD, "new_password": NEW_PASSWORD},
                         headers=auth_header(owner["token"]))

    response = confirm_reset(client, token, "yet another passphrase", status=400)

    assert_envelope(response, 400, "invalid_token")
    assert client.login(owner["email"], NEW_PASSWORD)


def test_reset_token_expires(client, app, owner):
    request_reset(client, owner["email"])
    token = reset_token(client, owner["email"])
    expire_tokens(app)

    assert_envelope(confirm_reset(client, token, status=400), 400, "invalid_token")
    assert client.login(owner["email"])


@pytest.mark.parametrize("token", ["unknown-token", "x" * 43, "\u00e9t\u00e9"])
def test_reset_unknown_token_rejected(client, owner, token):
    assert_envelope(confirm_reset(client, token, status=400), 400, "invalid_token")


def test_verification_token_not_a_reset_token(client, owner):
    token = verification_token(client, owner["email"])

    assert_envelope(confirm_reset(client, token, status=400), 400, "invalid_token")


def test_weak_password_leaves_token_usable(client, owner):
    request_reset(client, owner["email"])
    token = reset_token(client, owner["email"])

    response = confirm_reset(client, token, "short", status=400)

    body = assert_envelope(response, 400, "validation_failed")
    assert [error["name"] for error in body["errors"]] == ["new_password"]
    confirm_reset(client, token)
    assert client.login(owner["email"], NEW_PASSWORD)


@pytest.mark.parametrize("body,field", [
    ({}, "email"),
    ({"email": "not-an-email"}, "email"),
    ({"email": ["owner@acme.example"]}, "email"),
    ({"email": "owner@acme.example", "username": "owner"}, "username"),
])
def test_reset_request_bad_input_rejected(client, body, field):
    response = client.web.post_json("/api/auth/password-reset", body, status=400)

    body = assert_envelope(response, 400, "validation_failed")
    assert [error["name"] for error in body["errors"]] == [field]


@pytest.mark.parametrize("body,field", [
    ({"new_password": NEW_PASSWORD}, "token"),
    ({"token": "abc"}, "new_password"),
    ({"token": 123, "new_password": NEW_PASSWORD}, "token"),
    ({"token": "", "new_password": NEW_PASSWORD}, "token"),
    ({"token": "a" * 129, "new_password": NEW_PASSWORD}, "token"),
    ({"token": "abc", "new_password": NEW_PASSWORD, "email": "a@b.example"}, "email"),
])
def test_reset_confirm_bad_input_rejected(client, body, field):
    response = client.web.post_json("/api/auth/password-reset/confirm", body, status=400)

    body = assert_envelope(response, 400, "validation_failed")
    assert [error["name"] for error in body["errors"]] == [field]


@pytest.fixture
def few_mails_client(app_factory):
    return TestClient(app_factory(**{"fkod.auth.account_mails_per_hour": "3"}))


def test_account_mail_limit_keeps_answer(few_mails_client):
    client = few_mails_client
    email = client.register_partner()["user"]["email"]

    responses = [request_reset(client, email) for _ in range(4)]

    assert all(response.json == RESET_ACCEPTED for response in responses)
    # The sign-up verification and two resets fill the hourly share of three.
    assert len(wait_for_mail(client, email, 3)) == 3
    settle_mail(client)
    assert len(client.registry["mailer"].messages_to(email)) == 3


# Email verification -----------------------------------------------------------------------


def test_signup_mails_verification(client, app, owner):
    token = verification_token(client, owner["email"])

    response = verify(client, token)

    assert response.json == {"email": owner["email"], "email_verified": True}
    me = client.web.get("/api/auth/me", headers=auth_header(owner["token"])).json
    assert me["email_verified"] is True
    assert me["email_verified_at"] is not None
    assert "partner.registered" in audit_actions(app)
    assert "auth.email_verified" in audit_actions(app)


def test_verified_email_unlocks_live_mode(client, app, owner):
    verify_partner(app, stored_partner_id(app, owner["user_id"]), emails=False)
    headers = auth_header(owner["token"])
    live_key = {"key_name": "live", "scopes": ["users:read"], "mode": "live"}

    refused = client.web.post_json("/api/partners/api-keys", live_key, headers=headers,
                                   status=403)
    verify(client, verification_token(client, owner["email"]))

    assert_envelope(refused, 403, "email_not_verified")
    assert client.create_key(owner["token"], mode="live")["key"].startswith("sk_live_")


def test_verification_token_single_use(client, owner):
    token = verification_token(client, owner["email"])
    verify(client, token)

    assert_envelope(verify(client, token, status=400), 400, "invalid_token")


def test_verification_token_expires(client, app, owner):
    token = verification_token(client, owner["email"])
    expire_tokens(app)

    assert_envelope(verify(client, token, status=400), 400, "invalid_token")
    assert stored_user(app, owner["user_id"]).email_verified_at is None


def test_reset_token_not_a_verification_token(client, owner):
    request_reset(client, owner["email"])

    assert_envelope(verify(client, reset_token(client, owner["email"]), status=400), 400,
                    "invalid_token")


@pytest.mark.parametrize("body,field", [
    ({}, "token"),
    ({"token": None}, "token"),
    ({"token": {"a": 1}}, "token"),
    ({"token": "abc", "email": "a@b.example"}, "email"),
])
def test_verify_bad_input_rejected(client, body, field):
    response = client.web.post_json("/api/auth/email/verify", body, status=400)

    body = assert_envelope(response, 400, "validation_failed")
    assert [error["name"] for error in body["errors"]] == [field]


def test_resend_mails_new_token(client, owner):
    first = verification_token(client, owner["email"])

    response = client.web.post_json("/api/auth/email/resend", {},
                                    headers=auth_header(owner["token"]), status=202)

    assert owner["email"] in response.json["message"]
    second = verification_token(client, owner["email"], count=2)
    assert second != first
    verify(client, second)


def test_resend_when_verified_conflicts(client, owner):
    verify(client, verification_token(client, owner["email"]))

    response = client.web.post_json("/api/auth/email/resend", {},
                                    headers=auth_header(owner["token"]), status=409)

    assert_envelope(response, 409, "email_already_verified")


def test_resend_needs_token(client):
    assert_envelope(client.web.post_json("/api/auth/email/resend", {}, status=401), 401,
                    "missing_credentials")


def test_resend_rejects_fields(client, owner):
    response = client.web.post_json("/api/auth/email/resend", {"email": "x@acme.example"},
                                    headers=auth_header(owner["token"]), status=400)

    assert_envelope(response, 400, "validation_failed")


# Email change -------------------------------------------------------------------------------


def change_email(client, token: str, email: str, password: str = TEST_PASSWORD,
                 status: int = 202):
    return client.web.put_json("/api/auth/me/email", {"email": email, "password": password},
                               headers=auth_header(token), status=status)


def test_email_changes_after_verification(client, app, owner):
    response = change_email(client, owner["token"], "New.Owner@Acme.example")

    assert response.json["pending_email"] == "new.owner@acme.example"
    assert response.json["email"] == owner["email"]
    assert client.login(owner["email"])

    verify(client, verification_token(client, "new.owner@acme.example"))

    me = client.web.get("/api/auth/me", headers=auth_header(owner["token"])).json
    assert me["email"] == "new.owner@acme.example"
    assert me["pending_email"] is None
    assert me["email_verified"] is True
    assert client.login("new.owner@acme.example")
    client.web.post_json("/api/auth/login", {"email": owner["email"], "password": TEST_PASSWORD},
                         status=401)
    notices = [message.subject for message in wait_for_mail(client, owner["email"], 2)]
    assert "Your F-KOD email address was changed" in notices
    assert "auth.email_changed" in audit_actions(app)


def test_email_change_taken_conflicts(client, owner):
    other = client.register_partner()["user"]["email"]

    response = change_email(client, owner["token"], other.upper(), status=409)

    body = assert_envelope(response, 409, "email_taken")
    assert [error["name"] for error in body["errors"]] == ["email"]


def test_email_taken_before_verification_conflicts(client, owner):
    change_email(client, owner["token"], "wanted@acme.example")
    token = verification_token(client, "wanted@acme.example")
    client.register_partner(email="wanted@acme.example")

    assert_envelope(verify(client, token, status=409), 409, "email_taken")
    assert client.login(owner["email"])


def test_email_change_wrong_password_names_field(client, app, owner):
    response = change_email(client, owner["token"], "new@acme.example", password="wrong one!!",
                            status=400)

    body = assert_envelope(response, 400, "invalid_password")
    assert [error["name"] for error in body["errors"]] == ["password"]
    assert stored_user(app, owner["user_id"]).pending_email is None


def test_email_change_to_same_rejected(client, owner):
    response = change_email(client, owner["token"], owner["email"], status=400)

    body = assert_envelope(response, 400, "validation_failed")
    assert [error["name"] for error in body["errors"]] == ["email"]


def test_newer_email_change_supersedes(client, owner):
    change_email(client, owner["token"], "first@acme.example")
    first = verification_token(client, "first@acme.example")
    change_email(client, owner["token"], "second@acme.example")

    assert_envelope(verify(client, first, status=400), 400, "invalid_token")
    verify(client, verification_token(client, "second@acme.example"))
    assert client.login("second@acme.example")


def test_reset_link_to_old_email_rejected(client, owner):
    request_reset(client, owner["email"])
    token = reset_token(client, owner["email"])
    change_email(client, owner["token"], "moved@acme.example")
    verify(client, verification_token(client, "moved@acme.example"))

    assert_envelope(confirm_reset(client, token, status=400), 400, "invalid_token")


@pytest.mark.parametrize("body,field", [
    ({"email": "new@acme.example"}, "password"),
    ({"password": TEST_PASSWORD}, "email"),
    ({"email": "not an email", "password": TEST_PASSWORD}, "email"),
    ({"email": 5, "password": TEST_PASSWORD}, "email"),
    ({"email": "new@acme.example", "password": TEST_PASSWORD, "name": "x"}, "name"),
])
def test_email_change_bad_input_rejected(client, owner, body, field):
    response = client.web.put_json("/api/auth/me/email", body,
                                   headers=auth_header(owner["token"]), status=400)

    body = assert_envelope(response, 400, "validation_failed")
    assert [error["name"] for error in body["errors"]] == [field]
