"""A live F-KOD server on loopback for the SDK tests, with a partner and its credentials.

Each SDK's own test runner (pytest for Python, ``node --test``, ``go test``, the
Java runner) receives the server's address and credentials through the
environment variables of :meth:`LiveApi.environment`.
"""

from __future__ import annotations

import dataclasses
import json
import time

import pytest

from fkod.core.auth.scopes import SCOPES
from fkod.core.testing import TestClient, verify_partner
from fkod.core.webhooks.signing import generate_secret, sign_delivery
from tests.live import serve

PARTNER_SCOPES = [scope.name for scope in SCOPES if not scope.admin_only]


@dataclasses.dataclass
class LiveApi:
    """A served application with a verified partner, its login token and a test-mode key."""

    base_url: str
    api_key: str
    login_token: str
    partner_id: str
    webhook_secret: str
    signed_webhook: dict

    def environment(self) -> dict[str, str]:
        """Variables that tell an SDK test suite where the server is and how to call it."""
        return {
            "FKOD_BASE_URL": self.base_url,
            "FKOD_API_KEY": self.api_key,
            "FKOD_LOGIN_TOKEN": self.login_token,
            "FKOD_PARTNER_ID": self.partner_id,
            "FKOD_WEBHOOK_SECRET": self.webhook_secret,
            "FKOD_SIGNED_WEBHOOK": json.dumps(self.signed_webhook),
        }


def signed_sample(secret: str) -> dict:
    """A webhook body signed as the platform signs deliveries, for verification tests."""
    body = json.dumps({"id": "evt_sdk_sample", "type": "user.created", "created": 1764900000,
                       "livemode": False, "data": {"id": "user_1"}}).encode()
    timestamp = int(time.time())
    headers = sign_delivery([secret], message_id="evt_sdk_sample", timestamp=timestamp,
                            body=body)
    return {"body": body.decode(), "headers": headers, "timestamp": timestamp}


@pytest.fixture
def live_api(app):
    """Serve ``app`` on 127.0.0.1 and set up a partner that can call every API."""
    client = TestClient(app)
    partner, token = client.partner_with_token()
    verify_partner(app, partner["id"])
    key = client.create_key(token, scopes=PARTNER_SCOPES, key_name="sdk tests")
    secret = generate_secret()

    with serve(app) as base_url:
        yield LiveApi(base_url=base_url, api_key=key["key"], login_token=token,
                      partner_id=partner["id"], webhook_secret=secret,
                      signed_webhook=signed_sample(secret))
