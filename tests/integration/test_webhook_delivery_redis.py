"""Webhook delivery through Redis by real ``fkod worker`` processes, including a crash.

The application under test plays the web process: it writes the outbox and
puts messages on the Redis broker but runs no tasks. Separate ``python -m
fkod.cli worker`` processes, started from an .ini file written for the test,
deliver the webhooks to a receiver on 127.0.0.1. The crash test kills a worker
with SIGKILL during an attempt and checks that a new worker's sweeper takes the
lost claim back and delivers it.

The database is a fresh PostgreSQL schema. Every Redis key (the broker's
queues, the sweeper's leader lock, the usage stream) starts with a random
``fkod.redis.key_prefix``. Other test runs on the same Redis server therefore
neither take these messages nor send any here. The keys are deleted after the
test.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.orm import Session
from standardwebhooks.webhooks import Webhook as StandardWebhook

from fkod import shutdown
from fkod.core.migrations import upgrade_to_head
from fkod.core.testing import TestClient, auth_header, make_app, make_settings
from fkod.core.webhooks.models import WebhookAttempt, WebhookEvent
from tests.receivers import Receiver, Reply

REPO_ROOT = Path(__file__).resolve().parents[2]
WAIT_SECONDS = 30
IN_FLIGHT_TIMEOUT_SECONDS = 10
# A killed worker may still own the sweeper's Redis leader lock, which
# expires 60 s after its last renewal (fkod.core.tasks.LeaderLock). The new
# worker sweeps only once the lock has expired and the in-flight timeout has
# passed. The last 60 s are a margin for a slow machine.
RECOVERY_WAIT_SECONDS = 60 + IN_FLIGHT_TIMEOUT_SECONDS + 60
WORKER_STOP_SECONDS = 20

LOGGING_SECTIONS = """
[loggers]
keys = root

[handlers]
keys = console

[formatters]
keys = plain

[logger_root]
level = INFO
handlers = console

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = plain

[formatter_plain]
format = %(asctime)s %(levelname)s [%(name)s] %(message)s %(threadName)s
"""


@pytest.fixture
def settings(tmp_path, make_postgres_schema, redis_url):
    """Production-stack settings on a new, migrated PostgreSQL schema.

    The Redis keys written under the settings' key prefix are deleted afterwards.
    """
    db_url = make_postgres_schema()
    upgrade_to_head(db_url)
    key_prefix = f"fkod-test:{os.urandom(6).hex()}:"
    try:
        yield make_settings(tmp_path, db_url=db_url, extra={
            "fkod.redis.url": redis_url,
            "fkod.redis.key_prefix": key_prefix,
            "fkod.tasks.broker": "redis",
            "fkod.ratelimit.backend": "redis",
            "fkod.metering.backend": "redis",
            "fkod.webhooks.in_flight_timeout_seconds": str(IN_FLIGHT_TIMEOUT_SECONDS),
            "fkod.webhooks.sweep_interval_seconds": "1",
        })
    finally:
        delete_redis_keys(redis_url, key_prefix)


def delete_redis_keys(redis_url: str, key_prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=key_prefix + "*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def ini_file(tmp_path, settings) -> Path:
    """An .ini file whose [app:main] section contains ``settings``."""
    lines = ["[app:main]", "use = egg:fkod-partner-platform"]
    # PasteDeploy interpolates %(name)s in values, so a literal % is doubled.
    lines += [f"{name} = {value.replace('%', '%%')}" for name, value in settings.items()]
    path = tmp_path / "worker.ini"
    path.write_text("\n".join(lines) + "\n" + LOGGING_SECTIONS)
    return path


@pytest.fixture
def web_app(settings):
    """The web process: it publishes and enqueues on Redis but runs no tasks."""
    app = make_app(settings)
    try:
        yield app
    finally:
        shutdown(app.registry)


class Worker:
    """One ``fkod worker`` child process, with its output in a log file."""

    def __init__(self, ini_file: Path, log_path: Path):
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "fkod.cli", "worker", str(ini_file)],
                cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
            )

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def kill(self) -> None:
        """Stop the process at once, as a crash or an OOM kill would."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=WORKER_STOP_SECONDS)

    def stop(self) -> None:
        """Ask the process to stop (SIGTERM), and kill it if it has not stopped in time."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=WORKER_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=WORKER_STOP_SECONDS)


@pytest.fixture
def start_worker(tmp_path, ini_file):
    """Start ``fkod worker`` processes and stop every one after the test."""
    workers: list[Worker] = []

    def start() -> Worker:
        worker = Worker(ini_file, tmp_path / f"worker-{len(workers) + 1}.log")
        workers.append(worker)
        return worker

    try:
        yield start
    finally:
        for worker in workers:
            worker.stop()


def subscribe_and_create_user(client: TestClient, url: str, *, retry_count: int) -> dict:
    """Register a partner, subscribe ``url`` to user.created and create one user.

    Returns the webhook as created, with its secret.
    """
    _, token = client.partner_with_token()
    webhook = client.web.post_json("/api/partners/webhooks", {
        "url": url, "event_types": ["user.created"], "mode": "test",
        "retry_count": retry_count, "retry_delay": 0,
    }, headers=auth_header(token), status=201).json
    key = client.create_key(token)["key"]
    client.web.post_json("/api/v1/users", {
        "email": f"user-{time.monotonic_ns()}@example.com", "name": "Grace Hopper",
    }, headers=auth_header(key), status=201)
    return webhook


def wait_for_requests(receiver: Receiver, count: int, timeout: float, worker: Worker):
    """Wait for ``count`` requests, and on timeout fail with the worker's recent output."""
    try:
        return receiver.wait_for(count, timeout=timeout)
    except AssertionError as error:
        raise AssertionError(f"{error}\nlast lines of {worker.log_path}:\n"
                             f"{worker.log_tail()}") from None


def only_delivery(app, webhook_id: int) -> WebhookEvent:
    with Session(app.registry["db.engine"]) as session:
        (row,) = session.scalars(
            sa.select(WebhookEvent).where(WebhookEvent.webhook_id == webhook_id)
        ).all()
        return row


def attempt_codes(app, delivery_id: int) -> list[int | None]:
    with Session(app.registry["db.engine"]) as session:
        return list(session.scalars(
            sa.select(WebhookAttempt.response_code)
            .where(WebhookAttempt.delivery_id == delivery_id)
            .order_by(WebhookAttempt.attempt)
        ))


def wait_for_status(app, webhook_id: int, status: str, timeout: float) -> WebhookEvent:
    deadline = time.monotonic() + timeout
    row = only_delivery(app, webhook_id)
    while row.status != status:
        assert time.monotonic() < deadline, (
            f"delivery {row.id} is {row.status!r}, not {status!r}, after {timeout} s"
        )
        time.sleep(0.1)
        row = only_delivery(app, webhook_id)
    return row


def row_id(public_id: str) -> int:
    return int(public_id.rsplit("_", 1)[1])


def test_worker_process_delivers_signed(web_app, start_worker, make_receiver):
    client = TestClient(web_app)
    receiver = make_receiver(200)
    worker = start_worker()

    webhook = subscribe_and_create_user(client, receiver.url, retry_count=0)
    (request,) = wait_for_requests(receiver, 1, WAIT_SECONDS, worker)
    row = wait_for_status(web_app, row_id(webhook["id"]), "succeeded", WAIT_SECONDS)
    parsed = StandardWebhook(webhook["secret"]).verify(request.body, request.header_dict())
    timestamp, _, signature = request.header("X-FKOD-Signature").partition(",v1=")
    expected = hmac.new(webhook["secret"].encode(),
                        timestamp.removeprefix("t=").encode() + b"." + request.body,
                        hashlib.sha256).hexdigest()

    assert parsed == json.loads(request.body)
    assert parsed["type"] == "user.created"
    assert signature == expected
    assert row.attempts == 1
    assert attempt_codes(web_app, row.id) == [200]
    assert worker.process.poll() is None


def test_killed_worker_delivery_recovers(web_app, start_worker, make_receiver):
    client = TestClient(web_app)
    # The first attempt hangs until the receiver closes; the retry gets 200 at once.
    receiver = make_receiver(Reply(200, delay_seconds=600), Reply(200))
    first_worker = start_worker()

    webhook = subscribe_and_create_user(client, receiver.url, retry_count=2)
    webhook_id = row_id(webhook["id"])
    wait_for_requests(receiver, 1, WAIT_SECONDS, first_worker)
    in_flight = wait_for_status(web_app, webhook_id, "delivering", WAIT_SECONDS)
    first_worker.kill()

    second_worker = start_worker()
    first, second = wait_for_requests(receiver, 2, RECOVERY_WAIT_SECONDS, second_worker)
    row = wait_for_status(web_app, webhook_id, "succeeded", WAIT_SECONDS)

    assert in_flight.attempts == 1
    assert first_worker.process.returncode == -signal.SIGKILL
    assert first.header("webhook-id") == second.header("webhook-id")
    assert first.body == second.body
    StandardWebhook(webhook["secret"]).verify(second.body, second.header_dict())
    assert row.attempts == 2
    assert row.locked_until is None
    # The killed worker recorded nothing, so only the second attempt has a row.
    assert attempt_codes(web_app, row.id) == [200]
    assert second_worker.process.poll() is None
