"""A local fake of the parts of the Stripe API that the provider calls, for tests.

:class:`FakeStripe` is an HTTP server on 127.0.0.1 that speaks Stripe's wire
format: form-encoded bodies with bracket notation (``metadata[plan]=pro``),
Bearer authentication with a secret key, ``Idempotency-Key`` replay, JSON
objects with amounts in cents and Stripe's error envelope. Point the provider
at it with ``api_base=fake.url``::

    with FakeStripe() as fake:
        provider = StripeProvider(api_key=fake.api_key, webhook_secret="whsec_x",
                                  api_base=fake.url)
        ...
        body, headers = fake.webhook("invoice.paid", invoice_id, "whsec_x")

State lives in memory and is inspected through :attr:`FakeStripe.objects`
(``fake.objects["invoice"]["in_…"]``) and :attr:`FakeStripe.requests`.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import hashlib
import hmac
import itertools
import json
import re
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

DEFAULT_API_KEY = "sk_test_fkod_fake"
API_VERSION = "2026-10-28.endive"
CONNECT_ACCOUNT = re.compile(r"^acct_[A-Za-z0-9]+$")
REFUND_REASONS = ("duplicate", "fraudulent", "requested_by_customer")
# Object type -> id prefix, as Stripe names them.
PREFIXES = {
    "customer": "cus", "setup_intent": "seti", "invoice": "in", "invoiceitem": "ii",
    "invoice_payment": "inpay", "payment_intent": "pi", "charge": "ch", "refund": "re",
    "transfer": "tr", "dispute": "dp", "event": "evt",
}
# URL collection -> object type, for the generic retrieve route.
COLLECTIONS = {
    "customers": "customer", "setup_intents": "setup_intent", "invoices": "invoice",
    "invoiceitems": "invoiceitem", "invoice_payments": "invoice_payment",
    "payment_intents": "payment_intent", "charges": "charge", "refunds": "refund",
    "transfers": "transfer", "disputes": "dispute",
}


class StripeFailure(Exception):
    """An error response in Stripe's envelope."""

    def __init__(self, status: int, type_: str, message: str, *, code: str | None = None,
                 param: str | None = None, **extra):
        super().__init__(message)
        self.status = status
        self.body = {"error": {"type": type_, "code": code, "message": message,
                               "param": param, **extra}}
        self.headers: dict[str, str] = {}


def missing(kind: str, object_id: str, param: str | None = None) -> StripeFailure:
    return StripeFailure(404, "invalid_request_error", f"No such {kind}: '{object_id}'",
                         code="resource_missing", param=param)


def invalid(message: str, *, param: str | None = None, code: str | None = None) -> StripeFailure:
    return StripeFailure(400, "invalid_request_error", message, param=param, code=code)


def parse_form(pairs: list[tuple[str, str]]) -> dict:
    """Turn Stripe's bracket notation (``a[b][0]=x``) into nested dicts and lists."""
    root: dict = {}
    for name, value in pairs:
        parts = re.findall(r"[^\[\]]+|\[\]", name)
        if not parts:
            continue
        node = root
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            if last:
                if part == "[]":
                    node.setdefault("__list__", []).append(value)
                else:
                    node[part] = value
            else:
                node = node.setdefault(part, {})
    return _lists(root)


def _lists(node):
    """Turn dicts keyed 0, 1, 2… (from ``expand[0]``) into lists."""
    if not isinstance(node, dict):
        return node
    if set(node) == {"__list__"}:
        return node["__list__"]
    node = {key: _lists(value) for key, value in node.items()}
    if node and all(key.isdigit() for key in node):
        return [node[key] for key in sorted(node, key=int)]
    return node


def _int(params: dict, name: str, *, required: bool = True, minimum: int = 1) -> int | None:
    value = params.get(name)
    if value is None:
        if required:
            raise invalid(f"Missing required param: {name}.", param=name,
                          code="parameter_missing")
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise invalid(f"Invalid integer: {value}", param=name) from None
    if number < minimum:
        raise invalid(f"This value must be greater than or equal to {minimum}.", param=name)
    return number


def _bool(value, default: bool) -> bool:
    if value is None:
        return default
    return str(value).lower() == "true"


def _metadata(params: dict) -> dict:
    value = params.get("metadata") or {}
    if not isinstance(value, dict):
        raise invalid("Invalid object", param="metadata")
    return {str(key): str(item) for key, item in value.items()}


def _currency(params: dict) -> str:
    currency = str(params.get("currency") or "").lower()
    if not currency:
        raise invalid("Missing required param: currency.", param="currency",
                      code="parameter_missing")
    if currency != "usd":
        raise invalid(f"Invalid currency: {currency}. This fake supports usd only.",
                      param="currency")
    return currency


@dataclasses.dataclass(frozen=True)
class RecordedRequest:
    """A request the fake served; ``replayed`` is true when it was an idempotent replay."""

    method: str
    path: str
    params: dict
    idempotency_key: str | None
    status: int
    replayed: bool = False


class FakeStripe:
    """An in-memory Stripe API on 127.0.0.1 for tests; see the module docstring.

    ``api_key`` is the only secret key it accepts (a ``sk_live_`` key makes
    its objects live-mode). Use it as a context manager or call
    :meth:`start` and :meth:`stop`.
    """

    def __init__(self, api_key: str = DEFAULT_API_KEY):
        self.api_key = api_key
        self.livemode = api_key.startswith(("sk_live_", "rk_live_"))
        #: Object type (``"invoice"``, ``"charge"``…) -> id -> the object as JSON data.
        self.objects: dict[str, dict[str, dict]] = {kind: {} for kind in PREFIXES}
        self.requests: list[RecordedRequest] = []
        #: The status new refunds get: ``succeeded``, ``pending`` or ``failed``.
        self.refund_status = "succeeded"
        self._declines: dict[str, tuple[str, str, str]] = {}
        self._failures: list[tuple[int, bool]] = []
        self._idempotent: dict[str, tuple[str, str, dict, int, dict]] = {}
        self._lock = threading.RLock()
        self._counter = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # Life cycle.

    def start(self) -> FakeStripe:
        """Start serving on a free port of 127.0.0.1 in a daemon thread."""
        if self._server is None:
            self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
            self._server.daemon_threads = True
            self._thread = threading.Thread(target=self._server.serve_forever,
                                            name="fake-stripe", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
            self._thread = None

    def __enter__(self) -> FakeStripe:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The base address (``http://127.0.0.1:PORT``) to use as ``fkod_stripe.api_base``."""
        if self._server is None:
            raise RuntimeError("FakeStripe is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # Test controls.

    def decline_customer(self, customer_id: str, *, code: str = "card_declined",
                         decline_code: str = "generic_decline",
                         message: str = "Your card was declined.") -> None:
        """Make every later payment of ``customer_id`` fail as a declined card (402)."""
        with self._lock:
            self._declines[customer_id] = (code, decline_code, message)

    def accept_customer(self, customer_id: str) -> None:
        """Let ``customer_id``'s payments succeed again."""
        with self._lock:
            self._declines.pop(customer_id, None)

    def fail_next(self, count: int = 1, *, status: int = 500, should_retry: bool = True) -> None:
        """Fail the next ``count`` requests with an ``api_error`` of ``status``.

        With ``should_retry`` false the response carries ``Stripe-Should-Retry:
        false``, so the stripe library does not retry it.
        """
        with self._lock:
            self._failures.extend([(status, should_retry)] * count)

    def count(self, method: str, path: str) -> int:
        """Return how many requests with ``method`` went to ``path``, replays included."""
        return sum(1 for item in self.requests if item.method == method and item.path == path)

    def charge_of(self, invoice_id: str) -> dict:
        """Return the succeeded charge that paid ``invoice_id``."""
        with self._lock:
            for payment in self.objects["invoice_payment"].values():
                if payment["invoice"] == invoice_id and payment["status"] == "paid":
                    intent = self.objects["payment_intent"][payment["payment"]["payment_intent"]]
                    return copy.deepcopy(self.objects["charge"][intent["latest_charge"]])
        raise KeyError(f"invoice {invoice_id} has no paid charge")

    def dispute(self, charge_id: str, *, amount: int | None = None,
                reason: str = "fraudulent") -> dict:
        """Open a dispute on ``charge_id`` for ``amount`` cents (all by default) and return it."""
        with self._lock:
            charge = self.objects["charge"][charge_id]
            charge["disputed"] = True
            return copy.deepcopy(self._create("dispute", {
                "amount": charge["amount"] if amount is None else amount,
                "currency": charge["currency"], "charge": charge_id,
                "payment_intent": charge["payment_intent"], "reason": reason,
                "status": "needs_response", "metadata": {},
            }))

    def reverse_transfer(self, transfer_id: str) -> dict:
        """Reverse ``transfer_id`` in full and return it, for a ``transfer.reversed`` event."""
        with self._lock:
            transfer = self.objects["transfer"][transfer_id]
            transfer["reversed"] = True
            transfer["amount_reversed"] = transfer["amount"]
            return copy.deepcopy(transfer)

    def webhook(self, event_type: str, obj: dict | str, secret: str, *,
                created: int | dt.datetime | None = None,
                event_id: str | None = None) -> tuple[bytes, dict[str, str]]:
        """Build a signed delivery of an event, as Stripe posts it to a webhook endpoint.

        ``obj`` is the event's object: JSON data, or the id of an object the
        fake holds. ``created`` (seconds or an aware datetime) is the event's
        time, now by default; the signature is always made now. Returns the
        body bytes and the headers, ``Stripe-Signature`` included.
        """
        if isinstance(obj, str):
            obj = self._find(obj)
        if created is None:
            created = int(time.time())
        elif isinstance(created, dt.datetime):
            created = int(created.timestamp())
        event = {
            "id": event_id or self._new_id("event"), "object": "event",
            "api_version": API_VERSION, "created": int(created), "livemode": self.livemode,
            "type": event_type, "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "data": {"object": copy.deepcopy(obj)},
        }
        body = json.dumps(event).encode()
        return body, {"Content-Type": "application/json; charset=utf-8",
                      "Stripe-Signature": sign(body, secret)}

    # Request handling.

    def handle(self, method: str, target: str, headers, body: bytes
               ) -> tuple[int, dict, dict[str, str]]:
        """Handle one request and return the status, the JSON body and extra headers."""
        split = urlsplit(target)
        path = split.path
        pairs = parse_qsl(split.query if method in ("GET", "DELETE")
                          else body.decode("utf-8", "replace"), keep_blank_values=True)
        params = parse_form(pairs)
        key = headers.get("Idempotency-Key")
        with self._lock:
            status, payload, extra, replayed = self._answer(method, path, params, key, headers)
            self.requests.append(RecordedRequest(method, path, params, key, status, replayed))
        return status, payload, extra

    def _answer(self, method, path, params, key, headers):
        if not self._authorized(headers.get("Authorization", "")):
            given = headers.get("Authorization", "").removeprefix("Bearer ")
            failure = StripeFailure(
                401, "invalid_request_error",
                f"Invalid API Key provided: {given[:8]}****" if given
                else "You did not provide an API key.")
            return failure.status, failure.body, {}, False
        if self._failures:
            status, should_retry = self._failures.pop(0)
            failure = StripeFailure(status, "api_error", "The fake server failed on purpose.")
            extra = {} if should_retry else {"Stripe-Should-Retry": "false"}
            return status, failure.body, extra, False
        if key and method == "POST":
            stored = self._idempotent.get(key)
            if stored is not None:
                stored_method, stored_path, stored_params, status, payload = stored
                if (stored_method, stored_path, stored_params) != (method, path, params):
                    failure = StripeFailure(
                        400, "idempotency_error",
                        f"The idempotency key {key!r} was first used with other parameters "
                        "or another endpoint; a key must be sent with the same request only.")
                    return failure.status, failure.body, {}, False
                return status, copy.deepcopy(payload), {"Idempotent-Replayed": "true"}, True
        try:
            status, payload = 200, self._route(method, path, params)
            extra = {}
        except StripeFailure as failure:
            status, payload, extra = failure.status, failure.body, failure.headers
        if key and method == "POST" and status < 500:
            self._idempotent[key] = (method, path, params, status, copy.deepcopy(payload))
        if key:
            extra = {**extra, "Idempotency-Key": key}
        return status, payload, extra, False

    def _authorized(self, header: str) -> bool:
        scheme, _, token = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip(), self.api_key)

    def _route(self, method: str, path: str, params: dict) -> dict:
        parts = path.strip("/").split("/")
        if len(parts) < 2 or parts[0] != "v1":
            raise invalid(f"Unrecognized request URL ({method}: {path}).")
        collection, rest = parts[1], parts[2:]
        if method == "POST" and not rest:
            create = getattr(self, f"_create_{collection}", None)
            if create is not None:
                return create(params)
        if method == "POST" and collection == "invoices" and len(rest) == 2:
            action = getattr(self, f"_invoice_{rest[1]}", None)
            if action is not None:
                return action(self._get("invoice", rest[0]), params)
        if method == "GET" and collection == "invoice_payments" and not rest:
            return self._list_invoice_payments(params)
        if method == "GET" and collection in COLLECTIONS and len(rest) == 1:
            found = self._get(COLLECTIONS[collection], rest[0])
            if collection == "invoices":
                return self._render_invoice(found, params.get("expand") or [])
            return found
        raise invalid(f"Unrecognized request URL ({method}: {path}).")

    # Objects.

    def _new_id(self, kind: str) -> str:
        return f"{PREFIXES[kind]}_{secrets.token_hex(4)}{next(self._counter):06d}"

    def _create(self, kind: str, fields: dict) -> dict:
        obj = {"id": self._new_id(kind), "object": kind, "livemode": self.livemode,
               "created": int(time.time()), **fields}
        self.objects[kind][obj["id"]] = obj
        return obj

    def _get(self, kind: str, object_id: str, param: str | None = None) -> dict:
        found = self.objects[kind].get(object_id)
        if found is None:
            raise missing(kind.replace("_", " "), object_id, param)
        return found

    def _find(self, object_id: str) -> dict:
        for table in self.objects.values():
            if object_id in table:
                return table[object_id]
        raise KeyError(object_id)

    def _create_customers(self, params: dict) -> dict:
        return self._create("customer", {
            "email": params.get("email"), "name": params.get("name"),
            "metadata": _metadata(params), "invoice_settings": {"default_payment_method": None},
        })

    def _create_setup_intents(self, params: dict) -> dict:
        customer = params.get("customer")
        if customer:
            self._get("customer", customer, "customer")
        intent = self._create("setup_intent", {
            "customer": customer, "usage": params.get("usage", "off_session"),
            "status": "requires_payment_method", "payment_method": None,
            "metadata": _metadata(params),
        })
        intent["client_secret"] = f"{intent['id']}_secret_{secrets.token_hex(8)}"
        return intent

    def _create_invoices(self, params: dict) -> dict:
        customer = params.get("customer")
        if not customer:
            raise invalid("Missing required param: customer.", param="customer",
                          code="parameter_missing")
        self._get("customer", customer, "customer")
        method = params.get("collection_method", "charge_automatically")
        if method not in ("charge_automatically", "send_invoice"):
            raise invalid(f"Invalid collection_method: {method}", param="collection_method")
        days = _int(params, "days_until_due", required=False)
        if method == "send_invoice" and days is None and not params.get("due_date"):
            raise invalid("Invoices sent to the customer need days_until_due or due_date.",
                          param="days_until_due")
        if method == "charge_automatically" and days is not None:
            raise invalid("days_until_due is for send_invoice invoices only.",
                          param="days_until_due")
        return self._create("invoice", {
            "customer": customer, "currency": _currency(params) if params.get("currency")
            else "usd", "collection_method": method, "days_until_due": days,
            "description": params.get("description"), "metadata": _metadata(params),
            "auto_advance": _bool(params.get("auto_advance"), True), "status": "draft",
            "number": None, "due_date": None, "amount_due": 0, "amount_paid": 0,
            "amount_remaining": 0, "total": 0, "subtotal": 0, "attempt_count": 0,
            "attempted": False, "hosted_invoice_url": None,
            "lines": {"object": "list", "data": [], "has_more": False, "url": ""},
            "status_transitions": {"finalized_at": None, "paid_at": None,
                                   "voided_at": None, "marked_uncollectible_at": None},
        })

    def _create_invoiceitems(self, params: dict) -> dict:
        customer = params.get("customer")
        if not customer:
            raise invalid("Missing required param: customer.", param="customer",
                          code="parameter_missing")
        self._get("customer", customer, "customer")
        amount = _int(params, "amount", minimum=-99999999)
        currency = _currency(params)
        invoice_id = params.get("invoice")
        invoice = None
        if invoice_id:
            invoice = self._get("invoice", invoice_id, "invoice")
            if invoice["status"] != "draft":
                raise invalid(f"Invoice {invoice_id} is no longer a draft, so no item can be "
                              "added to it.", param="invoice", code="invoice_not_editable")
            if invoice["customer"] != customer:
                raise invalid("The invoice belongs to another customer.", param="invoice")
            if invoice["currency"] != currency:
                raise invalid("The item's currency differs from the invoice's.",
                              param="currency")
        item = self._create("invoiceitem", {
            "customer": customer, "amount": amount, "currency": currency,
            "description": params.get("description"), "invoice": invoice_id,
            "metadata": _metadata(params),
        })
        if invoice is not None:
            invoice["lines"]["data"].append({
                "id": f"il_{item['id']}", "object": "line_item", "amount": amount,
                "currency": currency, "description": item["description"],
                "invoice": invoice_id, "livemode": self.livemode, "metadata": {},
            })
            for field in ("amount_due", "amount_remaining", "total", "subtotal"):
                invoice[field] += amount
        return item

    def _invoice_finalize(self, invoice: dict, params: dict) -> dict:
        if invoice["status"] != "draft":
            raise invalid(f"Invoice {invoice['id']} is already finalized.",
                          code="invoice_not_editable")
        now = int(time.time())
        invoice["status"] = "open"
        invoice["number"] = f"FKOD-{len(self.objects['invoice']):04d}"
        invoice["status_transitions"]["finalized_at"] = now
        invoice["hosted_invoice_url"] = f"{self.url}/invoices/{invoice['id']}"
        if "auto_advance" in params:
            invoice["auto_advance"] = _bool(params["auto_advance"], True)
        if invoice["days_until_due"]:
            invoice["due_date"] = now + invoice["days_until_due"] * 86400

        if invoice["amount_due"] <= 0:
            invoice["status"] = "paid"
            invoice["status_transitions"]["paid_at"] = now
            return self._render_invoice(invoice, [])

        # Finalizing creates the payment intent that paying the invoice confirms.
        intent = self._create("payment_intent", {
            "amount": invoice["amount_due"], "currency": invoice["currency"],
            "customer": invoice["customer"], "status": "requires_payment_method",
            "latest_charge": None, "last_payment_error": None, "metadata": {},
            "description": f"Invoice {invoice['number']}",
        })
        self._create("invoice_payment", {
            "invoice": invoice["id"], "amount_requested": invoice["amount_due"],
            "amount_paid": None, "currency": invoice["currency"], "is_default": True,
            "status": "open", "payment": {"type": "payment_intent",
                                          "payment_intent": intent["id"]},
            "status_transitions": {"canceled_at": None, "paid_at": None},
        })
        return self._render_invoice(invoice, [])

    def _invoice_send(self, invoice: dict, params: dict) -> dict:
        if invoice["status"] != "open" or invoice["collection_method"] != "send_invoice":
            raise invalid("Only open invoices with collection_method send_invoice can be sent.")
        return self._render_invoice(invoice, [])

    def _invoice_pay(self, invoice: dict, params: dict) -> dict:
        if invoice["status"] == "paid":
            raise invalid(f"Invoice {invoice['id']} is already paid.")
        if invoice["status"] != "open":
            raise invalid(f"Invoice {invoice['id']} is {invoice['status']}; only an open "
                          "invoice can be paid.")
        payment = next(item for item in self.objects["invoice_payment"].values()
                       if item["invoice"] == invoice["id"] and item["status"] == "open")
        intent = self.objects["payment_intent"][payment["payment"]["payment_intent"]]
        decline = self._declines.get(invoice["customer"])
        now = int(time.time())

        charge = self._create("charge", {
            "amount": intent["amount"], "amount_captured": 0, "amount_refunded": 0,
            "currency": intent["currency"], "customer": invoice["customer"],
            "payment_intent": intent["id"], "paid": decline is None,
            "captured": decline is None, "refunded": False, "disputed": False,
            "status": "failed" if decline else "succeeded",
            "failure_code": decline[0] if decline else None,
            "failure_message": decline[2] if decline else None,
            "description": intent["description"], "metadata": {},
        })
        intent["latest_charge"] = charge["id"]
        invoice["attempt_count"] += 1
        invoice["attempted"] = True

        if decline is not None:
            code, decline_code, message = decline
            intent["status"] = "requires_payment_method"
            intent["last_payment_error"] = {"type": "card_error", "code": code,
                                            "decline_code": decline_code, "message": message,
                                            "charge": charge["id"]}
            raise StripeFailure(402, "card_error", message, code=code,
                                decline_code=decline_code, charge=charge["id"])

        charge["amount_captured"] = charge["amount"]
        intent["status"] = "succeeded"
        payment["status"] = "paid"
        payment["amount_paid"] = intent["amount"]
        payment["status_transitions"]["paid_at"] = now
        invoice["status"] = "paid"
        invoice["amount_paid"] = invoice["amount_due"]
        invoice["amount_remaining"] = 0
        invoice["status_transitions"]["paid_at"] = now
        return self._render_invoice(invoice, [])

    def _render_invoice(self, invoice: dict, expand: list) -> dict:
        shown = copy.deepcopy(invoice)
        if "payments" in expand:
            data = [copy.deepcopy(item) for item in self.objects["invoice_payment"].values()
                    if item["invoice"] == invoice["id"]]
            shown["payments"] = {"object": "list", "data": data, "has_more": False,
                                 "url": f"/v1/invoices/{invoice['id']}/payments"}
        return shown

    def _list_invoice_payments(self, params: dict) -> dict:
        expected = params.get("payment") or {}
        found = []
        for item in self.objects["invoice_payment"].values():
            if params.get("invoice") and item["invoice"] != params["invoice"]:
                continue
            if expected.get("type") and item["payment"]["type"] != expected["type"]:
                continue
            if (expected.get("payment_intent")
                    and item["payment"].get("payment_intent") != expected["payment_intent"]):
                continue
            found.append(copy.deepcopy(item))
        limit = _int(params, "limit", required=False) or 10
        return {"object": "list", "data": found[:limit], "has_more": len(found) > limit,
                "url": "/v1/invoice_payments"}

    def _create_refunds(self, params: dict) -> dict:
        if params.get("charge"):
            charge = self._get("charge", params["charge"], "charge")
        elif params.get("payment_intent"):
            intent = self._get("payment_intent", params["payment_intent"], "payment_intent")
            if intent["status"] != "succeeded" or not intent["latest_charge"]:
                raise invalid(f"PaymentIntent {intent['id']} has no succeeded charge to refund.",
                              param="payment_intent")
            charge = self.objects["charge"][intent["latest_charge"]]
        else:
            raise invalid("One of charge or payment_intent is required.",
                          code="parameter_missing")

        if charge["status"] != "succeeded":
            raise invalid(f"Charge {charge['id']} did not succeed, so it cannot be refunded.")
        left = charge["amount"] - charge["amount_refunded"]
        if left <= 0:
            raise invalid(f"Charge {charge['id']} has already been refunded.",
                          code="charge_already_refunded")
        amount = _int(params, "amount", required=False)
        amount = left if amount is None else amount
        if amount > left:
            raise invalid(f"Refund amount ({amount}) is more than what is left to refund on "
                          f"the charge ({left}).", param="amount", code="amount_too_large")

        reason = params.get("reason")
        if reason is not None and reason not in REFUND_REASONS:
            raise invalid(f"Invalid reason: must be one of {', '.join(REFUND_REASONS)}",
                          param="reason")

        status = self.refund_status
        refund = self._create("refund", {
            "amount": amount, "currency": charge["currency"], "charge": charge["id"],
            "payment_intent": charge["payment_intent"], "reason": reason, "status": status,
            "failure_reason": "declined" if status == "failed" else None,
            "metadata": _metadata(params),
        })
        if status != "failed":
            charge["amount_refunded"] += amount
            charge["refunded"] = charge["amount_refunded"] == charge["amount"]
        return refund

    def _create_transfers(self, params: dict) -> dict:
        amount = _int(params, "amount")
        currency = _currency(params)
        destination = str(params.get("destination") or "")
        if not CONNECT_ACCOUNT.match(destination):
            raise missing("destination", destination, "destination")
        return self._create("transfer", {
            "amount": amount, "amount_reversed": 0, "currency": currency,
            "destination": destination, "description": params.get("description"),
            "metadata": _metadata(params), "reversed": False, "reversals": {
                "object": "list", "data": [], "has_more": False, "url": ""},
            "transfer_group": params.get("transfer_group"),
        })


def sign(body: bytes, secret: str, timestamp: int | None = None) -> str:
    """Return a ``Stripe-Signature`` header value for ``body``: ``t=…,v1=…``."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def _handler(fake: FakeStripe) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "FakeStripe/1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            status, payload, extra = fake.handle(self.command, self.path, self.headers, body)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Request-Id", f"req_{secrets.token_hex(7)}")
            self.send_header("Stripe-Version", API_VERSION)
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            self._serve()

        def do_DELETE(self) -> None:
            self._serve()

        def log_message(self, format, *args):
            pass

    return Handler
