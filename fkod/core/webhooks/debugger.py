"""The signature debugger: whether a webhook signature verifies, and why not.

A partner gives what its receiver got (the body, a signature header and, for the
Standard Webhooks scheme, the ``webhook-timestamp`` and ``webhook-id`` values), and
:func:`diagnose` recomputes the signatures the way F-KOD makes them (see
:mod:`fkod.core.webhooks.signing`). When none matches, it tries the usual receiver
mistakes one after another, so the result names the mistake. These are a re-encoded or
changed body, a secret used in the wrong form, a retired secret, a timestamp outside the
tolerance or in milliseconds, and a header value from another request.

The module is pure: the caller loads the secrets and the stored delivery. No result
contains a secret or a signature computed here.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import re
from collections.abc import Sequence

from fkod.core import jsonutil
from fkod.core.webhooks.signing import (
    FKOD_SIGNATURE_HEADER,
    MAX_HEADER_LENGTH,
    SECRET_PREFIX,
    STANDARD_SIGNATURE_HEADER,
)

SCHEME_FKOD = "fkod"
SCHEME_STANDARD = "standard"

REASON_VALID = "valid"
REASON_OUTSIDE_TOLERANCE = "timestamp_outside_tolerance"
REASON_RETIRED_SECRET = "retired_secret"  # noqa: S105 (a reason code, not a secret)
REASON_BODY_MODIFIED = "body_modified"
REASON_BODY_RESERIALIZED = "body_reserialized"
REASON_WRONG_KEY_FORM = "wrong_key_form"
REASON_MISMATCH = "signature_mismatch"

# Roles of a SigningSecret.
CURRENT = "current"
PREVIOUS = "previous"
OTHER_ENDPOINT = "other_endpoint"

# Codes of MalformedInput, which the API returns with a 400.
MALFORMED_SIGNATURE = "malformed_signature"
MALFORMED_TIMESTAMP = "malformed_timestamp"
MALFORMED_WEBHOOK_ID = "malformed_webhook_id"

# Unix seconds have 10 digits until the year 2286, so 13 digits are milliseconds.
MILLISECOND_DIGITS = 13
MAX_MESSAGE_ID_LENGTH = 255
MAX_CHANGED_PATHS = 10
EXCERPT_BYTES = 24

_TIMESTAMP = re.compile(r"[0-9]{1,15}")
_HEX = re.compile(r"[0-9a-fA-F]*")
_HEADER_NAME_PREFIX = re.compile(r"[A-Za-z][A-Za-z0-9-]*:")
_UTF8_BOM = b"\xef\xbb\xbf"
_DIGEST_SIZE = hashlib.sha256().digest_size

_SCHEME_NAMES = {
    SCHEME_FKOD: f"{FKOD_SIGNATURE_HEADER} scheme",
    SCHEME_STANDARD: "Standard Webhooks scheme",
}

# Descriptions, for messages, of the forms of the secret that can be the HMAC key.
_KEY_FORMS = {
    "whole_string": f"the whole secret string, {SECRET_PREFIX} prefix included, as UTF-8 bytes",
    "decoded": f"the bytes obtained by base64-decoding the part of the secret after "
               f"{SECRET_PREFIX}",
    "without_prefix": f"the secret string without its {SECRET_PREFIX} prefix, not decoded",
}
_CORRECT_KEY_FORM = {SCHEME_FKOD: "whole_string", SCHEME_STANDARD: "decoded"}
# Forms receivers use by mistake, in the order they are checked.
_WRONG_KEY_FORMS = {
    SCHEME_FKOD: ("decoded", "without_prefix"),
    SCHEME_STANDARD: ("whole_string", "without_prefix"),
}

_DIFFERENCES = {
    "whitespace": "whitespace was added or removed",
    "key_order": "object keys are in another order",
    "escapes": "characters are escaped differently (for example \\u00e9 in place of é)",
    "numbers": "numbers are written differently",
    "trailing_newline": "a newline was added at the end",
    "byte_order_mark": "a UTF-8 byte order mark was added at the start",
    "charset": "non-ASCII characters were decoded with the wrong charset and encoded again",
    "content": "the JSON content differs",
}


@dataclasses.dataclass(frozen=True)
class SigningSecret:
    """A secret to check the signature with, and which secret of which endpoint it is."""

    secret: str
    role: str = CURRENT
    # For the previous secret: the end of its overlap, after which deliveries no longer
    # carry its signature, and the time of the rotation that replaced it (Unix seconds).
    expires_at: int | None = None
    rotated_at: int | None = None
    # For another endpoint's secret: the endpoint's name in messages ("whk_12, test mode").
    endpoint: str | None = None


@dataclasses.dataclass(frozen=True)
class StoredDelivery:
    """A delivery of the endpoint, as F-KOD sent it."""

    event_id: str
    body: bytes
    # (attempt number, timestamp it was signed with) for each attempt, in attempt order.
    signed_attempts: tuple[tuple[int, int], ...] = ()


@dataclasses.dataclass(frozen=True)
class Diagnosis:
    """The result of :func:`diagnose`: ``reason`` is a stable code, ``message`` a sentence."""

    valid: bool
    scheme: str
    reason: str
    message: str
    details: dict


class MalformedInput(ValueError):
    """Input that cannot be checked at all, such as a header of neither scheme.

    ``code`` is one of ``malformed_signature``, ``malformed_timestamp`` and
    ``malformed_webhook_id``. ``field`` is the input field at fault (``signature``,
    ``timestamp`` or ``webhook_id``) and ``description`` the rule it breaks.
    """

    def __init__(self, code: str, field: str, description: str):
        super().__init__(f"The {field} is invalid: {description}.")
        self.code = code
        self.field = field
        self.description = description
        self.message = str(self)


@dataclasses.dataclass(frozen=True)
class SignedHeaders:
    """The signature input once parsed: scheme, timestamp, message id and signatures."""

    scheme: str
    timestamp_text: str
    message_id: str | None
    # Raw 32-byte HMAC-SHA256 values of the v1 signatures.
    signatures: tuple[bytes, ...]
    ignored_versions: tuple[str, ...]

    @property
    def timestamp(self) -> int:
        return int(self.timestamp_text)


# Parsing ------------------------------------------------------------------------


def parse_signature(signature_header: str, timestamp: str | None,
                    message_id: str | None) -> SignedHeaders:
    """Parse the signature header and the values that go with it.

    The scheme follows from the header's shape: ``t=…,v1=<hex>`` is the F-KOD scheme
    and ``v1,<base64>`` entries are the Standard Webhooks scheme, which also needs
    ``timestamp`` and ``message_id``. With the F-KOD scheme a ``timestamp`` given must
    equal ``t``. Raises MalformedInput naming the field and the rule it breaks.
    """
    header = _check_header(signature_header)
    if _HEADER_NAME_PREFIX.match(header):
        raise MalformedInput(
            MALFORMED_SIGNATURE, "signature",
            "it starts with a header name; give only the header value, without the name "
            "and the colon")
    timestamp = None if timestamp is None else timestamp.strip()
    message_id = None if message_id is None else message_id.strip()
    if _header_scheme(header) == SCHEME_STANDARD:
        return _parse_standard(header, timestamp, message_id)
    return _parse_fkod(header, timestamp, message_id)


def _check_header(header: str) -> str:
    if len(header) > MAX_HEADER_LENGTH:
        raise MalformedInput(
            MALFORMED_SIGNATURE, "signature",
            f"it is {len(header)} characters long, and a signature header has at most "
            f"{MAX_HEADER_LENGTH}")
    if not header.isascii():
        position = next(index for index, char in enumerate(header) if not char.isascii())
        raise MalformedInput(
            MALFORMED_SIGNATURE, "signature",
            f"it contains a non-ASCII character at position {position}, and a signature "
            "header contains only ASCII")
    header = header.strip()
    if not header:
        raise MalformedInput(MALFORMED_SIGNATURE, "signature", "it is empty")
    return header


def _header_scheme(header: str) -> str:
    first = re.search(r"[,= ]", header)
    if first is not None and first.group() == ",":
        return SCHEME_STANDARD
    if first is not None and first.group() == "=":
        return SCHEME_FKOD
    raise MalformedInput(
        MALFORMED_SIGNATURE, "signature",
        f"it is neither an {FKOD_SIGNATURE_HEADER} value (t=<unix seconds>,v1=<hex>) nor a "
        f"{STANDARD_SIGNATURE_HEADER} value (v1,<base64>)")


def _parse_fkod(header: str, timestamp: str | None,
                message_id: str | None) -> SignedHeaders:
    timestamp_text: str | None = None
    signatures: list[bytes] = []
    ignored: list[str] = []
    for position, raw_item in enumerate(header.split(","), start=1):
        name, separator, value = raw_item.strip().partition("=")
        if not separator:
            raise MalformedInput(
                MALFORMED_SIGNATURE, "signature",
                f"item {position} is not of the form name=value (t=<unix seconds> or "
                "v1=<hex>)")
        if name == "t":
            if timestamp_text is not None:
                raise MalformedInput(MALFORMED_SIGNATURE, "signature",
                                     "it contains t= more than once")
            timestamp_text = value
        elif name == "v1":
            signatures.append(_decode_hex_signature(value, len(signatures) + 1))
        else:
            # Versions other than v1 are skipped, as a receiver skips them.
            ignored.append(name)

    if timestamp_text is None:
        raise MalformedInput(MALFORMED_SIGNATURE, "signature",
                             "it has no t= item with the Unix time it was signed at")
    if not _TIMESTAMP.fullmatch(timestamp_text):
        raise MalformedInput(MALFORMED_TIMESTAMP, "signature",
                             _timestamp_rule("the t= value", timestamp_text))
    if not signatures:
        raise MalformedInput(MALFORMED_SIGNATURE, "signature", "it has no v1= signature")
    if timestamp is not None and timestamp != timestamp_text:
        raise MalformedInput(
            MALFORMED_TIMESTAMP, "timestamp",
            f"it must equal the t= value of the {FKOD_SIGNATURE_HEADER} header "
            f"({timestamp_text}), or be left out")
    if message_id is not None:
        _check_message_id(message_id)
    return SignedHeaders(SCHEME_FKOD, timestamp_text, message_id, tuple(signatures),
                         tuple(ignored))


def _decode_hex_signature(value: str, number: int) -> bytes:
    expected = 2 * _DIGEST_SIZE
    if not _HEX.fullmatch(value):
        raise MalformedInput(
            MALFORMED_SIGNATURE, "signature",
            f"v1 signature {number} contains characters that are not hexadecimal digits")
    if len(value) != expected:
        raise MalformedInput(
            MALFORMED_SIGNATURE, "signature",
            f"v1 signature {number} has {len(value)} hexadecimal digits, not {expected}")
    return bytes.fromhex(value)


def _parse_standard(header: str, timestamp: str | None,
                    message_id: str | None) -> SignedHeaders:
    signatures: list[bytes] = []
    ignored: list[str] = []
    entries = [entry for entry in header.split(" ") if entry]
    for position, entry in enumerate(entries, start=1):
        version, separator, encoded = entry.partition(",")
        if not separator:
            raise MalformedInput(
                MALFORMED_SIGNATURE, "signature",
                f"entry {position} has no ',' after its version; entries are v1,<base64> "
                "separated by spaces")
        if version != "v1":
            ignored.append(version)
            continue
        signatures.append(_decode_base64_signature(encoded, len(signatures) + 1))
    if not signatures:
        raise MalformedInput(MALFORMED_SIGNATURE, "signature", "it has no v1 signature")

    if timestamp is None or timestamp == "":
        raise MalformedInput(
            MALFORMED_TIMESTAMP, "timestamp",
            "it is required with a webhook-signature value: give the webhook-timestamp "
            "header of the same request")
    if not _TIMESTAMP.fullmatch(timestamp):
        raise MalformedInput(MALFORMED_TIMESTAMP, "timestamp",
                             _timestamp_rule("it", timestamp))
    if message_id is None or message_id == "":
        raise MalformedInput(
            MALFORMED_WEBHOOK_ID, "webhook_id",
            "it is required with a webhook-signature value: give the webhook-id header of "
            "the same request")
    _check_message_id(message_id)
    return SignedHeaders(SCHEME_STANDARD, timestamp, message_id, tuple(signatures),
                         tuple(ignored))


def _decode_base64_signature(encoded: str, number: int) -> bytes:
    try:
        digest = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedInput(MALFORMED_SIGNATURE, "signature",
                             f"v1 signature {number} is not valid standard base64") from None
    if len(digest) != _DIGEST_SIZE:
        raise MalformedInput(
            MALFORMED_SIGNATURE, "signature",
            f"v1 signature {number} decodes to {len(digest)} bytes, not the "
            f"{_DIGEST_SIZE} of an HMAC-SHA256")
    return digest


def _timestamp_rule(subject: str, text: str) -> str:
    if text == "":
        return f"{subject} is empty; it must be the Unix time in seconds"
    if len(text) <= 20:
        return f"{subject} {text!r} is not the Unix time in seconds (1 to 15 digits)"
    return f"{subject} is not the Unix time in seconds (1 to 15 digits)"


def _check_message_id(message_id: str) -> None:
    valid = (
        message_id != ""
        and len(message_id) <= MAX_MESSAGE_ID_LENGTH
        and message_id.isascii()
        and message_id.isprintable()
        and " " not in message_id
        and "," not in message_id
    )
    if not valid:
        raise MalformedInput(
            MALFORMED_WEBHOOK_ID, "webhook_id",
            f"it must be one message id (such as evt_…) of at most {MAX_MESSAGE_ID_LENGTH} "
            "printable ASCII characters, without spaces or commas")


def event_id_in(payload: bytes) -> str | None:
    """Return the ``evt_…`` id of a payload that is a JSON event, or None."""
    value = _load_json(payload)
    if isinstance(value, dict):
        event_id = value.get("id")
        if isinstance(event_id, str) and event_id.startswith("evt_") and len(event_id) <= 40:
            return event_id
    return None


# Diagnosis ----------------------------------------------------------------------


def diagnose(*, payload: bytes, signature_header: str, timestamp: str | None,
             message_id: str | None, secrets: Sequence[SigningSecret],
             delivery: StoredDelivery | None, now: int,
             tolerance_seconds: int) -> Diagnosis:
    """Check a signature a receiver got, and explain why it does not verify.

    ``secrets`` are the endpoint's current secret, its previous one if any and,
    optionally, other endpoints' current secrets (role ``other_endpoint``), which
    only sharpen the explanation of a mismatch. ``delivery`` is the stored delivery
    the payload claims to be, or None. The checks run from the most to the least
    likely explanation, and the first that finds a match wins. Raises MalformedInput
    for input that cannot be checked.
    """
    headers = parse_signature(signature_header, timestamp, message_id)
    check = _Check(headers, bytes(payload), list(secrets), delivery, now, tolerance_seconds)
    return (
        check.exact_match()
        or check.millisecond_match()
        or check.changed_body()
        or check.wrong_key_form()
        or check.changed_header_value()
        or check.other_endpoint()
        or check.mismatch()
    )


class _Check:
    """One run of :func:`diagnose`: the parsed input and the candidates to try."""

    def __init__(self, headers: SignedHeaders, payload: bytes, secrets: list[SigningSecret],
                 delivery: StoredDelivery | None, now: int, tolerance_seconds: int):
        self.headers = headers
        self.scheme = headers.scheme
        self.payload = payload
        # The current secret is checked first, so it wins when both secrets match.
        self.own_secrets = [item for item in secrets if item.role == CURRENT]
        self.own_secrets += [item for item in secrets if item.role == PREVIOUS]
        self.other_secrets = [item for item in secrets if item.role == OTHER_ENDPOINT]
        # ``stored`` is the delivery the payload claims to be. ``delivery`` is the same
        # delivery, or None when its body equals the payload and so adds nothing to check.
        self.stored = delivery
        self.delivery = delivery if delivery is not None and delivery.body != payload else None
        self.now = now
        self.tolerance = tolerance_seconds
        self.variants = _payload_variants(payload)

    # The checks, in the order diagnose runs them -----------------------------------

    def exact_match(self) -> Diagnosis | None:
        for secret in self.own_secrets:
            if not self._matches(self._key(secret), self.payload):
                continue
            if secret.role == PREVIOUS and self._is_retired(secret):
                return self._retired(secret)
            if abs(self.now - self.headers.timestamp) > self.tolerance:
                return self._outside_tolerance(secret)
            return self._valid(secret)
        return None

    def millisecond_match(self) -> Diagnosis | None:
        text = self.headers.timestamp_text
        if len(text) != MILLISECOND_DIGITS:
            return None
        seconds = str(int(text) // 1000)
        for secret in self.own_secrets:
            if self._matches(self._key(secret), self.payload, timestamp_text=seconds):
                return self._outside_tolerance(secret, matched_as_seconds=int(seconds))
        return None

    def changed_body(self) -> Diagnosis | None:
        for source, original in self._original_bodies():
            for secret in self.own_secrets:
                if self._matches(self._key(secret), original):
                    return self._body_changed(secret, source, original)
        return None

    def wrong_key_form(self) -> Diagnosis | None:
        bodies = [("payload", self.payload), *self._original_bodies()]
        for secret in self.own_secrets:
            for form, key in _wrong_key_forms(secret.secret, self.scheme):
                for source, body in bodies:
                    if self._matches(key, body):
                        return self._wrong_key(secret, form, source)
        return None

    def changed_header_value(self) -> Diagnosis | None:
        bodies = [self.payload] + ([self.delivery.body] if self.delivery else [])
        for attempt, signed_at in self._other_signed_timestamps():
            for secret in self.own_secrets:
                if any(self._matches(self._key(secret), body, timestamp_text=str(signed_at))
                       for body in bodies):
                    return self._timestamp_changed(attempt, signed_at)
        if self.scheme != SCHEME_STANDARD:
            return None
        for event_id in self._other_message_ids():
            for secret in self.own_secrets:
                if any(self._matches(self._key(secret), body, message_id=event_id)
                       for body in bodies):
                    return self._message_id_changed(event_id)
        return None

    def other_endpoint(self) -> Diagnosis | None:
        bodies = [self.payload] + ([self.delivery.body] if self.delivery else [])
        for secret in self.other_secrets:
            key = self._key(secret)
            if key is not None and any(self._matches(key, body) for body in bodies):
                message = (
                    f"No signature matches this endpoint's secrets, but one matches the "
                    f"secret of another of your endpoints, {secret.endpoint}. Each endpoint, "
                    "in test and in live mode, has its own secret: the receiver must verify "
                    "with the secret of the endpoint the request was sent to."
                )
                details = {"cause": "other_endpoint", "other_endpoint": secret.endpoint}
                return self._diagnosis(REASON_MISMATCH, message, details)
        return None

    def mismatch(self) -> Diagnosis:
        checked = self._checked()
        message = (
            "No signature in the header matches the payload with this endpoint's secrets. "
            "Most often the receiver verifies with another secret (another endpoint's, or "
            "the test-mode endpoint's in place of the live one), or the payload is not the "
            "body exactly as received."
        )
        if self.stored is None:
            message += (
                " No delivery of this endpoint has the webhook_id given or the payload's "
                "event id, so the payload could not be compared with what F-KOD sent."
            )
        elif self.delivery is None:
            message += (
                f" The payload is exactly the body F-KOD delivered for event "
                f"{self.stored.event_id}, so the secret or the header is at fault, not the "
                "body."
            )
        message += self._timestamp_note()
        return self._diagnosis(REASON_MISMATCH, message, {"cause": "unknown", "checked": checked})

    # Answers -------------------------------------------------------------------

    def _valid(self, secret: SigningSecret) -> Diagnosis:
        message = (
            f"The signature is valid: it matches this endpoint's {secret.role} secret, and "
            f"its timestamp is {self._age_phrase()}, within the tolerance of "
            f"{_seconds(self.tolerance)}."
        )
        if secret.role == PREVIOUS:
            message += (
                f" Deliveries carry a signature made with the previous secret only until "
                f"{_iso(secret.expires_at)}, so switch the receiver to the current secret "
                "before then."
            )
        details = {"matched_secret": secret.role}
        if secret.role == PREVIOUS:
            details["previous_secret_expires_at"] = _iso(secret.expires_at)
        return self._diagnosis(REASON_VALID, message, details, valid=True)

    def _outside_tolerance(self, secret: SigningSecret, *,
                           matched_as_seconds: int | None = None) -> Diagnosis:
        timestamp = self.headers.timestamp
        age = self.now - timestamp
        beyond = abs(age) - self.tolerance
        details = {"matched_secret": secret.role, "direction": "past" if age > 0 else "future",
                   "beyond_tolerance_seconds": beyond}
        if len(self.headers.timestamp_text) == MILLISECOND_DIGITS:
            details.update(looks_like_milliseconds=True, timestamp_as_seconds=timestamp // 1000)
            if matched_as_seconds is not None:
                message = (
                    f"The timestamp {timestamp} has {MILLISECOND_DIGITS} digits, so it looks "
                    f"like milliseconds, and the signature matches it read as seconds "
                    f"({matched_as_seconds}). Give the webhook-timestamp header exactly as "
                    "received: signature timestamps are Unix seconds."
                )
            else:
                message = (
                    f"The signature matches, but its timestamp {timestamp} has "
                    f"{MILLISECOND_DIGITS} digits, so it looks like milliseconds: signature "
                    "timestamps are Unix seconds, and this one is far outside the tolerance "
                    f"of {_seconds(self.tolerance)}."
                )
            return self._diagnosis(REASON_OUTSIDE_TOLERANCE, message, details)

        message = (
            f"The signature matches, but its timestamp is {self._age_phrase()}, "
            f"{_seconds(beyond)} beyond the tolerance of {_seconds(self.tolerance)}."
        )
        if age > 0:
            message += (
                f" F-KOD signed this message {_seconds(age)} ago, so a receiver must now "
                "reject it as a possible replay of an old message. If the receiver rejects "
                "deliveries as they arrive, its clock is ahead of the real time: "
                "synchronize it with NTP."
            )
        else:
            message += (
                " F-KOD signs with its current time, so the clock that set this timestamp "
                f"is {_seconds(-age)} ahead. If the receiver rejects F-KOD's deliveries as "
                "coming from the future, the receiver's clock is behind: synchronize it "
                "with NTP."
            )
        attempt = self._attempt_signed_at(timestamp)
        if attempt is not None:
            message += (
                f" It is the timestamp of attempt {attempt} of event {self.stored.event_id}."
            )
            details["attempt"] = attempt
        return self._diagnosis(REASON_OUTSIDE_TOLERANCE, message, details)

    def _retired(self, secret: SigningSecret) -> Diagnosis:
        retired_at = _retired_at(secret)
        rotated = f" replaced at {_iso(secret.rotated_at)} and" if secret.rotated_at else ""
        message = (
            f"The signature was made with the previous secret, which was{rotated} retired "
            f"at {retired_at}: deliveries no longer carry a signature made with it. The "
            "receiver must verify with the endpoint's current secret."
        )
        message += self._timestamp_note()
        details = {"matched_secret": PREVIOUS, "retired_at": retired_at,
                   "rotated_at": _iso(secret.rotated_at)}
        return self._diagnosis(REASON_RETIRED_SECRET, message, details)

    def _body_changed(self, secret: SigningSecret, source: str, original: bytes) -> Diagnosis:
        offset = _first_difference(self.payload, original)
        differences, json_equal = _describe_differences(self.payload, original)
        listed = "; ".join(_DIFFERENCES[name] for name in differences)
        details = {
            "matched_secret": secret.role,
            "matched_body": source,
            "differences": differences,
            "first_difference": {
                "offset": offset,
                "payload": _excerpt(self.payload, offset),
                "signed": _excerpt(original, offset),
            },
        }
        if json_equal:
            reason = REASON_BODY_RESERIALIZED
            message = (
                f"The payload given is the JSON that F-KOD signed, but encoded differently: "
                f"{listed}. The signature matches {self._body_phrase(source)}, and the bytes "
                f"first differ at offset {offset}. Verify the signature over the raw request "
                "body before parsing it, never over JSON encoded again."
            )
        else:
            reason = REASON_BODY_MODIFIED
            message = (f"The signature matches {self._body_phrase(source)}, not the payload "
                       f"given: {listed}")
            changed = _changed_paths(_load_json(self.payload), _load_json(original))
            if changed:
                message += f" (at {', '.join(changed)})"
                details["changed_fields"] = changed
            message += (
                f". The bytes first differ at offset {offset}. Verify the body exactly as "
                "received, as bytes, before any decoding or change."
            )
        message += self._retired_note(secret) + self._timestamp_note()
        return self._diagnosis(reason, message, details)

    def _wrong_key(self, secret: SigningSecret, form: str, source: str) -> Diagnosis:
        correct = _CORRECT_KEY_FORM[self.scheme]
        message = (
            f"The signature was computed with this endpoint's {secret.role} secret in the "
            f"wrong form: its HMAC key was {_KEY_FORMS[form]}. The "
            f"{_SCHEME_NAMES[self.scheme]} uses {_KEY_FORMS[correct]} as the key."
        )
        if source != "payload":
            message += (f" The body was changed as well: the signature matches only "
                        f"{self._body_phrase(source)}.")
        message += self._retired_note(secret) + self._timestamp_note()
        details = {"matched_secret": secret.role, "key_form": form, "expected_key_form": correct,
                   "matched_body": source}
        return self._diagnosis(REASON_WRONG_KEY_FORM, message, details)

    def _timestamp_changed(self, attempt: int, signed_at: int) -> Diagnosis:
        field = "t= value" if self.scheme == SCHEME_FKOD else "webhook-timestamp"
        message = (
            f"No signature matches the timestamp {self.headers.timestamp_text} given, but one "
            f"matches {signed_at}, the timestamp of attempt {attempt} of event "
            f"{self.stored.event_id}. Give the {field} of the same request as the signature."
        )
        details = {"cause": "timestamp_changed", "signed_timestamp": signed_at,
                   "attempt": attempt}
        return self._diagnosis(REASON_MISMATCH, message, details)

    def _message_id_changed(self, event_id: str) -> Diagnosis:
        message = (
            f"No signature matches the webhook_id {self.headers.message_id} given, but one "
            f"matches {event_id}, the id of the event in the payload. Give the webhook-id "
            "header of the same request as the signature."
        )
        details = {"cause": "webhook_id_changed", "signed_webhook_id": event_id}
        return self._diagnosis(REASON_MISMATCH, message, details)

    def _diagnosis(self, reason: str, message: str, details: dict, *,
                valid: bool = False) -> Diagnosis:
        timestamp = self.headers.timestamp
        common = {
            "timestamp": timestamp,
            "age_seconds": self.now - timestamp,
            "tolerance_seconds": self.tolerance,
            "timestamp_within_tolerance": abs(self.now - timestamp) <= self.tolerance,
            "signatures_in_header": len(self.headers.signatures),
        }
        if self.headers.message_id is not None:
            common["webhook_id"] = self.headers.message_id
        if self.headers.ignored_versions:
            common["ignored_versions"] = list(self.headers.ignored_versions)
        if self.stored is not None:
            common["event_id"] = self.stored.event_id
        return Diagnosis(valid=valid, scheme=self.scheme, reason=reason, message=message,
                         details={**common, **details})

    # Helpers -------------------------------------------------------------------

    def _key(self, secret: SigningSecret) -> bytes | None:
        if self.scheme == SCHEME_FKOD:
            return secret.secret.encode("utf-8") if _decode_secret(secret.secret) else None
        return _decode_secret(secret.secret)

    def _matches(self, key: bytes | None, body: bytes, *, timestamp_text: str | None = None,
                 message_id: str | None = None) -> bool:
        if key is None:
            return False
        timestamp_text = timestamp_text or self.headers.timestamp_text
        if self.scheme == SCHEME_FKOD:
            prefix = f"{timestamp_text}."
        else:
            prefix = f"{message_id or self.headers.message_id}.{timestamp_text}."
        expected = hmac.new(key, prefix.encode("ascii") + body, hashlib.sha256).digest()
        # Every signature is compared, each in constant time.
        matched = False
        for signature in self.headers.signatures:
            if hmac.compare_digest(expected, signature):
                matched = True
        return matched

    def _is_retired(self, secret: SigningSecret) -> bool:
        return secret.expires_at is None or secret.expires_at <= self.now

    def _original_bodies(self) -> list[tuple[str, bytes]]:
        """Bodies the payload may have been made from: the stored one, then the variants."""
        if self.delivery is None:
            return self.variants
        return [("delivery", self.delivery.body)] + [
            (source, body) for source, body in self.variants if body != self.delivery.body]

    def _other_signed_timestamps(self) -> list[tuple[int, int]]:
        if self.stored is None:
            return []
        seen = {self.headers.timestamp}
        found = []
        for attempt, signed_at in self.stored.signed_attempts:
            if signed_at not in seen:
                seen.add(signed_at)
                found.append((attempt, signed_at))
        return found

    def _other_message_ids(self) -> list[str]:
        candidates = [event_id_in(self.payload)]
        if self.stored is not None:
            candidates.append(self.stored.event_id)
        found = []
        for event_id in candidates:
            if event_id and event_id != self.headers.message_id and event_id not in found:
                found.append(event_id)
        return found

    def _attempt_signed_at(self, timestamp: int) -> int | None:
        if self.stored is None:
            return None
        for attempt, signed_at in self.stored.signed_attempts:
            if signed_at == timestamp:
                return attempt
        return None

    def _age_phrase(self) -> str:
        age = self.now - self.headers.timestamp
        if age == 0:
            return "the current time"
        if age > 0:
            return f"{_seconds(age)} in the past"
        return f"{_seconds(-age)} in the future"

    def _timestamp_note(self) -> str:
        if abs(self.now - self.headers.timestamp) <= self.tolerance:
            return ""
        note = (f" The timestamp is also {self._age_phrase()}, beyond the tolerance of "
                f"{_seconds(self.tolerance)}")
        if len(self.headers.timestamp_text) == MILLISECOND_DIGITS:
            note += ", and it looks like milliseconds where Unix seconds are expected"
        return note + "."

    def _retired_note(self, secret: SigningSecret) -> str:
        if secret.role != PREVIOUS or not self._is_retired(secret):
            return ""
        return (f" The signature was also made with the previous secret, retired at "
                f"{_retired_at(secret)}: verify with the current secret.")

    def _body_phrase(self, source: str) -> str:
        if source == "delivery":
            return f"the body F-KOD delivered for event {self.stored.event_id}"
        return _VARIANT_PHRASES[source]

    def _checked(self) -> dict:
        roles = [item.role for item in self.own_secrets]
        bodies = ["payload"] + [source for source, _ in self._original_bodies()]
        forms = [_CORRECT_KEY_FORM[self.scheme], *_WRONG_KEY_FORMS[self.scheme]]
        checked = {
            "secrets": roles,
            "key_forms": forms,
            "bodies": bodies,
            "timestamps": [self.headers.timestamp]
            + [signed_at for _, signed_at in self._other_signed_timestamps()],
            "other_endpoints": len(self.other_secrets),
        }
        if self.scheme == SCHEME_STANDARD:
            checked["webhook_ids"] = [self.headers.message_id, *self._other_message_ids()]
        return checked


# Charsets a receiver may have decoded the UTF-8 body with by mistake.
_ONE_BYTE_CHARSETS = {"charset_latin_1": "latin-1", "charset_cp1252": "cp1252"}

_VARIANT_PHRASES = {
    "trailing_newline": "the payload without its trailing newline",
    "byte_order_mark": "the payload without its leading byte order mark",
    "charset_latin_1": "the payload once its text is encoded as Latin-1 in place of UTF-8",
    "charset_cp1252": "the payload once its text is encoded as Windows-1252 in place of UTF-8",
    "compact_json": "the payload once it is encoded as compact JSON, the way F-KOD sends it",
}


def _payload_variants(payload: bytes) -> list[tuple[str, bytes]]:
    """Bodies a receiver's usual changes would have turned into ``payload``."""
    candidates = []
    stripped = payload.rstrip(b"\r\n")
    if stripped != payload:
        candidates.append(("trailing_newline", stripped))
    if payload.startswith(_UTF8_BOM):
        candidates.append(("byte_order_mark", payload[len(_UTF8_BOM):]))
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and not text.isascii():
        # A body decoded with a one-byte charset and encoded again as UTF-8 turns back into
        # the original bytes when its text is encoded with that charset.
        for source, charset in _ONE_BYTE_CHARSETS.items():
            try:
                candidates.append((source, text.encode(charset)))
            except UnicodeEncodeError:
                pass
    value = _load_json(payload)
    if value is not None:
        candidates.append(("compact_json", jsonutil.dumps(value)))

    unique: list[tuple[str, bytes]] = []
    for source, body in candidates:
        if body != payload and all(body != seen for _, seen in unique):
            unique.append((source, body))
    return unique


def _wrong_key_forms(secret: str, scheme: str) -> list[tuple[str, bytes]]:
    decoded = _decode_secret(secret)
    if decoded is None:
        return []
    keys = {
        "whole_string": secret.encode("utf-8"),
        "decoded": decoded,
        "without_prefix": secret[len(SECRET_PREFIX):].encode("utf-8"),
    }
    return [(form, keys[form]) for form in _WRONG_KEY_FORMS[scheme]]


def _decode_secret(secret: str) -> bytes | None:
    """Return the key bytes of a ``whsec_`` secret, or None for a secret of another form."""
    if not secret.startswith(SECRET_PREFIX):
        return None
    encoded = secret[len(SECRET_PREFIX):]
    # Secrets without "=" padding are accepted, as the signing module accepts them.
    padded = encoded + "=" * (-len(encoded) % 4)
    try:
        return base64.b64decode(padded, validate=True) or None
    except (binascii.Error, ValueError):
        return None


# Comparing bodies -----------------------------------------------------------------


def _load_json(body: bytes):
    """Return the JSON value of ``body`` read as strict UTF-8, or None if it is not JSON."""
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None


def _first_difference(first: bytes, second: bytes) -> int:
    """Return the length of the common prefix, found by halving so each step runs in C."""
    low, high = 0, min(len(first), len(second))
    while low < high:
        middle = (low + high + 1) // 2
        if first[:middle] == second[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def _excerpt(body: bytes, offset: int) -> str:
    start = max(0, offset - EXCERPT_BYTES // 2)
    return body[start:start + EXCERPT_BYTES].decode("utf-8", errors="replace")


def _describe_differences(payload: bytes, original: bytes) -> tuple[list[str], bool]:
    """Name how ``payload`` differs from the signed ``original``.

    Returns the names (keys of ``_DIFFERENCES``) and whether both are JSON documents
    with equal values, which makes the payload a re-encoding of the original.
    """
    if payload.startswith(_UTF8_BOM) and payload[len(_UTF8_BOM):] == original:
        return ["byte_order_mark"], False
    if _is_charset_round_trip(payload, original):
        return ["charset"], False
    received, signed = _load_json(payload), _load_json(original)
    json_equal = received is not None and signed is not None and _json_equal(received, signed)
    if payload.rstrip(b"\r\n") == original:
        return ["trailing_newline"], json_equal
    if not json_equal:
        return ["content"], False

    found = []
    received_tokens, signed_tokens = _tokens(payload), _tokens(original)
    if received_tokens.whitespace != signed_tokens.whitespace:
        found.append("whitespace")
    if _key_orders(payload) != _key_orders(original):
        found.append("key_order")
    if sorted(received_tokens.strings) != sorted(signed_tokens.strings):
        found.append("escapes")
    if sorted(received_tokens.literals) != sorted(signed_tokens.literals):
        found.append("numbers")
    return found or ["whitespace"], True


def _is_charset_round_trip(payload: bytes, original: bytes) -> bool:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return False
    for charset in _ONE_BYTE_CHARSETS.values():
        try:
            if text.encode(charset) == original:
                return True
        except UnicodeEncodeError:
            continue
    return False


def _json_equal(first, second) -> bool:
    """Compare JSON values, keeping true apart from 1 (Python's == does not)."""
    if isinstance(first, bool) or isinstance(second, bool):
        return type(first) is type(second) and first == second
    if isinstance(first, dict) and isinstance(second, dict):
        return first.keys() == second.keys() and all(
            _json_equal(first[key], second[key]) for key in first)
    if isinstance(first, list) and isinstance(second, list):
        return len(first) == len(second) and all(
            _json_equal(left, right) for left, right in zip(first, second, strict=True))
    if isinstance(first, (int, float)) and isinstance(second, (int, float)):
        return first == second
    return type(first) is type(second) and first == second


def _changed_paths(received, signed) -> list[str]:
    """Return up to MAX_CHANGED_PATHS paths (``data.name``, ``tags[2]``) with other values."""
    if received is None or signed is None:
        return []
    found: list[str] = []
    _collect_changes(received, signed, "", found)
    return found[:MAX_CHANGED_PATHS]


def _collect_changes(received, signed, path: str, found: list[str]) -> None:
    if len(found) >= MAX_CHANGED_PATHS:
        return
    if isinstance(received, dict) and isinstance(signed, dict):
        for key in list(signed) + [key for key in received if key not in signed]:
            child = f"{path}.{key}" if path else str(key)
            if key not in received or key not in signed:
                found.append(child)
            else:
                _collect_changes(received[key], signed[key], child, found)
        return
    if isinstance(received, list) and isinstance(signed, list) and len(received) == len(signed):
        for index, (left, right) in enumerate(zip(received, signed, strict=True)):
            _collect_changes(left, right, f"{path}[{index}]", found)
        return
    if not _json_equal(received, signed):
        found.append(path or "the whole document")


@dataclasses.dataclass
class _Tokens:
    """JSON text split up: whitespace bytes outside strings, string literals, other literals."""

    whitespace: int = 0
    strings: list[bytes] = dataclasses.field(default_factory=list)
    literals: list[bytes] = dataclasses.field(default_factory=list)


_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"?|[ \t\r\n]+|[{}\[\]:,]|[^ \t\r\n{}\[\]:,"]+', re.DOTALL)


def _tokens(body: bytes) -> _Tokens:
    tokens = _Tokens()
    for match in _TOKEN.finditer(body):
        token = match.group()
        if token.startswith(b'"'):
            tokens.strings.append(token)
        elif token[:1] in (b" ", b"\t", b"\r", b"\n"):
            tokens.whitespace += len(token)
        elif token not in (b"{", b"}", b"[", b"]", b":", b","):
            tokens.literals.append(token)
    return tokens


def _key_orders(body: bytes) -> list[tuple[str, ...]]:
    """Return the key order of every object in ``body``, inner objects first."""
    orders: list[tuple[str, ...]] = []

    def record(pairs):
        orders.append(tuple(key for key, _ in pairs))
        return dict(pairs)

    try:
        json.loads(body.decode("utf-8"), object_pairs_hook=record)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return []
    return orders


def _retired_at(secret: SigningSecret) -> str | None:
    """Return when a previous secret stopped signing deliveries, in ISO 8601."""
    return _iso(secret.expires_at if secret.expires_at is not None else secret.rotated_at)


def _seconds(count: int) -> str:
    return "1 second" if count == 1 else f"{count} seconds"


def _iso(timestamp: int | None) -> str | None:
    if timestamp is None:
        return None
    moment = dt.datetime.fromtimestamp(timestamp, dt.UTC)
    return moment.isoformat().replace("+00:00", "Z")
