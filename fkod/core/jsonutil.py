"""JSON encoding used by responses, events and logs."""

from __future__ import annotations

import datetime as dt
import decimal
import json


def _default(value):
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        # Money and rates travel as decimal strings, never as binary floats.
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(value) -> bytes:
    """Encode compactly as UTF-8 JSON; non-ASCII text is kept as is, not escaped."""
    return json.dumps(value, default=_default, ensure_ascii=False, separators=(",", ":")).encode()
