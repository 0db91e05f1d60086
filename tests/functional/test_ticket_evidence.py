"""Evidence on support tickets: snapshots of a partner's own gateway calls, deliveries and keys.

Gateway calls reach ``api_usage`` through the usage buffer, so each test that
attaches one flushes it first (through the Redis stream on the production
stack). Deliveries are real, to a receiver on 127.0.0.1.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from fkod.core.ids import parse_id
from fkod.core.testing import TestClient, auth_header
from fkod.core.webhooks.models import WebhookEvent
from fkod.partners.models import SupportTicket, TicketEvidence
from fkod.partners.tickets import MAX_EVIDENCE_PER_TICKET
from tests.envelope import assert_envelope
from tests.receivers import Reply

pytestmark = pytest.mark.shared_app

TICKETS = "/api/partners/support/tickets"
MENTORS = "/api/v1/mentors"
WAIT_SECONDS = 30
FINAL_STATUSES = ("succeeded", "failed")


@dataclass
class Member:
    """A partner's owner with login headers, a test-mode API key and one open ticket."""

    partner_id: int
    headers: dict
    key: dict
    ticket: dict

    @property
    def key_headers(self) -> dict:
        return auth_header(self.key["key"])


def register(client: TestClient) -> Member:
    partner, token = client.partner_with_token()
    headers = auth_header(token)
    key = client.create_key(token, scopes=("mentors:read", "users:read", "users:write"))
    ticket = client.web.post_json(TICKETS, {"title": "Calls fail", "description": "See the "
                                            "attached records.", "category": "api"},
                                  headers=headers, status=201).json
    return Member(partner_id=parse_id("partner", partner["id"]), headers=headers, key=key,
                  ticket=ticket)


@pytest.fixture
def owner(client) -> Member:
    return register(client)


@pytest.fixture
def other(client) -> Member:
    return register(client)


def evidence_url(member: Member) -> str:
    return f"{TICKETS}/{member.ticket['id']}/evidence"


def attach(client: TestClient, member: Member, status: int | str = 201, **body):
    return client.web.post_json(evidence_url(member), body, headers=member.headers,
                                status=status)


def ticket_detail(client: TestClient, member: Member) -> dict:
    return client.web.get(f"{TICKETS}/{member.ticket['id']}", headers=member.headers).json


def evidence_rows(app) -> int:
    with Session(app.registry["db.engine"]) as session:
        return session.scalar(sa.select(sa.func.count()).select_from(TicketEvidence))


def flush_usage(app) -> None:
    """Write buffered usage records to the database on either stack."""
    app.registry["usage_recorder"].flush()
    if app.registry.settings["fkod.metering.backend"] == "redis":
        app.registry["tasks"].run_periodic_now()


def new_request_id() -> str:
    return f"trace-{secrets.token_hex(8)}"


def call_gateway(client: TestClient, member: Member, path: str = MENTORS, status: int = 200,
                 request_id: str | None = None):
    headers = dict(member.key_headers)
    if request_id is not None:
        headers["X-Request-Id"] = request_id
    return client.web.get(path, headers=headers, status=status)


def wait_until(condition, description: str):
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {WAIT_SECONDS} s waiting for {description}")
        time.sleep(0.05)


# Input --------------------------------------------------------------------------

MISSING = object()

BAD_BODIES = [
    ({"reference": "req_0123456789"}, "kind"),
    ({"kind": "api_request"}, "reference"),
    ({"kind": "screenshot", "reference": "x"}, "kind"),
    ({"kind": "", "reference": "x"}, "kind"),
    ({"kind": 1, "reference": "x"}, "kind"),
    ({"kind": None, "reference": "x"}, "kind"),
    ({"kind": "api_request", "reference": ""}, "reference"),
    ({"kind": "api_request", "reference": "r" * 101}, "reference"),
    ({"kind": "api_request", "reference": 12345}, "reference"),
    ({"kind": "api_request", "reference": ["req_1"]}, "reference"),
    ({"kind": "api_request", "reference": "req_0123456789", "snapshot": {}}, "snapshot"),
    ({"kind": "api_request", "reference": "req_0123456789", "webhook_id": "whk_1"},
     "webhook_id"),
    ({"kind": "webhook_delivery", "reference": "evt_abc", "webhook_id": "whk_x"}, "webhook_id"),
    ({"kind": "webhook_delivery", "reference": "evt_abc", "webhook_id": 1}, "webhook_id"),
    ({"kind": "webhook_delivery", "reference": "not-an-event"}, "reference"),
    ({"kind": "webhook_delivery", "reference": "evt_!!"}, "reference"),
    ({"kind": "api_key_limits", "reference": "key_abc"}, "reference"),
    ({"kind": "api_key_limits", "reference": "whk_1"}, "reference"),
]


def test_attach_rejects_bad_bodies(client, app, owner):
    for body, field in BAD_BODIES:
        response = client.web.post_json(evidence_url(owner), body, headers=owner.headers,
                                        status="*")

        envelope = assert_envelope(response, 400, "validation_failed")
        assert [error["name"] for error in envelope["errors"]] == [field], body
        assert envelope["errors"][0]["location"] == "body", body

    assert evidence_rows(app) == 0


# Gateway calls ------------------------------------------------------------------


def test_api_request_snapshot(client, app, owner):
    request_id = new_request_id()
    response = call_gateway(client, owner, request_id=request_id)
    assert response.headers["X-Request-Id"] == request_id
    flush_usage(app)

    body = attach(client, owner, kind="api_request", reference=request_id).json

    assert body["id"].startswith("evd_")
    assert body["kind"] == "api_request"
    assert body["reference"] == request_id
    assert body["attached_by"].startswith("user_")
    snapshot = body["snapshot"]
    assert snapshot["request_id"] == request_id
    [call] = snapshot["calls"]
    assert call["endpoint"] == MENTORS
    assert call["method"] == "GET"
    assert call["status_code"] == 200
    assert call["mode"] == "test"
    assert call["api_key_id"] == owner.key["id"]
    assert call["error_message"] is None
    assert isinstance(call["response_time_ms"], int)
    assert call["response_size"] > 0
    assert call["created_at"].endswith("Z")
    [stored] = ticket_detail(client, owner)["evidence"]
    assert stored == body


def test_api_request_snapshot_of_failed_call(client, app, owner):
    request_id = new_request_id()
    call_gateway(client, owner, "/api/v1/users/user_999999", status=404, request_id=request_id)
    flush_usage(app)

    snapshot = attach(client, owner, kind="api_request", reference=request_id).json["snapshot"]

    [call] = snapshot["calls"]
    assert call["endpoint"] == "/api/v1/users/{id}"
    assert call["status_code"] == 404
    assert call["error_message"] == "not_found"


@pytest.mark.shared_app(False)
def test_api_request_of_other_partner_not_found(client, app, owner, other):
    request_id = new_request_id()
    call_gateway(client, other, request_id=request_id)
    flush_usage(app)

    response = attach(client, owner, status="*", kind="api_request", reference=request_id)

    body = assert_envelope(response, 404, "not_found")
    assert request_id in body["message"]
    assert evidence_rows(app) == 0
    assert ticket_detail(client, owner)["evidence"] == []


def test_shared_request_id_shows_own_call(client, app, owner, other):
    # Clients choose their X-Request-Id, so two partners can send the same one.
    request_id = new_request_id()
    call_gateway(client, owner, request_id=request_id)
    call_gateway(client, other, "/api/v1/users/user_999999", status=404, request_id=request_id)
    flush_usage(app)

    snapshot = attach(client, owner, kind="api_request", reference=request_id).json["snapshot"]

    [call] = snapshot["calls"]
    assert call["api_key_id"] == owner.key["id"]
    assert call["status_code"] == 200


@pytest.mark.shared_app(False)
def test_unknown_request_id_not_found(client, app, owner):
    call_gateway(client, owner, request_id=new_request_id())
    flush_usage(app)

    for reference in ("trace-never-sent", "x"):
        response = attach(client, owner, status="*", kind="api_request", reference=reference)

        assert_envelope(response, 404, "not_found")
    assert evidence_rows(app) == 0


# Webhook deliveries ---------------------------------------------------------------


def subscribe(client: TestClient, member: Member, url: str) -> dict:
    body = {"url": url, "event_types": ["user.created"], "mode": "test", "retry_count": 0,
            "retry_delay": 0}
    return client.web.post_json("/api/partners/webhooks", body, headers=member.headers,
                                status=201).json


def create_user(client: TestClient, member: Member) -> None:
    email = f"learner-{secrets.token_hex(4)}@example.com"
    client.web.post_json("/api/v1/users", {"email": email, "name": "Ada Lovelace"},
                         headers=member.key_headers, status=201)


def settled_deliveries(app, webhook: dict) -> list[WebhookEvent]:
    """Wait until every delivery to ``webhook`` has finished and return them."""
    webhook_id = parse_id("whk", webhook["id"])

    def finished():
        with Session(app.registry["db.engine"]) as session:
            rows = session.scalars(sa.select(WebhookEvent)
                                   .where(WebhookEvent.webhook_id == webhook_id)).all()
        return rows if rows and all(row.status in FINAL_STATUSES for row in rows) else None

    return wait_until(finished, f"deliveries to {webhook['id']} to finish")


def delivered_event_id(receiver) -> str:
    [request] = receiver.wait_for(1, WAIT_SECONDS)
    return json.loads(request.body)["id"]


def test_webhook_delivery_snapshot(client, app, owner, make_receiver):
    receiver = make_receiver()
    webhook = subscribe(client, owner, receiver.url)
    create_user(client, owner)
    event_id = delivered_event_id(receiver)
    settled_deliveries(app, webhook)

    body = attach(client, owner, kind="webhook_delivery", reference=event_id).json

    assert body["reference"] == event_id
    snapshot = body["snapshot"]
    assert snapshot["event_id"] == event_id
    assert snapshot["event_type"] == "user.created"
    [delivery] = snapshot["deliveries"]
    assert delivery["id"] == event_id
    assert delivery["webhook_id"] == webhook["id"]
    assert delivery["url"] == receiver.url
    assert delivery["status"] == "succeeded"
    assert delivery["attempt_total"] == 1
    assert delivery["response_code"] == 200
    assert delivery["payload"]["id"] == event_id
    assert delivery["payload"]["type"] == "user.created"
    [attempt] = delivery["attempt_log"]
    assert attempt["attempt"] == 1
    assert attempt["response_code"] == 200
    assert attempt["response_body"] == "ok"
    assert attempt["error"] is None


def test_failed_delivery_snapshot(client, app, owner, make_receiver):
    receiver = make_receiver(Reply(503, b"maintenance"))
    webhook = subscribe(client, owner, receiver.url)
    create_user(client, owner)
    event_id = delivered_event_id(receiver)
    settled_deliveries(app, webhook)

    snapshot = attach(client, owner, kind="webhook_delivery",
                      reference=event_id).json["snapshot"]

    [delivery] = snapshot["deliveries"]
    assert delivery["status"] == "failed"
    [attempt] = delivery["attempt_log"]
    assert attempt["response_code"] == 503
    assert attempt["response_body"] == "maintenance"


def test_delivery_snapshot_narrowed_to_endpoint(client, app, owner, make_receiver):
    first, second = make_receiver(), make_receiver()
    first_webhook = subscribe(client, owner, first.url)
    second_webhook = subscribe(client, owner, second.url)
    create_user(client, owner)
    event_id = delivered_event_id(first)
    settled_deliveries(app, first_webhook)
    settled_deliveries(app, second_webhook)

    every = attach(client, owner, kind="webhook_delivery", reference=event_id).json
    narrowed = attach(client, owner, kind="webhook_delivery", reference=event_id,
                      webhook_id=second_webhook["id"]).json

    assert [item["webhook_id"] for item in every["snapshot"]["deliveries"]] == [
        first_webhook["id"], second_webhook["id"]]
    assert [item["webhook_id"] for item in narrowed["snapshot"]["deliveries"]] == [
        second_webhook["id"]]
    assert narrowed["snapshot"]["deliveries"][0]["url"] == second.url


def test_delivery_snapshot_stays_as_attached(client, app, owner, make_receiver):
    receiver = make_receiver()
    webhook = subscribe(client, owner, receiver.url)
    create_user(client, owner)
    event_id = delivered_event_id(receiver)
    settled_deliveries(app, webhook)
    attach(client, owner, kind="webhook_delivery", reference=event_id)

    client.web.post_json(f"/api/partners/webhooks/{webhook['id']}/events/{event_id}/replay",
                         {}, headers=owner.headers, status=202)
    receiver.wait_for(2, WAIT_SECONDS)

    [evidence] = ticket_detail(client, owner)["evidence"]
    [delivery] = evidence["snapshot"]["deliveries"]
    assert delivery["attempt_total"] == 1
    assert len(delivery["attempt_log"]) == 1


@pytest.mark.shared_app(False)
def test_delivery_of_other_partner_not_found(client, app, owner, other, make_receiver):
    receiver = make_receiver()
    their_webhook = subscribe(client, other, receiver.url)
    create_user(client, other)
    their_event = delivered_event_id(receiver)
    settled_deliveries(app, their_webhook)
    own_receiver = make_receiver()
    own_webhook = subscribe(client, owner, own_receiver.url)
    create_user(client, owner)
    own_event = delivered_event_id(own_receiver)
    settled_deliveries(app, own_webhook)

    cases = [
        {"reference": their_event},
        {"reference": their_event, "webhook_id": their_webhook["id"]},
        {"reference": their_event, "webhook_id": own_webhook["id"]},
        {"reference": own_event, "webhook_id": their_webhook["id"]},
        {"reference": "evt_000000000000000000000000"},
    ]
    for case in cases:
        response = attach(client, owner, status="*", kind="webhook_delivery", **case)

        assert_envelope(response, 404, "not_found")
    assert evidence_rows(app) == 0


def test_delivery_of_deleted_endpoint_not_found(client, app, owner, make_receiver):
    receiver = make_receiver()
    webhook = subscribe(client, owner, receiver.url)
    create_user(client, owner)
    event_id = delivered_event_id(receiver)
    settled_deliveries(app, webhook)
    client.web.delete(f"/api/partners/webhooks/{webhook['id']}", headers=owner.headers)

    response = attach(client, owner, status="*", kind="webhook_delivery", reference=event_id)

    assert_envelope(response, 404, "not_found")


# API key limits -------------------------------------------------------------------


def key_report(client: TestClient, member: Member, key: dict | None = None) -> dict:
    key = key or member.key
    return client.web.post_json(f"/api/partners/api-keys/{key['id']}/test", {},
                                headers=member.headers).json


def test_key_limits_snapshot_matches_key_test(client, app, owner):
    for _ in range(3):
        call_gateway(client, owner)

    snapshot = attach(client, owner, kind="api_key_limits",
                      reference=owner.key["id"]).json["snapshot"]
    report = key_report(client, owner)

    assert snapshot["id"] == owner.key["id"]
    assert snapshot["key_name"] == owner.key["key_name"]
    assert snapshot["key_prefix"] == owner.key["key_prefix"]
    assert snapshot["state"] == "active"
    assert snapshot["mode"] == "test"
    assert snapshot["plan"] == report["plan"]
    assert "secret_matches" not in snapshot
    assert snapshot["rate_limits"]
    assert [(w["window"], w["limit"], w["window_seconds"]) for w in snapshot["rate_limits"]] == [
        (w["window"], w["limit"], w["window_seconds"]) for w in report["rate_limits"]]
    for window in snapshot["rate_limits"]:
        assert window["remaining"] == window["limit"] - 3, window["window"]


def test_key_limits_snapshot_with_key_override(client, app, owner):
    token_headers = owner.headers
    key = client.web.post_json("/api/partners/api-keys", {
        "key_name": "limited", "scopes": ["mentors:read"], "mode": "test",
        "rate_limit": 50, "rate_limit_window": 60}, headers=token_headers, status=201).json

    snapshot = attach(client, owner, kind="api_key_limits", reference=key["id"]).json["snapshot"]

    windows = {window["window"]: window for window in snapshot["rate_limits"]}
    assert windows["key"]["limit"] == 50
    assert windows["key"]["window_seconds"] == 60
    assert windows["key"]["remaining"] == 50
    assert snapshot["rate_limit"] == 50
    assert snapshot["rate_limit_window"] == 60


def test_key_limits_snapshot_stays_as_attached(client, app, owner):
    attach(client, owner, kind="api_key_limits", reference=owner.key["id"])

    for _ in range(2):
        call_gateway(client, owner)

    [evidence] = ticket_detail(client, owner)["evidence"]
    for window in evidence["snapshot"]["rate_limits"]:
        assert window["remaining"] == window["limit"], window["window"]


@pytest.mark.shared_app(False)
def test_key_of_other_partner_not_found(client, app, owner, other):
    for reference in (other.key["id"], "key_999999"):
        response = attach(client, owner, status="*", kind="api_key_limits", reference=reference)

        body = assert_envelope(response, 404, "not_found")
        assert reference in body["message"]
    assert evidence_rows(app) == 0


# Rules --------------------------------------------------------------------------


def test_evidence_listed_oldest_first(client, app, owner):
    request_id = new_request_id()
    call_gateway(client, owner, request_id=request_id)
    flush_usage(app)
    first = attach(client, owner, kind="api_key_limits", reference=owner.key["id"]).json
    second = attach(client, owner, kind="api_request", reference=request_id).json

    detail = ticket_detail(client, owner)

    assert [item["id"] for item in detail["evidence"]] == [first["id"], second["id"]]
    assert detail["updated_at"] >= detail["created_at"]


@pytest.mark.shared_app(False)
def test_evidence_on_closed_ticket_conflicts(client, app, owner):
    client.web.post_json(f"{TICKETS}/{owner.ticket['id']}/close", {}, headers=owner.headers)

    response = attach(client, owner, status="*", kind="api_key_limits",
                      reference=owner.key["id"])

    assert_envelope(response, 409, "ticket_closed")
    assert evidence_rows(app) == 0


@pytest.mark.parametrize("status", ["in_progress", "waiting_on_partner", "resolved"])
def test_evidence_keeps_ticket_status(client, app, owner, status):
    with Session(app.registry["db.engine"]) as session, session.begin():
        session.execute(sa.update(SupportTicket)
                        .where(SupportTicket.id == parse_id("tkt", owner.ticket["id"]))
                        .values(status=status))

    attach(client, owner, kind="api_key_limits", reference=owner.key["id"])

    assert ticket_detail(client, owner)["status"] == status


@pytest.mark.shared_app(False)
def test_evidence_limit_per_ticket(client, app, owner):
    for _ in range(MAX_EVIDENCE_PER_TICKET):
        attach(client, owner, kind="api_key_limits", reference=owner.key["id"])

    response = attach(client, owner, status="*", kind="api_key_limits",
                      reference=owner.key["id"])

    body = assert_envelope(response, 409, "evidence_limit_reached")
    assert str(MAX_EVIDENCE_PER_TICKET) in body["message"]
    assert evidence_rows(app) == MAX_EVIDENCE_PER_TICKET
