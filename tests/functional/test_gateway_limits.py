"""Gateway rate limits: plan windows, key windows, headers, and a store that is down."""

from __future__ import annotations

import concurrent.futures
import time

import sqlalchemy as sa

from fkod.core.auth.models import ApiKey, Partner
from fkod.core.billing.models import Plan
from fkod.core.db import run_in_transaction
from fkod.core.testing import TestClient, auth_header
from fkod.core.ids import parse_id


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
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert refused.headers["X-RateLimit-Limit"] == "10"


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
    run_in_transaction(app.registry["db.session_factory"], lambda session: setattr(
        session.get(Partner, parse_id("partner", partner["id"])), "verification_status",
        "verified"))
    test_key = client.create_key(token, scopes=("mentors:read",))["key"]
    live_key = client.create_key(token, scopes=("mentors:read",), mode="live")["key"]
    for _ in range(2):
        client.web.get("/api/v1/mentors", headers=auth_header(test_key), status=200)
    client.web.get("/api/v1/mentors", headers=auth_header(test_key), status=429)
    client.web.get("/api/v1/mentors", headers=auth_header(live_key), status=200)


def test_key_window_resets_each_window(client):
    _partner, key = key_for_new_partner(client, rate_limit=3, rate_limit_window=2)
    headers = auth_header(key["key"])
    for _window in range(3):
        statuses = [client.web.get("/api/v1/mentors", headers=headers, expect_errors=True)
                    .status_int for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        retry_after = int(client.web.get("/api/v1/mentors", headers=headers, status=429)
                          .headers["Retry-After"])
        assert 1 <= retry_after <= 2
        # One sub-bucket of a 2 s window is about 34 ms; wait a little past it.
        time.sleep(retry_after + 0.1)


def test_rejected_calls_not_counted(client, app):
    partner, key = key_for_new_partner(client, rate_limit=2, rate_limit_window=2)
    put_partner_on_plan(app, partner["id"], per_hour=5, per_day=None)
    headers = auth_header(key["key"])
    for _ in range(2):
        client.web.get("/api/v1/mentors", headers=headers, status=200)
    for _ in range(5):
        client.web.get("/api/v1/mentors", headers=headers, status=429)
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
    app = app_factory(**{"fkod.ratelimit.backend": "redis",
                         "fkod.redis.url": "redis://127.0.0.1:1/0"})
    client = TestClient(app)
    _partner, key = key_for_new_partner(client)
    response = client.web.get("/api/v1/mentors", headers=auth_header(key["key"]), status=503)
    assert response.json["code"] == "rate_limiter_unavailable"
    assert response.headers["Retry-After"] == "5"


def test_limiter_down_fails_open(app_factory):
    app = app_factory(**{"fkod.ratelimit.backend": "redis", "fkod.ratelimit.fail_open": "true",
                         "fkod.redis.url": "redis://127.0.0.1:1/0"})
    client = TestClient(app)
    _partner, key = key_for_new_partner(client)
    client.web.get("/api/v1/mentors", headers=auth_header(key["key"]), status=200)


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
