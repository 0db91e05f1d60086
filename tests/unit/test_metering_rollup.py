"""Tests of the hourly roll-ups, retention, latency histograms and usage summaries.

The database tests run on SQLite and on PostgreSQL (through the
``make_postgres_schema`` fixture, skipped when PostgreSQL is unreachable
outside CI).
"""

from __future__ import annotations

import datetime as dt
import threading

import pytest
import sqlalchemy as sa

import fkod.models
from fkod.core.auth.models import ApiKey, Partner
from fkod.core.db import make_engine
from fkod.core.idempotency_models import IdempotencyRecord
from fkod.core.metering.histogram import (
    BUCKET_KEYS,
    bucket_key,
    estimate_percentile,
    merge_histograms,
)
from fkod.core.metering.models import ApiUsage, ApiUsageHourly
from fkod.core.metering.report import (
    key_usage_summary,
    partner_usage_summary,
    recent_errors,
)
from fkod.core.metering.retention import delete_in_batches, purge_usage
from fkod.core.metering.rollup import (
    RollupState,
    floor_hour,
    read_rolled_until,
    rollup_hours,
    rollup_usage,
)

# The start of an hour; rows are placed at offsets from it.
H0 = dt.datetime(2027, 3, 10, 8, 0, 0)
HOUR = dt.timedelta(hours=1)
DELAY = dt.timedelta(minutes=5)
RAW_RETENTION = dt.timedelta(days=30)
HOURLY_RETENTION = dt.timedelta(days=400)


@pytest.fixture
def sqlite_engine(tmp_path):
    engine = make_engine({
        "fkod.db.url": f"sqlite:///{tmp_path / 'usage.sqlite'}",
        "fkod.db.pool_size": 1,
        "fkod.db.sqlite_busy_timeout_ms": 10_000,
    })
    fkod.models.metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def postgres_engine(make_postgres_schema):
    engine = make_engine({
        "fkod.db.url": make_postgres_schema(),
        "fkod.db.pool_size": 4,
        "fkod.db.sqlite_busy_timeout_ms": 0,
    })
    fkod.models.metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request):
    """Each database the roll-ups support."""
    return request.getfixturevalue(f"{request.param}_engine")


def create_key(engine, *, livemode: bool = False,
               partner_id: int | None = None) -> tuple[int, int]:
    """Insert an API key, and a partner unless one is given; return (partner id, key id)."""
    with engine.begin() as connection:
        if partner_id is None:
            partner_id = connection.execute(
                sa.insert(Partner).values(company_name="Acme Learning").returning(Partner.id)
            ).scalar_one()
        key_count = connection.scalar(sa.select(sa.func.count()).select_from(ApiKey))
        key_id = connection.execute(
            sa.insert(ApiKey).values(
                partner_id=partner_id, key_name="test key", key_hash=f"hash-{key_count}",
                key_prefix="sk_test_", livemode=livemode,
            ).returning(ApiKey.id)
        ).scalar_one()
    return partner_id, key_id


def usage_row(created_at: dt.datetime, **overrides) -> dict:
    row = {
        "api_key_id": None,
        "partner_id": None,
        "endpoint": "/api/v1/mentors",
        "method": "GET",
        "status_code": 200,
        "response_time": 20,
        "request_size": 0,
        "response_size": 100,
        "error_message": None,
        "livemode": False,
        "request_id": None,
        "created_at": created_at,
    }
    row.update(overrides)
    return row


def insert_usage(engine, rows: list[dict]) -> None:
    with engine.begin() as connection:
        connection.execute(ApiUsage.__table__.insert(), rows)


def hourly_rows(engine) -> list[tuple]:
    """Return every api_usage_hourly row without its id, sorted."""
    table = ApiUsageHourly.__table__
    columns = [column for column in table.c if column.name != "id"]
    with engine.connect() as connection:
        rows = connection.execute(sa.select(*columns)).all()
    return sorted((tuple(row) for row in rows), key=repr)


def hourly_count(engine, **filters) -> int:
    table = ApiUsageHourly.__table__
    query = sa.select(sa.func.coalesce(sa.func.sum(table.c.request_count), 0))
    for name, value in filters.items():
        query = query.where(table.c[name] == value)
    with engine.connect() as connection:
        return int(connection.scalar(query))


def raw_count(engine) -> int:
    with engine.connect() as connection:
        return connection.scalar(sa.select(sa.func.count()).select_from(ApiUsage.__table__))


def rolled_until(engine) -> dt.datetime | None:
    with engine.connect() as connection:
        return read_rolled_until(connection)


def run_rollup(engine, now: dt.datetime, reroll_hours: int = 3):
    return rollup_usage(engine, now=now, delay=DELAY, reroll_hours=reroll_hours)


def run_purge(engine, now: dt.datetime, batch_size: int = 5000):
    return purge_usage(engine, raw_retention=RAW_RETENTION, hourly_retention=HOURLY_RETENTION,
                       now=now, batch_size=batch_size)


# Histograms ---------------------------------------------------------------------


@pytest.mark.parametrize("response_time, key", [
    (0, "5"), (5, "5"), (6, "10"), (10, "10"), (11, "25"), (1000, "1000"), (1001, "2500"),
    (10000, "10000"), (10001, "inf"), (10**9, "inf"),
])
def test_bucket_key_bounds(response_time, key):
    assert bucket_key(response_time) == key


def test_percentile_inside_one_bucket():
    histogram = {"25": 100}

    assert estimate_percentile(histogram, 0.5) == pytest.approx(17.5)
    assert estimate_percentile(histogram, 0.95) == pytest.approx(24.25)


def test_percentile_across_buckets():
    histogram = {"5": 50, "250": 50}

    assert estimate_percentile(histogram, 0.5) == pytest.approx(5.0)
    assert estimate_percentile(histogram, 0.95) == pytest.approx(235.0)


def test_percentile_infinite_bucket_ends_at_max():
    histogram = {"inf": 10}

    assert estimate_percentile(histogram, 0.5, max_response_time_ms=30_000) == pytest.approx(
        20_000.0)
    assert estimate_percentile(histogram, 0.95, max_response_time_ms=30_000) == pytest.approx(
        29_000.0)


def test_percentile_capped_at_max():
    histogram = {"1000": 4}

    assert estimate_percentile(histogram, 0.95, max_response_time_ms=600) == 600.0


def test_percentile_of_empty_histogram():
    assert estimate_percentile({}, 0.5) is None
    assert estimate_percentile({"5": 0}, 0.95) is None


@pytest.mark.parametrize("fraction", [0, -0.1, 1.5])
def test_percentile_rejects_fraction(fraction):
    with pytest.raises(ValueError, match="fraction"):
        estimate_percentile({"5": 1}, fraction)


def test_merge_histograms_adds_buckets():
    merged = merge_histograms([{"5": 1, "inf": 2}, {"5": 3, "100": 4}, {}])

    assert merged == {"5": 4, "100": 4, "inf": 2}


def test_merge_histograms_rejects_unknown_bucket():
    with pytest.raises(ValueError, match="'7'"):
        merge_histograms([{"7": 1}])


# Roll-up ---------------------------------------------------------------------------


def test_rollup_aggregates_complete_hours(engine):
    partner_id, key_id = create_key(engine)
    mentors = {"api_key_id": key_id, "partner_id": partner_id}
    insert_usage(engine, [
        usage_row(H0 + dt.timedelta(minutes=1), **mentors, response_time=3, request_size=10,
                  response_size=1000),
        usage_row(H0 + dt.timedelta(minutes=59, seconds=59, microseconds=999999), **mentors,
                  response_time=40, request_size=20, response_size=2000),
        usage_row(H0 + dt.timedelta(minutes=30), **mentors, status_code=404, response_time=12000,
                  error_message="not_found"),
        usage_row(H0 + dt.timedelta(minutes=10), **mentors, method="POST",
                  endpoint="/api/v1/users", status_code=201, response_time=260),
        usage_row(H0 + HOUR, **mentors, response_time=7),
        # The current hour, not complete yet.
        usage_row(H0 + 2 * HOUR, **mentors),
    ])

    result = run_rollup(engine, now=H0 + 2 * HOUR + DELAY)

    assert result.new_hours == 2
    assert result.rolled_until == H0 + 2 * HOUR
    assert rolled_until(engine) == H0 + 2 * HOUR
    rows = {(row.hour, row.method, row.endpoint, row.status_code): row
            for row in _hourly_objects(engine)}
    assert set(rows) == {
        (H0, "GET", "/api/v1/mentors", 200),
        (H0, "GET", "/api/v1/mentors", 404),
        (H0, "POST", "/api/v1/users", 201),
        (H0 + HOUR, "GET", "/api/v1/mentors", 200),
    }
    ok = rows[(H0, "GET", "/api/v1/mentors", 200)]
    assert ok.request_count == 2
    assert ok.total_response_time_ms == 43
    assert ok.max_response_time_ms == 40
    assert ok.request_bytes == 30
    assert ok.response_bytes == 3000
    assert ok.latency_histogram == {"5": 1, "50": 1}
    assert ok.api_key_id == key_id
    assert ok.partner_id == partner_id
    assert ok.livemode is False
    assert rows[(H0, "GET", "/api/v1/mentors", 404)].latency_histogram == {"inf": 1}
    assert rows[(H0, "POST", "/api/v1/users", 201)].latency_histogram == {"500": 1}
    assert rows[(H0 + HOUR, "GET", "/api/v1/mentors", 200)].request_count == 1


def _hourly_objects(engine):
    with engine.connect() as connection:
        return connection.execute(sa.select(ApiUsageHourly.__table__)).all()


def test_rollup_twice_gives_same_rows(engine):
    partner_id, key_id = create_key(engine)
    insert_usage(engine, [
        usage_row(H0 + dt.timedelta(minutes=minute), api_key_id=key_id, partner_id=partner_id,
                  status_code=(200, 201, 404, 500)[minute % 4], response_time=minute * 37)
        for minute in range(0, 180, 7)
    ])
    now = H0 + 3 * HOUR + DELAY

    run_rollup(engine, now=now)
    first = hourly_rows(engine)
    second_result = run_rollup(engine, now=now)
    second = hourly_rows(engine)
    third_result = run_rollup(engine, now=now + dt.timedelta(minutes=30))

    assert first
    assert second == first
    assert hourly_rows(engine) == first
    assert second_result.new_hours == 0
    assert second_result.rerolled_hours == 3
    assert third_result.new_hours == 0
    assert hourly_count(engine) == len(range(0, 180, 7))


def test_rollup_waits_for_delay(engine):
    insert_usage(engine, [usage_row(H0 + dt.timedelta(minutes=50))])

    early = run_rollup(engine, now=H0 + HOUR + DELAY - dt.timedelta(seconds=1))
    assert early.new_hours == 0
    assert hourly_count(engine) == 0
    assert rolled_until(engine) == H0

    on_time = run_rollup(engine, now=H0 + HOUR + DELAY)
    assert on_time.new_hours == 1
    assert hourly_count(engine) == 1


def test_first_run_starts_at_oldest_row(engine):
    start = H0 - dt.timedelta(days=3)
    insert_usage(engine, [usage_row(start + dt.timedelta(hours=hours, minutes=5))
                          for hours in range(0, 72, 5)])

    result = run_rollup(engine, now=H0 + DELAY)

    # Three days are three catch-up chunks of 24 hours.
    assert result.new_hours == 72
    assert result.rolled_until == H0
    assert hourly_count(engine) == len(range(0, 72, 5))


def test_first_run_without_rows_starts_now(engine):
    result = run_rollup(engine, now=H0 + dt.timedelta(minutes=30))

    assert result.new_hours == 0
    assert rolled_until(engine) == floor_hour(H0 + dt.timedelta(minutes=30) - DELAY)


def test_late_row_in_reroll_window_counted(engine):
    insert_usage(engine, [usage_row(H0 + dt.timedelta(minutes=5))])
    run_rollup(engine, now=H0 + HOUR + DELAY)
    assert hourly_count(engine) == 1

    # A record that the recorder buffered across the roll-up reaches the table now.
    insert_usage(engine, [usage_row(H0 + dt.timedelta(minutes=59))])
    result = run_rollup(engine, now=H0 + HOUR + 2 * DELAY)

    # The re-roll window: the last three hours before rolled_until.
    assert result.rerolled_hours == 3
    assert result.new_hours == 0
    assert hourly_count(engine) == 2


def test_late_row_beyond_window_counted(engine):
    insert_usage(engine, [usage_row(H0 + dt.timedelta(minutes=5)),
                          usage_row(H0 + 10 * HOUR + dt.timedelta(minutes=5))])
    run_rollup(engine, now=H0 + 11 * HOUR + DELAY, reroll_hours=0)
    run_rollup(engine, now=H0 + 12 * HOUR + DELAY, reroll_hours=0)
    assert hourly_count(engine) == 2

    # Ten hours late: far outside a re-roll window of zero hours.
    insert_usage(engine, [usage_row(H0 + dt.timedelta(minutes=30), status_code=503),
                          usage_row(H0 + dt.timedelta(minutes=31), status_code=503)])
    result = run_rollup(engine, now=H0 + 12 * HOUR + 2 * DELAY, reroll_hours=0)

    assert result.rerolled_hours == 1
    assert hourly_count(engine) == 4
    assert hourly_count(engine, status_code=503) == 2
    # Later runs find nothing new and keep the numbers.
    run_rollup(engine, now=H0 + 13 * HOUR + DELAY, reroll_hours=0)
    run_rollup(engine, now=H0 + 14 * HOUR + DELAY, reroll_hours=0)
    assert hourly_count(engine) == 4


def test_late_row_seen_two_runs_later(engine):
    """A late row that commits after a run read a larger max(id) is found by the next run."""
    now = H0 + 5 * HOUR + DELAY
    insert_usage(engine, [usage_row(H0 + dt.timedelta(minutes=5))])
    run_rollup(engine, now=now, reroll_hours=0)
    insert_usage(engine, [usage_row(H0 + dt.timedelta(minutes=6)),
                          usage_row(now + dt.timedelta(minutes=1))])
    with engine.connect() as connection:
        late_id = connection.scalar(sa.select(sa.func.min(ApiUsage.id))
                                    .where(ApiUsage.created_at == H0 + dt.timedelta(minutes=6)))
    # The late row's transaction has not committed when the next run reads
    # max(id), which is the id of the row inserted after it.
    with engine.begin() as connection:
        connection.execute(sa.delete(ApiUsage.__table__).where(ApiUsage.id == late_id))
    run_rollup(engine, now=now, reroll_hours=0)
    insert_usage(engine, [usage_row(H0 + dt.timedelta(minutes=6), id=late_id)])

    result = run_rollup(engine, now=now, reroll_hours=0)

    assert result.rerolled_hours == 1
    assert hourly_count(engine) == 2


def test_rows_without_key_kept_per_partner_and_mode(engine):
    first_partner, _ = create_key(engine)
    second_partner, _ = create_key(engine)
    insert_usage(engine, [
        usage_row(H0, partner_id=first_partner),
        usage_row(H0, partner_id=second_partner),
        usage_row(H0, partner_id=second_partner, livemode=True),
        usage_row(H0, partner_id=second_partner, livemode=True),
    ])

    run_rollup(engine, now=H0 + HOUR + DELAY)

    assert hourly_count(engine, partner_id=first_partner) == 1
    assert hourly_count(engine, partner_id=second_partner, livemode=False) == 1
    assert hourly_count(engine, partner_id=second_partner, livemode=True) == 2


def test_rollup_hours_rejects_partial_hours(engine):
    with engine.begin() as connection, pytest.raises(ValueError, match="whole hours"):
        rollup_hours(connection, H0 + dt.timedelta(minutes=1), H0 + HOUR)


def test_concurrent_rollups_count_once(engine):
    partner_id, key_id = create_key(engine)
    start = H0 - dt.timedelta(days=2)
    insert_usage(engine, [
        usage_row(start + dt.timedelta(minutes=minute), api_key_id=key_id,
                  partner_id=partner_id, status_code=200 + minute % 3)
        for minute in range(0, 48 * 60, 11)
    ])
    errors: list[BaseException] = []
    barrier = threading.Barrier(3)

    def run() -> None:
        try:
            barrier.wait()
            run_rollup(engine, now=H0 + DELAY)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
        assert not thread.is_alive()

    assert errors == []
    assert hourly_count(engine) == len(range(0, 48 * 60, 11))
    assert rolled_until(engine) == H0


def test_rollup_state_round_trips():
    state = RollupState(rolled_until=H0, purged_before=H0 - HOUR, scan_from_id=3,
                        previous_max_id=9)

    assert RollupState.from_cursor(state.to_cursor()) == state
    assert RollupState.from_cursor(None) == RollupState()


# Retention ------------------------------------------------------------------------


def test_purge_deletes_rolled_up_raw_rows(engine):
    now = H0 + DELAY
    old = H0 - dt.timedelta(days=40)
    recent = H0 - dt.timedelta(days=10)
    insert_usage(engine, [usage_row(old + dt.timedelta(minutes=5)),
                          usage_row(old + dt.timedelta(minutes=6)),
                          usage_row(recent + dt.timedelta(minutes=5))])
    run_rollup(engine, now=now)

    result = run_purge(engine, now=now)

    assert result.raw_rows == 2
    assert result.purged_before == floor_hour(now - RAW_RETENTION)
    assert raw_count(engine) == 1
    # The roll-ups of the purged hour stay.
    assert hourly_count(engine) == 3


def test_purge_keeps_rows_not_rolled_up(engine):
    old = H0 - dt.timedelta(days=40)
    insert_usage(engine, [usage_row(old + dt.timedelta(minutes=5))])

    # No roll-up has run yet.
    result = run_purge(engine, now=H0)
    assert result.raw_rows == 0
    assert result.purged_before is None
    assert raw_count(engine) == 1

    # A roll-up that stopped before the row's hour.
    run_rollup(engine, now=old + DELAY)
    assert rolled_until(engine) == old
    result = run_purge(engine, now=H0)
    assert result.raw_rows == 0
    assert raw_count(engine) == 1

    run_rollup(engine, now=old + HOUR + DELAY)
    result = run_purge(engine, now=H0)
    assert result.raw_rows == 1
    assert result.purged_before == old + HOUR
    assert hourly_count(engine) == 1


def test_purged_hours_never_rolled_up_again(engine):
    old = H0 - dt.timedelta(days=40)
    insert_usage(engine, [usage_row(old + dt.timedelta(minutes=5)),
                          usage_row(old + dt.timedelta(minutes=6))])
    run_rollup(engine, now=H0 + DELAY)
    run_purge(engine, now=H0 + DELAY)
    run_rollup(engine, now=H0 + 2 * DELAY)
    assert hourly_count(engine) == 2

    # A row for an hour whose raw rows are purged arrives now. Rolling that
    # hour up again would replace its two calls with this one.
    insert_usage(engine, [usage_row(old + dt.timedelta(minutes=7))])
    run_rollup(engine, now=H0 + 3 * DELAY, reroll_hours=168)
    run_rollup(engine, now=H0 + 4 * DELAY, reroll_hours=168)

    assert hourly_count(engine) == 2
    assert run_purge(engine, now=H0 + 4 * DELAY).raw_rows == 1


def test_reroll_window_stops_at_purged_hours(engine):
    insert_usage(engine, [usage_row(H0 - dt.timedelta(hours=hours, minutes=-5))
                          for hours in (3, 3, 2, 1)])
    run_rollup(engine, now=H0 + DELAY)
    result = purge_usage(engine, raw_retention=2 * HOUR, hourly_retention=HOURLY_RETENTION,
                         now=H0 + DELAY)
    assert result.purged_before == H0 - 2 * HOUR
    assert result.raw_rows == 2

    rerun = run_rollup(engine, now=H0 + 2 * DELAY, reroll_hours=3)

    assert rerun.rerolled_hours == 2
    assert hourly_count(engine) == 4


def test_purge_deletes_old_hourly_rows(engine):
    insert_usage(engine, [usage_row(H0 - dt.timedelta(days=401)),
                          usage_row(H0 - dt.timedelta(days=399))])
    run_rollup(engine, now=H0)
    assert hourly_count(engine) == 2

    result = run_purge(engine, now=H0)

    assert result.hourly_rows == 1
    assert hourly_count(engine) == 1


def test_purge_deletes_expired_idempotency_records(engine):
    table = IdempotencyRecord.__table__
    with engine.begin() as connection:
        connection.execute(table.insert(), [
            {"owner": "key:1", "idempotency_key": f"k{number}", "method": "POST",
             "path": "/api/v1/users", "request_hash": "0" * 64, "status": "completed",
             "expires_at": H0 + dt.timedelta(seconds=offset)}
            for number, offset in enumerate((-86400, -1, 0, 1, 86400))
        ])

    result = run_purge(engine, now=H0)

    assert result.idempotency_records == 2
    with engine.connect() as connection:
        left = connection.scalars(sa.select(table.c.idempotency_key).order_by(table.c.id)).all()
    assert left == ["k2", "k3", "k4"]


def test_delete_in_batches_deletes_every_match(engine):
    insert_usage(engine, [usage_row(H0, status_code=500 if number % 2 else 200)
                          for number in range(11)])

    deleted = delete_in_batches(engine, ApiUsage.__table__,
                                ApiUsage.__table__.c.status_code == 500, batch_size=2)

    assert deleted == 5
    assert raw_count(engine) == 6


def test_delete_in_batches_rejects_batch_size(engine):
    with pytest.raises(ValueError, match="batch_size"):
        delete_in_batches(engine, ApiUsage.__table__, sa.true(), batch_size=0)


# Summaries --------------------------------------------------------------------------


def summarize_key(engine, key_id, livemode, since, until):
    with engine.connect() as connection:
        return key_usage_summary(connection, key_id, livemode, since, until)


def test_summary_adds_rollups_and_raw_rows(engine):
    partner_id, key_id = create_key(engine)
    key = {"api_key_id": key_id, "partner_id": partner_id}
    day_one = H0 - dt.timedelta(days=1)
    insert_usage(engine, [
        usage_row(day_one + dt.timedelta(minutes=1), **key, response_time=4),
        usage_row(day_one + dt.timedelta(minutes=2), **key, status_code=404, response_time=4,
                  error_message="not_found"),
        usage_row(H0 + dt.timedelta(minutes=1), **key, response_time=30),
    ])
    now = H0 + dt.timedelta(minutes=30)
    run_rollup(engine, now=now)
    # Raw rows of a rolled-up hour are no longer read: delete one to prove it.
    with engine.begin() as connection:
        connection.execute(sa.delete(ApiUsage.__table__).where(ApiUsage.status_code == 404))
    insert_usage(engine, [usage_row(H0 + dt.timedelta(minutes=20), **key, response_time=300,
                                    method="POST", endpoint="/api/v1/users", status_code=500,
                                    error_message="internal_error")])

    since = dt.datetime.combine(day_one.date(), dt.time())
    summary = summarize_key(engine, key_id, False, since, now)

    assert summary.request_count == 4
    assert summary.error_count == 2
    assert summary.by_status_class == {"2xx": 2, "3xx": 0, "4xx": 1, "5xx": 1}
    assert [(day.day, day.request_count, day.error_count) for day in summary.by_day] == [
        (day_one.date(), 2, 1), (H0.date(), 2, 1)]
    assert [(item.method, item.endpoint, item.request_count, item.error_count)
            for item in summary.by_endpoint] == [
        ("GET", "/api/v1/mentors", 3, 1), ("POST", "/api/v1/users", 1, 1)]
    assert summary.latency_histogram == {"5": 2, "50": 1, "500": 1}
    assert summary.max_response_time_ms == 300
    assert summary.average_response_time_ms == pytest.approx(84.5)
    assert summary.latency_p50_ms == pytest.approx(estimate_percentile(
        summary.latency_histogram, 0.5, 300), abs=0.05)
    assert summary.mode == "test"


def test_summary_percentiles_from_rollups(engine):
    partner_id, key_id = create_key(engine)
    times = [3] * 50 + [120] * 45 + [900] * 5
    insert_usage(engine, [usage_row(H0 + dt.timedelta(seconds=number), api_key_id=key_id,
                                    partner_id=partner_id, response_time=response_time)
                          for number, response_time in enumerate(times)])
    run_rollup(engine, now=H0 + HOUR + DELAY)

    summary = summarize_key(engine, key_id, False, H0, H0 + HOUR)

    # Rank 50 closes the 0-5 ms bucket; rank 95 closes the 100-250 ms bucket.
    assert summary.latency_p50_ms == pytest.approx(5.0)
    assert summary.latency_p95_ms == pytest.approx(250.0)
    assert summary.latency_histogram == {"5": 50, "250": 45, "1000": 5}
    assert summary.by_endpoint[0].latency_p95_ms == pytest.approx(250.0)


def test_summary_partial_hours_read_raw_rows(engine):
    partner_id, key_id = create_key(engine)
    key = {"api_key_id": key_id, "partner_id": partner_id}
    insert_usage(engine, [usage_row(H0 + dt.timedelta(minutes=minute), **key)
                          for minute in (10, 40, 70, 100, 130)])
    run_rollup(engine, now=H0 + 3 * HOUR + DELAY)

    summary = summarize_key(engine, key_id, False, H0 + dt.timedelta(minutes=30),
                            H0 + dt.timedelta(minutes=120))

    # 40 and 100 from raw rows of the partial hours, 70 from the roll-up of hour 1.
    assert summary.request_count == 3


def test_summary_keeps_modes_apart(engine):
    partner_id, test_key = create_key(engine)
    _, live_key = create_key(engine, livemode=True, partner_id=partner_id)
    insert_usage(engine, [
        usage_row(H0, api_key_id=test_key, partner_id=partner_id),
        usage_row(H0 + HOUR, api_key_id=test_key, partner_id=partner_id),
        usage_row(H0, api_key_id=live_key, partner_id=partner_id, livemode=True),
        usage_row(H0 + HOUR, api_key_id=live_key, partner_id=partner_id, livemode=True,
                  status_code=500),
        usage_row(H0 + HOUR, api_key_id=live_key, partner_id=partner_id, livemode=True),
    ])
    now = H0 + HOUR + dt.timedelta(minutes=30)
    run_rollup(engine, now=now)

    with engine.connect() as connection:
        by_mode = partner_usage_summary(connection, partner_id, H0, now)
    test_summary = summarize_key(engine, test_key, False, H0, now)
    live_summary = summarize_key(engine, live_key, True, H0, now)

    assert set(by_mode) == {"live", "test"}
    assert by_mode["test"].request_count == 2
    assert by_mode["live"].request_count == 3
    assert by_mode["live"].by_status_class["5xx"] == 1
    assert by_mode["test"].by_status_class["5xx"] == 0
    assert test_summary.request_count == 2
    assert live_summary.request_count == 3
    assert live_summary.mode == "live"


def test_summary_rejects_empty_period(engine):
    with engine.connect() as connection, pytest.raises(ValueError, match="until"):
        key_usage_summary(connection, 1, False, H0, H0)


def test_recent_errors_newest_first(engine):
    partner_id, key_id = create_key(engine)
    _, other_key = create_key(engine, partner_id=partner_id)
    insert_usage(engine, [
        usage_row(H0 + dt.timedelta(minutes=1), api_key_id=key_id, partner_id=partner_id,
                  status_code=404, error_message="not_found", request_id="req_a"),
        usage_row(H0 + dt.timedelta(minutes=2), api_key_id=key_id, partner_id=partner_id,
                  status_code=200, request_id="req_ok"),
        usage_row(H0 + dt.timedelta(minutes=3), api_key_id=key_id, partner_id=partner_id,
                  status_code=429, error_message="rate_limited", request_id="req_b"),
        usage_row(H0 + dt.timedelta(minutes=4), api_key_id=other_key, partner_id=partner_id,
                  status_code=500, error_message="internal_error", request_id="req_other"),
    ])
    with engine.connect() as connection:
        for_key = recent_errors(connection, api_key_id=key_id, since=H0, until=H0 + HOUR,
                                limit=10)
        limited = recent_errors(connection, api_key_id=key_id, since=H0, until=H0 + HOUR,
                                limit=1)
        for_partner = recent_errors(connection, partner_id=partner_id, since=H0,
                                    until=H0 + HOUR, limit=10)

    assert [(error.request_id, error.status_code, error.error_code) for error in for_key] == [
        ("req_b", 429, "rate_limited"), ("req_a", 404, "not_found")]
    assert [error.request_id for error in limited] == ["req_b"]
    assert [error.request_id for error in for_partner] == ["req_other", "req_b", "req_a"]
    assert for_key[0].created_at == H0 + dt.timedelta(minutes=3)


def test_recent_errors_needs_an_owner(engine):
    with engine.connect() as connection, pytest.raises(ValueError, match="api_key_id"):
        recent_errors(connection, since=H0, until=H0 + HOUR, limit=1)


def test_bucket_keys_cover_histogram_columns():
    assert BUCKET_KEYS[-1] == "inf"
    assert len(BUCKET_KEYS) == 12
