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

import collections
import dataclasses
import datetime as dt
import functools
import logging
import math
import random
import threading
import time

import sqlalchemy as sa
from sqlalchemy import orm

from fkod.core import jsonutil, metrics
from fkod.core.auth.models import Partner
from fkod.core.db import is_sqlite, run_in_transaction, utcnow
from fkod.core.webhooks import operational
from fkod.core.webhooks.http import post_webhook
from fkod.core.webhooks.models import Event, Webhook, WebhookAttempt, WebhookEvent
from fkod.core.webhooks.outbox import DELIVER_ACTOR, publish_event
from fkod.core.webhooks.signing import sign_delivery

log = logging.getLogger(__name__)

SWEEP_ACTOR = "sweep_webhooks"
MAX_STORED_RESPONSE_CHARS = 4096
# The largest share of a later retry's delay that jitter removes.
JITTER = 0.2
# A message for an endpoint with no free slot comes back after this many ms.
BUSY_RETRY_MS = (200, 800)
LAST_SUCCESS_RESOLUTION_SECONDS = 60
OPERATIONAL_PREFIX = "webhook."
LOST_ATTEMPT_ERROR = "the worker stopped during the attempt"
# Returned by a claim when the endpoint has its fill of attempts in flight.
ENDPOINT_BUSY = object()
# Signature and framing headers a partner's custom headers can never replace.
RESERVED_HEADERS = frozenset({
    "content-type", "content-length", "host", "user-agent", "x-fkod-signature",
    "webhook-id", "webhook-timestamp", "webhook-signature", "transfer-encoding", "connection",
})


def backoff_seconds(attempts: int, retry_delay_seconds: int, max_backoff_seconds: int,
                    *, rng: random.Random | None = None) -> int:
    """Delay before the next attempt after ``attempts`` failed ones.

    The first retry waits exactly ``retry_delay_seconds``. Each later one waits
    twice as long as the one before, less a random part of up to a fifth when
    ``rng`` is given, so deliveries that failed together spread out. The result
    is capped at ``max_backoff_seconds``; the exponent is bounded first, so any
    attempt count (47, 1024, 5000) gives the cap instead of an overflow.
    """
    if retry_delay_seconds <= 0:
        return 0
    exponent = min(max(attempts - 1, 0), 40)
    delay: float = retry_delay_seconds * (2 ** exponent)
    if exponent and rng is not None:
        # Even the lowest draw, 0.8 of the doubled delay, exceeds the previous
        # delay, so delays never shrink.
        delay *= 1 - JITTER * rng.random()
    return min(math.ceil(delay), max_backoff_seconds)


def previous_secret_active(endpoint, now: dt.datetime) -> bool:
    """Return True while the secret replaced by the last rotation still signs deliveries."""
    return (endpoint.previous_secret_key is not None
            and endpoint.previous_secret_expires_at is not None
            and endpoint.previous_secret_expires_at > now)


def signing_secret_tokens(endpoint, now: dt.datetime) -> list[str]:
    """Return the encrypted secrets that sign a delivery to ``endpoint`` now.

    During a rotation's overlap the old secret signs first, then the new one.
    ``endpoint`` is a Webhook or a row with the same secret columns.
    """
    tokens = [endpoint.secret_key]
    if previous_secret_active(endpoint, now):
        tokens.insert(0, endpoint.previous_secret_key)
    return tokens


@dataclasses.dataclass(frozen=True)
class ClaimedDelivery:
    delivery_id: int
    webhook_id: int
    partner_id: int
    livemode: bool
    failing_since: dt.datetime | None
    last_success_at: dt.datetime | None
    attempt: int
    attempt_total: int
    url: str
    custom_headers: dict
    secret_tokens: tuple[str, ...]
    event_public_id: str
    event_type: str
    payload: dict
    retry_count: int
    retry_delay: int


def _in_flight_count():
    """Return a subquery counting the live claims of the outer delivery's endpoint."""
    # A table alias, not orm.aliased: this runs at import, before every
    # mapper it would configure is loaded.
    other = WebhookEvent.__table__.alias("in_flight")
    return (
        sa.select(sa.func.count()).select_from(other)
        .where(other.c.webhook_id == WebhookEvent.webhook_id,
               other.c.status == "delivering",
               other.c.locked_until > sa.bindparam("now"))
        .scalar_subquery()
    )


def _sendable_endpoint():
    """Return the condition that the outer delivery's endpoint and partner take deliveries."""
    return sa.exists().where(
        Webhook.id == WebhookEvent.webhook_id,
        Webhook.status == "active",
        Partner.id == Webhook.partner_id,
        Partner.status != "suspended",
        Partner.deleted_at.is_(None),
    )


# The statements of one attempt are built once: building and keying a
# statement costs more CPU than running it.
def _endpoint_value(column):
    """Return a subquery reading ``column`` of the outer delivery's endpoint, under its name."""
    return (sa.select(column).where(Webhook.id == WebhookEvent.webhook_id)
            .scalar_subquery().label(column.key))


# The delivery is pending, its retry time has come, and its endpoint and
# partner take deliveries.
_DUE = (
    WebhookEvent.id == sa.bindparam("delivery_id"),
    WebhookEvent.status == "pending",
    sa.or_(WebhookEvent.next_retry_at.is_(None),
           WebhookEvent.next_retry_at <= sa.bindparam("now")),
    _sendable_endpoint(),
)

# One statement claims the delivery and reads what the attempt needs. SQLite
# lets RETURNING name only the updated table, so the endpoint's columns come
# from subqueries, one per column, each a primary-key lookup.
CLAIM = (
    sa.update(WebhookEvent)
    .where(
        *_DUE,
        _in_flight_count() < sa.bindparam("max_concurrency"),
    )
    .values(
        status="delivering",
        attempts=WebhookEvent.attempts + 1,
        attempt_total=WebhookEvent.attempt_total + 1,
        last_attempt_at=sa.bindparam("now"),
        locked_until=sa.bindparam("claim_until"),
    )
    .returning(
        WebhookEvent.webhook_id, WebhookEvent.attempts, WebhookEvent.attempt_total,
        WebhookEvent.event_type, WebhookEvent.event_data,
        *(_endpoint_value(column) for column in (
            Webhook.partner_id, Webhook.livemode, Webhook.url, Webhook.headers,
            Webhook.secret_key, Webhook.previous_secret_key,
            Webhook.previous_secret_expires_at, Webhook.retry_count, Webhook.retry_delay,
            Webhook.failing_since, Webhook.last_success_at)),
        sa.select(Event.public_id).where(Event.id == WebhookEvent.event_id)
        .scalar_subquery().label("event_public_id"),
    )
)
# Runs only when a claim fails: finds the delivery when it is due but its endpoint is full.
WAITING_FOR_SLOT = (
    sa.select(WebhookEvent.id)
    .where(
        *_DUE,
        _in_flight_count() >= sa.bindparam("max_concurrency"),
    )
)
# Gives back a claim this process cannot start because the endpoint is full.
UNCLAIM = (
    sa.update(WebhookEvent)
    .where(WebhookEvent.id == sa.bindparam("delivery_id"),
           WebhookEvent.status == "delivering",
           WebhookEvent.attempt_total == sa.bindparam("claimed_total"))
    .values(status="pending", attempts=WebhookEvent.attempts - 1,
            attempt_total=WebhookEvent.attempt_total - 1, locked_until=None)
)
INSERT_ATTEMPT = sa.insert(WebhookAttempt).values(
    delivery_id=sa.bindparam("att_delivery"), attempt=sa.bindparam("att_number"),
    started_at=sa.bindparam("att_started"), signed_at=sa.bindparam("att_signed"),
    duration_ms=sa.bindparam("att_duration"), response_code=sa.bindparam("att_code"),
    response_body=sa.bindparam("att_body"), error=sa.bindparam("att_error"),
)
_OWN_CLAIM = (
    sa.update(WebhookEvent)
    .where(WebhookEvent.id == sa.bindparam("delivery_id"),
           WebhookEvent.status == "delivering",
           WebhookEvent.attempt_total == sa.bindparam("claimed_total"))
    .values(response_code=sa.bindparam("set_code"), response_body=sa.bindparam("set_body"),
            last_error=sa.bindparam("set_error"), locked_until=None)
)
# Ends the delivery: succeeded, or failed with every attempt spent.
FINISH = _OWN_CLAIM.values(status=sa.bindparam("set_status"),
                           completed_at=sa.bindparam("set_completed"), next_retry_at=None)
# Puts the delivery back to pending until its next attempt.
RESCHEDULE = _OWN_CLAIM.values(status="pending", next_retry_at=sa.bindparam("set_next"))
# On PostgreSQL one statement stores the attempt and the delivery's outcome,
# so no reader sees the one without the other although each statement
# commits on its own. SQLite runs the two statements in one transaction.
_ATTEMPT_ROW = INSERT_ATTEMPT.cte("attempt_row")
FINISH_WITH_ATTEMPT = FINISH.add_cte(_ATTEMPT_ROW)
RESCHEDULE_WITH_ATTEMPT = RESCHEDULE.add_cte(_ATTEMPT_ROW)

class DeliveryWorker:
    """Runs delivery attempts and the sweeper against one database.

    At most ``max_concurrency_per_endpoint`` attempts to one endpoint run at
    once in one process: a counter per endpoint, taken after the claim, keeps
    it exact. Across processes the claim itself counts the endpoint's live
    claims in the database, without locking the endpoint, so claims made in
    several processes at the same instant can exceed the limit briefly.
    """

    def __init__(self, engine: sa.Engine, session_factory, vault, settings: dict, tasks):
        self.engine = engine
        self.session_factory = session_factory
        self.vault = vault
        self.tasks = tasks
        self.allow_loopback = settings["fkod.webhooks.allow_loopback"]
        self.timeout_seconds = settings["fkod.webhooks.timeout_seconds"]
        self.connect_timeout_seconds = settings["fkod.webhooks.connect_timeout_seconds"]
        self.max_response_bytes = settings["fkod.webhooks.max_response_bytes"]
        self.max_backoff_seconds = settings["fkod.webhooks.max_backoff_seconds"]
        self.in_flight_seconds = settings["fkod.webhooks.in_flight_timeout_seconds"]
        self.sweep_grace_seconds = settings["fkod.webhooks.sweep_interval_seconds"]
        self.max_concurrency = settings["fkod.webhooks.max_concurrency_per_endpoint"]
        self.disable_after = dt.timedelta(
            seconds=settings["fkod.webhooks.disable_after_failing_seconds"])
        self.rng = random.Random()
        # On PostgreSQL each statement of an attempt commits on its own: a
        # claim is one statement and so is a plain success's record, and BEGIN
        # and COMMIT would triple their round trips. SQLite keeps BEGIN
        # IMMEDIATE.
        self.autocommit = engine.dialect.name != "sqlite"
        self._in_flight: collections.Counter[int] = collections.Counter()
        self._in_flight_lock = threading.Lock()
        self.decrypt = functools.lru_cache(maxsize=1024)(vault.decrypt)

    # One attempt ---------------------------------------------------------------

    def deliver(self, delivery_id: int) -> None:
        """Attempt one delivery if it is due; unexpected errors are logged, not raised."""
        try:
            # One connection serves the whole attempt. It is idle, outside any
            # transaction, while the receiver is called.
            with self.engine.connect() as connection:
                if self.autocommit:
                    connection = connection.execution_options(isolation_level="AUTOCOMMIT")
                self._deliver(connection, delivery_id)
        except Exception:
            log.error("webhook delivery failed unexpectedly", exc_info=True,
                      extra={"delivery_id": delivery_id})

    def _deliver(self, connection, delivery_id: int) -> None:
        with connection.begin():
            claimed = self._claim(connection, delivery_id)
        if claimed is ENDPOINT_BUSY:
            # The endpoint has its fill of attempts in flight: try again
            # shortly, spread out so waiting messages do not arrive together.
            self.tasks.send(DELIVER_ACTOR, delivery_id,
                            delay_ms=self.rng.randint(*BUSY_RETRY_MS))
            return
        if claimed is None:
            return
        try:
            result, started_at, signed_at = self._attempt(claimed)
            if self._plain_success(claimed, result):
                with connection.begin():
                    retry_in, event_deliveries = self._record(
                        connection, claimed, result, started_at, signed_at)
            else:
                # Failures and recoveries change the endpoint and may publish
                # events, all in one transaction.
                with self.engine.begin() as transaction:
                    retry_in, event_deliveries = self._record(
                        transaction, claimed, result, started_at, signed_at)
        finally:
            self._leave_slot(claimed.webhook_id)
        for event_delivery_id in event_deliveries:
            self.tasks.send(DELIVER_ACTOR, event_delivery_id)
        if retry_in is not None:
            self.tasks.send(DELIVER_ACTOR, delivery_id, delay_ms=retry_in * 1000)

    def _plain_success(self, claimed: ClaimedDelivery, result) -> bool:
        """Return True when recording ``result`` writes only the attempt and the delivery."""
        if result.status_code is None or not 200 <= result.status_code < 300:
            return False
        if claimed.failing_since is not None:
            return False
        stale = utcnow() - dt.timedelta(seconds=LAST_SUCCESS_RESOLUTION_SECONDS)
        return claimed.last_success_at is not None and claimed.last_success_at >= stale

    def _take_slot(self, webhook_id: int) -> bool:
        with self._in_flight_lock:
            if self._in_flight[webhook_id] >= self.max_concurrency:
                return False
            self._in_flight[webhook_id] += 1
            return True

    def _leave_slot(self, webhook_id: int) -> None:
        with self._in_flight_lock:
            self._in_flight[webhook_id] -= 1
            if self._in_flight[webhook_id] <= 0:
                del self._in_flight[webhook_id]

    def _claim(self, connection, delivery_id: int):
        """Mark the delivery in flight and return what the attempt needs.

        Returns None when the delivery is not due: done, in flight elsewhere,
        waiting for a retry, its endpoint is not active, or its partner is
        suspended or deleted. A suspended partner's delivery stays pending, and
        the sweeper sends it once the partner is reactivated. Returns
        ENDPOINT_BUSY when its endpoint already has max_concurrency attempts in
        flight, in the database or in this process. When this process finds
        its own slots full only after claiming, it gives the claim back.
        """
        now = utcnow()
        parameters = {"delivery_id": delivery_id, "now": now,
                      "max_concurrency": self.max_concurrency,
                      "claim_until": now + dt.timedelta(seconds=self.in_flight_seconds)}
        claimed = connection.execute(CLAIM, parameters).one_or_none()
        if claimed is None:
            waiting = connection.execute(WAITING_FOR_SLOT, parameters).first()
            return ENDPOINT_BUSY if waiting is not None else None
        if not self._take_slot(claimed.webhook_id):
            connection.execute(UNCLAIM, {"delivery_id": delivery_id,
                                         "claimed_total": claimed.attempt_total})
            return ENDPOINT_BUSY
        return ClaimedDelivery(
            delivery_id=delivery_id,
            webhook_id=claimed.webhook_id,
            partner_id=claimed.partner_id,
            livemode=claimed.livemode,
            failing_since=claimed.failing_since,
            last_success_at=claimed.last_success_at,
            attempt=claimed.attempts,
            attempt_total=claimed.attempt_total,
            url=claimed.url,
            custom_headers=dict(claimed.headers or {}),
            secret_tokens=tuple(signing_secret_tokens(claimed, now)),
            event_public_id=claimed.event_public_id,
            event_type=claimed.event_type,
            payload=claimed.event_data,
            retry_count=claimed.retry_count,
            retry_delay=claimed.retry_delay,
        )

    def _attempt(self, claimed: ClaimedDelivery):
        body = jsonutil.dumps(claimed.payload)
        secrets = [self.decrypt(token) for token in claimed.secret_tokens]
        headers = {
            name: value for name, value in claimed.custom_headers.items()
            if name.lower() not in RESERVED_HEADERS
        }
        headers["Content-Type"] = "application/json"
        signed_at = int(time.time())
        headers.update(sign_delivery(secrets, message_id=claimed.event_public_id,
                                     timestamp=signed_at, body=body))
        started_at = utcnow()
        result = post_webhook(claimed.url, body, headers, timeout_seconds=self.timeout_seconds,
                              allow_loopback=self.allow_loopback,
                              connect_timeout_seconds=self.connect_timeout_seconds,
                              max_response_bytes=self.max_response_bytes)
        return result, started_at, signed_at

    def _retry_delay(self, claimed: ClaimedDelivery, result) -> int:
        """Seconds until the next attempt: the receiver's Retry-After on 429 and 503, else backoff."""
        if result.status_code in (429, 503) and result.retry_after_seconds is not None:
            return min(math.ceil(result.retry_after_seconds), self.max_backoff_seconds)
        return backoff_seconds(claimed.attempt, claimed.retry_delay, self.max_backoff_seconds,
                               rng=self.rng)

    def _record(self, connection, claimed: ClaimedDelivery, result, started_at,
                signed_at: int) -> tuple[int | None, list[int]]:
        """Store the attempt's outcome and its effect on the endpoint.

        Returns the seconds until a retry (None when none is due) and the ids of
        deliveries of the operational events this outcome caused.
        """
        now = utcnow()
        response_body = (result.body or "")[:MAX_STORED_RESPONSE_CHARS]
        attempt = {
            "att_delivery": claimed.delivery_id, "att_number": claimed.attempt_total,
            "att_started": started_at, "att_signed": signed_at,
            "att_duration": result.duration_ms, "att_code": result.status_code,
            "att_body": response_body, "att_error": (result.error or None) and result.error[:255],
        }
        succeeded = result.status_code is not None and 200 <= result.status_code < 300
        last_error = None if succeeded else (result.error or f"HTTP {result.status_code}")[:255]
        outcome = {
            "delivery_id": claimed.delivery_id, "claimed_total": claimed.attempt_total,
            "set_code": result.status_code, "set_body": response_body, "set_error": last_error,
        }
        retry_in = None
        exhausted = False
        if succeeded:
            statement, with_attempt = FINISH, FINISH_WITH_ATTEMPT
            outcome.update(set_status="succeeded", set_completed=now)
        elif claimed.attempt > claimed.retry_count:
            exhausted = True
            statement, with_attempt = FINISH, FINISH_WITH_ATTEMPT
            outcome.update(set_status="failed", set_completed=now)
        else:
            retry_in = self._retry_delay(claimed, result)
            statement, with_attempt = RESCHEDULE, RESCHEDULE_WITH_ATTEMPT
            outcome.update(set_next=now + dt.timedelta(seconds=retry_in))

        if self.autocommit:
            updated = connection.execute(with_attempt, {**attempt, **outcome})
        else:
            connection.execute(INSERT_ATTEMPT, attempt)
            updated = connection.execute(statement, outcome)
        status = outcome.get("set_status", "pending")
        if updated.rowcount != 1:
            # The sweeper took the claim back after locked_until passed; the
            # attempt row stays as a record of what happened.
            log.warning("delivery claim expired before its result was recorded",
                        extra={"delivery_id": claimed.delivery_id})
            return None, []
        log.info("webhook attempt", extra={
            "delivery_id": claimed.delivery_id, "attempt": claimed.attempt_total,
            "status_code": result.status_code, "error": result.error,
            "outcome": status,
        })
        metrics.count_delivery(status)

        if succeeded:
            events = self._note_success(connection, claimed, now)
        else:
            events = self._note_failure(connection, claimed, result, now)
            if exhausted and not claimed.event_type.startswith(OPERATIONAL_PREFIX):
                # Exhaustion of an operational event's own delivery is not
                # announced, so a failing alert endpoint cannot feed itself.
                events.append((operational.DELIVERY_EXHAUSTED, {
                    "webhook_id": f"whk_{claimed.webhook_id}", "url": claimed.url,
                    "event_id": claimed.event_public_id, "event_type": claimed.event_type,
                    "attempts": claimed.attempt, "last_response_code": result.status_code,
                    "last_error": last_error,
                }))
        if not events:
            return retry_in, []
        delivery_ids = []
        # The outbox writes ORM rows; this session joins the connection's
        # transaction and leaves committing to it.
        with orm.Session(bind=connection) as session:
            for event_type, data in events:
                _event, deliveries = publish_event(
                    session, event_type=event_type, data=data, livemode=claimed.livemode,
                    partner_ids=[claimed.partner_id], request_id=None)
                delivery_ids += [delivery.id for delivery in deliveries]
        return retry_in, delivery_ids

    def _note_success(self, connection, claimed: ClaimedDelivery, now: dt.datetime) -> list:
        if claimed.failing_since is None:
            # last_success_at is written at most once a minute, so a busy
            # endpoint does not rewrite its row on every delivery.
            stale = now - dt.timedelta(seconds=LAST_SUCCESS_RESOLUTION_SECONDS)
            if claimed.last_success_at is None or claimed.last_success_at < stale:
                connection.execute(
                    sa.update(Webhook)
                    .where(Webhook.id == claimed.webhook_id,
                           sa.or_(Webhook.last_success_at.is_(None),
                                  Webhook.last_success_at < stale))
                    .values(last_success_at=now))
            return []
        recovered = connection.execute(
            sa.update(Webhook)
            .where(Webhook.id == claimed.webhook_id, Webhook.failing_since.is_not(None))
            .values(failing_since=None, last_success_at=now))
        if recovered.rowcount != 1:
            return []
        log.info("webhook endpoint recovered", extra={"webhook_id": claimed.webhook_id})
        return [(operational.ENDPOINT_RECOVERED, {
            "webhook_id": f"whk_{claimed.webhook_id}", "url": claimed.url, "status": "active",
            "disabled_reason": None, "failing_since": claimed.failing_since,
            "recovered_at": now,
        })]

    def _note_failure(self, connection, claimed: ClaimedDelivery, result,
                      now: dt.datetime) -> list:
        failing_since = claimed.failing_since or now
        if claimed.failing_since is None:
            connection.execute(
                sa.update(Webhook)
                .where(Webhook.id == claimed.webhook_id, Webhook.failing_since.is_(None))
                .values(failing_since=now))
        if result.status_code == 410:
            reason = "the receiver answered 410 Gone"
        elif failing_since <= now - self.disable_after:
            days = self.disable_after.total_seconds() / 86400
            reason = f"every attempt failed for {days:g} days"
        else:
            return []
        disabled = connection.execute(
            sa.update(Webhook)
            .where(Webhook.id == claimed.webhook_id, Webhook.status == "active")
            .values(status="disabled", disabled_reason=reason, disabled_at=now))
        if disabled.rowcount != 1:
            return []
        log.warning("webhook endpoint disabled",
                    extra={"webhook_id": claimed.webhook_id, "reason": reason})
        return [(operational.ENDPOINT_DISABLED, {
            "webhook_id": f"whk_{claimed.webhook_id}", "url": claimed.url, "status": "disabled",
            "disabled_reason": reason, "failing_since": failing_since,
            "disabled_at": now,
        })]

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
        lost = sa.select(
            WebhookEvent.id, WebhookEvent.attempts, WebhookEvent.event_type,
            WebhookEvent.response_code, Webhook.id.label("webhook_id"), Webhook.retry_count,
            Webhook.url, Webhook.partner_id, Webhook.livemode,
            Event.public_id.label("event_public_id"),
        ).join(Webhook, Webhook.id == WebhookEvent.webhook_id).join(
            Event, Event.id == WebhookEvent.event_id
        ).where(WebhookEvent.status == "delivering", WebhookEvent.locked_until < now)
        if not is_sqlite(session):
            lost = lost.with_for_update(skip_locked=True, of=WebhookEvent)
        for row in session.execute(lost.limit(batch_size)).all():
            spent = row.attempts > row.retry_count
            released = session.execute(
                sa.update(WebhookEvent)
                .where(WebhookEvent.id == row.id, WebhookEvent.status == "delivering")
                .values(status="failed" if spent else "pending", locked_until=None,
                        next_retry_at=None if spent else now,
                        completed_at=now if spent else None,
                        last_error=LOST_ATTEMPT_ERROR)
                .execution_options(synchronize_session=False)
            )
            if spent and released.rowcount == 1:
                self._announce_lost_exhaustion(session, row)

        cutoff = now - dt.timedelta(seconds=grace_seconds)
        return list(session.scalars(
            sa.select(WebhookEvent.id)
            .join(Webhook, Webhook.id == WebhookEvent.webhook_id)
            .join(Partner, Partner.id == Webhook.partner_id)
            .where(WebhookEvent.status == "pending", Webhook.status == "active",
                   Partner.status != "suspended", Partner.deleted_at.is_(None),
                   WebhookEvent.next_retry_at <= cutoff)
            .order_by(WebhookEvent.next_retry_at)
            .limit(batch_size)
        ))

    def _announce_lost_exhaustion(self, session, row) -> None:
        """Publish delivery_exhausted for a delivery whose last attempt's worker stopped."""
        log.warning("webhook delivery failed: the worker stopped during its last attempt",
                    extra={"delivery_id": row.id})
        if row.event_type.startswith(OPERATIONAL_PREFIX):
            return
        publish_event(session, event_type=operational.DELIVERY_EXHAUSTED, data={
            "webhook_id": f"whk_{row.webhook_id}", "url": row.url,
            "event_id": row.event_public_id, "event_type": row.event_type,
            "attempts": row.attempts, "last_response_code": row.response_code,
            "last_error": LOST_ATTEMPT_ERROR,
        }, livemode=row.livemode, partner_ids=[row.partner_id], request_id=None)
