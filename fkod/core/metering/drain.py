"""Move usage records from the Redis stream into ``api_usage``: the worker side of ``redis.py``.

One call of :func:`drain_usage_stream` handles one batch of stream entries:

1. create the consumer group if it is missing (starting at the first entry);
2. collect up to ``batch_size`` entries: this consumer's own pending entries
   (left by an earlier failed call), then entries that other consumers left
   pending for longer than ``claim_idle_ms`` (XAUTOCLAIM), then new ones
   (XREADGROUP ``>``);
3. decode them and write the records in one database transaction: COPY on
   PostgreSQL through psycopg 3, executemany elsewhere, plus the
   ``api_keys.last_used`` update (at most once a minute per key when the
   caller passes a :class:`LastUsedThrottle`);
4. in one MULTI/EXEC, copy entries that could not be decoded or that the
   database rejected to the dead-letter stream ``<stream>:dead``, then XACK
   and XDEL every handled entry.

If step 3 fails, nothing is acknowledged: the entries stay pending for this
consumer, and the next call (or, after ``claim_idle_ms``, another consumer)
retries them.

NOTE: Delivery is at least once. A crash, or a lost Redis connection, after
the database commit and before the XACK leaves the entries pending, so they
are written a second time. A consumer that takes longer than
``claim_idle_ms`` between reading and acknowledging can also have its entries
claimed and written by another consumer. Writing each record exactly once
would need the stream entry id in ``api_usage`` under a unique constraint,
which the table does not have.

XDEL removes entries for every consumer group, so only one group may drain a
given stream.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence

import psycopg
import redis
import sqlalchemy as sa
from psycopg import sql

from fkod.core.metering.base import (
    REJECTED_ROW_ERRORS,
    USAGE_COLUMNS,
    LastUsedThrottle,
    UsageRecord,
    advance_last_used,
    insert_usage_records,
    insert_usage_records_one_by_one,
)
from fkod.core.metering.models import ApiUsage
from fkod.core.metering.redis import RECORD_FIELD, decode_record

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_GROUP",
    "copy_usage_records",
    "dead_letter_stream",
    "drain_usage_stream",
    "write_usage_records",
]

DEFAULT_GROUP = "fkod-usage"

# COPY runs on the raw psycopg connection, so its errors are psycopg's own
# rather than SQLAlchemy's wrappers.
_REJECTED_BATCH_ERRORS = REJECTED_ROW_ERRORS + (psycopg.IntegrityError, psycopg.DataError)

_COPY_USAGE = sql.SQL("COPY {table} ({columns}) FROM STDIN").format(
    table=sql.Identifier(ApiUsage.__tablename__),
    columns=sql.SQL(", ").join(sql.Identifier(name) for name in USAGE_COLUMNS),
)

# Maximum length of the reason stored with a dead-lettered entry, in characters.
_MAX_REASON_LENGTH = 1000

# A stream entry as redis-py returns it: the id and the fields. redis-py 8
# returns empty fields for an entry deleted while still pending.
Entry = tuple[bytes | str, dict | None]


def dead_letter_stream(stream: str) -> str:
    """Return the name of the stream that receives the unusable entries of ``stream``."""
    return f"{stream}:dead"


def drain_usage_stream(
    client: redis.Redis,
    stream: str,
    *,
    engine: sa.Engine,
    group: str = DEFAULT_GROUP,
    consumer: str,
    batch_size: int = 1000,
    block_ms: int = 0,
    claim_idle_ms: int = 60_000,
    last_used: LastUsedThrottle | None = None,
) -> int:
    """Write one batch of up to ``batch_size`` stream entries into ``api_usage``.

    ``consumer`` names this worker within ``group`` and must stay the same
    across restarts of the worker, so that it finds its own pending entries.
    Calls with the same consumer must not overlap, because each would read
    the other's pending entries and write them a second time.
    ``block_ms`` is how long to wait for new entries when there are none, in
    milliseconds. 0 returns at once, and Redis's own meaning of ``BLOCK 0``
    (wait forever) is never sent. The client's socket timeout must be longer
    than ``block_ms``. ``last_used`` limits the ``api_keys.last_used``
    writes, and the worker should pass the same throttle to every call.
    Without it, every batch moves ``last_used`` of each key in it.

    Returns the number of records written. Raises the database or Redis
    error when the batch could not be written or acknowledged, in which case
    the entries are retried later.
    """
    if not consumer:
        raise ValueError("consumer must be a non-empty name, stable across restarts of the worker")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if block_ms < 0:
        raise ValueError(f"block_ms must be 0 or more, got {block_ms!r}")
    if claim_idle_ms < 0:
        raise ValueError(f"claim_idle_ms must be 0 or more, got {claim_idle_ms!r}")

    _create_group(client, stream, group)
    entries = _collect_entries(client, stream, group, consumer, batch_size, block_ms,
                               claim_idle_ms)
    if not entries:
        return 0

    records: list[UsageRecord] = []
    record_entries: list[Entry] = []
    dead: list[tuple[bytes | str, dict, str]] = []
    for entry_id, fields in entries:
        if not fields:
            # XADD needs at least one field, so no fields means the entry was
            # deleted while pending, for example by MAXLEN trimming. Only the
            # acknowledgement is left to do.
            continue
        try:
            record = decode_record(_record_field(fields))
        except ValueError as error:
            log.exception("Usage stream %r entry %s cannot be decoded; moving it to %r",
                          stream, entry_id, dead_letter_stream(stream))
            dead.append((entry_id, fields, f"invalid entry: {error}"))
        else:
            records.append(record)
            record_entries.append((entry_id, fields))

    rejected = write_usage_records(engine, records, last_used)
    for index, error in rejected:
        entry_id, fields = record_entries[index]
        log.error("Database rejected usage stream %r entry %s; moving it to %r",
                  stream, entry_id, dead_letter_stream(stream), exc_info=error)
        # SQLAlchemy's message repeats the statement and every parameter;
        # the driver's own message is enough to find the offending value.
        reason = getattr(error, "orig", None) or error
        dead.append((entry_id, fields, f"rejected by the database: {reason}"))

    _acknowledge(client, stream, group, consumer, [entry_id for entry_id, _ in entries], dead)
    written = len(records) - len(rejected)
    log.debug("Drained %d usage records from %r (%d entries, %d dead-lettered)",
              written, stream, len(entries), len(dead))
    return written


def write_usage_records(engine: sa.Engine, records: Sequence[UsageRecord],
                        last_used: LastUsedThrottle | None = None) -> list[tuple[int, Exception]]:
    """Write ``records`` in one transaction; return the index and error of each rejected record.

    PostgreSQL through psycopg 3 gets COPY, other databases one executemany.
    When the batch fails with an integrity or data error, the records are
    written again one by one so that only the offending ones are left out.
    Other errors propagate and nothing is written.
    """
    if not records:
        return []
    try:
        with engine.begin() as connection:
            if _supports_copy(connection):
                written = copy_usage_records(connection, records, last_used)
            else:
                written = insert_usage_records(connection, records, last_used)
        if last_used is not None:
            last_used.remember(written)
        return []
    except _REJECTED_BATCH_ERRORS:
        log.warning("A batch of %d usage records was rejected; writing them one by one",
                    len(records), exc_info=True)
    return insert_usage_records_one_by_one(engine, records, last_used)


def copy_usage_records(connection: sa.Connection, records: Sequence[UsageRecord],
                       last_used: LastUsedThrottle | None = None) -> dict[int, dt.datetime]:
    """COPY ``records`` into ``api_usage`` and advance ``last_used``, in the caller's transaction.

    The connection must be a PostgreSQL connection through psycopg 3.
    Returns the ``last_used`` values written, as ``advance_last_used`` does.
    """
    driver_connection = connection.connection.driver_connection
    with driver_connection.cursor() as cursor, cursor.copy(_COPY_USAGE) as copy:
        for record in records:
            copy.write_row(tuple(getattr(record, name) for name in USAGE_COLUMNS))
    return advance_last_used(connection, records, last_used)


def _supports_copy(connection: sa.Connection) -> bool:
    dialect = connection.dialect
    return dialect.name == "postgresql" and dialect.driver == "psycopg"


def _record_field(fields: dict):
    payload = fields.get(RECORD_FIELD.encode())
    if payload is None:
        # A client created with decode_responses=True returns str keys.
        payload = fields.get(RECORD_FIELD)
    if payload is None:
        names = sorted(str(name) for name in fields)
        raise ValueError(f"entry has no field {RECORD_FIELD!r}; its fields are {names}")
    return payload


def _create_group(client: redis.Redis, stream: str, group: str) -> None:
    try:
        client.xgroup_create(stream, group, id="0", mkstream=True)
    except redis.ResponseError as error:
        if "BUSYGROUP" not in str(error):
            raise


def _collect_entries(client, stream, group, consumer, batch_size, block_ms,
                     claim_idle_ms) -> list[Entry]:
    entries: list[Entry] = []
    seen: set = set()

    def add(batch) -> int:
        added = 0
        for entry_id, fields in batch:
            if entry_id is not None and entry_id not in seen:
                seen.add(entry_id)
                entries.append((entry_id, fields))
                added += 1
        return added

    # Reading from id 0 returns this consumer's pending entries instead of new ones.
    add(_read_group(client, stream, group, consumer, "0", batch_size, block=None))

    claimed = 0
    start_id = "0-0"
    while len(entries) < batch_size:
        reply = client.xautoclaim(stream, group, consumer, min_idle_time=claim_idle_ms,
                                  start_id=start_id, count=batch_size - len(entries))
        next_start, batch = reply[0], reply[1]
        claimed += add(batch)
        if next_start in (b"0-0", "0-0"):
            break
        start_id = next_start
    if claimed:
        log.info("Claimed %d usage stream %r entries that other consumers left pending "
                 "for more than %d ms", claimed, stream, claim_idle_ms)

    if len(entries) < batch_size:
        # Block only when there is nothing else to do.
        block = block_ms if block_ms > 0 and not entries else None
        add(_read_group(client, stream, group, consumer, ">", batch_size - len(entries), block))
    return entries


def _read_group(client, stream, group, consumer, start, count, block) -> list[Entry]:
    reply = client.xreadgroup(group, consumer, {stream: start}, count=count, block=block)
    if not reply:
        return []
    if isinstance(reply, dict):
        # RESP3 replies map the stream name to a list of entry lists.
        return [entry for batches in reply.values() for batch in batches for entry in batch]
    return [entry for _name, batch in reply for entry in batch]


def _acknowledge(client, stream, group, consumer, entry_ids, dead) -> None:
    target = dead_letter_stream(stream)
    with client.pipeline(transaction=True) as pipe:
        for entry_id, fields, reason in dead:
            dead_fields = dict(fields)
            dead_fields.update({
                "dead_source_id": entry_id,
                "dead_reason": reason[:_MAX_REASON_LENGTH],
                "dead_consumer": consumer,
            })
            pipe.xadd(target, dead_fields)
        pipe.xack(stream, group, *entry_ids)
        pipe.xdel(stream, *entry_ids)
        pipe.execute()
