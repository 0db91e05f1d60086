"""Webhook signatures: the F-KOD header and Standard Webhooks headers.

Every delivery carries two signature schemes over the exact body bytes sent:

* ``X-FKOD-Signature: t=<unix seconds>,v1=<hex>``, an HMAC-SHA256 keyed with the whole
  secret string (``whsec_...`` as UTF-8) over ``"<t>." + body``.
* ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature: v1,<base64>`` as defined
  by Standard Webhooks, an HMAC-SHA256 keyed with the base64-decoded part of the secret
  after ``whsec_`` over ``"<id>.<t>." + body``.

During a secret rotation each header carries one signature per active secret, and a
receiver accepts the message when any of them matches.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from collections.abc import Mapping, Sequence
from secrets import token_bytes

SECRET_PREFIX = "whsec_"
SECRET_RANDOM_BYTES = 32

FKOD_SIGNATURE_HEADER = "X-FKOD-Signature"
STANDARD_ID_HEADER = "webhook-id"
STANDARD_TIMESTAMP_HEADER = "webhook-timestamp"
STANDARD_SIGNATURE_HEADER = "webhook-signature"

DEFAULT_TOLERANCE_SECONDS = 300

# Longer signature headers are rejected before parsing. Ten rotated signatures fit easily.
MAX_HEADER_LENGTH = 2048

# Unix seconds stay at 10 digits until the year 2286. A 13-digit millisecond timestamp
# parses, then fails the tolerance check.
_TIMESTAMP = re.compile(r"[0-9]{1,15}")
_HEX_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


class SignatureError(ValueError):
    """A webhook signature that failed verification.

    ``reason`` is one of the stable codes ``missing_signature``, ``malformed_header``,
    ``malformed_timestamp``, ``timestamp_outside_tolerance`` and ``signature_mismatch``.
    """

    reason: str

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def generate_secret() -> str:
    """Return a new signing secret: "whsec_" and the standard base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(token_bytes(SECRET_RANDOM_BYTES)).decode(
        "ascii"
    )


def sign_delivery(
    secrets: Sequence[str], *, message_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """Compute the four signature headers for one delivery, one signature per secret.

    Returns ``X-FKOD-Signature``, ``webhook-id``, ``webhook-timestamp`` and
    ``webhook-signature``. Raises ValueError for an invalid secret, an empty secret list,
    a message id that is not printable ASCII without spaces or commas, or a negative
    timestamp.
    """
    if isinstance(secrets, str) or not secrets:
        raise ValueError("secrets must be a non-empty list of secret strings.")
    if not _is_message_id(message_id):
        raise ValueError(
            "message_id must be non-empty printable ASCII without spaces or commas."
        )
    if isinstance(timestamp, bool) or not isinstance(timestamp, int) or timestamp < 0:
        raise ValueError(
            f"timestamp must be a non-negative int of Unix seconds, got {timestamp!r}."
        )
    payload = _require_bytes(body)

    fkod_parts = [f"t={timestamp}"]
    standard_parts = []
    for secret in secrets:
        fkod_key = _fkod_key(secret)
        standard_key = _standard_key(secret)
        fkod_parts.append(f"v1={_fkod_digest(fkod_key, str(timestamp), payload).hex()}")
        standard_digest = _standard_digest(
            standard_key, message_id, str(timestamp), payload
        )
        standard_parts.append(f"v1,{base64.b64encode(standard_digest).decode('ascii')}")

    return {
        FKOD_SIGNATURE_HEADER: ",".join(fkod_parts),
        STANDARD_ID_HEADER: message_id,
        STANDARD_TIMESTAMP_HEADER: str(timestamp),
        STANDARD_SIGNATURE_HEADER: " ".join(standard_parts),
    }


def verify_fkod_signature(
    secret: str,
    header: str | None,
    body: bytes,
    *,
    now: int | None = None,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
) -> int:
    """Verify an ``X-FKOD-Signature`` header and return its timestamp.

    The timestamp must be within ``tolerance_seconds`` of ``now`` (default: the current
    time) in either direction, and at least one ``v1`` signature must match. Raises
    SignatureError for any malformed or failing header, and ValueError for an invalid secret.
    """
    key = _fkod_key(secret)
    payload = _require_bytes(body)
    _require_tolerance(tolerance_seconds)

    if header is None or header == "":
        raise SignatureError(
            "missing_signature", f"The {FKOD_SIGNATURE_HEADER} header is missing."
        )
    _check_header_text(FKOD_SIGNATURE_HEADER, header)

    timestamp_text: str | None = None
    candidates: list[str] = []
    for item in header.split(","):
        name, separator, value = item.strip().partition("=")
        if not separator:
            raise SignatureError(
                "malformed_header",
                f"The {FKOD_SIGNATURE_HEADER} header has an item without '='.",
            )
        if name == "t":
            if timestamp_text is not None:
                raise SignatureError(
                    "malformed_header",
                    f"The {FKOD_SIGNATURE_HEADER} header has more than one t=.",
                )
            timestamp_text = value
        elif name == "v1":
            if not _HEX_SHA256.fullmatch(value):
                raise SignatureError(
                    "malformed_header",
                    f"A v1 signature in {FKOD_SIGNATURE_HEADER} is not 64 hex digits.",
                )
            candidates.append(value.lower())
        # Items with other names are signature versions this code does not know, so they
        # are skipped.

    if timestamp_text is None:
        raise SignatureError(
            "malformed_header", f"The {FKOD_SIGNATURE_HEADER} header has no t=."
        )
    timestamp = _check_timestamp(timestamp_text, now, tolerance_seconds)

    expected = _fkod_digest(key, timestamp_text, payload).hex().encode("ascii")
    if not _any_matches(
        expected, [candidate.encode("ascii") for candidate in candidates]
    ):
        raise SignatureError(
            "signature_mismatch", "No v1 signature matches the body and timestamp."
        )
    return timestamp


def verify_standard_signature(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: int | None = None,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
) -> int:
    """Verify the Standard Webhooks headers and return the ``webhook-timestamp`` value.

    Header names are matched case-insensitively. The rules match
    ``verify_fkod_signature``, and signatures of versions other than ``v1`` are skipped.
    Raises SignatureError for any malformed or failing header, and ValueError for an
    invalid secret.
    """
    key = _standard_key(secret)
    payload = _require_bytes(body)
    _require_tolerance(tolerance_seconds)

    found = _find_headers(
        headers,
        (STANDARD_ID_HEADER, STANDARD_TIMESTAMP_HEADER, STANDARD_SIGNATURE_HEADER),
    )
    message_id = found[STANDARD_ID_HEADER]
    timestamp_text = found[STANDARD_TIMESTAMP_HEADER]
    signature_header = found[STANDARD_SIGNATURE_HEADER]

    if not _is_message_id(message_id):
        raise SignatureError(
            "malformed_header",
            f"The {STANDARD_ID_HEADER} header is not a single message id.",
        )
    timestamp = _check_timestamp(timestamp_text, now, tolerance_seconds)

    candidates: list[bytes] = []
    for entry in signature_header.split(" "):
        if not entry:
            continue
        version, separator, encoded = entry.partition(",")
        if not separator:
            raise SignatureError(
                "malformed_header",
                f"A {STANDARD_SIGNATURE_HEADER} entry has no ',' after its version.",
            )
        if version != "v1":
            continue
        candidates.append(_decode_standard_signature(encoded))

    expected = _standard_digest(key, message_id, timestamp_text, payload)
    if not _any_matches(expected, candidates):
        raise SignatureError(
            "signature_mismatch",
            "No v1 signature matches the body, message id and timestamp.",
        )
    return timestamp


def _is_message_id(text: object) -> bool:
    # Commas are excluded so that a repeated header joined with "," is not a valid id.
    return (
        isinstance(text, str)
        and text.isascii()
        and text.isprintable()
        and text != ""
        and " " not in text
        and "," not in text
    )


def _fkod_key(secret: str) -> bytes:
    # Parsing the standard key validates the secret's format for both schemes.
    _standard_key(secret)
    return secret.encode("utf-8")


def _standard_key(secret: str) -> bytes:
    if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX):
        raise ValueError(
            f"A webhook secret must be a string that starts with {SECRET_PREFIX!r}."
        )
    encoded = secret[len(SECRET_PREFIX) :]
    # Secrets without "=" padding are accepted, as the standardwebhooks Python library does.
    padded = encoded + "=" * (-len(encoded) % 4)
    try:
        key = base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(
            f"The webhook secret after {SECRET_PREFIX!r} is not valid standard base64."
        ) from exc
    if not key:
        raise ValueError(f"The webhook secret after {SECRET_PREFIX!r} is empty.")
    return key


def _fkod_digest(key: bytes, timestamp_text: str, payload: bytes) -> bytes:
    return hmac.new(
        key, f"{timestamp_text}.".encode("ascii") + payload, hashlib.sha256
    ).digest()


def _standard_digest(
    key: bytes, message_id: str, timestamp_text: str, payload: bytes
) -> bytes:
    signed = f"{message_id}.{timestamp_text}.".encode("ascii") + payload
    return hmac.new(key, signed, hashlib.sha256).digest()


def _any_matches(expected: bytes, candidates: list[bytes]) -> bool:
    # Every candidate is compared, in constant time for each, so the time taken does not
    # show which one matched.
    matched = False
    for candidate in candidates:
        if hmac.compare_digest(expected, candidate):
            matched = True
    return matched


def _decode_standard_signature(encoded: str) -> bytes:
    try:
        digest = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureError(
            "malformed_header",
            f"A v1 signature in {STANDARD_SIGNATURE_HEADER} is not valid base64.",
        ) from exc
    if len(digest) != hashlib.sha256().digest_size:
        raise SignatureError(
            "malformed_header",
            f"A v1 signature in {STANDARD_SIGNATURE_HEADER} is not a 32-byte HMAC-SHA256.",
        )
    return digest


def _find_headers(headers: Mapping[str, str], names: tuple[str, ...]) -> dict[str, str]:
    """Return the named headers, matching names case-insensitively, or raise SignatureError."""
    found: dict[str, str] = {}
    for raw_name, value in headers.items():
        if not isinstance(raw_name, str):
            continue
        name = raw_name.lower()
        if name not in names:
            continue
        if name in found:
            raise SignatureError(
                "malformed_header", f"The {name} header appears more than once."
            )
        if not isinstance(value, str):
            raise SignatureError(
                "malformed_header", f"The {name} header value is not text."
            )
        found[name] = value

    for name in names:
        if not found.get(name):
            raise SignatureError("missing_signature", f"The {name} header is missing.")
        _check_header_text(name, found[name])
    return found


def _check_header_text(name: str, value: str) -> None:
    if not isinstance(value, str):
        raise SignatureError(
            "malformed_header", f"The {name} header value is not text."
        )
    if len(value) > MAX_HEADER_LENGTH:
        raise SignatureError(
            "malformed_header",
            f"The {name} header is longer than {MAX_HEADER_LENGTH} characters.",
        )
    if not value.isascii():
        raise SignatureError(
            "malformed_header", f"The {name} header contains non-ASCII characters."
        )


def _check_timestamp(text: str, now: int | None, tolerance_seconds: int) -> int:
    if not _TIMESTAMP.fullmatch(text):
        raise SignatureError(
            "malformed_timestamp",
            "The signature timestamp is not an integer of Unix seconds.",
        )
    timestamp = int(text)
    current = int(time.time()) if now is None else now
    if abs(current - timestamp) > tolerance_seconds:
        raise SignatureError(
            "timestamp_outside_tolerance",
            f"The signature timestamp is more than {tolerance_seconds} seconds from the current time.",
        )
    return timestamp


def _require_bytes(body: bytes) -> bytes:
    if isinstance(body, (bytes, bytearray)):
        return bytes(body)
    raise TypeError(f"body must be the exact bytes sent, not {type(body).__name__}.")


def _require_tolerance(tolerance_seconds: int) -> None:
    if tolerance_seconds < 0:
        raise ValueError(
            f"tolerance_seconds must not be negative, got {tolerance_seconds!r}."
        )
