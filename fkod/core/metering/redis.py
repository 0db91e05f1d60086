"""Usage recorder of production: append each batch to a Redis stream every interval.

Every record becomes one stream entry with a single field ``r`` whose value is
a JSON array of the :class:`UsageRecord` fields in declaration order, with
``created_at`` as an integer count of microseconds since 1970-01-01 UTC, for
example::

    [12,3,"/api/v1/users/{id}","GET",200,14,0,512,null,true,"req_1",1800000000000000]

A call made with an OAuth access token appends ``oauth_client_id`` and
``oauth_user_id`` to the array, 14 values in all, so the entries of API-key
calls keep the original 12-value layout. Any other change of this layout
needs a new field name, so that drains of both versions can tell entries apart
while old entries are still in the stream. ``drain.py`` reads the entries back
with :func:`decode_record`.
"""

from __future__ import annotations

import datetime as dt
import json

import redis

from fkod.core.metering.base import BufferedUsageRecorder, UsageRecord, validate_record

__all__ = ["RECORD_FIELD", "RedisUsageStream", "decode_record", "encode_record"]

RECORD_FIELD = "r"

_EPOCH = dt.datetime(1970, 1, 1)
_MICROSECOND = dt.timedelta(microseconds=1)
_FIELD_COUNT = 12
_OAUTH_FIELD_COUNT = 14


def encode_record(record: UsageRecord) -> str:
    """Return the JSON array that carries ``record`` in the stream."""
    oauth = []
    if record.oauth_client_id is not None or record.oauth_user_id is not None:
        oauth = [record.oauth_client_id, record.oauth_user_id]
    return json.dumps(
        [
            record.api_key_id,
            record.partner_id,
            record.endpoint,
            record.method,
            record.status_code,
            record.response_time,
            record.request_size,
            record.response_size,
            record.error_message,
            record.livemode,
            record.request_id,
            (record.created_at - _EPOCH) // _MICROSECOND,
            *oauth,
        ],
        separators=(",", ":"),
    )


def decode_record(payload: bytes | str) -> UsageRecord:
    """Parse the output of :func:`encode_record`; raise ValueError saying what is wrong."""
    # JSONDecodeError and UnicodeDecodeError are both ValueErrors.
    values = json.loads(payload)
    if not isinstance(values, list) or len(values) not in (_FIELD_COUNT, _OAUTH_FIELD_COUNT):
        raise ValueError(f"expected a JSON array of {_FIELD_COUNT} or {_OAUTH_FIELD_COUNT} "
                         f"values, got {payload!r:.200}")
    oauth = values[_FIELD_COUNT:]
    values = values[:_FIELD_COUNT]
    micros = values[-1]
    if not isinstance(micros, int) or isinstance(micros, bool):
        raise ValueError(f"created_at must be an integer of microseconds, got {micros!r}")
    try:
        created_at = _EPOCH + micros * _MICROSECOND
    except OverflowError:
        raise ValueError(f"created_at of {micros} microseconds is out of range") from None
    record = UsageRecord(*values[:-1], created_at, *oauth)
    validate_record(record)
    return record


class RedisUsageStream(BufferedUsageRecorder):
    """Buffer usage records in this process and append them to a Redis stream every interval.

    Each batch of up to ``max_batch`` records goes out as one MULTI/EXEC
    pipeline of XADD commands, one entry per record, so a batch is appended
    whole or not at all. While Redis is unreachable the records stay buffered,
    up to ``max_buffer`` of them, and the write is retried every interval.
    One warning is logged per outage. A clean ``close()`` appends what is
    left. A process killed outright loses the records buffered since the last
    successful append: up to one interval's worth, more during an outage.

    ``maxlen``, when set, trims the stream approximately (``MAXLEN ~``) on
    every append. Trimming drops the oldest entries whether or not a drain has
    read them, so it is a guard against a stopped drain filling Redis, not a
    retention policy.

    A failed append lasts as long as the client's own timeouts and retry
    policy allow, and ``close()`` waits for at most one append in progress
    and one final attempt.

    NOTE: When the connection breaks after EXEC reached Redis but before its
    reply arrived, the batch was appended but counts as failed, so the retry
    appends it a second time.
    """

    # Keeps one MULTI/EXEC short, because Redis runs it without serving other clients.
    max_batch = 1000

    def __init__(self, client: redis.Redis, stream: str, flush_interval_seconds: float,
                 maxlen: int | None = None, max_buffer: int = 100_000) -> None:
        if not stream:
            raise ValueError("stream must be a non-empty Redis key name")
        if maxlen is not None and (not isinstance(maxlen, int) or maxlen < 1):
            raise ValueError(f"maxlen must be a positive int or None, got {maxlen!r}")
        self._client = client
        self._stream = stream
        self._maxlen = maxlen
        super().__init__(flush_interval_seconds=flush_interval_seconds, max_buffer=max_buffer,
                         thread_name="fkod-usage-redis")

    @property
    def target(self) -> str:
        """The stream name; the client's URL is left out because it may contain a password."""
        return f"Redis stream {self._stream!r}"

    def _write_batch(self, records: list[UsageRecord]) -> None:
        payloads = [encode_record(record) for record in records]
        with self._client.pipeline(transaction=True) as pipe:
            for payload in payloads:
                pipe.xadd(self._stream, {RECORD_FIELD: payload},
                          maxlen=self._maxlen, approximate=True)
            pipe.execute()
