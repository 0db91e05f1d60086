"""Verification of the webhook deliveries the platform signs.

A delivery carries two signatures over the exact body bytes:

* ``X-FKOD-Signature: t=<unix seconds>,v1=<hex>``: HMAC-SHA256 keyed with the
  whole secret string (``whsec_...`` as UTF-8) over ``"<t>." + body``.
* Standard Webhooks: ``webhook-id``, ``webhook-timestamp`` and
  ``webhook-signature: v1,<base64>``, an HMAC-SHA256 keyed with the
  base64-decoded part of the secret after ``whsec_`` over
  ``"<id>.<timestamp>." + body``.

While a secret is being rotated a header carries one signature per secret,
separated by commas (``v1=...,v1=...``) or spaces (``v1,... v1,...``), and one
match is enough.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import time
from collections.abc import Mapping, Sequence

from fkod_sdk.errors import WebhookVerificationError
from fkod_sdk.types import WebhookEvent

SECRET_PREFIX = "whsec_"  # noqa: S105 (the prefix of every secret, not a secret)
DEFAULT_TOLERANCE_SECONDS = 300
MAX_HEADER_LENGTH = 2048

_TIMESTAMP = re.compile(r"[0-9]{1,15}")
_HEX_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_SIGNATURE_HEADERS = frozenset({"webhook-id", "webhook-timestamp", "webhook-signature",
                                "x-fkod-signature"})


def verify_webhook(
    body: bytes,
    headers: Mapping[str, str],
    secret: str | Sequence[str],
    *,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> WebhookEvent:
    """Verify a delivery and return its event.

    ``body`` is the raw request body as received, before any JSON parsing.
    ``headers`` is the request's headers; names are matched case-insensitively.
    ``secret`` is the endpoint's ``whsec_`` secret, or several secrets while the
    receiver moves from one to the next. The Standard Webhooks headers are
    checked when ``webhook-signature`` is present, otherwise
    ``X-FKOD-Signature``. The timestamp must be within ``tolerance_seconds`` of
    ``now`` (default: the current time) in either direction.

    Raises :class:`~fkod_sdk.errors.WebhookVerificationError` with a ``reason``,
    and ValueError for a secret that is not ``whsec_`` and base64.
    """
    if not isinstance(body, (bytes, bytearray)):
        raise TypeError(f"body must be the raw bytes received, not {type(body).__name__}.")
    payload = bytes(body)
    secrets = [secret] if isinstance(secret, str) else list(secret)
    if not secrets:
        raise ValueError("Give at least one webhook secret.")
    lowered = _lower_headers(headers)
    current = time.time() if now is None else now

    if lowered.get("webhook-signature"):
        _verify_standard(payload, lowered, secrets, tolerance_seconds, current)
    elif lowered.get("x-fkod-signature"):
        _verify_fkod(payload, lowered["x-fkod-signature"], secrets, tolerance_seconds, current)
    else:
        raise WebhookVerificationError(
            "missing_signature",
            "The delivery has neither a webhook-signature nor an X-FKOD-Signature header.")

    try:
        event = json.loads(payload)
    except ValueError as exc:
        raise WebhookVerificationError("invalid_payload",
                                       "The signed body is not valid JSON.") from exc
    if not isinstance(event, dict):
        raise WebhookVerificationError("invalid_payload", "The signed body is not a JSON object.")
    return WebhookEvent.from_dict(event)


def _lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    lowered: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        if key not in _SIGNATURE_HEADERS:
            continue
        if key in lowered:
            raise WebhookVerificationError("malformed_header",
                                           f"The {key} header appears more than once.")
        if not isinstance(value, str) or len(value) > MAX_HEADER_LENGTH or not value.isascii():
            raise WebhookVerificationError(
                "malformed_header",
                f"The {key} header is not ASCII text of at most {MAX_HEADER_LENGTH} characters.")
        lowered[key] = value
    return lowered


def _verify_standard(payload: bytes, headers: dict[str, str], secrets: list[str],
                     tolerance_seconds: int, now: float) -> None:
    message_id = headers.get("webhook-id")
    timestamp = headers.get("webhook-timestamp")
    if not message_id or not timestamp:
        raise WebhookVerificationError(
            "missing_signature", "The webhook-id or webhook-timestamp header is missing.")
    if " " in message_id or "," in message_id or not message_id.isprintable():
        raise WebhookVerificationError("malformed_header",
                                       "The webhook-id header is not a single message id.")

    candidates: list[bytes] = []
    for entry in headers["webhook-signature"].split(" "):
        if not entry:
            continue
        version, separator, encoded = entry.partition(",")
        if not separator:
            raise WebhookVerificationError(
                "malformed_header", "A webhook-signature entry has no ',' after its version.")
        if version != "v1":
            continue
        try:
            candidate = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise WebhookVerificationError(
                "malformed_header", "A v1 signature in webhook-signature is not base64.") from exc
        candidates.append(candidate)
    if not candidates:
        raise WebhookVerificationError("missing_signature",
                                       "The webhook-signature header has no v1 signature.")
    _check_timestamp(timestamp, tolerance_seconds, now)

    signed = f"{message_id}.{timestamp}.".encode("ascii") + payload
    expected = [hmac.new(_standard_key(secret), signed, hashlib.sha256).digest()
                for secret in secrets]
    if not _any_matches(expected, candidates):
        raise WebhookVerificationError(
            "signature_mismatch",
            "No v1 signature matches the body, message id and timestamp for the given secret.")


def _verify_fkod(payload: bytes, header: str, secrets: list[str], tolerance_seconds: int,
                 now: float) -> None:
    timestamp: str | None = None
    candidates: list[bytes] = []
    for item in header.split(","):
        name, separator, value = item.strip().partition("=")
        if not separator:
            raise WebhookVerificationError("malformed_header",
                                           "The X-FKOD-Signature header has an item without '='.")
        if name == "t":
            if timestamp is not None:
                raise WebhookVerificationError("malformed_header",
                                               "The X-FKOD-Signature header has two t= items.")
            timestamp = value
        elif name == "v1":
            if not _HEX_SHA256.fullmatch(value):
                raise WebhookVerificationError(
                    "malformed_header", "A v1 signature in X-FKOD-Signature is not 64 hex digits.")
            candidates.append(bytes.fromhex(value))
    if timestamp is None:
        raise WebhookVerificationError("malformed_header",
                                       "The X-FKOD-Signature header has no t= item.")
    if not candidates:
        raise WebhookVerificationError("missing_signature",
                                       "The X-FKOD-Signature header has no v1 signature.")
    _check_timestamp(timestamp, tolerance_seconds, now)

    signed = f"{timestamp}.".encode("ascii") + payload
    expected = []
    for secret in secrets:
        _standard_key(secret)  # checks the secret's form, as for the other scheme
        expected.append(hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).digest())
    if not _any_matches(expected, candidates):
        raise WebhookVerificationError(
            "signature_mismatch",
            "No v1 signature matches the body and timestamp for the given secret.")


def _standard_key(secret: str) -> bytes:
    if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"A webhook secret must be a string starting with {SECRET_PREFIX!r}.")
    encoded = secret[len(SECRET_PREFIX):]
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"The webhook secret after {SECRET_PREFIX!r} is not base64.") from exc
    if not key:
        raise ValueError(f"The webhook secret after {SECRET_PREFIX!r} is empty.")
    return key


def _check_timestamp(text: str, tolerance_seconds: int, now: float) -> None:
    if not _TIMESTAMP.fullmatch(text):
        raise WebhookVerificationError("malformed_header",
                                       "The signature timestamp is not Unix seconds.")
    if abs(now - int(text)) > tolerance_seconds:
        raise WebhookVerificationError(
            "timestamp_outside_tolerance",
            f"The signature timestamp {text} is more than {tolerance_seconds} seconds from "
            "the current time.")


def _any_matches(expected: list[bytes], candidates: list[bytes]) -> bool:
    # Every pair is compared in constant time, so the time taken does not show which matched.
    matched = False
    for digest in expected:
        for candidate in candidates:
            if hmac.compare_digest(digest, candidate):
                matched = True
    return matched
