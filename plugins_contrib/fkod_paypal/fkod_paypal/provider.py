"""The PayPal implementation of :class:`fkod.core.billing.providers.PaymentProvider`.

PayPal serves partner payouts only: each payout is one PayPal Payouts batch
with one item sent to the partner's PayPal email address. Charges, refunds
and customer records go through other providers.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation

from fkod.core.billing.providers import (
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
from fkod_paypal.api import PayPalClient, PayPalHTTPError
from fkod_paypal.events import interpret_event

log = logging.getLogger(__name__)

DEFAULT_API_BASE = "https://api-m.sandbox.paypal.com"
LIVE_API_BASE = "https://api-m.paypal.com"
PAYOUTS_PATH = "/v1/payments/payouts"
VERIFY_PATH = "/v1/notifications/verify-webhook-signature"
# A delivery whose transmission time is further than this from now is
# rejected, which limits replays of a captured request.
WEBHOOK_TOLERANCE_SECONDS = 300
# The headers PayPal signs each webhook delivery with, in lower case.
TRANSMISSION_HEADERS = {
    "transmission_id": "paypal-transmission-id",
    "transmission_time": "paypal-transmission-time",
    "transmission_sig": "paypal-transmission-sig",
    "cert_url": "paypal-cert-url",
    "auth_algo": "paypal-auth-algo",
}
CENT = Decimal("0.01")
# PayPal's documented maximum lengths for sender_batch_id and for the item note.
MAX_SENDER_BATCH_ID = 256
MAX_NOTE = 1000
MAX_EMAIL = 254
EMAIL_SUBJECT = "You have a payout from F-KOD"
# PayPal's batch_status values and the PaymentResult status of each.
BATCH_STATUSES = {
    "NEW": "pending", "PENDING": "pending", "PROCESSING": "pending",
    "SUCCESS": "succeeded", "DENIED": "failed", "FAILED": "failed", "CANCELED": "failed",
}
PAYOUTS_ONLY = ("PayPal is used for partner payouts only on this platform, so it cannot "
                "{action}. Use another payment provider for customers.")


class PayPalProvider(PaymentProvider):
    """Partner payouts and their webhooks through PayPal's Payouts and Notifications APIs."""

    name = "paypal"
    display_name = "PayPal"
    currencies = ("USD",)
    payout_method = "paypal"

    def __init__(self, *, client_id: str, client_secret: str, webhook_id: str = "",
                 api_base: str = DEFAULT_API_BASE, client: PayPalClient | None = None):
        self._webhook_id = webhook_id
        self._api_base = api_base.rstrip("/")
        self._client = client or PayPalClient(client_id=client_id, client_secret=client_secret,
                                              api_base=self._api_base)

    @property
    def livemode(self) -> bool:
        return self._api_base == LIVE_API_BASE

    def create_customer(self, customer: CustomerDetails) -> ProviderCustomer:
        raise PaymentProviderError(PAYOUTS_ONLY.format(action="create customers"))

    def set_up_payment_method(self, provider_customer_id: str, *,
                              return_url: str) -> PaymentMethodSetup:
        raise PaymentProviderError(PAYOUTS_ONLY.format(action="set up payment methods"))

    def charge(self, request: ChargeRequest) -> PaymentResult:
        raise PaymentProviderError(PAYOUTS_ONLY.format(action="charge customers"))

    def refund(self, provider_payment_id: str, *, amount: Decimal | None,
               idempotency_key: str, reason: str = "") -> PaymentResult:
        raise PaymentProviderError(PAYOUTS_ONLY.format(action="refund payments"))

    def check_payout_destination(self, destination: str) -> str | None:
        if not destination:
            return "must be the partner's PayPal email address"
        if len(destination) > MAX_EMAIL:
            return f"must be at most {MAX_EMAIL} characters"
        if any(character.isspace() for character in destination):
            return "must not contain spaces"
        if destination.count("@") != 1:
            return "must be an email address with exactly one @"
        local, domain = destination.split("@")
        if not local:
            return "must have a name before the @"
        if "." not in domain or domain.startswith(".") or domain.endswith(".") or ".." in domain:
            return "must have a domain with a dot after the @, such as example.com"
        return None

    def payout(self, request: PayoutRequest) -> PaymentResult:
        value = self._check_payout(request)
        body = {
            "sender_batch_header": {"sender_batch_id": request.idempotency_key,
                                    "email_subject": EMAIL_SUBJECT},
            "items": [{
                "recipient_type": "EMAIL",
                "amount": {"value": value, "currency": request.currency},
                "receiver": request.destination,
                "sender_item_id": request.idempotency_key,
                "note": request.description[:MAX_NOTE],
            }],
        }
        action = "creating the PayPal payout"
        try:
            # PayPal-Request-Id makes PayPal return the first response to a
            # retried call, so a retry does not pay twice.
            created = self._client.request("POST", PAYOUTS_PATH, action=action, json=body,
                                           headers={"PayPal-Request-Id": request.idempotency_key})
        except PayPalHTTPError as exc:
            raise _provider_error(action, exc) from exc
        result = _payout_result(created, action, request.amount, request.currency)
        log.info("paypal payout created", extra={"batch_id": result.provider_id,
                                                 "status": result.status})
        return result

    def get_payout(self, provider_id: str) -> PaymentResult:
        """Fetch the current state of a payout that :meth:`payout` created."""
        action = "fetching the PayPal payout"
        if not provider_id or "/" in provider_id:
            raise PaymentProviderError(f"{action} failed: invalid payout id {provider_id!r}.")
        try:
            batch = self._client.request("GET", f"{PAYOUTS_PATH}/{provider_id}", action=action)
        except PayPalHTTPError as exc:
            raise _provider_error(action, exc) from exc
        return _payout_result(batch, action, None, None)

    def _check_payout(self, request: PayoutRequest) -> str:
        """Check the request before any call and return the amount as PayPal's value string."""
        if request.currency not in self.currencies:
            raise PaymentProviderError(
                f"PayPal payouts support {', '.join(self.currencies)}, not "
                f"{request.currency!r}.")
        amount = request.amount
        if not isinstance(amount, Decimal):
            raise PaymentProviderError(
                f"The payout amount must be a Decimal, not {type(amount).__name__}.")
        try:
            whole_cents = amount.is_finite() and amount == amount.quantize(CENT)
        except InvalidOperation:
            whole_cents = False
        if not whole_cents:
            raise PaymentProviderError(
                f"The payout amount {amount} is not a whole number of cents.")
        if amount <= 0:
            raise PaymentProviderError(f"The payout amount {amount} must be greater than 0.")
        if not 0 < len(request.idempotency_key) <= MAX_SENDER_BATCH_ID:
            raise PaymentProviderError(
                f"The payout idempotency key must have 1 to {MAX_SENDER_BATCH_ID} characters.")
        problem = self.check_payout_destination(request.destination)
        if problem:
            raise PaymentProviderError(f"The PayPal payout destination {problem}.")
        return f"{amount.quantize(CENT):f}"

    def verify_webhook(self, body: bytes, headers: Mapping[str, str]) -> ProviderEvent:
        """Verify a delivery with PayPal's verify-webhook-signature API and parse it.

        Raises :class:`WebhookSignatureError` for a missing header, a stale
        transmission time, a body that is not a PayPal event, a signature that
        PayPal does not confirm, and when no webhook id is configured. Raises
        :class:`PaymentProviderError` when PayPal cannot be asked, so that the
        delivery fails and PayPal sends it again later.
        """
        lowered = {name.lower(): value for name, value in headers.items()}
        transmission = {}
        for field, header in TRANSMISSION_HEADERS.items():
            value = lowered.get(header, "").strip()
            if not value:
                raise WebhookSignatureError(f"The {header.upper()} header is missing.")
            transmission[field] = value
        sent_at = _check_transmission_time(transmission["transmission_time"])

        if not self._webhook_id:
            raise WebhookSignatureError(
                "No PayPal webhook id is configured (fkod_paypal.webhook_id), so no inbound "
                "PayPal event can be verified.")
        payload = _parse_event(body)

        action = "verifying the PayPal webhook signature"
        request = {**transmission, "webhook_id": self._webhook_id, "webhook_event": payload}
        try:
            verdict = self._client.request("POST", VERIFY_PATH, action=action, json=request)
        except PayPalHTTPError as exc:
            if exc.retryable or exc.status == 401:
                raise _provider_error(action, exc) from exc
            raise WebhookSignatureError(
                f"PayPal rejected the signature data: {exc.describe()}") from None
        if verdict.get("verification_status") != "SUCCESS":
            log.warning("paypal webhook signature not verified",
                        extra={"event_id": payload["id"],
                               "status": verdict.get("verification_status")})
            raise WebhookSignatureError("PayPal did not verify the webhook signature.")

        resource = payload.get("resource")
        return ProviderEvent(
            id=payload["id"],
            type=payload["event_type"],
            created=_parse_time(payload.get("create_time")) or sent_at,
            livemode=self.livemode,
            data=dict(resource) if isinstance(resource, dict) else {},
        )

    def interpret(self, event: ProviderEvent) -> list[BillingUpdate]:
        return interpret_event(event)


def _check_transmission_time(value: str) -> dt.datetime:
    sent_at = _parse_time(value)
    if sent_at is None:
        raise WebhookSignatureError(
            f"The PAYPAL-TRANSMISSION-TIME header {value!r} is not an ISO 8601 time.")
    age = abs((dt.datetime.now(dt.UTC) - sent_at).total_seconds())
    if age > WEBHOOK_TOLERANCE_SECONDS:
        raise WebhookSignatureError(
            f"The PayPal transmission time {value} is more than {WEBHOOK_TOLERANCE_SECONDS} "
            "seconds from now.")
    return sent_at


def _parse_event(body: bytes) -> dict:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise WebhookSignatureError("The body is not a PayPal event in JSON.") from None
    if (not isinstance(payload, dict) or not isinstance(payload.get("id"), str)
            or not isinstance(payload.get("event_type"), str)
            or not payload["id"] or not payload["event_type"]):
        raise WebhookSignatureError("The body is not a PayPal event: it lacks id or event_type.")
    return payload


def _parse_time(value: object) -> dt.datetime | None:
    """Parse PayPal's ISO 8601 time; a time without an offset is taken as UTC."""
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)


def _payout_result(batch: dict, action: str, amount: Decimal | None,
                   currency: str | None) -> PaymentResult:
    """Build the result from a payout batch as PayPal returns it on create and on fetch."""
    header = batch.get("batch_header")
    if not isinstance(header, dict) or not header.get("payout_batch_id"):
        raise PaymentProviderError(f"{action} failed: PayPal's response lacks a batch_header "
                                   "with a payout_batch_id.", retryable=True)
    batch_status = str(header.get("batch_status") or "")
    status = BATCH_STATUSES.get(batch_status)
    if status is None:
        log.warning("paypal batch status unknown, taken as pending",
                    extra={"batch_id": header["payout_batch_id"], "batch_status": batch_status})
        status = "pending"

    total = header.get("amount")
    if isinstance(total, dict):
        try:
            amount = Decimal(str(total.get("value")))
            currency = str(total.get("currency") or currency)
        except InvalidOperation:
            pass
    failure_reason = None
    if status == "failed":
        failure_reason = _item_error(batch) or f"PayPal batch status {batch_status}"
    return PaymentResult(provider_id=str(header["payout_batch_id"]), status=status,
                         amount=amount if amount is not None else Decimal("0"),
                         currency=currency or "USD", failure_reason=failure_reason)


def _item_error(batch: dict) -> str | None:
    items = batch.get("items")
    if not isinstance(items, list):
        return None
    for item in items:
        errors = item.get("errors") if isinstance(item, dict) else None
        if isinstance(errors, dict) and (errors.get("message") or errors.get("name")):
            return str(errors.get("message") or errors.get("name"))
    return None


def _provider_error(action: str, exc: PayPalHTTPError) -> PaymentProviderError:
    log.warning("paypal call failed", extra={"action": action, "status": exc.status,
                                             "error_name": exc.name, "debug_id": exc.debug_id})
    return PaymentProviderError(f"{action} failed: {exc.describe()}", retryable=exc.retryable)
