"""Delivery statistics: one endpoint's health for its partner, queue totals for operators.

Both functions take a SQLAlchemy ``Session`` or ``Connection`` and only read,
so an operator's command can run them in a read-only transaction.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from fkod.core.db import utcnow
from fkod.core.webhooks.models import Webhook, WebhookAttempt, WebhookEvent

HEALTH_WINDOW_SECONDS = 86400
# Deliveries that have not finished: waiting for an attempt, or in one.
OPEN_STATUSES = ("pending", "delivering")


def _age_seconds(oldest: dt.datetime | None, now: dt.datetime) -> int | None:
    if oldest is None:
        return None
    return max(int((now - oldest).total_seconds()), 0)


def _by_status(connection, statement) -> dict[str, tuple[int, dt.datetime | None]]:
    """Run a ``status, count, min(created_at)`` query grouped by status; return it as a dict."""
    return {status: (count, oldest) for status, count, oldest in connection.execute(statement)}


def _oldest(*values: dt.datetime | None) -> dt.datetime | None:
    present = [value for value in values if value is not None]
    return min(present) if present else None


def endpoint_health(connection, webhook: Webhook, *, now: dt.datetime | None = None,
                    window_seconds: int = HEALTH_WINDOW_SECONDS) -> dict:
    """Summarize one endpoint: its state, the attempts of the last ``window_seconds``, its queue.

    An attempt counts as a success when the receiver answered 2xx, as the
    delivery worker judges it. ``pending`` counts deliveries pending or being
    delivered, and ``failed`` those that spent every retry (dead letters).
    """
    now = now or utcnow()
    since = now - dt.timedelta(seconds=window_seconds)
    succeeded = sa.and_(WebhookAttempt.response_code >= 200, WebhookAttempt.response_code < 300)
    attempts, successes = connection.execute(
        sa.select(sa.func.count(),
                  sa.func.coalesce(sa.func.sum(sa.case((succeeded, 1), else_=0)), 0))
        .select_from(WebhookAttempt)
        .join(WebhookEvent, WebhookEvent.id == WebhookAttempt.delivery_id)
        .where(WebhookEvent.webhook_id == webhook.id, WebhookAttempt.started_at >= since)
    ).one()

    queue = _by_status(connection, (
        sa.select(WebhookEvent.status, sa.func.count(), sa.func.min(WebhookEvent.created_at))
        .where(WebhookEvent.webhook_id == webhook.id,
               WebhookEvent.status.in_((*OPEN_STATUSES, "failed")))
        .group_by(WebhookEvent.status)
    ))
    pending = sum(queue.get(status, (0, None))[0] for status in OPEN_STATUSES)
    oldest_pending = _oldest(*(queue.get(status, (0, None))[1] for status in OPEN_STATUSES))

    return {
        "webhook_id": webhook.id,
        "status": webhook.status,
        "disabled_reason": webhook.disabled_reason,
        "failing_since": webhook.failing_since,
        "last_success_at": webhook.last_success_at,
        "window_seconds": window_seconds,
        "attempts": attempts,
        "successes": int(successes),
        "failures": attempts - int(successes),
        "success_rate": round(int(successes) / attempts, 4) if attempts else None,
        "pending": pending,
        "oldest_pending_at": oldest_pending,
        "oldest_pending_age_seconds": _age_seconds(oldest_pending, now),
        "failed": queue.get("failed", (0, None))[0],
    }


def queue_stats(connection, *, now: dt.datetime | None = None) -> dict:
    """Total the delivery queue over every endpoint that is not deleted, for operators.

    ``pending``, ``due``, ``delivering`` and the oldest pending delivery cover
    active endpoints, the ones the worker sends to, so their figures measure
    the worker's backlog. ``held`` counts the pending deliveries of paused and
    disabled endpoints, which wait until the endpoint is active again.
    ``failed`` counts dead letters on every endpoint that is not deleted.
    """
    now = now or utcnow()
    active = _by_status(connection, (
        sa.select(WebhookEvent.status, sa.func.count(), sa.func.min(WebhookEvent.created_at))
        .join(Webhook, Webhook.id == WebhookEvent.webhook_id)
        .where(Webhook.status == "active", WebhookEvent.status.in_(OPEN_STATUSES))
        .group_by(WebhookEvent.status)
    ))
    due = connection.execute(
        sa.select(sa.func.count()).select_from(WebhookEvent)
        .join(Webhook, Webhook.id == WebhookEvent.webhook_id)
        .where(Webhook.status == "active", WebhookEvent.status == "pending",
               sa.or_(WebhookEvent.next_retry_at.is_(None), WebhookEvent.next_retry_at <= now))
    ).scalar_one()
    held = connection.execute(
        sa.select(sa.func.count()).select_from(WebhookEvent)
        .join(Webhook, Webhook.id == WebhookEvent.webhook_id)
        .where(Webhook.status.in_(("paused", "disabled")), WebhookEvent.status == "pending")
    ).scalar_one()
    failed = connection.execute(
        sa.select(sa.func.count()).select_from(WebhookEvent)
        .join(Webhook, Webhook.id == WebhookEvent.webhook_id)
        .where(Webhook.status != "deleted", WebhookEvent.status == "failed")
    ).scalar_one()
    endpoints = dict(connection.execute(
        sa.select(Webhook.status, sa.func.count())
        .where(Webhook.status != "deleted")
        .group_by(Webhook.status)
    ).all())

    oldest_pending = _oldest(*(active.get(status, (0, None))[1] for status in OPEN_STATUSES))
    return {
        "pending": active.get("pending", (0, None))[0],
        "due": due,
        "delivering": active.get("delivering", (0, None))[0],
        "held": held,
        "failed": failed,
        "oldest_pending_at": oldest_pending,
        "oldest_pending_age_seconds": _age_seconds(oldest_pending, now),
        "endpoints": {status: endpoints.get(status, 0)
                      for status in ("active", "paused", "disabled")},
    }
