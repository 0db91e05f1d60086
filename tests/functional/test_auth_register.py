"""Customer sign-up: POST /api/auth/register."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from fkod.core.audit import AuditEntry
from fkod.core.auth.models import User
from fkod.core.db import run_in_transaction
from fkod.core.testing import TEST_PASSWORD, auth_header
from tests.envelope import assert_envelope

REGISTER = "/api/auth/register"


def sign_up(client, status=201, **fields):
    body = {"email": "learner@example.org", "password": TEST_PASSWORD, **fields}
    return client.web.post_json(REGISTER, body, status=status, expect_errors=status >= 400)


def user_count(app) -> int:
    return run_in_transaction(app.registry["db.session_factory"],
                              lambda session: session.scalar(sa.select(sa.func.count(User.id))))


def test_register_creates_customer_without_partner(client, app):
    body = sign_up(client, name="Ada Learner").json

    assert body["email"] == "learner@example.org"
    assert body["name"] == "Ada Learner"
    assert body["email_verified"] is False
    assert body["memberships"] == []
    token = client.login("learner@example.org")
    me = client.web.get("/api/auth/me", headers=auth_header(token)).json
    assert me["id"] == body["id"]


def test_register_mails_verification_and_audits(client, app):
    body = sign_up(client).json

    messages = []
    deadline = time.monotonic() + 15
    while not messages and time.monotonic() < deadline:
        client.drain_tasks()
        messages = client.registry["mailer"].messages_to("learner@example.org")
    actions = run_in_transaction(app.registry["db.session_factory"], lambda session: list(
        session.scalars(sa.select(AuditEntry.action).where(AuditEntry.target_id == body["id"]))))
    assert [message.subject for message in messages] == ["Verify your email address for F-KOD"]
    assert actions == ["auth.registered"]


def test_register_refuses_taken_email_in_any_case(client, app):
    sign_up(client)
    before = user_count(app)

    response = sign_up(client, status=409, email="Learner@Example.org")

    assert_envelope(response, 409, "email_taken")
    assert user_count(app) == before


def test_partner_owner_email_is_taken_too(client):
    registered = client.register_partner()

    response = sign_up(client, status=409, email=registered["user"]["email"])

    assert_envelope(response, 409, "email_taken")


@pytest.mark.parametrize("body,field", [
    ({"password": TEST_PASSWORD}, "email"),
    ({"email": "learner@example.org"}, "password"),
    ({"email": "not an address", "password": TEST_PASSWORD}, "email"),
    ({"email": "learner@example.org", "password": "short"}, "password"),
    ({"email": "learner@example.org", "password": 12345678901}, "password"),
    ({"email": "learner@example.org", "password": TEST_PASSWORD, "role": "admin"}, "role"),
    ({"email": "learner@example.org", "password": TEST_PASSWORD, "name": "x" * 256}, "name"),
])
def test_register_bad_input_names_field(client, app, body, field):
    response = client.web.post_json(REGISTER, body, status=400)

    error = assert_envelope(response, 400)
    assert field in {item["name"] for item in error["errors"]}
    assert user_count(app) == 0
