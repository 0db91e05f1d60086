"""Check that RedisRateLimiter never admits more than its limit under concurrency.

Usage: .venv/bin/python bench/bench_limiter_exactness.py [--redis-url URL]

4 processes x 8 threads call ``hit`` on one subject until each thread has made
its share of attempts, which together exceed the limit L. Each case prints
admitted/L for a small L (50) and a large L (20,000, in a one-hour window that
does not slide during the run), once with lease_size 1 and once with
lease_size 16:

- small L: admitted/L must be exactly 1.00 with both lease sizes, because in
  the last ``2 * LEASE_SHARE`` units of a window no permits are leased.
- large L: admitted/L must never exceed 1. With leasing it can end below 1,
  because a process that stops hitting still holds leased permits that the
  others cannot spend. The shortfall, L - admitted, is printed as those permits.

The baseline is the lease_size 1 run of the same L in this run. After every
case the limiters are closed, so leased permits go back to Redis, and a peek
shows the count left in Redis, which must equal the admitted hits. The last
line is the large-L admitted/L with leasing. Skipped with a message when Redis
does not respond. Keys are written under a random prefix and deleted at the end.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import threading
import time
import uuid

import redis

from fkod.core.ratelimit import LimitCheck, make_rate_limiter

PROCESSES = 4
THREADS = 8
SUB_BUCKETS = 60
WINDOW_SECONDS = 3600
SMALL_LIMIT = 50
LARGE_LIMIT = 20_000
# Attempts per thread: the 32 threads together make 6.4 x L (small) and 1.6 x L (large) attempts.
SMALL_ATTEMPTS = 10
LARGE_ATTEMPTS = 1_000


def hammer(redis_url: str, key_prefix: str, check: LimitCheck, lease_size: int,
           attempts: int) -> int:
    """Run THREADS threads of ``attempts`` hits each in this process and return the admitted count."""
    limiter = make_rate_limiter("redis", redis_url=redis_url, sub_buckets=SUB_BUCKETS,
                                key_prefix=key_prefix, lease_size=lease_size)
    admitted = [0] * THREADS
    start = threading.Barrier(THREADS)

    def run(index: int) -> None:
        start.wait()
        for _ in range(attempts):
            if limiter.hit([check]).allowed:
                admitted[index] += 1

    threads = [threading.Thread(target=run, args=(index,)) for index in range(THREADS)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        limiter.close()
    return sum(admitted)


def run_case(redis_url: str, key_prefix: str, limit: int, lease_size: int,
             attempts: int) -> tuple[int, int, float]:
    """Return the admitted hits, the count left in Redis after close, and the seconds taken."""
    check = LimitCheck(f"bench:{uuid.uuid4().hex}", limit, WINDOW_SECONDS)
    arguments = [(redis_url, key_prefix, check, lease_size, attempts)] * PROCESSES
    started = time.perf_counter()
    with multiprocessing.Pool(PROCESSES) as pool:
        admitted = sum(pool.starmap(hammer, arguments))
    seconds = time.perf_counter() - started

    limiter = make_rate_limiter("redis", redis_url=redis_url, sub_buckets=SUB_BUCKETS,
                                key_prefix=key_prefix)
    try:
        counted = limit - limiter.peek([check]).remaining
    finally:
        limiter.close()
    return admitted, counted, seconds


def delete_keys(redis_url: str, key_prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=key_prefix + "*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def redis_problem(redis_url: str) -> str | None:
    """Return why Redis at ``redis_url`` cannot be used, or None when it responds to PING."""
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=1, socket_timeout=1)
    try:
        client.ping()
    except redis.exceptions.RedisError as error:
        return str(error)
    finally:
        client.close()
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default=os.environ.get("FKOD_REDIS_URL",
                                                              "redis://127.0.0.1:6379/0"),
                        help="Redis to count in (default: $FKOD_REDIS_URL or local port 6379)")
    options = parser.parse_args()

    problem = redis_problem(options.redis_url)
    if problem is not None:
        print(f"skipped: Redis at {options.redis_url} is unreachable ({problem}); "
              "start Redis or pass --redis-url")
        return 0

    key_prefix = f"fkod-bench-exact:{uuid.uuid4().hex[:8]}:"
    print(f"{PROCESSES} processes x {THREADS} threads, one subject, window {WINDOW_SECONDS} s, "
          f"Redis key prefix {key_prefix}")
    failures = []
    ratios = {}
    try:
        for limit, attempts in ((SMALL_LIMIT, SMALL_ATTEMPTS), (LARGE_LIMIT, LARGE_ATTEMPTS)):
            total_attempts = PROCESSES * THREADS * attempts
            for lease_size in (1, 16):
                admitted, counted, seconds = run_case(options.redis_url, key_prefix, limit,
                                                      lease_size, attempts)
                ratio = admitted / limit
                ratios[limit, lease_size] = ratio
                print(f"L={limit:>6} lease_size={lease_size:>2}: {total_attempts} attempts, "
                      f"admitted {admitted}, admitted/L {ratio:.4f}, "
                      f"counted in Redis after close {counted}, {seconds:.2f} s")
                if admitted > limit:
                    failures.append(f"L={limit} lease_size={lease_size} admitted {admitted} > L")
                if limit == SMALL_LIMIT and admitted != limit:
                    failures.append(f"L={limit} lease_size={lease_size} admitted {admitted}, "
                                    f"expected exactly {limit}")
                if counted != admitted:
                    failures.append(f"L={limit} lease_size={lease_size}: Redis still counts "
                                    f"{counted} units after close but {admitted} were admitted")
            leased_ratio = ratios[limit, 16] / ratios[limit, 1]
            print(f"L={limit:>6} admitted/L with lease 16 vs lease 1 (baseline): "
                  f"{leased_ratio:.4f}")
    finally:
        delete_keys(options.redis_url, key_prefix)

    for failure in failures:
        print(f"FAILED: {failure}")
    large_leased = ratios[LARGE_LIMIT, 16]
    shortfall = LARGE_LIMIT - round(large_leased * LARGE_LIMIT)
    print(f"large L={LARGE_LIMIT} lease_size=16: {shortfall} permits below L "
          f"(still leased by processes that stopped hitting)")
    print(f"admitted/L, large L with lease_size 16: {large_leased:.4f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
