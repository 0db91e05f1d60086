"""Redis stops while the gateway serves traffic, then comes back on the same port.

The application runs on the production stack: PostgreSQL (a private cluster),
and the rate limiter, usage stream and dramatiq broker on a private Redis. A
thread calls ``GET /api/v1/mentors`` over real HTTP the whole time. Redis is
killed (SIGKILL) mid-traffic and restarted on the same port; the application
is never restarted.
"""

from __future__ import annotations

import json
import logging
import os
import time

import pytest

from fkod.core.testing import TestClient, make_settings
from tests.faults.conftest import wait_until
from tests.faults.traffic import Traffic, give_large_plan, running_app
from tests.live import serve

OUTAGE_REQUESTS = 5
RECOVERY_SECONDS = 30
RATE_LIMIT_HEADER = "X-RateLimit-Limit"


@pytest.fixture
def redis_settings(tmp_path, private_database, private_redis):
    return make_settings(tmp_path, db_url=private_database, extra={
        "fkod.redis.url": private_redis.url,
        "fkod.redis.key_prefix": f"fkod-fault:{os.urandom(4).hex()}:",
        "fkod.ratelimit.backend": "redis",
        "fkod.metering.backend": "redis",
        "fkod.tasks.broker": "redis",
    })


def gateway_key(app) -> str:
    client = TestClient(app)
    partner, token = client.partner_with_token()
    give_large_plan(app, partner["id"])
    return client.create_key(token, scopes=("mentors:read",))["key"]


def run_outage(app, private_redis, base_url: str, key: str):
    """Serve traffic, kill Redis and restart it on the same port.

    Returns the outcomes before the outage, during it, the checked calls after
    the restart, and every outcome.
    """
    def call(http):
        return http.get(f"{base_url}/api/v1/mentors", headers={"Authorization": f"Bearer {key}"})

    with Traffic(call) as traffic:
        wait_until(lambda: len(traffic.snapshot()) >= 3, RECOVERY_SECONDS, "traffic to start")
        killed_at = time.monotonic()
        private_redis.stop()
        wait_until(lambda: len(traffic.since(killed_at)) >= OUTAGE_REQUESTS, RECOVERY_SECONDS,
                   f"{OUTAGE_REQUESTS} requests during the outage")
        during = traffic.since(killed_at)
        restarting_at = time.monotonic()
        private_redis.start()
        recovered = wait_until(
            lambda: [outcome for outcome in traffic.since(restarting_at)
                     if outcome.status == 200 and RATE_LIMIT_HEADER in outcome.headers],
            RECOVERY_SECONDS, "a rate-limited 200 after Redis restarted",
        )
    before = [outcome for outcome in traffic.snapshot() if outcome.finished_at <= killed_at]
    return before, during, recovered, traffic.snapshot()


def test_redis_down_fail_open_serves(redis_settings, private_redis, caplog):
    redis_settings["fkod.ratelimit.fail_open"] = "true"
    caplog.set_level(logging.WARNING, logger="fkod.core.ratelimit.policy")
    with running_app(redis_settings) as app, serve(app) as base_url:
        key = gateway_key(app)
        before, during, recovered, everything = run_outage(app, private_redis, base_url, key)

    assert before, "no request finished before Redis stopped"
    assert all(outcome.status == 200 for outcome in before)
    assert all(RATE_LIMIT_HEADER in outcome.headers for outcome in before)
    # Fail-open admits every call unchecked, so it carries no rate-limit headers.
    unchecked = [outcome for outcome in during if RATE_LIMIT_HEADER not in outcome.headers]
    assert len(unchecked) >= OUTAGE_REQUESTS - 1
    assert all(outcome.status == 200 for outcome in during), [o.status for o in during]
    assert recovered
    assert [o.error for o in everything if o.status is None] == []
    assert [o.status for o in everything if o.status >= 500 and o.status != 503] == []
    messages = [record.getMessage() for record in caplog.records]
    assert any(message.startswith("rate limiter unavailable, admitting requests unchecked")
               for message in messages), messages
    assert any(message.startswith("rate limiter recovered after") for message in messages), (
        messages)


def test_redis_down_fail_closed_503(redis_settings, private_redis, caplog):
    redis_settings["fkod.ratelimit.fail_open"] = "false"
    caplog.set_level(logging.WARNING, logger="fkod.core.ratelimit.policy")
    with running_app(redis_settings) as app, serve(app) as base_url:
        key = gateway_key(app)
        before, during, recovered, everything = run_outage(app, private_redis, base_url, key)

    assert before and all(outcome.status == 200 for outcome in before)
    rejected = [outcome for outcome in during if outcome.status == 503]
    assert len(rejected) >= OUTAGE_REQUESTS - 1, [o.status for o in during]
    assert {outcome.status for outcome in during} <= {200, 503}
    for outcome in rejected:
        body = json.loads(outcome.body)
        assert outcome.headers["Retry-After"] == "5"
        assert body["status"] == 503
        assert body["code"] == "rate_limiter_unavailable"
        assert body["request_id"] == outcome.headers["X-Request-Id"]
        assert set(body) == {"status", "code", "message", "errors", "request_id"}
    assert recovered
    assert [o.error for o in everything if o.status is None] == []
    assert [o.status for o in everything if o.status >= 500 and o.status != 503] == []
    messages = [record.getMessage() for record in caplog.records]
    assert any(message.startswith("rate limiter unavailable, rejecting requests with 503")
               for message in messages), messages
    assert any(message.startswith("rate limiter recovered after") for message in messages), (
        messages)
