"""``fkod demo``: the platform's main job, end to end, against a running server.

It signs a partner up, creates a test key, calls the API, starts a webhook
receiver on loopback, subscribes it to user.created, creates a user, and
prints the webhook that arrived after checking its signature with the
``standardwebhooks`` library, given only the endpoint's secret.
"""

from __future__ import annotations

import http.server
import json
import queue
import secrets
import sys
import threading

import httpx

RECEIVER_TIMEOUT_SECONDS = 60


class _Receiver(http.server.BaseHTTPRequestHandler):
    inbox: queue.Queue

    def do_POST(self):  # noqa: N802 - the name http.server calls
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        self.inbox.put(({name.lower(): value for name, value in self.headers.items()}, body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def _check(response: httpx.Response, expected: int, step: str) -> dict:
    if response.status_code != expected:
        raise SystemExit(f"demo failed at '{step}': expected HTTP {expected}, got "
                         f"{response.status_code}: {response.text[:500]}")
    return response.json() if response.content else {}


def run_demo(base_url: str) -> int:
    from standardwebhooks.webhooks import Webhook as StandardWebhook
    from standardwebhooks.webhooks import WebhookVerificationError

    inbox: queue.Queue = queue.Queue()
    handler = type("Receiver", (_Receiver,), {"inbox": inbox})
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    receiver_url = f"http://127.0.0.1:{receiver.server_port}/fkod-webhooks"

    try:
        with httpx.Client(base_url=base_url, timeout=30) as client:
            email = f"demo-{secrets.token_hex(4)}@partner.example"
            password = secrets.token_urlsafe(16)
            registered = _check(client.post("/api/partners/register", json={
                "company_name": "Demo Partner", "email": email, "password": password,
            }), 201, "register a partner")
            print(f"1. registered {registered['partner']['id']} as {email}")

            token = _check(client.post("/api/auth/login", json={
                "email": email, "password": password}), 200, "log in")["access_token"]
            member = {"Authorization": f"Bearer {token}"}
            key = _check(client.post("/api/partners/api-keys", headers=member, json={
                "key_name": "demo", "scopes": ["users:read", "users:write"], "mode": "test",
            }), 201, "create an API key")
            print(f"2. created API key {key['key_prefix']}… (shown once)")

            api = {"Authorization": f"Bearer {key['key']}"}
            listed = client.get("/api/v1/users", headers=api)
            _check(listed, 200, "call the API")
            print(f"3. GET /api/v1/users -> 200, {len(listed.json()['data'])} users, "
                  f"X-RateLimit-Remaining {listed.headers.get('X-RateLimit-Remaining')}")

            webhook = _check(client.post("/api/partners/webhooks", headers=member, json={
                "url": receiver_url, "event_types": ["user.created"], "mode": "test",
            }), 201, "subscribe a webhook")
            print(f"4. subscribed {webhook['id']} to user.created at {receiver_url}")

            user = _check(client.post("/api/v1/users", headers=api, json={
                "email": "learner@example.com", "name": "Ada Learner",
            }), 201, "create a user")
            print(f"5. POST /api/v1/users -> 201 {user['id']}")

        try:
            headers, body = inbox.get(timeout=RECEIVER_TIMEOUT_SECONDS)
        except queue.Empty:
            raise SystemExit(f"demo failed: no webhook arrived within "
                             f"{RECEIVER_TIMEOUT_SECONDS} s; is a worker running?") from None
    finally:
        receiver.shutdown()
        receiver.server_close()

    print("6. webhook received:")
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature", "x-fkod-signature"):
        print(f"   {name}: {headers.get(name)}")
    print("   body: " + json.dumps(json.loads(body), indent=2).replace("\n", "\n   "))
    try:
        StandardWebhook(webhook["secret"]).verify(body, headers)
    except WebhookVerificationError as exc:
        print(f"7. signature INVALID: {exc}", file=sys.stderr)
        return 1
    print("7. signature verified with the standardwebhooks library using only the secret")
    return 0
