"""Tests of the in-memory usage buffer against a real SQLite file."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import socket
import sqlite3
import threading
import time

import pytest
import redis
import sqlalchemy as sa
from redis.backoff import NoBackoff
from redis.retry import Retry

import fkod.models
from fkod.core.auth.models import ApiKey, Partner
from fkod.core.db import make_engine
from fkod.core.metering import (
    LastUsedThrottle,
    MemoryUsageBuffer,
    RedisUsageStream,
    UsageRecord,
    make_usage_recorder,
)
from fkod.core.metering.models import ApiUsage

# A fixed time with microseconds, so that a lost fraction of a second shows.
T0 = dt.datetime(2027, 1, 15, 8, 0, 0, 123456)

# Long enough that the background thread never flushes during a test that
# calls flush() itself.
NEVER = 3600.0


def make_record(**overrides) -> UsageRecord:
    values = {
        "api_key_id": None,
        "partner_id": None,
        "endpoint": "/api/v1/users/{id}",
        "method": "GET",
        "status_code": 200,
        "response_time": 14,
        "request_size": 0,
        "response_size": 512,
        "error_message": None,
        "livemode": False,
        "request_id": "req_0",
        "created_at": T0,
    }
    values.update(overrides)
    return UsageRecord(**values)


def make_sqlite_engine(path, busy_timeout_ms: int) -> sa.Engine:
    return make_engine({
        "fkod.db.url": f"sqlite:///{path}",
        "fkod.db.pool_size": 1,
        "fkod.db.sqlite_busy_timeout_ms": busy_timeout_ms,
    })


def wait_until(predicate, timeout: float = 10.0) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@contextlib.contextmanager
def sqlite_write_lock(path):
    """Hold SQLite's write lock on ``path`` from a second connection until the block ends."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        yield
        connection.execute("ROLLBACK")
    finally:
        connection.close()


@pytest.fixture
def db_path(tmp_path):
    path = tmp_path / "usage.sqlite"
    engine = make_sqlite_engine(path, busy_timeout_ms=1000)
    fkod.models.metadata.create_all(engine)
    engine.dispose()
    return path


@pytest.fixture
def engine(db_path):
    """Engine whose writes give up after 100 ms when another connection holds the lock."""
    engine = make_sqlite_engine(db_path, busy_timeout_ms=100)
    yield engine
    engine.dispose()


@pytest.fixture
def make_buffer(engine):
    """Factory of buffers on ``engine``; each is closed at teardown."""
    buffers: list[MemoryUsageBuffer] = []

    def make(flush_interval_seconds: float = NEVER, **kwargs) -> MemoryUsageBuffer:
        buffer = MemoryUsageBuffer(engine, flush_interval_seconds, **kwargs)
        buffers.append(buffer)
        return buffer

    yield make
    for buffer in buffers:
        buffer.close()


def create_api_key(engine, last_used: dt.datetime | None = None) -> tuple[int, int]:
    """Insert a partner and one of its API keys; return (partner id, key id)."""
    with engine.begin() as connection:
        partner_id = connection.execute(
            sa.insert(Partner).values(company_name="Acme Learning").returning(Partner.id)
        ).scalar_one()
        key_id = connection.execute(
            sa.insert(ApiKey).values(
                partner_id=partner_id,
                key_name="test key",
                key_hash=f"hash-{partner_id}",
                key_prefix="fk_test_",
                last_used=last_used,
            ).returning(ApiKey.id)
        ).scalar_one()
    return partner_id, key_id


def read_last_used(engine, key_id: int) -> dt.datetime | None:
    with engine.connect() as connection:
        return connection.execute(
            sa.select(ApiKey.last_used).where(ApiKey.id == key_id)
        ).scalar_one()


def stored_records(engine) -> list[UsageRecord]:
    """Return the rows of api_usage in insertion order, as UsageRecords."""
    columns = [getattr(ApiUsage, name) for name in UsageRecord.__dataclass_fields__]
    with engine.connect() as connection:
        rows = connection.execute(sa.select(*columns).order_by(ApiUsage.id)).all()
    return [UsageRecord(*row) for row in rows]


def count_rows(db_path) -> int:
    # A plain sqlite3 connection reads the committed state even while another
    # connection holds the write lock, because the database is in WAL mode.
    connection = sqlite3.connect(db_path)
    try:
        return connection.execute("SELECT count(*) FROM api_usage").fetchone()[0]
    finally:
        connection.close()


def test_flush_writes_every_field(engine, make_buffer):
    partner_id, key_id = create_api_key(engine)
    records = [
        make_record(),
        make_record(api_key_id=key_id, partner_id=partner_id, endpoint="/api/v1/courses",
                    method="POST", status_code=422, response_time=250, request_size=2048,
                    response_size=90, error_message="title: missing", livemode=True,
                    request_id="req_1", created_at=T0 + dt.timedelta(microseconds=1)),
    ]
    buffer = make_buffer()
    for record in records:
        buffer.record(record)

    assert stored_records(engine) == []
    buffer.flush()

    assert stored_records(engine) == records
    assert buffer.buffered_count == 0


def test_close_writes_remaining_records(engine, make_buffer):
    buffer = make_buffer()
    buffer.record(make_record(request_id="before-close"))

    buffer.close()

    assert [record.request_id for record in stored_records(engine)] == ["before-close"]


def test_close_twice_and_record_after_close(engine, make_buffer):
    buffer = make_buffer()
    buffer.close()
    buffer.close()

    buffer.record(make_record())

    assert buffer.dropped_count == 1
    assert stored_records(engine) == []


def test_background_thread_flushes(engine, make_buffer):
    buffer = make_buffer(flush_interval_seconds=0.02)
    buffer.record(make_record(request_id="background"))

    assert wait_until(lambda: len(stored_records(engine)) == 1)


def test_record_returns_while_database_locked(db_path, engine, make_buffer, caplog):
    caplog.set_level(logging.WARNING, logger="fkod.core.metering.base")
    buffer = make_buffer(flush_interval_seconds=0.02)

    with sqlite_write_lock(db_path):
        # record() runs on its own thread so that a call blocked on the lock
        # shows up as a thread still alive, not as a hung test.
        recorder_thread = threading.Thread(
            target=lambda: [buffer.record(make_record(request_id=f"req_{i}")) for i in range(100)]
        )
        recorder_thread.start()
        recorder_thread.join(timeout=10)
        assert not recorder_thread.is_alive()

        assert wait_until(lambda: buffer.failed_attempts >= 3)
        assert count_rows(db_path) == 0
        assert buffer.buffered_count == 100

    assert wait_until(lambda: count_rows(db_path) == 100)
    assert wait_until(lambda: buffer.failed_attempts == 0)
    assert [record.request_id for record in stored_records(engine)] == [
        f"req_{i}" for i in range(100)
    ]
    warnings = [entry for entry in caplog.records if entry.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "keeping 100 records" in warnings[0].getMessage()


def test_failed_flush_keeps_records(db_path, engine, make_buffer):
    buffer = make_buffer()
    for i in range(3):
        buffer.record(make_record(request_id=f"req_{i}"))

    with sqlite_write_lock(db_path):
        with pytest.raises(sa.exc.OperationalError, match="locked"):
            buffer.flush()
        assert buffer.buffered_count == 3
        assert buffer.failed_attempts == 1

    buffer.record(make_record(request_id="req_3"))
    buffer.flush()

    assert [record.request_id for record in stored_records(engine)] == [
        "req_0", "req_1", "req_2", "req_3"
    ]
    assert buffer.failed_attempts == 0


def test_last_used_moves_forward_only(engine, make_buffer):
    _, key_id = create_api_key(engine, last_used=T0)
    _, unused_key_id = create_api_key(engine)
    buffer = make_buffer()

    buffer.record(make_record(api_key_id=key_id, created_at=T0 - dt.timedelta(hours=1)))
    buffer.flush()
    assert read_last_used(engine, key_id) == T0

    newest = T0 + dt.timedelta(hours=1)
    buffer.record(make_record(api_key_id=key_id, created_at=newest))
    buffer.record(make_record(api_key_id=key_id, created_at=T0 + dt.timedelta(minutes=30)))
    buffer.flush()
    assert read_last_used(engine, key_id) == newest

    buffer.record(make_record(api_key_id=key_id, created_at=T0 + dt.timedelta(minutes=10)))
    buffer.flush()
    assert read_last_used(engine, key_id) == newest
    assert read_last_used(engine, unused_key_id) is None


def test_last_used_set_when_null(engine, make_buffer):
    _, key_id = create_api_key(engine)
    buffer = make_buffer()

    buffer.record(make_record(api_key_id=key_id, created_at=T0))
    buffer.flush()

    assert read_last_used(engine, key_id) == T0


def test_limit_drops_oldest_and_counts(engine, make_buffer, caplog):
    caplog.set_level(logging.ERROR, logger="fkod.core.metering.base")
    buffer = make_buffer(max_buffer=5)

    for i in range(8):
        buffer.record(make_record(request_id=f"req_{i}"))

    assert buffer.dropped_count == 3
    assert buffer.buffered_count == 5
    buffer.flush()

    assert [record.request_id for record in stored_records(engine)] == [
        f"req_{i}" for i in range(3, 8)
    ]
    messages = [entry.getMessage() for entry in caplog.records]
    assert any("dropped the 3 oldest" in message for message in messages), messages


def test_requeue_after_failure_respects_limit(engine):
    """Records that arrive during a failed write count toward the limit with the requeued ones."""

    class FailingOnce(MemoryUsageBuffer):
        """Buffer whose first write records two more calls, then fails."""

        failed = False

        def _write_batch(self, records):
            if not self.failed:
                self.failed = True
                self.record(make_record(request_id="during-1"))
                self.record(make_record(request_id="during-2"))
                raise sa.exc.OperationalError("INSERT", {}, Exception("database is locked"))
            super()._write_batch(records)

    buffer = FailingOnce(engine, NEVER, max_buffer=4)
    try:
        for i in range(3):
            buffer.record(make_record(request_id=f"req_{i}"))
        with pytest.raises(sa.exc.OperationalError):
            buffer.flush()

        assert buffer.dropped_count == 1
        buffer.flush()
    finally:
        buffer.close()

    assert [record.request_id for record in stored_records(engine)] == [
        "req_1", "req_2", "during-1", "during-2"
    ]


def test_rejected_record_is_discarded(engine, make_buffer, caplog):
    caplog.set_level(logging.ERROR, logger="fkod.core.metering.memory")
    _, key_id = create_api_key(engine)
    buffer = make_buffer()

    buffer.record(make_record(api_key_id=key_id, request_id="good-1"))
    # No such key: the foreign key rejects the row.
    buffer.record(make_record(api_key_id=key_id + 1000, request_id="bad"))
    buffer.record(make_record(api_key_id=key_id, request_id="good-2",
                              created_at=T0 + dt.timedelta(seconds=1)))
    buffer.flush()

    assert [record.request_id for record in stored_records(engine)] == ["good-1", "good-2"]
    assert buffer.rejected_count == 1
    assert read_last_used(engine, key_id) == T0 + dt.timedelta(seconds=1)
    assert any("bad" in entry.getMessage() for entry in caplog.records)


@pytest.mark.parametrize("field, value", [
    ("status_code", "200"),
    ("status_code", True),
    ("api_key_id", 1.0),
    ("endpoint", None),
    ("livemode", 1),
    ("created_at", T0.replace(tzinfo=dt.UTC)),
])
def test_invalid_record_is_discarded(engine, make_buffer, field, value):
    buffer = make_buffer()

    buffer.record(make_record(request_id="good"))
    buffer.record(make_record(request_id="bad", **{field: value}))
    buffer.flush()

    assert [record.request_id for record in stored_records(engine)] == ["good"]
    assert buffer.rejected_count == 1


@pytest.mark.parametrize("kwargs", [
    {"flush_interval_seconds": 0},
    {"flush_interval_seconds": -1},
    {"flush_interval_seconds": 1, "max_buffer": 0},
])
def test_invalid_arguments_raise(engine, kwargs):
    with pytest.raises(ValueError):
        MemoryUsageBuffer(engine, **kwargs)


def closed_port() -> int:
    """Return a loopback port that nothing listens on (just released by this test)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_make_usage_recorder_memory(engine):
    recorder = make_usage_recorder("memory", engine=engine, redis_client=None,
                                   stream="unused", flush_interval_seconds=NEVER)
    try:
        assert isinstance(recorder, MemoryUsageBuffer)
    finally:
        recorder.close()


def test_make_usage_recorder_redis():
    # The recorder connects only when it has records to send, and this one has none.
    client = redis.Redis(host="127.0.0.1", port=closed_port(), retry=Retry(NoBackoff(), 0))
    try:
        recorder = make_usage_recorder("redis", engine=None, redis_client=client,
                                       stream="fkod:test:unused", flush_interval_seconds=NEVER)
        recorder.close()
    finally:
        client.close()

    assert isinstance(recorder, RedisUsageStream)


@pytest.mark.parametrize("backend, engine_given, client_given, message", [
    ("kafka", True, True, "'kafka'"),
    ("memory", False, True, "database engine"),
    ("redis", True, False, "Redis client"),
])
def test_make_usage_recorder_rejects(engine, backend, engine_given, client_given, message):
    with pytest.raises(ValueError, match=message):
        make_usage_recorder(backend, engine=engine if engine_given else None,
                            redis_client=object() if client_given else None,
                            stream="unused", flush_interval_seconds=NEVER)


# last_used throttling ------------------------------------------------------------


@pytest.fixture
def last_used_updates(engine):
    """List that receives every UPDATE of api_keys that ``engine`` sends."""
    statements: list[str] = []

    def capture(_connection, _cursor, statement, _parameters, _context, _executemany):
        if statement.lstrip().upper().startswith("UPDATE API_KEYS"):
            statements.append(statement)

    sa.event.listen(engine, "before_cursor_execute", capture)
    yield statements
    sa.event.remove(engine, "before_cursor_execute", capture)


def test_last_used_written_at_most_once_a_minute(engine, make_buffer, last_used_updates):
    _, key_id = create_api_key(engine)
    buffer = make_buffer()

    buffer.record(make_record(api_key_id=key_id, created_at=T0))
    buffer.flush()
    assert read_last_used(engine, key_id) == T0
    assert len(last_used_updates) == 1

    buffer.record(make_record(api_key_id=key_id, created_at=T0 + dt.timedelta(seconds=59)))
    buffer.flush()
    assert read_last_used(engine, key_id) == T0
    assert len(last_used_updates) == 1

    buffer.record(make_record(api_key_id=key_id, created_at=T0 + dt.timedelta(seconds=60)))
    buffer.flush()
    assert read_last_used(engine, key_id) == T0 + dt.timedelta(seconds=60)
    assert len(last_used_updates) == 2


def test_last_used_throttled_per_key(engine, make_buffer):
    _, busy_key = create_api_key(engine)
    _, quiet_key = create_api_key(engine)
    buffer = make_buffer()
    buffer.record(make_record(api_key_id=busy_key, created_at=T0))
    buffer.flush()

    buffer.record(make_record(api_key_id=busy_key, created_at=T0 + dt.timedelta(seconds=5)))
    buffer.record(make_record(api_key_id=quiet_key, created_at=T0 + dt.timedelta(seconds=5)))
    buffer.flush()

    assert read_last_used(engine, busy_key) == T0
    assert read_last_used(engine, quiet_key) == T0 + dt.timedelta(seconds=5)


def test_last_used_never_moves_back_across_processes(engine, make_buffer):
    _, key_id = create_api_key(engine)
    # Two buffers stand for two processes, each with its own throttle.
    first = make_buffer()
    second = make_buffer()

    first.record(make_record(api_key_id=key_id, created_at=T0 + dt.timedelta(minutes=2)))
    first.flush()
    second.record(make_record(api_key_id=key_id, created_at=T0 + dt.timedelta(minutes=1)))
    second.flush()
    assert read_last_used(engine, key_id) == T0 + dt.timedelta(minutes=2)

    second.record(make_record(api_key_id=key_id, created_at=T0 + dt.timedelta(minutes=3)))
    second.flush()
    assert read_last_used(engine, key_id) == T0 + dt.timedelta(minutes=3)


def test_last_used_retried_after_failed_write(db_path, engine, make_buffer):
    _, key_id = create_api_key(engine)
    buffer = make_buffer()
    buffer.record(make_record(api_key_id=key_id, created_at=T0))

    with sqlite_write_lock(db_path), pytest.raises(sa.exc.OperationalError):
        buffer.flush()
    buffer.flush()

    # The failed write did not count as written, so the retry writes it.
    assert read_last_used(engine, key_id) == T0


def test_last_used_written_by_one_by_one_path(engine, make_buffer, last_used_updates):
    _, key_id = create_api_key(engine)
    buffer = make_buffer()
    buffer.record(make_record(api_key_id=key_id, created_at=T0))
    buffer.record(make_record(api_key_id=key_id + 1000, created_at=T0))
    buffer.flush()
    assert read_last_used(engine, key_id) == T0

    buffer.record(make_record(api_key_id=key_id, created_at=T0 + dt.timedelta(seconds=30)))
    buffer.flush()

    assert read_last_used(engine, key_id) == T0
    assert len(last_used_updates) == 1


def test_throttle_selects_due_keys():
    throttle = LastUsedThrottle()
    assert throttle.select({1: T0, 2: T0}) == {1: T0, 2: T0}

    throttle.remember({1: T0})

    later = T0 + dt.timedelta(seconds=30)
    assert throttle.select({1: later, 2: later}) == {2: later}
    assert throttle.select({1: T0 - dt.timedelta(hours=1)}) == {}
    minute = T0 + dt.timedelta(minutes=1)
    assert throttle.select({1: minute}) == {1: minute}


def test_throttle_remember_keeps_newest():
    throttle = LastUsedThrottle()
    throttle.remember({1: T0 + dt.timedelta(minutes=5)})
    throttle.remember({1: T0})

    assert throttle.select({1: T0 + dt.timedelta(minutes=5, seconds=59)}) == {}


def test_throttle_forgets_stale_keys_over_limit():
    throttle = LastUsedThrottle(max_keys=2)
    throttle.remember({1: T0, 2: T0})
    latest = T0 + dt.timedelta(minutes=10)

    throttle.remember({3: latest})

    # Keys 1 and 2 are forgotten, which only lets their next call write again.
    assert throttle.select({1: T0 + dt.timedelta(seconds=1)}) == {
        1: T0 + dt.timedelta(seconds=1)}
    assert throttle.select({3: latest + dt.timedelta(seconds=1)}) == {}


@pytest.mark.parametrize("kwargs", [
    {"resolution": dt.timedelta(seconds=-1)},
    {"max_keys": 0},
])
def test_throttle_rejects_arguments(kwargs):
    with pytest.raises(ValueError):
        LastUsedThrottle(**kwargs)
