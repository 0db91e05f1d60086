"""PostgreSQL stops and starts again while partner API writes and gateway calls run.

The application runs on a private PostgreSQL cluster. Over real HTTP, one
thread creates users through the gateway (``POST /api/v1/users`` with an API
key), one creates webhook endpoints through the partner API (``POST
/api/partners/webhooks`` with a login token), each request with its own
``Idempotency-Key``, and one lists users. The cluster is stopped in fast mode
(every session is ended, as in a failover) and started again; the
application is never restarted. Every request during the outage must end in
a 503 envelope, and a retry of each write with the same key must leave
exactly one row.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass, field

import httpx
import sqlalchemy as sa

from fkod.core.auth.models import User
from fkod.core.idempotency_models import IdempotencyRecord
from fkod.core.testing import TestClient, make_settings
from fkod.core.webhooks.models import Webhook
from tests.faults.conftest import wait_until
from tests.faults.traffic import Traffic, give_large_plan, running_app
from tests.live import serve

OUTAGE_REQUESTS = 3
RECOVERY_SECONDS = 30
# A claim committed just before the outage stays in_progress when the
# request cannot release it; a short timeout lets the retry take it over.
IN_PROGRESS_TIMEOUT_SECONDS = 2


@dataclass
class Writes:
    """Create requests sent to ``path``, each with a new Idempotency-Key, by key."""

    path: str
    headers: dict
    make_body: object
    prefix: str
    sent: dict[str, dict] = field(default_factory=dict)

    def __post_init__(self):
        self._counter = itertools.count(1)

    def post(self, http: httpx.Client, base_url: str, idempotency_key: str) -> httpx.Response:
        return http.post(base_url + self.path, json=self.sent[idempotency_key],
                         headers={**self.headers, "Idempotency-Key": idempotency_key})

    def sender(self, base_url: str):
        def send_new(http: httpx.Client) -> httpx.Response:
            number = next(self._counter)
            idempotency_key = f"{self.prefix}-{number}"
            self.sent[idempotency_key] = self.make_body(number)
            return self.post(http, base_url, idempotency_key)

        return send_new

    def retry_until_done(self, http: httpx.Client, base_url: str,
                         idempotency_key: str) -> httpx.Response:
        """Send the same request with the same key until it is no longer in progress."""
        def attempt():
            response = self.post(http, base_url, idempotency_key)
            if response.status_code == 409:
                assert response.json()["code"] == "idempotency_request_in_progress", (
                    response.text)
                return None
            return response

        return wait_until(attempt, RECOVERY_SECONDS, f"a final answer for {idempotency_key}",
                          interval=0.25)


def assert_database_unavailable(outcome) -> None:
    body = json.loads(outcome.body)
    assert outcome.headers["Retry-After"] == "5"
    assert body["status"] == 503
    assert body["code"] == "database_unavailable"
    assert body["request_id"] == outcome.headers["X-Request-Id"]
    assert set(body) == {"status", "code", "message", "errors", "request_id"}


def check_retries(writes: Writes, outcomes, http, base_url) -> tuple[list[str], dict]:
    """Retry every write with its key; return the keys that failed first and the retries."""
    # The traffic thread sends one request at a time and has stopped, so
    # outcome i belongs to the i-th key sent.
    keys = list(writes.sent)
    assert len(keys) == len(outcomes)
    failed_keys = [idempotency_key for idempotency_key, outcome in zip(keys, outcomes, strict=True)
                   if outcome.status == 503]
    retried = {idempotency_key: writes.retry_until_done(http, base_url, idempotency_key)
               for idempotency_key in keys}
    return failed_keys, retried


def test_postgres_restart_mid_traffic(tmp_path, private_postgres, private_database):
    settings = make_settings(tmp_path, db_url=private_database, extra={
        "fkod.idempotency.in_progress_timeout_seconds": str(IN_PROGRESS_TIMEOUT_SECONDS),
    })
    with running_app(settings) as app, serve(app) as base_url:
        client = TestClient(app)
        partner, token = client.partner_with_token()
        give_large_plan(app, partner["id"])
        key = client.create_key(token, scopes=("users:read", "users:write"))["key"]
        users = Writes("/api/v1/users", {"Authorization": f"Bearer {key}"},
                       lambda n: {"email": f"learner{n}@example.com", "name": f"Learner {n}"},
                       "create-user")
        webhooks = Writes("/api/partners/webhooks", {"Authorization": f"Bearer {token}"},
                          lambda n: {"url": f"http://127.0.0.1:9/hook-{n}", "mode": "test",
                                     "event_types": ["user.created"]},
                          "create-webhook")

        def list_users(http):
            return http.get(f"{base_url}/api/v1/users", headers={"Authorization": f"Bearer {key}"})

        streams = [Traffic(users.sender(base_url)), Traffic(webhooks.sender(base_url)),
                   Traffic(list_users)]
        success = (201, 201, 200)
        for stream in streams:
            stream.__enter__()
        try:
            wait_until(lambda: all(len(stream.snapshot()) >= 3 for stream in streams),
                       RECOVERY_SECONDS, "traffic to start")
            private_postgres.stop()
            # Only a request already past its last query when the server went
            # down can still succeed after this moment.
            stopped_at = time.monotonic()
            wait_until(lambda: all(len(stream.since(stopped_at)) >= OUTAGE_REQUESTS
                                   for stream in streams),
                       RECOVERY_SECONDS, f"{OUTAGE_REQUESTS} requests of each kind in the outage")
            during = [stream.since(stopped_at) for stream in streams]
            starting_at = time.monotonic()
            private_postgres.start()
            wait_until(lambda: all(any(outcome.status == status
                                       for outcome in stream.since(starting_at))
                                   for stream, status in zip(streams, success, strict=True)),
                       RECOVERY_SECONDS, "every kind of request to succeed after the restart")
        finally:
            for stream in streams:
                stream.stop()
        outcomes = [stream.snapshot() for stream in streams]

        with httpx.Client(timeout=20) as http:
            failed_users, retried_users = check_retries(users, outcomes[0], http, base_url)
            failed_hooks, retried_hooks = check_retries(webhooks, outcomes[1], http, base_url)

        with app.registry["db.engine"].connect() as connection:
            user_rows = dict(connection.execute(
                sa.select(User.email, sa.func.count()).where(User.email.like("learner%"))
                .group_by(User.email)).all())
            webhook_rows = dict(connection.execute(
                sa.select(Webhook.url, sa.func.count()).group_by(Webhook.url)).all())
            unfinished = connection.scalar(
                sa.select(sa.func.count()).select_from(IdempotencyRecord)
                .where(IdempotencyRecord.status != "completed"))

    everything = [outcome for stream_outcomes in outcomes for outcome in stream_outcomes]
    assert [outcome.error for outcome in everything if outcome.status is None] == []
    for stream_outcomes, status, stream_during in zip(outcomes, success, during, strict=True):
        assert {outcome.status for outcome in stream_outcomes} <= {status, 503}
        assert sum(outcome.status == 503 for outcome in stream_during) >= OUTAGE_REQUESTS - 1
    for outcome in everything:
        if outcome.status == 503:
            assert_database_unavailable(outcome)

    for writes, failed_keys, retried in ((users, failed_users, retried_users),
                                         (webhooks, failed_hooks, retried_hooks)):
        assert failed_keys, f"no write to {writes.path} failed during the outage"
        assert {response.status_code for response in retried.values()} == {201}
        # Writes that succeeded the first time are replayed, not run again.
        replayed = {idempotency_key for idempotency_key, response in retried.items()
                    if response.headers.get("Idempotent-Replayed") == "true"}
        assert replayed == set(writes.sent) - set(failed_keys)

    for idempotency_key, response in retried_users.items():
        assert response.json()["email"] == users.sent[idempotency_key]["email"]
    for idempotency_key, response in retried_hooks.items():
        assert response.json()["url"] == webhooks.sent[idempotency_key]["url"]
    # One row per request, however many times it was sent.
    assert sorted(user_rows) == sorted(body["email"] for body in users.sent.values())
    assert set(user_rows.values()) == {1}
    assert sorted(webhook_rows) == sorted(body["url"] for body in webhooks.sent.values())
    assert set(webhook_rows.values()) == {1}
    assert unfinished == 0
