"""Usage summaries of one API key or one partner, from hourly roll-ups and recent raw rows.

Whole hours before the roll-up job's ``rolled_until`` come from
``api_usage_hourly``. The hours after it, which the job has not rolled up yet
(normally the current hour and the one before), and any partial hour at the
edges of the period, come from the raw ``api_usage`` rows. Raw rows that
arrive after their hour was rolled up show in summaries only once the next
roll-up run has rolled that hour up again.

Test-mode and live-mode calls are always summarized apart.

Latency percentiles are estimates from the fixed histogram buckets (see
``histogram.py``): each is off by at most the width of the bucket it falls in.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable

import sqlalchemy as sa

from fkod.core.metering.histogram import BUCKET_KEYS, estimate_percentile
from fkod.core.metering.models import ApiUsage, ApiUsageHourly
from fkod.core.metering.rollup import (
    HOUR,
    floor_hour,
    hour_bucket,
    latency_bucket_columns,
    parse_hour,
    read_rolled_until,
)

__all__ = [
    "STATUS_CLASSES",
    "DailyUsage",
    "EndpointUsage",
    "UsageError",
    "UsageSummary",
    "client_usage_summary",
    "errors_query",
    "key_usage_summary",
    "partner_usage_summary",
    "recent_errors",
]

STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx")
# Calls with a status at or above this count as errors.
ERROR_STATUS = 400

_usage = ApiUsage.__table__
_hourly = ApiUsageHourly.__table__

# Builds the WHERE condition that selects the caller's rows of a usage table.
RowFilter = Callable[[sa.Table], sa.ColumnElement[bool]]


@dataclasses.dataclass(frozen=True)
class DailyUsage:
    """Calls of one UTC day."""

    day: dt.date
    request_count: int
    error_count: int


@dataclasses.dataclass(frozen=True)
class EndpointUsage:
    """Calls to one route pattern with one method."""

    method: str
    endpoint: str
    request_count: int
    error_count: int
    # In milliseconds, rounded to 0.1, or None without timed calls.
    average_response_time_ms: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    max_response_time_ms: int


@dataclasses.dataclass(frozen=True)
class UsageSummary:
    """Aggregates of the calls of one mode in [since, until)."""

    livemode: bool
    since: dt.datetime
    until: dt.datetime
    request_count: int
    error_count: int
    request_bytes: int
    response_bytes: int
    # In milliseconds, rounded to 0.1, or None without timed calls.
    average_response_time_ms: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    max_response_time_ms: int
    # Calls per latency bucket, as in api_usage_hourly.latency_histogram.
    latency_histogram: dict[str, int]
    # One entry per UTC day of the period, oldest first, days without calls included.
    by_day: list[DailyUsage]
    # Busiest first.
    by_endpoint: list[EndpointUsage]
    # Calls per status class, every class of STATUS_CLASSES present.
    by_status_class: dict[str, int]

    @property
    def mode(self) -> str:
        return "live" if self.livemode else "test"


@dataclasses.dataclass(frozen=True)
class UsageError:
    """One call that got a status of 400 or more."""

    created_at: dt.datetime
    request_id: str | None
    method: str
    endpoint: str
    status_code: int
    # The error code of the response envelope, such as not_found.
    error_code: str | None


# Accumulation -------------------------------------------------------------------


@dataclasses.dataclass
class _Totals:
    request_count: int = 0
    error_count: int = 0
    total_response_time_ms: int = 0
    max_response_time_ms: int = 0
    request_bytes: int = 0
    response_bytes: int = 0
    histogram: dict[str, int] = dataclasses.field(default_factory=dict)

    def add(self, other: _Totals) -> None:
        self.request_count += other.request_count
        self.error_count += other.error_count
        self.total_response_time_ms += other.total_response_time_ms
        self.max_response_time_ms = max(self.max_response_time_ms, other.max_response_time_ms)
        self.request_bytes += other.request_bytes
        self.response_bytes += other.response_bytes
        for key, count in other.histogram.items():
            self.histogram[key] = self.histogram.get(key, 0) + count

    @property
    def timed_count(self) -> int:
        return sum(self.histogram.values())

    def average_ms(self) -> float | None:
        timed = self.timed_count
        return round(self.total_response_time_ms / timed, 1) if timed else None

    def percentile_ms(self, fraction: float) -> float | None:
        estimate = estimate_percentile(self.histogram, fraction, self.max_response_time_ms)
        return None if estimate is None else round(estimate, 1)


def _totals_from_row(row, status_code: int) -> _Totals:
    count = int(row["request_count"])
    return _Totals(
        request_count=count,
        error_count=count if status_code >= ERROR_STATUS else 0,
        total_response_time_ms=int(row["total_response_time_ms"] or 0),
        max_response_time_ms=int(row["max_response_time_ms"] or 0),
        request_bytes=int(row["request_bytes"] or 0),
        response_bytes=int(row["response_bytes"] or 0),
        histogram={key: int(row[f"b_{key}"]) for key in BUCKET_KEYS if row[f"b_{key}"]},
    )


@dataclasses.dataclass
class _ModeAccumulator:
    # (method, endpoint, status_code) -> totals
    groups: dict[tuple[str, str, int], _Totals] = dataclasses.field(default_factory=dict)
    # day -> [request_count, error_count]
    days: dict[dt.date, list[int]] = dataclasses.field(default_factory=dict)

    def add_group(self, method: str, endpoint: str, status_code: int, totals: _Totals) -> None:
        key = (method, endpoint, status_code)
        if key in self.groups:
            self.groups[key].add(totals)
        else:
            self.groups[key] = totals

    def add_hour(self, hour: dt.datetime, request_count: int, error_count: int) -> None:
        day = self.days.setdefault(hour.date(), [0, 0])
        day[0] += request_count
        day[1] += error_count


# Queries ----------------------------------------------------------------------


def _dialect_name(executor) -> str:
    dialect = getattr(executor, "dialect", None)
    if dialect is None:
        dialect = executor.get_bind().dialect
    return dialect.name


def _ceil_hour(moment: dt.datetime) -> dt.datetime:
    floor = floor_hour(moment)
    return floor if floor == moment else floor + HOUR


def _add_hourly(executor, accumulators, row_filter: RowFilter, start, end) -> None:
    table = _hourly
    histogram_columns = [
        sa.func.sum(sa.func.coalesce(table.c.latency_histogram[key].as_integer(), 0))
        .label(f"b_{key}")
        for key in BUCKET_KEYS
    ]
    where = (row_filter(table), table.c.hour >= start, table.c.hour < end)
    groups = executor.execute(
        sa.select(
            table.c.livemode, table.c.method, table.c.endpoint, table.c.status_code,
            sa.func.sum(table.c.request_count).label("request_count"),
            sa.func.sum(table.c.total_response_time_ms).label("total_response_time_ms"),
            sa.func.max(table.c.max_response_time_ms).label("max_response_time_ms"),
            sa.func.sum(table.c.request_bytes).label("request_bytes"),
            sa.func.sum(table.c.response_bytes).label("response_bytes"),
            *histogram_columns,
        )
        .where(*where)
        .group_by(table.c.livemode, table.c.method, table.c.endpoint, table.c.status_code)
    ).mappings()
    for row in groups:
        accumulators[row["livemode"]].add_group(row["method"], row["endpoint"],
                                                row["status_code"],
                                                _totals_from_row(row, row["status_code"]))

    errors = sa.case((table.c.status_code >= ERROR_STATUS, table.c.request_count), else_=0)
    hours = executor.execute(
        sa.select(table.c.livemode, table.c.hour, sa.func.sum(table.c.request_count),
                  sa.func.sum(errors))
        .where(*where)
        .group_by(table.c.livemode, table.c.hour)
    )
    for livemode, hour, request_count, error_count in hours:
        accumulators[livemode].add_hour(parse_hour(hour), int(request_count), int(error_count))


def _add_raw(executor, accumulators, row_filter: RowFilter,
             ranges: list[tuple[dt.datetime, dt.datetime]]) -> None:
    table = _usage
    where = (
        row_filter(table),
        sa.or_(*(sa.and_(table.c.created_at >= start, table.c.created_at < end)
                 for start, end in ranges)),
    )
    groups = executor.execute(
        sa.select(
            table.c.livemode, table.c.method, table.c.endpoint, table.c.status_code,
            sa.func.count().label("request_count"),
            sa.func.sum(table.c.response_time).label("total_response_time_ms"),
            sa.func.max(table.c.response_time).label("max_response_time_ms"),
            sa.func.sum(table.c.request_size).label("request_bytes"),
            sa.func.sum(table.c.response_size).label("response_bytes"),
            *latency_bucket_columns(table.c.response_time),
        )
        .where(*where)
        .group_by(table.c.livemode, table.c.method, table.c.endpoint, table.c.status_code)
    ).mappings()
    for row in groups:
        accumulators[row["livemode"]].add_group(row["method"], row["endpoint"],
                                                row["status_code"],
                                                _totals_from_row(row, row["status_code"]))

    hour = hour_bucket(table.c.created_at, _dialect_name(executor)).label("hour")
    errors = sa.case((table.c.status_code >= ERROR_STATUS, 1), else_=0)
    hours = executor.execute(
        sa.select(table.c.livemode, hour, sa.func.count(), sa.func.sum(errors))
        .where(*where)
        .group_by(table.c.livemode, hour)
    )
    for livemode, hour_value, request_count, error_count in hours:
        accumulators[livemode].add_hour(parse_hour(hour_value), int(request_count),
                                        int(error_count))


def _split_period(executor, since: dt.datetime, until: dt.datetime):
    """Return the hours [start, end) to read from api_usage_hourly, and the raw row ranges."""
    hourly_start = _ceil_hour(since)
    hourly_end = floor_hour(until)
    rolled_until = read_rolled_until(executor)
    hourly_end = hourly_start if rolled_until is None else min(hourly_end, rolled_until)
    if hourly_end <= hourly_start:
        return None, [(since, until)]
    raw_ranges = [(start, end) for start, end in ((since, hourly_start), (hourly_end, until))
                  if start < end]
    return (hourly_start, hourly_end), raw_ranges


def _summaries(executor, row_filter: RowFilter, since: dt.datetime,
               until: dt.datetime) -> dict[bool, UsageSummary]:
    if until <= since:
        raise ValueError(f"until must be later than since, got {since} and {until}")
    accumulators = {False: _ModeAccumulator(), True: _ModeAccumulator()}
    hourly_range, raw_ranges = _split_period(executor, since, until)
    if hourly_range is not None:
        _add_hourly(executor, accumulators, row_filter, *hourly_range)
    if raw_ranges:
        _add_raw(executor, accumulators, row_filter, raw_ranges)
    return {livemode: _build_summary(accumulator, livemode, since, until)
            for livemode, accumulator in accumulators.items()}


def _build_summary(accumulator: _ModeAccumulator, livemode: bool, since: dt.datetime,
                   until: dt.datetime) -> UsageSummary:
    total = _Totals()
    by_status_class = dict.fromkeys(STATUS_CLASSES, 0)
    endpoints: dict[tuple[str, str], _Totals] = {}
    for (method, endpoint, status_code), totals in accumulator.groups.items():
        total.add(totals)
        status_class = f"{status_code // 100}xx"
        # NOTE: A status outside 200-599 counts in the totals but in no class.
        # The gateway records final HTTP responses, which are in that range.
        if status_class in by_status_class:
            by_status_class[status_class] += totals.request_count
        endpoints.setdefault((method, endpoint), _Totals()).add(totals)

    by_endpoint = [
        EndpointUsage(
            method=method, endpoint=endpoint, request_count=totals.request_count,
            error_count=totals.error_count, average_response_time_ms=totals.average_ms(),
            latency_p50_ms=totals.percentile_ms(0.5), latency_p95_ms=totals.percentile_ms(0.95),
            max_response_time_ms=totals.max_response_time_ms,
        )
        for (method, endpoint), totals in endpoints.items()
    ]
    by_endpoint.sort(key=lambda item: (-item.request_count, item.endpoint, item.method))

    by_day = []
    day = since.date()
    last_day = (until - dt.timedelta(microseconds=1)).date()
    while day <= last_day:
        request_count, error_count = accumulator.days.get(day, (0, 0))
        by_day.append(DailyUsage(day=day, request_count=request_count, error_count=error_count))
        day += dt.timedelta(days=1)

    return UsageSummary(
        livemode=livemode, since=since, until=until,
        request_count=total.request_count, error_count=total.error_count,
        request_bytes=total.request_bytes, response_bytes=total.response_bytes,
        average_response_time_ms=total.average_ms(),
        latency_p50_ms=total.percentile_ms(0.5), latency_p95_ms=total.percentile_ms(0.95),
        max_response_time_ms=total.max_response_time_ms,
        latency_histogram={key: total.histogram[key] for key in BUCKET_KEYS
                           if total.histogram.get(key)},
        by_day=by_day, by_endpoint=by_endpoint, by_status_class=by_status_class,
    )


# Public functions ---------------------------------------------------------------


def key_usage_summary(session, key_id: int, livemode: bool, since: dt.datetime,
                      until: dt.datetime) -> UsageSummary:
    """Summarize the calls made with one API key in [since, until), in the key's mode ``livemode``.

    ``session`` is a Session or a Connection. ``since`` and ``until`` are
    naive UTC datetimes.
    """
    def row_filter(table: sa.Table):
        return sa.and_(table.c.api_key_id == key_id, table.c.livemode == livemode)

    return _summaries(session, row_filter, since, until)[livemode]


def client_usage_summary(session, oauth_client_id: int, livemode: bool, since: dt.datetime,
                         until: dt.datetime) -> UsageSummary:
    """Summarize the calls made with one OAuth application's tokens in [since, until).

    ``livemode`` is the application's mode. Calls of every user of the
    application count together. ``session`` is a Session or a Connection.
    ``since`` and ``until`` are naive UTC datetimes.
    """
    def row_filter(table: sa.Table):
        return sa.and_(table.c.oauth_client_id == oauth_client_id,
                       table.c.livemode == livemode)

    return _summaries(session, row_filter, since, until)[livemode]


def partner_usage_summary(session, partner_id: int, since: dt.datetime,
                          until: dt.datetime) -> dict[str, UsageSummary]:
    """Summarize the calls of a partner's keys and applications in [since, until), per mode.

    Returns ``{"live": ..., "test": ...}``, both always present. ``session``
    is a Session or a Connection. ``since`` and ``until`` are naive UTC
    datetimes.
    """
    def row_filter(table: sa.Table):
        return table.c.partner_id == partner_id

    summaries = _summaries(session, row_filter, since, until)
    return {summary.mode: summary for summary in summaries.values()}


def errors_query(select, *, api_key_id: int | None = None, partner_id: int | None = None,
                 oauth_client_id: int | None = None, livemode: bool | None = None):
    """Restrict ``select`` over ``api_usage`` to calls with a status of 400 or more.

    Pass ``api_key_id``, ``partner_id``, ``oauth_client_id`` or several of
    them; ``livemode`` keeps one mode only. Raises ValueError when all three
    owners are None.
    """
    if api_key_id is None and partner_id is None and oauth_client_id is None:
        raise ValueError("errors_query needs api_key_id, partner_id or oauth_client_id, "
                         "and all are None")
    table = _usage
    query = select.where(table.c.status_code >= ERROR_STATUS)
    if api_key_id is not None:
        query = query.where(table.c.api_key_id == api_key_id)
    if partner_id is not None:
        query = query.where(table.c.partner_id == partner_id)
    if oauth_client_id is not None:
        query = query.where(table.c.oauth_client_id == oauth_client_id)
    if livemode is not None:
        query = query.where(table.c.livemode == livemode)
    return query


def recent_errors(session, *, since: dt.datetime, until: dt.datetime, limit: int,
                  api_key_id: int | None = None, partner_id: int | None = None,
                  oauth_client_id: int | None = None,
                  livemode: bool | None = None) -> list[UsageError]:
    """Return up to ``limit`` calls with a status of 400 or more in [since, until), newest first.

    They come from the raw rows, so calls older than the raw retention are
    not listed. Pass ``api_key_id``, ``partner_id``, ``oauth_client_id`` or
    several of them. ``livemode`` keeps one mode only.
    """
    table = _usage
    query = errors_query(sa.select(
        table.c.created_at, table.c.request_id, table.c.method, table.c.endpoint,
        table.c.status_code, table.c.error_message,
    ), api_key_id=api_key_id, partner_id=partner_id, oauth_client_id=oauth_client_id,
        livemode=livemode).where(table.c.created_at >= since, table.c.created_at < until)
    rows = session.execute(
        query.order_by(table.c.created_at.desc(), table.c.id.desc()).limit(limit))
    return [
        UsageError(created_at=row.created_at, request_id=row.request_id, method=row.method,
                   endpoint=row.endpoint, status_code=row.status_code,
                   error_code=row.error_message)
        for row in rows
    ]
