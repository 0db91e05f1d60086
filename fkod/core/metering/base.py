"""Usage records, the recorder interface, and the buffering both recorders share.

A recorder takes one :class:`UsageRecord` per gateway call. ``record()`` only
appends to an in-memory buffer under a lock, and no code holds that lock during
I/O, so the request thread never waits for a database or for Redis. A daemon thread per recorder writes the buffer out
every flush interval. A failed write puts the records back at the front of the
buffer for the next interval, and the buffer is bounded: when it is full, the
oldest records are dropped and counted.

The database helpers at the end of this module are shared by the in-memory
buffer (``memory.py``) and the stream drain (``drain.py``). Both write
``api_keys.last_used`` through a :class:`LastUsedThrottle`, at most once a
minute per key and process.
"""

from __future__ import annotations

import abc
import collections
import dataclasses
import datetime as dt
import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from fkod.core.auth.models import ApiKey
from fkod.core.metering.models import ApiUsage

log = logging.getLogger(__name__)

__all__ = [
    "LAST_USED_RESOLUTION",
    "REJECTED_ROW_ERRORS",
    "USAGE_COLUMNS",
    "BufferedUsageRecorder",
    "LastUsedThrottle",
    "UsageRecord",
    "UsageRecorder",
    "advance_last_used",
    "insert_usage_records",
    "insert_usage_records_one_by_one",
    "newest_use_per_key",
    "usage_row",
    "validate_record",
]


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One gateway call, as it becomes one row of ``api_usage``."""

    api_key_id: int | None
    partner_id: int | None
    # Route pattern, e.g. "/api/v1/users/{id}", never the concrete path.
    endpoint: str
    method: str
    status_code: int
    # Milliseconds.
    response_time: int
    # Bytes.
    request_size: int
    response_size: int
    error_message: str | None
    livemode: bool
    request_id: str | None
    # Naive datetime in UTC, as the TIMESTAMP columns store it.
    created_at: dt.datetime
    # Calls with an OAuth access token: the application's row id and the user
    # the token acts for (None for client credentials). Both None for API keys.
    oauth_client_id: int | None = None
    oauth_user_id: int | None = None


# Field order of UsageRecord, which is also the column list of every INSERT and COPY.
USAGE_COLUMNS: tuple[str, ...] = tuple(field.name for field in dataclasses.fields(UsageRecord))

_OPTIONAL_INT_FIELDS = ("api_key_id", "partner_id", "oauth_client_id", "oauth_user_id")
_INT_FIELDS = ("status_code", "response_time", "request_size", "response_size")
_STR_FIELDS = ("endpoint", "method")
_OPTIONAL_STR_FIELDS = ("error_message", "request_id")


def _is_int(value: object) -> bool:
    # bool is a subclass of int, but True is no valid status code or key id.
    return isinstance(value, int) and not isinstance(value, bool)


def validate_record(record: UsageRecord) -> None:
    """Raise ValueError naming the first field whose value has the wrong type.

    The frozen dataclass does not check types itself, and a wrong type would
    otherwise fail a whole batch in the database or in JSON encoding.
    """
    if not isinstance(record, UsageRecord):
        raise ValueError(f"expected a UsageRecord, got {type(record).__name__}")
    for name in _OPTIONAL_INT_FIELDS:
        value = getattr(record, name)
        if value is not None and not _is_int(value):
            raise ValueError(f"UsageRecord.{name} must be an int or None, got {value!r}")
    for name in _INT_FIELDS:
        value = getattr(record, name)
        if not _is_int(value):
            raise ValueError(f"UsageRecord.{name} must be an int, got {value!r}")
    for name in _STR_FIELDS:
        value = getattr(record, name)
        if not isinstance(value, str):
            raise ValueError(f"UsageRecord.{name} must be a str, got {value!r}")
    for name in _OPTIONAL_STR_FIELDS:
        value = getattr(record, name)
        if value is not None and not isinstance(value, str):
            raise ValueError(f"UsageRecord.{name} must be a str or None, got {value!r}")
    if not isinstance(record.livemode, bool):
        raise ValueError(f"UsageRecord.livemode must be a bool, got {record.livemode!r}")
    created_at = record.created_at
    if not isinstance(created_at, dt.datetime) or created_at.tzinfo is not None:
        raise ValueError(
            f"UsageRecord.created_at must be a naive datetime in UTC, got {created_at!r}"
        )


class UsageRecorder(abc.ABC):
    """Sink of usage records whose ``record()`` never does I/O on the caller's thread."""

    @abc.abstractmethod
    def record(self, record: UsageRecord) -> None:
        """Buffer ``record`` in O(1) without I/O; safe to call from any thread."""

    @abc.abstractmethod
    def flush(self) -> None:
        """Write out everything buffered now, blocking until done or failed."""

    @abc.abstractmethod
    def close(self) -> None:
        """Flush, then stop the background thread; later calls do nothing."""


class BufferedUsageRecorder(UsageRecorder):
    """Bounded buffer plus the daemon thread that writes it out every interval.

    Subclasses implement :meth:`_write_batch`, which writes up to
    ``max_batch`` records or raises, and :attr:`target`, which names the
    destination in log messages.

    NOTE: The thread does not survive ``os.fork()``. A server that forks
    workers (gunicorn with preload) must create the recorder in each worker
    after the fork.
    """

    # Records per call of _write_batch, so one transaction or one MULTI stays small.
    max_batch = 5000

    def __init__(self, *, flush_interval_seconds: float, max_buffer: int, thread_name: str):
        if not flush_interval_seconds > 0:
            raise ValueError(
                f"flush_interval_seconds must be positive, got {flush_interval_seconds!r}"
            )
        if not isinstance(max_buffer, int) or max_buffer < 1:
            raise ValueError(f"max_buffer must be a positive int, got {max_buffer!r}")
        self._interval = float(flush_interval_seconds)
        self._max_buffer = max_buffer

        # _lock guards the buffer and the counters that record() touches.
        self._lock = threading.Lock()
        self._buffer: collections.deque[UsageRecord] = collections.deque(maxlen=max_buffer)
        # Records taken out of the buffer by the writer and not yet written.
        self._in_flight = 0
        self._closed = False
        self._dropped_total = 0
        self._dropped_unreported = 0
        self._warned_after_close = False

        # _write_lock serializes writers (the thread, flush() and close()), so
        # records leave in the order they were buffered.
        self._write_lock = threading.Lock()
        self._failed_attempts = 0
        self._rejected_total = 0

        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)
        self._thread.start()

    @property
    @abc.abstractmethod
    def target(self) -> str:
        """Destination of the records, for log messages."""

    @property
    def buffered_count(self) -> int:
        """Number of records not written yet, including those of a write under way."""
        with self._lock:
            return len(self._buffer) + self._in_flight

    @property
    def dropped_count(self) -> int:
        """Records dropped since creation because the buffer was full or the recorder closed."""
        with self._lock:
            return self._dropped_total

    @property
    def rejected_count(self) -> int:
        """Records discarded since creation because they were invalid or the database rejected them."""
        return self._rejected_total

    @property
    def failed_attempts(self) -> int:
        """Consecutive failed writes of the current outage; 0 after a successful write."""
        return self._failed_attempts

    def record(self, record: UsageRecord) -> None:
        """Append ``record`` to the buffer; when the buffer is full, drop the oldest record.

        After ``close()`` the record is dropped and counted, and the first such
        drop logs a warning.
        """
        with self._lock:
            if self._closed:
                self._dropped_total += 1
                warn = not self._warned_after_close
                self._warned_after_close = True
            else:
                if len(self._buffer) == self._max_buffer:
                    # The deque has maxlen set, so append() drops the oldest one.
                    self._dropped_total += 1
                    self._dropped_unreported += 1
                self._buffer.append(record)
                return
        if warn:
            log.warning("Usage recorder for %s is closed; dropping usage records from now on",
                        self.target)

    def flush(self) -> None:
        """Write out every buffered record.

        Raises the error of a failed write after putting the unwritten records
        back at the front of the buffer, where the next flush picks them up.
        """
        with self._write_lock:
            self._flush_locked(raise_errors=True)

    def close(self) -> None:
        """Stop the thread and make one last flush; a failure is logged, not raised."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        self._thread.join()
        try:
            self.flush()
        except Exception:
            log.exception("Final flush of usage records to %s failed; %d records are lost",
                          self.target, self.buffered_count)

    @abc.abstractmethod
    def _write_batch(self, records: list[UsageRecord]) -> None:
        """Write ``records`` (valid, at most ``max_batch``) or raise without writing any."""

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            with self._write_lock:
                self._flush_locked(raise_errors=False)

    def _flush_locked(self, *, raise_errors: bool) -> None:
        self._report_drops()
        # Swapping in an empty deque keeps the lock for O(1), however full the buffer is.
        with self._lock:
            pending = self._buffer
            self._buffer = collections.deque(maxlen=self._max_buffer)
            self._in_flight = len(pending)
        if not pending:
            return

        valid = self._discard_invalid(list(pending))
        with self._lock:
            self._in_flight = len(valid)
        for start in range(0, len(valid), self.max_batch):
            batch = valid[start:start + self.max_batch]
            try:
                self._write_batch(batch)
            except Exception:
                self._requeue(valid[start:])
                self._failed_attempts += 1
                # One warning per outage; the repeats go to the debug level.
                if self._failed_attempts == 1:
                    log.warning(
                        "Writing usage records to %s failed; keeping %d records and retrying "
                        "every %g s", self.target, len(valid) - start, self._interval,
                        exc_info=True,
                    )
                else:
                    log.debug("Writing usage records to %s failed again (attempt %d)",
                              self.target, self._failed_attempts, exc_info=True)
                if raise_errors:
                    raise
                return
            except BaseException:
                self._requeue(valid[start:])
                raise
            with self._lock:
                self._in_flight -= len(batch)

        if self._failed_attempts:
            log.info("Usage records reach %s again after %d failed attempts",
                     self.target, self._failed_attempts)
            self._failed_attempts = 0

    def _discard_invalid(self, records: list[UsageRecord]) -> list[UsageRecord]:
        valid = []
        for record in records:
            try:
                validate_record(record)
            except ValueError:
                self._rejected_total += 1
                log.exception("Discarding an invalid usage record for %s: %r", self.target, record)
            else:
                valid.append(record)
        return valid

    def _requeue(self, unwritten: list[UsageRecord]) -> None:
        with self._lock:
            merged = collections.deque(unwritten, maxlen=self._max_buffer)
            overflow = len(unwritten) + len(self._buffer) - self._max_buffer
            # Extending a full deque with maxlen drops from the left, which
            # contains the oldest records.
            merged.extend(self._buffer)
            self._buffer = merged
            self._in_flight = 0
            if overflow > 0:
                self._dropped_total += overflow
                self._dropped_unreported += overflow
        self._report_drops()

    def _report_drops(self) -> None:
        with self._lock:
            dropped = self._dropped_unreported
            self._dropped_unreported = 0
        if dropped:
            log.error(
                "Usage buffer for %s reached its limit of %d records; dropped the %d oldest",
                self.target, self._max_buffer, dropped,
            )

    def _count_rejected(self, count: int) -> None:
        self._rejected_total += count


# -- Database writes shared by MemoryUsageBuffer and drain_usage_stream ------

_api_usage = ApiUsage.__table__
_api_keys = ApiKey.__table__

_insert_usage = _api_usage.insert()

# Moves last_used forward only, so an older batch written late never moves it back.
_advance_last_used = (
    sa.update(_api_keys)
    .where(_api_keys.c.id == sa.bindparam("b_key_id"))
    .where(sa.or_(_api_keys.c.last_used.is_(None),
                  _api_keys.c.last_used < sa.bindparam("b_used_at")))
    .values(last_used=sa.bindparam("b_used_at"))
)

# The smallest step by which a process moves a key's last_used forward.
LAST_USED_RESOLUTION = dt.timedelta(seconds=60)


class LastUsedThrottle:
    """The ``last_used`` values this process wrote, so that it writes each key once a minute.

    :meth:`select` picks the keys whose newest call is at least
    ``resolution`` later than the value this process last wrote for them, and
    the caller passes what it wrote to :meth:`remember` once its transaction
    has committed. A key's ``last_used`` therefore trails its newest stored
    call by less than ``resolution``. Each process keeps its own throttle, and
    the UPDATE moves ``last_used`` forward only, so processes that write the
    same key never move it back. Safe to use from several threads.
    """

    def __init__(self, resolution: dt.timedelta = LAST_USED_RESOLUTION,
                 max_keys: int = 100_000) -> None:
        if resolution < dt.timedelta(0):
            raise ValueError(f"resolution must not be negative, got {resolution!r}")
        if not isinstance(max_keys, int) or max_keys < 1:
            raise ValueError(f"max_keys must be a positive int, got {max_keys!r}")
        self._resolution = resolution
        self._max_keys = max_keys
        self._lock = threading.Lock()
        self._written: dict[int, dt.datetime] = {}

    def select(self, newest: Mapping[int, dt.datetime]) -> dict[int, dt.datetime]:
        """Return the entries of ``newest`` (key id to newest call) that are due for a write."""
        with self._lock:
            return {
                key_id: used_at for key_id, used_at in newest.items()
                if key_id not in self._written
                or used_at - self._written[key_id] >= self._resolution
            }

    def remember(self, written: Mapping[int, dt.datetime]) -> None:
        """Record the values that a committed transaction wrote."""
        if not written:
            return
        with self._lock:
            for key_id, used_at in written.items():
                previous = self._written.get(key_id)
                if previous is None or used_at > previous:
                    self._written[key_id] = used_at
            if len(self._written) > self._max_keys:
                self._forget_stale(max(written.values()))

    def _forget_stale(self, latest: dt.datetime) -> None:
        # An entry older than one resolution before the latest write no longer
        # holds back a write of a current call, so dropping it costs nothing
        # but a possible extra UPDATE for a late batch.
        cutoff = latest - self._resolution
        self._written = {key_id: used_at for key_id, used_at in self._written.items()
                         if used_at >= cutoff}
        if len(self._written) > self._max_keys:
            self._written.clear()


def usage_row(record: UsageRecord) -> dict:
    """Return the ``api_usage`` column values of ``record``."""
    return {name: getattr(record, name) for name in USAGE_COLUMNS}


def newest_use_per_key(records: Iterable[UsageRecord]) -> dict[int, dt.datetime]:
    """Return the newest ``created_at`` per API key id in ``records``."""
    newest: dict[int, dt.datetime] = {}
    for record in records:
        key_id = record.api_key_id
        if key_id is None:
            continue
        seen = newest.get(key_id)
        if seen is None or record.created_at > seen:
            newest[key_id] = record.created_at
    return newest


def advance_last_used(connection: sa.Connection, records: Iterable[UsageRecord],
                      throttle: LastUsedThrottle | None = None) -> dict[int, dt.datetime]:
    """Move ``api_keys.last_used`` forward to the newest ``created_at`` per key in ``records``.

    With a ``throttle``, only the keys it selects are written. Returns the
    values written, which the caller passes to ``throttle.remember()`` after
    its transaction commits.
    """
    newest = newest_use_per_key(records)
    if throttle is not None:
        newest = throttle.select(newest)
    if not newest:
        return {}
    # Updating keys in ascending id order keeps two concurrent writers from
    # locking the same rows in opposite orders, which PostgreSQL would report
    # as a deadlock.
    params = [{"b_key_id": key_id, "b_used_at": newest[key_id]} for key_id in sorted(newest)]
    connection.execute(_advance_last_used, params)
    return newest


def insert_usage_records(connection: sa.Connection, records: Sequence[UsageRecord],
                         throttle: LastUsedThrottle | None = None) -> dict[int, dt.datetime]:
    """Insert ``records`` with one executemany and advance ``last_used``.

    Runs in the caller's transaction. Returns the ``last_used`` values
    written, as :func:`advance_last_used` does.
    """
    if not records:
        return {}
    connection.execute(_insert_usage, [usage_row(record) for record in records])
    return advance_last_used(connection, records, throttle)


# Errors that blame the rows rather than the connection, so retrying the same
# rows would fail again.
REJECTED_ROW_ERRORS = (sa.exc.IntegrityError, sa.exc.DataError)


def insert_usage_records_one_by_one(
    engine: sa.Engine, records: Sequence[UsageRecord],
    throttle: LastUsedThrottle | None = None,
) -> list[tuple[int, Exception]]:
    """Insert ``records`` one per savepoint in one transaction, skipping rows the database rejects.

    This is the slow path after a batch failed with an integrity or data
    error, for example a key id that no longer exists or a value too long
    for its column. Returns the index in ``records`` and the error of each
    skipped record. Any other error rolls the whole transaction back and
    propagates.
    """
    rejected: list[tuple[int, Exception]] = []
    accepted: list[UsageRecord] = []
    with engine.begin() as connection:
        for index, record in enumerate(records):
            try:
                with connection.begin_nested():
                    connection.execute(_insert_usage, usage_row(record))
            except REJECTED_ROW_ERRORS as error:
                rejected.append((index, error))
            else:
                accepted.append(record)
        written = advance_last_used(connection, accepted, throttle)
    if throttle is not None:
        throttle.remember(written)
    return rejected
