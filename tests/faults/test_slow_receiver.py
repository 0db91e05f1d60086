"""A receiver slower than the delivery timeout delays no other endpoint.

The application is the web process: it writes events and sends delivery
messages to a private Redis, and a real ``fkod worker`` process (8 threads)
delivers them. One partner has a slow endpoint, which keeps every request
open longer than ``fkod.webhooks.timeout_seconds``, and three fast ones, all
subscribed to ``user.created``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import sqlalchemy as sa

from fkod.core.testing import TestClient, auth_header, make_settings
from fkod.core.webhooks.models import WebhookAttempt, WebhookEvent
from tests.faults.conftest import wait_until
from tests.faults.traffic import give_large_plan, running_app
from tests.integration.test_webhook_delivery_redis import LOGGING_SECTIONS, Worker
from tests.receivers import Reply

USERS = 6
FAST_ENDPOINTS = 3
TIMEOUT_SECONDS = 1
SLOW_REPLY_SECONDS = 30
RETRY_COUNT = 2
RETRY_DELAY_SECONDS = 1
FAST_WAIT_SECONDS = 20
SLOW_WAIT_SECONDS = 90


@pytest.fixture
def worker_settings(tmp_path, private_database, private_redis) -> dict:
    return make_settings(tmp_path, db_url=private_database, extra={
        "fkod.redis.url": private_redis.url,
        "fkod.redis.key_prefix": f"fkod-fault:{os.urandom(4).hex()}:",
        "fkod.ratelimit.backend": "redis",
        "fkod.metering.backend": "redis",
        "fkod.tasks.broker": "redis",
        "fkod.webhooks.timeout_seconds": str(TIMEOUT_SECONDS),
        "fkod.webhooks.connect_timeout_seconds": str(TIMEOUT_SECONDS),
        "fkod.webhooks.sweep_interval_seconds": "1",
    })


def write_ini(path: Path, settings: dict) -> Path:
    lines = ["[app:main]", "use = egg:fkod-partner-platform"]
    # PasteDeploy interpolates %(name)s in values, so a literal % is doubled.
    lines += [f"{name} = {value.replace('%', '%%')}" for name, value in settings.items()]
    path.write_text("\n".join(lines) + "\n" + LOGGING_SECTIONS)
    return path


def subscribe(client: TestClient, token: str, url: str, retry_count: int) -> dict:
    return client.web.post_json("/api/partners/webhooks", {
        "url": url, "event_types": ["user.created"], "mode": "test",
        "retry_count": retry_count, "retry_delay": RETRY_DELAY_SECONDS,
    }, headers=auth_header(token), status=201).json


def row_id(public_id: str) -> int:
    return int(public_id.rsplit("_", 1)[1])


def deliveries(app, webhook_id: int) -> list[WebhookEvent]:
    with app.registry["db.engine"].connect() as connection:
        return list(connection.execute(
            sa.select(WebhookEvent).where(WebhookEvent.webhook_id == webhook_id)))


def all_failed(app, webhook_id: int) -> list[WebhookEvent] | None:
    """Return the endpoint's deliveries once every one has failed for good, else None."""
    rows = deliveries(app, webhook_id)
    if rows and all(row.status == "failed" for row in rows):
        return rows
    return None


def test_slow_receiver_delays_no_other(tmp_path, worker_settings, make_receiver):
    slow = make_receiver(Reply(200, delay_seconds=SLOW_REPLY_SECONDS))
    fast = [make_receiver(200) for _ in range(FAST_ENDPOINTS)]
    worker = Worker(write_ini(tmp_path / "worker.ini", worker_settings),
                    tmp_path / "worker.log")
    try:
        with running_app(worker_settings, run_tasks=False) as app:
            client = TestClient(app)
            partner, token = client.partner_with_token()
            give_large_plan(app, partner["id"])
            slow_webhook = subscribe(client, token, slow.url, RETRY_COUNT)
            for receiver in fast:
                subscribe(client, token, receiver.url, 0)
            key = client.create_key(token)["key"]

            for number in range(USERS):
                client.web.post_json("/api/v1/users", {
                    "email": f"learner{number}@example.com", "name": f"Learner {number}",
                }, headers=auth_header(key), status=201)

            fast_requests = []
            for receiver in fast:
                try:
                    fast_requests += receiver.wait_for(USERS, timeout=FAST_WAIT_SECONDS)
                except AssertionError as error:
                    raise AssertionError(f"{error}\n{worker.log_tail()}") from None
            slow_webhook_id = row_id(slow_webhook["id"])
            finished = wait_until(lambda: all_failed(app, slow_webhook_id), SLOW_WAIT_SECONDS,
                                  "every slow delivery to fail after its retries",
                                  interval=0.2)
            with app.registry["db.engine"].connect() as connection:
                attempts = connection.execute(
                    sa.select(WebhookAttempt.delivery_id, WebhookAttempt.response_code)
                    .where(WebhookAttempt.delivery_id.in_([row.id for row in finished]))).all()
            worker_alive = worker.process.poll() is None
    finally:
        worker.stop()
    slow_requests = slow.requests

    # The fast endpoints got every delivery once, before the slow endpoint's
    # deliveries had used up their retries.
    assert len(fast_requests) == USERS * FAST_ENDPOINTS
    for receiver in fast:
        assert len({request.header("webhook-id") for request in receiver.requests}) == USERS
    last_slow_attempt = max(request.received_at for request in slow_requests)
    assert max(request.received_at for request in fast_requests) < last_slow_attempt

    # Each slow delivery was tried once and retried RETRY_COUNT times, with backoff.
    assert len(finished) == USERS
    assert all(row.attempts == RETRY_COUNT + 1 for row in finished)
    assert len(attempts) == USERS * (RETRY_COUNT + 1)
    assert {code for _, code in attempts} == {None}
    assert len(slow_requests) == USERS * (RETRY_COUNT + 1)
    by_event: dict[str, list] = {}
    for request in slow_requests:
        by_event.setdefault(request.header("webhook-id"), []).append(request)
    assert len(by_event) == USERS
    for requests in by_event.values():
        arrivals = sorted(request.received_at for request in requests)
        assert len({request.body for request in requests}) == 1
        # A retry starts its backoff (1 s, then 2 s) after the attempt before it
        # timed out, and a request reaches the receiver before its attempt times out.
        assert arrivals[1] - arrivals[0] >= RETRY_DELAY_SECONDS
        assert arrivals[2] - arrivals[1] >= 2 * RETRY_DELAY_SECONDS
    assert worker_alive
