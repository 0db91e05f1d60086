"""A live F-KOD server on loopback for the SDK tests, with a partner and its credentials.

Each SDK's own test runner (pytest for Python, ``node --test``, ``go test``, the
Java runner) receives the server's address and credentials through the
environment variables of :meth:`LiveApi.environment`.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from socketserver import ThreadingMixIn

import pytest

from fkod.core.auth.scopes import SCOPES
from fkod.core.testing import TestClient, verify_partner
from fkod.core.webhooks.signing import generate_secret, sign_delivery

PARTNER_SCOPES = [scope.name for scope in SCOPES if not scope.admin_only]


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):
        pass


class ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


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
    """Serve ``app`` on 127.0.0.1 with threads and set up a partner that can call every API."""
    client = TestClient(app)
    partner, token = client.partner_with_token()
    verify_partner(app, partner["id"])
    key = client.create_key(token, scopes=PARTNER_SCOPES, key_name="sdk tests")
    secret = generate_secret()

    server = make_server("127.0.0.1", 0, app, server_class=ThreadingServer,
                         handler_class=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield LiveApi(base_url=f"http://127.0.0.1:{server.server_port}", api_key=key["key"],
                      login_token=token, partner_id=partner["id"], webhook_secret=secret,
                      signed_webhook=signed_sample(secret))
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
