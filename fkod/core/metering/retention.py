"""Retention: delete old raw usage rows, old hourly roll-ups and expired idempotency records.

:func:`purge_usage` runs as a periodic job in the worker, under the leader
lock. Raw ``api_usage`` rows go once they are older than the raw retention and
their hour is rolled up. The job first moves ``purged_before`` in the roll-up
state forward, under the same row lock the roll-up takes, and only then
deletes. From that moment the roll-up never rolls those hours up again, so it
cannot replace their hourly rows with aggregates of a half-deleted hour.

Every delete runs in batches of ``batch_size`` rows, one transaction each, so
that the usage writers (which on SQLite need the same database write lock)
wait for one short transaction at most.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging

import sqlalchemy as sa

from fkod.core.db import utcnow
from fkod.core.idempotency_models import IdempotencyRecord
from fkod.core.metering.models import ApiUsage, ApiUsageHourly
from fkod.core.metering.rollup import (
    ensure_rollup_state,
    floor_hour,
    lock_rollup_state,
    save_rollup_state,
)

log = logging.getLogger(__name__)

__all__ = ["PurgeResult", "delete_in_batches", "purge_usage"]

_usage = ApiUsage.__table__
_hourly = ApiUsageHourly.__table__
_idempotency = IdempotencyRecord.__table__


@dataclasses.dataclass
class PurgeResult:
    """Rows deleted by one run of :func:`purge_usage`, per table."""

    raw_rows: int = 0
    hourly_rows: int = 0
    idempotency_records: int = 0
    # Raw rows before this moment may be deleted; None before the first roll-up.
    purged_before: dt.datetime | None = None


def delete_in_batches(engine: sa.Engine, table: sa.Table, condition,
                      batch_size: int) -> int:
    """Delete the rows of ``table`` matching ``condition``, ``batch_size`` per transaction.

    ``table`` needs an ``id`` primary key. Returns the number of rows deleted.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    batch = sa.select(table.c.id).where(condition).limit(batch_size)
    deleted = 0
    while True:
        with engine.begin() as connection:
            count = connection.execute(sa.delete(table).where(table.c.id.in_(batch))).rowcount
        deleted += count
        if count < batch_size:
            return deleted


def _advance_purge_boundary(engine: sa.Engine, cutoff: dt.datetime) -> dt.datetime | None:
    """Move ``purged_before`` forward to ``cutoff``, but never past ``rolled_until``."""
    ensure_rollup_state(engine)
    with engine.begin() as connection:
        state = lock_rollup_state(connection)
        if state.rolled_until is None:
            return state.purged_before
        boundary = min(cutoff, state.rolled_until)
        if state.purged_before is not None and state.purged_before >= boundary:
            return state.purged_before
        save_rollup_state(connection, dataclasses.replace(state, purged_before=boundary))
        return boundary


def purge_usage(engine: sa.Engine, *, raw_retention: dt.timedelta,
                hourly_retention: dt.timedelta, now: dt.datetime | None = None,
                batch_size: int = 5000) -> PurgeResult:
    """Delete usage data past its retention and idempotency records past ``expires_at``.

    Raw rows older than ``raw_retention`` are deleted when their hour is
    rolled up, counting from the start of the hour. Raw rows of hours that are
    not rolled up stay, whatever their age. Hourly rows whose hour started
    more than ``hourly_retention`` ago are deleted. So are
    ``idempotency_records`` rows whose ``expires_at`` has passed. ``now`` is a
    naive UTC datetime (the current time when None).
    """
    now = utcnow() if now is None else now
    result = PurgeResult()

    boundary = _advance_purge_boundary(engine, floor_hour(now - raw_retention))
    result.purged_before = boundary
    if boundary is not None:
        result.raw_rows = delete_in_batches(engine, _usage, _usage.c.created_at < boundary,
                                            batch_size)
    result.hourly_rows = delete_in_batches(engine, _hourly,
                                           _hourly.c.hour < now - hourly_retention, batch_size)
    result.idempotency_records = delete_in_batches(
        engine, _idempotency, _idempotency.c.expires_at < now, batch_size)

    if result.raw_rows or result.hourly_rows or result.idempotency_records:
        log.info("Purged %d raw usage rows (before %s), %d hourly usage rows and "
                 "%d expired idempotency records", result.raw_rows,
                 boundary.isoformat() if boundary else "none", result.hourly_rows,
                 result.idempotency_records)
    return result
