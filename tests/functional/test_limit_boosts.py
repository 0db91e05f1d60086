"""Partner rate-limit boosts (``/api/partners/limits/boosts``) and the limits report."""

from __future__ import annotations

import datetime as dt
import logging
import time

import pytest
import sqlalchemy as sa

from fkod.core.auth.models import Partner
from fkod.core.billing.models import Plan, RateLimitBoost
from fkod.core.db import run_in_transaction
from fkod.core.ids import parse_id
from fkod.core.testing import TestClient, auth_header, verify_partner

pytestmark = pytest.mark.shared_app

BOOSTS_PATH = "/api/partners/limits/boosts"
LIMITS_PATH = "/api/partners/limits"
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


def boost_body(**fields) -> dict:
    body = {"extra_requests_per_hour": 2, "duration_hours": 1}
    body.update(fields)
    return body


@pytest.fixture
def owner(client, app):
    """A fresh partner on a plan of 2 requests per hour and 20 per day, with its login headers."""
    partner, token = client.partner_with_token()
    put_partner_on_plan(app, partner["id"], per_hour=2, per_day=20)
    return partner, auth_header(token)


def mentor_statuses(client, key: str, count: int) -> list[int]:
    return [client.web.get("/api/v1/mentors", headers=auth_header(key), expect_errors=True)
            .status_int for _ in range(count)]


# Creating -----------------------------------------------------------------------


def test_create_boost_returns_it(client, owner):
    _partner, headers = owner
    before = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)

    response = client.web.post_json(BOOSTS_PATH, boost_body(
        extra_requests_per_day=5, duration_hours=3, reason="  launch day  "),
        headers=headers, status=201)

    body = response.json
    assert body["id"].startswith("boost_")
    assert body["mode"] == "test"
    assert body["status"] == "active"
    assert body["extra_requests_per_hour"] == 2
    assert body["extra_requests_per_day"] == 5
    assert body["reason"] == "launch day"
    assert body["cancelled_at"] is None
    assert body["created_by"].startswith("user_")
    starts_at = dt.datetime.fromisoformat(body["starts_at"].removesuffix("Z"))
    ends_at = dt.datetime.fromisoformat(body["ends_at"].removesuffix("Z"))
    assert starts_at >= before
    assert ends_at - starts_at == dt.timedelta(hours=3)


def test_boost_raises_gateway_limit(app_factory):
    app = app_factory(**NO_KEY_CACHE)
    client = TestClient(app)
    partner, token = client.partner_with_token()
    put_partner_on_plan(app, partner["id"], per_hour=2, per_day=None)
    key = client.create_key(token, scopes=("mentors:read",))["key"]
    assert mentor_statuses(client, key, 3) == [200, 200, 429]

    client.web.post_json(BOOSTS_PATH, boost_body(extra_requests_per_hour=2),
                         headers=auth_header(token), status=201)
    response = client.web.get("/api/v1/mentors", headers=auth_header(key), status=200)

    assert response.headers["X-RateLimit-Limit"] == "4"
    assert response.headers["X-RateLimit-Remaining"] == "1"
    assert mentor_statuses(client, key, 2) == [200, 429]


def test_boost_raises_daily_window(app_factory):
    app = app_factory(**NO_KEY_CACHE)
    client = TestClient(app)
    partner, token = client.partner_with_token()
    put_partner_on_plan(app, partner["id"], per_hour=100, per_day=2)
    key = client.create_key(token, scopes=("mentors:read",))["key"]

    client.web.post_json(BOOSTS_PATH, boost_body(extra_requests_per_day=1),
                         headers=auth_header(token), status=201)

    assert mentor_statuses(client, key, 4) == [200, 200, 200, 429]


def test_boost_only_in_its_mode(app_factory):
    app = app_factory(**NO_KEY_CACHE)
    client = TestClient(app)
    partner, token = client.partner_with_token()
    put_partner_on_plan(app, partner["id"], per_hour=1, per_day=None)
    verify_partner(app, partner["id"])
    live_key = client.create_key(token, scopes=("mentors:read",), mode="live")["key"]

    client.web.post_json(BOOSTS_PATH, boost_body(extra_requests_per_hour=1),
                         headers=auth_header(token), status=201)

    assert mentor_statuses(client, live_key, 2) == [200, 429]


def test_boost_seen_by_other_process_within_a_second(app_factory):
    creator = app_factory(**NO_KEY_CACHE)
    gateway = app_factory(**NO_KEY_CACHE)
    creator_client, gateway_client = TestClient(creator), TestClient(gateway)
    partner, token = creator_client.partner_with_token()
    put_partner_on_plan(creator, partner["id"], per_hour=1, per_day=None)
    key = creator_client.create_key(token, scopes=("mentors:read",))["key"]
    # The gateway app caches "no boost" for this partner on these calls.
    assert mentor_statuses(gateway_client, key, 2) == [200, 429]

    creator_client.web.post_json(BOOSTS_PATH, boost_body(extra_requests_per_hour=1),
                                 headers=auth_header(token), status=201)
    time.sleep(1.1)

    assert mentor_statuses(gateway_client, key, 2) == [200, 429]


def test_boost_creation_logged(client, owner, caplog):
    partner, headers = owner

    with caplog.at_level(logging.INFO, logger="fkod.partners.limits"):
        body = client.web.post_json(BOOSTS_PATH, boost_body(), headers=headers,
                                    status=201).json
        client.web.delete(f"{BOOSTS_PATH}/{body['id']}", headers=headers, status=200)

    records = [record for record in caplog.records if record.name == "fkod.partners.limits"]
    assert [record.getMessage() for record in records] == [
        "rate limit boost created", "rate limit boost cancelled"]
    for record in records:
        assert record.partner_id == parse_id("partner", partner["id"])
        assert record.user_id == parse_id("user", body["created_by"])
        assert record.boost_id == parse_id("boost", body["id"])


# Caps and conflicts -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"extra_requests_per_hour": 3}, "extra_requests_per_hour"),
        ({"extra_requests_per_day": 21}, "extra_requests_per_day"),
    ],
)
def test_boost_above_plan_limit_rejected(client, owner, fields, name):
    _partner, headers = owner

    response = client.web.post_json(BOOSTS_PATH, boost_body(**fields), headers=headers,
                                    status=400)

    assert response.json["code"] == "boost_above_plan_limit"
    assert [error["name"] for error in response.json["errors"]] == [name]


def test_boost_at_plan_limit_accepted(client, owner):
    _partner, headers = owner

    client.web.post_json(BOOSTS_PATH, boost_body(extra_requests_per_hour=2,
                                                 extra_requests_per_day=20),
                         headers=headers, status=201)


def test_daily_extra_without_daily_limit_rejected(client, app):
    partner, token = client.partner_with_token()
    put_partner_on_plan(app, partner["id"], per_hour=10, per_day=None)

    response = client.web.post_json(BOOSTS_PATH, boost_body(extra_requests_per_day=5),
                                    headers=auth_header(token), status=400)

    assert "no daily limit" in response.json["message"]


def test_unlimited_plan_needs_no_boost(client, app):
    partner, token = client.partner_with_token()
    put_partner_on_plan(app, partner["id"], per_hour=None, per_day=None)

    response = client.web.post_json(BOOSTS_PATH, boost_body(), headers=auth_header(token),
                                    status=409)

    assert response.json["code"] == "plan_unlimited"


def test_second_active_boost_rejected(client, owner):
    _partner, headers = owner
    first = client.web.post_json(BOOSTS_PATH, boost_body(), headers=headers, status=201).json

    response = client.web.post_json(BOOSTS_PATH, boost_body(), headers=headers, status=409)

    assert response.json["code"] == "boost_active"
    assert first["id"] in response.json["message"]


def test_boost_after_cancel_accepted(client, owner):
    _partner, headers = owner
    first = client.web.post_json(BOOSTS_PATH, boost_body(), headers=headers, status=201).json
    client.web.delete(f"{BOOSTS_PATH}/{first['id']}", headers=headers, status=200)

    client.web.post_json(BOOSTS_PATH, boost_body(), headers=headers, status=201)


def test_boost_per_mode(client, app, owner):
    partner, headers = owner
    verify_partner(app, partner["id"])

    client.web.post_json(BOOSTS_PATH, boost_body(mode="test"), headers=headers, status=201)
    live = client.web.post_json(BOOSTS_PATH, boost_body(mode="live"), headers=headers,
                                status=201)

    assert live.json["mode"] == "live"


def test_live_boost_needs_verified_partner(client, owner):
    _partner, headers = owner

    response = client.web.post_json(BOOSTS_PATH, boost_body(mode="live"), headers=headers,
                                    status=403)

    assert response.json["code"] == "partner_not_verified"


def test_expired_boost_allows_new_one(client, app, owner):
    _partner, headers = owner
    first = client.web.post_json(BOOSTS_PATH, boost_body(), headers=headers, status=201).json
    run_in_transaction(app.registry["db.session_factory"], lambda session: setattr(
        session.get(RateLimitBoost, parse_id("boost", first["id"])), "ends_at",
        dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(seconds=1)))

    client.web.post_json(BOOSTS_PATH, boost_body(), headers=headers, status=201)
    listed = client.web.get(BOOSTS_PATH, headers=headers).json["data"]

    assert [boost["status"] for boost in listed] == ["active", "expired"]


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"extra_requests_per_hour": 0}, "extra_requests_per_hour"),
        ({"extra_requests_per_hour": "2"}, "extra_requests_per_hour"),
        ({"extra_requests_per_hour": 1.5}, "extra_requests_per_hour"),
        ({"extra_requests_per_day": 0}, "extra_requests_per_day"),
        ({"duration_hours": 0}, "duration_hours"),
        ({"duration_hours": 73}, "duration_hours"),
        ({"duration_hours": True}, "duration_hours"),
        ({"mode": "prod"}, "mode"),
        ({"reason": "x" * 501}, "reason"),
        ({"starts_at": "2030-01-01T00:00:00Z"}, "starts_at"),
    ],
)
def test_invalid_boost_body_rejected(client, owner, fields, name):
    _partner, headers = owner

    response = client.web.post_json(BOOSTS_PATH, boost_body(**fields), headers=headers,
                                    status=400)

    assert response.json["code"] == "validation_failed"
    assert name in [error["name"] for error in response.json["errors"]]


@pytest.mark.parametrize("missing", ["extra_requests_per_hour", "duration_hours"])
def test_boost_required_fields(client, owner, missing):
    _partner, headers = owner
    body = boost_body()
    del body[missing]

    response = client.web.post_json(BOOSTS_PATH, body, headers=headers, status=400)

    assert missing in [error["name"] for error in response.json["errors"]]


# Listing and cancelling -------------------------------------------------------------


def test_list_boosts_paginated_newest_first(client, owner):
    _partner, headers = owner
    ids = []
    for _ in range(3):
        created = client.web.post_json(BOOSTS_PATH, boost_body(), headers=headers,
                                       status=201).json
        client.web.delete(f"{BOOSTS_PATH}/{created['id']}", headers=headers, status=200)
        ids.append(created["id"])

    first_page = client.web.get(BOOSTS_PATH, {"limit": "2"}, headers=headers).json
    second_page = client.web.get(BOOSTS_PATH, {"limit": "2", "cursor": first_page["next_cursor"]},
                                 headers=headers).json

    assert [boost["id"] for boost in first_page["data"]] == [ids[2], ids[1]]
    assert first_page["has_more"] is True
    assert [boost["id"] for boost in second_page["data"]] == [ids[0]]
    assert second_page["has_more"] is False
    assert {boost["status"] for boost in first_page["data"]} == {"cancelled"}


def test_list_shows_only_own_boosts(client, app, owner):
    _partner, headers = owner
    client.web.post_json(BOOSTS_PATH, boost_body(), headers=headers, status=201)
    _other, other_token = client.partner_with_token()

    listed = client.web.get(BOOSTS_PATH, headers=auth_header(other_token)).json

    assert listed["data"] == []


def test_cancel_boost_restores_plan_limit(app_factory):
    app = app_factory(**NO_KEY_CACHE)
    client = TestClient(app)
    partner, token = client.partner_with_token()
    put_partner_on_plan(app, partner["id"], per_hour=2, per_day=None)
    key = client.create_key(token, scopes=("mentors:read",))["key"]
    created = client.web.post_json(BOOSTS_PATH, boost_body(extra_requests_per_hour=2),
                                   headers=auth_header(token), status=201).json
    assert mentor_statuses(client, key, 3) == [200, 200, 200]

    cancelled = client.web.delete(f"{BOOSTS_PATH}/{created['id']}",
                                  headers=auth_header(token), status=200).json

    assert cancelled["status"] == "cancelled"
    assert cancelled["cancelled_at"] is not None
    # Three calls are counted against the plan's 2 again, as after a downgrade.
    assert mentor_statuses(client, key, 1) == [429]


def test_cancel_twice_conflicts(client, owner):
    _partner, headers = owner
    created = client.web.post_json(BOOSTS_PATH, boost_body(), headers=headers, status=201).json
    client.web.delete(f"{BOOSTS_PATH}/{created['id']}", headers=headers, status=200)

    response = client.web.delete(f"{BOOSTS_PATH}/{created['id']}", headers=headers, status=409)

    assert response.json["code"] == "boost_not_active"


def test_cancel_other_partners_boost_not_found(client, app, owner):
    _partner, headers = owner
    created = client.web.post_json(BOOSTS_PATH, boost_body(), headers=headers, status=201).json
    _other, other_token = client.partner_with_token()

    response = client.web.delete(f"{BOOSTS_PATH}/{created['id']}",
                                 headers=auth_header(other_token), status=404)

    assert response.json["code"] == "not_found"
    still = client.web.get(BOOSTS_PATH, headers=headers).json["data"]
    assert still[0]["status"] == "active"


@pytest.mark.parametrize("bad_id", ["boost_999999", "boost_x", "key_1", "boost_99999999999"])
def test_cancel_unknown_id_not_found(client, owner, bad_id):
    _partner, headers = owner

    response = client.web.delete(f"{BOOSTS_PATH}/{bad_id}", headers=headers, status=404)

    assert response.json["code"] == "not_found"


@pytest.mark.shared_app(False)
def test_boost_rows_kept_for_billing(client, app, owner):
    partner, headers = owner
    created = client.web.post_json(BOOSTS_PATH, boost_body(), headers=headers, status=201).json
    client.web.delete(f"{BOOSTS_PATH}/{created['id']}", headers=headers, status=200)

    rows = run_in_transaction(app.registry["db.session_factory"], lambda session: [
        (row.partner_id, row.livemode, row.cancelled_at is not None)
        for row in session.scalars(sa.select(RateLimitBoost))])

    assert rows == [(parse_id("partner", partner["id"]), False, True)]


# The limits report ----------------------------------------------------------------------


def test_limits_report_windows(app_factory):
    app = app_factory(**NO_KEY_CACHE, **{"fkod.ratelimit.endpoint_limits":
                                         "GET /api/v1/mentors = 5/60"})
    client = TestClient(app)
    partner, token = client.partner_with_token()
    put_partner_on_plan(app, partner["id"], per_hour=10, per_day=30)
    key = client.create_key(token, scopes=("mentors:read",))["key"]
    assert mentor_statuses(client, key, 3) == [200, 200, 200]
    boost = client.web.post_json(BOOSTS_PATH, boost_body(extra_requests_per_hour=4),
                                 headers=auth_header(token), status=201).json
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)

    report = client.web.get(LIMITS_PATH, headers=auth_header(token)).json

    assert report["plan"]["requests_per_hour"] == 10
    assert report["plan"]["requests_per_day"] == 30
    modes = {mode["mode"]: mode for mode in report["modes"]}
    assert set(modes) == {"live", "test"}
    assert modes["test"]["boost"]["id"] == boost["id"]
    assert modes["live"]["boost"] is None

    test_windows = {window["name"]: window for window in modes["test"]["windows"]}
    assert set(test_windows) == {"hour", "day", "GET /api/v1/mentors"}
    assert (test_windows["hour"]["limit"], test_windows["hour"]["remaining"]) == (14, 11)
    assert (test_windows["day"]["limit"], test_windows["day"]["remaining"]) == (30, 27)
    assert test_windows["GET /api/v1/mentors"]["kind"] == "endpoint"
    assert test_windows["GET /api/v1/mentors"]["remaining"] == 2
    assert test_windows["hour"]["window_seconds"] == 3600
    reset_at = dt.datetime.fromisoformat(test_windows["hour"]["reset_at"].removesuffix("Z"))
    assert now - dt.timedelta(seconds=5) <= reset_at <= now + dt.timedelta(seconds=3601)

    live_windows = {window["name"]: window for window in modes["live"]["windows"]}
    assert (live_windows["hour"]["limit"], live_windows["hour"]["remaining"]) == (10, 10)


def test_limits_report_unlimited_plan(client, app):
    partner, token = client.partner_with_token()
    put_partner_on_plan(app, partner["id"], per_hour=None, per_day=None)

    report = client.web.get(LIMITS_PATH, headers=auth_header(token)).json

    assert report["plan"]["requests_per_hour"] is None
    assert [mode["windows"] for mode in report["modes"]] == [[], []]


def test_limits_report_limiter_down(app_factory):
    app = app_factory(**{"fkod.ratelimit.backend": "redis",
                         "fkod.redis.url": "redis://127.0.0.1:1/0"})
    client = TestClient(app)
    _partner, token = client.partner_with_token()

    response = client.web.get(LIMITS_PATH, headers=auth_header(token), status=503)

    assert response.json["code"] == "rate_limiter_unavailable"
