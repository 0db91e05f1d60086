"""Gateway rate limits: plan, endpoint and key windows, headers, plan changes, outages."""

from __future__ import annotations

import concurrent.futures
import logging
import time
import urllib.parse
import uuid

import pytest
import redis
import sqlalchemy as sa

from fkod.core.auth.models import ApiKey, Partner
from fkod.core.billing.models import Plan
from fkod.core.db import run_in_transaction
from fkod.core.ids import parse_id
from fkod.core.ratelimit.policy import policy_for, reset_partner_counters
from fkod.core.settings import ConfigurationError
from fkod.core.testing import TestClient, auth_header, verify_partner
from tests.integration.test_ratelimit_redis import TcpProxy

pytestmark = pytest.mark.shared_app

# The gateway caches a verified key, its partner and plan for up to this
# setting; plan-change tests turn the cache off to see a change at once.
NO_KEY_CACHE = {"fkod.gateway.key_cache_seconds": "0"}


def put_partner_on_plan(app, partner_id: str, *, per_hour: int | None, per_day: int | None):
    """Create a plan with these limits and move the partner onto it."""
    code = f"test-{time.monotonic_ns()}"

    def work(session):
        plan = Plan(code=code, name=code, requests_per_hour=per_hour, requests_per_day=per_day)
        session.add(plan)
        session.flush()
        session.get(Partner, parse_id("partner", partner_id)).plan_id = plan.id

    run_in_transaction(app.registry["db.session_factory"], work)


def key_for_new_partner(client, **key_fields):
    partner, token = client.partner_with_token()
    key = client.create_key(token, scopes=("mentors:read",), **key_fields)
    return partner, key


def test_free_plan_headers(client):
    _partner, key = key_for_new_partner(client)
    response = client.web.get("/api/v1/mentors", headers=auth_header(key["key"]))
    assert response.headers["X-RateLimit-Limit"] == "100"
    assert response.headers["X-RateLimit-Remaining"] == "99"
    reset = int(response.headers["X-RateLimit-Reset"])
    assert len(response.headers["X-RateLimit-Reset"]) == 10
    assert time.time() - 1 <= reset <= time.time() + 3600
    assert "Retry-After" not in response.headers
    assert "X-RateLimit-Retry-After" not in response.headers


def test_ietf_headers_match_x_headers(client):
    _partner, key = key_for_new_partner(client)
    before = time.time()
    response = client.web.get("/api/v1/mentors", headers=auth_header(key["key"]))
    after = time.time()

    headers = response.headers
    assert headers["RateLimit-Limit"] == headers["X-RateLimit-Limit"] == "100"
    assert headers["RateLimit-Remaining"] == headers["X-RateLimit-Remaining"] == "99"
    # RateLimit-Reset is the delta in seconds to the epoch time of X-RateLimit-Reset.
    reset_at = int(headers["X-RateLimit-Reset"])
    delta = int(headers["RateLimit-Reset"])
    assert 0 <= delta <= 3600
    assert reset_at - after - 1 <= delta <= reset_at - before + 1


def test_limit_then_429_with_retry_after(client, app):
    partner, key = key_for_new_partner(client)
    put_partner_on_plan(app, partner["id"], per_hour=10, per_day=1000)
    headers = auth_header(key["key"])
    remaining = [int(client.web.get("/api/v1/mentors", headers=headers)
                     .headers["X-RateLimit-Remaining"]) for _ in range(10)]
    refused = client.web.get("/api/v1/mentors", headers=headers, status=429)

    assert remaining == list(range(9, -1, -1))
    assert refused.json["code"] == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 3600
    assert refused.headers["X-RateLimit-Retry-After"] == refused.headers["Retry-After"]
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert refused.headers["X-RateLimit-Limit"] == "10"
    assert refused.headers["RateLimit-Remaining"] == "0"
    assert refused.headers["RateLimit-Limit"] == "10"
    assert 0 <= int(refused.headers["RateLimit-Reset"]) <= 3600


def test_plan_shared_by_partner_keys(client, app):
    partner, token = client.partner_with_token()
    put_partner_on_plan(app, partner["id"], per_hour=4, per_day=None)
    first = client.create_key(token, scopes=("mentors:read",))["key"]
    second = client.create_key(token, scopes=("mentors:read",))["key"]
    for key in (first, second, first, second):
        client.web.get("/api/v1/mentors", headers=auth_header(key), status=200)
    client.web.get("/api/v1/mentors", headers=auth_header(second), status=429)


def test_modes_counted_apart(client, app):
    partner, token = client.partner_with_token()
    put_partner_on_plan(app, partner["id"], per_hour=2, per_day=None)
    verify_partner(app, partner["id"])
    test_key = client.create_key(token, scopes=("mentors:read",))["key"]
    live_key = client.create_key(token, scopes=("mentors:read",), mode="live")["key"]
    for _ in range(2):
        client.web.get("/api/v1/mentors", headers=auth_header(test_key), status=200)
    client.web.get("/api/v1/mentors", headers=auth_header(test_key), status=429)
    client.web.get("/api/v1/mentors", headers=auth_header(live_key), status=200)


# A burst longer than this may outlive the first hits of a 2 s window, so the
# test discards it and starts over with a new key.
STALL_SECONDS = 1.5


def test_key_window_resets_each_window(client):
    for _attempt in range(5):
        if _three_key_windows(client):
            return
    pytest.fail(f"every attempt had a burst longer than {STALL_SECONDS} s")


def _three_key_windows(client) -> bool:
    _partner, key = key_for_new_partner(client, rate_limit=3, rate_limit_window=2)
    headers = auth_header(key["key"])
    for _window in range(3):
        started = time.monotonic()
        statuses = [client.web.get("/api/v1/mentors", headers=headers, expect_errors=True)
                    .status_int for _ in range(4)]
        rejected = client.web.get("/api/v1/mentors", headers=headers, expect_errors=True)
        if time.monotonic() - started > STALL_SECONDS:
            return False
        assert statuses == [200, 200, 200, 429]
        assert rejected.status_int == 429
        retry_after = int(rejected.headers["Retry-After"])
        assert 1 <= retry_after <= 2
        # One sub-bucket of a 2 s window is about 34 ms; wait a little past it.
        time.sleep(retry_after + 0.1)
    return True


def test_rejected_calls_not_counted(client, app):
    for _attempt in range(5):
        partner, key = key_for_new_partner(client, rate_limit=2, rate_limit_window=2)
        put_partner_on_plan(app, partner["id"], per_hour=5, per_day=None)
        headers = auth_header(key["key"])
        started = time.monotonic()
        statuses = [client.web.get("/api/v1/mentors", headers=headers, expect_errors=True)
                    .status_int for _ in range(7)]
        if time.monotonic() - started <= STALL_SECONDS:
            break
    else:
        pytest.fail(f"every attempt had a burst longer than {STALL_SECONDS} s")
    assert statuses == [200, 200, 429, 429, 429, 429, 429]
    time.sleep(2.1)
    response = client.web.get("/api/v1/mentors", headers=headers, status=200)
    # Two admitted calls and this one count in the hourly window; the five rejected do not.
    assert response.headers["X-RateLimit-Limit"] in {"2", "5"}
    hourly_left = app.registry["rate_limiter"].peek(
        [_hour_check(partner)]).remaining
    assert hourly_left == 2


def _hour_check(partner):
    from fkod.core.ratelimit import LimitCheck

    return LimitCheck(f"partner:{parse_id('partner', partner['id'])}:test:hour", 5, 3600)


def test_concurrent_burst_admits_exactly_limit(client, app):
    partner, key = key_for_new_partner(client)
    put_partner_on_plan(app, partner["id"], per_hour=10, per_day=None)
    headers = auth_header(key["key"])

    def call(_):
        return client.web.get("/api/v1/mentors", headers=headers, expect_errors=True).status_int

    with concurrent.futures.ThreadPoolExecutor(max_workers=10) as pool:
        statuses = list(pool.map(call, range(50)))
    assert statuses.count(200) == 10
    assert statuses.count(429) == 40


def test_unlimited_plan_sends_no_headers(client, app):
    partner, key = key_for_new_partner(client)
    put_partner_on_plan(app, partner["id"], per_hour=None, per_day=None)
    response = client.web.get("/api/v1/mentors", headers=auth_header(key["key"]))
    assert "X-RateLimit-Limit" not in response.headers


def test_limiter_down_fails_closed(app_factory):
    app = app_factory(**{"fkod.ratelimit.backend": "redis", "fkod.ratelimit.fail_open": "false",
                         "fkod.redis.url": "redis://127.0.0.1:1/0"})
    client = TestClient(app)
    _partner, key = key_for_new_partner(client)
    response = client.web.get("/api/v1/mentors", headers=auth_header(key["key"]), status=503)
    assert response.json["code"] == "rate_limiter_unavailable"
    assert response.headers["Retry-After"] == "5"


def test_limiter_down_fails_open_by_default(app_factory):
    app = app_factory(**{"fkod.ratelimit.backend": "redis",
                         "fkod.redis.url": "redis://127.0.0.1:1/0"})
    client = TestClient(app)
    _partner, key = key_for_new_partner(client)
    response = client.web.get("/api/v1/mentors", headers=auth_header(key["key"]), status=200)
    assert "X-RateLimit-Limit" not in response.headers
    assert "RateLimit-Limit" not in response.headers


def test_key_last_used_recorded(client, app):
    _partner, key = key_for_new_partner(client)
    client.web.get("/api/v1/mentors", headers=auth_header(key["key"]), status=200)
    app.registry["usage_recorder"].flush()
    if app.registry.settings["fkod.metering.backend"] == "redis":
        app.registry["tasks"].run_periodic_now()
    last_used = run_in_transaction(app.registry["db.session_factory"], lambda session: (
        session.scalar(sa.select(ApiKey.last_used).where(
            ApiKey.id == parse_id("key", key["id"])))))
    assert last_used is not None


# Endpoint limits -----------------------------------------------------------------


def test_endpoint_limit_enforced(app_factory):
    app = app_factory(**{"fkod.ratelimit.endpoint_limits":
                         "GET /api/v1/mentors = 3/60; POST /api/v1/users = 1/60"})
    client = TestClient(app)
    _partner, token = client.partner_with_token()
    first = client.create_key(token, scopes=("mentors:read", "courses:read"))["key"]
    second = client.create_key(token, scopes=("mentors:read",))["key"]

    statuses = [client.web.get("/api/v1/mentors", headers=auth_header(key), expect_errors=True)
                .status_int for key in (first, second, first, second)]
    refused = client.web.get("/api/v1/mentors", headers=auth_header(first), status=429)
    other_route = client.web.get("/api/v1/courses", headers=auth_header(first), status=200)

    # The endpoint window is shared by the partner's keys in one mode.
    assert statuses == [200, 200, 200, 429]
    assert refused.headers["X-RateLimit-Limit"] == "3"
    assert refused.headers["RateLimit-Limit"] == "3"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    # The free plan's hourly window is the tightest on other routes.
    assert other_route.headers["X-RateLimit-Limit"] == "100"
    assert other_route.headers["X-RateLimit-Remaining"] == "96"


def test_endpoint_limit_per_partner(app_factory):
    app = app_factory(**{"fkod.ratelimit.endpoint_limits": "GET /api/v1/mentors = 2/60"})
    client = TestClient(app)
    _first_partner, first = key_for_new_partner(client)
    _second_partner, second = key_for_new_partner(client)

    for _ in range(2):
        client.web.get("/api/v1/mentors", headers=auth_header(first["key"]), status=200)
    client.web.get("/api/v1/mentors", headers=auth_header(first["key"]), status=429)
    response = client.web.get("/api/v1/mentors", headers=auth_header(second["key"]), status=200)

    assert response.headers["X-RateLimit-Remaining"] == "1"


def test_endpoint_limit_reported_when_tightest(app_factory):
    app = app_factory(**{"fkod.ratelimit.endpoint_limits": "GET /api/v1/mentors = 50/60"})
    client = TestClient(app)
    partner, key = key_for_new_partner(client)
    put_partner_on_plan(app, partner["id"], per_hour=1000, per_day=None)

    response = client.web.get("/api/v1/mentors", headers=auth_header(key["key"]), status=200)

    assert response.headers["X-RateLimit-Limit"] == "50"
    assert response.headers["X-RateLimit-Remaining"] == "49"
    assert 0 <= int(response.headers["RateLimit-Reset"]) <= 60


def test_malformed_endpoint_limits_stop_start_up(app_factory):
    with pytest.raises(ConfigurationError) as raised:
        app_factory(**{"fkod.ratelimit.endpoint_limits":
                       "GET /api/v1/mentors = 5/60; POST /api/v1/users = many/60"})

    message = str(raised.value)
    assert "fkod.ratelimit.endpoint_limits" in message
    assert "'POST /api/v1/users = many/60'" in message


# Plan changes ---------------------------------------------------------------------


def mentor_statuses(client, key: str, count: int) -> list[int]:
    return [client.web.get("/api/v1/mentors", headers=auth_header(key), expect_errors=True)
            .status_int for _ in range(count)]


def test_plan_upgrade_applies_at_once(app_factory):
    app = app_factory(**NO_KEY_CACHE)
    client = TestClient(app)
    partner, key = key_for_new_partner(client)
    put_partner_on_plan(app, partner["id"], per_hour=3, per_day=None)
    assert mentor_statuses(client, key["key"], 4) == [200, 200, 200, 429]

    put_partner_on_plan(app, partner["id"], per_hour=5, per_day=None)
    response = client.web.get("/api/v1/mentors", headers=auth_header(key["key"]), status=200)

    # The three calls of the old plan stay counted against the new limit of 5.
    assert response.headers["X-RateLimit-Limit"] == "5"
    assert response.headers["X-RateLimit-Remaining"] == "1"
    assert mentor_statuses(client, key["key"], 2) == [200, 429]


def test_plan_downgrade_leaves_partner_over_limit(app_factory):
    app = app_factory(**NO_KEY_CACHE)
    client = TestClient(app)
    partner, key = key_for_new_partner(client)
    put_partner_on_plan(app, partner["id"], per_hour=10, per_day=None)
    assert mentor_statuses(client, key["key"], 6) == [200] * 6

    put_partner_on_plan(app, partner["id"], per_hour=4, per_day=None)
    refused = client.web.get("/api/v1/mentors", headers=auth_header(key["key"]), status=429)

    assert refused.headers["X-RateLimit-Limit"] == "4"
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    # All six calls sit in the current sub-bucket, so the wait is nearly the full hour.
    assert 3540 <= int(refused.headers["Retry-After"]) <= 3600


def test_reset_partner_counters_frees_both_modes(app_factory):
    app = app_factory(**NO_KEY_CACHE, **{"fkod.ratelimit.endpoint_limits":
                                         "GET /api/v1/courses = 1/60"})
    client = TestClient(app)
    partner, token = client.partner_with_token()
    put_partner_on_plan(app, partner["id"], per_hour=2, per_day=None)
    verify_partner(app, partner["id"])
    test_key = client.create_key(token, scopes=("mentors:read", "courses:read"))["key"]
    live_key = client.create_key(token, scopes=("mentors:read",), mode="live")["key"]
    other_partner, other_key = key_for_new_partner(client)
    put_partner_on_plan(app, other_partner["id"], per_hour=2, per_day=None)
    client.web.get("/api/v1/courses", headers=auth_header(test_key), status=200)
    client.web.get("/api/v1/courses", headers=auth_header(test_key), status=429)
    for key in (test_key, live_key, other_key["key"]):
        assert mentor_statuses(client, key, 3)[-1] == 429

    limiter = app.registry["rate_limiter"]
    endpoints = policy_for(app.registry).endpoint_limits.values()
    reset_partner_counters(limiter, parse_id("partner", partner["id"]), endpoint_limits=endpoints)

    assert mentor_statuses(client, test_key, 3) == [200, 200, 429]
    assert mentor_statuses(client, live_key, 3) == [200, 200, 429]
    assert mentor_statuses(client, other_key["key"], 1) == [429]


# Outages: Redis goes away behind a proxy and comes back -------------------------------


@pytest.fixture
def proxied_app(app_factory, redis_url):
    """Return a factory of apps whose rate limiter reaches Redis through a TcpProxy.

    Metering and tasks stay in the process so that only the limiter sees the
    outage. Keys go under a random prefix, deleted at teardown.
    """
    parts = urllib.parse.urlsplit(redis_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 6379)
    proxy.start()
    prefix = f"fkod-test:{uuid.uuid4().hex}:"

    def build(**overrides):
        settings = {
            "fkod.ratelimit.backend": "redis",
            "fkod.redis.url": proxy.url_for(redis_url),
            "fkod.redis.key_prefix": prefix,
            "fkod.metering.backend": "memory",
            "fkod.tasks.broker": "inprocess",
        }
        settings.update(overrides)
        return app_factory(**settings), proxy

    yield build
    proxy.stop()
    cleanup = redis.Redis.from_url(redis_url)
    try:
        keys = list(cleanup.scan_iter(match=prefix + "*", count=500))
        if keys:
            cleanup.delete(*keys)
    finally:
        cleanup.close()


def outage_records(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records
            if record.name == "fkod.core.ratelimit.policy"]


def test_outage_fails_open_and_recovers(proxied_app, caplog):
    app, proxy = proxied_app()
    client = TestClient(app)
    _partner, key = key_for_new_partner(client)
    headers = auth_header(key["key"])
    assert client.web.get("/api/v1/mentors", headers=headers).headers[
        "X-RateLimit-Remaining"] == "99"

    with caplog.at_level(logging.WARNING, logger="fkod.core.ratelimit.policy"):
        proxy.stop()
        during = [client.web.get("/api/v1/mentors", headers=headers, expect_errors=True)
                  for _ in range(5)]
        proxy.start()
        after = client.web.get("/api/v1/mentors", headers=headers, status=200)

    assert [response.status_int for response in during] == [200] * 5
    assert all("X-RateLimit-Limit" not in response.headers for response in during)
    # Calls admitted during the outage were not counted; the earlier one was.
    assert after.headers["X-RateLimit-Remaining"] == "98"
    messages = outage_records(caplog)
    assert len(messages) == 2, messages
    assert messages[0].startswith("rate limiter unavailable, admitting requests unchecked")
    assert messages[1].startswith("rate limiter recovered after")
    assert messages[1].endswith("5 requests met the outage")


def test_outage_fails_closed_and_recovers(proxied_app, caplog):
    app, proxy = proxied_app(**{"fkod.ratelimit.fail_open": "false"})
    client = TestClient(app)
    _partner, key = key_for_new_partner(client)
    headers = auth_header(key["key"])
    client.web.get("/api/v1/mentors", headers=headers, status=200)

    with caplog.at_level(logging.WARNING, logger="fkod.core.ratelimit.policy"):
        proxy.stop()
        during = [client.web.get("/api/v1/mentors", headers=headers, status=503)
                  for _ in range(3)]
        proxy.start()
        after = client.web.get("/api/v1/mentors", headers=headers, status=200)

    assert [response.json["code"] for response in during] == ["rate_limiter_unavailable"] * 3
    assert [response.headers["Retry-After"] for response in during] == ["5"] * 3
    assert after.headers["X-RateLimit-Remaining"] == "98"
    messages = outage_records(caplog)
    assert len(messages) == 2, messages
    assert "rejecting requests with 503" in messages[0]


def test_leasing_gateway_admits_exactly_limit(app_factory):
    app = app_factory(**{"fkod.ratelimit.lease_size": "16"})
    limiter = app.registry["rate_limiter"]
    if app.registry.settings["fkod.ratelimit.backend"] == "redis":
        assert limiter.lease_size == 16
    client = TestClient(app)
    partner, key = key_for_new_partner(client)
    put_partner_on_plan(app, partner["id"], per_hour=40, per_day=None)
    headers = auth_header(key["key"])

    remaining = [int(client.web.get("/api/v1/mentors", headers=headers)
                     .headers["X-RateLimit-Remaining"]) for _ in range(40)]
    refused = client.web.get("/api/v1/mentors", headers=headers, status=429)

    # One process spends its own leases, so it sees every permit and no early refusal.
    assert remaining == list(range(39, -1, -1))
    assert refused.headers["X-RateLimit-Remaining"] == "0"
