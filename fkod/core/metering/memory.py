"""Usage recorder of the embedded deployment: buffer in memory, write to the database every interval."""

from __future__ import annotations

import logging

import sqlalchemy as sa

from fkod.core.metering.base import (
    REJECTED_ROW_ERRORS,
    BufferedUsageRecorder,
    LastUsedThrottle,
    UsageRecord,
    insert_usage_records,
    insert_usage_records_one_by_one,
)

log = logging.getLogger(__name__)

__all__ = ["MemoryUsageBuffer"]


class MemoryUsageBuffer(BufferedUsageRecorder):
    """Buffer usage records in this process and insert them into ``api_usage`` every interval.

    Each batch is one INSERT executemany plus the ``api_keys.last_used``
    update, in one transaction of its own. The update skips keys whose
    ``last_used`` this buffer moved less than a minute before (see
    :class:`LastUsedThrottle`). While the database is locked or
    unreachable the records stay buffered, up to ``max_buffer`` of them, and
    the write is retried every interval. A clean ``close()`` writes what is
    left. A process that dies without ``close()`` loses the records buffered
    since the last successful write: up to one interval's worth, more during
    an outage.

    A record that the database rejects (a key or partner id that does not
    exist, a value that does not fit its column) is logged and discarded, so
    it cannot block the records behind it.
    """

    def __init__(self, engine: sa.Engine, flush_interval_seconds: float,
                 max_buffer: int = 100_000) -> None:
        self._engine = engine
        self._last_used = LastUsedThrottle()
        self._target = f"database {engine.url.render_as_string(hide_password=True)}"
        super().__init__(flush_interval_seconds=flush_interval_seconds, max_buffer=max_buffer,
                         thread_name="fkod-usage-memory")

    @property
    def target(self) -> str:
        """The database URL, without its password."""
        return self._target

    def _write_batch(self, records: list[UsageRecord]) -> None:
        try:
            with self._engine.begin() as connection:
                written = insert_usage_records(connection, records, self._last_used)
            self._last_used.remember(written)
            return
        except REJECTED_ROW_ERRORS:
            log.warning("A batch of %d usage records was rejected by %s; inserting them one by one",
                        len(records), self.target, exc_info=True)

        rejected = insert_usage_records_one_by_one(self._engine, records, self._last_used)
        self._count_rejected(len(rejected))
        for index, error in rejected:
            log.error("Discarding a usage record that %s rejected: %r",
                      self.target, records[index], exc_info=error)
