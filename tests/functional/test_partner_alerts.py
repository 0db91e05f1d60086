"""Partner alerts: quota thresholds, expiring keys and usage anomalies, each sent once."""

from __future__ import annotations

import datetime as dt
import json
import time

import jsonschema
import pytest
import sqlalchemy as sa

from fkod.core import alerts
from fkod.core.auth.models import ApiKey
from fkod.core.db import run_in_transaction, utcnow
from fkod.core.metering.models import ApiUsageHourly
from fkod.core.scheduler import schedule_for
from fkod.core.testing import auth_header
from fkod.core.webhooks.models import Event
from tests.functional.test_gateway_limits import put_partner_on_plan

pytestmark = pytest.mark.shared_app


def wait_until(condition, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.05)


def events_of(app, event_type: str) -> list[dict]:
    def read(session):
        return [row.payload for row in session.scalars(
            sa.select(Event).where(Event.type == event_type).order_by(Event.id))]

    return run_in_transaction(app.registry["db.session_factory"], read)


def mails(app, address: str, subject_part: str = "") -> list:
    return [message for message in app.registry["mailer"].messages_to(address)
            if subject_part in message.subject]


def settle(client) -> None:
    """Let the task worker finish the alerts' actors and deliveries."""
    client.drain_tasks()
    time.sleep(0.1)
    client.drain_tasks()


def partner_with_webhook(client, receiver, patterns=("key.*", "usage.*")):
    registered = client.register_partner()
    email = registered["user"]["email"]
    token = client.login(email)
    client.web.post_json("/api/partners/webhooks", {
        "url": receiver.url, "event_types": list(patterns)},
        headers=auth_header(token), status=201)
    return registered["partner"], email, token


def row_id(public_id: str) -> int:
    return int(public_id.rsplit("_", 1)[1])


def test_alert_events_are_in_the_catalog(client):
    catalog = client.registry["plugins"].event_catalog
    for name in (alerts.QUOTA_WARNING, alerts.QUOTA_EXHAUSTED, alerts.KEY_EXPIRING,
                 alerts.USAGE_ANOMALY):
        event_type = catalog.get(name)
        assert event_type is not None and event_type.plugin is None
        jsonschema.validate(event_type.sample, event_type.schema)


def test_quota_warning_then_exhausted_once_per_window(client, app, make_receiver):
    receiver = make_receiver()
    partner, email, token = partner_with_webhook(client, receiver)
    key = client.create_key(token, scopes=("mentors:read",))
    put_partner_on_plan(app, partner["id"], per_hour=5, per_day=None)
    headers = auth_header(key["key"])

    for _ in range(3):
        client.web.get("/api/v1/mentors", headers=headers)
    settle(client)
    assert events_of(app, alerts.QUOTA_WARNING) == []

    client.web.get("/api/v1/mentors", headers=headers)  # 4 of 5: 80%
    assert wait_until(lambda: events_of(app, alerts.QUOTA_WARNING))
    client.web.get("/api/v1/mentors", headers=headers)  # 5 of 5: 100%
    assert wait_until(lambda: events_of(app, alerts.QUOTA_EXHAUSTED))
    for _ in range(5):
        client.web.get("/api/v1/mentors", headers=headers, status=429)
    # A process that forgot what it sent still finds the alerts recorded.
    app.registry["partner_alerts"]._seen.clear()
    client.web.get("/api/v1/mentors", headers=headers, status=429)
    settle(client)

    [warning] = events_of(app, alerts.QUOTA_WARNING)
    [exhausted] = events_of(app, alerts.QUOTA_EXHAUSTED)
    assert warning["data"]["threshold_percent"] == 80
    assert warning["data"]["used"] == 4 and warning["data"]["limit"] == 5
    assert warning["data"]["window"] == {"scope": "partner", "seconds": 3600, "route": None}
    assert warning["data"]["partner_id"] == partner["id"]
    assert warning["data"]["key"]["key_prefix"] == key["key_prefix"]
    assert exhausted["data"]["threshold_percent"] == 100
    assert exhausted["data"]["used"] == 5

    assert len(mails(app, email, "80%")) == 1
    assert len(mails(app, email, "rate limit reached")) == 1
    received = wait_until(lambda: [json.loads(request.body)["type"]
                                   for request in receiver.requests]
                          if len(receiver.requests) >= 2 else None)
    assert sorted(received) == [alerts.QUOTA_EXHAUSTED, alerts.QUOTA_WARNING]
    assert key["key"] not in "".join(message.body for message in mails(app, email))


@pytest.mark.shared_app(False)
def test_quota_alert_for_a_key_window(client, app):
    _partner, token = client.partner_with_token()
    key = client.create_key(token, scopes=("mentors:read",), rate_limit=2,
                            rate_limit_window=60)
    put_partner_on_plan(app, _partner["id"], per_hour=None, per_day=None)
    headers = auth_header(key["key"])
    client.web.get("/api/v1/mentors", headers=headers)  # 1 of 2: 50%
    client.web.get("/api/v1/mentors", headers=headers)  # 2 of 2: 100%
    client.web.get("/api/v1/mentors", headers=headers, status=429)
    assert wait_until(lambda: events_of(app, alerts.QUOTA_EXHAUSTED))
    settle(client)
    [exhausted] = events_of(app, alerts.QUOTA_EXHAUSTED)
    assert exhausted["data"]["window"]["scope"] == "key"
    assert exhausted["data"]["window"]["seconds"] == 60
    # 100% covers the lower threshold: one alert, not two at once.
    assert events_of(app, alerts.QUOTA_WARNING) == []


def set_expiry(app, key_id: str, expires_at: dt.datetime) -> None:
    def work(session):
        session.get(ApiKey, row_id(key_id)).expires_at = expires_at

    run_in_transaction(app.registry["db.session_factory"], work)


def test_key_expiring_7_days_then_1_day(client, app, make_receiver):
    receiver = make_receiver()
    _partner, email, token = partner_with_webhook(client, receiver)
    key = client.create_key(token, scopes=("mentors:read",))
    later = client.create_key(token, scopes=("mentors:read",))
    now = utcnow().replace(tzinfo=None)
    set_expiry(app, key["id"], now + dt.timedelta(days=6, hours=12))
    set_expiry(app, later["id"], now + dt.timedelta(days=30))
    checker = app.registry["partner_alerts"]

    assert checker.check_expiring_keys(now) == 1
    assert checker.check_expiring_keys(now + dt.timedelta(hours=1)) == 0
    assert checker.check_expiring_keys(now + dt.timedelta(days=3)) == 0
    assert checker.check_expiring_keys(now + dt.timedelta(days=5, hours=13)) == 1
    assert checker.check_expiring_keys(now + dt.timedelta(days=5, hours=14)) == 0
    # After it expired, nothing more.
    assert checker.check_expiring_keys(now + dt.timedelta(days=8)) == 0
    settle(client)

    sent = events_of(app, alerts.KEY_EXPIRING)
    assert [event["data"]["days_before"] for event in sent] == [7, 1]
    assert {event["data"]["key"]["id"] for event in sent} == {key["id"]}
    assert len(mails(app, email, "expires in 7 days")) == 1
    assert len(mails(app, email, "expires tomorrow")) == 1
    assert wait_until(lambda: len(receiver.requests) >= 2)


@pytest.mark.shared_app(False)
def test_key_expiring_soon_after_creation_gets_one_alert(client, app):
    _partner, token = client.partner_with_token()
    key = client.create_key(token, scopes=("mentors:read",))
    now = utcnow().replace(tzinfo=None)
    set_expiry(app, key["id"], now + dt.timedelta(hours=20))
    checker = app.registry["partner_alerts"]
    assert checker.check_expiring_keys(now) == 1
    assert checker.check_expiring_keys(now + dt.timedelta(hours=2)) == 0
    assert [event["data"]["days_before"] for event in events_of(app, alerts.KEY_EXPIRING)] == [1]


def test_expiry_and_anomaly_jobs_are_scheduled(app):
    schedule = schedule_for(app.registry)
    assert {alerts.EXPIRY_JOB, alerts.ANOMALY_JOB} <= set(schedule.names())
    assert schedule.get(alerts.EXPIRY_JOB).actor == alerts.EXPIRY_JOB
    assert alerts.EXPIRY_JOB in app.registry["tasks"].actors
    assert alerts.ANOMALY_JOB in app.registry["tasks"].actors


def add_usage(app, partner_id: int, hour: dt.datetime, *, ok: int, errors: int = 0,
              limited: int = 0, livemode: bool = False) -> None:
    def work(session):
        for index, (status, count) in enumerate(((200, ok), (500, errors), (429, limited))):
            if not count:
                continue
            session.add(ApiUsageHourly(
                hour=hour, api_key_id=None, partner_id=partner_id, livemode=livemode,
                endpoint=f"/api/v1/mentors/{index}", method="GET", status_code=status,
                request_count=count, total_response_time_ms=count * 10,
                max_response_time_ms=50, request_bytes=0, response_bytes=0,
                latency_histogram={}))

    run_in_transaction(app.registry["db.session_factory"], work)


def test_usage_anomaly(client, app, make_receiver):
    receiver = make_receiver()
    spike, spike_email, _ = partner_with_webhook(client, receiver)
    failing, failing_email, _ = partner_with_webhook(client, receiver)
    quiet, quiet_email, _ = partner_with_webhook(client, receiver)
    steady, steady_email, _ = partner_with_webhook(client, receiver)
    limited, limited_email, _ = partner_with_webhook(client, receiver)
    now = dt.datetime(2026, 12, 5, 10, 20)
    last_hour = dt.datetime(2026, 12, 5, 9, 0)
    for days in range(1, 8):
        same_hour = last_hour - dt.timedelta(days=days)
        add_usage(app, row_id(spike["id"]), same_hour, ok=100, errors=1)
        add_usage(app, row_id(failing["id"]), same_hour, ok=300, errors=3)
        add_usage(app, row_id(quiet["id"]), same_hour, ok=2)
        add_usage(app, row_id(steady["id"]), same_hour, ok=500, errors=5)
        add_usage(app, row_id(limited["id"]), same_hour, ok=200)
        # Other hours of the day do not count.
        add_usage(app, row_id(steady["id"]), same_hour - dt.timedelta(hours=3), ok=5000)
    add_usage(app, row_id(spike["id"]), last_hour, ok=1000, errors=5)
    add_usage(app, row_id(failing["id"]), last_hour, ok=200, errors=110)
    add_usage(app, row_id(quiet["id"]), last_hour, ok=40, errors=30)
    add_usage(app, row_id(steady["id"]), last_hour, ok=520, errors=6)
    # Refused calls (429) are the quota alerts' business, not an error rate.
    add_usage(app, row_id(limited["id"]), last_hour, ok=200, limited=250)
    checker = app.registry["partner_alerts"]

    assert checker.check_anomalies(now) == 2
    assert checker.check_anomalies(now + dt.timedelta(minutes=10)) == 0
    settle(client)

    sent = {event["data"]["partner_id"]: event["data"] for event in
            events_of(app, alerts.USAGE_ANOMALY)}
    assert set(sent) == {spike["id"], failing["id"]}
    assert sent[spike["id"]]["kinds"] == ["traffic_spike"]
    assert sent[spike["id"]]["requests"] == 1005
    assert sent[spike["id"]]["usual_requests"] == 101
    assert sent[failing["id"]]["kinds"] == ["error_rate"]
    assert sent[failing["id"]]["hour"] == "2026-12-05T09:00:00Z"
    assert len(mails(app, spike_email, "unusual")) == 1
    assert len(mails(app, failing_email, "unusual")) == 1
    for email in (quiet_email, steady_email, limited_email):
        assert mails(app, email, "unusual") == []
    assert wait_until(lambda: len(receiver.requests) >= 2)


def test_traffic_drop_needs_usual_volume(app):
    checker = app.registry["partner_alerts"]
    assert checker.anomaly(10, 0, 7 * 500, 0)["kinds"] == ["traffic_drop"]
    assert checker.anomaly(10, 0, 7 * 20, 0) is None
    assert checker.anomaly(150, 0, 7 * 100, 0) is None
