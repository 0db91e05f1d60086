"""Hourly roll-ups: ``api_usage`` rows aggregated into ``api_usage_hourly``.

:func:`rollup_usage` runs as a periodic job in the worker, under the leader
lock. Each run rolls up every complete hour that is not rolled up yet. Hour H
counts as complete once ``delay`` has passed after its end, so rows that the
recorders still buffer or that wait in the Redis stream can arrive first. The
job state ``usage_rollup`` in ``job_states`` stores the progress:

- ``rolled_until``: every hour before it is rolled up, and no later hour is;
- ``purged_before``: the retention job may delete raw rows before it (see
  ``retention.py``), so hours before it are never rolled up again;
- ``scan_from_id`` and ``previous_max_id``: ``api_usage`` ids that find rows
  stored after their hour was rolled up.

Rows are grouped per hour, API key or OAuth application, partner, mode,
endpoint, method and status. Calls with an OAuth access token have no key, so
their roll-ups carry ``oauth_client_id`` instead. The user of a call is kept
in the raw rows only.

Rolling up hours [start, end) deletes their ``api_usage_hourly`` rows and
inserts fresh aggregates of the raw rows, in one transaction. Running it again
for the same hours gives the same rows and never counts a call twice.

Late rows, those stored after their hour was rolled up, are counted in two
ways. Each run rolls up the last ``reroll_hours`` rolled-up hours again, which
covers rows delayed by buffering, retries and short outages. In addition, each
run looks for rows of older hours with an id above ``scan_from_id``, the
largest id seen two runs before, and rolls those hours up again. So rows that
arrive days late, after a long Redis outage for example, are counted too. A
row whose insert committed while the last run was reading can have an id below
that run's largest id, which is why the scan starts two runs back. The scan
misses such a row only if its transaction stayed open for a whole run interval.

NOTE: A row that arrives after the retention job has passed its hour (more
than ``fkod.metering.raw_retention_days`` late) is never counted, and the next
purge deletes it.

Concurrent runs (a leader lock that expired during a long catch-up) are safe:
each transaction locks the job state row first (SELECT ... FOR UPDATE on
PostgreSQL, the database write lock on SQLite), so the runs take turns.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Iterable

import sqlalchemy as sa

from fkod.core.db import utcnow
from fkod.core.metering.histogram import BUCKET_BOUNDS_MS, BUCKET_KEYS
from fkod.core.metering.models import ApiUsage, ApiUsageHourly, JobState

log = logging.getLogger(__name__)

__all__ = [
    "ROLLUP_JOB",
    "RollupResult",
    "RollupState",
    "ensure_rollup_state",
    "floor_hour",
    "hour_bucket",
    "latency_bucket_columns",
    "lock_rollup_state",
    "parse_hour",
    "read_rolled_until",
    "rollup_hours",
    "rollup_usage",
    "save_rollup_state",
]

ROLLUP_JOB = "usage_rollup"

HOUR = dt.timedelta(hours=1)
# Hours rolled up per transaction while catching up, so that one transaction
# stays short and a failed run keeps the progress of the chunks before it.
CATCH_UP_CHUNK = dt.timedelta(hours=24)

_usage = ApiUsage.__table__
_hourly = ApiUsageHourly.__table__
_job_states = JobState.__table__


def floor_hour(moment: dt.datetime) -> dt.datetime:
    """Return the start of the hour that contains ``moment``."""
    return moment.replace(minute=0, second=0, microsecond=0)


def hour_bucket(column, dialect_name: str):
    """Return a SQL expression for the start of the hour of the TIMESTAMP ``column``.

    PostgreSQL returns a timestamp. SQLite, which stores timestamps as text,
    returns text such as ``2027-01-15 08:00:00``, which :func:`parse_hour`
    reads. The unit and format are literals, not bound parameters, because
    PostgreSQL accepts a GROUP BY expression only when it matches the SELECT
    expression with the same parameters.
    """
    if dialect_name == "postgresql":
        return sa.func.date_trunc(sa.literal_column("'hour'"), column)
    if dialect_name == "sqlite":
        return sa.func.strftime(sa.literal_column("'%Y-%m-%d %H:00:00'"), column)
    raise NotImplementedError(f"no hour truncation for the {dialect_name} dialect")


def parse_hour(value: dt.datetime | str) -> dt.datetime:
    """Return the value of an :func:`hour_bucket` expression as a naive datetime."""
    if isinstance(value, str):
        return dt.datetime.fromisoformat(value)
    return value.replace(tzinfo=None)


def latency_bucket_columns(response_time) -> list:
    """Return one ``SUM`` per histogram bucket of ``response_time``, in :data:`BUCKET_KEYS` order.

    A NULL response time falls in no bucket.
    """
    columns = []
    lower = None
    for key, upper in zip(BUCKET_KEYS, (*BUCKET_BOUNDS_MS, None), strict=True):
        conditions = []
        if lower is not None:
            conditions.append(response_time > lower)
        if upper is not None:
            conditions.append(response_time <= upper)
        if not conditions:
            conditions.append(response_time.is_not(None))
        columns.append(sa.func.sum(sa.case((sa.and_(*conditions), 1), else_=0)).label(f"b_{key}"))
        lower = upper
    return columns


# Job state ------------------------------------------------------------------


def _parse_time(value: str | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromisoformat(value)


def _format_time(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


@dataclasses.dataclass(frozen=True)
class RollupState:
    """Progress of the roll-up job, stored as the JSON cursor of its ``job_states`` row."""

    rolled_until: dt.datetime | None = None
    purged_before: dt.datetime | None = None
    scan_from_id: int = 0
    previous_max_id: int = 0

    @classmethod
    def from_cursor(cls, cursor: dict | None) -> RollupState:
        cursor = cursor or {}
        return cls(
            rolled_until=_parse_time(cursor.get("rolled_until")),
            purged_before=_parse_time(cursor.get("purged_before")),
            scan_from_id=int(cursor.get("scan_from_id", 0)),
            previous_max_id=int(cursor.get("previous_max_id", 0)),
        )

    def to_cursor(self) -> dict:
        return {
            "rolled_until": _format_time(self.rolled_until),
            "purged_before": _format_time(self.purged_before),
            "scan_from_id": self.scan_from_id,
            "previous_max_id": self.previous_max_id,
        }


def ensure_rollup_state(engine: sa.Engine) -> None:
    """Create the roll-up job state row when it is missing."""
    with engine.connect() as connection:
        exists = connection.scalar(
            sa.select(_job_states.c.name).where(_job_states.c.name == ROLLUP_JOB))
    if exists is not None:
        return
    try:
        with engine.begin() as connection:
            connection.execute(_job_states.insert().values(name=ROLLUP_JOB, cursor={}))
    except sa.exc.IntegrityError:
        # Another worker inserted the row first, which is fine.
        pass


def lock_rollup_state(connection: sa.Connection) -> RollupState:
    """Lock the roll-up job state row until the transaction ends, and return the state.

    The row must exist. SQLite ignores FOR UPDATE, but its transactions
    already hold the database write lock from BEGIN IMMEDIATE.
    """
    cursor = connection.execute(
        sa.select(_job_states.c.cursor).where(_job_states.c.name == ROLLUP_JOB)
        .with_for_update()
    ).scalar_one()
    return RollupState.from_cursor(cursor)


def save_rollup_state(connection: sa.Connection, state: RollupState) -> None:
    """Write ``state`` to the locked job state row."""
    connection.execute(
        sa.update(_job_states).where(_job_states.c.name == ROLLUP_JOB)
        .values(cursor=state.to_cursor(), updated_at=utcnow())
    )


def read_rolled_until(connection) -> dt.datetime | None:
    """Return the end of the rolled-up hours, or None before the first roll-up.

    ``connection`` is a Connection or a Session. Reads without locking.
    """
    cursor = connection.execute(
        sa.select(_job_states.c.cursor).where(_job_states.c.name == ROLLUP_JOB)
    ).scalar_one_or_none()
    return RollupState.from_cursor(cursor).rolled_until


# Aggregation ------------------------------------------------------------------


_GROUP_COLUMNS = ("api_key_id", "oauth_client_id", "partner_id", "livemode", "endpoint",
                  "method", "status_code")
_SUM_COLUMNS = ("request_count", "total_response_time_ms", "request_bytes", "response_bytes")


def _aggregate_raw(connection: sa.Connection, start: dt.datetime, end: dt.datetime):
    hour = hour_bucket(_usage.c.created_at, connection.dialect.name).label("hour")
    groups = [_usage.c[name] for name in _GROUP_COLUMNS]
    query = (
        sa.select(
            hour,
            *groups,
            sa.func.count().label("request_count"),
            sa.func.coalesce(sa.func.sum(_usage.c.response_time), 0)
            .label("total_response_time_ms"),
            sa.func.coalesce(sa.func.max(_usage.c.response_time), 0)
            .label("max_response_time_ms"),
            sa.func.coalesce(sa.func.sum(_usage.c.request_size), 0).label("request_bytes"),
            sa.func.coalesce(sa.func.sum(_usage.c.response_size), 0).label("response_bytes"),
            *latency_bucket_columns(_usage.c.response_time),
        )
        .where(_usage.c.created_at >= start, _usage.c.created_at < end)
        .group_by(hour, *groups)
    )
    return connection.execute(query).mappings()


def _hourly_rows(aggregates: Iterable) -> list[dict]:
    """Turn aggregate rows into ``api_usage_hourly`` rows, one per unique-constraint key.

    A key has one partner and one mode, so each key id normally gives one
    group per hour, endpoint, method and status. Should a key's rows disagree
    on partner or mode, their groups are merged under the first partner and
    mode seen, because the unique constraint has neither column.
    """
    merged: dict[tuple, dict] = {}
    for aggregate in aggregates:
        hour = parse_hour(aggregate["hour"])
        if aggregate["api_key_id"] is not None:
            unique_key = (hour, aggregate["api_key_id"], aggregate["endpoint"],
                          aggregate["method"], aggregate["status_code"])
        else:
            # NULL key ids never collide in the unique constraint, so calls
            # without a key (OAuth calls among them) keep one row per
            # application, partner and mode.
            unique_key = (hour, None, aggregate["oauth_client_id"], aggregate["partner_id"],
                          aggregate["livemode"], aggregate["endpoint"], aggregate["method"],
                          aggregate["status_code"])
        histogram = {key: int(aggregate[f"b_{key}"]) for key in BUCKET_KEYS
                     if aggregate[f"b_{key}"]}
        row = merged.get(unique_key)
        if row is None:
            merged[unique_key] = {
                "hour": hour,
                **{name: aggregate[name] for name in _GROUP_COLUMNS},
                **{name: int(aggregate[name]) for name in _SUM_COLUMNS},
                "max_response_time_ms": int(aggregate["max_response_time_ms"]),
                "latency_histogram": histogram,
            }
            continue
        for name in _SUM_COLUMNS:
            row[name] += int(aggregate[name])
        row["max_response_time_ms"] = max(row["max_response_time_ms"],
                                          int(aggregate["max_response_time_ms"]))
        for key, count in histogram.items():
            row["latency_histogram"][key] = row["latency_histogram"].get(key, 0) + count
    return list(merged.values())


def rollup_hours(connection: sa.Connection, start: dt.datetime, end: dt.datetime) -> int:
    """Replace the ``api_usage_hourly`` rows of hours [start, end) with fresh aggregates.

    Runs in the caller's transaction. ``start`` and ``end`` must be whole
    hours. Returns the number of rows inserted.
    """
    if start != floor_hour(start) or end != floor_hour(end):
        raise ValueError(f"start and end must be whole hours, got {start} and {end}")
    connection.execute(sa.delete(_hourly).where(_hourly.c.hour >= start, _hourly.c.hour < end))
    rows = _hourly_rows(_aggregate_raw(connection, start, end))
    if rows:
        connection.execute(_hourly.insert(), rows)
    return len(rows)


# The job ----------------------------------------------------------------------


@dataclasses.dataclass
class RollupResult:
    """Counts of the work done by one run of :func:`rollup_usage`."""

    # New hours rolled up for the first time.
    new_hours: int = 0
    # Hours rolled up again: the re-roll window and hours with late rows.
    rerolled_hours: int = 0
    # api_usage_hourly rows inserted, over all hours.
    rows_written: int = 0
    rolled_until: dt.datetime | None = None


def _max_usage_id(connection: sa.Connection) -> int:
    return int(connection.scalar(sa.select(sa.func.max(_usage.c.id))) or 0)


def _initial_state(connection: sa.Connection, state: RollupState,
                   complete_until: dt.datetime) -> RollupState:
    oldest_query = sa.select(sa.func.min(_usage.c.created_at))
    if state.purged_before is not None:
        oldest_query = oldest_query.where(_usage.c.created_at >= state.purged_before)
    oldest = connection.scalar(oldest_query)
    if isinstance(oldest, str):
        oldest = dt.datetime.fromisoformat(oldest)
    rolled_until = complete_until if oldest is None else min(floor_hour(oldest), complete_until)
    max_id = _max_usage_id(connection)
    # Every row stored so far falls in an hour that is still to come, so there
    # is nothing late to look for below max_id.
    return dataclasses.replace(state, rolled_until=rolled_until, scan_from_id=max_id,
                               previous_max_id=max_id)


def _late_hours(connection: sa.Connection, state: RollupState,
                before: dt.datetime) -> list[dt.datetime]:
    """Return the hours before ``before`` that received rows with ids above ``scan_from_id``."""
    hour = hour_bucket(_usage.c.created_at, connection.dialect.name)
    query = (
        sa.select(hour).distinct()
        .where(_usage.c.id > state.scan_from_id, _usage.c.created_at < before)
    )
    if state.purged_before is not None:
        query = query.where(_usage.c.created_at >= state.purged_before)
    return sorted(parse_hour(value) for value in connection.scalars(query))


def _contiguous_ranges(hours: list[dt.datetime]) -> list[tuple[dt.datetime, dt.datetime]]:
    ranges: list[tuple[dt.datetime, dt.datetime]] = []
    for hour in hours:
        if ranges and ranges[-1][1] == hour:
            ranges[-1] = (ranges[-1][0], hour + HOUR)
        else:
            ranges.append((hour, hour + HOUR))
    return ranges


def _reroll(connection: sa.Connection, state: RollupState, reroll_hours: int,
            result: RollupResult) -> RollupState:
    max_id = _max_usage_id(connection)
    window_start = state.rolled_until - reroll_hours * HOUR
    if state.purged_before is not None:
        window_start = max(window_start, state.purged_before)
    window_start = min(window_start, state.rolled_until)

    late = _late_hours(connection, state, window_start)
    ranges = _contiguous_ranges(late)
    if window_start < state.rolled_until:
        ranges.append((window_start, state.rolled_until))
    for start, end in ranges:
        result.rows_written += rollup_hours(connection, start, end)
        result.rerolled_hours += (end - start) // HOUR
    if late:
        log.info("Rolled up %d hours again because rows arrived after their roll-up "
                 "(oldest %s)", len(late), late[0].isoformat())
    return dataclasses.replace(state, scan_from_id=state.previous_max_id, previous_max_id=max_id)


def rollup_usage(engine: sa.Engine, *, now: dt.datetime | None = None,
                 delay: dt.timedelta = dt.timedelta(minutes=5),
                 reroll_hours: int = 3) -> RollupResult:
    """Roll up every complete hour not rolled up yet, and re-roll recent and late hours.

    ``now`` is a naive UTC datetime (the current time when None). An hour is
    complete once ``delay`` has passed after its end. ``reroll_hours`` is how
    many of the last rolled-up hours each run rolls up again. The first run
    starts at the hour of the oldest raw row that has not been purged.
    """
    if reroll_hours < 0:
        raise ValueError(f"reroll_hours must be 0 or more, got {reroll_hours!r}")
    if delay < dt.timedelta(0):
        raise ValueError(f"delay must not be negative, got {delay!r}")
    now = utcnow() if now is None else now
    complete_until = floor_hour(now - delay)
    result = RollupResult()

    ensure_rollup_state(engine)
    with engine.begin() as connection:
        state = lock_rollup_state(connection)
        if state.rolled_until is None:
            state = _initial_state(connection, state, complete_until)
        else:
            state = _reroll(connection, state, reroll_hours, result)
        save_rollup_state(connection, state)

    while True:
        with engine.begin() as connection:
            state = lock_rollup_state(connection)
            start = state.rolled_until
            if start >= complete_until:
                break
            end = min(start + CATCH_UP_CHUNK, complete_until)
            result.rows_written += rollup_hours(connection, start, end)
            result.new_hours += (end - start) // HOUR
            save_rollup_state(connection, dataclasses.replace(state, rolled_until=end))

    result.rolled_until = state.rolled_until
    if result.new_hours:
        log.info("Rolled up %d new hours of API usage; rolled up until %s",
                 result.new_hours, result.rolled_until.isoformat())
    return result
