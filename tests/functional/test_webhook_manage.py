"""Managing one webhook endpoint: read, change, delete, test, rotate and reveal its secret.

Endpoints point at receivers on 127.0.0.1. Tests that need a delivery write the
event with the outbox and let the real worker send it, in process on the
embedded stack and through Redis with ``FKOD_TEST_STACK=production``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session
from standardwebhooks.webhooks import Webhook as StandardWebhook

from fkod.core.audit import AuditEntry
from fkod.core.auth.models import PartnerMember
from fkod.core.db import run_in_transaction, utcnow
from fkod.core.testing import TestClient, auth_header
from fkod.core.webhooks import outbox
from fkod.core.webhooks.models import Event, Webhook, WebhookEvent
from tests.envelope import assert_envelope
from tests.receivers import Reply

pytestmark = pytest.mark.shared_app

WEBHOOKS = "/api/partners/webhooks"
# Nothing listens on port 9 of 127.0.0.1, and partner.verified is never
# published by these tests, so such an endpoint receives nothing.
QUIET_URL = "http://127.0.0.1:9/hooks"
SECRET = re.compile(r"^whsec_[A-Za-z0-9+/]{43}=$")
WAIT_SECONDS = 30
UNKNOWN_EVENT = "evt_0123456789abcdef01234567"

ITEM_FIELDS = {
    "id", "url", "event_types", "mode", "status", "description", "headers", "retry_count",
    "retry_delay", "disabled_reason", "disabled_at", "secret_rotated_at",
    "previous_secret_expires_at", "created_at", "updated_at",
}


# Helpers ------------------------------------------------------------------------


@dataclass
class Owner:
    """A registered partner and its owner's access token."""

    partner_id: int
    token: str

    @property
    def headers(self) -> dict:
        return auth_header(self.token)


def row_id(public_id: str) -> int:
    return int(public_id.rsplit("_", 1)[1])


def register(client: TestClient) -> Owner:
    partner, token = client.partner_with_token()
    return Owner(partner_id=row_id(partner["id"]), token=token)


@pytest.fixture
def owner(client) -> Owner:
    return register(client)


def create_webhook(client: TestClient, owner: Owner, **fields) -> dict:
    body = {"url": QUIET_URL, "event_types": ["partner.verified"], "retry_count": 0,
            "retry_delay": 0}
    body.update(fields)
    return client.web.post_json(WEBHOOKS, body, headers=owner.headers, status=201).json


def webhook_path(webhook: dict, suffix: str = "") -> str:
    return f"{WEBHOOKS}/{webhook['id']}{suffix}"


def call(client: TestClient, method: str, path: str, body, *, headers: dict, status):
    """Send ``method`` with a JSON body for POST and PUT."""
    if method in ("POST", "PUT"):
        sender = client.web.post_json if method == "POST" else client.web.put_json
        return sender(path, body, headers=headers, status=status)
    sender = client.web.get if method == "GET" else client.web.delete
    return sender(path, headers=headers, status=status)


def stored(app, webhook: dict) -> Webhook:
    with Session(app.registry["db.engine"]) as session:
        return session.get(Webhook, row_id(webhook["id"]))


def update_rows(app, statement) -> None:
    with Session(app.registry["db.engine"]) as session, session.begin():
        session.execute(statement)


def audit_entries(app, action: str) -> list[AuditEntry]:
    with Session(app.registry["db.engine"]) as session:
        return list(session.scalars(
            sa.select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)))


def set_role(app, owner: Owner, role: str) -> None:
    update_rows(app, sa.update(PartnerMember)
                .where(PartnerMember.partner_id == owner.partner_id).values(role=role))


def publish(app, owner: Owner, event_type: str = "user.created") -> list[int]:
    """Write an event and its deliveries without enqueueing them; return the delivery ids."""
    def work(session):
        _event, deliveries = outbox.publish_event(
            session, event_type=event_type, data={"id": "user_1"}, livemode=False,
            partner_ids=[owner.partner_id], request_id=None)
        return [delivery.id for delivery in deliveries]

    return run_in_transaction(app.registry["db.session_factory"], work)


def delivery_status(app, delivery_id: int) -> str:
    with Session(app.registry["db.engine"]) as session:
        return session.get(WebhookEvent, delivery_id).status


def wait_for_status(app, delivery_id: int, status: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while delivery_status(app, delivery_id) != status:
        assert time.monotonic() < deadline, f"delivery {delivery_id} never became {status}"
        time.sleep(0.05)


def count(app, model) -> int:
    with Session(app.registry["db.engine"]) as session:
        return session.scalar(sa.select(sa.func.count()).select_from(model))


def recent() -> str:
    return (utcnow() - dt.timedelta(hours=1)).isoformat(timespec="seconds") + "Z"


# Every operation on one endpoint, with a body it accepts.
ITEM_OPERATIONS = [
    ("GET", "", None),
    ("PUT", "", {"description": "changed"}),
    ("DELETE", "", None),
    ("POST", "/test", {}),
    ("GET", "/events", None),
    ("GET", f"/events/{UNKNOWN_EVENT}", None),
    ("POST", f"/events/{UNKNOWN_EVENT}/replay", {}),
    ("POST", "/rotate-secret", {}),
    ("GET", "/secret", None),
    ("POST", "/recover", "recent"),
    ("GET", "/health", None),
]
WRITES = [item for item in ITEM_OPERATIONS if item[0] != "GET"] + [("GET", "/secret", None)]


def body_for(body):
    return {"since": recent()} if body == "recent" else body


# Reading ------------------------------------------------------------------------


def test_get_webhook_fields(client, owner):
    created = create_webhook(client, owner, description="Alerts", headers={"X-Tenant": "acme"})

    response = client.web.get(webhook_path(created), headers=owner.headers)

    body = response.json
    assert set(body) == ITEM_FIELDS
    assert body["id"] == created["id"]
    assert body["url"] == QUIET_URL
    assert body["event_types"] == ["partner.verified"]
    assert body["mode"] == "test"
    assert body["status"] == "active"
    assert body["headers"] == {"X-Tenant": "acme"}
    assert body["disabled_reason"] is None
    assert body["disabled_at"] is None
    assert body["secret_rotated_at"] is None
    assert body["previous_secret_expires_at"] is None
    assert created["secret"].removeprefix("whsec_").encode() not in response.body


def test_unknown_webhook_not_found(client, owner):
    response = client.web.get(f"{WEBHOOKS}/whk_999999", headers=owner.headers, status=404)

    assert_envelope(response, 404, "not_found")


def test_malformed_webhook_id_rejected(client, owner):
    for bad_id in ["whk_x", "whk_0", "whk_007", "whk_-1", "whk_", "whk_1.5", "whk_2147483648",
                   "whk_99999999999", "key_1", "1", "whk_%C3%A9"]:
        response = client.web.get(f"{WEBHOOKS}/{bad_id}", headers=owner.headers, status="*")

        assert response.status_int == 400, bad_id
        first = assert_envelope(response, 400, "validation_failed")["errors"][0]
        assert (first["location"], first["name"]) == ("path", "id"), bad_id


def test_malformed_id_rejected_everywhere(client, owner):
    for method, suffix, body in ITEM_OPERATIONS:
        response = call(client, method, f"{WEBHOOKS}/whk_x{suffix}", body_for(body),
                        headers=owner.headers, status="*")

        assert response.status_int == 400, f"{method} {suffix}"
        errors = assert_envelope(response, 400, "validation_failed")["errors"]
        assert {"location": "path", "name": "id"} in [
            {"location": error["location"], "name": error["name"]} for error in errors
        ], f"{method} {suffix}"


def test_other_partner_webhook_not_found(client, app, owner):
    created = create_webhook(client, owner)
    other = register(client)

    for method, suffix, body in ITEM_OPERATIONS:
        response = call(client, method, webhook_path(created, suffix), body_for(body),
                        headers=other.headers, status="*")

        assert response.status_int == 404, f"{method} {suffix}"
        assert_envelope(response, 404, "not_found")

    row = stored(app, created)
    assert row.status == "active"
    assert row.description is None
    assert row.secret_rotated_at is None
    assert audit_entries(app, "webhook.secret_revealed") == []


def test_read_only_member_cannot_write(client, app, owner):
    created = create_webhook(client, owner)
    set_role(app, owner, "read_only")

    for method, suffix, body in WRITES:
        response = call(client, method, webhook_path(created, suffix), body_for(body),
                        headers=owner.headers, status="*")

        assert response.status_int == 403, f"{method} {suffix}"
        assert_envelope(response, 403, "missing_permission")

    row = stored(app, created)
    assert row.status == "active"
    assert row.description is None
    assert row.secret_rotated_at is None
    assert audit_entries(app, "webhook.secret_revealed") == []


def test_read_only_member_can_read(client, app, owner):
    created = create_webhook(client, owner)
    set_role(app, owner, "read_only")

    for suffix in ["", "/events", "/health"]:
        client.web.get(webhook_path(created, suffix), headers=owner.headers, status=200)
    client.web.get(WEBHOOKS, headers=owner.headers, status=200)
    client.web.get(f"{WEBHOOKS}/events", headers=owner.headers, status=200)


RECEIVER_CREDENTIAL = "Bearer receiver-credential-7f3a"


@pytest.mark.parametrize("role", ["billing", "read_only"])
def test_header_values_hidden_from_role(client, app, owner, role):
    created = create_webhook(client, owner, headers={"Authorization": RECEIVER_CREDENTIAL,
                                                     "X-Tenant": "acme"})
    set_role(app, owner, role)

    item = client.web.get(webhook_path(created), headers=owner.headers)
    listed = client.web.get(WEBHOOKS, headers=owner.headers)

    assert item.json["headers"] == {"Authorization": "****", "X-Tenant": "****"}
    assert listed.json["data"][0]["headers"] == {"Authorization": "****", "X-Tenant": "****"}
    assert RECEIVER_CREDENTIAL.encode() not in item.body
    assert RECEIVER_CREDENTIAL.encode() not in listed.body
    assert stored(app, created).headers["Authorization"] == RECEIVER_CREDENTIAL


@pytest.mark.parametrize("role", ["owner", "admin", "developer"])
def test_header_values_shown_to_role(client, app, owner, role):
    created = create_webhook(client, owner, headers={"Authorization": RECEIVER_CREDENTIAL})
    set_role(app, owner, role)

    item = client.web.get(webhook_path(created), headers=owner.headers).json
    listed = client.web.get(WEBHOOKS, headers=owner.headers).json
    changed = client.web.put_json(webhook_path(created), {"description": "changed"},
                                  headers=owner.headers).json

    assert created["headers"] == {"Authorization": RECEIVER_CREDENTIAL}
    assert item["headers"] == {"Authorization": RECEIVER_CREDENTIAL}
    assert listed["data"][0]["headers"] == {"Authorization": RECEIVER_CREDENTIAL}
    assert changed["headers"] == {"Authorization": RECEIVER_CREDENTIAL}


# Changing -----------------------------------------------------------------------


def test_update_every_field(client, app, owner):
    created = create_webhook(client, owner)
    change = {"url": "HTTP://LOCALHOST:9/other", "event_types": ["course.*", "user.created"],
              "headers": {"X-Tenant": "beta"}, "description": "Course events",
              "status": "paused", "retry_count": 10, "retry_delay": 86400}

    body = client.web.put_json(webhook_path(created), change, headers=owner.headers).json

    assert body["url"] == "http://localhost:9/other"
    assert body["event_types"] == ["course.*", "user.created"]
    assert body["headers"] == {"X-Tenant": "beta"}
    assert body["description"] == "Course events"
    assert body["status"] == "paused"
    assert body["retry_count"] == 10
    assert body["retry_delay"] == 86400
    assert body["mode"] == "test"
    assert stored(app, created).event_type == "course.*"
    assert client.web.get(webhook_path(created), headers=owner.headers).json == body


def test_update_changes_only_given_fields(client, owner):
    created = create_webhook(client, owner, description="Keep me", headers={"X-A": "1"})

    body = client.web.put_json(webhook_path(created), {"retry_count": 3},
                               headers=owner.headers).json

    assert body["retry_count"] == 3
    assert body["description"] == "Keep me"
    assert body["headers"] == {"X-A": "1"}
    assert body["url"] == created["url"]
    assert body["event_types"] == created["event_types"]


def test_update_event_type_shorthand(client, owner):
    created = create_webhook(client, owner)

    body = client.web.put_json(webhook_path(created), {"event_type": "course.completed"},
                               headers=owner.headers).json

    assert body["event_types"] == ["course.completed"]


def test_update_clears_description_and_headers(client, owner):
    created = create_webhook(client, owner, description="Old", headers={"X-A": "1"})

    body = client.web.put_json(webhook_path(created), {"description": None, "headers": {}},
                               headers=owner.headers).json

    assert body["description"] is None
    assert body["headers"] == {}


@pytest.mark.shared_app(False)
def test_update_audited_with_fields(client, app, owner):
    created = create_webhook(client, owner, description="Old")

    client.web.put_json(webhook_path(created), {"description": "New", "retry_count": 0,
                                                "status": "paused"}, headers=owner.headers)

    entry, = audit_entries(app, "webhook.updated")
    # retry_count was already 0, so only two fields changed.
    assert entry.details == {"fields": ["description", "status"]}
    assert entry.target_id == created["id"]
    assert entry.partner_id == owner.partner_id


# Updates that must be rejected, each with the field its error names.
BAD_UPDATES = [
    ({}, ""),
    ({"mode": "live"}, "mode"),
    ({"livemode": True}, "livemode"),
    ({"secret_key": "whsec_x"}, "secret_key"),
    ({"status": "disabled"}, "status"),
    ({"status": "deleted"}, "status"),
    ({"status": 1}, "status"),
    ({"retry_count": 11}, "retry_count"),
    ({"retry_count": -1}, "retry_count"),
    ({"retry_count": "3"}, "retry_count"),
    ({"retry_count": True}, "retry_count"),
    ({"retry_count": None}, "retry_count"),
    ({"retry_delay": 86401}, "retry_delay"),
    ({"retry_delay": 2.5}, "retry_delay"),
    ({"url": ""}, "url"),
    ({"url": None}, "url"),
    ({"url": "javascript:alert(1)"}, "url"),
    ({"url": "http://10.0.0.1/"}, "url"),
    ({"url": "http://169.254.169.254/latest/meta-data/"}, "url"),
    ({"url": "http://user@127.0.0.1/"}, "url"),
    ({"event_types": []}, "event_types"),
    ({"event_types": ["nothing.*"]}, "event_types"),
    ({"event_types": "user.created"}, "event_types"),
    ({"event_type": "Course.Created"}, "event_types"),
    ({"event_type": "user.created", "event_types": ["user.created"]}, "event_type"),
    ({"headers": {"X-FKOD-Signature": "forged"}}, "headers.X-FKOD-Signature"),
    ({"headers": {"X-A": "a\r\nX-B: b"}}, "headers.X-A"),
    ({"headers": ["X-A"]}, "headers"),
    ({"description": "d" * 501}, "description"),
]


@pytest.mark.shared_app(False)
def test_update_rejects_bad_input(client, app, owner):
    created = create_webhook(client, owner, description="Before")
    before = client.web.get(webhook_path(created), headers=owner.headers).json

    for change, field in BAD_UPDATES:
        response = client.web.put_json(webhook_path(created), change, headers=owner.headers,
                                       status="*")

        assert response.status_int == 400, change
        body = assert_envelope(response, 400)
        assert field in [error["name"] for error in body["errors"]], change

    assert client.web.get(webhook_path(created), headers=owner.headers).json == before
    assert audit_entries(app, "webhook.updated") == []


def test_partly_invalid_update_changes_nothing(client, owner):
    created = create_webhook(client, owner, description="Before")

    client.web.put_json(webhook_path(created), {"description": "After",
                                                "url": "http://10.0.0.1/"},
                        headers=owner.headers, status=400)

    assert client.web.get(webhook_path(created),
                          headers=owner.headers).json["description"] == "Before"


def test_reenable_clears_disabled_state(client, app, owner, make_receiver):
    receiver = make_receiver(200)
    created = create_webhook(client, owner, url=receiver.url, event_types=["user.created"])
    (delivery_id,) = publish(app, owner)
    update_rows(app, sa.update(Webhook).where(Webhook.id == row_id(created["id"])).values(
        status="disabled", disabled_reason="the receiver answered 410 Gone",
        disabled_at=utcnow(), failing_since=utcnow() - dt.timedelta(days=1)))
    disabled = client.web.get(webhook_path(created), headers=owner.headers).json

    body = client.web.put_json(webhook_path(created), {"status": "active"},
                               headers=owner.headers).json

    assert disabled["status"] == "disabled"
    assert disabled["disabled_reason"] == "the receiver answered 410 Gone"
    assert body["status"] == "active"
    assert body["disabled_reason"] is None
    assert body["disabled_at"] is None
    assert stored(app, created).failing_since is None
    # The delivery that waited while the endpoint was disabled is sent at once.
    request = receiver.wait_for(1, timeout=WAIT_SECONDS)[0]
    assert json.loads(request.body)["type"] == "user.created"
    wait_for_status(app, delivery_id, "succeeded")


def test_pause_disabled_endpoint(client, app, owner):
    created = create_webhook(client, owner)
    update_rows(app, sa.update(Webhook).where(Webhook.id == row_id(created["id"])).values(
        status="disabled", disabled_reason="the receiver answered 410 Gone",
        disabled_at=utcnow()))

    body = client.web.put_json(webhook_path(created), {"status": "paused"},
                               headers=owner.headers).json

    assert body["status"] == "paused"
    assert body["disabled_reason"] is None
    assert body["disabled_at"] is None


def test_resume_sends_waiting_deliveries(client, app, owner, make_receiver):
    receiver = make_receiver(200)
    created = create_webhook(client, owner, url=receiver.url, event_types=["user.created"])
    (delivery_id,) = publish(app, owner)
    client.web.put_json(webhook_path(created), {"status": "paused"}, headers=owner.headers)

    client.web.put_json(webhook_path(created), {"status": "active"}, headers=owner.headers)

    receiver.wait_for(1, timeout=WAIT_SECONDS)
    wait_for_status(app, delivery_id, "succeeded")


# Deleting -----------------------------------------------------------------------


def test_delete_hides_endpoint(client, app, owner):
    kept = create_webhook(client, owner)
    deleted = create_webhook(client, owner)

    response = client.web.delete(webhook_path(deleted), headers=owner.headers, status=204)

    assert response.body == b""
    assert stored(app, deleted).status == "deleted"
    listed = client.web.get(WEBHOOKS, headers=owner.headers).json["data"]
    assert [item["id"] for item in listed] == [kept["id"]]
    for method, suffix, body in ITEM_OPERATIONS:
        result = call(client, method, webhook_path(deleted, suffix), body_for(body),
                      headers=owner.headers, status=404)
        assert_envelope(result, 404, "not_found")


@pytest.mark.shared_app(False)
def test_delete_keeps_deliveries(client, app, owner):
    created = create_webhook(client, owner, event_types=["user.created"])
    delivery_ids = publish(app, owner)

    client.web.delete(webhook_path(created), headers=owner.headers, status=204)
    publish(app, owner)

    assert len(delivery_ids) == 1
    assert delivery_status(app, delivery_ids[0]) == "pending"
    assert count(app, WebhookEvent) == 1


@pytest.mark.shared_app(False)
def test_delete_audited(client, app, owner):
    created = create_webhook(client, owner)

    client.web.delete(webhook_path(created), headers=owner.headers, status=204)

    entry, = audit_entries(app, "webhook.deleted")
    assert entry.target_type == "webhook"
    assert entry.target_id == created["id"]
    assert entry.actor_type == "user"


def test_delete_rejects_body(client, app, owner):
    created = create_webhook(client, owner)

    response = client.web.delete(webhook_path(created), params=json.dumps({"force": True}),
                                 headers=owner.headers, content_type="application/json",
                                 status=400)

    assert_envelope(response, 400)
    assert stored(app, created).status == "active"


# Sending a test event -------------------------------------------------------------


def available_samples(client) -> dict:
    events = client.web.get("/api/webhooks/available-events").json["data"]
    return {item["name"]: item["sample"] for item in events}


def test_test_event_signed_and_reported(client, app, owner, make_receiver):
    receiver = make_receiver(Reply(200, body=b"received"))
    created = create_webhook(client, owner, url=receiver.url,
                             event_types=["user.*", "course.created"],
                             headers={"X-Tenant": "acme"})

    result = client.web.post_json(webhook_path(created, "/test"), {},
                                  headers=owner.headers).json

    request, = receiver.requests
    payload = json.loads(request.body)
    assert result["success"] is True
    assert result["status_code"] == 200
    assert result["response_body"] == "received"
    assert result["error"] is None
    assert isinstance(result["latency_ms"], int)
    # The first available type, by name, that the patterns cover.
    assert result["event_type"] == "course.created"
    assert re.fullmatch(r"evt_[0-9a-f]+", result["event_id"])
    assert payload["id"] == result["event_id"]
    assert payload["type"] == "course.created"
    assert payload["data"] == available_samples(client)["course.created"]
    assert request.header("webhook-id") == result["event_id"]
    assert request.header("X-Tenant") == "acme"
    assert request.header("Content-Type") == "application/json"
    StandardWebhook(created["secret"]).verify(request.body, request.header_dict())


def test_test_events_limited_per_partner(app_factory, make_receiver):
    client = TestClient(app_factory(**{"fkod.webhooks.test_sends_per_minute": "2"}))
    owner = register(client)
    receiver = make_receiver(200)
    created = create_webhook(client, owner, url=receiver.url)
    for _ in range(2):
        client.web.post_json(webhook_path(created, "/test"), {}, headers=owner.headers)

    response = client.web.post_json(webhook_path(created, "/test"), {},
                                    headers=owner.headers, status=429)

    assert_envelope(response, 429, "rate_limited")
    assert int(response.headers["Retry-After"]) > 0
    assert len(receiver) == 2
    other = register(client)
    other_webhook = create_webhook(client, other, url=receiver.url)
    client.web.post_json(webhook_path(other_webhook, "/test"), {}, headers=other.headers)


@pytest.mark.shared_app(False)
def test_test_event_stores_nothing(client, app, owner, make_receiver):
    receiver = make_receiver(200)
    created = create_webhook(client, owner, url=receiver.url, event_types=["user.created"])

    client.web.post_json(webhook_path(created, "/test"), {"event_type": "user.created"},
                         headers=owner.headers)
    client.registry["webhook_worker"].sweep(grace_seconds=0)
    time.sleep(0.5)

    assert len(receiver) == 1
    assert count(app, WebhookEvent) == 0
    assert count(app, sa.select(Event).where(Event.type == "user.created").subquery()) == 0


def test_test_event_chosen_type(client, owner, make_receiver):
    receiver = make_receiver(200)
    created = create_webhook(client, owner, url=receiver.url, event_types=["user.*"])

    result = client.web.post_json(webhook_path(created, "/test"),
                                  {"event_type": "user.updated"}, headers=owner.headers).json

    assert result["event_type"] == "user.updated"
    assert json.loads(receiver.requests[0].body)["type"] == "user.updated"


def test_test_event_reports_failure(client, owner, make_receiver):
    receiver = make_receiver(Reply(500, body=b"x" * 3000))
    created = create_webhook(client, owner, url=receiver.url, event_types=["user.created"])

    result = client.web.post_json(webhook_path(created, "/test"), {},
                                  headers=owner.headers).json

    assert result["success"] is False
    assert result["status_code"] == 500
    assert result["response_body"] == "x" * 1024


def test_test_event_unreachable_receiver(client, owner, make_receiver):
    receiver = make_receiver(200)
    url = receiver.url
    receiver.close()
    created = create_webhook(client, owner, url=url, event_types=["user.created"])

    result = client.web.post_json(webhook_path(created, "/test"), {},
                                  headers=owner.headers).json

    assert result["success"] is False
    assert result["status_code"] is None
    assert result["error"] == "connection refused"
    assert result["response_body"] == ""


def test_test_event_on_paused_endpoint(client, owner, make_receiver):
    receiver = make_receiver(200)
    created = create_webhook(client, owner, url=receiver.url, event_types=["user.created"])
    client.web.put_json(webhook_path(created), {"status": "paused"}, headers=owner.headers)

    result = client.web.post_json(webhook_path(created, "/test"), {},
                                  headers=owner.headers).json

    assert result["success"] is True
    assert len(receiver) == 1


def test_test_event_signed_with_both_secrets(client, owner, make_receiver):
    receiver = make_receiver(200)
    created = create_webhook(client, owner, url=receiver.url, event_types=["user.created"])
    rotated = client.web.post_json(webhook_path(created, "/rotate-secret"), {},
                                   headers=owner.headers).json

    client.web.post_json(webhook_path(created, "/test"), {}, headers=owner.headers)

    request, = receiver.requests
    fkod_signature = request.header("X-FKOD-Signature")
    assert fkod_signature.count("v1=") == 2
    assert len(request.header("webhook-signature").split(" ")) == 2
    StandardWebhook(created["secret"]).verify(request.body, request.header_dict())
    StandardWebhook(rotated["secret"]).verify(request.body, request.header_dict())


def test_test_event_rejects_bad_type(client, owner, make_receiver):
    receiver = make_receiver(200)
    created = create_webhook(client, owner, url=receiver.url, event_types=["user.*"])

    for event_type, code in [("course.created", "invalid_event_type"),
                             ("nothing.created", "invalid_event_type"),
                             ("user.*", "invalid_event_type"),
                             ("User.Created", "invalid_event_type"),
                             (42, "validation_failed"),
                             (None, "validation_failed"),
                             ("u" * 101, "validation_failed")]:
        response = client.web.post_json(webhook_path(created, "/test"),
                                        {"event_type": event_type}, headers=owner.headers,
                                        status="*")

        assert response.status_int == 400, event_type
        body = assert_envelope(response, 400, code)
        assert "event_type" in [error["name"] for error in body["errors"]], event_type

    assert len(receiver) == 0


def test_test_event_rejects_unknown_field(client, owner):
    created = create_webhook(client, owner)

    response = client.web.post_json(webhook_path(created, "/test"), {"url": "http://x/"},
                                    headers=owner.headers, status=400)

    assert "url" in [error["name"] for error in assert_envelope(response, 400)["errors"]]


def test_test_event_without_available_type(client, app, owner, make_receiver):
    receiver = make_receiver(200)
    created = create_webhook(client, owner, url=receiver.url, event_types=["user.created"])
    host = app.registry["plugins"]
    run_in_transaction(app.registry["db.session_factory"],
                       lambda session: host.set_enabled(session, "learning", False))

    default = client.web.post_json(webhook_path(created, "/test"), {},
                                   headers=owner.headers, status=409)
    named = client.web.post_json(webhook_path(created, "/test"),
                                 {"event_type": "user.created"}, headers=owner.headers,
                                 status=400)

    assert_envelope(default, 409, "no_event_type")
    assert_envelope(named, 400, "invalid_event_type")
    assert len(receiver) == 0


# Secrets ------------------------------------------------------------------------


def test_rotate_returns_new_secret(client, app, owner):
    created = create_webhook(client, owner)
    before = utcnow()

    response = client.web.post_json(webhook_path(created, "/rotate-secret"), {},
                                    headers=owner.headers)

    body = response.json
    expires = dt.datetime.fromisoformat(body["previous_secret_expires_at"].rstrip("Z"))
    overlap = app.registry.settings["fkod.webhooks.secret_overlap_seconds"]
    assert response.headers["Cache-Control"] == "no-store"
    assert SECRET.match(body["secret"])
    assert body["secret"] != created["secret"]
    assert body["id"] == created["id"]
    assert abs((expires - before).total_seconds() - overlap) < 5
    row = stored(app, created)
    vault = app.registry["webhook_vault"]
    assert vault.decrypt(row.secret_key) == body["secret"]
    assert vault.decrypt(row.previous_secret_key) == created["secret"]
    shown = client.web.get(webhook_path(created), headers=owner.headers).json
    assert shown["secret_rotated_at"] == body["secret_rotated_at"]
    assert shown["previous_secret_expires_at"] == body["previous_secret_expires_at"]


@pytest.mark.shared_app(False)
def test_rotate_audited_without_secret(client, app, owner):
    created = create_webhook(client, owner)

    rotated = client.web.post_json(webhook_path(created, "/rotate-secret"),
                                   {"overlap_seconds": 60}, headers=owner.headers).json

    entry, = audit_entries(app, "webhook.secret_rotated")
    assert entry.details == {"overlap_seconds": 60}
    assert entry.target_id == created["id"]
    serialized = json.dumps(entry.details)
    assert rotated["secret"] not in serialized
    assert created["secret"] not in serialized


def test_rotate_then_reveal_shows_both(client, app, owner):
    created = create_webhook(client, owner)
    rotated = client.web.post_json(webhook_path(created, "/rotate-secret"),
                                   {"overlap_seconds": 3600}, headers=owner.headers).json

    revealed = client.web.get(webhook_path(created, "/secret"), headers=owner.headers).json

    assert revealed["secret"] == rotated["secret"]
    assert revealed["previous_secret"] == created["secret"]
    assert revealed["previous_secret_expires_at"] == rotated["previous_secret_expires_at"]


def test_rotate_without_overlap_drops_old_secret(client, owner):
    created = create_webhook(client, owner)
    rotated = client.web.post_json(webhook_path(created, "/rotate-secret"),
                                   {"overlap_seconds": 0}, headers=owner.headers).json

    revealed = client.web.get(webhook_path(created, "/secret"), headers=owner.headers).json

    assert revealed["secret"] == rotated["secret"]
    assert revealed["previous_secret"] is None


def test_second_rotation_retires_first_secret(client, owner):
    created = create_webhook(client, owner)
    first = client.web.post_json(webhook_path(created, "/rotate-secret"), {},
                                 headers=owner.headers).json
    second = client.web.post_json(webhook_path(created, "/rotate-secret"), {},
                                  headers=owner.headers).json

    revealed = client.web.get(webhook_path(created, "/secret"), headers=owner.headers).json

    assert revealed["secret"] == second["secret"]
    assert revealed["previous_secret"] == first["secret"]
    assert created["secret"] not in json.dumps(revealed)


@pytest.mark.shared_app(False)
def test_rotate_rejects_bad_overlap(client, app, owner):
    created = create_webhook(client, owner)

    for overlap in [-1, 604801, "60", 1.5, True, None]:
        response = client.web.post_json(webhook_path(created, "/rotate-secret"),
                                        {"overlap_seconds": overlap}, headers=owner.headers,
                                        status="*")

        assert response.status_int == 400, overlap
        body = assert_envelope(response, 400, "validation_failed")
        assert "overlap_seconds" in [error["name"] for error in body["errors"]], overlap

    assert stored(app, created).secret_rotated_at is None
    assert audit_entries(app, "webhook.secret_rotated") == []


def test_rotate_overlap_bounds_accepted(client, app, owner):
    created = create_webhook(client, owner)

    for overlap in [0, 604800]:
        body = client.web.post_json(webhook_path(created, "/rotate-secret"),
                                    {"overlap_seconds": overlap}, headers=owner.headers).json

        expires = dt.datetime.fromisoformat(body["previous_secret_expires_at"].rstrip("Z"))
        rotated = dt.datetime.fromisoformat(body["secret_rotated_at"].rstrip("Z"))
        assert (expires - rotated).total_seconds() == pytest.approx(overlap, abs=1), overlap


@pytest.mark.shared_app(False)
def test_reveal_secret_audited_and_not_cached(client, app, owner):
    created = create_webhook(client, owner)

    response = client.web.get(webhook_path(created, "/secret"), headers=owner.headers)

    assert response.headers["Cache-Control"] == "no-store"
    assert response.json == {"id": created["id"], "secret": created["secret"],
                             "previous_secret": None, "previous_secret_expires_at": None}
    entry, = audit_entries(app, "webhook.secret_revealed")
    assert entry.partner_id == owner.partner_id
    assert entry.actor_type == "user"
    assert entry.actor_id is not None
    assert entry.target_type == "webhook"
    assert entry.target_id == created["id"]
    assert entry.request_id == response.headers["X-Request-Id"]
    assert created["secret"] not in json.dumps(entry.details)


@pytest.mark.shared_app(False)
def test_each_reveal_audited(client, app, owner):
    created = create_webhook(client, owner)

    for _ in range(2):
        client.web.get(webhook_path(created, "/secret"), headers=owner.headers)

    assert len(audit_entries(app, "webhook.secret_revealed")) == 2


@pytest.mark.shared_app(False)
@pytest.mark.parametrize("role", ["billing", "read_only"])
def test_reveal_needs_permission(client, app, owner, role):
    created = create_webhook(client, owner)
    set_role(app, owner, role)

    response = client.web.get(webhook_path(created, "/secret"), headers=owner.headers,
                              status=403)

    assert_envelope(response, 403, "missing_permission")
    assert created["secret"].encode() not in response.body
    assert audit_entries(app, "webhook.secret_revealed") == []


def test_developer_can_reveal(client, app, owner):
    created = create_webhook(client, owner)
    set_role(app, owner, "developer")

    body = client.web.get(webhook_path(created, "/secret"), headers=owner.headers).json

    assert body["secret"] == created["secret"]


@pytest.mark.shared_app(False)
def test_create_audited(client, app, owner):
    created = create_webhook(client, owner)

    entry, = audit_entries(app, "webhook.created")
    assert entry.target_id == created["id"]
    assert created["secret"] not in json.dumps(entry.details)
