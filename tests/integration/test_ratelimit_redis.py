"""Tests of the Redis rate limiter against a real Redis server.

They need the ``redis_url`` fixture from conftest.py. Each test writes only
keys under its own random prefix and deletes them afterwards.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
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

    def make(sub_buckets: int = 60) -> RedisRateLimiter:
        limiter = RedisRateLimiter(
            redis.Redis.from_url(redis_url), sub_buckets=sub_buckets, key_prefix=key_prefix
        )
        limiters.append(limiter)
        return limiter

    yield make
    for limiter in limiters:
        limiter.close()


class TestRedisContract(RateLimiterContract):
    """The shared contract, run against RedisRateLimiter in real time."""

    @pytest.fixture
    def make_limiter(self, make_redis_limiter):
        return lambda: make_redis_limiter(self.sub_buckets)

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
