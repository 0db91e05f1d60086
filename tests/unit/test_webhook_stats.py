"""Delivery statistics computed from rows with chosen timestamps.

Rows are written straight into a freshly migrated database and the figures are
computed at a fixed ``now``, so window edges and ages are exact.
"""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy.orm import Session

from fkod.core.db import read_only
from fkod.core.testing import TestClient
from fkod.core.webhooks.models import Event, Webhook, WebhookAttempt, WebhookEvent
from fkod.core.webhooks.stats import HEALTH_WINDOW_SECONDS, endpoint_health, queue_stats

NOW = dt.datetime(2026, 6, 5, 12, 0, 0)


class Rows:
    """Writes endpoints, deliveries and attempts for one partner."""

    def __init__(self, app):
        self.engine = app.registry["db.engine"]
        partner = TestClient(app).register_partner()["partner"]
        self.partner_id = int(partner["id"].removeprefix("partner_"))
        self.events = 0

    def webhook(self, status: str = "active", **values) -> Webhook:
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            webhook = Webhook(partner_id=self.partner_id, event_type="user.created",
                              event_types=["user.created"], url="http://127.0.0.1:9/",
                              secret_key="unused", headers={}, status=status, **values)
            session.add(webhook)
        return webhook

    def delivery(self, webhook: Webhook, status: str, *, created_at: dt.datetime = NOW,
                 next_retry_at: dt.datetime | None = NOW,
                 attempts: list[tuple[dt.datetime, int | None]] = ()) -> WebhookEvent:
        """Add a delivery and its attempts, each given as (started_at, response_code)."""
        self.events += 1
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            event = Event(public_id=f"evt_{self.events:024x}", type="user.created", payload={},
                          livemode=False, created_at=created_at)
            session.add(event)
            session.flush()
            delivery = WebhookEvent(webhook_id=webhook.id, event_id=event.id,
                                    event_type="user.created", event_data={}, status=status,
                                    created_at=created_at, next_retry_at=next_retry_at)
            session.add(delivery)
            session.flush()
            for number, (started_at, code) in enumerate(attempts, start=1):
                session.add(WebhookAttempt(delivery_id=delivery.id, attempt=number,
                                           started_at=started_at, duration_ms=5,
                                           response_code=code))
        return delivery

    def health(self, webhook: Webhook, **kwargs) -> dict:
        with Session(self.engine) as session:
            return endpoint_health(session, session.get(Webhook, webhook.id), now=NOW, **kwargs)

    def queue(self) -> dict:
        return read_only(self.engine, lambda connection: queue_stats(connection, now=NOW))


@pytest.fixture
def rows(app) -> Rows:
    return Rows(app)


def ago(**delta) -> dt.datetime:
    return NOW - dt.timedelta(**delta)


# One endpoint's health --------------------------------------------------------


def test_health_counts_attempts_in_window(rows):
    webhook = rows.webhook()
    window = HEALTH_WINDOW_SECONDS
    rows.delivery(webhook, "succeeded", attempts=[(ago(seconds=window), 200)])
    rows.delivery(webhook, "succeeded", attempts=[(ago(seconds=window + 1), 200)])
    rows.delivery(webhook, "failed", attempts=[(ago(hours=2), 500), (ago(hours=1), None)])

    health = rows.health(webhook)

    # The attempt exactly one window old counts; one second older does not.
    assert (health["attempts"], health["successes"], health["failures"]) == (3, 1, 2)
    assert health["success_rate"] == pytest.approx(0.3333)
    assert health["window_seconds"] == window


@pytest.mark.parametrize(("code", "success"), [
    (200, True), (204, True), (299, True), (199, False), (300, False), (410, False),
    (500, False), (None, False),
])
def test_health_success_is_2xx(rows, code, success):
    webhook = rows.webhook()
    rows.delivery(webhook, "succeeded" if success else "failed",
                  attempts=[(ago(minutes=1), code)])

    health = rows.health(webhook)

    assert health["successes"] == int(success)
    assert health["failures"] == int(not success)


def test_health_queue_figures(rows):
    webhook = rows.webhook()
    other = rows.webhook()
    rows.delivery(webhook, "pending", created_at=ago(minutes=5))
    rows.delivery(webhook, "delivering", created_at=ago(minutes=30))
    rows.delivery(webhook, "failed", created_at=ago(days=2))
    rows.delivery(webhook, "failed", created_at=ago(hours=1))
    rows.delivery(webhook, "succeeded", created_at=ago(days=3))
    rows.delivery(other, "pending", created_at=ago(days=4))

    health = rows.health(webhook)

    assert health["pending"] == 2
    assert health["oldest_pending_at"] == ago(minutes=30)
    assert health["oldest_pending_age_seconds"] == 1800
    assert health["failed"] == 2
    assert health["attempts"] == 0
    assert health["success_rate"] is None


def test_health_reports_endpoint_columns(rows):
    webhook = rows.webhook(status="disabled", disabled_reason="the receiver answered 410 Gone",
                           failing_since=ago(days=1), last_success_at=ago(days=2))

    health = rows.health(webhook)

    assert health["status"] == "disabled"
    assert health["disabled_reason"] == "the receiver answered 410 Gone"
    assert health["failing_since"] == ago(days=1)
    assert health["last_success_at"] == ago(days=2)
    assert health["webhook_id"] == webhook.id


def test_health_window_is_a_parameter(rows):
    webhook = rows.webhook()
    rows.delivery(webhook, "succeeded", attempts=[(ago(hours=2), 200)])

    assert rows.health(webhook, window_seconds=3600)["attempts"] == 0
    assert rows.health(webhook, window_seconds=3 * 3600)["attempts"] == 1


# The operators' queue ---------------------------------------------------------


def test_queue_stats_empty(rows):
    assert rows.queue() == {
        "pending": 0, "due": 0, "delivering": 0, "held": 0, "failed": 0,
        "oldest_pending_at": None, "oldest_pending_age_seconds": None,
        "endpoints": {"active": 0, "paused": 0, "disabled": 0},
    }


def test_queue_stats_totals(rows):
    first, second = rows.webhook(), rows.webhook()
    paused, disabled = rows.webhook("paused"), rows.webhook("disabled")
    deleted = rows.webhook("deleted")
    rows.delivery(first, "pending", created_at=ago(minutes=20), next_retry_at=ago(minutes=1))
    rows.delivery(first, "pending", created_at=ago(minutes=2), next_retry_at=None)
    rows.delivery(second, "pending", created_at=ago(minutes=1),
                  next_retry_at=NOW + dt.timedelta(minutes=10))
    rows.delivery(second, "delivering", created_at=ago(minutes=3))
    rows.delivery(first, "failed", created_at=ago(days=1))
    rows.delivery(first, "succeeded", created_at=ago(days=1))
    rows.delivery(paused, "pending", created_at=ago(days=3))
    rows.delivery(disabled, "pending", created_at=ago(days=3))
    rows.delivery(disabled, "failed", created_at=ago(days=3))
    rows.delivery(deleted, "pending", created_at=ago(days=9))
    rows.delivery(deleted, "failed", created_at=ago(days=9))

    stats = rows.queue()

    assert stats["pending"] == 3
    # Waiting for its retry, the third pending delivery is not due yet.
    assert stats["due"] == 2
    assert stats["delivering"] == 1
    assert stats["held"] == 2
    assert stats["failed"] == 2
    # Held deliveries of paused and disabled endpoints do not make the backlog older.
    assert stats["oldest_pending_at"] == ago(minutes=20)
    assert stats["oldest_pending_age_seconds"] == 1200
    assert stats["endpoints"] == {"active": 2, "paused": 1, "disabled": 1}


def test_queue_oldest_includes_in_flight(rows):
    webhook = rows.webhook()
    rows.delivery(webhook, "delivering", created_at=ago(hours=1))
    rows.delivery(webhook, "pending", created_at=ago(minutes=1))

    stats = rows.queue()

    assert stats["oldest_pending_age_seconds"] == 3600


def test_queue_age_never_negative(rows):
    webhook = rows.webhook()
    rows.delivery(webhook, "pending", created_at=NOW + dt.timedelta(seconds=30))

    assert rows.queue()["oldest_pending_age_seconds"] == 0
