"""A local stand-in for the parts of PayPal's REST API that the PayPal provider calls.

:class:`FakePayPal` serves, on 127.0.0.1 and a free port:

* ``POST /v1/oauth2/token``: client-credentials tokens, with HTTP basic auth;
* ``POST /v1/payments/payouts`` and ``GET /v1/payments/payouts/{id}``;
* ``POST /v1/notifications/verify-webhook-signature``.

Requests and responses use PayPal's paths, JSON bodies, status codes and
error bodies (``name``, ``message``, ``debug_id``, ``details``). Tests point
the provider's ``api_base`` at :attr:`FakePayPal.url`::

    with FakePayPal() as fake:
        provider = PayPalProvider(client_id=fake.client_id,
                                  client_secret=fake.client_secret,
                                  webhook_id="WH-1", api_base=fake.url)

Webhook signatures are an HMAC of the fake's own, not PayPal's RSA
certificates: :meth:`FakePayPal.webhook` builds a delivery, and the verify
endpoint returns SUCCESS only for that delivery's headers and event.
"""

from __future__ import annotations

import base64
import binascii
import copy
import datetime as dt
import hashlib
import hmac
import json
import re
import secrets
import threading
import uuid
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

BATCH_STATUSES = ("PENDING", "PROCESSING", "SUCCESS", "DENIED", "CANCELED")
# The item transaction_status PayPal shows for each final batch status.
ITEM_STATUSES = {"PENDING": "PENDING", "PROCESSING": "PENDING", "SUCCESS": "SUCCESS",
                 "DENIED": "FAILED", "CANCELED": "RETURNED"}
AMOUNT_VALUE = re.compile(r"^\d+(\.\d{1,2})?$")
RECIPIENT_TYPES = ("EMAIL", "PHONE", "PAYPAL_ID")
PAYOUT_PATH = re.compile(r"^/v1/payments/payouts/([A-Za-z0-9_-]+)$")
ERROR_TEXT = {
    429: ("RATE_LIMIT_REACHED", "Too many requests. Blocked due to rate limiting."),
    500: ("INTERNAL_SERVER_ERROR", "An internal server error occurred."),
    503: ("SERVICE_UNAVAILABLE", "Service Unavailable."),
}
VERIFY_FIELDS = ("auth_algo", "cert_url", "transmission_id", "transmission_sig",
                 "transmission_time", "webhook_id", "webhook_event")


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _canonical(event: object) -> bytes:
    """Serialize an event the same way however its JSON was formatted in transit."""
    return json.dumps(event, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode()


class FakePayPal:
    """A PayPal REST API stand-in on 127.0.0.1 for tests; see the module docstring.

    Use it as a context manager or call :meth:`start` and :meth:`stop`.
    Attributes tests read: :attr:`url`, :attr:`payouts`, :attr:`token_requests`
    and :attr:`requests` (each call as ``(method, path)``).
    """

    def __init__(self, *, client_id: str = "fake-client-id",
                 client_secret: str = "fake-client-secret",  # noqa: S107 (a test value)
                 token_lifetime: int = 32400):
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_lifetime = token_lifetime
        self.token_requests = 0
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._tokens: set[str] = set()
        self._batches: dict[str, dict] = {}
        self._sender_batch_ids: dict[str, str] = {}
        self._replies: dict[str, tuple[int, dict]] = {}
        self._failures: list[int] = []
        self._signatures: dict[str, str] = {}
        self._signing_key = secrets.token_bytes(32)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # Life cycle -------------------------------------------------------------

    def start(self) -> FakePayPal:
        """Start serving on 127.0.0.1 and a free port in a daemon thread."""
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        server.fake = self
        self._server = server
        # A short poll interval lets stop() return quickly.
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,),
                                        name="fake-paypal", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakePayPal:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The base address, such as ``http://127.0.0.1:40123``, for ``api_base``."""
        if self._server is None:
            raise RuntimeError("FakePayPal is not started")
        return f"http://127.0.0.1:{self._server.server_port}"

    # Helpers for tests ------------------------------------------------------

    @property
    def payouts(self) -> list[dict]:
        """Copies of the created batches, oldest first.

        Each has ``payout_batch_id``, ``batch_status``, ``request_id`` (the
        PayPal-Request-Id header, or None) and ``request`` (the JSON body).
        """
        with self._lock:
            return [{"payout_batch_id": batch_id, "batch_status": batch["status"],
                     "request_id": batch["request_id"],
                     "request": copy.deepcopy(batch["request"])}
                    for batch_id, batch in self._batches.items()]

    def complete(self, batch_id: str, status: str = "SUCCESS") -> None:
        """Set a batch's status, as PayPal does when it finishes processing it."""
        if status not in BATCH_STATUSES:
            raise ValueError(f"status must be one of {', '.join(BATCH_STATUSES)}")
        with self._lock:
            batch = self._batches[batch_id]
            batch["status"] = status
            if status not in ("PENDING", "PROCESSING"):
                batch["time_completed"] = _now()

    def fail_next(self, status: int = 503, times: int = 1) -> None:
        """Make the next ``times`` calls, to any endpoint, return ``status`` with PayPal's body."""
        with self._lock:
            self._failures.extend([status] * times)

    def forget_request_ids(self) -> None:
        """Drop the stored PayPal-Request-Id responses, as PayPal does after it stops keeping them.

        A repeated request then reaches the ``sender_batch_id`` duplicate check.
        """
        with self._lock:
            self._replies.clear()

    def expire_tokens(self) -> None:
        """Invalidate every issued access token, so the next call gets 401."""
        with self._lock:
            self._tokens.clear()

    def webhook(self, event_type: str, resource: dict, webhook_id: str, *,
                event_id: str | None = None, create_time: str | None = None,
                transmission_time: str | None = None) -> tuple[bytes, dict[str, str]]:
        """Build a webhook delivery as PayPal sends it: the body bytes and the headers.

        The verify endpoint confirms these headers with this event and
        ``webhook_id``. A changed body, header or webhook id fails verification.
        """
        event = {
            "id": event_id or f"WH-{secrets.token_hex(8).upper()}",
            "event_version": "1.0",
            "create_time": create_time or _now(),
            "resource_type": "payouts" if event_type.startswith("PAYMENT.PAYOUTSBATCH.")
            else "payouts_item",
            "event_type": event_type,
            "summary": f"Payout event {event_type}",
            "resource": resource,
            "links": [],
        }
        transmission_id = str(uuid.uuid4())
        transmission_time = transmission_time or _now()
        signature = self._sign(transmission_id, transmission_time, webhook_id, event)
        with self._lock:
            self._signatures[transmission_id] = signature
        headers = {
            "PAYPAL-TRANSMISSION-ID": transmission_id,
            "PAYPAL-TRANSMISSION-TIME": transmission_time,
            "PAYPAL-TRANSMISSION-SIG": signature,
            "PAYPAL-CERT-URL": f"{self.url}/v1/notifications/certs/CERT-fake",
            "PAYPAL-AUTH-ALGO": "SHA256withRSA",
            "Content-Type": "application/json",
        }
        return json.dumps(event).encode(), headers

    def _sign(self, transmission_id: str, transmission_time: str, webhook_id: str,
              event: object) -> str:
        # PayPal signs the transmission id, time, webhook id and a CRC32 of the
        # event. This fake uses an HMAC over the same values in place of RSA.
        crc = binascii.crc32(_canonical(event))
        message = f"{transmission_id}|{transmission_time}|{webhook_id}|{crc}".encode()
        digest = hmac.new(self._signing_key, message, hashlib.sha256).digest()
        return base64.b64encode(digest).decode()

    # Endpoint logic, called by the handler ---------------------------------

    def _take_failure(self) -> int | None:
        with self._lock:
            return self._failures.pop(0) if self._failures else None

    def _issue_token(self, authorization: str, form: dict) -> tuple[int, dict]:
        expected = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        if not hmac.compare_digest(authorization, f"Basic {expected}"):
            return 401, {"error": "invalid_client",
                         "error_description": "Client Authentication failed"}
        if form.get("grant_type") != ["client_credentials"]:
            return 400, {"error": "unsupported_grant_type",
                         "error_description": "Grant Type is NULL"}
        token = f"A21AA{secrets.token_urlsafe(24)}"
        with self._lock:
            self.token_requests += 1
            self._tokens.add(token)
        return 200, {"scope": "https://uri.paypal.com/payments/payouts",
                     "access_token": token, "token_type": "Bearer",
                     "app_id": "APP-FAKE", "expires_in": self.token_lifetime,
                     "nonce": f"{_now()}{secrets.token_hex(8)}"}

    def _check_bearer(self, authorization: str) -> tuple[int, dict] | None:
        if not authorization.startswith("Bearer "):
            return 401, {"name": "AUTHENTICATION_FAILURE",
                         "message": "Authentication failed due to invalid authentication "
                                    "credentials or a missing Authorization header.",
                         "links": []}
        with self._lock:
            known = authorization[len("Bearer "):] in self._tokens
        if not known:
            return 401, {"error": "invalid_token",
                         "error_description": "Token signature verification failed"}
        return None

    def _create_payout(self, body: object, request_id: str | None) -> tuple[int, dict]:
        with self._lock:
            if request_id and request_id in self._replies:
                status, reply = self._replies[request_id]
                return status, copy.deepcopy(reply)
        problems = _payout_problems(body)
        if problems:
            return _validation_error(problems)

        sender_batch_id = body["sender_batch_header"].get("sender_batch_id")
        with self._lock:
            if sender_batch_id and sender_batch_id in self._sender_batch_ids:
                return 400, _error(
                    "USER_BUSINESS_ERROR", "User business error.",
                    [{"field": "sender_batch_id", "location": "body",
                      "issue": "SENDER_BATCH_ID_ALREADY_USED",
                      "description": "Batch with given sender_batch_id already exists"}])
            batch_id = secrets.token_hex(7).upper()
            self._batches[batch_id] = {
                "status": "PENDING", "request": copy.deepcopy(body), "request_id": request_id,
                "time_created": _now(), "time_completed": None,
                "item_id": secrets.token_hex(7).upper(),
            }
            if sender_batch_id:
                self._sender_batch_ids[sender_batch_id] = batch_id
            reply = {"batch_header": {"payout_batch_id": batch_id, "batch_status": "PENDING",
                                      "sender_batch_header": body["sender_batch_header"]},
                     "links": [{"href": f"{self.url}/v1/payments/payouts/{batch_id}",
                                "rel": "self", "method": "GET",
                                "encType": "application/json"}]}
            if request_id:
                self._replies[request_id] = (201, copy.deepcopy(reply))
        return 201, reply

    def _show_payout(self, batch_id: str) -> tuple[int, dict]:
        with self._lock:
            batch = copy.deepcopy(self._batches.get(batch_id))
        if batch is None:
            return 404, _error("RESOURCE_NOT_FOUND", "The specified resource does not exist.",
                               [{"issue": "INVALID_RESOURCE_ID", "location": "path",
                                 "field": "payout_batch_id",
                                 "description": "Requested resource ID was not found."}])
        request = batch["request"]
        item = request["items"][0]
        header = {"payout_batch_id": batch_id, "batch_status": batch["status"],
                  "time_created": batch["time_created"],
                  "sender_batch_header": request["sender_batch_header"],
                  "amount": dict(item["amount"]),
                  "fees": {"currency": item["amount"]["currency"], "value": "0.00"}}
        if batch["time_completed"]:
            header["time_completed"] = batch["time_completed"]
        entry = {"payout_item_id": batch["item_id"],
                 "transaction_status": ITEM_STATUSES[batch["status"]],
                 "payout_batch_id": batch_id, "payout_item": item}
        if batch["status"] == "DENIED":
            entry["errors"] = {"name": "RECEIVER_UNREGISTERED",
                               "message": "Receiver is unregistered"}
        return 200, {"batch_header": header, "items": [entry],
                     "links": [{"href": f"{self.url}/v1/payments/payouts/{batch_id}",
                                "rel": "self", "method": "GET"}]}

    def _verify_signature(self, body: object) -> tuple[int, dict]:
        if not isinstance(body, dict):
            return _validation_error([("", "MALFORMED_REQUEST_JSON")])
        missing = [(field, "MISSING_REQUIRED_PARAMETER") for field in VERIFY_FIELDS
                   if body.get(field) in (None, "")]
        if missing:
            return _validation_error(missing)
        with self._lock:
            issued = self._signatures.get(str(body["transmission_id"]))
        expected = self._sign(str(body["transmission_id"]), str(body["transmission_time"]),
                              str(body["webhook_id"]), body["webhook_event"])
        sent = str(body["transmission_sig"])
        verified = (issued is not None and hmac.compare_digest(sent, issued)
                    and hmac.compare_digest(sent, expected))
        return 200, {"verification_status": "SUCCESS" if verified else "FAILURE"}


def _error(name: str, message: str, details: list[dict] | None = None) -> dict:
    body = {"name": name, "message": message, "debug_id": secrets.token_hex(6)}
    if details:
        body["details"] = details
    return body


def _validation_error(problems: list[tuple[str, str]]) -> tuple[int, dict]:
    details = [{"field": field, "location": "body", "issue": issue,
                "description": f"{field or 'body'}: {issue}"} for field, issue in problems]
    return 400, _error("VALIDATION_ERROR", "Invalid request - see details", details)


def _payout_problems(body: object) -> list[tuple[str, str]]:
    """Return ``(field, issue)`` pairs for a create-payout body that PayPal would reject."""
    if not isinstance(body, dict):
        return [("", "MALFORMED_REQUEST_JSON")]
    problems = []
    if not isinstance(body.get("sender_batch_header"), dict):
        problems.append(("sender_batch_header", "MISSING_REQUIRED_PARAMETER"))
    items = body.get("items")
    if not isinstance(items, list) or not items:
        problems.append(("items", "MISSING_REQUIRED_PARAMETER"))
        return problems
    for index, item in enumerate(items):
        prefix = f"items[{index}]"
        if not isinstance(item, dict):
            problems.append((prefix, "INVALID_PARAMETER_SYNTAX"))
            continue
        if item.get("recipient_type") not in RECIPIENT_TYPES:
            problems.append((f"{prefix}.recipient_type", "INVALID_PARAMETER_VALUE"))
        if not isinstance(item.get("receiver"), str) or not item["receiver"]:
            problems.append((f"{prefix}.receiver", "MISSING_REQUIRED_PARAMETER"))
        amount = item.get("amount")
        if not isinstance(amount, dict):
            problems.append((f"{prefix}.amount", "MISSING_REQUIRED_PARAMETER"))
            continue
        value = amount.get("value")
        if not isinstance(value, str) or not AMOUNT_VALUE.match(value):
            problems.append((f"{prefix}.amount.value", "INVALID_PARAMETER_SYNTAX"))
        elif Decimal(value) <= 0:
            problems.append((f"{prefix}.amount.value", "INVALID_PARAMETER_VALUE"))
        currency = amount.get("currency")
        if not isinstance(currency, str) or not re.fullmatch(r"[A-Z]{3}", currency):
            problems.append((f"{prefix}.amount.currency", "INVALID_PARAMETER_SYNTAX"))
    return problems


class _Handler(BaseHTTPRequestHandler):
    server_version = "FakePayPal/1.0"

    def do_GET(self):
        self._dispatch()

    def do_POST(self):
        self._dispatch()

    def _dispatch(self):
        fake: FakePayPal = self.server.fake
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        path = self.path.split("?", 1)[0]
        with fake._lock:
            fake.requests.append((self.command, path))

        failure = fake._take_failure()
        if failure is not None:
            name, message = ERROR_TEXT.get(failure, ("INTERNAL_SERVER_ERROR", "Server error."))
            self._reply(failure, _error(name, message))
            return

        authorization = self.headers.get("Authorization", "")
        if self.command == "POST" and path == "/v1/oauth2/token":
            form = parse_qs(raw.decode("utf-8", "replace"))
            self._reply(*fake._issue_token(authorization, form))
            return

        known = (path in ("/v1/payments/payouts", "/v1/notifications/verify-webhook-signature")
                 and self.command == "POST") or (self.command == "GET"
                                                 and PAYOUT_PATH.match(path))
        if not known:
            self._reply(404, _error("NOT_FOUND", "The requested resource was not found."))
            return
        refused = fake._check_bearer(authorization)
        if refused is not None:
            self._reply(*refused)
            return

        if self.command == "GET":
            self._reply(*fake._show_payout(PAYOUT_PATH.match(path).group(1)))
            return
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            self._reply(*_validation_error([("", "MALFORMED_REQUEST_JSON")]))
            return
        if path == "/v1/payments/payouts":
            self._reply(*fake._create_payout(body, self.headers.get("PayPal-Request-Id")))
        else:
            self._reply(*fake._verify_signature(body))

    def _reply(self, status: int, body: dict):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Paypal-Debug-Id", str(body.get("debug_id") or secrets.token_hex(6)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass
