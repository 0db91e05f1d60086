"""Functional tests of webhook delivery, from an API call to a receiver on 127.0.0.1.

Each test builds the real application through the ``client``, ``app`` or
``app_factory`` fixtures, so the same tests run on two stacks. The embedded
one is SQLite with the in-process broker. With ``FKOD_TEST_STACK=production``
it is PostgreSQL with the Redis broker and a worker in the test process.
Deliveries are observed where a partner sees them, in
``tests.receivers.Receiver``, and in the ``webhook_events`` and
``webhook_attempts`` rows.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import re
import socket
import threading
import time
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session
from standardwebhooks.webhooks import Webhook as StandardWebhook
from standardwebhooks.webhooks import WebhookVerificationError
from svix.webhooks import Webhook as SvixWebhook
from svix.webhooks import WebhookVerificationError as SvixVerificationError

from fkod.core.auth.models import Partner
from fkod.core.db import run_in_transaction, utcnow
from fkod.core.testing import TestClient, auth_header, verify_partner
from fkod.core.webhooks import outbox
from fkod.core.webhooks.models import Event, Webhook, WebhookAttempt, WebhookEvent
from fkod.plugins.learning import services as learning_services
from tests.receivers import Receiver, Reply

pytestmark = pytest.mark.shared_app

# Long enough for a message to pass through Redis on the production stack.
WAIT_SECONDS = 30
# How long a test watches for requests or state changes that must not happen.
QUIET_SECONDS = 1.5
FINAL_STATUSES = ("succeeded", "failed")
UNICODE_NAME = 'Café ☕ 😀 "quoted" \\ back'


# Fixtures and helpers ------------------------------------------------------------


@dataclass
class Member:
    """A registered partner and its owner's access token."""

    partner_id: int
    token: str


def row_id(public_id: str) -> int:
    """Return the row number of a public id such as ``wh_12``."""
    return int(public_id.rsplit("_", 1)[1])


def register(client: TestClient, *, verified: bool = False) -> Member:
    partner, token = client.partner_with_token()
    member = Member(partner_id=row_id(partner["id"]), token=token)
    if verified:
        verify_partner(client.app, f"partner_{member.partner_id}")
    return member


def subscribe(client: TestClient, member: Member, url: str, *,
              event_types: tuple[str, ...] = ("user.created",), mode: str = "test",
              retry_count: int = 0, retry_delay: int = 0, headers: dict | None = None) -> dict:
    """Create a webhook endpoint and return the response, which contains the secret."""
    body = {"url": url, "event_types": list(event_types), "mode": mode,
            "retry_count": retry_count, "retry_delay": retry_delay, "headers": headers or {}}
    return client.web.post_json("/api/partners/webhooks", body,
                                headers=auth_header(member.token), status=201).json


def api_key(client: TestClient, member: Member, *, mode: str = "test",
            scopes: tuple[str, ...] = ("users:read", "users:write")) -> str:
    return client.create_key(member.token, mode=mode, scopes=scopes)["key"]


def create_user(client: TestClient, key: str, *, name: str = "Ada Lovelace",
                request_id: str | None = None) -> dict:
    email = f"user-{time.monotonic_ns()}@example.com"
    headers = auth_header(key)
    if request_id is not None:
        headers["X-Request-Id"] = request_id
    return client.web.post_json("/api/v1/users", {"email": email, "name": name},
                                headers=headers, status=201).json


def engine_of(app) -> sa.Engine:
    return app.registry["db.engine"]


def update_rows(app, statement) -> int:
    with Session(engine_of(app)) as session, session.begin():
        return session.execute(statement).rowcount


def deliveries_of(app, webhook_id: int) -> list[WebhookEvent]:
    with Session(engine_of(app)) as session:
        return list(session.scalars(
            sa.select(WebhookEvent).where(WebhookEvent.webhook_id == webhook_id)
            .order_by(WebhookEvent.id)
        ))


def delivery(app, delivery_id: int) -> WebhookEvent:
    with Session(engine_of(app)) as session:
        return session.get(WebhookEvent, delivery_id)


def attempts_of(app, delivery_id: int) -> list[WebhookAttempt]:
    with Session(engine_of(app)) as session:
        return list(session.scalars(
            sa.select(WebhookAttempt).where(WebhookAttempt.delivery_id == delivery_id)
            .order_by(WebhookAttempt.attempt)
        ))


def count_rows(app, statement) -> int:
    with Session(engine_of(app)) as session:
        return session.scalar(sa.select(sa.func.count()).select_from(statement.subquery()))


def wait_until(condition, *, timeout: float = WAIT_SECONDS, description: str):
    """Poll ``condition`` until it returns a true value and return that value.

    Raises AssertionError with ``description`` when ``timeout`` seconds pass first.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {description}")
        time.sleep(0.05)


def wait_for_delivery(app, webhook_id: int, statuses=FINAL_STATUSES) -> WebhookEvent:
    """Wait until the only delivery to ``webhook_id`` has one of ``statuses`` and return it."""
    def settled():
        rows = deliveries_of(app, webhook_id)
        return rows[0] if len(rows) == 1 and rows[0].status in statuses else None

    return wait_until(settled,
                      description=f"a delivery to webhook {webhook_id} in {statuses}")


def wait_for_status(app, delivery_id: int, statuses=FINAL_STATUSES) -> WebhookEvent:
    def settled():
        row = delivery(app, delivery_id)
        return row if row.status in statuses else None

    return wait_until(settled, description=f"delivery {delivery_id} in {statuses}")


def publish_without_enqueue(app, partner_id: int, *,
                            data: dict | None = None) -> tuple[str, list[int]]:
    """Write a user.created event and its deliveries the way a lost enqueue leaves them.

    ``publish_event`` only writes rows, so nothing is sent to the broker.
    Returns the event's public id and the delivery ids.
    """
    def work(session):
        event, deliveries = outbox.publish_event(
            session, event_type="user.created", data=data or {"id": "user_0"}, livemode=False,
            partner_ids=[partner_id], request_id=None,
        )
        return event.public_id, [item.id for item in deliveries]

    return run_in_transaction(app.registry["db.session_factory"], work)


def fkod_signature_parts(header: str) -> tuple[str, list[str]]:
    """Split ``t=<unix>,v1=<hex>[,v1=<hex>]`` into the timestamp and the v1 values."""
    items = [item.partition("=") for item in header.split(",")]
    timestamps = [value for name, _, value in items if name == "t"]
    assert len(timestamps) == 1, f"expected one t= in {header!r}"
    return timestamps[0], [value for name, _, value in items if name == "v1"]


def fkod_hmac(secret: str, timestamp: str, body: bytes) -> str:
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def standard_key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix("whsec_"))


# End to end ----------------------------------------------------------------------


@dataclass
class Delivered:
    """One user.created webhook as the receiver got it."""

    app: object
    receiver: Receiver
    secret: str
    webhook_id: int
    user: dict
    request_id: str

    @property
    def request(self):
        return self.receiver.requests[0]


@pytest.fixture
def delivered(client, make_receiver) -> Delivered:
    """Create one user with a webhook subscribed, and wait until its delivery has finished."""
    receiver = make_receiver(200)
    member = register(client)
    webhook = subscribe(client, member, receiver.url)
    key = api_key(client, member)
    request_id = f"req-test-{time.monotonic_ns()}"
    user = create_user(client, key, request_id=request_id)
    receiver.wait_for(1, timeout=WAIT_SECONDS)
    webhook_id = row_id(webhook["id"])
    wait_for_delivery(client.app, webhook_id)
    return Delivered(client.app, receiver, webhook["secret"], webhook_id, user, request_id)


def test_user_created_posted_once(delivered):
    time.sleep(QUIET_SECONDS)

    assert len(delivered.receiver) == 1
    assert delivered.request.method == "POST"
    assert delivered.request.path == delivered.receiver.path
    assert delivered.request.header("Content-Type") == "application/json"


def test_user_created_payload(delivered):
    payload = json.loads(delivered.request.body)

    assert set(payload) == {"id", "type", "created", "data", "request"}
    assert re.fullmatch(r"evt_[0-9a-f]+", payload["id"])
    assert payload["id"] == delivered.request.header("webhook-id")
    assert payload["type"] == "user.created"
    assert type(payload["created"]) is int
    assert abs(payload["created"] - delivered.request.received_at) <= 5
    assert payload["data"]["id"] == delivered.user["id"]
    assert payload["data"]["email"] == delivered.user["email"]
    assert payload["data"]["name"] == delivered.user["name"]
    assert payload["request"] == {"id": delivered.request_id}


def test_delivery_recorded_as_succeeded(delivered):
    row = deliveries_of(delivered.app, delivered.webhook_id)[0]
    attempts = attempts_of(delivered.app, row.id)

    assert row.status == "succeeded"
    assert row.attempts == 1
    assert row.response_code == 200
    assert row.response_body == "ok"
    assert row.last_attempt_at is not None
    assert row.next_retry_at is None
    assert row.locked_until is None
    assert [(item.attempt, item.response_code, item.error) for item in attempts] == [
        (1, 200, None)
    ]


def test_standard_signature_verifies(delivered):
    request = delivered.request

    parsed = StandardWebhook(delivered.secret).verify(request.body, request.header_dict())

    assert parsed == json.loads(request.body)


def test_svix_library_verifies(delivered):
    request = delivered.request

    receiver = SvixWebhook(delivered.secret)

    # svix 2.9 returns None from verify and raises on any mismatch.
    receiver.verify(request.body, request.header_dict())
    with pytest.raises(SvixVerificationError):
        receiver.verify(request.body.replace(b'"id"', b'"Id"', 1), request.header_dict())


def test_fkod_signature_verifies(delivered):
    request = delivered.request
    timestamp, signatures = fkod_signature_parts(request.header("X-FKOD-Signature"))

    assert timestamp == request.header("webhook-timestamp")
    assert signatures == [fkod_hmac(delivered.secret, timestamp, request.body)]


def test_timestamp_header_is_current(delivered):
    timestamp = delivered.request.header("webhook-timestamp")

    assert re.fullmatch(r"[0-9]{10}", timestamp)
    assert abs(int(timestamp) - delivered.request.received_at) <= 5


def test_body_alone_signature_differs(delivered):
    request = delivered.request
    body_only = hmac.new(standard_key(delivered.secret), request.body, hashlib.sha256).digest()
    _, fkod_signatures = fkod_signature_parts(request.header("X-FKOD-Signature"))
    fkod_body_only = hmac.new(delivered.secret.encode(), request.body, hashlib.sha256).hexdigest()

    assert request.header("webhook-signature") != "v1," + base64.b64encode(body_only).decode()
    assert fkod_body_only not in fkod_signatures


@pytest.mark.parametrize("header, change", [
    ("webhook-timestamp", lambda value: str(int(value) + 1)),
    ("webhook-id", lambda value: value + "0"),
])
def test_changed_header_fails_verification(delivered, header, change):
    headers = delivered.request.header_dict()
    headers[header] = change(headers[header])

    with pytest.raises(WebhookVerificationError):
        StandardWebhook(delivered.secret).verify(delivered.request.body, headers)


# Encoding ------------------------------------------------------------------------


def test_unicode_name_sent_as_utf8(client, make_receiver):
    receiver = make_receiver(200)
    member = register(client)
    webhook = subscribe(client, member, receiver.url)
    create_user(client, api_key(client, member), name=UNICODE_NAME)

    request = receiver.wait_for(1, timeout=WAIT_SECONDS)[0]
    parsed = StandardWebhook(webhook["secret"]).verify(request.body, request.header_dict())
    timestamp, signatures = fkod_signature_parts(request.header("X-FKOD-Signature"))

    assert parsed["data"]["name"] == UNICODE_NAME
    assert json.dumps(UNICODE_NAME, ensure_ascii=False).encode() in request.body
    assert b"\\u" not in request.body
    assert signatures == [fkod_hmac(webhook["secret"], timestamp, request.body)]


def test_non_ascii_payload_signed_over_bytes(app, make_receiver):
    client = TestClient(app)
    receiver = make_receiver(200)
    member = register(client)
    webhook = subscribe(client, member, receiver.url)
    data = {"id": "user_0", "integration": {"name": UNICODE_NAME, "tags": ["é", {"x": 0.1}]},
            "ratio": 0.1}
    publish_without_enqueue(app, member.partner_id, data=data)
    app.registry["webhook_worker"].sweep(grace_seconds=0)

    request = receiver.wait_for(1, timeout=WAIT_SECONDS)[0]
    timestamp, fkod_signatures = fkod_signature_parts(request.header("X-FKOD-Signature"))
    signed_content = f"{request.header('webhook-id')}.{timestamp}.".encode() + request.body
    standard_digest = hmac.new(standard_key(webhook["secret"]), signed_content,
                               hashlib.sha256).digest()
    reserialized = json.dumps(json.loads(request.body)).encode()

    assert json.dumps(UNICODE_NAME, ensure_ascii=False).encode() in request.body
    assert b"\\u" not in request.body
    assert fkod_signatures == [fkod_hmac(webhook["secret"], timestamp, request.body)]
    assert request.header("webhook-signature") == (
        "v1," + base64.b64encode(standard_digest).decode())
    assert json.loads(request.body)["data"] == data
    assert fkod_hmac(webhook["secret"], timestamp, reserialized) not in fkod_signatures


ORDINARY_FLOATS = {"tenth": 0.1, "half": 2.5, "tiny": 1e-7, "negative": -3.75,
                   "precise": 0.30000000000000004, "whole": 1.0}
LARGE_FLOATS = {"large": 1e21, "huge": 1e300}


@pytest.mark.parametrize("floats", [
    pytest.param(ORDINARY_FLOATS, id="ordinary"),
    pytest.param(LARGE_FLOATS, id="large"),
])
def test_float_data_round_trips(app, make_receiver, floats):
    client = TestClient(app)
    receiver = make_receiver(200)
    member = register(client)
    webhook = subscribe(client, member, receiver.url)
    publish_without_enqueue(app, member.partner_id, data=dict(floats))
    app.registry["webhook_worker"].sweep(grace_seconds=0)

    request = receiver.wait_for(1, timeout=WAIT_SECONDS)[0]
    parsed = StandardWebhook(webhook["secret"]).verify(request.body, request.header_dict())

    for name, value in floats.items():
        assert parsed["data"][name] == value, name
        assert type(parsed["data"][name]) is float, name


def test_suspended_partner_deliveries_wait_for_reactivation(app, make_receiver):
    client = TestClient(app)
    receiver = make_receiver(200)
    member = register(client)
    webhook = subscribe(client, member, receiver.url)
    suspended = update_rows(app, sa.update(Partner).where(Partner.id == member.partner_id)
                            .values(status="suspended"))
    publish_without_enqueue(app, member.partner_id)

    enqueued_while_suspended = app.registry["webhook_worker"].sweep(grace_seconds=0)
    client.drain_tasks()
    held = deliveries_of(app, row_id(webhook["id"]))
    update_rows(app, sa.update(Partner).where(Partner.id == member.partner_id)
                .values(status="active"))
    enqueued_after = app.registry["webhook_worker"].sweep(grace_seconds=0)

    assert suspended == 1
    assert enqueued_while_suspended == 0
    assert [row.status for row in held] == ["pending"]
    assert enqueued_after == 1
    assert len(receiver.wait_for(1, timeout=WAIT_SECONDS)) == 1


# Retries -------------------------------------------------------------------------


@pytest.mark.parametrize("retry_count", [0, 3])
def test_failing_receiver_gets_each_attempt(client, make_receiver, retry_count):
    receiver = make_receiver(500)
    member = register(client)
    webhook = subscribe(client, member, receiver.url, retry_count=retry_count)
    create_user(client, api_key(client, member))

    receiver.wait_for(1 + retry_count, timeout=WAIT_SECONDS)
    wait_for_delivery(client.app, row_id(webhook["id"]))
    # A late extra attempt would show in the receiver and in the row by now.
    time.sleep(QUIET_SECONDS)
    row = deliveries_of(client.app, row_id(webhook["id"]))[0]
    attempts = attempts_of(client.app, row.id)

    assert len(receiver) == 1 + retry_count
    assert row.status == "failed"
    assert row.attempts == 1 + retry_count
    assert row.response_code == 500
    assert row.last_error == "HTTP 500"
    assert row.next_retry_at is None
    assert row.completed_at is not None
    assert [item.attempt for item in attempts] == list(range(1, 2 + retry_count))
    assert {item.response_code for item in attempts} == {500}


def test_every_attempt_same_id_and_body(client, make_receiver):
    receiver = make_receiver(500)
    member = register(client)
    webhook = subscribe(client, member, receiver.url, retry_count=2)
    create_user(client, api_key(client, member))

    requests = receiver.wait_for(3, timeout=WAIT_SECONDS)
    verifier = StandardWebhook(webhook["secret"])

    assert len({request.body for request in requests}) == 1
    assert len({request.header("webhook-id") for request in requests}) == 1
    assert json.loads(requests[0].body)["id"] == requests[0].header("webhook-id")
    for request in requests:
        timestamp, signatures = fkod_signature_parts(request.header("X-FKOD-Signature"))
        assert timestamp == request.header("webhook-timestamp")
        assert signatures == [fkod_hmac(webhook["secret"], timestamp, request.body)]
        assert verifier.verify(request.body, request.header_dict())


@pytest.mark.parametrize("attempt_total", [47, 1024, 5000])
def test_backoff_capped_at_high_attempts(app_factory, make_receiver, attempt_total):
    app = app_factory(**{"fkod.webhooks.max_backoff_seconds": "300"})
    client = TestClient(app)
    receiver = make_receiver(500)
    member = register(client)
    webhook = subscribe(client, member, receiver.url, retry_count=10, retry_delay=1)
    event_id, [delivery_id] = publish_without_enqueue(app, member.partner_id)
    # Nine failed attempts in this run, and many more in earlier runs (replays).
    update_rows(app, sa.update(WebhookEvent).where(WebhookEvent.id == delivery_id)
                .values(attempts=9, attempt_total=attempt_total))

    # The tenth attempt's uncapped delay is 1 s * 2**9 less at most a fifth, over 400 s.
    app.registry["webhook_worker"].deliver(delivery_id)

    row = delivery(app, delivery_id)
    waited = (row.next_retry_at - row.last_attempt_at).total_seconds()
    assert row.status == "pending"
    assert row.attempts == 10
    assert row.attempt_total == attempt_total + 1
    assert 300 <= waited <= 300 + 5
    path = f"/api/partners/webhooks/{webhook['id']}/events"
    headers = auth_header(member.token)
    detail = client.web.get(f"{path}/{event_id}", headers=headers).json
    listed = client.web.get(path, headers=headers).json
    assert detail["attempt_total"] == attempt_total + 1
    assert detail["status"] == "pending"
    assert [item["attempt_total"] for item in listed["data"]] == [attempt_total + 1]


def test_retry_waits_for_delay(client, make_receiver):
    receiver = make_receiver(500, 200)
    member = register(client)
    webhook = subscribe(client, member, receiver.url, retry_count=2, retry_delay=60)
    create_user(client, api_key(client, member))

    receiver.wait_for(1, timeout=WAIT_SECONDS)
    first = wait_until(
        lambda: next((row for row in deliveries_of(client.app, row_id(webhook["id"]))
                      if row.status == "pending" and row.attempts == 1), None),
        description="the delivery back in pending after its first attempt",
    )
    checked_at = utcnow()
    time.sleep(QUIET_SECONDS)

    assert first.attempts == 1
    assert first.last_error == "HTTP 500"
    assert first.next_retry_at > checked_at
    assert first.next_retry_at <= checked_at + dt.timedelta(seconds=60)
    assert len(receiver) == 1

    update_rows(client.app, sa.update(WebhookEvent).where(WebhookEvent.id == first.id)
                .values(next_retry_at=utcnow() - dt.timedelta(minutes=1)))
    enqueued = client.registry["webhook_worker"].sweep(grace_seconds=0)
    receiver.wait_for(2, timeout=WAIT_SECONDS)
    final = wait_for_status(client.app, first.id)

    assert enqueued == 1
    assert final.status == "succeeded"
    assert final.attempts == 2
    assert [item.response_code for item in attempts_of(client.app, first.id)] == [500, 200]


def test_retry_after_500_succeeds(client, make_receiver):
    receiver = make_receiver(500, 200)
    member = register(client)
    webhook = subscribe(client, member, receiver.url, retry_count=3)
    create_user(client, api_key(client, member))

    first, second = receiver.wait_for(2, timeout=WAIT_SECONDS)
    row = wait_for_delivery(client.app, row_id(webhook["id"]))
    time.sleep(QUIET_SECONDS)

    assert len(receiver) == 2
    assert row.status == "succeeded"
    assert row.attempts == 2
    assert row.response_code == 200
    assert row.last_error is None
    assert first.header("webhook-id") == second.header("webhook-id")
    assert first.body == second.body
    assert [item.response_code for item in attempts_of(client.app, row.id)] == [500, 200]


def test_slow_receiver_times_out(app_factory, make_receiver):
    client = TestClient(app_factory(**{"fkod.webhooks.timeout_seconds": "1"}))
    receiver = make_receiver(Reply(200, delay_seconds=10))
    member = register(client)
    webhook = subscribe(client, member, receiver.url)
    create_user(client, api_key(client, member))

    receiver.wait_for(1, timeout=WAIT_SECONDS)
    row = wait_for_delivery(client.app, row_id(webhook["id"]))
    attempts = attempts_of(client.app, row.id)

    assert row.status == "failed"
    assert row.response_code is None
    assert row.last_error == "timed out"
    assert len(attempts) == 1
    assert attempts[0].error == "timed out"
    assert attempts[0].response_code is None


# Crashes, races and lost messages ----------------------------------------------------


def mark_claim_lost(app, delivery_id: int, *, attempts: int) -> None:
    """Leave a delivery as a worker that died during an attempt would leave it."""
    past = utcnow() - dt.timedelta(minutes=1)
    update_rows(app, sa.update(WebhookEvent).where(WebhookEvent.id == delivery_id)
                .values(status="delivering", attempts=attempts, last_attempt_at=past,
                        locked_until=past))


def test_lost_claim_released_and_delivered(app, make_receiver):
    client = TestClient(app)
    receiver = make_receiver(200)
    member = register(client)
    subscribe(client, member, receiver.url, retry_count=1)
    _, (delivery_id,) = publish_without_enqueue(app, member.partner_id)
    mark_claim_lost(app, delivery_id, attempts=1)

    enqueued = app.registry["webhook_worker"].sweep(grace_seconds=0)
    receiver.wait_for(1, timeout=WAIT_SECONDS)
    row = wait_for_status(app, delivery_id)

    assert enqueued == 1
    assert row.status == "succeeded"
    assert row.attempts == 2
    assert row.locked_until is None


def test_lost_claim_with_no_retries_left_fails(app, make_receiver):
    client = TestClient(app)
    receiver = make_receiver(200)
    member = register(client)
    subscribe(client, member, receiver.url, retry_count=0)
    _, (delivery_id,) = publish_without_enqueue(app, member.partner_id)
    mark_claim_lost(app, delivery_id, attempts=1)

    enqueued = app.registry["webhook_worker"].sweep(grace_seconds=0)
    time.sleep(QUIET_SECONDS)
    row = delivery(app, delivery_id)

    assert enqueued == 0
    assert row.status == "failed"
    assert row.last_error == "the worker stopped during the attempt"
    assert row.locked_until is None
    assert len(receiver) == 0


def test_live_claim_not_released(app, make_receiver):
    client = TestClient(app)
    receiver = make_receiver(200)
    member = register(client)
    subscribe(client, member, receiver.url, retry_count=1)
    _, (delivery_id,) = publish_without_enqueue(app, member.partner_id)
    future = utcnow() + dt.timedelta(minutes=5)
    update_rows(app, sa.update(WebhookEvent).where(WebhookEvent.id == delivery_id)
                .values(status="delivering", attempts=1, locked_until=future))

    enqueued = app.registry["webhook_worker"].sweep(grace_seconds=0)
    time.sleep(QUIET_SECONDS)

    assert enqueued == 0
    assert delivery(app, delivery_id).status == "delivering"
    assert len(receiver) == 0


def test_concurrent_deliver_posts_once(app, make_receiver):
    client = TestClient(app)
    receiver = make_receiver(Reply(200, delay_seconds=1))
    member = register(client)
    subscribe(client, member, receiver.url)
    _, (delivery_id,) = publish_without_enqueue(app, member.partner_id)
    worker = app.registry["webhook_worker"]
    barrier = threading.Barrier(2)

    def deliver():
        barrier.wait(timeout=10)
        worker.deliver(delivery_id)

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=WAIT_SECONDS)
    time.sleep(QUIET_SECONDS)
    row = delivery(app, delivery_id)

    assert len(receiver) == 1
    assert row.status == "succeeded"
    assert row.attempts == 1
    assert len(attempts_of(app, delivery_id)) == 1


def test_unenqueued_delivery_waits_for_sweeper(app, make_receiver):
    client = TestClient(app)
    receiver = make_receiver(200)
    member = register(client)
    webhook = subscribe(client, member, receiver.url)
    event_id, (delivery_id,) = publish_without_enqueue(app, member.partner_id)

    time.sleep(QUIET_SECONDS)
    waiting = delivery(app, delivery_id)

    assert len(receiver) == 0
    assert waiting.status == "pending"
    assert waiting.webhook_id == row_id(webhook["id"])

    enqueued = app.registry["webhook_worker"].sweep(grace_seconds=0)
    request = receiver.wait_for(1, timeout=WAIT_SECONDS)[0]

    assert enqueued == 1
    assert request.header("webhook-id") == event_id
    assert wait_for_status(app, delivery_id).status == "succeeded"


# Atomicity -----------------------------------------------------------------------


class AbortAfterPublish(Exception):
    """Raised by a test after publishing, to roll the transaction back."""


@pytest.mark.shared_app(False)
def test_failed_request_leaves_no_event(client, make_receiver, monkeypatch):
    receiver = make_receiver(200)
    member = register(client)
    webhook = subscribe(client, member, receiver.url)
    key = api_key(client, member)
    real_publish = learning_services.publish

    def publish_then_fail(*args, **kwargs):
        real_publish(*args, **kwargs)
        raise AbortAfterPublish("failure after the event was published")

    monkeypatch.setattr(learning_services, "publish", publish_then_fail)
    email = f"user-{time.monotonic_ns()}@example.com"
    client.web.post_json("/api/v1/users", {"email": email, "name": "Ada"},
                         headers=auth_header(key), status=500)
    client.registry["webhook_worker"].sweep(grace_seconds=0)
    time.sleep(QUIET_SECONDS)

    assert count_rows(client.app, sa.select(Event).where(Event.type == "user.created")) == 0
    assert deliveries_of(client.app, row_id(webhook["id"])) == []
    assert len(receiver) == 0


@pytest.mark.shared_app(False)
def test_aborted_transaction_leaves_no_event(app, make_receiver):
    client = TestClient(app)
    receiver = make_receiver(200)
    member = register(client)
    subscribe(client, member, receiver.url)
    published = []

    def work(session):
        event, deliveries = outbox.publish_event(
            session, event_type="user.created", data={"id": "user_0"}, livemode=False,
            partner_ids=[member.partner_id], request_id=None,
        )
        published.append((event.public_id, len(deliveries)))
        raise AbortAfterPublish("roll back after publishing")

    with pytest.raises(AbortAfterPublish):
        run_in_transaction(app.registry["db.session_factory"], work)
    app.registry["webhook_worker"].sweep(grace_seconds=0)
    time.sleep(QUIET_SECONDS)
    (event_id, delivery_count), = published

    assert delivery_count == 1
    assert count_rows(app, sa.select(Event).where(Event.public_id == event_id)) == 0
    assert count_rows(app, sa.select(WebhookEvent)) == 0
    assert len(receiver) == 0


# Routing -------------------------------------------------------------------------


@pytest.mark.parametrize("event_mode", ["test", "live"])
def test_event_reaches_only_its_mode(client, make_receiver, event_mode):
    receivers = {"test": make_receiver(200), "live": make_receiver(200)}
    member = register(client, verified=True)
    webhooks = {mode: subscribe(client, member, receivers[mode].url, mode=mode)
                for mode in ("test", "live")}
    other_mode = "live" if event_mode == "test" else "test"
    create_user(client, api_key(client, member, mode=event_mode))

    request = receivers[event_mode].wait_for(1, timeout=WAIT_SECONDS)[0]
    wait_for_delivery(client.app, row_id(webhooks[event_mode]["id"]))
    time.sleep(QUIET_SECONDS)

    assert json.loads(request.body)["type"] == "user.created"
    assert len(receivers[event_mode]) == 1
    assert len(receivers[other_mode]) == 0
    assert deliveries_of(client.app, row_id(webhooks[other_mode]["id"])) == []


def test_other_partner_gets_nothing(client, make_receiver):
    own_receiver = make_receiver(200)
    other_receiver = make_receiver(200)
    owner = register(client)
    other = register(client)
    own_webhook = subscribe(client, owner, own_receiver.url, event_types=("user.*",))
    other_webhook = subscribe(client, other, other_receiver.url, event_types=("user.*",))
    create_user(client, api_key(client, owner))

    own_receiver.wait_for(1, timeout=WAIT_SECONDS)
    wait_for_delivery(client.app, row_id(own_webhook["id"]))
    time.sleep(QUIET_SECONDS)

    assert len(other_receiver) == 0
    assert deliveries_of(client.app, row_id(other_webhook["id"])) == []


def test_course_pattern_skips_user_events(client, make_receiver):
    receiver = make_receiver(200)
    member = register(client)
    webhook = subscribe(client, member, receiver.url, event_types=("course.*",))
    key = api_key(client, member, scopes=("users:write", "courses:read", "courses:write"))
    create_user(client, key)
    course = client.web.post_json("/api/v1/courses", {"title": "Webhooks 101"},
                                  headers=auth_header(key), status=201).json

    request = receiver.wait_for(1, timeout=WAIT_SECONDS)[0]
    wait_for_delivery(client.app, row_id(webhook["id"]))
    time.sleep(QUIET_SECONDS)
    payload = json.loads(request.body)

    assert payload["type"] == "course.created"
    assert payload["data"]["id"] == course["id"]
    assert len(receiver) == 1
    assert len(deliveries_of(client.app, row_id(webhook["id"]))) == 1


def pause(app, webhook_id: int) -> None:
    update_rows(app, sa.update(Webhook).where(Webhook.id == webhook_id).values(status="paused"))


def test_paused_endpoint_gets_no_event(client, make_receiver):
    receiver = make_receiver(200)
    member = register(client)
    webhook = subscribe(client, member, receiver.url)
    pause(client.app, row_id(webhook["id"]))
    create_user(client, api_key(client, member))

    client.registry["webhook_worker"].sweep(grace_seconds=0)
    time.sleep(QUIET_SECONDS)

    assert len(receiver) == 0
    assert deliveries_of(client.app, row_id(webhook["id"])) == []


def test_paused_delivery_stays_pending(app, make_receiver):
    client = TestClient(app)
    receiver = make_receiver(200)
    member = register(client)
    webhook = subscribe(client, member, receiver.url)
    _, (delivery_id,) = publish_without_enqueue(app, member.partner_id)
    pause(app, row_id(webhook["id"]))

    worker = app.registry["webhook_worker"]
    worker.deliver(delivery_id)
    enqueued = worker.sweep(grace_seconds=0)
    time.sleep(QUIET_SECONDS)
    row = delivery(app, delivery_id)

    assert enqueued == 0
    assert len(receiver) == 0
    assert row.status == "pending"
    assert row.attempts == 0
    assert attempts_of(app, delivery_id) == []


# Headers -------------------------------------------------------------------------


def test_custom_headers_arrive(client, make_receiver):
    receiver = make_receiver(200)
    member = register(client)
    custom = {"X-Partner-Token": "token with spaces", "Authorization": "Basic cGFydG5lcg=="}
    subscribe(client, member, receiver.url, headers=custom)
    create_user(client, api_key(client, member))

    request = receiver.wait_for(1, timeout=WAIT_SECONDS)[0]

    for name, value in custom.items():
        assert request.header_values(name) == [value], name


# Headers the platform sets itself, in the spellings a partner might use.
PLATFORM_HEADERS = ["X-FKOD-Signature", "webhook-id", "Webhook-Timestamp", "WEBHOOK-SIGNATURE",
                    "Content-Type"]


@pytest.mark.parametrize("name", PLATFORM_HEADERS)
def test_reserved_header_rejected(client, name):
    member = register(client)
    body = {"url": "http://127.0.0.1:9/hook", "event_types": ["user.created"], "mode": "test",
            "headers": {name: "forged"}}

    response = client.web.post_json("/api/partners/webhooks", body,
                                    headers=auth_header(member.token), status=400)

    assert any(error.get("name") == f"headers.{name}"
               for error in response.json["errors"]), response.json


def test_stored_reserved_header_not_sent(client, make_receiver):
    receiver = make_receiver(200)
    member = register(client)
    webhook = subscribe(client, member, receiver.url)
    forged = {name: "forged" for name in PLATFORM_HEADERS}
    update_rows(client.app, sa.update(Webhook).where(Webhook.id == row_id(webhook["id"]))
                .values(headers=forged))
    create_user(client, api_key(client, member))

    request = receiver.wait_for(1, timeout=WAIT_SECONDS)[0]
    timestamp, signatures = fkod_signature_parts(request.header("X-FKOD-Signature"))

    for name in PLATFORM_HEADERS:
        assert len(request.header_values(name)) == 1, name
        assert request.header(name) != "forged", name
    assert signatures == [fkod_hmac(webhook["secret"], timestamp, request.body)]
    StandardWebhook(webhook["secret"]).verify(request.body, request.header_dict())


# Address checks at delivery time -----------------------------------------------------


@pytest.fixture
def outbound_connections(monkeypatch):
    """Record every socket connect of this process and block any that leaves loopback.

    The product must reject a private address before connecting. This guard
    makes sure that a regression still sends nothing off the machine.
    """
    attempted: list[tuple] = []
    real_connect = socket.socket.connect

    def guarded_connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            attempted.append(address)
            if not ipaddress.ip_address(address[0].split("%")[0]).is_loopback:
                raise OSError(f"test guard blocked a connection to {address[0]}")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    return attempted


def test_private_address_not_contacted(client, make_receiver, outbound_connections):
    receiver = make_receiver(200)
    member = register(client)
    webhook = subscribe(client, member, receiver.url)
    webhook_id = row_id(webhook["id"])
    update_rows(client.app, sa.update(Webhook).where(Webhook.id == webhook_id)
                .values(url="http://10.255.255.1:9/"))
    create_user(client, api_key(client, member))

    row = wait_for_delivery(client.app, webhook_id)
    attempts = attempts_of(client.app, row.id)
    non_loopback = [address for address in outbound_connections
                    if not ipaddress.ip_address(address[0].split("%")[0]).is_loopback]

    assert row.status == "failed"
    assert row.response_code is None
    assert row.last_error.startswith("unsafe address")
    assert len(attempts) == 1
    assert attempts[0].error.startswith("unsafe address")
    assert attempts[0].response_code is None
    assert non_loopback == []
    assert len(receiver) == 0


def test_redirect_to_private_address_not_followed(client, make_receiver, outbound_connections):
    location = "http://169.254.169.254/latest/meta-data/"
    receiver = make_receiver(Reply(302, body=b"", headers=(("Location", location),)))
    member = register(client)
    webhook = subscribe(client, member, receiver.url)
    create_user(client, api_key(client, member))

    row = wait_for_delivery(client.app, row_id(webhook["id"]))
    time.sleep(QUIET_SECONDS)
    non_loopback = [address for address in outbound_connections
                    if not ipaddress.ip_address(address[0].split("%")[0]).is_loopback]

    assert row.status == "failed"
    assert row.response_code == 302
    assert row.last_error == "redirect not followed: 302"
    assert len(receiver) == 1
    assert non_loopback == []
