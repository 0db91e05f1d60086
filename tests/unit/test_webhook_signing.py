"""Tests for webhook signing and verification, including interoperability with standardwebhooks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from fkod.core.webhooks.signing import (
    SECRET_PREFIX,
    SignatureError,
    generate_secret,
    sign_delivery,
    verify_fkod_signature,
    verify_standard_signature,
)

SECRET = SECRET_PREFIX + base64.b64encode(bytes(range(32))).decode("ascii")
OTHER_SECRET = SECRET_PREFIX + base64.b64encode(bytes(range(100, 132))).decode("ascii")
NOW = 1_700_000_000
MESSAGE_ID = "evt_2f1c9a7b"
BODY = b'{"type":"partner.created","data":{"id":42}}'


def signed_headers(
    secrets=(SECRET,), *, body: bytes = BODY, timestamp: int = NOW
) -> dict[str, str]:
    return sign_delivery(
        list(secrets), message_id=MESSAGE_ID, timestamp=timestamp, body=body
    )


def standard_headers(headers: dict[str, str]) -> dict[str, str]:
    return {
        name: value for name, value in headers.items() if name.startswith("webhook-")
    }


def test_generated_secret_format() -> None:
    secret = generate_secret()

    assert secret.startswith(SECRET_PREFIX)
    assert len(base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)) == 32
    assert generate_secret() != secret


def test_sign_returns_four_headers() -> None:
    headers = signed_headers()

    assert set(headers) == {
        "X-FKOD-Signature",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    }
    assert headers["webhook-id"] == MESSAGE_ID
    assert headers["webhook-timestamp"] == str(NOW)
    assert headers["X-FKOD-Signature"].startswith(f"t={NOW},v1=")
    assert headers["webhook-signature"].startswith("v1,")


def test_fkod_signature_matches_definition() -> None:
    expected = hmac.new(
        SECRET.encode("utf-8"), f"{NOW}.".encode() + BODY, hashlib.sha256
    ).hexdigest()

    headers = signed_headers()

    assert headers["X-FKOD-Signature"] == f"t={NOW},v1={expected}"


def test_fkod_round_trip() -> None:
    headers = signed_headers()

    assert (
        verify_fkod_signature(SECRET, headers["X-FKOD-Signature"], BODY, now=NOW) == NOW
    )


def test_standard_round_trip() -> None:
    headers = signed_headers()

    assert verify_standard_signature(SECRET, headers, BODY, now=NOW) == NOW


def test_standard_header_names_case_insensitive() -> None:
    headers = {name.upper(): value for name, value in signed_headers().items()}

    assert verify_standard_signature(SECRET, headers, BODY, now=NOW) == NOW


def test_standardwebhooks_library_accepts_headers() -> None:
    # The library checks the timestamp against the real clock, so sign with the current time.
    headers = standard_headers(signed_headers(timestamp=int(time.time())))

    payload = Webhook(SECRET).verify(BODY, headers)

    assert payload == json.loads(BODY)


@pytest.mark.parametrize("changed", ["body", "webhook-id", "webhook-timestamp"])
def test_standardwebhooks_library_rejects_changes(changed: str) -> None:
    current = int(time.time())
    headers = standard_headers(signed_headers(timestamp=current))
    body = BODY
    if changed == "body":
        body = BODY.replace(b"42", b"43")
    elif changed == "webhook-id":
        headers["webhook-id"] = "evt_other"
    else:
        headers["webhook-timestamp"] = str(current - 1)

    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body, headers)


def test_standard_signature_covers_id_and_timestamp() -> None:
    key = base64.b64decode(SECRET[len(SECRET_PREFIX) :])
    body_only = base64.b64encode(hmac.new(key, BODY, hashlib.sha256).digest()).decode(
        "ascii"
    )
    full = f"{MESSAGE_ID}.{NOW}.".encode() + BODY
    expected = base64.b64encode(hmac.new(key, full, hashlib.sha256).digest()).decode(
        "ascii"
    )

    signature = signed_headers()["webhook-signature"]

    assert signature == f"v1,{expected}"
    assert signature != f"v1,{body_only}"


def test_fkod_signature_covers_timestamp() -> None:
    body_only = hmac.new(SECRET.encode("utf-8"), BODY, hashlib.sha256).hexdigest()

    header = signed_headers()["X-FKOD-Signature"]

    assert body_only not in header


def test_non_ascii_body_verified_over_exact_bytes() -> None:
    document = {
        "text": 'Café ☕ 😀 "quoted" \\ back',
        "nested": {"amounts": [0.1, 0.2, 1e-7], "flags": {"ok": True, "none": None}},
    }
    body = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode(
        "utf-8"
    )
    headers = signed_headers(body=body, timestamp=int(time.time()))
    reserialized = json.dumps(json.loads(body)).encode("utf-8")

    assert verify_fkod_signature(SECRET, headers["X-FKOD-Signature"], body) > 0
    assert verify_standard_signature(SECRET, headers, body) > 0
    assert Webhook(SECRET).verify(body, standard_headers(headers)) == document
    assert reserialized != body
    with pytest.raises(SignatureError):
        verify_fkod_signature(SECRET, headers["X-FKOD-Signature"], reserialized)
    with pytest.raises(SignatureError):
        verify_standard_signature(SECRET, headers, reserialized)


def test_rotation_header_formats() -> None:
    headers = signed_headers((SECRET, OTHER_SECRET))

    assert headers["X-FKOD-Signature"].count(",v1=") == 2
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert all(
        part.startswith("v1,") for part in headers["webhook-signature"].split(" ")
    )


@pytest.mark.parametrize("secret", [SECRET, OTHER_SECRET])
def test_rotation_verifies_with_either_secret(secret: str) -> None:
    headers = signed_headers((SECRET, OTHER_SECRET), timestamp=int(time.time()))

    assert verify_fkod_signature(secret, headers["X-FKOD-Signature"], BODY) > 0
    assert verify_standard_signature(secret, headers, BODY) > 0
    assert Webhook(secret).verify(BODY, standard_headers(headers)) == json.loads(BODY)


def test_unknown_secret_mismatch() -> None:
    headers = signed_headers()
    third = generate_secret()

    with pytest.raises(SignatureError) as fkod_error:
        verify_fkod_signature(third, headers["X-FKOD-Signature"], BODY, now=NOW)
    with pytest.raises(SignatureError) as standard_error:
        verify_standard_signature(third, headers, BODY, now=NOW)

    assert fkod_error.value.reason == "signature_mismatch"
    assert standard_error.value.reason == "signature_mismatch"


@pytest.mark.parametrize("offset", [301, -301, 10_000])
def test_timestamp_outside_tolerance(offset: int) -> None:
    headers = signed_headers(timestamp=NOW + offset)

    with pytest.raises(SignatureError) as fkod_error:
        verify_fkod_signature(SECRET, headers["X-FKOD-Signature"], BODY, now=NOW)
    with pytest.raises(SignatureError) as standard_error:
        verify_standard_signature(SECRET, headers, BODY, now=NOW)

    assert fkod_error.value.reason == "timestamp_outside_tolerance"
    assert standard_error.value.reason == "timestamp_outside_tolerance"


@pytest.mark.parametrize("offset", [300, -300, 0])
def test_timestamp_at_tolerance_accepted(offset: int) -> None:
    headers = signed_headers(timestamp=NOW + offset)

    assert (
        verify_fkod_signature(SECRET, headers["X-FKOD-Signature"], BODY, now=NOW)
        == NOW + offset
    )
    assert verify_standard_signature(SECRET, headers, BODY, now=NOW) == NOW + offset


def test_millisecond_timestamp_rejected() -> None:
    headers = signed_headers(timestamp=NOW * 1000)

    with pytest.raises(SignatureError) as fkod_error:
        verify_fkod_signature(SECRET, headers["X-FKOD-Signature"], BODY, now=NOW)
    with pytest.raises(SignatureError) as standard_error:
        verify_standard_signature(SECRET, headers, BODY, now=NOW)

    assert fkod_error.value.reason in {
        "malformed_timestamp",
        "timestamp_outside_tolerance",
    }
    assert standard_error.value.reason in {
        "malformed_timestamp",
        "timestamp_outside_tolerance",
    }


def valid_v1() -> str:
    return signed_headers()["X-FKOD-Signature"].split(",v1=")[1]


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "missing_signature"),
        ("", "missing_signature"),
        (f"t=abc,v1={'0' * 64}", "malformed_timestamp"),
        (f"t=,v1={'0' * 64}", "malformed_timestamp"),
        (f"t=-5,v1={'0' * 64}", "malformed_timestamp"),
        (f"t=1.5,v1={'0' * 64}", "malformed_timestamp"),
        (f"t=１７００,v1={'0' * 64}", "malformed_header"),
        (f"t={NOW},v1={'é' * 64}", "malformed_header"),
        (f"t={NOW},v1={'0' * 63}", "malformed_header"),
        (f"t={NOW},v1={'0' * 65}", "malformed_header"),
        (f"t={NOW},v1={'g' * 64}", "malformed_header"),
        (f"t={NOW},v1=", "malformed_header"),
        (f"t={NOW}", "signature_mismatch"),
        (f"v1={'0' * 64}", "malformed_header"),
        (f"t={NOW},v1={'0' * 64},garbage", "malformed_header"),
        ("t=1700000000,v1=" + "0" * 10_000, "malformed_header"),
        ("x" * 10_240, "malformed_header"),
        (f"t={NOW},v1={'0' * 64}", "signature_mismatch"),
    ],
)
def test_fkod_malformed_header_rejected(header: str | None, reason: str) -> None:
    with pytest.raises(SignatureError) as caught:
        verify_fkod_signature(SECRET, header, BODY, now=NOW)

    assert caught.value.reason == reason


def test_fkod_repeated_header_rejected() -> None:
    header = signed_headers()["X-FKOD-Signature"]

    with pytest.raises(SignatureError) as caught:
        verify_fkod_signature(SECRET, f"{header},{header}", BODY, now=NOW)

    assert caught.value.reason == "malformed_header"


def test_fkod_one_matching_signature_passes() -> None:
    header = f"t={NOW},v1={'0' * 64},v1={valid_v1()},v1={'f' * 64}"

    assert verify_fkod_signature(SECRET, header, BODY, now=NOW) == NOW


def test_fkod_unknown_versions_skipped() -> None:
    header = f"t={NOW}, v0=legacy, v1={valid_v1().upper()}"

    assert verify_fkod_signature(SECRET, header, BODY, now=NOW) == NOW


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"webhook-signature": None}, "missing_signature"),
        ({"webhook-id": None}, "missing_signature"),
        ({"webhook-timestamp": None}, "missing_signature"),
        ({"webhook-signature": ""}, "missing_signature"),
        ({"webhook-timestamp": "abc"}, "malformed_timestamp"),
        ({"webhook-timestamp": f"{NOW}, {NOW}"}, "malformed_timestamp"),
        ({"webhook-timestamp": f"{NOW}.5"}, "malformed_timestamp"),
        ({"webhook-id": "évt_1"}, "malformed_header"),
        ({"webhook-id": f"{MESSAGE_ID}, {MESSAGE_ID}"}, "malformed_header"),
        ({"webhook-signature": "v1,café"}, "malformed_header"),
        ({"webhook-signature": "v1,"}, "malformed_header"),
        ({"webhook-signature": "v1,not base64!"}, "malformed_header"),
        (
            {"webhook-signature": "v1," + base64.b64encode(b"short").decode()},
            "malformed_header",
        ),
        ({"webhook-signature": "v1"}, "malformed_header"),
        ({"webhook-signature": "v1," + "A" * 10_240}, "malformed_header"),
        ({"webhook-signature": "v1a,c29tZXRoaW5n"}, "signature_mismatch"),
        (
            {"webhook-signature": "v1," + base64.b64encode(bytes(32)).decode()},
            "signature_mismatch",
        ),
    ],
)
def test_standard_malformed_headers_rejected(
    changes: dict[str, str | None], reason: str
) -> None:
    headers = signed_headers()
    for name, value in changes.items():
        if value is None:
            del headers[name]
        else:
            headers[name] = value

    with pytest.raises(SignatureError) as caught:
        verify_standard_signature(SECRET, headers, BODY, now=NOW)

    assert caught.value.reason == reason


def test_standard_repeated_signature_header_rejected() -> None:
    headers = signed_headers()
    signature = headers["webhook-signature"]
    headers["webhook-signature"] = f"{signature}, {signature}"

    with pytest.raises(SignatureError) as caught:
        verify_standard_signature(SECRET, headers, BODY, now=NOW)

    assert caught.value.reason == "malformed_header"


def test_standard_duplicate_header_names_rejected() -> None:
    headers = signed_headers()
    headers["Webhook-Id"] = "evt_other"

    with pytest.raises(SignatureError) as caught:
        verify_standard_signature(SECRET, headers, BODY, now=NOW)

    assert caught.value.reason == "malformed_header"


def test_standard_one_matching_signature_passes() -> None:
    headers = signed_headers()
    wrong = "v1," + base64.b64encode(bytes(32)).decode()
    headers["webhook-signature"] = f"{wrong} {headers['webhook-signature']} v1a,ignored"

    assert verify_standard_signature(SECRET, headers, BODY, now=NOW) == NOW


@pytest.mark.parametrize(
    "secret",
    [
        "",
        "secret",
        "whsec_",
        "whsec_not*base64",
        "WHSEC_" + SECRET[len(SECRET_PREFIX) :],
        b"whsec_AAAA",
    ],
)
def test_invalid_secret_raises_value_error(secret: str) -> None:
    headers = signed_headers()

    with pytest.raises(ValueError, match="secret") as signing_error:
        sign_delivery([secret], message_id=MESSAGE_ID, timestamp=NOW, body=BODY)
    with pytest.raises(ValueError, match="secret") as fkod_error:
        verify_fkod_signature(secret, headers["X-FKOD-Signature"], BODY, now=NOW)
    with pytest.raises(ValueError, match="secret") as standard_error:
        verify_standard_signature(secret, headers, BODY, now=NOW)

    assert not isinstance(signing_error.value, SignatureError)
    assert not isinstance(fkod_error.value, SignatureError)
    assert not isinstance(standard_error.value, SignatureError)


def test_unpadded_secret_accepted() -> None:
    unpadded = SECRET.rstrip("=")

    headers = signed_headers((unpadded,))

    # The F-KOD scheme keys the HMAC with the secret string as written, padding included,
    # while Standard Webhooks uses the decoded bytes, which padding does not change.
    assert unpadded != SECRET
    assert (
        headers["webhook-signature"] == signed_headers((SECRET,))["webhook-signature"]
    )
    assert (
        verify_fkod_signature(unpadded, headers["X-FKOD-Signature"], BODY, now=NOW)
        == NOW
    )


@pytest.mark.parametrize(
    ("secrets", "message_id", "timestamp"),
    [
        ([], MESSAGE_ID, NOW),
        (SECRET, MESSAGE_ID, NOW),
        ([SECRET], "", NOW),
        ([SECRET], "evt 1", NOW),
        ([SECRET], "evt,1", NOW),
        ([SECRET], "evt\n1", NOW),
        ([SECRET], MESSAGE_ID, -1),
        ([SECRET], MESSAGE_ID, True),
        ([SECRET], MESSAGE_ID, 1.5),
    ],
)
def test_sign_rejects_invalid_arguments(
    secrets: object, message_id: str, timestamp: object
) -> None:
    with pytest.raises(ValueError):
        sign_delivery(secrets, message_id=message_id, timestamp=timestamp, body=BODY)  # type: ignore[arg-type]


def test_sign_rejects_str_body() -> None:
    with pytest.raises(TypeError):
        sign_delivery([SECRET], message_id=MESSAGE_ID, timestamp=NOW, body="{}")  # type: ignore[arg-type]
