"""Functional tests of the delivery engine's rules beyond one attempt.

Endpoint health (410 Gone, a long run of failures, recovery), the operational
events that report it, signatures during a secret rotation, Retry-After, and
the bound on attempts in flight per endpoint. Every test runs on both stacks,
against receivers on 127.0.0.1.
"""

from __future__ import annotations

import datetime as dt
import json
import time

import jsonschema
import pytest
import sqlalchemy as sa
from standardwebhooks.webhooks import Webhook as StandardWebhook
from standardwebhooks.webhooks import WebhookVerificationError
from svix.webhooks import Webhook as SvixWebhook
from svix.webhooks import WebhookVerificationError as SvixVerificationError

from fkod.core.db import utcnow
from fkod.core.testing import TestClient
from fkod.core.webhooks import operational, signing
from fkod.core.webhooks.models import Webhook, WebhookEvent
from tests.functional.test_webhook_delivery import (
    QUIET_SECONDS,
    WAIT_SECONDS,
    api_key,
    attempts_of,
    create_user,
    deliveries_of,
    fkod_hmac,
    fkod_signature_parts,
    mark_claim_lost,
    publish_without_enqueue,
    register,
    row_id,
    subscribe,
    update_rows,
    wait_for_delivery,
    wait_for_status,
    wait_until,
)
from tests.receivers import Reply

pytestmark = pytest.mark.shared_app

ALERT_TYPES = ("webhook.*",)


def webhook_row(app, webhook_id: int) -> Webhook:
    with sa.orm.Session(app.registry["db.engine"]) as session:
        return session.get(Webhook, webhook_id)


def events_at(receiver, event_type: str) -> list[dict]:
    """Return the payloads of ``event_type`` that ``receiver`` got, in arrival order."""
    payloads = [json.loads(request.body) for request in receiver.requests]
    return [payload for payload in payloads if payload["type"] == event_type]


def assert_matches_catalog(app, payload: dict) -> None:
    event_type = app.registry["plugins"].event_catalog.get(payload["type"])
    jsonschema.validate(payload["data"], event_type.schema)


def wait_for_event(receiver, event_type: str) -> dict:
    return wait_until(lambda: (events_at(receiver, event_type) or [None])[0],
                      description=f"a {event_type} event at {receiver.url}")


# Endpoint health -------------------------------------------------------------------


def test_gone_disables_endpoint_at_once(client, make_receiver):
    receiver = make_receiver(410)
    alerts = make_receiver(200)
    member = register(client)
    webhook = subscribe(client, member, receiver.url, retry_count=3, retry_delay=60)
    subscribe(client, member, alerts.url, event_types=ALERT_TYPES)
    create_user(client, api_key(client, member))

    event = wait_for_event(alerts, operational.ENDPOINT_DISABLED)
    row = webhook_row(client.app, row_id(webhook["id"]))
    pending = deliveries_of(client.app, row.id)[0]
    time.sleep(QUIET_SECONDS)

    assert len(receiver) == 1
    assert row.status == "disabled"
    assert row.disabled_reason == "the receiver answered 410 Gone"
    assert row.disabled_at is not None
    # The delivery keeps its place and resumes once the endpoint is active again.
    assert pending.status == "pending"
    assert pending.next_retry_at is not None
    assert event["data"]["webhook_id"] == webhook["id"]
    assert event["data"]["disabled_reason"] == "the receiver answered 410 Gone"
    assert_matches_catalog(client.app, event)


def test_disabled_endpoint_gets_no_new_event(client, make_receiver):
    receiver = make_receiver(410, 200)
    member = register(client)
    webhook = subscribe(client, member, receiver.url)
    key = api_key(client, member)
    create_user(client, key)
    wait_until(lambda: webhook_row(client.app, row_id(webhook["id"])).status == "disabled",
               description="the endpoint disabled")

    create_user(client, key)
    time.sleep(QUIET_SECONDS)

    assert len(receiver) == 1
    assert len(deliveries_of(client.app, row_id(webhook["id"]))) == 1


def test_reenabled_endpoint_resumes_delivery(client, make_receiver):
    receiver = make_receiver(410, 200)
    member = register(client)
    webhook = subscribe(client, member, receiver.url, retry_count=2, retry_delay=1)
    create_user(client, api_key(client, member))
    wait_until(lambda: webhook_row(client.app, row_id(webhook["id"])).status == "disabled",
               description="the endpoint disabled")
    time.sleep(1.5)
    assert client.registry["webhook_worker"].sweep(grace_seconds=0) == 0

    update_rows(client.app, sa.update(Webhook).where(Webhook.id == row_id(webhook["id"]))
                .values(status="active", disabled_reason=None, disabled_at=None))
    assert client.registry["webhook_worker"].sweep(grace_seconds=0) == 1
    first, second = receiver.wait_for(2, timeout=WAIT_SECONDS)
    row = wait_for_delivery(client.app, row_id(webhook["id"]))

    assert row.status == "succeeded"
    assert row.attempts == 2
    assert first.header("webhook-id") == second.header("webhook-id")
    assert first.body == second.body


@pytest.mark.parametrize("failing_days, disabled", [(6, True), (4, False)])
def test_long_failure_disables_endpoint(client, make_receiver, failing_days, disabled):
    receiver = make_receiver(500)
    alerts = make_receiver(200)
    member = register(client)
    webhook = subscribe(client, member, receiver.url)
    subscribe(client, member, alerts.url, event_types=ALERT_TYPES)
    since = utcnow() - dt.timedelta(days=failing_days)
    update_rows(client.app, sa.update(Webhook).where(Webhook.id == row_id(webhook["id"]))
                .values(failing_since=since))
    create_user(client, api_key(client, member))

    wait_for_delivery(client.app, row_id(webhook["id"]))
    wait_for_event(alerts, operational.DELIVERY_EXHAUSTED)
    time.sleep(QUIET_SECONDS)
    row = webhook_row(client.app, row_id(webhook["id"]))
    disabled_events = events_at(alerts, operational.ENDPOINT_DISABLED)

    assert row.failing_since == since
    if disabled:
        assert row.status == "disabled"
        assert row.disabled_reason == "every attempt failed for 5 days"
        assert [event["data"]["webhook_id"] for event in disabled_events] == [webhook["id"]]
        assert_matches_catalog(client.app, disabled_events[0])
    else:
        assert row.status == "active"
        assert disabled_events == []


def test_first_failure_starts_failing_period(client, make_receiver):
    receiver = make_receiver(500)
    member = register(client)
    webhook = subscribe(client, member, receiver.url)
    before = utcnow()
    create_user(client, api_key(client, member))

    wait_for_delivery(client.app, row_id(webhook["id"]))
    row = webhook_row(client.app, row_id(webhook["id"]))

    assert row.status == "active"
    assert before <= row.failing_since <= utcnow()
    assert row.last_success_at is None


def test_exhausted_delivery_announced(client, make_receiver):
    receiver = make_receiver(500)
    alerts = make_receiver(200)
    member = register(client)
    webhook = subscribe(client, member, receiver.url, retry_count=1)
    subscribe(client, member, alerts.url, event_types=ALERT_TYPES)
    create_user(client, api_key(client, member))

    event = wait_for_event(alerts, operational.DELIVERY_EXHAUSTED)
    failed = wait_for_delivery(client.app, row_id(webhook["id"]))
    original = json.loads(receiver.requests[0].body)

    assert failed.status == "failed"
    assert event["data"] == {
        "webhook_id": webhook["id"], "url": receiver.url, "event_id": original["id"],
        "event_type": "user.created", "attempts": 2, "last_response_code": 500,
        "last_error": "HTTP 500",
    }
    assert_matches_catalog(client.app, event)


def test_exhausted_alert_not_announced_again(client, make_receiver):
    # One endpoint takes both user.created and the alerts, and fails everything.
    receiver = make_receiver(500)
    member = register(client)
    subscribe(client, member, receiver.url, event_types=("user.created", "webhook.*"))
    create_user(client, api_key(client, member))

    receiver.wait_for(2, timeout=WAIT_SECONDS)
    time.sleep(QUIET_SECONDS * 2)
    types = [json.loads(request.body)["type"] for request in receiver.requests]

    assert types == ["user.created", operational.DELIVERY_EXHAUSTED]


def test_success_after_failures_announces_recovery(client, make_receiver):
    receiver = make_receiver(500, 200)
    alerts = make_receiver(200)
    member = register(client)
    webhook = subscribe(client, member, receiver.url, retry_count=2)
    subscribe(client, member, alerts.url, event_types=ALERT_TYPES)
    create_user(client, api_key(client, member))

    event = wait_for_event(alerts, operational.ENDPOINT_RECOVERED)
    row = webhook_row(client.app, row_id(webhook["id"]))

    assert row.failing_since is None
    assert row.last_success_at is not None
    assert event["data"]["webhook_id"] == webhook["id"]
    assert event["data"]["failing_since"] is not None
    assert_matches_catalog(client.app, event)


def test_success_without_failures_announces_nothing(client, make_receiver):
    receiver = make_receiver(200)
    alerts = make_receiver(200)
    member = register(client)
    webhook = subscribe(client, member, receiver.url)
    subscribe(client, member, alerts.url, event_types=ALERT_TYPES)
    create_user(client, api_key(client, member))

    wait_for_delivery(client.app, row_id(webhook["id"]))
    time.sleep(QUIET_SECONDS)

    assert len(alerts) == 0
    assert webhook_row(client.app, row_id(webhook["id"])).last_success_at is not None


def test_lost_final_claim_announces_exhaustion(app, make_receiver):
    client = TestClient(app)
    receiver = make_receiver(200)
    alerts = make_receiver(200)
    member = register(client)
    webhook = subscribe(client, member, receiver.url, retry_count=0)
    subscribe(client, member, alerts.url, event_types=ALERT_TYPES)
    event_id, (delivery_id,) = publish_without_enqueue(app, member.partner_id)
    mark_claim_lost(app, delivery_id, attempts=1)

    # The first sweep fails the delivery; the second enqueues any alert it wrote.
    app.registry["webhook_worker"].sweep(grace_seconds=0)
    app.registry["webhook_worker"].sweep(grace_seconds=0)
    event = wait_until(lambda: (events_at(alerts, operational.DELIVERY_EXHAUSTED) or [None])[0],
                       timeout=10, description="a webhook.delivery_exhausted event")

    assert event["data"]["webhook_id"] == webhook["id"]
    assert event["data"]["event_id"] == event_id
    assert len(receiver) == 0


# Retry-After --------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_honoured(client, make_receiver, status):
    receiver = make_receiver(Reply(status, headers=(("Retry-After", "120"),)))
    member = register(client)
    webhook = subscribe(client, member, receiver.url, retry_count=2, retry_delay=5)
    before = utcnow()
    create_user(client, api_key(client, member))

    row = wait_until(
        lambda: next((item for item in deliveries_of(client.app, row_id(webhook["id"]))
                      if item.status == "pending" and item.attempts == 1), None),
        description="the delivery waiting for its retry")

    assert before + dt.timedelta(seconds=119) <= row.next_retry_at
    assert row.next_retry_at <= utcnow() + dt.timedelta(seconds=121)


def test_retry_after_ignored_on_500(client, make_receiver):
    receiver = make_receiver(Reply(500, headers=(("Retry-After", "3600"),)))
    member = register(client)
    webhook = subscribe(client, member, receiver.url, retry_count=2, retry_delay=5)
    create_user(client, api_key(client, member))

    row = wait_until(
        lambda: next((item for item in deliveries_of(client.app, row_id(webhook["id"]))
                      if item.status == "pending" and item.attempts == 1), None),
        description="the delivery waiting for its retry")

    assert row.next_retry_at <= utcnow() + dt.timedelta(seconds=6)


def test_retry_after_capped(app_factory, make_receiver):
    client = TestClient(app_factory(**{"fkod.webhooks.max_backoff_seconds": "60"}))
    receiver = make_receiver(Reply(429, headers=(("Retry-After", "999999"),)))
    member = register(client)
    webhook = subscribe(client, member, receiver.url, retry_count=2, retry_delay=5)
    create_user(client, api_key(client, member))

    row = wait_until(
        lambda: next((item for item in deliveries_of(client.app, row_id(webhook["id"]))
                      if item.status == "pending" and item.attempts == 1), None),
        description="the delivery waiting for its retry")

    assert row.next_retry_at <= utcnow() + dt.timedelta(seconds=61)


# Secret rotation ------------------------------------------------------------------------


def rotate_in_database(app, webhook_id: int, *, expires_in: dt.timedelta) -> str:
    """Give the endpoint a new current secret, keeping the old one until ``expires_in``."""
    vault = app.registry["webhook_vault"]
    new_secret = signing.generate_secret()
    with sa.orm.Session(app.registry["db.engine"]) as session, session.begin():
        webhook = session.get(Webhook, webhook_id)
        webhook.previous_secret_key = webhook.secret_key
        webhook.previous_secret_expires_at = utcnow() + expires_in
        webhook.secret_rotated_at = utcnow()
        webhook.secret_key = vault.encrypt(new_secret)
    return new_secret


def standard_headers(request) -> dict[str, str]:
    return {name: request.header(name)
            for name in ("webhook-id", "webhook-timestamp", "webhook-signature")}


def test_rotation_overlap_signs_with_both_secrets(client, make_receiver):
    receiver = make_receiver(200)
    member = register(client)
    webhook = subscribe(client, member, receiver.url)
    old_secret = webhook["secret"]
    new_secret = rotate_in_database(client.app, row_id(webhook["id"]),
                                    expires_in=dt.timedelta(hours=24))
    create_user(client, api_key(client, member))

    request = receiver.wait_for(1, timeout=WAIT_SECONDS)[0]
    timestamp, signatures = fkod_signature_parts(request.header("X-FKOD-Signature"))
    standard = standard_headers(request)

    assert signatures == [fkod_hmac(old_secret, timestamp, request.body),
                          fkod_hmac(new_secret, timestamp, request.body)]
    assert len(standard["webhook-signature"].split(" ")) == 2
    for secret in (old_secret, new_secret):
        StandardWebhook(secret).verify(request.body, standard)
        SvixWebhook(secret).verify(request.body, standard)


def test_expired_previous_secret_not_used(client, make_receiver):
    receiver = make_receiver(200)
    member = register(client)
    webhook = subscribe(client, member, receiver.url)
    old_secret = webhook["secret"]
    new_secret = rotate_in_database(client.app, row_id(webhook["id"]),
                                    expires_in=-dt.timedelta(seconds=1))
    create_user(client, api_key(client, member))

    request = receiver.wait_for(1, timeout=WAIT_SECONDS)[0]
    timestamp, signatures = fkod_signature_parts(request.header("X-FKOD-Signature"))
    standard = standard_headers(request)

    assert signatures == [fkod_hmac(new_secret, timestamp, request.body)]
    StandardWebhook(new_secret).verify(request.body, standard)
    SvixWebhook(new_secret).verify(request.body, standard)
    with pytest.raises(WebhookVerificationError):
        StandardWebhook(old_secret).verify(request.body, standard)
    with pytest.raises(SvixVerificationError):
        SvixWebhook(old_secret).verify(request.body, standard)


def test_attempt_records_signing_time(client, make_receiver):
    receiver = make_receiver(500, 200)
    member = register(client)
    webhook = subscribe(client, member, receiver.url, retry_count=1)
    create_user(client, api_key(client, member))

    requests = receiver.wait_for(2, timeout=WAIT_SECONDS)
    row = wait_for_delivery(client.app, row_id(webhook["id"]))
    attempts = attempts_of(client.app, row.id)

    assert [item.attempt for item in attempts] == [1, 2]
    assert row.attempt_total == 2
    assert [str(item.signed_at) for item in attempts] == [
        request.header("webhook-timestamp") for request in requests]


# Attempts in flight per endpoint ----------------------------------------------------------


def test_slow_endpoint_holds_bounded_slots(app_factory, make_receiver):
    client = TestClient(app_factory(**{
        "fkod.webhooks.max_concurrency_per_endpoint": "2",
        "fkod.tasks.inprocess_worker_threads": "4",
    }))
    slow_seconds = 0.8
    slow = make_receiver(Reply(200, delay_seconds=slow_seconds))
    fast = make_receiver(200)
    member = register(client)
    slow_webhook = subscribe(client, member, slow.url)
    subscribe(client, member, fast.url)
    key = api_key(client, member)
    for _ in range(6):
        create_user(client, key)

    fast_requests = fast.wait_for(6, timeout=WAIT_SECONDS)
    slow_requests = slow.wait_for(6, timeout=WAIT_SECONDS)
    wait_until(lambda: all(row.status == "succeeded"
                           for row in deliveries_of(client.app, row_id(slow_webhook["id"]))),
               description="every slow delivery done")
    arrivals = sorted(request.received_at for request in slow_requests)
    # A slot frees only after a reply, so no three arrivals fit in one reply's time.
    max_concurrent = max(
        sum(1 for other in arrivals if start <= other < start + slow_seconds - 0.05)
        for start in arrivals
    )

    assert max_concurrent <= 2
    # The fast endpoint was served while the slow one held its slots.
    assert max(request.received_at for request in fast_requests) < arrivals[-1]


def test_busy_endpoint_message_comes_back(app_factory, make_receiver):
    client = TestClient(app_factory(**{"fkod.webhooks.max_concurrency_per_endpoint": "1"}))
    receiver = make_receiver(Reply(200, delay_seconds=0.3))
    member = register(client)
    webhook = subscribe(client, member, receiver.url)
    key = api_key(client, member)
    for _ in range(3):
        create_user(client, key)

    receiver.wait_for(3, timeout=WAIT_SECONDS)

    def all_succeeded():
        rows = deliveries_of(client.app, row_id(webhook["id"]))
        return rows if all(row.status == "succeeded" for row in rows) else None

    rows = wait_until(all_succeeded, description="three deliveries done")

    assert len(rows) == 3
    assert {row.attempts for row in rows} == {1}
    assert len({request.header("webhook-id") for request in receiver.requests}) == 3


def test_lost_claims_do_not_hold_slots(app_factory, make_receiver):
    client = TestClient(app_factory(**{"fkod.webhooks.max_concurrency_per_endpoint": "1"}))
    receiver = make_receiver(200)
    member = register(client)
    webhook = subscribe(client, member, receiver.url)
    # A claim whose worker died: still "delivering", but its lock has passed.
    key = api_key(client, member)
    create_user(client, key)
    first = wait_for_delivery(client.app, row_id(webhook["id"]))
    update_rows(client.app, sa.update(WebhookEvent).where(WebhookEvent.id == first.id)
                .values(status="delivering", locked_until=utcnow() - dt.timedelta(minutes=1)))

    create_user(client, key)
    receiver.wait_for(2, timeout=WAIT_SECONDS)
    second = wait_until(
        lambda: next((row for row in deliveries_of(client.app, row_id(webhook["id"]))
                      if row.id != first.id and row.status == "succeeded"), None),
        description="the second delivery done")

    assert second.attempts == 1
    assert wait_for_status(client.app, first.id, ("delivering",)).status == "delivering"

