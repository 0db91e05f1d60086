"""The signature debugger, POST /api/webhooks/{id}/verify, over real deliveries.

Most tests capture a real delivery at a loopback receiver, then send the debugger
what the receiver got, changed the way a receiver's code changes it. The app runs
on the embedded stack by default and on PostgreSQL and Redis with
``FKOD_TEST_STACK=production``.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import time
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from marshmallow import ValidationError
from sqlalchemy.orm import Session

from fkod.core.testing import TestClient, auth_header, verify_partner
from fkod.core.webhooks.models import Webhook
from fkod.core.webhooks.signing import generate_secret, sign_delivery
from fkod.partners.webhook_verify_views import MAX_PAYLOAD_BYTES, VerifyWebhookBody
from tests.envelope import assert_envelope
from tests.receivers import ReceivedRequest, Receiver

pytestmark = pytest.mark.shared_app

# Long enough for a message to pass through Redis on the production stack.
WAIT_SECONDS = 30
# Slack for the seconds that pass between signing and the debugger's clock.
CLOCK_SLACK_SECONDS = 5
NAME = 'Café ☕ "quoted"'


@dataclass
class Endpoint:
    """A partner's webhook endpoint, with the owner's login access token."""

    client: TestClient
    token: str
    partner_id: int
    webhook_id: str
    secret: str

    @property
    def headers(self) -> dict:
        return auth_header(self.token)

    @property
    def verify_path(self) -> str:
        return f"/api/webhooks/{self.webhook_id}/verify"

    def verify(self, body: dict, status: int = 200):
        return self.client.web.post_json(self.verify_path, body, headers=self.headers,
                                         status=status)


@dataclass
class Captured:
    """A delivery as the receiver got it, and the endpoint it was sent to."""

    endpoint: Endpoint
    request: ReceivedRequest

    @property
    def body(self) -> bytes:
        return self.request.body

    @property
    def event_id(self) -> str:
        return self.request.header("webhook-id")

    def fkod_input(self, payload: bytes | None = None) -> dict:
        payload = self.body if payload is None else payload
        return {"payload": payload.decode("utf-8"),
                "signature": self.request.header("X-FKOD-Signature")}

    def standard_input(self, payload: bytes | None = None) -> dict:
        payload = self.body if payload is None else payload
        return {"payload": payload.decode("utf-8"),
                "signature": self.request.header("webhook-signature"),
                "timestamp": self.request.header("webhook-timestamp"),
                "webhook_id": self.request.header("webhook-id")}


def row_id(public_id: str) -> int:
    return int(public_id.rsplit("_", 1)[1])


def new_endpoint(client: TestClient, url: str, token: str | None = None, *,
                 mode: str = "test") -> Endpoint:
    """Create an endpoint subscribed to user.created, for a new partner unless a token is given."""
    if token is None:
        _partner, token = client.partner_with_token()
    headers = auth_header(token)
    partner_id = row_id(client.web.get("/api/partners/me", headers=headers).json["id"])
    body = {"url": url, "event_types": ["user.created"], "mode": mode, "retry_count": 0,
            "retry_delay": 0}
    created = client.web.post_json("/api/partners/webhooks", body, headers=headers,
                                   status=201).json
    return Endpoint(client, token, partner_id, created["id"], created["secret"])


def deliver_user_created(endpoint: Endpoint, receiver: Receiver) -> ReceivedRequest:
    """Create a user through the gateway and return the delivery the receiver got."""
    key = endpoint.client.create_key(endpoint.token)
    email = f"learner-{time.monotonic_ns()}@example.com"
    endpoint.client.web.post_json("/api/v1/users", {"email": email, "name": NAME},
                                  headers=auth_header(key["key"]), status=201)
    return receiver.wait_for(1, timeout=WAIT_SECONDS)[0]


def update_webhook(app, webhook_id: str, **values) -> None:
    with Session(app.registry["db.engine"]) as session, session.begin():
        session.execute(sa.update(Webhook).where(Webhook.id == row_id(webhook_id))
                        .values(**values))


def resign(captured: Captured, secret: str, *, timestamp: int | None = None) -> dict[str, str]:
    """Sign the captured body again, as F-KOD would with ``secret`` at ``timestamp``.

    The timestamp defaults to the one the delivery was signed with.
    """
    if timestamp is None:
        timestamp = int(captured.request.header("webhook-timestamp"))
    return sign_delivery([secret], message_id=captured.event_id, timestamp=timestamp,
                         body=captured.body)


@pytest.fixture
def receiver():
    with Receiver(200) as started:
        yield started
    assert started.errors == []


@pytest.fixture
def endpoint(client, receiver) -> Endpoint:
    return new_endpoint(client, receiver.url)


@pytest.fixture
def captured(endpoint, receiver) -> Captured:
    return Captured(endpoint, deliver_user_created(endpoint, receiver))


# A real delivery verifies --------------------------------------------------------


def test_fkod_signature_valid(captured):
    result = captured.endpoint.verify(captured.fkod_input()).json

    assert result["valid"] is True
    assert result["scheme"] == "fkod"
    assert result["reason"] == "valid"
    assert "valid" in result["message"]
    assert result["details"]["matched_secret"] == "current"
    assert result["details"]["event_id"] == captured.event_id
    assert abs(result["details"]["age_seconds"]) <= CLOCK_SLACK_SECONDS


def test_standard_signature_valid(captured):
    result = captured.endpoint.verify(captured.standard_input()).json

    assert result["valid"] is True
    assert result["scheme"] == "standard"
    assert result["reason"] == "valid"
    assert result["details"]["webhook_id"] == captured.event_id


def test_fkod_with_matching_timestamp_valid(captured):
    body = captured.fkod_input()
    body["timestamp"] = captured.request.header("webhook-timestamp")
    body["webhook_id"] = captured.event_id

    result = captured.endpoint.verify(body).json

    assert result["reason"] == "valid"


def test_response_shows_no_secret(captured):
    changed = captured.body.replace(NAME.encode(), b"Mallory")
    inputs = [captured.fkod_input(), captured.standard_input(),
              captured.fkod_input(changed), captured.standard_input(changed)]
    signed = hmac.new(captured.endpoint.secret.encode(),
                      captured.request.header("webhook-timestamp").encode() + b"." + changed,
                      hashlib.sha256).hexdigest()

    for body in inputs:
        text = captured.endpoint.verify(body).text

        assert captured.endpoint.secret.removeprefix("whsec_") not in text
        assert signed not in text


# The body the receiver verified is not the body sent ------------------------------


@pytest.mark.parametrize("encode, difference", [
    (lambda value: json.dumps(value, separators=(",", ":"), sort_keys=True), "key_order"),
    (lambda value: json.dumps(value, indent=2, ensure_ascii=False), "whitespace"),
    (lambda value: json.dumps(value, separators=(",", ":")), "escapes"),
], ids=["compact_sorted", "pretty", "ascii_escapes"])
@pytest.mark.parametrize("scheme", ["fkod", "standard"])
def test_reencoded_json_is_reserialized(captured, encode, difference, scheme):
    payload = encode(json.loads(captured.body)).encode()
    body = captured.fkod_input(payload) if scheme == "fkod" else captured.standard_input(payload)

    result = captured.endpoint.verify(body).json

    assert result["valid"] is False
    assert result["reason"] == "body_reserialized"
    assert difference in result["details"]["differences"]
    offset = result["details"]["first_difference"]["offset"]
    assert payload[:offset] == captured.body[:offset]
    assert payload[offset] != captured.body[offset]
    assert f"offset {offset}" in result["message"]


def test_sorted_keys_matched_by_stored_delivery(captured):
    payload = json.dumps(json.loads(captured.body), sort_keys=True, ensure_ascii=False)

    result = captured.endpoint.verify(captured.fkod_input(payload.encode())).json

    assert result["details"]["matched_body"] == "delivery"
    assert captured.event_id in result["message"]


def test_trailing_newline_named(captured):
    result = captured.endpoint.verify(captured.fkod_input(captured.body + b"\n")).json

    assert result["reason"] == "body_reserialized"
    assert result["details"]["differences"] == ["trailing_newline"]
    assert result["details"]["first_difference"]["offset"] == len(captured.body)
    assert "newline" in result["message"]


def test_changed_value_is_body_modified(captured):
    payload = json.loads(captured.body)
    payload["data"]["name"] = "Mallory"
    changed = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()

    result = captured.endpoint.verify(captured.standard_input(changed)).json

    assert result["valid"] is False
    assert result["reason"] == "body_modified"
    assert result["details"]["matched_body"] == "delivery"
    assert result["details"]["changed_fields"] == ["data.name"]
    assert "data.name" in result["message"]


def test_latin1_decoded_body_is_charset(captured):
    mojibake = captured.body.decode("latin-1").encode("utf-8")

    result = captured.endpoint.verify(captured.fkod_input(mojibake)).json

    assert result["reason"] == "body_modified"
    assert result["details"]["differences"] == ["charset"]
    assert "charset" in result["message"]


# The timestamp ---------------------------------------------------------------------


@pytest.mark.parametrize("shift, direction", [(-3600, "past"), (3600, "future")])
def test_shifted_clock_outside_tolerance(captured, shift, direction):
    signed_at = int(time.time()) + shift
    headers = resign(captured, captured.endpoint.secret, timestamp=signed_at)

    result = captured.endpoint.verify(
        {"payload": captured.body.decode(), "signature": headers["X-FKOD-Signature"]}).json

    assert result["valid"] is False
    assert result["reason"] == "timestamp_outside_tolerance"
    assert result["details"]["direction"] == direction
    assert abs(abs(result["details"]["age_seconds"]) - 3600) <= CLOCK_SLACK_SECONDS
    assert abs(result["details"]["beyond_tolerance_seconds"] - 3300) <= CLOCK_SLACK_SECONDS
    assert f"{result['details']['beyond_tolerance_seconds']} seconds beyond" in result["message"]


def test_tolerance_follows_setting(app_factory, receiver):
    client = TestClient(app_factory(**{"fkod.webhooks.signature_tolerance_seconds": "30"}))
    endpoint = new_endpoint(client, receiver.url)
    captured = Captured(endpoint, deliver_user_created(endpoint, receiver))
    headers = resign(captured, endpoint.secret, timestamp=int(time.time()) - 120)

    result = endpoint.verify({"payload": captured.body.decode(),
                              "signature": headers["X-FKOD-Signature"]}).json

    assert result["reason"] == "timestamp_outside_tolerance"
    assert result["details"]["tolerance_seconds"] == 30


def test_millisecond_timestamp_named(captured):
    body = captured.standard_input()
    body["timestamp"] = body["timestamp"] + "000"

    result = captured.endpoint.verify(body).json

    assert result["reason"] == "timestamp_outside_tolerance"
    assert result["details"]["looks_like_milliseconds"] is True
    assert "milliseconds" in result["message"]


# Secrets ---------------------------------------------------------------------------


def test_retired_previous_secret(captured, app):
    old_secret = generate_secret()
    retired_at = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0) \
        - dt.timedelta(hours=1)
    update_webhook(app, captured.endpoint.webhook_id,
                   previous_secret_key=app.registry["webhook_vault"].encrypt(old_secret),
                   previous_secret_expires_at=retired_at,
                   secret_rotated_at=retired_at - dt.timedelta(days=1))
    headers = resign(captured, old_secret)

    result = captured.endpoint.verify(
        {"payload": captured.body.decode(), "signature": headers["X-FKOD-Signature"]}).json

    assert result["reason"] == "retired_secret"
    assert result["details"]["retired_at"] == retired_at.isoformat() + "Z"
    assert retired_at.isoformat() + "Z" in result["message"]
    assert old_secret.removeprefix("whsec_") not in json.dumps(result)


def test_previous_secret_valid_during_overlap(captured, app):
    old_secret = generate_secret()
    expires_at = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(hours=1)
    update_webhook(app, captured.endpoint.webhook_id,
                   previous_secret_key=app.registry["webhook_vault"].encrypt(old_secret),
                   previous_secret_expires_at=expires_at)
    headers = resign(captured, old_secret)

    result = captured.endpoint.verify({
        "payload": captured.body.decode(), "signature": headers["webhook-signature"],
        "timestamp": headers["webhook-timestamp"], "webhook_id": headers["webhook-id"]}).json

    assert result["valid"] is True
    assert result["details"]["matched_secret"] == "previous"
    assert "previous secret" in result["message"]


def test_decoded_key_is_wrong_key_form(captured):
    timestamp = captured.request.header("webhook-timestamp")
    key = base64.b64decode(captured.endpoint.secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{timestamp}.".encode() + captured.body, hashlib.sha256)

    result = captured.endpoint.verify({"payload": captured.body.decode(),
                                       "signature": f"t={timestamp},v1={digest.hexdigest()}"})

    assert result.json["reason"] == "wrong_key_form"
    assert result.json["details"]["key_form"] == "decoded"


def test_whole_string_key_is_wrong_key_form(captured):
    body = captured.standard_input()
    signed = f"{body['webhook_id']}.{body['timestamp']}.".encode() + captured.body
    digest = hmac.new(captured.endpoint.secret.encode(), signed, hashlib.sha256).digest()
    body["signature"] = "v1," + base64.b64encode(digest).decode()

    result = captured.endpoint.verify(body).json

    assert result["reason"] == "wrong_key_form"
    assert result["details"]["key_form"] == "whole_string"


def test_other_endpoint_secret_mismatch(captured, receiver):
    other = new_endpoint(captured.endpoint.client, receiver.url, captured.endpoint.token)

    result = other.verify(captured.fkod_input()).json

    assert result["valid"] is False
    assert result["reason"] == "signature_mismatch"
    assert result["details"]["cause"] == "other_endpoint"
    assert captured.endpoint.webhook_id in result["message"]


def test_live_endpoint_given_test_delivery(captured, receiver, app):
    verify_partner(app, f"partner_{captured.endpoint.partner_id}")
    live = new_endpoint(captured.endpoint.client, receiver.url, captured.endpoint.token,
                        mode="live")

    result = live.verify(captured.standard_input()).json

    assert result["reason"] == "signature_mismatch"
    assert f"{captured.endpoint.webhook_id}, test mode" in result["message"]


def test_unknown_secret_mismatch_lists_checks(captured):
    headers = resign(captured, generate_secret())

    result = captured.endpoint.verify(
        {"payload": captured.body.decode(), "signature": headers["X-FKOD-Signature"]}).json

    assert result["reason"] == "signature_mismatch"
    assert result["details"]["cause"] == "unknown"
    assert result["details"]["checked"]["secrets"] == ["current"]
    assert "exactly the body F-KOD delivered" in result["message"]


def test_body_from_elsewhere_mismatch(endpoint):
    headers = sign_delivery([generate_secret()], message_id="evt_elsewhere",
                            timestamp=int(time.time()), body=b'{"id":"evt_elsewhere"}')

    result = endpoint.verify({"payload": '{"id":"evt_elsewhere"}',
                              "signature": headers["X-FKOD-Signature"]}).json

    assert result["reason"] == "signature_mismatch"
    assert "event_id" not in result["details"]


# Who may call it -------------------------------------------------------------------


def test_other_partner_endpoint_not_found(captured, client, receiver):
    stranger = new_endpoint(client, receiver.url)

    response = client.web.post_json(captured.endpoint.verify_path, captured.fkod_input(),
                                    headers=stranger.headers, status=404)

    assert_envelope(response, 404, "not_found")


@pytest.mark.parametrize("webhook_id", ["whk_999999", "whk_abc", "key_1", "whk_99999999999"])
def test_unknown_endpoint_not_found(endpoint, webhook_id):
    response = endpoint.client.web.post_json(
        f"/api/webhooks/{webhook_id}/verify", {"payload": "{}", "signature": "t=1,v1=" + "0" * 64},
        headers=endpoint.headers, status=404)

    assert_envelope(response, 404, "not_found")


def test_deleted_endpoint_not_found(endpoint, app):
    update_webhook(app, endpoint.webhook_id, status="deleted")

    response = endpoint.verify({"payload": "{}", "signature": "t=1,v1=" + "0" * 64}, status=404)

    assert_envelope(response, 404, "not_found")


def test_login_required(endpoint):
    response = endpoint.client.web.post_json(
        endpoint.verify_path, {"payload": "{}", "signature": "t=1,v1=" + "0" * 64}, status=401)

    assert_envelope(response, 401, "missing_credentials")


# Malformed input -------------------------------------------------------------------

NOW_TEXT = "1700000000"
HEX = "0" * 64
BASE64 = base64.b64encode(bytes(32)).decode()


@pytest.mark.parametrize("body, code, field", [
    ({"signature": "t=abc,v1=" + HEX}, "malformed_timestamp", "signature"),
    ({"signature": "t=,v1=" + HEX}, "malformed_timestamp", "signature"),
    ({"signature": "v1=" + HEX}, "malformed_signature", "signature"),
    ({"signature": f"t={NOW_TEXT},v1={'0' * 63}"}, "malformed_signature", "signature"),
    ({"signature": f"t={NOW_TEXT},v1={'0' * 65}"}, "malformed_signature", "signature"),
    ({"signature": f"t={NOW_TEXT},v1={'é' * 64}"}, "malformed_signature", "signature"),
    ({"signature": ""}, "malformed_signature", "signature"),
    ({"signature": "x" * 10_000}, "malformed_signature", "signature"),
    ({"signature": "not a signature"}, "malformed_signature", "signature"),
    ({"signature": f"X-FKOD-Signature: t={NOW_TEXT},v1={HEX}"}, "malformed_signature",
     "signature"),
    ({"signature": f"t={NOW_TEXT},v1={HEX}", "timestamp": "1700000001"},
     "malformed_timestamp", "timestamp"),
    ({"signature": f"v1,{BASE64}", "webhook_id": "evt_1"}, "malformed_timestamp", "timestamp"),
    ({"signature": f"v1,{BASE64}", "webhook_id": "evt_1", "timestamp": "soon"},
     "malformed_timestamp", "timestamp"),
    ({"signature": f"v1,{BASE64}", "timestamp": NOW_TEXT}, "malformed_webhook_id",
     "webhook_id"),
    ({"signature": f"v1,{BASE64}", "timestamp": NOW_TEXT, "webhook_id": "evt 1"},
     "malformed_webhook_id", "webhook_id"),
    ({"signature": "v1,bm90IDMyIGJ5dGVz", "timestamp": NOW_TEXT, "webhook_id": "evt_1"},
     "malformed_signature", "signature"),
    ({"signature": "v1,not*base64", "timestamp": NOW_TEXT, "webhook_id": "evt_1"},
     "malformed_signature", "signature"),
])
def test_malformed_signature_rejected(endpoint, body, code, field):
    response = endpoint.verify({"payload": "{}", **body}, status=400)

    result = assert_envelope(response, 400, code)
    assert [(error["location"], error["name"]) for error in result["errors"]] == [
        ("body", field)]
    assert result["errors"][0]["description"]


@pytest.mark.parametrize("body, field", [
    ({"signature": "t=1,v1=" + HEX}, "payload"),
    ({"payload": "{}"}, "signature"),
    ({"payload": {"id": "evt_1"}, "signature": "t=1,v1=" + HEX}, "payload"),
    ({"payload": "{}", "signature": ["t=1"]}, "signature"),
    ({"payload": "{}", "signature": "t=1,v1=" + HEX, "timestamp": 1700000000}, "timestamp"),
    ({"payload": "{}", "signature": "t=1,v1=" + HEX, "webhook_id": 5}, "webhook_id"),
    ({"payload": "{}", "signature": "t=1,v1=" + HEX, "secret": "whsec_x"}, "secret"),
])
def test_invalid_fields_rejected(endpoint, body, field):
    response = endpoint.verify(body, status=400)

    result = assert_envelope(response, 400, "validation_failed")
    assert ("body", field) in [(error["location"], error["name"])
                               for error in result["errors"]]


# NOTE: payloads over 10 KiB are checked against the schema directly, not over HTTP.
# fkod.core.api.read_body lets WebOb spool such bodies to a temporary file that is never
# closed, and the test run turns the ResourceWarning into an error.


def test_oversize_payload_rejected():
    with pytest.raises(ValidationError) as caught:
        VerifyWebhookBody().load({"payload": "x" * (MAX_PAYLOAD_BYTES + 1),
                                  "signature": "t=1,v1=" + HEX})

    assert list(caught.value.messages) == ["payload"]


def test_payload_limit_counts_utf8_bytes():
    payload = "é" * (MAX_PAYLOAD_BYTES // 2 + 1)

    with pytest.raises(ValidationError) as caught:
        VerifyWebhookBody().load({"payload": payload, "signature": "t=1,v1=" + HEX})

    assert list(caught.value.messages) == ["payload"]


def test_payload_kept_as_sent():
    payload = " \x00{}\n"

    loaded = VerifyWebhookBody().load({"payload": payload, "signature": " t=1,v1=" + HEX})

    assert loaded["payload"] == payload
    assert loaded["signature"] == " t=1,v1=" + HEX
    assert loaded["timestamp"] is None
    assert loaded["webhook_id"] is None
