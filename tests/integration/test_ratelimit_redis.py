"""Tests of the Redis rate limiter against a real Redis server.

They need the ``redis_url`` fixture from conftest.py. Each test writes only
keys under its own random prefix and deletes them afterwards.
"""

from __future__ import annotations

import multiprocessing
import socket
import threading
import time
import urllib.parse
import uuid

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from fkod.core.ratelimit import (
    LimitCheck,
    RateLimiterUnavailable,
    RedisRateLimiter,
    make_rate_limiter,
)
from tests.unit.ratelimit_contract import RateLimiterContract


class TcpProxy:
    """TCP forwarder on 127.0.0.1 in front of a real server, which a test stops and restarts.

    :meth:`stop` closes the listening socket and every forwarded connection,
    so clients see the server go away. :meth:`start` listens again on the same
    port. The server behind the proxy keeps running throughout.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._listener: socket.socket | None = None
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stopped = threading.Event()

    def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.05)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._stopped = threading.Event()
        threading.Thread(target=self._accept, args=(listener, self._stopped),
                         daemon=True).start()

    def stop(self) -> None:
        self._stopped.set()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            connections = list(self._connections)
            self._connections.clear()
        for connection in connections:
            _close_quietly(connection)

    def url_for(self, url: str) -> str:
        """Return ``url`` with its host and port replaced by the proxy's."""
        parts = urllib.parse.urlsplit(url)
        credentials = parts.netloc.rpartition("@")[0]
        netloc = f"127.0.0.1:{self.port}"
        if credentials:
            netloc = f"{credentials}@{netloc}"
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))

    def _accept(self, listener: socket.socket, stopped: threading.Event) -> None:
        while not stopped.is_set():
            try:
                client, _address = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=2)
            except OSError:
                _close_quietly(client)
                continue
            client.settimeout(None)
            upstream.settimeout(None)
            with self._lock:
                if stopped.is_set():
                    _close_quietly(client)
                    _close_quietly(upstream)
                    return
                self._connections.update((client, upstream))
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            _close_quietly(source)
            _close_quietly(target)


def _close_quietly(connection: socket.socket) -> None:
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    connection.close()


@pytest.fixture
def redis_proxy(redis_url):
    """A started TcpProxy in front of the test Redis; stopped at teardown."""
    parts = urllib.parse.urlsplit(redis_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 6379)
    proxy.start()
    yield proxy
    proxy.stop()


@pytest.fixture
def key_prefix(redis_url):
    """Random key prefix for one test. Its keys are deleted at teardown."""
    prefix = f"fkod:test:rl:{uuid.uuid4().hex}:"
    yield prefix

    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def redis_client(redis_url):
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def make_redis_limiter(redis_url, key_prefix):
    """Factory of Redis limiters on the test's key prefix, each with its own client."""
    limiters: list[RedisRateLimiter] = []

    def make(sub_buckets: int = 60, lease_size: int = 1) -> RedisRateLimiter:
        limiter = RedisRateLimiter(
            redis.Redis.from_url(redis_url),
            sub_buckets=sub_buckets,
            key_prefix=key_prefix,
            lease_size=lease_size,
        )
        limiters.append(limiter)
        return limiter

    yield make
    for limiter in limiters:
        limiter.close()


class TestRedisContract(RateLimiterContract):
    """The shared contract, run against RedisRateLimiter in real time, with and without leasing."""

    @pytest.fixture(params=[1, 16], ids=["lease1", "lease16"])
    def make_limiter(self, request, make_redis_limiter):
        return lambda: make_redis_limiter(self.sub_buckets, lease_size=request.param)

    @pytest.fixture
    def clock(self):
        return time.time

    @pytest.fixture
    def advance(self):
        return time.sleep


def prefixed_keys(client: redis.Redis, prefix: str) -> list[bytes]:
    return sorted(client.scan_iter(match=prefix + "*", count=1000))


def test_every_key_has_ttl(make_redis_limiter, redis_client, key_prefix):
    limiter = make_redis_limiter()
    checks = [
        LimitCheck("partner:1:live", 100, 2),
        LimitCheck("partner:1:live", 1000, 30),
        LimitCheck("key:1", 50, 5),
    ]
    for _ in range(5):
        assert limiter.hit(checks).allowed
    limiter.hit([LimitCheck("key:2", 1, 3)], cost=1)

    keys = prefixed_keys(redis_client, key_prefix)

    assert len(keys) == 3
    for key in keys:
        ttl_ms = redis_client.pttl(key)
        assert ttl_ms > 0, key
        assert redis_client.ttl(key) > 0, key
        # The longest window is 30 s plus one sub-bucket of 0.5 s.
        assert ttl_ms <= 30_500, key


def test_short_window_keeps_longer_ttl(make_redis_limiter, redis_client, key_prefix):
    limiter = make_redis_limiter()
    limiter.hit([LimitCheck("s", 10, 60)])

    limiter.hit([LimitCheck("s", 10, 1)])

    assert redis_client.pttl(key_prefix + "s") > 55_000


def test_peek_and_rejection_write_no_key(make_redis_limiter, redis_client, key_prefix):
    limiter = make_redis_limiter()

    limiter.peek([LimitCheck("peeked", 5, 10)])
    limiter.hit([LimitCheck("rejected", 5, 10)], cost=6)

    assert prefixed_keys(redis_client, key_prefix) == []


def test_expired_fields_deleted(make_redis_limiter, redis_client, key_prefix):
    limiter = make_redis_limiter(sub_buckets=2)
    checks = [LimitCheck("s", 100, 1)]
    limiter.hit(checks)

    time.sleep(1.1)
    limiter.hit(checks)

    fields = redis_client.hgetall(key_prefix + "s")
    assert len(fields) == 1
    assert list(fields.values()) == [b"1"]


def test_reset_deletes_key(make_redis_limiter, redis_client, key_prefix):
    limiter = make_redis_limiter()
    limiter.hit([LimitCheck("s", 10, 60)])

    limiter.reset("s")

    assert redis_client.exists(key_prefix + "s") == 0


def test_script_reloaded_after_noscript(make_redis_limiter):
    limiter = make_redis_limiter()
    # A digest the server does not know makes EVALSHA fail with NOSCRIPT.
    limiter._script.sha = "0" * 40

    decision = limiter.hit([LimitCheck("s", 10, 60)])

    assert decision.allowed is True
    assert decision.remaining == 9


def test_factory_builds_redis_limiter(redis_url, key_prefix, redis_client):
    limiter = make_rate_limiter("redis", redis_url=redis_url, sub_buckets=30, key_prefix=key_prefix)
    try:
        assert isinstance(limiter, RedisRateLimiter)
        assert limiter.hit([LimitCheck("s", 2, 60)]).remaining == 1
    finally:
        limiter.close()

    assert redis_client.exists(key_prefix + "s") == 1


def _hit_from_process(redis_url, key_prefix, subjects, thread_count, barrier, results):
    """Hit each subject from ``thread_count`` threads, after all processes reach ``barrier``."""
    client = redis.Redis.from_url(redis_url)
    limiter = RedisRateLimiter(client, key_prefix=key_prefix)
    counts = []
    try:
        for subject in subjects:
            checks = [LimitCheck(subject, 10, 60)]
            go = threading.Event()
            outcomes: list[bool] = []
            lock = threading.Lock()

            def worker(checks=checks, go=go, outcomes=outcomes, lock=lock):
                go.wait(timeout=30)
                allowed = limiter.hit(checks).allowed
                with lock:
                    outcomes.append(allowed)

            threads = [threading.Thread(target=worker) for _ in range(thread_count)]
            for thread in threads:
                thread.start()
            barrier.wait(timeout=60)
            go.set()
            for thread in threads:
                thread.join(timeout=60)
            counts.append((outcomes.count(True), len(outcomes)))
        results.put(counts)
    finally:
        limiter.close()


def test_processes_admit_exactly_limit(redis_url, key_prefix):
    context = multiprocessing.get_context("spawn")
    thread_counts = [13, 13, 12, 12]  # 50 requests in all
    subjects = [f"partner:{uuid.uuid4().hex}:live" for _ in range(3)]
    barrier = context.Barrier(len(thread_counts))
    results = context.Queue()

    processes = [
        context.Process(
            target=_hit_from_process,
            args=(redis_url, key_prefix, subjects, thread_count, barrier, results),
        )
        for thread_count in thread_counts
    ]
    for process in processes:
        process.start()
    per_process = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    results.close()
    results.join_thread()

    assert [process.exitcode for process in processes] == [0, 0, 0, 0]
    for round_number in range(len(subjects)):
        admitted = sum(counts[round_number][0] for counts in per_process)
        completed = sum(counts[round_number][1] for counts in per_process)
        assert completed == 50, f"round {round_number}"
        assert admitted == 10, f"round {round_number}"


def closed_port_limiter() -> RedisRateLimiter:
    client = redis.Redis(
        host="127.0.0.1",
        port=1,
        socket_connect_timeout=0.5,
        socket_timeout=0.5,
        retry=Retry(NoBackoff(), 0),
    )
    return RedisRateLimiter(client)


def test_unreachable_redis_hit_unavailable():
    limiter = closed_port_limiter()
    try:
        with pytest.raises(RateLimiterUnavailable, match="Redis rate limiter script failed"):
            limiter.hit([LimitCheck("s", 10, 60)])
    finally:
        limiter.close()


def test_unreachable_redis_peek_and_reset():
    limiter = closed_port_limiter()
    try:
        with pytest.raises(RateLimiterUnavailable):
            limiter.peek([LimitCheck("s", 10, 60)])
        with pytest.raises(RateLimiterUnavailable, match="failed to reset"):
            limiter.reset("s")
    finally:
        limiter.close()


def test_factory_limiter_unavailable_on_closed_port():
    limiter = make_rate_limiter(
        "redis", redis_url="redis://127.0.0.1:1/0", sub_buckets=60, key_prefix="unused:"
    )
    try:
        started = time.monotonic()
        with pytest.raises(RateLimiterUnavailable):
            limiter.hit([LimitCheck("s", 10, 60)])
        # A closed port refuses the connection at once, and the factory's client
        # retries once without backoff, so this takes far less than 5 s.
        assert time.monotonic() - started < 5
    finally:
        limiter.close()


def test_unlimited_needs_no_redis():
    limiter = closed_port_limiter()
    try:
        assert limiter.hit([]).unlimited is True
    finally:
        limiter.close()


# Outages: Redis goes away and comes back -----------------------------------------


def test_limiter_recovers_when_redis_returns(redis_url, redis_proxy, key_prefix):
    limiter = make_rate_limiter("redis", redis_url=redis_proxy.url_for(redis_url),
                                sub_buckets=60, key_prefix=key_prefix)
    checks = [LimitCheck("s", 10, 60)]
    try:
        assert limiter.hit(checks).remaining == 9

        redis_proxy.stop()
        with pytest.raises(RateLimiterUnavailable):
            limiter.hit(checks)
        with pytest.raises(RateLimiterUnavailable):
            limiter.peek(checks)

        redis_proxy.start()
        # The counts lived in Redis all along, and the client reconnects by itself.
        assert limiter.hit(checks).remaining == 8
    finally:
        limiter.close()


@pytest.mark.parametrize("lease_size", [1, 16])
def test_outage_keeps_limit_exact(redis_url, redis_proxy, key_prefix, lease_size):
    limiter = make_rate_limiter("redis", redis_url=redis_proxy.url_for(redis_url),
                                sub_buckets=60, key_prefix=key_prefix, lease_size=lease_size)
    checks = [LimitCheck("s", 100, 600)]
    try:
        admitted = sum(limiter.hit(checks).allowed for _ in range(30))
        redis_proxy.stop()
        failures = 0
        for _ in range(5):
            try:
                admitted += limiter.hit(checks).allowed
            except RateLimiterUnavailable:
                failures += 1
        redis_proxy.start()
        admitted += sum(limiter.hit(checks).allowed for _ in range(200))
    finally:
        limiter.close()

    # Calls answered from a lease during the outage still count toward the limit.
    assert failures >= 1
    assert admitted <= 100
    assert admitted >= 100 - (lease_size - 1)


# Leasing -------------------------------------------------------------------------


class CountingScript:
    """Wraps a limiter's registered script and counts the calls that reach Redis."""

    def __init__(self, limiter: RedisRateLimiter) -> None:
        self.calls = 0
        self._script = limiter._script
        limiter._script = self

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self._script(*args, **kwargs)


def test_lease_saves_round_trips(make_redis_limiter):
    limiter = make_redis_limiter(lease_size=16)
    counter = CountingScript(limiter)
    checks = [LimitCheck("s", 100_000, 3600), LimitCheck("k", 100_000, 600)]

    remaining = [limiter.hit(checks).remaining for _ in range(160)]

    # Sub-buckets of 10 s and more rarely end during the loop, so nearly every
    # lease is spent in full.
    assert counter.calls <= 12
    assert remaining == list(range(99_999, 99_999 - 160, -1))


def test_lease_never_exceeds_limit(make_redis_limiter):
    first = make_redis_limiter(lease_size=16)
    second = make_redis_limiter(lease_size=16)
    checks = [LimitCheck("s", 200, 600)]

    admitted = 0
    for round_number in range(300):
        limiter = first if round_number % 3 else second
        admitted += limiter.hit(checks).allowed

    assert admitted <= 200
    # The other limiter holds at most 15 unspent permits of one lease.
    assert admitted >= 200 - 15


def test_lease_early_rejection_bounded(make_redis_limiter):
    holder = make_redis_limiter(lease_size=16)
    other = make_redis_limiter(lease_size=16)
    checks = [LimitCheck("s", 1000, 3600)]

    # With 1000 units free the lease takes min(16, 1000 // 4) permits.
    assert holder.hit(checks).remaining == 999
    other_admitted = sum(other.hit(checks).allowed for _ in range(1000))
    holder_admitted = 1 + sum(holder.hit(checks).allowed for _ in range(30))

    assert other_admitted == 1000 - 16
    assert holder_admitted == 16
    assert other.peek(checks).remaining == 0


def test_lease_is_single_permit_near_limit(make_redis_limiter, redis_client, key_prefix):
    limiter = make_redis_limiter(lease_size=16)
    checks = [LimitCheck("s", 20, 3600)]

    counted_after_spent = []
    for _ in range(21):
        allowed = limiter.hit(checks).allowed
        counted = int(redis_client.hget(key_prefix + "s", _current_field(3600, 60)))
        counted_after_spent.append((allowed, counted))

    assert [allowed for allowed, _ in counted_after_spent] == [True] * 20 + [False]
    # Leases of 20 // 4, 15 // 4, 12 // 4 and 9 // 4 permits, then single permits
    # once fewer than 8 units are free.
    assert [counted for _, counted in counted_after_spent] == (
        [5] * 5 + [8] * 3 + [11] * 3 + [13] * 2 + list(range(14, 21)) + [20]
    )


def _current_field(window: int, sub_buckets: int) -> str:
    from fkod.core.ratelimit.base import bucket_index

    client_now_ms = int(time.time() * 1000)
    return f"{window}:{bucket_index(client_now_ms, window, sub_buckets)}"


def test_expired_lease_permits_returned(make_redis_limiter, redis_client, key_prefix):
    limiter = make_redis_limiter(lease_size=16)
    checks = [LimitCheck("s", 1000, 2)]

    assert limiter.hit(checks).allowed
    assert limiter.peek(checks).remaining == 1000 - 16
    # One sub-bucket of a 2 s window is about 34 ms, and the lease ends with it.
    time.sleep(0.1)
    limiter.hit([LimitCheck("other", 1000, 60)])

    assert limiter.peek(checks).remaining == 999
    assert not [field for field in redis_client.hkeys(key_prefix + "s")
                if field.startswith(b"lease:")]


def test_expired_lease_not_spent(make_redis_limiter):
    limiter = make_redis_limiter(lease_size=16)
    counter = CountingScript(limiter)
    checks = [LimitCheck("s", 1000, 2)]

    limiter.hit(checks)
    time.sleep(0.1)
    decision = limiter.hit(checks)

    assert counter.calls == 2
    # The first lease's 15 unspent permits went back in the second call.
    assert decision.remaining == 998


def test_refund_after_reset_takes_nothing(make_redis_limiter):
    holder = make_redis_limiter(lease_size=16)
    admin = make_redis_limiter()
    checks = [LimitCheck("s", 1000, 2)]

    holder.hit(checks)
    admin.reset("s")
    for _ in range(5):
        admin.hit(checks)
    time.sleep(0.1)
    holder.hit([LimitCheck("other", 1000, 60)])

    assert admin.peek(checks).remaining == 995


def test_reset_drops_local_lease(make_redis_limiter):
    limiter = make_redis_limiter(lease_size=16)
    counter = CountingScript(limiter)
    checks = [LimitCheck("s", 1000, 3600)]

    limiter.hit(checks)
    limiter.reset("s")
    decision = limiter.hit(checks)

    assert counter.calls == 2
    assert decision.remaining == 999


def test_close_returns_unspent_permits(redis_url, key_prefix, make_redis_limiter):
    checker = make_redis_limiter()
    checks = [LimitCheck("s", 1000, 3600), LimitCheck("s", 500, 600)]
    limiter = RedisRateLimiter(redis.Redis.from_url(redis_url), key_prefix=key_prefix,
                               lease_size=16)
    limiter.hit(checks)
    limiter.hit(checks)
    assert checker.peek(checks[:1]).remaining == 1000 - 16

    limiter.close()

    assert checker.peek(checks[:1]).remaining == 998
    assert checker.peek(checks[1:]).remaining == 498


def test_lease_rejection_counts_nothing(make_redis_limiter, redis_client, key_prefix):
    limiter = make_redis_limiter(lease_size=16)

    decision = limiter.hit([LimitCheck("s", 5, 60)], cost=6)

    assert decision.allowed is False
    assert prefixed_keys(redis_client, key_prefix) == []


@pytest.mark.parametrize("lease_size", [0, 1001, 2.0, True])
def test_invalid_lease_size_rejected(redis_client, lease_size):
    with pytest.raises(ValueError, match="lease_size must be an integer from 1 to 1000"):
        RedisRateLimiter(redis_client, lease_size=lease_size)


def _hit_leased_from_process(redis_url, key_prefix, subject, thread_count, barrier, results):
    """Hit one subject from ``thread_count`` threads of a leasing limiter in this process."""
    limiter = RedisRateLimiter(redis.Redis.from_url(redis_url), key_prefix=key_prefix,
                               lease_size=16)
    try:
        checks = [LimitCheck(subject, 100, 600)]
        barrier.wait(timeout=60)
        admitted = 0
        for _ in range(thread_count * 10):
            admitted += limiter.hit(checks).allowed
        results.put(admitted)
    finally:
        limiter.close()


def test_leasing_processes_stay_within_limit(redis_url, key_prefix):
    context = multiprocessing.get_context("spawn")
    subject = f"partner:{uuid.uuid4().hex}:live"
    barrier = context.Barrier(4)
    results = context.Queue()
    processes = [
        context.Process(target=_hit_leased_from_process,
                        args=(redis_url, key_prefix, subject, 10, barrier, results))
        for _ in range(4)
    ]
    for process in processes:
        process.start()
    admitted = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    results.close()
    results.join_thread()

    assert [process.exitcode for process in processes] == [0, 0, 0, 0]
    # 400 calls against a limit of 100: never more than 100 admitted, and at
    # most 15 unspent permits in each of the three other processes' leases.
    assert sum(admitted) <= 100
    assert sum(admitted) >= 100 - 3 * 15
