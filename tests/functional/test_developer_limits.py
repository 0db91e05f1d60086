"""The partner's rate-limit windows on the developer dashboard (``GET /api/developers/limits``)."""

from __future__ import annotations

import datetime as dt
import socket
from copy import deepcopy

import pytest

from fkod.core.testing import TestClient, auth_header
from tests.envelope import assert_envelope
from tests.functional.test_developer_me import customer_token
from tests.functional.test_limit_boosts import NO_KEY_CACHE, put_partner_on_plan

pytestmark = pytest.mark.shared_app

LIMITS = "/api/developers/limits"
USERS = "/api/v1/users"

def free_port() -> int:
    """Return a loopback port that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]

def windows_of(body: dict, mode: str) -> dict:
    (entry,) = [item for item in body["modes"] if item["mode"] == mode]
    return {window["name"]: window for window in entry["windows"]}

def without_idle_resets(body: dict) -> dict:
    """Return ``body`` without the reset time of windows that counted nothing.

    An idle window resets "now", so its reset time moves between two reads.
    """
    copy = deepcopy(body)
    for entry in copy["modes"]:
        for window in entry["windows"]:
            if window["remaining"] == window["limit"]:
                window.pop("reset_at")
    return copy

def test_limits_report_windows_without_counting(app_factory):
    app = app_factory(**NO_KEY_CACHE, **{
        "fkod.ratelimit.endpoint_limits": "GET /api/v1/users = 7/60"})

    client = TestClient(app)
    partner, token = client.partner_with_token()
    headers = auth_header(token)
    put_partner_on_plan(app, partner["id"], per_hour=50, per_day=500)
    limited = client.create_key(token, rate_limit=5, rate_limit_window=60)
    plain = client.create_key(token)
    client.web.get(USERS, headers=auth_header(limited["key"]), status=200)
    client.web.get(USERS, headers=auth_header(plain["key"]), status=200)

    first = client.web.get(LIMITS, headers=headers, status=200).json
    second = client.web.get(LIMITS, headers=headers, status=200).json

    assert without_idle_resets(first) == without_idle_resets(second), \
        "reading the limits must not count a request"
    assert first["plan"]["requests_per_hour"] == 50
    test = windows_of(first, "test")
    assert test["hour"]["limit"] == 50
    assert test["hour"]["remaining"] == 48
    assert test["hour"]["unlimited"] is False
    assert test["day"]["limit"] == 500
    assert test["day"]["remaining"] == 498
    assert test["GET /api/v1/users"]["kind"] == "endpoint"
    assert test["GET /api/v1/users"]["remaining"] == 5
    reset_at = dt.datetime.fromisoformat(test["hour"]["reset_at"].replace("Z", "+00:00"))
    now = dt.datetime.now(dt.UTC)
    assert now - dt.timedelta(seconds=5) < reset_at <= now + dt.timedelta(hours=1, seconds=5)
    assert windows_of(first, "live")["hour"]["remaining"] == 50

    keys = {key["key_prefix"]: key for key in first["api_keys"]}
    assert keys[limited["key_prefix"]]["mode"] == "test"
    assert keys[limited["key_prefix"]]["window"]["limit"] == 5
    assert keys[limited["key_prefix"]]["window"]["remaining"] == 4
    assert keys[limited["key_prefix"]]["window"]["window_seconds"] == 60
    assert keys[plain["key_prefix"]]["window"] is None

def test_limits_unlimited_plan_and_tenancy(app_factory):
    app = app_factory(**NO_KEY_CACHE)

    client = TestClient(app)
    partner, token = client.partner_with_token()
    _other_partner, other_token = client.partner_with_token()
    client.create_key(other_token)
    put_partner_on_plan(app, partner["id"], per_hour=None, per_day=None)
    key = client.create_key(token)
    client.web.get(USERS, headers=auth_header(key["key"]), status=200)

    body = client.web.get(LIMITS, headers=auth_header(token), status=200).json

    hour = windows_of(body, "test")["hour"]
    assert hour["unlimited"] is True
    assert hour["limit"] is None
    assert hour["remaining"] is None
    assert hour["reset_at"] is None
    assert [item["key_prefix"] for item in body["api_keys"]] == [key["key_prefix"]]

    assert_envelope(client.web.get(LIMITS, status=401), 401)
    learner = customer_token(client, "limits-learner@example.org")
    assert_envelope(client.web.get(LIMITS, headers=auth_header(learner), status=403), 403)
    response = client.web.get(LIMITS + "?mode=live", headers=auth_header(token), status=400)
    assert [error["name"] for error in assert_envelope(response, 400)["errors"]] == ["mode"]

def test_limits_redis_unreachable_is_503(app_factory):
    app = app_factory(**{"fkod.ratelimit.backend": "redis",
                         "fkod.redis.url": f"redis://127.0.0.1:{free_port()}/0",
                         "fkod.metering.backend": "memory", "fkod.tasks.broker": "inprocess"})

    client = TestClient(app)
    _partner, token = client.partner_with_token()

    response = client.web.get(LIMITS, headers=auth_header(token), status=503)

    assert_envelope(response, 503, "rate_limiter_unavailable")
    assert response.headers["Retry-After"]
