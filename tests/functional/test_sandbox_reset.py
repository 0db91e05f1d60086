"""Resetting the test-mode sandbox (``POST /api/developers/sandbox/reset``)."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from fkod.core.audit import AuditEntry
from fkod.core.auth.models import User
from fkod.core.db import run_in_transaction
from fkod.core.ids import parse_id
from fkod.core.testing import TestClient, auth_header, verify_partner
from fkod.core.webhooks.models import WebhookEvent
from fkod.plugins.learning.models import Course, Mentor
from tests.envelope import assert_envelope
from tests.functional.test_members import add_member

pytestmark = pytest.mark.shared_app

RESET = "/api/developers/sandbox/reset"
SCOPES = ("users:read", "users:write", "courses:read", "courses:write", "mentors:read",
          "mentors:write")


def in_db(app, work):
    return run_in_transaction(app.registry["db.session_factory"], work)


def build_sandbox(client, key: str, label: str) -> dict:
    """Create a user, a course, a completion and a mentor match if any mentor is listed."""
    headers = auth_header(key)
    user = client.web.post_json("/api/v1/users", {"email": f"{label}@learner.example"},
                                headers=headers, status=201).json
    course = client.web.post_json("/api/v1/courses", {"title": f"{label} course"},
                                  headers=headers, status=201).json
    client.web.post_json(f"/api/v1/courses/{course['id']}/complete", {"user_id": user["id"]},
                         headers=headers, status=201)
    # The test database has the synthetic sandbox mentors only, so live mode has none.
    for mentor in client.web.get("/api/v1/mentors", headers=headers,
                                 status=200).json["data"][:1]:
        client.web.post_json(f"/api/v1/mentors/{mentor['id']}/match", {"user_id": user["id"]},
                             headers=headers, status=201)
    return {"user": user["id"], "course": course["id"]}


def user_exists(app, public_id: str) -> bool:
    return in_db(app, lambda session: session.get(User, parse_id("user", public_id))) is not None


def course_exists(app, public_id: str) -> bool:
    return in_db(app, lambda session: session.get(Course, parse_id("course", public_id))) \
        is not None


def catalog_size(app) -> tuple[int, int]:
    def work(session):
        courses = session.scalar(sa.select(sa.func.count()).select_from(Course)
                                 .where(Course.created_by_partner_id.is_(None)))
        mentors = session.scalar(sa.select(sa.func.count()).select_from(Mentor))
        return courses, mentors

    return in_db(app, work)


def deliveries_of(app, partner_id: str) -> int:
    from fkod.core.webhooks.models import Webhook

    number = parse_id("partner", partner_id)
    return in_db(app, lambda session: session.scalar(
        sa.select(sa.func.count()).select_from(WebhookEvent)
        .join(Webhook, Webhook.id == WebhookEvent.webhook_id)
        .where(Webhook.partner_id == number)))


def test_sandbox_reset_removes_test_data_only(client, app, make_receiver):
    partner, token = client.partner_with_token()
    headers = auth_header(token)
    verify_partner(app, partner["id"])
    test_key = client.create_key(token, scopes=SCOPES)["key"]
    live_key = client.create_key(token, scopes=SCOPES, mode="live")["key"]
    receiver = make_receiver()
    client.web.post_json("/api/partners/webhooks", {"url": receiver.url,
                                                    "event_types": ["user.created"]},
                         headers=headers, status=201)
    other, other_token = client.partner_with_token()
    other_key = client.create_key(other_token, scopes=SCOPES)["key"]
    catalog_before = catalog_size(app)

    test_data = build_sandbox(client, test_key, "sandbox")
    live_data = build_sandbox(client, live_key, "live")
    other_data = build_sandbox(client, other_key, "other")
    client.drain_tasks()
    deadline = time.monotonic() + 10
    while deliveries_of(app, partner["id"]) == 0:
        assert time.monotonic() < deadline, "the test-mode delivery was never stored"
        time.sleep(0.05)

    body = client.web.post_json(RESET, {}, headers=headers, status=200).json

    assert body["removed"]["users"] == 1
    assert body["removed"]["courses"] == 1
    assert body["removed"]["enrollments"] == 1
    assert body["removed"]["mentor_matches"] == 1
    assert body["removed"]["webhook_deliveries"] == 1
    assert body["removed"]["events"] == 1
    assert set(body) == {"removed"}
    assert not user_exists(app, test_data["user"])
    assert not course_exists(app, test_data["course"])
    assert user_exists(app, live_data["user"])
    assert course_exists(app, live_data["course"])
    assert user_exists(app, other_data["user"])
    assert course_exists(app, other_data["course"])
    assert catalog_size(app) == catalog_before
    assert deliveries_of(app, partner["id"]) == 0
    listed = client.web.get("/api/v1/users", headers=auth_header(test_key), status=200).json
    assert listed["data"] == []
    assert client.web.get("/api/v1/mentors", headers=auth_header(test_key),
                          status=200).json["data"], "the synthetic mentors stay"

    number = parse_id("partner", partner["id"])
    audited = in_db(app, lambda session: session.scalars(
        sa.select(AuditEntry).where(AuditEntry.partner_id == number,
                                    AuditEntry.action == "sandbox.reset")).all())
    assert len(audited) == 1
    assert audited[0].details["removed"]["users"] == 1

    again = client.web.post_json(RESET, {}, headers=headers, status=200).json
    assert set(again["removed"].values()) == {0}
    assert other["id"] != partner["id"]


def test_sandbox_reset_idempotency_and_rate_limit(app_factory):
    app = app_factory(**{"fkod.developers.sandbox_resets_per_hour": "2"})
    client = TestClient(app)
    _partner, token = client.partner_with_token()
    key = client.create_key(token, scopes=SCOPES)["key"]
    build_sandbox(client, key, "replayed")
    headers = {**auth_header(token), "Idempotency-Key": "reset-1"}

    first = client.web.post_json(RESET, {}, headers=headers, status=200).json
    replay = client.web.post_json(RESET, {}, headers=headers, status=200).json
    assert first == replay
    assert first["removed"]["users"] == 1

    client.web.post_json(RESET, {}, headers=auth_header(token), status=200)
    limited = client.web.post_json(RESET, {}, headers=auth_header(token), status=429)
    assert_envelope(limited, 429, "rate_limited")
    assert int(limited.headers["Retry-After"]) > 0


def test_sandbox_reset_needs_owner_or_admin(client):
    _partner, owner_token = client.partner_with_token()
    for role, status in (("developer", 403), ("read_only", 403), ("admin", 200)):
        member = add_member(client, owner_token, role)
        response = client.web.post_json(RESET, {}, headers=auth_header(member["token"]),
                                        status=status)
        if status == 403:
            assert_envelope(response, 403, "missing_permission")
    assert_envelope(client.web.post_json(RESET, {}, status=401), 401)
    response = client.web.post_json(RESET, {"mode": "live"}, headers=auth_header(owner_token),
                                    status=400)
    assert [error["name"] for error in assert_envelope(response, 400)["errors"]] == ["mode"]
