"""The Stripe implementation of :class:`fkod.core.billing.providers.PaymentProvider`.

A charge is a Stripe invoice with one invoice item: the invoice is created,
finalized and, for ``charge_automatically``, paid at once, and its id
(``in_…``) is the ``provider_id`` of the charge. A refund refunds the payment
of that invoice. A payout is a Stripe Connect transfer to the partner's
connected account (``acct_…``). Every call that moves money sends an
idempotency key derived from the caller's key, so a retry bills, refunds or
pays out once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import Mapping
from decimal import Decimal

import stripe

from fkod.core.billing.providers import (
    COLLECTION_METHODS,
    BillingUpdate,
    ChargeRequest,
    CustomerDetails,
    PaymentMethodSetup,
    PaymentProvider,
    PaymentProviderError,
    PaymentResult,
    PayoutRequest,
    ProviderCustomer,
    ProviderEvent,
    WebhookSignatureError,
)

log = logging.getLogger(__name__)

DEFAULT_API_BASE = "https://api.stripe.com"
# Stripe's own default: a signature older than five minutes is refused, which
# limits replays of a captured request.
WEBHOOK_TOLERANCE_SECONDS = 300
SIGNATURE_HEADER = "stripe-signature"
# A real Stripe-Signature header is about 150 bytes, or a few hundred during a
# secret rotation. Longer headers are rejected before they are parsed.
MAX_SIGNATURE_HEADER = 2048
SIGNATURE_INVALID = (
    "The Stripe-Signature header is missing or malformed, does not match the body, or its "
    f"timestamp is more than {WEBHOOK_TOLERANCE_SECONDS} seconds from now.")
# Calls that carry an idempotency key are safe to retry on a network error or a 5xx.
MAX_NETWORK_RETRIES = 2
CONNECT_ACCOUNT = re.compile(r"^acct_[A-Za-z0-9]+$")
CENT = Decimal("0.01")
# The refund reasons Stripe accepts. Other reasons go to the refund's metadata only.
REFUND_REASONS = ("duplicate", "fraudulent", "requested_by_customer")
INVOICE_STATUSES = {"paid": "succeeded", "open": "pending", "draft": "pending",
                    "void": "failed", "uncollectible": "failed"}
REFUND_STATUSES = {"succeeded": "succeeded", "pending": "pending",
                   "requires_action": "pending", "failed": "failed", "canceled": "failed"}


class StripeProvider(PaymentProvider):
    """Customers, payment methods, invoices, refunds, transfers and webhooks through Stripe.

    The client is created on first use, so a provider without an API key
    still registers and verifies webhooks.
    """

    name = "stripe"
    display_name = "Stripe"
    currencies = ("USD",)
    payout_method = "stripe"

    def __init__(self, *, api_key: str, webhook_secret: str, api_base: str = DEFAULT_API_BASE):
        self._api_key = api_key
        self._webhook_secret = webhook_secret
        self._api_base = api_base.rstrip("/")
        self._client: stripe.StripeClient | None = None

    @property
    def livemode(self) -> bool:
        return self._api_key.startswith(("sk_live_", "rk_live_"))

    def _stripe(self, livemode: bool) -> stripe.StripeClient:
        if not self._api_key:
            raise PaymentProviderError(
                "Stripe is not configured: set fkod_stripe.api_key or FKOD_STRIPE_API_KEY.")
        if livemode != self.livemode:
            wanted = "live" if livemode else "test"
            raise PaymentProviderError(
                f"The configured Stripe key is not a {wanted}-mode key, so a {wanted}-mode "
                "record cannot be created with it.")
        if self._client is None:
            self._client = stripe.StripeClient(
                self._api_key, base_addresses={"api": self._api_base},
                max_network_retries=MAX_NETWORK_RETRIES)
        return self._client

    def create_customer(self, customer: CustomerDetails) -> ProviderCustomer:
        client = self._stripe(customer.livemode)
        try:
            created = client.v1.customers.create(
                params={"email": customer.email, "name": customer.name,
                        "metadata": {"fkod_reference": customer.reference}},
                # Stripe keeps an idempotency key for 24 hours, so a retried
                # sign-up within that time returns the same customer.
                options={"idempotency_key": f"fkod-customer-{customer.reference}"},
            )
        except stripe.StripeError as exc:
            raise _provider_error("creating the Stripe customer", exc) from exc
        log.info("stripe customer created", extra={"reference": customer.reference})
        return ProviderCustomer(provider_customer_id=created.id,
                                livemode=bool(getattr(created, "livemode", customer.livemode)))

    def set_up_payment_method(self, provider_customer_id: str, *,
                              return_url: str) -> PaymentMethodSetup:
        # A SetupIntent is confirmed in the browser by Stripe.js, so the
        # return URL is for Stripe.js and not sent here.
        client = self._stripe(self.livemode)
        try:
            intent = client.v1.setup_intents.create(
                params={"customer": provider_customer_id, "usage": "off_session"})
        except stripe.StripeError as exc:
            raise _provider_error("starting the payment-method set-up", exc) from exc
        return PaymentMethodSetup(setup_id=intent.id, client_secret=intent.client_secret)

    def check_payout_destination(self, destination: str) -> str | None:
        if CONNECT_ACCOUNT.match(destination.strip()):
            return None
        return ("must be the id of a Stripe Connect account: acct_ followed by letters and "
                "digits")

    def charge(self, request: ChargeRequest) -> PaymentResult:
        cents = _cents(request.amount, request.currency, "charge")
        if request.collection not in COLLECTION_METHODS:
            methods = ", ".join(COLLECTION_METHODS)
            raise PaymentProviderError(
                f"Collection {request.collection!r} is not one of {methods}.")
        invoice_params = {
            "customer": request.provider_customer_id,
            "currency": "usd",
            "collection_method": request.collection,
            "description": request.description,
            "metadata": dict(request.metadata),
            # The invoice is finalized and paid below, so Stripe must not advance
            # it on its own. Other pending items of the customer stay out of it.
            "auto_advance": False,
            "pending_invoice_items_behavior": "exclude",
        }
        if request.collection == "send_invoice":
            if not request.days_until_due or request.days_until_due < 1:
                raise PaymentProviderError(
                    "An invoice sent to the customer needs days_until_due of 1 or more.")
            invoice_params["days_until_due"] = request.days_until_due
        key = request.idempotency_key
        client = self._stripe(self.livemode)
        try:
            invoice = client.v1.invoices.create(
                params=invoice_params, options={"idempotency_key": f"{key}-invoice"})
            client.v1.invoice_items.create(
                params={"customer": request.provider_customer_id, "invoice": invoice.id,
                        "amount": cents, "currency": "usd",
                        "description": request.description},
                options={"idempotency_key": f"{key}-item"})
            invoice = client.v1.invoices.finalize_invoice(
                invoice.id, params={"auto_advance": False},
                options={"idempotency_key": f"{key}-finalize"})
            if request.collection == "send_invoice":
                invoice = client.v1.invoices.send_invoice(
                    invoice.id, options={"idempotency_key": f"{key}-send"})
            elif invoice.status == "open":
                invoice = client.v1.invoices.pay(
                    invoice.id, options={"idempotency_key": f"{key}-pay"})
        except stripe.CardError as exc:
            # The invoice exists and stays open. Stripe also sends invoice.payment_failed.
            reason = exc.user_message or str(exc)
            log.info("stripe charge declined", extra={"invoice": invoice.id, "code": exc.code})
            return PaymentResult(provider_id=invoice.id, status="failed", amount=request.amount,
                                 currency="USD", failure_reason=reason)
        except stripe.StripeError as exc:
            raise _provider_error("charging the Stripe customer", exc) from exc
        status = INVOICE_STATUSES.get(invoice.status, "pending")
        log.info("stripe invoice charged", extra={"invoice": invoice.id, "status": status})
        return PaymentResult(provider_id=invoice.id, status=status, amount=request.amount,
                             currency="USD")

    def refund(self, provider_payment_id: str, *, amount: Decimal | None,
               idempotency_key: str, reason: str = "") -> PaymentResult:
        params: dict = {"metadata": {"fkod_invoice": provider_payment_id}}
        if amount is not None:
            params["amount"] = _cents(amount, "USD", "refund")
        if reason in REFUND_REASONS:
            params["reason"] = reason
        elif reason:
            params["metadata"]["fkod_reason"] = reason[:500]
        client = self._stripe(self.livemode)
        try:
            invoice = client.v1.invoices.retrieve(
                provider_payment_id, params={"expand": ["payments"]}).to_dict()
            params.update(_invoice_payment(invoice))
            refund = client.v1.refunds.create(params=params,
                                              options={"idempotency_key": idempotency_key})
        except stripe.StripeError as exc:
            raise _provider_error("refunding the Stripe invoice", exc) from exc
        status = REFUND_STATUSES.get(refund.status or "", "pending")
        failure = None
        if status == "failed":
            failure = getattr(refund, "failure_reason", None) or "Stripe could not refund."
        log.info("stripe refund created", extra={"invoice": provider_payment_id,
                                                 "refund": refund.id, "status": status})
        return PaymentResult(provider_id=refund.id, status=status,
                             amount=_decimal(refund.amount), currency=refund.currency.upper(),
                             failure_reason=failure)

    def payout(self, request: PayoutRequest) -> PaymentResult:
        problem = self.check_payout_destination(request.destination)
        if problem:
            raise PaymentProviderError(f"Payout destination {problem}.")
        cents = _cents(request.amount, request.currency, "payout")
        params = {"amount": cents, "currency": "usd", "destination": request.destination.strip()}
        if request.description:
            params["description"] = request.description
        client = self._stripe(self.livemode)
        try:
            transfer = client.v1.transfers.create(
                params=params, options={"idempotency_key": request.idempotency_key})
        except stripe.StripeError as exc:
            raise _provider_error("transferring to the Stripe account", exc) from exc
        log.info("stripe transfer created", extra={"transfer": transfer.id})
        # A transfer moves the money at once. A later transfer.reversed event fails it.
        return PaymentResult(provider_id=transfer.id, status="succeeded",
                             amount=_decimal(transfer.amount), currency=transfer.currency.upper())

    def verify_webhook(self, body: bytes, headers: Mapping[str, str]) -> ProviderEvent:
        if not self._webhook_secret:
            raise WebhookSignatureError(
                "No Stripe webhook secret is configured (fkod_stripe.webhook_secret), so no "
                "inbound Stripe event can be verified.")
        signature = next((value for name, value in headers.items()
                          if name.lower() == SIGNATURE_HEADER), None)
        check_signature(body, signature, self._webhook_secret, now=time.time())

        # The body is parsed as plain JSON, so the event's data does not depend
        # on how the stripe library models each object.
        try:
            payload = json.loads(body)
            return ProviderEvent(
                id=str(payload["id"]),
                type=str(payload["type"]),
                created=dt.datetime.fromtimestamp(int(payload["created"]), dt.UTC),
                livemode=bool(payload.get("livemode", False)),
                data=dict(payload.get("data", {}).get("object") or {}),
            )
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError,
                RecursionError):
            raise WebhookSignatureError(
                "The body is signed but is not a Stripe event: it lacks id, type or created."
            ) from None

    def interpret(self, event: ProviderEvent) -> list[BillingUpdate]:
        """Map a Stripe event to billing updates.

        A charge or a dispute names its invoice only in older Stripe API
        versions. Otherwise the invoice is looked up at Stripe by the payment
        intent. That look-up raises :class:`PaymentProviderError` when Stripe
        cannot be reached, so that the event can be delivered again.
        """
        handler = _EVENT_HANDLERS.get(event.type)
        if handler is None:
            return []
        try:
            update = handler(self, event)
        except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
            log.warning("stripe event lacks a field", extra={
                "event": event.id, "type": event.type, "error": repr(exc)})
            return []
        return [update] if update is not None else []

    def _invoice_of(self, obj: dict, event: ProviderEvent) -> str | None:
        invoice = obj.get("invoice")
        if isinstance(invoice, dict):
            invoice = invoice.get("id")
        if invoice:
            return str(invoice)
        intent = obj.get("payment_intent")
        if isinstance(intent, dict):
            intent = intent.get("id")
        if not intent:
            log.warning("stripe event has no payment intent",
                        extra={"event": event.id, "type": event.type})
            return None
        client = self._stripe(self.livemode)
        try:
            found = client.v1.invoice_payments.list(
                params={"payment": {"type": "payment_intent", "payment_intent": intent},
                        "limit": 1})
        except stripe.StripeError as exc:
            raise _provider_error("finding the invoice of a Stripe payment", exc) from exc
        for payment in found.data:
            invoice = payment.invoice
            return invoice if isinstance(invoice, str) else invoice.id
        log.info("stripe payment belongs to no invoice",
                 extra={"event": event.id, "payment_intent": intent})
        return None

    def _paid(self, event: ProviderEvent) -> BillingUpdate:
        return BillingUpdate(kind="payment_succeeded", provider_id=str(event.data["id"]),
                             occurred_at=event.created, currency=_currency(event.data))

    def _payment_failed(self, event: ProviderEvent) -> BillingUpdate:
        error = event.data.get("last_finalization_error") or {}
        return BillingUpdate(kind="payment_failed", provider_id=str(event.data["id"]),
                             occurred_at=event.created, currency=_currency(event.data),
                             reason=error.get("message"))

    def _refunded(self, event: ProviderEvent) -> BillingUpdate | None:
        amount = _decimal(int(event.data["amount_refunded"]))
        invoice = self._invoice_of(event.data, event)
        if invoice is None:
            return None
        return BillingUpdate(kind="refund_succeeded", provider_id=invoice,
                             occurred_at=event.created, amount=amount,
                             currency=_currency(event.data))

    def _disputed(self, event: ProviderEvent) -> BillingUpdate | None:
        amount = _decimal(int(event.data["amount"]))
        invoice = self._invoice_of(event.data, event)
        if invoice is None:
            return None
        return BillingUpdate(kind="chargeback", provider_id=invoice, occurred_at=event.created,
                             amount=amount, currency=_currency(event.data),
                             reason=event.data.get("reason"))

    def _transfer_reversed(self, event: ProviderEvent) -> BillingUpdate:
        return BillingUpdate(kind="payout_failed", provider_id=str(event.data["id"]),
                             occurred_at=event.created, currency=_currency(event.data),
                             reason="The transfer was reversed.")

    def _setup_succeeded(self, event: ProviderEvent) -> BillingUpdate:
        customer = event.data["customer"]
        if isinstance(customer, dict):
            customer = customer["id"]
        if not customer:
            raise ValueError("setup intent without customer")
        return BillingUpdate(kind="payment_method_ready", provider_id=str(customer),
                             occurred_at=event.created)


def check_signature(body: bytes, header: str | None, secret: str, *, now: float) -> None:
    """Verify a ``Stripe-Signature`` header (``t=<unix seconds>,v1=<hex>,…``) over ``body``.

    The HMAC-SHA256 under ``secret`` covers ``"{t}."`` followed by the raw body
    bytes. The timestamp must be within the tolerance of ``now`` in either
    direction. Every failure raises :class:`WebhookSignatureError` with the same
    message, so a sender learns nothing about which check failed.

    stripe 16.1's ``Webhook.construct_event`` is not used here: it accepts any
    timestamp in the future, and it compares ``str`` values with
    ``hmac.compare_digest``, which raises TypeError for non-ASCII input.
    """
    if not header or len(header) > MAX_SIGNATURE_HEADER:
        raise WebhookSignatureError(SIGNATURE_INVALID)
    timestamps, candidates = [], []
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        if name == "t":
            timestamps.append(value)
        elif name == "v1":
            candidates.append(value)
    # A repeated header arrives joined by a comma and so carries two timestamps.
    if len(timestamps) != 1 or not candidates:
        raise WebhookSignatureError(SIGNATURE_INVALID)
    text = timestamps[0]
    if not (text.isascii() and text.isdigit()) or len(text) > 12:
        raise WebhookSignatureError(SIGNATURE_INVALID)
    timestamp = int(text)
    if abs(now - timestamp) > WEBHOOK_TOLERANCE_SECONDS:
        raise WebhookSignatureError(SIGNATURE_INVALID)
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body,
                        hashlib.sha256).hexdigest().encode("ascii")
    # hmac.compare_digest raises TypeError for a non-ASCII str, so both sides are bytes.
    if not any(hmac.compare_digest(expected, candidate.encode("utf-8", "replace"))
               for candidate in candidates):
        raise WebhookSignatureError(SIGNATURE_INVALID)


_EVENT_HANDLERS = {
    "invoice.paid": StripeProvider._paid,
    "invoice.payment_succeeded": StripeProvider._paid,
    "invoice.payment_failed": StripeProvider._payment_failed,
    "charge.refunded": StripeProvider._refunded,
    "charge.dispute.created": StripeProvider._disputed,
    "transfer.reversed": StripeProvider._transfer_reversed,
    "setup_intent.succeeded": StripeProvider._setup_succeeded,
}


def _cents(amount: Decimal, currency: str, action: str) -> int:
    """Convert ``amount`` to cents, rejecting other currencies, fractions of cents and <= 0."""
    if currency != "USD":
        raise PaymentProviderError(f"Stripe {action}s are in USD only, not {currency!r}.")
    if not isinstance(amount, Decimal) or not amount.is_finite() or amount <= 0:
        raise PaymentProviderError(f"A {action} amount must be more than zero, not {amount}.")
    if amount != amount.quantize(CENT):
        raise PaymentProviderError(
            f"A {action} amount must be a whole number of cents, not {amount}.")
    return int(amount * 100)


def _decimal(cents: int) -> Decimal:
    return (Decimal(cents) / 100).quantize(CENT)


def _currency(obj: dict) -> str:
    return str(obj.get("currency") or "usd").upper()


def _invoice_payment(invoice: dict) -> dict:
    """Return the refund parameter (``payment_intent`` or ``charge``) naming the invoice's payment.

    The Stripe API version of the installed library lists the invoice's
    payments. Older versions name the payment intent and the charge on the
    invoice itself.
    """
    payments = (invoice.get("payments") or {}).get("data") or []
    paid = [item for item in payments if item.get("status") == "paid"] or payments
    for item in paid:
        payment = item.get("payment") or {}
        for field in ("payment_intent", "charge"):
            value = payment.get(field)
            if value:
                return {field: value if isinstance(value, str) else value["id"]}
    for field in ("payment_intent", "charge"):
        value = invoice.get(field)
        if value:
            return {field: value if isinstance(value, str) else value["id"]}
    raise PaymentProviderError(
        f"Stripe invoice {invoice.get('id')} has no payment to refund.")


def _provider_error(action: str, exc: stripe.StripeError) -> PaymentProviderError:
    retryable = isinstance(exc, stripe.APIConnectionError | stripe.RateLimitError) or (
        exc.http_status is not None and exc.http_status >= 500)
    log.warning("stripe call failed", extra={"action": action, "status": exc.http_status,
                                             "code": exc.code})
    return PaymentProviderError(f"{action} failed: {exc.user_message or exc}",
                                retryable=retryable)
