"""Benchmark the rate limiters against baselines run in the same process.

Usage: .venv/bin/python bench/bench_ratelimit.py [--requests N] [--redis-url URL] [--lease-size N]
(the fkod package must be importable, as it is in the project's virtual environment)

Each case times N admitted hits that check three windows (an hourly and a
daily window of a partner and a per-minute window of a key), spread over 100
partners. It prints the time per hit and its ratio to a baseline:

- memory limiter / baseline loop: the baseline builds the same checks and a
  decision and bumps a counter under a lock, so the ratio is the cost of the
  window arithmetic.
- redis limiter / redis PING round trip: the baseline sends one PING per hit on
  the same client, so the ratio is the cost of the script beyond one round trip.
- redis limiter leasing 16 permits / redis limiter without leasing: both run
  the same hits in this run, so the ratio is what leasing saves. Every lease
  here takes all 16 permits, because the limits are far from full.

The Redis part is skipped with a message when Redis does not respond. Keys are
written under a random prefix and deleted at the end.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
import uuid
from collections.abc import Callable

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from fkod.core.ratelimit import (
    LimitCheck,
    MemoryRateLimiter,
    RateLimitDecision,
    RedisRateLimiter,
)

PARTNERS = 100


def checks_for(request_number: int) -> list[LimitCheck]:
    """Return the three windows of one request, with limits high enough to admit it."""
    partner = request_number % PARTNERS
    subject = f"partner:{partner}:live"
    return [
        LimitCheck(subject, 1_000_000, 3600),
        LimitCheck(subject, 10_000_000, 86400),
        LimitCheck(f"key:{partner}", 1_000_000, 60),
    ]


def time_calls(requests: int, call: Callable[[int], object]) -> float:
    """Return the seconds that ``requests`` calls of ``call`` take."""
    started = time.perf_counter()
    for number in range(requests):
        call(number)
    return time.perf_counter() - started


def report(label: str, measured: float, baseline: float, requests: int) -> None:
    per_call_us = measured / requests * 1e6
    baseline_us = baseline / requests * 1e6
    print(
        f"{label}: {measured / baseline:.2g}x "
        f"({per_call_us:.1f} us per hit vs {baseline_us:.1f} us)"
    )


def bench_memory(requests: int) -> None:
    limiter = MemoryRateLimiter()
    counts: dict[str, int] = {}
    lock = threading.Lock()

    def baseline(number: int) -> RateLimitDecision:
        checks = checks_for(number)
        with lock:
            counts[checks[0].subject] = counts.get(checks[0].subject, 0) + 1
        return RateLimitDecision(True, checks[0].limit, 0, int(time.time()), None)

    def hit(number: int) -> RateLimitDecision:
        decision = limiter.hit(checks_for(number))
        if not decision.allowed:
            raise RuntimeError(f"benchmark hit {number} was rejected: {decision}")
        return decision

    time_calls(min(requests, 1000), baseline)  # warm-up
    baseline_seconds = time_calls(requests, baseline)
    measured_seconds = time_calls(requests, hit)
    report("memory limiter / baseline loop", measured_seconds, baseline_seconds, requests)


def admitting(limiter: RedisRateLimiter) -> Callable[[int], RateLimitDecision]:
    """Return a function that hits ``limiter`` for one request and fails if it is rejected."""

    def hit(number: int) -> RateLimitDecision:
        decision = limiter.hit(checks_for(number))
        if not decision.allowed:
            raise RuntimeError(f"benchmark hit {number} was rejected: {decision}")
        return decision

    return hit


def bench_redis(requests: int, redis_url: str, lease_size: int) -> None:
    client = redis.Redis.from_url(
        redis_url, socket_connect_timeout=2, socket_timeout=5, retry=Retry(NoBackoff(), 0)
    )
    key_prefix = f"fkod:bench:rl:{uuid.uuid4().hex}:"
    try:
        try:
            client.ping()
        except redis.exceptions.RedisError as error:
            print(
                f"redis: skipped, {redis_url} is unreachable ({error}). "
                "Start Redis on 127.0.0.1:6379 or pass --redis-url."
            )
            return

        limiter = RedisRateLimiter(client, key_prefix=key_prefix)
        leasing = RedisRateLimiter(client, key_prefix=key_prefix + "leased:",
                                   lease_size=lease_size)

        def ping(number: int) -> object:
            return client.ping()

        # Warm up the connection, and load the script so that timing starts with EVALSHA.
        time_calls(min(requests, 1000), ping)
        limiter.peek(checks_for(0))
        baseline_seconds = time_calls(requests, ping)
        measured_seconds = time_calls(requests, admitting(limiter))
        report(
            "redis limiter / redis PING round trip", measured_seconds, baseline_seconds, requests
        )
        leased_seconds = time_calls(requests, admitting(leasing))
        report(
            f"redis limiter leasing {lease_size} permits / redis limiter without leasing",
            leased_seconds, measured_seconds, requests,
        )
    finally:
        keys = list(client.scan_iter(match=key_prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="Benchmark the rate limiters.")
    parser.add_argument(
        "--requests", type=int, default=20_000, help="Number of hits per case (default 20000)."
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("FKOD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
        help="Redis server for the Redis case (default FKOD_TEST_REDIS_URL or "
        "redis://127.0.0.1:6379/0).",
    )
    parser.add_argument(
        "--lease-size", type=int, default=16,
        help="Maximum permits per lease in the leasing case (default 16).",
    )
    args = parser.parse_args()

    print(f"{args.requests} hits per case, 3 windows per hit, {PARTNERS} partners")
    bench_memory(args.requests)
    bench_redis(args.requests, args.redis_url, args.lease_size)


if __name__ == "__main__":
    main()
