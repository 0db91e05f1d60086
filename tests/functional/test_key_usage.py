"""The usage report of one API key (``GET /api/partners/api-keys/{id}/usage``).

On the production stack the gateway's usage records travel through the Redis
stream, and ``run_periodic_now()`` drains them (and runs the roll-up).
"""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from fkod.core.db import run_in_transaction, utcnow
from fkod.core.idempotency_models import IdempotencyRecord
from fkod.core.ids import parse_id
from fkod.core.metering import partner_usage_summary, rollup_usage
from fkod.core.metering.histogram import estimate_percentile
from fkod.core.metering.models import ApiUsage, ApiUsageHourly
from fkod.core.settings import ConfigurationError
from fkod.core.testing import auth_header, verify_partner
from tests.envelope import assert_envelope

pytestmark = pytest.mark.shared_app

MENTORS = "/api/v1/mentors"


def usage_path(key_id: str, query: str = "") -> str:
    return f"/api/partners/api-keys/{key_id}/usage{query}"


def flush_usage(app) -> None:
    """Write buffered usage records to the database on either stack."""
    app.registry["usage_recorder"].flush()
    if app.registry.settings["fkod.metering.backend"] == "redis":
        app.registry["tasks"].run_periodic_now()



def insert_raw_usage(app, rows: list[dict]) -> None:
    with app.registry["db.engine"].begin() as connection:
        connection.execute(ApiUsage.__table__.insert(), rows)


def raw_row(key: dict, partner: dict, created_at: dt.datetime, **overrides) -> dict:
    row = {
        "api_key_id": parse_id("key", key["id"]),
        "partner_id": parse_id("partner", partner["id"]),
        "endpoint": MENTORS,
        "method": "GET",
        "status_code": 200,
        "response_time": 20,
        "request_size": 0,
        "response_size": 300,
        "error_message": None,
        "livemode": key["mode"] == "live",
        "request_id": None,
        "created_at": created_at,
    }
    row.update(overrides)
    return row


@pytest.fixture
def owner(client):
    """A fresh partner, its owner's login headers and a test-mode key with every scope needed."""
    partner, token = client.partner_with_token()
    key = client.create_key(token, scopes=("mentors:read", "users:read"))
    return partner, auth_header(token), key


def test_usage_counts_gateway_calls(client, app, owner):
    _partner, headers, key = owner
    key_headers = auth_header(key["key"])
    for _ in range(3):
        client.web.get(MENTORS, headers=key_headers, status=200)
    missing = client.web.get("/api/v1/users/user_999999", headers=key_headers, status=404)
    flush_usage(app)

    body = client.web.get(usage_path(key["id"]), headers=headers, status=200).json

    assert body["key_id"] == key["id"]
    assert body["mode"] == "test"
    assert body["days"] == 30
    assert body["request_count"] == 4
    assert body["error_count"] == 1
    assert body["by_status_class"] == {"2xx": 3, "3xx": 0, "4xx": 1, "5xx": 0}
    assert len(body["by_day"]) == 30
    assert sum(day["request_count"] for day in body["by_day"]) == 4
    assert sum(day["error_count"] for day in body["by_day"]) == 1
    endpoints = {(item["method"], item["endpoint"]): item for item in body["by_endpoint"]}
    assert endpoints[("GET", MENTORS)]["request_count"] == 3
    assert endpoints[("GET", "/api/v1/users/{id}")]["error_count"] == 1
    assert body["latency"]["p50_ms"] is not None
    assert sum(body["latency"]["histogram"].values()) == 4
    [error] = body["recent_errors"]
    assert error["request_id"] == missing.headers["X-Request-Id"]
    assert error["status_code"] == 404
    assert error["error_code"] == "not_found"
    assert error["endpoint"] == "/api/v1/users/{id}"
    assert error["method"] == "GET"
    assert error["created_at"].endswith("Z")


def test_usage_without_calls(client, owner):
    _partner, headers, key = owner

    body = client.web.get(usage_path(key["id"], "?days=7"), headers=headers, status=200).json

    assert body["request_count"] == 0
    assert len(body["by_day"]) == 7
    assert body["by_day"][-1]["date"] == utcnow().date().isoformat()
    assert body["by_endpoint"] == []
    assert body["recent_errors"] == []
    assert body["latency"]["p50_ms"] is None
    assert body["latency"]["histogram"] == {}


def test_usage_reads_rollups_and_recent_rows(client, app, owner):
    partner, headers, key = owner
    three_days_ago = (utcnow() - dt.timedelta(days=3)).replace(hour=10, minute=0, second=0,
                                                                microsecond=0)
    times = [3] * 10 + [40] * 8 + [700] * 2
    insert_raw_usage(app, [
        raw_row(key, partner, three_days_ago + dt.timedelta(minutes=number),
                response_time=response_time)
        for number, response_time in enumerate(times)
    ] + [raw_row(key, partner, three_days_ago + dt.timedelta(minutes=30), status_code=503,
                 response_time=700, error_message="upstream_unavailable", request_id="req_old")])
    engine = app.registry["db.engine"]
    rollup_usage(engine)
    # The old hour is rolled up, so its raw rows are no longer read: without
    # them the report must show the same numbers.
    with engine.begin() as connection:
        hourly = connection.scalar(sa.select(sa.func.sum(ApiUsageHourly.request_count)))
        connection.execute(sa.delete(ApiUsage.__table__)
                           .where(ApiUsage.created_at < three_days_ago + dt.timedelta(hours=1)))
    assert hourly == 21
    # A call of the current hour, which the roll-up has not reached.
    insert_raw_usage(app, [raw_row(key, partner, utcnow(), response_time=7)])

    body = client.web.get(usage_path(key["id"]), headers=headers, status=200).json

    assert body["request_count"] == 22
    assert body["error_count"] == 1
    days = {day["date"]: day for day in body["by_day"]}
    assert days[three_days_ago.date().isoformat()]["request_count"] == 21
    assert days[three_days_ago.date().isoformat()]["error_count"] == 1
    assert body["by_status_class"]["5xx"] == 1
    # The deleted raw rows take their errors with them.
    assert body["recent_errors"] == []
    histogram = body["latency"]["histogram"]
    assert histogram == {"5": 10, "10": 1, "50": 8, "1000": 3}
    assert body["latency"]["max_ms"] == 700
    assert body["latency"]["p50_ms"] == pytest.approx(
        estimate_percentile(histogram, 0.5, body["latency"]["max_ms"]), abs=0.05)
    assert body["latency"]["p95_ms"] == pytest.approx(
        estimate_percentile(histogram, 0.95, body["latency"]["max_ms"]), abs=0.05)


@pytest.mark.shared_app(False)
def test_usage_days_and_limit(client, app, owner):
    partner, headers, key = owner
    now = utcnow()
    insert_raw_usage(app, [
        raw_row(key, partner, now - dt.timedelta(minutes=minutes), status_code=500,
                error_message="internal_error", request_id=f"req_{minutes}")
        for minutes in (1, 2, 3)
    ] + [raw_row(key, partner, now - dt.timedelta(days=5))])

    body = client.web.get(usage_path(key["id"], "?days=1&limit=2"), headers=headers,
                          status=200).json

    assert len(body["by_day"]) == 1
    assert body["days"] == 1
    assert [error["request_id"] for error in body["recent_errors"]] == ["req_1", "req_2"]
    wide = client.web.get(usage_path(key["id"], "?days=90"), headers=headers, status=200).json
    assert len(wide["by_day"]) == 90
    assert wide["request_count"] == body["request_count"] + 1


def test_usage_modes_reported_apart(client, app):
    partner, token = client.partner_with_token()
    verify_partner(app, partner["id"])
    headers = auth_header(token)
    test_key = client.create_key(token, scopes=("mentors:read",))
    live_key = client.create_key(token, scopes=("mentors:read",), mode="live")
    for _ in range(2):
        client.web.get(MENTORS, headers=auth_header(test_key["key"]), status=200)
    for _ in range(3):
        client.web.get(MENTORS, headers=auth_header(live_key["key"]), status=200)
    flush_usage(app)

    test_body = client.web.get(usage_path(test_key["id"]), headers=headers, status=200).json
    live_body = client.web.get(usage_path(live_key["id"]), headers=headers, status=200).json

    assert (test_body["mode"], test_body["request_count"]) == ("test", 2)
    assert (live_body["mode"], live_body["request_count"]) == ("live", 3)
    until = utcnow() + dt.timedelta(seconds=1)
    by_mode = run_in_transaction(app.registry["db.session_factory"], lambda session: (
        partner_usage_summary(session, parse_id("partner", partner["id"]),
                              until - dt.timedelta(days=1), until)))
    assert by_mode["test"].request_count == 2
    assert by_mode["live"].request_count == 3


def test_usage_of_other_partners_key_is_404(client, owner):
    _partner, _headers, key = owner
    _other, other_token = client.partner_with_token()

    response = client.web.get(usage_path(key["id"]), headers=auth_header(other_token),
                              status=404)

    assert_envelope(response, 404, "not_found")


@pytest.mark.parametrize("key_id", [
    "key_abc", "user_1", "key_", "key_99999999999", "key_-1", "key_1.0", "123",
])
def test_usage_malformed_id_is_404(client, owner, key_id):
    _partner, headers, _key = owner

    response = client.web.get(usage_path(key_id), headers=headers, status=404)

    assert_envelope(response, 404, "not_found")


def test_usage_unknown_key_is_404(client, owner):
    _partner, headers, _key = owner

    response = client.web.get(usage_path("key_2147483647"), headers=headers, status=404)

    assert_envelope(response, 404, "not_found")


@pytest.mark.parametrize("query, field", [
    ("?days=0", "days"),
    ("?days=91", "days"),
    ("?days=abc", "days"),
    ("?days=1.5", "days"),
    ("?days=-1", "days"),
    ("?days=", "days"),
    ("?days=%2B5", "days"),
    ("?days=9999999999", "days"),
    ("?limit=0", "limit"),
    ("?limit=101", "limit"),
    ("?limit=x", "limit"),
    ("?days=5&days=6", "days"),
    ("?since=2027-01-01", "since"),
])
def test_usage_bad_query_is_400(client, owner, query, field):
    _partner, headers, key = owner

    response = client.web.get(usage_path(key["id"], query), headers=headers, status=400)

    body = assert_envelope(response, 400, "validation_failed")
    assert [error["name"] for error in body["errors"]] == [field]
    assert body["errors"][0]["location"] == "querystring"


def test_usage_needs_member_login(client, owner):
    _partner, _headers, key = owner

    client.web.get(usage_path(key["id"]), status=401)
    client.web.get(usage_path(key["id"]), headers=auth_header(key["key"]), status=401)


@pytest.mark.shared_app(False)
def test_worker_jobs_roll_up_and_purge(client, app, owner):
    partner, _headers, key = owner
    two_days_ago = utcnow() - dt.timedelta(days=2)
    insert_raw_usage(app, [raw_row(key, partner, two_days_ago) for _ in range(3)])
    records = IdempotencyRecord.__table__
    with app.registry["db.engine"].begin() as connection:
        connection.execute(records.insert().values(
            owner="key:1", idempotency_key="expired", method="POST", path="/api/v1/users",
            request_hash="0" * 64, expires_at=utcnow() - dt.timedelta(seconds=1)))

    names = [name for name, _interval, _job in app.registry["tasks"].periodic]
    app.registry["tasks"].run_periodic_now()

    assert "rollup_usage" in names
    assert "purge_usage" in names
    with app.registry["db.engine"].connect() as connection:
        rolled = connection.scalar(sa.select(sa.func.sum(ApiUsageHourly.request_count)))
        left = connection.scalar(sa.select(sa.func.count()).select_from(records))
    assert rolled == 3
    assert left == 0


def test_hourly_retention_shorter_than_raw_rejected(app_factory):
    with pytest.raises(ConfigurationError, match="hourly_retention_days"):
        app_factory(**{"fkod.metering.raw_retention_days": "30",
                       "fkod.metering.hourly_retention_days": "29"})
