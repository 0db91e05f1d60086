"""Public ids: ``<type>_<number>`` strings in bodies and paths (``user_123``)."""

from __future__ import annotations

from fkod.core.errors import NotFound

# The largest id an INTEGER primary key holds on PostgreSQL; a bigger number
# cannot name a row, and passing it to the database would be an error.
_MAX_ID = 2**31 - 1


def public_id(kind: str, number: int) -> str:
    return f"{kind}_{number}"


def parse_id(kind: str, value: str, *, noun: str | None = None) -> int:
    """Return the number of an id like ``user_123``; anything else is a 404."""
    prefix = f"{kind}_"
    digits = value[len(prefix):] if isinstance(value, str) and value.startswith(prefix) else ""
    # One spelling per id: "user_07" names no row, so it cannot alias "user_7".
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 10 \
            or digits != str(int(digits)) or int(digits) > _MAX_ID:
        raise NotFound(f"No {noun or kind} with id {value!r}.")
    return int(digits)


def try_parse_id(kind: str, value) -> int | None:
    """Return the number of an id like ``user_123``, or None when it is not one."""
    try:
        return parse_id(kind, value)
    except NotFound:
        return None
