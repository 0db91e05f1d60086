"""Delivering events: claim, sign, POST, record, retry; and the sweeper.

A delivery moves ``pending`` → ``delivering`` (claimed by one worker with a
conditional update, so two workers never attempt it at once) → ``succeeded``
on a 2xx, back to ``pending`` with ``next_retry_at`` after a failure, or
``failed`` once ``1 + retry_count`` attempts are spent. No database
transaction is open while the receiver is being called.

The sweeper re-enqueues deliveries that are due and returns claims whose
worker died (``locked_until`` passed) to ``pending``, so a crashed worker or a
lost message delays a delivery but never loses it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time

import sqlalchemy as sa

from fkod.core import jsonutil
from fkod.core.db import is_sqlite, run_in_transaction, utcnow
from fkod.core.webhooks.http import post_webhook
from fkod.core.webhooks.models import Webhook, WebhookAttempt, WebhookEvent
from fkod.core.webhooks.outbox import DELIVER_ACTOR
from fkod.core.webhooks.signing import sign_delivery

log = logging.getLogger(__name__)

SWEEP_ACTOR = "sweep_webhooks"
MAX_STORED_RESPONSE_CHARS = 4096
# Signature and framing headers a partner's custom headers can never replace.
RESERVED_HEADERS = frozenset({
    "content-type", "content-length", "host", "user-agent", "x-fkod-signature",
    "webhook-id", "webhook-timestamp", "webhook-signature", "transfer-encoding", "connection",
})


def backoff_seconds(attempts: int, retry_delay_seconds: int, max_backoff_seconds: int) -> int:
    """Delay before the next attempt after ``attempts`` failed ones.

    ``retry_delay_seconds`` doubled for each earlier failure, capped at
    ``max_backoff_seconds``. The exponent is bounded first, so any attempt
    count (47, 1024, 5000) gives the cap instead of an overflow.
    """
    if retry_delay_seconds <= 0:
        return 0
    exponent = min(max(attempts - 1, 0), 40)
    return min(retry_delay_seconds * (2 ** exponent), max_backoff_seconds)


@dataclasses.dataclass(frozen=True)
class ClaimedDelivery:
    delivery_id: int
    attempt: int
    url: str
    custom_headers: dict
    secret_tokens: tuple[str, ...]
    event_public_id: str
    payload: dict
    retry_count: int
    retry_delay: int


class DeliveryWorker:
    """Runs delivery attempts and the sweeper against one database."""

    def __init__(self, session_factory, vault, settings: dict, tasks):
        self.session_factory = session_factory
        self.vault = vault
        self.tasks = tasks
        self.allow_loopback = settings["fkod.webhooks.allow_loopback"]
        self.timeout_seconds = settings["fkod.webhooks.timeout_seconds"]
        self.max_backoff_seconds = settings["fkod.webhooks.max_backoff_seconds"]
        self.in_flight_seconds = settings["fkod.webhooks.in_flight_timeout_seconds"]
        self.sweep_grace_seconds = settings["fkod.webhooks.sweep_interval_seconds"]

    # One attempt ---------------------------------------------------------------

    def deliver(self, delivery_id: int) -> None:
        """Attempt one delivery if it is due; unexpected errors are logged, not raised."""
        try:
            claimed = run_in_transaction(self.session_factory,
                                         lambda session: self._claim(session, delivery_id))
            if claimed is None:
                return
            result, started_at = self._attempt(claimed)
            retry_in = run_in_transaction(
                self.session_factory,
                lambda session: self._record(session, claimed, result, started_at),
            )
            if retry_in is not None:
                self.tasks.send(DELIVER_ACTOR, delivery_id, delay_ms=retry_in * 1000)
        except Exception:
            log.error("webhook delivery failed unexpectedly", exc_info=True,
                      extra={"delivery_id": delivery_id})

    def _claim(self, session, delivery_id: int) -> ClaimedDelivery | None:
        now = utcnow()
        active_webhooks = sa.select(Webhook.id).where(Webhook.status == "active")
        claimed = session.execute(
            sa.update(WebhookEvent)
            .where(
                WebhookEvent.id == delivery_id,
                WebhookEvent.status == "pending",
                sa.or_(WebhookEvent.next_retry_at.is_(None), WebhookEvent.next_retry_at <= now),
                WebhookEvent.webhook_id.in_(active_webhooks),
            )
            .values(
                status="delivering",
                attempts=WebhookEvent.attempts + 1,
                last_attempt_at=now,
                locked_until=now + dt.timedelta(seconds=self.in_flight_seconds),
            )
            .execution_options(synchronize_session=False)
        )
        if claimed.rowcount != 1:
            return None

        delivery = session.get(WebhookEvent, delivery_id)
        webhook = delivery.webhook
        return ClaimedDelivery(
            delivery_id=delivery.id,
            attempt=delivery.attempts,
            url=webhook.url,
            custom_headers=dict(webhook.headers or {}),
            secret_tokens=(webhook.secret_key,),
            event_public_id=delivery.event.public_id,
            payload=delivery.event_data,
            retry_count=webhook.retry_count,
            retry_delay=webhook.retry_delay,
        )

    def _attempt(self, claimed: ClaimedDelivery):
        body = jsonutil.dumps(claimed.payload)
        secrets = [self.vault.decrypt(token) for token in claimed.secret_tokens]
        headers = {
            name: value for name, value in claimed.custom_headers.items()
            if name.lower() not in RESERVED_HEADERS
        }
        headers["Content-Type"] = "application/json"
        headers.update(sign_delivery(secrets, message_id=claimed.event_public_id,
                                     timestamp=int(time.time()), body=body))
        started_at = utcnow()
        result = post_webhook(claimed.url, body, headers, timeout_seconds=self.timeout_seconds,
                              allow_loopback=self.allow_loopback)
        return result, started_at

    def _record(self, session, claimed: ClaimedDelivery, result, started_at) -> int | None:
        """Store the attempt's outcome; return the seconds until a retry, if one is due."""
        now = utcnow()
        response_body = (result.body or "")[:MAX_STORED_RESPONSE_CHARS]
        session.add(WebhookAttempt(
            delivery_id=claimed.delivery_id, attempt=claimed.attempt, started_at=started_at,
            duration_ms=result.duration_ms, response_code=result.status_code,
            response_body=response_body, error=(result.error or None) and result.error[:255],
        ))
        succeeded = result.status_code is not None and 200 <= result.status_code < 300
        values = {
            "response_code": result.status_code,
            "response_body": response_body,
            "last_error": None if succeeded else (result.error or f"HTTP {result.status_code}")[:255],
            "locked_until": None,
        }
        retry_in = None
        if succeeded:
            values.update(status="succeeded", completed_at=now, next_retry_at=None)
        elif claimed.attempt > claimed.retry_count:
            values.update(status="failed", completed_at=now, next_retry_at=None)
        else:
            retry_in = backoff_seconds(claimed.attempt, claimed.retry_delay,
                                       self.max_backoff_seconds)
            values.update(status="pending", next_retry_at=now + dt.timedelta(seconds=retry_in))

        updated = session.execute(
            sa.update(WebhookEvent)
            .where(WebhookEvent.id == claimed.delivery_id,
                   WebhookEvent.status == "delivering",
                   WebhookEvent.attempts == claimed.attempt)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if updated.rowcount != 1:
            # The sweeper took the claim back after locked_until passed; the
            # attempt row stays as a record of what happened.
            log.warning("delivery claim expired before its result was recorded",
                        extra={"delivery_id": claimed.delivery_id})
            return None
        log.info("webhook attempt", extra={
            "delivery_id": claimed.delivery_id, "attempt": claimed.attempt,
            "status_code": result.status_code, "error": result.error,
            "outcome": values["status"],
        })
        return retry_in

    # The sweeper ---------------------------------------------------------------

    def sweep(self, *, grace_seconds: float | None = None, batch_size: int = 500) -> int:
        """Release lost claims and enqueue deliveries that are due; return how many."""
        grace = self.sweep_grace_seconds if grace_seconds is None else grace_seconds
        due_ids = run_in_transaction(
            self.session_factory, lambda session: self._find_due(session, grace, batch_size)
        )
        for delivery_id in due_ids:
            self.tasks.send(DELIVER_ACTOR, delivery_id)
        if due_ids:
            log.info("sweeper enqueued deliveries", extra={"count": len(due_ids)})
        return len(due_ids)

    def _find_due(self, session, grace_seconds: float, batch_size: int) -> list[int]:
        now = utcnow()
        lost = sa.select(WebhookEvent.id, WebhookEvent.attempts, Webhook.retry_count).join(
            Webhook, Webhook.id == WebhookEvent.webhook_id
        ).where(WebhookEvent.status == "delivering", WebhookEvent.locked_until < now)
        if not is_sqlite(session):
            lost = lost.with_for_update(skip_locked=True, of=WebhookEvent)
        for delivery_id, attempts, retry_count in session.execute(lost.limit(batch_size)).all():
            spent = attempts > retry_count
            session.execute(
                sa.update(WebhookEvent)
                .where(WebhookEvent.id == delivery_id, WebhookEvent.status == "delivering")
                .values(status="failed" if spent else "pending", locked_until=None,
                        next_retry_at=None if spent else now,
                        completed_at=now if spent else None,
                        last_error="the worker stopped during the attempt")
                .execution_options(synchronize_session=False)
            )

        cutoff = now - dt.timedelta(seconds=grace_seconds)
        return list(session.scalars(
            sa.select(WebhookEvent.id)
            .join(Webhook, Webhook.id == WebhookEvent.webhook_id)
            .where(WebhookEvent.status == "pending", Webhook.status == "active",
                   WebhookEvent.next_retry_at <= cutoff)
            .order_by(WebhookEvent.next_retry_at)
            .limit(batch_size)
        ))
