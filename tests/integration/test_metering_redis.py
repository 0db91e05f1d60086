"""Tests of the Redis usage stream and its drain against real Redis, PostgreSQL and SQLite.

They need the ``redis_url`` and ``make_postgres_schema`` fixtures from
conftest.py. Each test uses a stream with a random name and deletes it, with
its dead-letter stream, afterwards.
"""

from __future__ import annotations

import datetime as dt
import logging
import select
import socket
import threading
import uuid

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
    RedisUsageStream,
    UsageRecord,
    drain_usage_stream,
)
from fkod.core.metering import drain as drain_module
from fkod.core.metering.drain import dead_letter_stream
from fkod.core.metering.models import ApiUsage
from fkod.core.metering.redis import decode_record, encode_record
from tests.unit.test_metering_memory import closed_port, make_record, wait_until

T0 = dt.datetime(2027, 1, 15, 8, 0, 0, 123456)
GROUP = "fkod-usage"


@pytest.fixture
def stream(redis_url):
    """Random stream name for one test; the stream and its dead-letter stream are deleted at teardown."""
    name = f"fkod:test:usage:{uuid.uuid4().hex}"
    yield name

    client = redis.Redis.from_url(redis_url)
    try:
        client.delete(name, dead_letter_stream(name))
    finally:
        client.close()


@pytest.fixture
def redis_client(redis_url):
    client = redis.Redis.from_url(redis_url, socket_timeout=10)
    yield client
    client.close()


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


@pytest.fixture
def sqlite_engine(tmp_path):
    engine = make_engine({
        "fkod.db.url": f"sqlite:///{tmp_path / 'usage.sqlite'}",
        "fkod.db.pool_size": 1,
        "fkod.db.sqlite_busy_timeout_ms": 5000,
    })
    fkod.models.metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture(params=["postgres", "sqlite"])
def engine(request):
    """Each database the drain supports: PostgreSQL (COPY) and SQLite (executemany)."""
    return request.getfixturevalue(f"{request.param}_engine")


def create_api_key(engine) -> tuple[int, int]:
    """Insert a partner and one of its API keys; return (partner id, key id)."""
    with engine.begin() as connection:
        partner_id = connection.execute(
            sa.insert(Partner).values(company_name="Acme Learning").returning(Partner.id)
        ).scalar_one()
        key_id = connection.execute(
            sa.insert(ApiKey).values(partner_id=partner_id, key_name="test key",
                                     key_hash=f"hash-{partner_id}", key_prefix="fk_test_")
            .returning(ApiKey.id)
        ).scalar_one()
    return partner_id, key_id


def stored_records(engine) -> list[UsageRecord]:
    columns = [getattr(ApiUsage, name) for name in UsageRecord.__dataclass_fields__]
    with engine.connect() as connection:
        rows = connection.execute(sa.select(*columns).order_by(ApiUsage.id)).all()
    return [UsageRecord(*row) for row in rows]


def append_records(client, stream, records) -> None:
    """Append ``records`` to ``stream`` through a RedisUsageStream and close it."""
    recorder = RedisUsageStream(client, stream, flush_interval_seconds=3600)
    for record in records:
        recorder.record(record)
    recorder.close()


def drain_all(client, stream, engine, consumer="worker-1", **kwargs) -> int:
    total = 0
    while True:
        written = drain_usage_stream(client, stream, engine=engine, consumer=consumer, **kwargs)
        if not written:
            return total
        total += written


def pending_count(client, stream) -> int:
    return client.xpending(stream, GROUP)["pending"]


def test_round_trip_writes_every_field(redis_client, stream, engine, monkeypatch):
    copy_calls = []
    real_copy = drain_module.copy_usage_records

    def counting_copy(connection, records, last_used=None):
        copy_calls.append(len(records))
        return real_copy(connection, records, last_used)

    monkeypatch.setattr(drain_module, "copy_usage_records", counting_copy)
    partner_id, key_id = create_api_key(engine)
    records = [
        make_record(
            api_key_id=key_id if i % 2 else None,
            partner_id=partner_id if i % 3 else None,
            endpoint=f"/api/v1/courses/{{id}}/lessons/{i}",
            method=("GET", "POST", "DELETE")[i % 3],
            status_code=200 + i,
            response_time=i * 7,
            request_size=i * 100,
            response_size=i * 1000,
            error_message=f"failure \"{i}\"\n\ttab\\back ünï" if i % 4 == 0 else None,
            livemode=bool(i % 2),
            request_id=f"req_{i}" if i % 5 else None,
            created_at=T0 + dt.timedelta(seconds=i, microseconds=i),
        )
        for i in range(50)
    ]
    append_records(redis_client, stream, records)

    written = drain_usage_stream(redis_client, stream, engine=engine, consumer="worker-1")

    assert written == 50
    assert stored_records(engine) == records
    assert redis_client.xlen(stream) == 0
    assert pending_count(redis_client, stream) == 0
    with engine.connect() as connection:
        last_used = connection.execute(
            sa.select(ApiKey.last_used).where(ApiKey.id == key_id)
        ).scalar_one()
    assert last_used == T0 + dt.timedelta(seconds=49, microseconds=49)
    if engine.dialect.name == "postgresql":
        assert copy_calls == [50]
    else:
        assert copy_calls == []


def test_empty_stream_returns_zero(redis_client, stream, sqlite_engine):
    assert drain_usage_stream(redis_client, stream, engine=sqlite_engine,
                              consumer="worker-1", block_ms=20) == 0
    assert redis_client.xinfo_groups(stream)[0]["name"] == GROUP.encode()


def test_batch_size_limits_one_call(redis_client, stream, sqlite_engine):
    append_records(redis_client, stream, [make_record(request_id=f"req_{i}") for i in range(5)])

    assert drain_usage_stream(redis_client, stream, engine=sqlite_engine,
                              consumer="worker-1", batch_size=2) == 2
    assert drain_all(redis_client, stream, sqlite_engine, batch_size=2) == 3
    assert [record.request_id for record in stored_records(sqlite_engine)] == [
        f"req_{i}" for i in range(5)
    ]


def test_concurrent_drainers_write_each_record_once(redis_client, redis_url, stream,
                                                    postgres_engine):
    count = 2000
    append_records(redis_client, stream,
                   [make_record(request_id=f"req_{i}") for i in range(count)])
    start = threading.Barrier(2)
    totals: dict[str, int] = {}

    def run(consumer: str) -> None:
        client = redis.Redis.from_url(redis_url, socket_timeout=10)
        try:
            start.wait()
            totals[consumer] = drain_all(client, stream, postgres_engine,
                                         consumer=consumer, batch_size=50)
        finally:
            client.close()

    threads = [threading.Thread(target=run, args=(name,)) for name in ("worker-a", "worker-b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
        assert not thread.is_alive()

    assert sum(totals.values()) == count
    with postgres_engine.connect() as connection:
        rows, distinct = connection.execute(
            sa.select(sa.func.count(), sa.func.count(sa.distinct(ApiUsage.request_id)))
        ).one()
    assert rows == count
    assert distinct == count
    assert redis_client.xlen(stream) == 0


def test_pending_entries_of_dead_consumer_are_reclaimed(redis_client, stream, sqlite_engine):
    append_records(redis_client, stream, [make_record(request_id=f"req_{i}") for i in range(3)])
    redis_client.xgroup_create(stream, GROUP, id="0")
    # This consumer reads and then dies without acknowledging.
    redis_client.xreadgroup(GROUP, "dead-worker", {stream: ">"}, count=3)

    written = drain_usage_stream(redis_client, stream, engine=sqlite_engine,
                                 consumer="worker-1", claim_idle_ms=60_000)
    assert written == 0
    assert stored_records(sqlite_engine) == []

    written = drain_usage_stream(redis_client, stream, engine=sqlite_engine,
                                 consumer="worker-1", claim_idle_ms=0)
    assert written == 3
    assert [record.request_id for record in stored_records(sqlite_engine)] == [
        "req_0", "req_1", "req_2"
    ]
    assert pending_count(redis_client, stream) == 0


def test_failed_write_is_retried_by_same_consumer(redis_client, stream, tmp_path, sqlite_engine):
    append_records(redis_client, stream, [make_record(request_id=f"req_{i}") for i in range(3)])
    # A second engine on the same file whose writes fail at once on a lock.
    impatient = make_engine({
        "fkod.db.url": str(sqlite_engine.url),
        "fkod.db.pool_size": 1,
        "fkod.db.sqlite_busy_timeout_ms": 0,
    })
    try:
        with sqlite_engine.connect() as holder:
            holder.begin()
            with pytest.raises(sa.exc.OperationalError, match="locked"):
                drain_usage_stream(redis_client, stream, engine=impatient, consumer="worker-1")
            holder.rollback()
        assert pending_count(redis_client, stream) == 3

        # The entries are this consumer's own, so they come back without waiting
        # for claim_idle_ms.
        written = drain_usage_stream(redis_client, stream, engine=impatient,
                                     consumer="worker-1")
    finally:
        impatient.dispose()

    assert written == 3
    assert pending_count(redis_client, stream) == 0


def test_malformed_entries_go_to_dead_stream(redis_client, stream, sqlite_engine, caplog):
    caplog.set_level(logging.ERROR, logger="fkod.core.metering.drain")
    bad_ids = [
        redis_client.xadd(stream, {"r": "not json"}),
        redis_client.xadd(stream, {"other": "1"}),
        redis_client.xadd(stream, {"r": "[1,2]"}),
        redis_client.xadd(stream, {"r": encode_record(make_record()).replace("200", "\"200\"")}),
    ]
    redis_client.xadd(stream, {"r": encode_record(make_record(request_id="good"))})

    written = drain_usage_stream(redis_client, stream, engine=sqlite_engine, consumer="worker-1")

    assert written == 1
    assert [record.request_id for record in stored_records(sqlite_engine)] == ["good"]
    dead = redis_client.xrange(dead_letter_stream(stream))
    assert [fields[b"dead_source_id"] for _id, fields in dead] == bad_ids
    for _id, fields in dead:
        assert fields[b"dead_reason"].startswith(b"invalid entry: ")
        assert fields[b"dead_consumer"] == b"worker-1"
    assert dead[1][1][b"other"] == b"1"
    assert redis_client.xlen(stream) == 0
    assert pending_count(redis_client, stream) == 0
    assert len(caplog.records) == 4


def test_rejected_record_goes_to_dead_stream(redis_client, stream, engine):
    _, key_id = create_api_key(engine)
    append_records(redis_client, stream, [
        make_record(api_key_id=key_id, request_id="good-1"),
        make_record(api_key_id=key_id + 1000, request_id="no-such-key"),
        make_record(api_key_id=key_id, request_id="good-2"),
    ])

    written = drain_usage_stream(redis_client, stream, engine=engine, consumer="worker-1")

    assert written == 2
    assert [record.request_id for record in stored_records(engine)] == ["good-1", "good-2"]
    dead = redis_client.xrange(dead_letter_stream(stream))
    assert len(dead) == 1
    fields = dead[0][1]
    assert fields[b"dead_reason"].startswith(b"rejected by the database: ")
    assert decode_record(fields[b"r"]).request_id == "no-such-key"
    assert pending_count(redis_client, stream) == 0


@pytest.mark.parametrize("overrides, message", [
    ({"endpoint": "/" + "x" * 300}, b"value too long"),
    ({"error_message": "nul \x00 byte"}, b"NUL"),
])
def test_value_postgres_cannot_store_goes_to_dead_stream(redis_client, stream, postgres_engine,
                                                        overrides, message):
    append_records(redis_client, stream, [
        make_record(request_id="good"),
        make_record(request_id="bad", **overrides),
    ])

    written = drain_usage_stream(redis_client, stream, engine=postgres_engine,
                                 consumer="worker-1")

    assert written == 1
    assert [record.request_id for record in stored_records(postgres_engine)] == ["good"]
    dead = redis_client.xrange(dead_letter_stream(stream))
    assert len(dead) == 1
    assert message in dead[0][1][b"dead_reason"]
    assert pending_count(redis_client, stream) == 0


def test_deleted_pending_entry_is_acknowledged(redis_client, stream, sqlite_engine):
    append_records(redis_client, stream, [make_record(request_id=f"req_{i}") for i in range(2)])
    redis_client.xgroup_create(stream, GROUP, id="0")
    entries = redis_client.xreadgroup(GROUP, "worker-1", {stream: ">"}, count=2)[0][1]
    redis_client.xdel(stream, entries[0][0])

    written = drain_usage_stream(redis_client, stream, engine=sqlite_engine, consumer="worker-1")

    assert written == 1
    assert pending_count(redis_client, stream) == 0
    assert redis_client.xlen(dead_letter_stream(stream)) == 0


@pytest.mark.parametrize("kwargs", [
    {"consumer": ""},
    {"consumer": "worker-1", "batch_size": 0},
    {"consumer": "worker-1", "block_ms": -1},
    {"consumer": "worker-1", "claim_idle_ms": -1},
])
def test_drain_rejects_invalid_arguments(redis_client, stream, sqlite_engine, kwargs):
    with pytest.raises(ValueError):
        drain_usage_stream(redis_client, stream, engine=sqlite_engine, **kwargs)


class TcpForwarder:
    """Loopback TCP proxy to Redis that the test starts late, to end an outage on cue."""

    def __init__(self, listen_port: int, target: tuple[str, int]) -> None:
        self._listen_port = listen_port
        self._target = target
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._listener: socket.socket | None = None

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self._listen_port))
        listener.listen()
        self._listener = listener
        self._spawn(self._accept_loop)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        for sock in self._sockets:
            sock.close()
        if self._listener is not None:
            self._listener.close()

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            readable, _, _ = select.select([self._listener], [], [], 0.05)
            if not readable:
                continue
            client_side, _ = self._listener.accept()
            server_side = socket.create_connection(self._target)
            self._sockets += [client_side, server_side]
            self._spawn(self._pump, client_side, server_side)
            self._spawn(self._pump, server_side, client_side)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        while not self._stop.is_set():
            readable, _, _ = select.select([source], [], [], 0.05)
            if not readable:
                continue
            data = source.recv(65536)
            if not data:
                return
            sink.sendall(data)


def unreachable_client(port: int) -> redis.Redis:
    """Client that fails fast: no retries, short timeouts."""
    return redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1,
                       socket_timeout=2, retry=Retry(NoBackoff(), 0))


def test_records_wait_out_redis_outage(redis_client, redis_url, stream, caplog):
    caplog.set_level(logging.WARNING, logger="fkod.core.metering.base")
    port = closed_port()
    client = unreachable_client(port)
    recorder = RedisUsageStream(client, stream, flush_interval_seconds=0.02)
    target = redis.connection.parse_url(redis_url)
    forwarder = TcpForwarder(port, (target.get("host", "127.0.0.1"), target.get("port", 6379)))
    try:
        for i in range(10):
            recorder.record(make_record(request_id=f"req_{i}"))
        assert wait_until(lambda: recorder.failed_attempts >= 3)
        assert recorder.buffered_count == 10

        forwarder.start()
        assert wait_until(lambda: redis_client.xlen(stream) == 10)
        assert wait_until(lambda: recorder.failed_attempts == 0)
    finally:
        recorder.close()
        client.close()
        forwarder.stop()

    entries = redis_client.xrange(stream)
    assert [decode_record(fields[b"r"]).request_id for _id, fields in entries] == [
        f"req_{i}" for i in range(10)
    ]
    warnings = [entry for entry in caplog.records if entry.levelno == logging.WARNING]
    assert len(warnings) == 1


def test_close_with_redis_unreachable_logs_loss(caplog):
    caplog.set_level(logging.ERROR, logger="fkod.core.metering.base")
    client = unreachable_client(closed_port())
    recorder = RedisUsageStream(client, "fkod:test:usage:unreachable", flush_interval_seconds=3600)
    try:
        for i in range(5):
            recorder.record(make_record(request_id=f"req_{i}"))
        closer = threading.Thread(target=recorder.close)
        closer.start()
        closer.join(timeout=10)
        assert not closer.is_alive()
    finally:
        client.close()

    messages = [entry.getMessage() for entry in caplog.records]
    assert any("5 records are lost" in message for message in messages), messages


def test_record_codec_round_trip():
    record = make_record(api_key_id=3, partner_id=4, error_message="boom ✓", livemode=True,
                         created_at=dt.datetime(1969, 12, 31, 23, 59, 59, 999999))

    assert decode_record(encode_record(record)) == record
    assert decode_record(encode_record(record).encode()) == record


@pytest.mark.parametrize("payload, message", [
    (b"not json", "Expecting value"),
    (b"\xff", "utf-8"),
    (b"{}", "JSON array of 12"),
    (b"[1,2,3]", "JSON array of 12"),
    (b'[null,null,"/a","GET",200,1,2,3,null,false,"r",1.5]', "created_at"),
    (b'[null,null,"/a","GET",200,1,2,3,null,false,"r",true]', "created_at"),
    (b'[null,null,"/a","GET",200,1,2,3,null,false,"r",99999999999999999999]', "out of range"),
    (b'[true,null,"/a","GET",200,1,2,3,null,false,"r",0]', "api_key_id"),
    (b'[null,null,"/a","GET",200,1,2,3,null,"yes","r",0]', "livemode"),
    (b'[null,null,7,"GET",200,1,2,3,null,false,"r",0]', "endpoint"),
])
def test_decode_record_rejects(payload, message):
    with pytest.raises(ValueError, match=message):
        decode_record(payload)


def read_last_used(engine, key_id: int) -> dt.datetime | None:
    with engine.connect() as connection:
        return connection.execute(
            sa.select(ApiKey.last_used).where(ApiKey.id == key_id)
        ).scalar_one()


def test_drain_writes_last_used_once_a_minute(redis_client, stream, engine):
    _, key_id = create_api_key(engine)
    throttle = LastUsedThrottle()

    def drain_one(created_at: dt.datetime) -> None:
        append_records(redis_client, stream, [make_record(api_key_id=key_id,
                                                          created_at=created_at)])
        assert drain_usage_stream(redis_client, stream, engine=engine, consumer="worker-1",
                                  last_used=throttle) == 1

    drain_one(T0)
    assert read_last_used(engine, key_id) == T0

    drain_one(T0 + dt.timedelta(seconds=59))
    assert read_last_used(engine, key_id) == T0

    drain_one(T0 + dt.timedelta(seconds=61))
    assert read_last_used(engine, key_id) == T0 + dt.timedelta(seconds=61)
    assert len(stored_records(engine)) == 3


def test_drain_throttle_skips_rejected_batch(redis_client, stream, engine):
    _, key_id = create_api_key(engine)
    throttle = LastUsedThrottle()
    append_records(redis_client, stream, [
        make_record(api_key_id=key_id, created_at=T0, request_id="good"),
        make_record(api_key_id=key_id + 1000, created_at=T0, request_id="no-such-key"),
    ])

    drain_usage_stream(redis_client, stream, engine=engine, consumer="worker-1",
                       last_used=throttle)
    append_records(redis_client, stream, [
        make_record(api_key_id=key_id, created_at=T0 + dt.timedelta(seconds=30))])
    drain_usage_stream(redis_client, stream, engine=engine, consumer="worker-1",
                       last_used=throttle)

    # The one-by-one path wrote T0 and the throttle remembered it.
    assert read_last_used(engine, key_id) == T0
