"""Usage metering: one record per gateway call, written off the request path.

``record()`` only buffers. The ``memory`` backend (embedded deployment) writes
the buffer into ``api_usage`` every flush interval. The ``redis`` backend
(production) appends it to a Redis stream every flush interval, and workers
move the stream into ``api_usage`` with :func:`drain_usage_stream`. A clean
``close()`` loses nothing. A process killed outright loses the records it
buffered since its last successful flush.
"""

from __future__ import annotations

import redis
import sqlalchemy as sa

from fkod.core.metering.base import UsageRecord, UsageRecorder
from fkod.core.metering.drain import drain_usage_stream
from fkod.core.metering.memory import MemoryUsageBuffer
from fkod.core.metering.redis import RedisUsageStream

__all__ = [
    "MemoryUsageBuffer",
    "RedisUsageStream",
    "UsageRecord",
    "UsageRecorder",
    "drain_usage_stream",
    "make_usage_recorder",
]

BACKENDS = ("memory", "redis")


def make_usage_recorder(
    backend: str,
    *,
    engine: sa.Engine | None,
    redis_client: redis.Redis | None,
    stream: str,
    flush_interval_seconds: float,
) -> UsageRecorder:
    """Create the recorder named by ``backend`` (the setting ``fkod.metering.backend``).

    ``memory`` needs ``engine``, and ``redis`` needs ``redis_client`` and
    ``stream``. The caller owns the returned recorder and must call its
    ``close()`` at shutdown.
    """
    if backend == "memory":
        if engine is None:
            raise ValueError("The memory metering backend needs a database engine; got None")
        return MemoryUsageBuffer(engine, flush_interval_seconds)
    if backend == "redis":
        if redis_client is None:
            raise ValueError(
                "The redis metering backend needs a Redis client; set fkod.redis.url"
            )
        return RedisUsageStream(redis_client, stream, flush_interval_seconds)
    raise ValueError(
        f"Unknown metering backend {backend!r} (fkod.metering.backend); "
        f"expected one of {', '.join(BACKENDS)}"
    )
