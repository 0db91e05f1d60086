"""Usage metering: one record per gateway call, written off the request path.

``record()`` only buffers. The ``memory`` backend (embedded deployment) writes
the buffer into ``api_usage`` every flush interval. The ``redis`` backend
(production) appends it to a Redis stream every flush interval, and workers
move the stream into ``api_usage`` with :func:`drain_usage_stream`. A clean
``close()`` loses nothing. A process killed outright loses the records it
buffered since its last successful flush.

Two periodic jobs of the worker keep the table small and fast to report on:
:func:`rollup_usage` aggregates complete hours into ``api_usage_hourly``
(``rollup.py``), and :func:`purge_usage` deletes rows past their retention
(``retention.py``). ``report.py`` summarizes usage from both tables.
"""

from __future__ import annotations

import redis
import sqlalchemy as sa

from fkod.core.metering.base import LastUsedThrottle, UsageRecord, UsageRecorder
from fkod.core.metering.drain import drain_usage_stream
from fkod.core.metering.memory import MemoryUsageBuffer
from fkod.core.metering.redis import RedisUsageStream
from fkod.core.metering.report import (
    client_usage_summary,
    key_usage_summary,
    partner_usage_summary,
    recent_errors,
)
from fkod.core.metering.retention import purge_usage
from fkod.core.metering.rollup import rollup_usage

__all__ = [
    "LastUsedThrottle",
    "MemoryUsageBuffer",
    "RedisUsageStream",
    "UsageRecord",
    "UsageRecorder",
    "client_usage_summary",
    "drain_usage_stream",
    "key_usage_summary",
    "make_usage_recorder",
    "partner_usage_summary",
    "purge_usage",
    "recent_errors",
    "rollup_usage",
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
