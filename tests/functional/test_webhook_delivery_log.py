"""The delivery log: listing and reading deliveries, replaying and recovering them, health.

Events are written with the outbox and not enqueued, and each test runs the
real delivery worker on them itself (``worker.deliver``), so every delivery is
in a known state before the API is called. Replays and recoveries are enqueued
by the API after its commit and reach the receiver through the broker: in
process on the embedded stack, through Redis with ``FKOD_TEST_STACK=production``.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import urllib.parse
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session
from standardwebhooks.webhooks import Webhook as StandardWebhook

from fkod import cli
from fkod.core.audit import AuditEntry
from fkod.core.auth.models import PartnerMember
from fkod.core.db import run_in_transaction, utcnow
from fkod.core.testing import TestClient, auth_header
from fkod.core.webhooks import outbox
from fkod.core.webhooks.models import Event, Webhook, WebhookAttempt, WebhookEvent
from tests.envelope import assert_envelope
from tests.receivers import Reply

pytestmark = pytest.mark.shared_app

WEBHOOKS = "/api/partners/webhooks"
ALL_EVENTS = "/api/partners/webhooks/events"
QUIET_URL = "http://127.0.0.1:9/hooks"
WAIT_SECONDS = 30

ITEM_FIELDS = {
    "id", "event_type", "webhook_id", "status", "attempts", "attempt_total", "replay_count",
    "replayed_at", "last_attempt_at", "next_retry_at", "response_code", "last_error",
    "created_at", "completed_at",
}
ATTEMPT_FIELDS = {"attempt", "started_at", "duration_ms", "response_code", "response_body",
                  "error", "signed_at"}


@pytest.fixture
def app(app_factory):
    # The sweeper never ticks during a test, so a delivery moves only when the
    # test runs the worker or the API enqueues it.
    return app_factory(**{"fkod.webhooks.sweep_interval_seconds": "3600"})


# Helpers ------------------------------------------------------------------------


@dataclass
class Member:
    partner_id: int
    token: str

    @property
    def headers(self) -> dict:
        return auth_header(self.token)


def row_id(public_id: str) -> int:
    return int(public_id.rsplit("_", 1)[1])


def register(client: TestClient) -> Member:
    partner, token = client.partner_with_token()
    return Member(partner_id=row_id(partner["id"]), token=token)


@pytest.fixture
def member(client) -> Member:
    return register(client)


def subscribe(client: TestClient, member: Member, url: str = QUIET_URL, *,
              event_types=("user.*", "course.*"), retry_count: int = 0,
              retry_delay: int = 0) -> dict:
    body = {"url": url, "event_types": list(event_types), "retry_count": retry_count,
            "retry_delay": retry_delay}
    return client.web.post_json(WEBHOOKS, body, headers=member.headers, status=201).json


def publish(app, member: Member, event_type: str = "user.created") -> str:
    """Write an event and its deliveries without enqueueing them; return the event id."""
    def work(session):
        event, _deliveries = outbox.publish_event(
            session, event_type=event_type, data={"id": "user_1", "name": "Café ☕"},
            livemode=False, partner_ids=[member.partner_id], request_id=None)
        return event.public_id

    return run_in_transaction(app.registry["db.session_factory"], work)


def engine(app) -> sa.Engine:
    return app.registry["db.engine"]


def delivery(app, webhook: dict, event_id: str) -> WebhookEvent:
    with Session(engine(app)) as session:
        return session.scalar(
            sa.select(WebhookEvent).join(Event, Event.id == WebhookEvent.event_id)
            .where(WebhookEvent.webhook_id == row_id(webhook["id"]),
                   Event.public_id == event_id))


def attempts_of(app, delivery_id: int) -> list[WebhookAttempt]:
    with Session(engine(app)) as session:
        return list(session.scalars(sa.select(WebhookAttempt)
                                    .where(WebhookAttempt.delivery_id == delivery_id)
                                    .order_by(WebhookAttempt.id)))


def deliver(app, webhook: dict, event_id: str) -> WebhookEvent:
    """Run one attempt of the delivery now, in this thread, and return the delivery after it."""
    app.registry["webhook_worker"].deliver(delivery(app, webhook, event_id).id)
    return delivery(app, webhook, event_id)


def set_delivery(app, webhook: dict, event_id: str, **values) -> None:
    update_rows(app, sa.update(WebhookEvent)
                .where(WebhookEvent.id == delivery(app, webhook, event_id).id).values(**values))


def update_rows(app, statement) -> None:
    with Session(engine(app)) as session, session.begin():
        session.execute(statement)


def wait_for(app, webhook: dict, event_id: str, condition, description: str) -> WebhookEvent:
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        row = delivery(app, webhook, event_id)
        if condition(row):
            return row
        assert time.monotonic() < deadline, f"timed out waiting for {description}"
        time.sleep(0.05)


def audit_entries(app, action: str) -> list[AuditEntry]:
    with Session(engine(app)) as session:
        return list(session.scalars(
            sa.select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)))


def iso(moment: dt.datetime) -> str:
    return moment.isoformat(timespec="seconds") + "Z"


def listed(client: TestClient, member: Member, path: str, **params) -> dict:
    query = urllib.parse.urlencode(params)
    return client.web.get(f"{path}?{query}" if query else path, headers=member.headers).json


def ids(page: dict) -> list[str]:
    return [item["id"] for item in page["data"]]


def events_path(webhook: dict, suffix: str = "") -> str:
    return f"{WEBHOOKS}/{webhook['id']}/events{suffix}"


# Listing ------------------------------------------------------------------------


def test_list_items_newest_first(client, app, member, make_receiver):
    receiver = make_receiver(200)
    webhook = subscribe(client, member, receiver.url)
    sent = publish(app, member, "user.created")
    waiting = publish(app, member, "course.created")
    deliver(app, webhook, sent)

    page = listed(client, member, events_path(webhook))

    assert ids(page) == [waiting, sent]
    assert page["has_more"] is False
    assert page["next_cursor"] is None
    newest, oldest = page["data"]
    assert set(newest) == ITEM_FIELDS
    assert newest["event_type"] == "course.created"
    assert newest["webhook_id"] == webhook["id"]
    assert newest["status"] == "pending"
    assert newest["attempts"] == 0
    assert newest["next_retry_at"] is not None
    assert newest["completed_at"] is None
    assert oldest["status"] == "succeeded"
    assert oldest["attempts"] == 1
    assert oldest["attempt_total"] == 1
    assert oldest["replay_count"] == 0
    assert oldest["response_code"] == 200
    assert oldest["last_error"] is None
    assert oldest["last_attempt_at"] is not None
    assert oldest["completed_at"] is not None


def test_list_paginates(client, app, member):
    webhook = subscribe(client, member)
    published = [publish(app, member) for _ in range(5)]

    pages, cursor = [], None
    while True:
        params = {"limit": 2} if cursor is None else {"limit": 2, "cursor": cursor}
        page = listed(client, member, events_path(webhook), **params)
        pages.append(page)
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert [len(page["data"]) for page in pages] == [2, 2, 1]
    assert [page["has_more"] for page in pages] == [True, True, False]
    assert [event for page in pages for event in ids(page)] == published[::-1]


def test_list_filters_status(client, app, member, make_receiver):
    receiver = make_receiver(200, 500)
    webhook = subscribe(client, member, receiver.url)
    succeeded, failed, pending, delivering = (publish(app, member) for _ in range(4))
    deliver(app, webhook, succeeded)
    deliver(app, webhook, failed)
    set_delivery(app, webhook, delivering, status="delivering",
                 locked_until=utcnow() + dt.timedelta(minutes=5))

    for status, expected in [("succeeded", succeeded), ("failed", failed),
                             ("pending", pending), ("delivering", delivering)]:
        page = listed(client, member, events_path(webhook), status=status)
        assert ids(page) == [expected], status
        assert page["data"][0]["status"] == status


def test_list_filters_event_type(client, app, member):
    webhook = subscribe(client, member)
    created = publish(app, member, "user.created")
    updated = publish(app, member, "user.updated")
    course = publish(app, member, "course.created")

    assert ids(listed(client, member, events_path(webhook), event_type="user.*")) == [
        updated, created]
    assert ids(listed(client, member, events_path(webhook), event_type="course.created")) == [
        course]
    assert ids(listed(client, member, events_path(webhook), event_type="*")) == [
        course, updated, created]
    assert ids(listed(client, member, events_path(webhook), event_type="mentor.*")) == []
    assert ids(listed(client, member, events_path(webhook), event_type="user.created",
                      status="pending")) == [created]


def test_list_filters_created_range(client, app, member):
    webhook = subscribe(client, member)
    now = utcnow().replace(microsecond=0)
    times = [now - dt.timedelta(hours=hours) for hours in (3, 2, 1)]
    events = [publish(app, member) for _ in times]
    for event_id, created_at in zip(events, times, strict=True):
        set_delivery(app, webhook, event_id, created_at=created_at)
    three, two, one = events
    # The same instant as times[1], written with a +02:00 offset.
    two_hours_ago_in_plus_two = (times[1] + dt.timedelta(hours=2)).isoformat() + "+02:00"

    after = listed(client, member, events_path(webhook), created_after=iso(times[1]))
    before = listed(client, member, events_path(webhook), created_before=iso(times[1]))
    between = listed(client, member, events_path(webhook), created_after=iso(times[0]),
                     created_before=iso(times[2]))
    offset = listed(client, member, events_path(webhook),
                    created_after=two_hours_ago_in_plus_two)

    assert ids(after) == [one, two]
    assert ids(before) == [three]
    assert ids(between) == [two, three]
    assert ids(offset) == [one, two]


BAD_FILTERS = [
    ("status=bogus", "status"),
    ("status=", "status"),
    ("status=pending&status=failed", "status"),
    ("event_type=Course.Created", "event_type"),
    ("event_type=course..created", "event_type"),
    ("event_type=course.*%3Bdrop", "event_type"),
    ("event_type=*.created", "event_type"),
    ("event_type=" + "a." * 60 + "b", "event_type"),
    ("created_after=yesterday", "created_after"),
    ("created_after=2026-01-01T00:00:00", "created_after"),
    ("created_before=2026-01-01", "created_before"),
    ("created_after=2026-02-01T00:00:00Z&created_before=2026-01-01T00:00:00Z", "created_before"),
    ("created_after=2026-01-01T00:00:00Z&created_before=2026-01-01T00:00:00Z", "created_before"),
    ("limit=0", "limit"),
    ("limit=101", "limit"),
    ("limit=ten", "limit"),
    ("cursor=not-a-cursor", "cursor"),
    ("sort=-created_at", "sort"),
]


def assert_filter_rejected(client, member, path: str, query: str, field: str) -> None:
    response = client.web.get(f"{path}?{query}", headers=member.headers, status="*")

    assert response.status_int == 400, query
    body = assert_envelope(response, 400, "validation_failed")
    first = body["errors"][0]
    assert (first["location"], first["name"]) == ("querystring", field), query


def test_list_rejects_bad_filters(client, member):
    webhook = subscribe(client, member)

    for query, field in [*BAD_FILTERS, ("webhook_id=whk_1", "webhook_id")]:
        assert_filter_rejected(client, member, events_path(webhook), query, field)


def test_all_list_rejects_bad_filters(client, member):
    bad_webhook_ids = [("webhook_id=" + value, "webhook_id") for value in (
        "whk_x", "whk_0", "whk_007", "whk_99999999999", "key_1", "12", "")]

    for query, field in BAD_FILTERS + bad_webhook_ids:
        assert_filter_rejected(client, member, ALL_EVENTS, query, field)


def test_all_deliveries_across_endpoints(client, app, member):
    users = subscribe(client, member, event_types=("user.*",))
    courses = subscribe(client, member, event_types=("course.*",))
    removed = subscribe(client, member, event_types=("user.*",))
    other = register(client)
    other_webhook = subscribe(client, other, event_types=("user.*",))
    user_event = publish(app, member, "user.created")
    course_event = publish(app, member, "course.created")
    publish(app, other, "user.created")
    client.web.delete(f"{WEBHOOKS}/{removed['id']}", headers=member.headers, status=204)

    everything = listed(client, member, ALL_EVENTS)
    only_users = listed(client, member, ALL_EVENTS, webhook_id=users["id"])
    other_partners = listed(client, member, ALL_EVENTS, webhook_id=other_webhook["id"])
    deleted = listed(client, member, ALL_EVENTS, webhook_id=removed["id"])

    assert [(item["id"], item["webhook_id"]) for item in everything["data"]] == [
        (course_event, courses["id"]), (user_event, users["id"])]
    assert ids(only_users) == [user_event]
    assert other_partners["data"] == []
    assert deleted["data"] == []


def test_all_deliveries_filters_and_pages(client, app, member):
    subscribe(client, member, event_types=("user.*",))
    subscribe(client, member, event_types=("user.created",))
    created = publish(app, member, "user.created")
    updated = publish(app, member, "user.updated")

    first = listed(client, member, ALL_EVENTS, limit=2)
    second = listed(client, member, ALL_EVENTS, limit=2, cursor=first["next_cursor"])
    filtered = listed(client, member, ALL_EVENTS, event_type="user.updated")

    assert ids(first) + ids(second) == [updated, created, created]
    assert first["has_more"] is True
    assert second["has_more"] is False
    assert ids(filtered) == [updated]


def test_events_path_is_not_an_id(client, member):
    response = client.web.put_json(ALL_EVENTS, {"description": "x"}, headers=member.headers,
                                   status=405)

    assert_envelope(response, 405)


# One delivery -------------------------------------------------------------------


def test_delivery_detail_with_attempts(client, app, member, make_receiver):
    receiver = make_receiver(Reply(500, body=b"not now"), Reply(200, body=b"thanks"))
    webhook = subscribe(client, member, receiver.url)
    event_id = publish(app, member)
    deliver(app, webhook, event_id)
    client.web.post_json(events_path(webhook, f"/{event_id}/replay"), {},
                         headers=member.headers, status=202)
    first, second = receiver.wait_for(2, timeout=WAIT_SECONDS)
    wait_for(app, webhook, event_id, lambda row: row.status == "succeeded", "the replay")

    body = client.web.get(events_path(webhook, f"/{event_id}"), headers=member.headers).json

    assert set(body) == ITEM_FIELDS | {"payload", "response_body", "attempt_log"}
    assert body["id"] == event_id
    assert body["payload"] == json.loads(first.body)
    assert body["status"] == "succeeded"
    assert body["response_body"] == "thanks"
    assert body["attempt_total"] == 2
    assert body["replay_count"] == 1
    assert body["replayed_at"] is not None
    older, newer = body["attempt_log"]
    assert set(older) == ATTEMPT_FIELDS
    assert (older["attempt"], older["response_code"], older["response_body"]) == (
        1, 500, "not now")
    assert (newer["attempt"], newer["response_code"], newer["response_body"]) == (
        2, 200, "thanks")
    assert older["signed_at"] == int(first.header("webhook-timestamp"))
    assert newer["signed_at"] == int(second.header("webhook-timestamp"))
    assert older["started_at"] <= newer["started_at"]
    assert isinstance(older["duration_ms"], int)


def test_delivery_detail_not_found(client, app, member):
    webhook = subscribe(client, member, event_types=("user.*",))
    sibling = subscribe(client, member, event_types=("course.*",))
    other = register(client)
    other_webhook = subscribe(client, other, event_types=("user.*",))
    own_event = publish(app, member, "user.created")
    sibling_event = publish(app, member, "course.created")
    other_event = publish(app, other, "user.created")

    for path in [events_path(webhook, f"/{sibling_event}"),
                 events_path(webhook, f"/{other_event}"),
                 events_path(webhook, "/evt_0123456789abcdef01234567"),
                 events_path(other_webhook, f"/{other_event}"),
                 events_path(sibling, f"/{own_event}")]:
        response = client.web.get(path, headers=member.headers, status="*")
        assert response.status_int == 404, path
        assert_envelope(response, 404, "not_found")
        replay = client.web.post_json(path + "/replay", {}, headers=member.headers, status="*")
        assert replay.status_int == 404, path

    assert delivery(app, other_webhook, other_event).status == "pending"


def test_malformed_event_id_rejected(client, member):
    webhook = subscribe(client, member)

    for bad_event_id in ["evt_", "evt_a-b", "event_1", "1", "evt_" + "a" * 37, "evt_%C3%A9"]:
        for response in [
            client.web.get(events_path(webhook, f"/{bad_event_id}"), headers=member.headers,
                           status="*"),
            client.web.post_json(events_path(webhook, f"/{bad_event_id}/replay"), {},
                                 headers=member.headers, status="*"),
        ]:
            assert response.status_int == 400, bad_event_id
            first = assert_envelope(response, 400, "validation_failed")["errors"][0]
            assert (first["location"], first["name"]) == ("path", "eventId"), bad_event_id


# Replays ------------------------------------------------------------------------


def assert_same_message(first, second) -> None:
    assert second.header("webhook-id") == first.header("webhook-id")
    assert second.body == first.body


def test_replay_succeeded_delivery(client, app, member, make_receiver):
    receiver = make_receiver(200)
    webhook = subscribe(client, member, receiver.url)
    event_id = publish(app, member)
    deliver(app, webhook, event_id)

    response = client.web.post_json(events_path(webhook, f"/{event_id}/replay"), {},
                                    headers=member.headers, status=202)

    body = response.json
    assert set(body) == ITEM_FIELDS
    assert body["id"] == event_id
    assert body["status"] == "pending"
    assert body["attempts"] == 0
    assert body["replay_count"] == 1
    assert body["completed_at"] is None
    first, second = receiver.wait_for(2, timeout=WAIT_SECONDS)
    assert_same_message(first, second)
    assert first.header("webhook-id") == event_id
    row = wait_for(app, webhook, event_id, lambda row: row.status == "succeeded"
                   and row.attempt_total == 2, "the replay")
    assert row.attempts == 1
    assert row.replay_count == 1
    assert row.replayed_at is not None
    assert row.locked_until is None
    assert [item.attempt for item in attempts_of(app, row.id)] == [1, 2]


def test_replay_failed_delivery(client, app, member, make_receiver):
    receiver = make_receiver(500, 200)
    webhook = subscribe(client, member, receiver.url)
    event_id = publish(app, member)
    assert deliver(app, webhook, event_id).status == "failed"

    client.web.post_json(events_path(webhook, f"/{event_id}/replay"), {},
                         headers=member.headers, status=202)

    first, second = receiver.wait_for(2, timeout=WAIT_SECONDS)
    assert_same_message(first, second)
    row = wait_for(app, webhook, event_id, lambda row: row.status == "succeeded", "the replay")
    assert row.response_code == 200
    assert row.last_error is None
    assert [(item.attempt, item.response_code) for item in attempts_of(app, row.id)] == [
        (1, 500), (2, 200)]
    StandardWebhook(webhook["secret"]).verify(second.body, second.header_dict())


def test_replay_pending_delivery_sends_now(client, app, member, make_receiver):
    receiver = make_receiver(500, 200)
    webhook = subscribe(client, member, receiver.url, retry_count=3, retry_delay=3600)
    event_id = publish(app, member)
    waiting = deliver(app, webhook, event_id)

    body = client.web.post_json(events_path(webhook, f"/{event_id}/replay"), {},
                                headers=member.headers, status=202).json

    next_retry = dt.datetime.fromisoformat(body["next_retry_at"].rstrip("Z"))
    assert waiting.status == "pending"
    assert waiting.next_retry_at > utcnow() + dt.timedelta(minutes=30)
    assert next_retry < utcnow() + dt.timedelta(seconds=5)
    assert body["attempts"] == 1
    assert body["replay_count"] == 0
    first, second = receiver.wait_for(2, timeout=WAIT_SECONDS)
    assert_same_message(first, second)
    row = wait_for(app, webhook, event_id, lambda row: row.status == "succeeded", "the attempt")
    assert row.attempts == 2
    assert row.replay_count == 0


@pytest.mark.shared_app(False)
def test_replay_in_flight_conflict(client, app, member):
    webhook = subscribe(client, member)
    event_id = publish(app, member)
    set_delivery(app, webhook, event_id, status="delivering", attempts=1,
                 locked_until=utcnow() + dt.timedelta(minutes=5))

    response = client.web.post_json(events_path(webhook, f"/{event_id}/replay"), {},
                                    headers=member.headers, status=409)

    assert_envelope(response, 409, "delivery_in_progress")
    row = delivery(app, webhook, event_id)
    assert (row.status, row.attempts, row.replay_count) == ("delivering", 1, 0)
    assert audit_entries(app, "webhook.event_replayed") == []


@pytest.mark.parametrize("status", ["paused", "disabled"])
def test_replay_needs_active_endpoint(client, app, member, make_receiver, status):
    receiver = make_receiver(500)
    webhook = subscribe(client, member, receiver.url)
    event_id = publish(app, member)
    deliver(app, webhook, event_id)
    update_rows(app, sa.update(Webhook).where(Webhook.id == row_id(webhook["id"]))
                .values(status=status))

    response = client.web.post_json(events_path(webhook, f"/{event_id}/replay"), {},
                                    headers=member.headers, status=409)

    assert_envelope(response, 409, "webhook_not_active")
    row = delivery(app, webhook, event_id)
    assert (row.status, row.replay_count) == ("failed", 0)
    assert len(receiver) == 1


@pytest.mark.shared_app(False)
def test_replay_audited(client, app, member, make_receiver):
    receiver = make_receiver(500)
    webhook = subscribe(client, member, receiver.url)
    event_id = publish(app, member)
    deliver(app, webhook, event_id)

    client.web.post_json(events_path(webhook, f"/{event_id}/replay"), {},
                         headers=member.headers, status=202)

    entry, = audit_entries(app, "webhook.event_replayed")
    assert entry.target_id == webhook["id"]
    assert entry.details == {"event_id": event_id, "previous_status": "failed"}


def test_replay_rejects_body_fields(client, app, member):
    webhook = subscribe(client, member)
    event_id = publish(app, member)

    response = client.web.post_json(events_path(webhook, f"/{event_id}/replay"),
                                    {"force": True}, headers=member.headers, status=400)

    body = assert_envelope(response, 400, "validation_failed")
    assert body["errors"][0]["name"] == "force"
    assert delivery(app, webhook, event_id).replay_count == 0


# Recovering failed deliveries -------------------------------------------------------


def test_recover_resends_failed_in_range(client, app, member, make_receiver):
    receiver = make_receiver(500, 500, 500, 200)
    webhook = subscribe(client, member, receiver.url)
    too_old, failed_one, failed_two, succeeded = (publish(app, member) for _ in range(4))
    for event_id in (too_old, failed_one, failed_two, succeeded):
        deliver(app, webhook, event_id)
    now = utcnow()
    set_delivery(app, webhook, too_old, created_at=now - dt.timedelta(days=2))
    for event_id in (failed_one, failed_two, succeeded):
        set_delivery(app, webhook, event_id, created_at=now - dt.timedelta(hours=1))

    response = client.web.post_json(f"{WEBHOOKS}/{webhook['id']}/recover",
                                    {"since": iso(now - dt.timedelta(days=1))},
                                    headers=member.headers, status=202)

    assert response.json == {"recovered": 2}
    resent = receiver.wait_for(6, timeout=WAIT_SECONDS)[4:]
    assert sorted(request.header("webhook-id") for request in resent) == sorted(
        [failed_one, failed_two])
    for event_id in (failed_one, failed_two):
        row = wait_for(app, webhook, event_id, lambda row: row.status == "succeeded",
                       f"the recovery of {event_id}")
        assert row.replay_count == 1
    assert delivery(app, webhook, too_old).status == "failed"
    assert delivery(app, webhook, too_old).replay_count == 0
    assert delivery(app, webhook, succeeded).replay_count == 0
    time.sleep(0.5)
    assert len(receiver) == 6


def test_recover_until_bound(client, app, member, make_receiver):
    receiver = make_receiver(500, 500, 200)
    webhook = subscribe(client, member, receiver.url)
    early, late = publish(app, member), publish(app, member)
    deliver(app, webhook, early)
    deliver(app, webhook, late)
    now = utcnow()
    set_delivery(app, webhook, early, created_at=now - dt.timedelta(hours=3))
    set_delivery(app, webhook, late, created_at=now - dt.timedelta(hours=1))

    response = client.web.post_json(f"{WEBHOOKS}/{webhook['id']}/recover", {
        "since": iso(now - dt.timedelta(hours=4)), "until": iso(now - dt.timedelta(hours=2))},
        headers=member.headers, status=202)

    assert response.json == {"recovered": 1}
    third = receiver.wait_for(3, timeout=WAIT_SECONDS)[2]
    assert third.header("webhook-id") == early
    wait_for(app, webhook, early, lambda row: row.status == "succeeded", "the recovery")
    assert delivery(app, webhook, late).status == "failed"


def test_recover_nothing(client, member):
    webhook = subscribe(client, member)

    response = client.web.post_json(f"{WEBHOOKS}/{webhook['id']}/recover",
                                    {"since": iso(utcnow() - dt.timedelta(hours=1))},
                                    headers=member.headers, status=202)

    assert response.json == {"recovered": 0}


@pytest.mark.shared_app(False)
def test_recover_audited(client, app, member, make_receiver):
    receiver = make_receiver(500)
    webhook = subscribe(client, member, receiver.url)
    deliver(app, webhook, publish(app, member))
    since = utcnow() - dt.timedelta(hours=1)

    client.web.post_json(f"{WEBHOOKS}/{webhook['id']}/recover", {"since": iso(since)},
                         headers=member.headers, status=202)

    entry, = audit_entries(app, "webhook.recovered")
    assert entry.target_id == webhook["id"]
    assert entry.details["recovered"] == 1
    assert entry.details["since"] == iso(since)


def recover_bodies() -> list[tuple[dict, str]]:
    now = utcnow()
    return [
        ({}, "since"),
        ({"since": None}, "since"),
        ({"since": 1767225600}, "since"),
        ({"since": "yesterday"}, "since"),
        ({"since": iso(now - dt.timedelta(hours=1)).rstrip("Z")}, "since"),
        ({"since": iso(now - dt.timedelta(days=31))}, "since"),
        ({"since": iso(now + dt.timedelta(hours=1))}, "since"),
        ({"since": iso(now - dt.timedelta(hours=2)),
          "until": iso(now - dt.timedelta(hours=3))}, "since"),
        ({"since": iso(now - dt.timedelta(hours=2)), "until": "soon"}, "until"),
        ({"since": iso(now - dt.timedelta(hours=2)), "status": "failed"}, "status"),
    ]


@pytest.mark.shared_app(False)
def test_recover_rejects_bad_input(client, app, member, make_receiver):
    receiver = make_receiver(500)
    webhook = subscribe(client, member, receiver.url)
    event_id = publish(app, member)
    deliver(app, webhook, event_id)

    for body, field in recover_bodies():
        response = client.web.post_json(f"{WEBHOOKS}/{webhook['id']}/recover", body,
                                         headers=member.headers, status="*")

        assert response.status_int == 400, body
        errors = assert_envelope(response, 400, "validation_failed")["errors"]
        assert field in [error["name"] for error in errors], body

    assert delivery(app, webhook, event_id).status == "failed"
    assert audit_entries(app, "webhook.recovered") == []


def test_recover_needs_active_endpoint(client, app, member, make_receiver):
    receiver = make_receiver(500)
    webhook = subscribe(client, member, receiver.url)
    event_id = publish(app, member)
    deliver(app, webhook, event_id)
    client.web.put_json(f"{WEBHOOKS}/{webhook['id']}", {"status": "paused"},
                        headers=member.headers)

    response = client.web.post_json(f"{WEBHOOKS}/{webhook['id']}/recover",
                                    {"since": iso(utcnow() - dt.timedelta(hours=1))},
                                    headers=member.headers, status=409)

    assert_envelope(response, 409, "webhook_not_active")
    assert delivery(app, webhook, event_id).status == "failed"


# Health -------------------------------------------------------------------------


HEALTH_FIELDS = {
    "webhook_id", "status", "disabled_reason", "failing_since", "last_success_at",
    "window_seconds", "attempts", "successes", "failures", "success_rate", "pending",
    "oldest_pending_at", "oldest_pending_age_seconds", "failed",
}


def test_health_after_mixed_outcomes(client, app, member, make_receiver):
    receiver = make_receiver(200, 500, 200, 500, 200, 200)
    webhook = subscribe(client, member, receiver.url)
    delivered = [publish(app, member) for _ in range(6)]
    for event_id in delivered:
        deliver(app, webhook, event_id)
    # The sixth attempt falls outside the last 24 hours.
    old = delivery(app, webhook, delivered[5])
    update_rows(app, sa.update(WebhookAttempt).where(WebhookAttempt.delivery_id == old.id)
                .values(started_at=utcnow() - dt.timedelta(hours=25)))
    waiting = publish(app, member)
    pending_since = utcnow() - dt.timedelta(minutes=10)
    set_delivery(app, webhook, waiting, created_at=pending_since)

    body = client.web.get(f"{WEBHOOKS}/{webhook['id']}/health", headers=member.headers).json

    row = stored_webhook(app, webhook)
    assert set(body) == HEALTH_FIELDS
    assert body["webhook_id"] == webhook["id"]
    assert body["status"] == "active"
    assert body["window_seconds"] == 86400
    assert (body["attempts"], body["successes"], body["failures"]) == (5, 3, 2)
    assert body["success_rate"] == 0.6
    assert body["failed"] == 2
    assert body["pending"] == 1
    assert body["oldest_pending_at"] == iso(pending_since)
    assert 600 <= body["oldest_pending_age_seconds"] < 700
    assert body["last_success_at"] == (iso(row.last_success_at) if row.last_success_at
                                       else None)
    assert body["failing_since"] == (iso(row.failing_since) if row.failing_since else None)
    assert body["last_success_at"] is not None


def stored_webhook(app, webhook: dict) -> Webhook:
    with Session(engine(app)) as session:
        return session.get(Webhook, row_id(webhook["id"]))


def test_health_without_attempts(client, member):
    webhook = subscribe(client, member)

    body = client.web.get(f"{WEBHOOKS}/{webhook['id']}/health", headers=member.headers).json

    assert (body["attempts"], body["successes"], body["failures"]) == (0, 0, 0)
    assert body["success_rate"] is None
    assert body["pending"] == 0
    assert body["failed"] == 0
    assert body["oldest_pending_at"] is None
    assert body["oldest_pending_age_seconds"] is None
    assert body["last_success_at"] is None


def test_health_of_disabled_endpoint(client, app, member):
    webhook = subscribe(client, member)
    failing_since = utcnow().replace(microsecond=0) - dt.timedelta(days=5)
    update_rows(app, sa.update(Webhook).where(Webhook.id == row_id(webhook["id"])).values(
        status="disabled", disabled_reason="every attempt failed for 5 days",
        disabled_at=utcnow(), failing_since=failing_since))

    body = client.web.get(f"{WEBHOOKS}/{webhook['id']}/health", headers=member.headers).json

    assert body["status"] == "disabled"
    assert body["disabled_reason"] == "every attempt failed for 5 days"
    assert body["failing_since"] == iso(failing_since)


# The operator's command -------------------------------------------------------------


def write_ini(path, settings: dict) -> str:
    lines = ["[app:main]", "use = egg:fkod"]
    # PasteDeploy interpolates %(name)s, so a literal % is doubled.
    lines += [f"{name} = {str(value).replace('%', '%%')}" for name, value in settings.items()]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.mark.shared_app(False)
def test_webhook_stats_command(client, app, member, make_receiver, stack_settings, tmp_path,
                               capsys):
    receiver = make_receiver(500)
    active = subscribe(client, member, receiver.url, event_types=("user.*",))
    paused = subscribe(client, member, event_types=("user.*",))
    removed = subscribe(client, member, event_types=("user.*",))
    failed, waiting, in_flight = (publish(app, member) for _ in range(3))
    deliver(app, active, failed)
    set_delivery(app, active, waiting, created_at=utcnow() - dt.timedelta(minutes=10))
    set_delivery(app, active, in_flight, status="delivering",
                 locked_until=utcnow() + dt.timedelta(minutes=5))
    client.web.put_json(f"{WEBHOOKS}/{paused['id']}", {"status": "paused"},
                        headers=member.headers)
    client.web.delete(f"{WEBHOOKS}/{removed['id']}", headers=member.headers, status=204)
    ini = write_ini(tmp_path / "stats.ini", stack_settings)

    status = cli.main(["webhook-stats", ini])

    stats = json.loads(capsys.readouterr().out)
    assert status == 0
    assert stats["pending"] == 1
    assert stats["due"] == 1
    assert stats["delivering"] == 1
    # The paused endpoint's three deliveries wait; the deleted one's are not counted.
    assert stats["held"] == 3
    assert stats["failed"] == 1
    assert stats["endpoints"] == {"active": 1, "paused": 1, "disabled": 0}
    assert 600 <= stats["oldest_pending_age_seconds"] < 700
    oldest = dt.datetime.fromisoformat(stats["oldest_pending_at"].rstrip("Z"))
    assert abs((utcnow() - oldest).total_seconds() - 600) < 100


ECHOED_CREDENTIAL = "receiver-credential-7f3a"


@pytest.mark.parametrize(("role", "visible"), [("owner", True), ("developer", True),
                                               ("billing", False), ("read_only", False)])
def test_echoed_header_values_hidden_in_log(client, app, member, make_receiver, role, visible):
    receiver = make_receiver(Reply(200, body=f"ok X-Token={ECHOED_CREDENTIAL}".encode()))
    webhook = client.web.post_json(WEBHOOKS, {
        "url": receiver.url, "event_types": ["user.*"], "retry_count": 0,
        "headers": {"X-Token": ECHOED_CREDENTIAL}}, headers=member.headers, status=201).json
    event_id = publish(app, member)
    deliver(app, webhook, event_id)
    update_rows(app, sa.update(PartnerMember).where(PartnerMember.partner_id == member.partner_id)
                .values(role=role))

    found = client.web.get(f"{WEBHOOKS}/{webhook['id']}/events/{event_id}",
                           headers=member.headers).json

    expected = f"ok X-Token={ECHOED_CREDENTIAL if visible else '****'}"
    assert found["response_body"] == expected
    assert [attempt["response_body"] for attempt in found["attempt_log"]] == [expected]
