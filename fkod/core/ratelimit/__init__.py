"""Sliding-window rate limiting for the API gateway.

:class:`RateLimiter` has two implementations: :class:`MemoryRateLimiter` for
one process (development mode and tests) and :class:`RedisRateLimiter` for
limits shared by several processes and hosts. :func:`make_rate_limiter`
builds either from settings.
"""

from __future__ import annotations

import logging

from fkod.core.ratelimit.base import (
    UNLIMITED,
    LimitCheck,
    RateLimitDecision,
    RateLimiter,
    RateLimiterUnavailable,
)
from fkod.core.ratelimit.memory import MemoryRateLimiter
from fkod.core.ratelimit.redis import RedisRateLimiter

__all__ = [
    "UNLIMITED",
    "LimitCheck",
    "MemoryRateLimiter",
    "RateLimitDecision",
    "RateLimiter",
    "RateLimiterUnavailable",
    "RedisRateLimiter",
    "make_rate_limiter",
]

logger = logging.getLogger(__name__)

# Socket timeouts in seconds for the Redis client that make_rate_limiter
# creates. They bound how long a gateway request waits before
# RateLimiterUnavailable lets the caller fail open or closed. Query parameters
# of the URL (socket_timeout, socket_connect_timeout) override them.
DEFAULT_REDIS_SOCKET_TIMEOUT = 1.0
DEFAULT_REDIS_CONNECT_TIMEOUT = 1.0


def make_rate_limiter(
    backend: str,
    *,
    redis_url: str | None,
    sub_buckets: int,
    key_prefix: str,
    lease_size: int = 1,
) -> RateLimiter:
    """Create the rate limiter named by ``backend``, ``"memory"`` or ``"redis"``.

    ``redis_url`` is required for ``"redis"`` and ignored for ``"memory"``, as
    are ``key_prefix`` and ``lease_size``. A ``lease_size`` above 1 makes each
    process of the Redis backend lease that many permits at most per call (see
    RedisRateLimiter). The Redis client retries a connection error once and a
    timeout never, because a timed-out script may already have counted the
    request. Call ``close()`` on the result to close that client. Raises
    ValueError for an unknown backend or a missing URL.
    """
    if backend == "memory":
        logger.info("using the in-process rate limiter with %d sub-buckets", sub_buckets)
        return MemoryRateLimiter(sub_buckets=sub_buckets)

    if backend == "redis":
        if not redis_url:
            raise ValueError("the redis rate limit backend needs a redis_url, got none")
        client = _make_redis_client(redis_url)
        logger.info(
            "using the Redis rate limiter with %d sub-buckets, key prefix %r and lease size %d",
            sub_buckets,
            key_prefix,
            lease_size,
        )
        try:
            return RedisRateLimiter(
                client, sub_buckets=sub_buckets, key_prefix=key_prefix, lease_size=lease_size
            )
        except Exception:
            client.close()
            raise

    raise ValueError(f"invalid rate limit backend {backend!r}, expected 'memory' or 'redis'")


def _make_redis_client(redis_url: str):
    # Imported here so that the memory backend never needs a Redis connection pool.
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(
        redis_url,
        socket_timeout=DEFAULT_REDIS_SOCKET_TIMEOUT,
        socket_connect_timeout=DEFAULT_REDIS_CONNECT_TIMEOUT,
        retry=Retry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,)),
    )
