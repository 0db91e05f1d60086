"""Benchmark usage metering against baselines run in the same process.

Usage: .venv/bin/python bench/bench_metering.py [--records N] [--drain-records M]
       [--redis-url URL] [--postgres-url URL]
(the fkod package must be importable, as it is in the project's virtual environment)

It prints:

- record() of each recorder / list.append: the time of N record() calls
  against appending the same record to a plain list, so the ratio is the
  request-path cost of buffering (a lock, a bounded deque and the counters).
  The memory recorder flushes every 2 s (the default of
  fkod.metering.flush_interval_ms) and the Redis recorder every 100 ms (the
  production interval), so the Redis recorder's thread flushes during the
  timed loop as it would in production. The best of three runs counts, and
  the buffer is flushed outside the timed loop between runs.
- COPY / executemany on PostgreSQL: records per second that the drain's
  database step writes in batches of 1000 (one transaction each), so the
  ratio is the speed-up of COPY.
- the whole drain (XREADGROUP, COPY, XACK and XDEL) in records per second,
  for context.

The SQLite part always runs, in a temporary file. The Redis and PostgreSQL
parts are skipped with a message when the server does not respond. Streams get
random names and are deleted at the end, and PostgreSQL tables live in a
schema with a random name that is dropped at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import secrets
import tempfile
import time
from collections.abc import Callable

import redis
import sqlalchemy as sa
from redis.backoff import NoBackoff
from redis.retry import Retry

import fkod.models
from fkod.core.db import make_engine
from fkod.core.metering import (
    MemoryUsageBuffer,
    RedisUsageStream,
    UsageRecord,
    drain_usage_stream,
)
from fkod.core.metering.base import insert_usage_records
from fkod.core.metering.drain import copy_usage_records, dead_letter_stream

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
RUNS = 3
DRAIN_BATCH = 1000


def make_records(count: int) -> list[UsageRecord]:
    start = dt.datetime(2027, 1, 15, 8, 0, 0)
    return [
        UsageRecord(
            api_key_id=None,
            partner_id=None,
            endpoint="/api/v1/users/{id}",
            method="GET",
            status_code=200,
            response_time=14,
            request_size=0,
            response_size=512,
            error_message=None,
            livemode=True,
            request_id=f"req_{number:08d}",
            created_at=start + dt.timedelta(microseconds=number),
        )
        for number in range(count)
    ]


def best_time(runs: int, call: Callable[[], None], between: Callable[[], None]) -> float:
    """Return the fastest of ``runs`` timed calls of ``call``, running ``between`` untimed after each."""
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - started)
        between()
    return best


def time_record_calls(records: list[UsageRecord], record: Callable[[UsageRecord], None],
                      between: Callable[[], None]) -> float:
    def run() -> None:
        for item in records:
            record(item)

    return best_time(RUNS, run, between)


def report_ratio(label: str, measured: float, baseline: float, count: int) -> None:
    print(f"{label}: {measured / baseline:.1f}x "
          f"({measured / count * 1e9:.0f} ns per call vs {baseline / count * 1e9:.0f} ns)")


def redis_client_or_none(url: str) -> redis.Redis | None:
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=10,
                                  retry=Retry(NoBackoff(), 0))
    try:
        client.ping()
    except redis.RedisError as error:
        print(f"Redis at {url} is unreachable ({error}); skipping the Redis parts.")
        client.close()
        return None
    return client


def bench_record(records: list[UsageRecord], client: redis.Redis | None) -> None:
    baseline_list: list[UsageRecord] = []
    baseline = time_record_calls(records, baseline_list.append, baseline_list.clear)
    print(f"baseline list.append: {baseline / len(records) * 1e9:.0f} ns per call")

    with tempfile.TemporaryDirectory() as directory:
        engine = make_engine({
            "fkod.db.url": f"sqlite:///{directory}/bench.sqlite",
            "fkod.db.pool_size": 1,
            "fkod.db.sqlite_busy_timeout_ms": 5000,
        })
        fkod.models.metadata.create_all(engine)
        buffer = MemoryUsageBuffer(engine, 2.0, max_buffer=len(records))
        try:
            measured = time_record_calls(records, buffer.record, buffer.flush)
        finally:
            buffer.close()
            engine.dispose()
    report_ratio("MemoryUsageBuffer.record / list.append", measured, baseline, len(records))

    if client is None:
        return
    stream = f"fkod:bench:usage:{secrets.token_hex(6)}"
    recorder = RedisUsageStream(client, stream, 0.1, max_buffer=len(records))
    try:
        measured = time_record_calls(records, recorder.record, recorder.flush)
    finally:
        recorder.close()
        client.delete(stream)
    report_ratio("RedisUsageStream.record / list.append", measured, baseline, len(records))


def postgres_engine_or_none(url: str) -> tuple[sa.Engine, sa.Engine, str] | None:
    """Return (admin engine, engine on a new schema, schema name), or None when unreachable."""
    admin = sa.create_engine(url, poolclass=sa.pool.NullPool, connect_args={"connect_timeout": 2})
    try:
        with admin.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as error:
        print(f"PostgreSQL at {url} is unreachable ({error.orig}); skipping the PostgreSQL parts.")
        admin.dispose()
        return None
    schema = f"fkod_bench_{secrets.token_hex(6)}"
    with admin.begin() as connection:
        connection.execute(sa.schema.CreateSchema(schema))
    schema_url = sa.engine.make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
    engine = make_engine({
        "fkod.db.url": schema_url.render_as_string(hide_password=False),
        "fkod.db.pool_size": 2,
        "fkod.db.sqlite_busy_timeout_ms": 0,
    })
    fkod.models.metadata.create_all(engine)
    return admin, engine, schema


def write_in_batches(engine: sa.Engine, records: list[UsageRecord], write) -> None:
    for start in range(0, len(records), DRAIN_BATCH):
        with engine.begin() as connection:
            write(connection, records[start:start + DRAIN_BATCH])


def truncate_usage(engine: sa.Engine) -> None:
    with engine.begin() as connection:
        connection.execute(sa.text("TRUNCATE api_usage"))


def bench_postgres(records: list[UsageRecord], client: redis.Redis | None, url: str) -> None:
    found = postgres_engine_or_none(url)
    if found is None:
        return
    admin, engine, schema = found
    try:
        executemany = best_time(
            RUNS, lambda: write_in_batches(engine, records, insert_usage_records),
            lambda: truncate_usage(engine))
        copy = best_time(
            RUNS, lambda: write_in_batches(engine, records, copy_usage_records),
            lambda: truncate_usage(engine))
        executemany_rate = len(records) / executemany
        copy_rate = len(records) / copy
        print(f"PostgreSQL executemany: {executemany_rate:,.0f} records/s")
        print(f"PostgreSQL COPY: {copy_rate:,.0f} records/s")
        print(f"COPY / executemany: {copy_rate / executemany_rate:.1f}x")

        if client is not None:
            bench_full_drain(records, client, engine)
    finally:
        engine.dispose()
        with admin.begin() as connection:
            connection.execute(sa.schema.DropSchema(schema, cascade=True))
        admin.dispose()


def bench_full_drain(records: list[UsageRecord], client: redis.Redis, engine: sa.Engine) -> None:
    stream = f"fkod:bench:usage:{secrets.token_hex(6)}"
    recorder = RedisUsageStream(client, stream, 3600, max_buffer=len(records))
    try:
        for record in records:
            recorder.record(record)
        recorder.close()
        started = time.perf_counter()
        written = 0
        while True:
            batch = drain_usage_stream(client, stream, engine=engine, consumer="bench",
                                       batch_size=DRAIN_BATCH)
            if not batch:
                break
            written += batch
        elapsed = time.perf_counter() - started
    finally:
        client.delete(stream, dead_letter_stream(stream))
    print(f"whole drain (Redis stream to PostgreSQL COPY, batches of {DRAIN_BATCH}): "
          f"{written / elapsed:,.0f} records/s ({written} records)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000,
                        help="record() calls per timed run (default 100000)")
    parser.add_argument("--drain-records", type=int, default=20_000,
                        help="records written per PostgreSQL run (default 20000)")
    parser.add_argument("--redis-url",
                        default=os.environ.get("FKOD_TEST_REDIS_URL", DEFAULT_REDIS_URL),
                        help="Redis server (default FKOD_TEST_REDIS_URL or %(default)s)")
    parser.add_argument("--postgres-url",
                        default=os.environ.get("FKOD_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL),
                        help="PostgreSQL database (default FKOD_TEST_POSTGRES_URL or %(default)s)")
    args = parser.parse_args()

    client = redis_client_or_none(args.redis_url)
    try:
        bench_record(make_records(args.records), client)
        bench_postgres(make_records(args.drain_records), client, args.postgres_url)
    finally:
        if client is not None:
            client.close()


if __name__ == "__main__":
    main()
