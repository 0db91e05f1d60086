"""Tests of the signature debugger: each reason, each receiver mistake, each malformed input."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from fkod.core import jsonutil
from fkod.core.webhooks.debugger import (
    CURRENT,
    OTHER_ENDPOINT,
    PREVIOUS,
    Diagnosis,
    MalformedInput,
    SigningSecret,
    StoredDelivery,
    diagnose,
    event_id_in,
)
from fkod.core.webhooks.signing import SECRET_PREFIX, sign_delivery

SECRET = SECRET_PREFIX + base64.b64encode(bytes(range(32))).decode("ascii")
OLD_SECRET = SECRET_PREFIX + base64.b64encode(bytes(range(50, 82))).decode("ascii")
OTHER_SECRET = SECRET_PREFIX + base64.b64encode(bytes(range(100, 132))).decode("ascii")
NOW = 1_700_000_000
TOLERANCE = 300
EVENT_ID = "evt_2f1c9a7b"
EVENT = {
    "id": EVENT_ID,
    "type": "user.created",
    "created": NOW,
    "data": {"id": "user_7", "name": 'Café ☕ "quoted"', "score": 1.5, "active": True,
             "tags": ["a", "b"]},
    "request": {"id": None},
}
BODY = jsonutil.dumps(EVENT)
DELIVERY = StoredDelivery(EVENT_ID, BODY, ((1, NOW),))


def headers_for(secrets=(SECRET,), *, body: bytes = BODY, timestamp: int = NOW,
                message_id: str = EVENT_ID) -> dict[str, str]:
    return sign_delivery(list(secrets), message_id=message_id, timestamp=timestamp, body=body)


def check(*, payload: bytes = BODY, header: str | None = None, timestamp: str | None = None,
          message_id: str | None = None, secrets=None, delivery: StoredDelivery | None = None,
          now: int = NOW) -> Diagnosis:
    """Run diagnose with the current secret and the X-FKOD-Signature of BODY by default."""
    return diagnose(
        payload=payload,
        signature_header=headers_for()["X-FKOD-Signature"] if header is None else header,
        timestamp=timestamp, message_id=message_id,
        secrets=[SigningSecret(SECRET)] if secrets is None else secrets,
        delivery=delivery, now=now, tolerance_seconds=TOLERANCE)


def check_standard(headers: dict[str, str], **kwargs) -> Diagnosis:
    return check(header=headers["webhook-signature"], timestamp=headers["webhook-timestamp"],
                 message_id=headers["webhook-id"], **kwargs)


def fkod_header(key: bytes, *, body: bytes = BODY, timestamp: int = NOW) -> str:
    digest = hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def standard_signature(key: bytes, *, body: bytes = BODY, timestamp: int = NOW) -> str:
    signed = f"{EVENT_ID}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def decoded(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def previous(expires_at: int | None, rotated_at: int | None = NOW - 86_400) -> SigningSecret:
    return SigningSecret(OLD_SECRET, PREVIOUS, expires_at=expires_at, rotated_at=rotated_at)


# valid ---------------------------------------------------------------------------


def test_fkod_signature_valid() -> None:
    result = check()

    assert result.valid is True
    assert result.scheme == "fkod"
    assert result.reason == "valid"
    assert result.details["matched_secret"] == CURRENT
    assert result.details["age_seconds"] == 0


def test_standard_signature_valid() -> None:
    result = check_standard(headers_for())

    assert result.valid is True
    assert result.scheme == "standard"
    assert result.reason == "valid"
    assert result.details["webhook_id"] == EVENT_ID


@pytest.mark.parametrize("offset", [-TOLERANCE, TOLERANCE])
def test_tolerance_edge_valid(offset: int) -> None:
    result = check(now=NOW + offset)

    assert result.reason == "valid"


def test_fkod_timestamp_field_may_repeat_t() -> None:
    result = check(timestamp=str(NOW), message_id=EVENT_ID)

    assert result.reason == "valid"


def test_rotation_header_matches_current() -> None:
    headers = headers_for((OLD_SECRET, SECRET))
    secrets = [previous(NOW + 3600), SigningSecret(SECRET)]

    fkod = check(header=headers["X-FKOD-Signature"], secrets=secrets)
    standard = check_standard(headers, secrets=secrets)

    assert fkod.reason == "valid"
    assert fkod.details["matched_secret"] == CURRENT
    assert fkod.details["signatures_in_header"] == 2
    assert standard.details["matched_secret"] == CURRENT


def test_previous_secret_valid_during_overlap() -> None:
    headers = headers_for((OLD_SECRET,))

    result = check_standard(headers, secrets=[SigningSecret(SECRET), previous(NOW + 3600)])

    assert result.valid is True
    assert result.details["matched_secret"] == PREVIOUS
    assert result.details["previous_secret_expires_at"] == "2023-11-14T23:13:20Z"
    assert "previous secret" in result.message
    assert "2023-11-14T23:13:20Z" in result.message


def test_unknown_versions_ignored() -> None:
    header = headers_for()["X-FKOD-Signature"] + ",v0=legacy"

    result = check(header=header)

    assert result.reason == "valid"
    assert result.details["ignored_versions"] == ["v0"]


def test_uppercase_hex_valid() -> None:
    timestamp, signature = headers_for()["X-FKOD-Signature"].split(",")

    result = check(header=f"{timestamp},{signature.upper().replace('V1=', 'v1=')}")

    assert result.reason == "valid"


# timestamp_outside_tolerance -----------------------------------------------------


def test_old_timestamp_outside_tolerance() -> None:
    result = check(now=NOW + 301)

    assert result.valid is False
    assert result.reason == "timestamp_outside_tolerance"
    assert result.details["direction"] == "past"
    assert result.details["age_seconds"] == 301
    assert result.details["beyond_tolerance_seconds"] == 1
    assert "301 seconds in the past" in result.message
    assert "1 second beyond" in result.message
    assert "replay" in result.message


def test_future_timestamp_outside_tolerance() -> None:
    result = check_standard(headers_for(timestamp=NOW + 3600))

    assert result.reason == "timestamp_outside_tolerance"
    assert result.details["direction"] == "future"
    assert result.details["age_seconds"] == -3600
    assert result.details["beyond_tolerance_seconds"] == 3300
    assert "3600 seconds in the future" in result.message
    assert "behind" in result.message


def test_millisecond_timestamp_outside_tolerance() -> None:
    header = headers_for(timestamp=NOW * 1000)["X-FKOD-Signature"]

    result = check(header=header)

    assert result.reason == "timestamp_outside_tolerance"
    assert result.details["looks_like_milliseconds"] is True
    assert result.details["timestamp_as_seconds"] == NOW
    assert "milliseconds" in result.message


def test_seconds_signature_given_millisecond_timestamp() -> None:
    headers = headers_for()
    headers["webhook-timestamp"] = f"{NOW}000"

    result = check_standard(headers)

    assert result.reason == "timestamp_outside_tolerance"
    assert result.details["looks_like_milliseconds"] is True
    assert f"({NOW})" in result.message


def test_old_attempt_named() -> None:
    delivery = StoredDelivery(EVENT_ID, BODY, ((1, NOW - 7200), (2, NOW)))

    result = check(now=NOW + 1000, delivery=delivery)

    assert result.reason == "timestamp_outside_tolerance"
    assert result.details["attempt"] == 2
    assert f"attempt 2 of event {EVENT_ID}" in result.message


# retired_secret ------------------------------------------------------------------


def test_retired_previous_secret() -> None:
    header = headers_for((OLD_SECRET,))["X-FKOD-Signature"]

    result = check(header=header, secrets=[SigningSecret(SECRET), previous(NOW - 60)])

    assert result.valid is False
    assert result.reason == "retired_secret"
    assert result.details["retired_at"] == "2023-11-14T22:12:20Z"
    assert result.details["rotated_at"] == "2023-11-13T22:13:20Z"
    assert "2023-11-14T22:12:20Z" in result.message
    assert "current secret" in result.message


def test_previous_without_expiry_retired() -> None:
    header = headers_for((OLD_SECRET,))["X-FKOD-Signature"]

    result = check(header=header, secrets=[SigningSecret(SECRET), previous(None)])

    assert result.reason == "retired_secret"
    assert result.details["retired_at"] == "2023-11-13T22:13:20Z"


def test_retired_wins_over_tolerance() -> None:
    header = headers_for((OLD_SECRET,), timestamp=NOW - 4000)["X-FKOD-Signature"]

    result = check(header=header, secrets=[SigningSecret(SECRET), previous(NOW - 60)])

    assert result.reason == "retired_secret"
    assert result.details["timestamp_within_tolerance"] is False
    assert "beyond the tolerance" in result.message


# body_reserialized and body_modified ---------------------------------------------


@pytest.mark.parametrize("encode, differences", [
    (lambda value: json.dumps(value, ensure_ascii=False), ["whitespace"]),
    (lambda value: json.dumps(value, indent=2, ensure_ascii=False), ["whitespace"]),
    (lambda value: json.dumps(value, separators=(",", ":")), ["escapes"]),
    (lambda value: json.dumps(value, separators=(",", ":"), ensure_ascii=False,
                              sort_keys=True), ["key_order"]),
    (lambda value: json.dumps(value, sort_keys=True), ["whitespace", "key_order", "escapes"]),
], ids=["spaces", "pretty", "ascii", "sorted", "all"])
def test_reencoded_json_is_reserialized(encode, differences) -> None:
    payload = encode(EVENT).encode()

    result = check(payload=payload, delivery=DELIVERY)

    assert result.valid is False
    assert result.reason == "body_reserialized"
    assert result.details["matched_body"] == "delivery"
    assert result.details["differences"] == differences
    offset = result.details["first_difference"]["offset"]
    assert payload[:offset] == BODY[:offset]
    assert payload[offset] != BODY[offset]
    assert f"offset {offset}" in result.message
    assert EVENT_ID in result.message


def test_reserialized_found_without_delivery() -> None:
    payload = json.dumps(EVENT, indent=2).encode()

    result = check(payload=payload)

    assert result.reason == "body_reserialized"
    assert result.details["matched_body"] == "compact_json"
    assert "event_id" not in result.details


def test_rewritten_number_is_reserialized() -> None:
    event = dict(EVENT, data={"score": 2.0})
    body = jsonutil.dumps(event)
    header = headers_for(body=body)["X-FKOD-Signature"]

    result = check(payload=body.replace(b"2.0", b"2"), header=header,
                   delivery=StoredDelivery(EVENT_ID, body))

    assert result.reason == "body_reserialized"
    assert result.details["differences"] == ["numbers"]


@pytest.mark.parametrize("suffix", [b"\n", b"\r\n"])
def test_trailing_newline_is_reserialized(suffix: bytes) -> None:
    result = check(payload=BODY + suffix)

    assert result.reason == "body_reserialized"
    assert result.details["differences"] == ["trailing_newline"]
    assert result.details["first_difference"]["offset"] == len(BODY)
    assert "newline" in result.message


def test_changed_value_is_body_modified() -> None:
    event = json.loads(BODY)
    event["data"]["name"] = "Mallory"
    event["data"]["tags"][1] = "c"

    result = check(payload=jsonutil.dumps(event), delivery=DELIVERY)

    assert result.reason == "body_modified"
    assert result.details["changed_fields"] == ["data.name", "data.tags[1]"]
    assert "data.name, data.tags[1]" in result.message
    assert result.details["first_difference"]["offset"] == BODY.index(b"Caf")


def test_added_field_is_body_modified() -> None:
    event = dict(EVENT, extra=1)

    result = check_standard(headers_for(), payload=jsonutil.dumps(event), delivery=DELIVERY)

    assert result.reason == "body_modified"
    assert result.details["changed_fields"] == ["extra"]


def test_true_and_one_differ() -> None:
    payload = BODY.replace(b'"active":true', b'"active":1')

    result = check(payload=payload, delivery=DELIVERY)

    assert result.reason == "body_modified"
    assert result.details["changed_fields"] == ["data.active"]


def test_non_json_payload_is_body_modified() -> None:
    result = check(payload=b"id=evt_2f1c9a7b", delivery=DELIVERY)

    assert result.reason == "body_modified"
    assert result.details["differences"] == ["content"]
    assert "changed_fields" not in result.details


@pytest.mark.parametrize("charset", ["latin-1", "cp1252"])
def test_wrong_charset_is_body_modified(charset: str) -> None:
    payload = BODY.decode(charset).encode("utf-8")

    result = check(payload=payload)

    assert result.reason == "body_modified"
    assert result.details["differences"] == ["charset"]
    assert result.details["changed_fields"] == ["data.name"]
    assert "charset" in result.message


def test_wrong_charset_found_with_delivery() -> None:
    payload = BODY.decode("latin-1").encode("utf-8")

    result = check(payload=payload, delivery=DELIVERY)

    assert result.reason == "body_modified"
    assert result.details["matched_body"] == "delivery"
    assert result.details["differences"] == ["charset"]


def test_byte_order_mark_is_body_modified() -> None:
    result = check(payload=b"\xef\xbb\xbf" + BODY)

    assert result.reason == "body_modified"
    assert result.details["differences"] == ["byte_order_mark"]
    assert result.details["first_difference"]["offset"] == 0


def test_retired_secret_noted_with_body_change() -> None:
    header = headers_for((OLD_SECRET,))["X-FKOD-Signature"]

    result = check(payload=BODY + b"\n", header=header,
                   secrets=[SigningSecret(SECRET), previous(NOW - 60)])

    assert result.reason == "body_reserialized"
    assert result.details["matched_secret"] == PREVIOUS
    assert "previous secret, retired at 2023-11-14T22:12:20Z" in result.message


# wrong_key_form ------------------------------------------------------------------


@pytest.mark.parametrize("form, key", [
    ("decoded", decoded(SECRET)),
    ("without_prefix", SECRET.removeprefix(SECRET_PREFIX).encode()),
])
def test_fkod_wrong_key_form(form: str, key: bytes) -> None:
    result = check(header=fkod_header(key))

    assert result.valid is False
    assert result.reason == "wrong_key_form"
    assert result.details["key_form"] == form
    assert result.details["expected_key_form"] == "whole_string"
    assert "whsec_ prefix included" in result.message


@pytest.mark.parametrize("form, key", [
    ("whole_string", SECRET.encode()),
    ("without_prefix", SECRET.removeprefix(SECRET_PREFIX).encode()),
])
def test_standard_wrong_key_form(form: str, key: bytes) -> None:
    result = check(header=standard_signature(key), timestamp=str(NOW), message_id=EVENT_ID)

    assert result.reason == "wrong_key_form"
    assert result.details["key_form"] == form
    assert result.details["expected_key_form"] == "decoded"
    assert "base64-decoding" in result.message


def test_wrong_key_form_over_reencoded_body() -> None:
    payload = json.dumps(EVENT, indent=2).encode()

    result = check(payload=payload, header=fkod_header(decoded(SECRET)))

    assert result.reason == "wrong_key_form"
    assert result.details["matched_body"] == "compact_json"


def test_previous_secret_wrong_key_form() -> None:
    result = check(header=fkod_header(decoded(OLD_SECRET)),
                   secrets=[SigningSecret(SECRET), previous(NOW + 60)])

    assert result.reason == "wrong_key_form"
    assert result.details["matched_secret"] == PREVIOUS


# signature_mismatch --------------------------------------------------------------


def test_unknown_secret_mismatch() -> None:
    header = headers_for((OTHER_SECRET,))["X-FKOD-Signature"]

    result = check(header=header, secrets=[SigningSecret(SECRET), previous(NOW + 60)])

    assert result.valid is False
    assert result.reason == "signature_mismatch"
    assert result.details["cause"] == "unknown"
    assert result.details["checked"] == {
        "secrets": [CURRENT, PREVIOUS],
        "key_forms": ["whole_string", "decoded", "without_prefix"],
        "bodies": ["payload"],
        "timestamps": [NOW],
        "other_endpoints": 0,
    }
    assert "No delivery of this endpoint" in result.message


def test_mismatch_with_delivered_body_blames_secret() -> None:
    header = headers_for((OTHER_SECRET,))["X-FKOD-Signature"]

    result = check(header=header, delivery=DELIVERY)

    assert result.reason == "signature_mismatch"
    assert "exactly the body F-KOD delivered" in result.message


def test_mismatch_lists_standard_checks() -> None:
    headers = headers_for((OTHER_SECRET,))
    payload = json.dumps(EVENT).encode()

    result = check_standard(headers, payload=payload, delivery=DELIVERY)

    assert result.details["checked"]["bodies"] == ["payload", "delivery"]
    assert result.details["checked"]["webhook_ids"] == [EVENT_ID]


def test_other_endpoint_secret_named() -> None:
    header = headers_for((OTHER_SECRET,))["X-FKOD-Signature"]
    secrets = [SigningSecret(SECRET),
               SigningSecret(OTHER_SECRET, OTHER_ENDPOINT, endpoint="whk_12, test mode")]

    result = check(header=header, secrets=secrets)

    assert result.reason == "signature_mismatch"
    assert result.details["cause"] == "other_endpoint"
    assert result.details["other_endpoint"] == "whk_12, test mode"
    assert "whk_12, test mode" in result.message


def test_other_endpoint_secret_never_valid() -> None:
    secrets = [SigningSecret(OTHER_SECRET),
               SigningSecret(SECRET, OTHER_ENDPOINT, endpoint="whk_12, test mode")]

    result = check(secrets=secrets)

    assert result.valid is False
    assert result.reason == "signature_mismatch"


def test_timestamp_of_other_attempt_named() -> None:
    headers = headers_for()
    headers["webhook-timestamp"] = str(NOW + 60)
    delivery = StoredDelivery(EVENT_ID, BODY, ((1, NOW), (2, NOW + 60)))

    result = check_standard(headers, delivery=delivery, now=NOW + 60)

    assert result.reason == "signature_mismatch"
    assert result.details["cause"] == "timestamp_changed"
    assert result.details["signed_timestamp"] == NOW
    assert result.details["attempt"] == 1


def test_changed_webhook_id_named() -> None:
    headers = headers_for()
    headers["webhook-id"] = "evt_other"

    result = check_standard(headers)

    assert result.reason == "signature_mismatch"
    assert result.details["cause"] == "webhook_id_changed"
    assert result.details["signed_webhook_id"] == EVENT_ID


def test_body_from_elsewhere_mismatch() -> None:
    result = check(payload=b'{"id":"evt_elsewhere"}')

    assert result.reason == "signature_mismatch"
    assert result.details["cause"] == "unknown"


def test_mismatch_notes_millisecond_timestamp() -> None:
    header = headers_for((OTHER_SECRET,), timestamp=NOW * 1000)["X-FKOD-Signature"]

    result = check(header=header)

    assert result.reason == "signature_mismatch"
    assert "milliseconds" in result.message


# No result shows a secret or a signature -------------------------------------------


def all_diagnoses() -> list[Diagnosis]:
    secrets = [SigningSecret(SECRET), previous(NOW - 60),
               SigningSecret(OTHER_SECRET, OTHER_ENDPOINT, endpoint="whk_12, test mode")]
    changed = BODY.replace(b"user_7", b"user_8")
    return [
        check(secrets=secrets),
        check(secrets=secrets, now=NOW + 1000),
        check(header=headers_for((OLD_SECRET,))["X-FKOD-Signature"], secrets=secrets),
        check(payload=changed, delivery=DELIVERY, secrets=secrets),
        check(payload=json.dumps(EVENT).encode(), secrets=secrets),
        check(header=fkod_header(decoded(SECRET)), secrets=secrets),
        check(header=headers_for((OTHER_SECRET,))["X-FKOD-Signature"], secrets=secrets),
        check(payload=changed, header=headers_for(body=changed)["X-FKOD-Signature"],
              secrets=[SigningSecret(OLD_SECRET)]),
        check_standard(headers_for(), payload=changed, secrets=secrets),
    ]


def test_diagnoses_never_show_secrets() -> None:
    diagnoses = all_diagnoses()
    changed = BODY.replace(b"user_7", b"user_8")
    computed = [
        headers_for((secret,), body=body)[name].split("v1", 1)[1][1:]
        for secret in (SECRET, OLD_SECRET, OTHER_SECRET)
        for body in (BODY, changed)
        for name in ("X-FKOD-Signature", "webhook-signature")
    ]

    assert len({item.reason for item in diagnoses}) == 7
    for item in diagnoses:
        text = item.message + json.dumps(item.details)
        for secret in (SECRET, OLD_SECRET, OTHER_SECRET):
            assert secret.removeprefix(SECRET_PREFIX)[:16] not in text
        for signature in computed:
            assert signature[:16] not in text


# Malformed input -----------------------------------------------------------------


HEX = "0" * 64
BASE64 = base64.b64encode(bytes(32)).decode()


@pytest.mark.parametrize("header, code", [
    (f"t=abc,v1={HEX}", "malformed_timestamp"),
    (f"t=,v1={HEX}", "malformed_timestamp"),
    (f"t=-5,v1={HEX}", "malformed_timestamp"),
    (f"t=1.5,v1={HEX}", "malformed_timestamp"),
    (f"t={'1' * 16},v1={HEX}", "malformed_timestamp"),
    (f"t={NOW},v1={'0' * 63}", "malformed_signature"),
    (f"t={NOW},v1={'0' * 65}", "malformed_signature"),
    (f"t={NOW},v1={'g' * 64}", "malformed_signature"),
    (f"t={NOW},v1={'é' * 64}", "malformed_signature"),
    (f"t=１７００,v1={HEX}", "malformed_signature"),
    (f"t={NOW},v1=", "malformed_signature"),
    ("", "malformed_signature"),
    ("   ", "malformed_signature"),
    ("x" * 10_240, "malformed_signature"),
    (f"t={NOW},v1=" + "0" * 10_000, "malformed_signature"),
    ("sha256=abc", "malformed_signature"),
    ("not a signature", "malformed_signature"),
    (f"X-FKOD-Signature: t={NOW},v1={HEX}", "malformed_signature"),
    (f"webhook-signature: v1,{BASE64}", "malformed_signature"),
    (f"v1={HEX}", "malformed_signature"),
    (f"t={NOW}", "malformed_signature"),
    (f"t={NOW},v0=legacy", "malformed_signature"),
    (f"t={NOW},t={NOW},v1={HEX}", "malformed_signature"),
    (f"t={NOW},v1={HEX},garbage", "malformed_signature"),
    (f"t={NOW},v1={HEX},", "malformed_signature"),
])
def test_malformed_fkod_header(header: str, code: str) -> None:
    with pytest.raises(MalformedInput) as caught:
        check(header=header)

    assert caught.value.code == code
    assert caught.value.field == "signature"
    assert caught.value.description
    assert caught.value.message.startswith("The signature is invalid: ")


def test_non_ascii_position_named() -> None:
    with pytest.raises(MalformedInput) as caught:
        check(header=f"t={NOW},v1={'é' * 64}")

    assert "position 16" in caught.value.description


def test_hex_length_named() -> None:
    with pytest.raises(MalformedInput) as caught:
        check(header=f"t={NOW},v1={'0' * 63}")

    assert "63 hexadecimal digits, not 64" in caught.value.description


def test_header_name_named() -> None:
    with pytest.raises(MalformedInput) as caught:
        check(header=f"X-FKOD-Signature: t={NOW},v1={HEX}")

    assert "header name" in caught.value.description


def test_fkod_timestamp_disagreeing_rejected() -> None:
    with pytest.raises(MalformedInput) as caught:
        check(timestamp=str(NOW + 1))

    assert caught.value.code == "malformed_timestamp"
    assert caught.value.field == "timestamp"
    assert str(NOW) in caught.value.description


@pytest.mark.parametrize("signature, timestamp, message_id, code, field", [
    (f"v1,{BASE64}", None, EVENT_ID, "malformed_timestamp", "timestamp"),
    (f"v1,{BASE64}", "", EVENT_ID, "malformed_timestamp", "timestamp"),
    (f"v1,{BASE64}", "abc", EVENT_ID, "malformed_timestamp", "timestamp"),
    (f"v1,{BASE64}", f"{NOW}.5", EVENT_ID, "malformed_timestamp", "timestamp"),
    (f"v1,{BASE64}", f"{NOW}, {NOW}", EVENT_ID, "malformed_timestamp", "timestamp"),
    (f"v1,{BASE64}", str(NOW), None, "malformed_webhook_id", "webhook_id"),
    (f"v1,{BASE64}", str(NOW), "", "malformed_webhook_id", "webhook_id"),
    (f"v1,{BASE64}", str(NOW), "evt 1", "malformed_webhook_id", "webhook_id"),
    (f"v1,{BASE64}", str(NOW), "evt_1,evt_2", "malformed_webhook_id", "webhook_id"),
    (f"v1,{BASE64}", str(NOW), "évt_1", "malformed_webhook_id", "webhook_id"),
    (f"v1,{BASE64}", str(NOW), "evt_" + "a" * 300, "malformed_webhook_id", "webhook_id"),
    ("v1,not*base64", str(NOW), EVENT_ID, "malformed_signature", "signature"),
    ("v1,", str(NOW), EVENT_ID, "malformed_signature", "signature"),
    ("v1,c2hvcnQ=", str(NOW), EVENT_ID, "malformed_signature", "signature"),
    (f"v1,{BASE64} v1", str(NOW), EVENT_ID, "malformed_signature", "signature"),
    ("v1a,c29tZXRoaW5n", str(NOW), EVENT_ID, "malformed_signature", "signature"),
    ("v1," + "A" * 10_240, str(NOW), EVENT_ID, "malformed_signature", "signature"),
])
def test_malformed_standard_input(signature: str, timestamp: str | None,
                                  message_id: str | None, code: str, field: str) -> None:
    with pytest.raises(MalformedInput) as caught:
        check(header=signature, timestamp=timestamp, message_id=message_id)

    assert caught.value.code == code
    assert caught.value.field == field


def test_standard_header_whitespace_tolerated() -> None:
    headers = headers_for()
    headers["webhook-signature"] = f"  v1a,ignored  {headers['webhook-signature']} "
    headers["webhook-timestamp"] = f" {NOW} "

    result = check_standard(headers)

    assert result.reason == "valid"
    assert result.details["ignored_versions"] == ["v1a"]


# Payloads of every kind ------------------------------------------------------------


@pytest.mark.parametrize("payload", [
    b"",
    b"\xff\xfe not utf-8",
    b"[" * 100_000 + b"]" * 100_000,
    b'{"id": 5}',
    b"null",
], ids=["empty", "invalid_utf8", "deeply_nested", "numeric_id", "null"])
def test_unusual_payload_diagnosed(payload: bytes) -> None:
    result = check(payload=payload)

    assert result.reason == "signature_mismatch"


def test_megabyte_payload_checked() -> None:
    payload = json.dumps({"id": EVENT_ID, "blob": "é" * 170_000}).encode()
    headers = headers_for(body=jsonutil.dumps(json.loads(payload)))

    result = check_standard(headers, payload=payload)

    assert len(payload) > 1_000_000
    assert result.reason == "body_reserialized"
    assert result.details["differences"] == ["whitespace", "escapes"]


@pytest.mark.parametrize("payload, expected", [
    (BODY, EVENT_ID),
    (b'{"id":"user_1"}', None),
    (b'{"id":5}', None),
    (b"[1]", None),
    (b"not json", None),
    (b'{"id":"evt_' + b"a" * 100 + b'"}', None),
])
def test_event_id_in_payload(payload: bytes, expected: str | None) -> None:
    assert event_id_in(payload) == expected
