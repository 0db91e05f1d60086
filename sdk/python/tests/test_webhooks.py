"""Verification of a delivery signed by the platform's own signing code."""

from __future__ import annotations

import base64
import os

import pytest

from fkod_sdk import WebhookEvent, WebhookVerificationError, verify_webhook

STANDARD = ("webhook-id", "webhook-timestamp", "webhook-signature")


def other_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def reason_of(body: bytes, headers: dict, secret, **options) -> str:
    with pytest.raises(WebhookVerificationError) as caught:
        verify_webhook(body, headers, secret, **options)
    return caught.value.reason


def test_platform_signed_delivery_verifies(env, signed_webhook):
    event = verify_webhook(signed_webhook["body"].encode(), signed_webhook["headers"],
                           env["FKOD_WEBHOOK_SECRET"])

    assert isinstance(event, WebhookEvent)
    assert event.id == "evt_sdk_sample"
    assert event.type == "user.created"
    assert event.data == {"id": "user_1"}


def test_fkod_signature_header_alone_verifies(env, signed_webhook):
    headers = {name: value for name, value in signed_webhook["headers"].items()
               if name.lower() not in STANDARD}

    event = verify_webhook(signed_webhook["body"].encode(), headers, env["FKOD_WEBHOOK_SECRET"])

    assert event.id == "evt_sdk_sample"


def test_header_names_match_case_insensitively(env, signed_webhook):
    headers = {name.upper(): value for name, value in signed_webhook["headers"].items()}

    assert verify_webhook(signed_webhook["body"].encode(), headers,
                          env["FKOD_WEBHOOK_SECRET"]).type == "user.created"


@pytest.mark.parametrize("scheme", ["standard", "fkod"])
def test_tampered_body_is_a_mismatch(env, signed_webhook, scheme):
    headers = signed_webhook["headers"]
    if scheme == "fkod":
        headers = {name: value for name, value in headers.items()
                   if name.lower() not in STANDARD}
    body = signed_webhook["body"].replace("user_1", "user_2").encode()

    assert reason_of(body, headers, env["FKOD_WEBHOOK_SECRET"]) == "signature_mismatch"


@pytest.mark.parametrize("scheme", ["standard", "fkod"])
def test_wrong_secret_is_a_mismatch(signed_webhook, scheme):
    headers = signed_webhook["headers"]
    if scheme == "fkod":
        headers = {name: value for name, value in headers.items()
                   if name.lower() not in STANDARD}

    assert reason_of(signed_webhook["body"].encode(), headers,
                     other_secret()) == "signature_mismatch"


@pytest.mark.parametrize("offset", [301, -301])
def test_timestamp_outside_tolerance(env, signed_webhook, offset):
    now = signed_webhook["timestamp"] + offset

    reason = reason_of(signed_webhook["body"].encode(), signed_webhook["headers"],
                       env["FKOD_WEBHOOK_SECRET"], now=now)

    assert reason == "timestamp_outside_tolerance"


def test_timestamp_at_tolerance_edge_verifies(env, signed_webhook):
    now = signed_webhook["timestamp"] + 300

    event = verify_webhook(signed_webhook["body"].encode(), signed_webhook["headers"],
                           env["FKOD_WEBHOOK_SECRET"], now=now)

    assert event.id == "evt_sdk_sample"


def test_any_of_several_secrets_verifies(env, signed_webhook):
    secrets = [other_secret(), env["FKOD_WEBHOOK_SECRET"]]

    event = verify_webhook(signed_webhook["body"].encode(), signed_webhook["headers"], secrets)

    assert event.id == "evt_sdk_sample"


def test_missing_headers_are_missing_signature(env, signed_webhook):
    assert reason_of(signed_webhook["body"].encode(), {"content-type": "application/json"},
                     env["FKOD_WEBHOOK_SECRET"]) == "missing_signature"


@pytest.mark.parametrize("headers", [
    {"X-FKOD-Signature": "t=1,v1"},
    {"X-FKOD-Signature": "v1=" + "0" * 64},
    {"X-FKOD-Signature": "t=now,v1=" + "0" * 64},
    {"webhook-id": "evt_1", "webhook-timestamp": "1", "webhook-signature": "v1"},
    {"webhook-id": "evt_1", "webhook-timestamp": "1", "webhook-signature": "v1,%%%"},
])
def test_malformed_headers(env, signed_webhook, headers):
    assert reason_of(signed_webhook["body"].encode(), headers,
                     env["FKOD_WEBHOOK_SECRET"]) == "malformed_header"


def test_text_body_is_refused(env, signed_webhook):
    with pytest.raises(TypeError):
        verify_webhook(signed_webhook["body"], signed_webhook["headers"],  # type: ignore[arg-type]
                       env["FKOD_WEBHOOK_SECRET"])
