"""The Stripe implementation of :class:`fkod.core.billing.providers.PaymentProvider`."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Mapping
from decimal import Decimal

import stripe

from fkod.core.billing.providers import (
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
# Calls that carry an idempotency key are safe to retry on a network error or a 5xx.
MAX_NETWORK_RETRIES = 2


class StripeProvider(PaymentProvider):
    """Customers, payment methods and inbound webhooks through the Stripe API.

    The client is created on first use, so a provider without an API key
    still registers and verifies webhooks.
    """

    # NOTE: charges, invoices, refunds and payouts (Stripe Connect transfers)
    # arrive with the billing engine; until then they raise NotImplementedError.

    name = "stripe"
    display_name = "Stripe"
    currencies = ("USD",)

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

    def charge(self, request: ChargeRequest) -> PaymentResult:
        raise NotImplementedError("Stripe charges and invoices are not built yet.")

    def refund(self, provider_payment_id: str, *, amount: Decimal | None,
               idempotency_key: str, reason: str = "") -> PaymentResult:
        raise NotImplementedError("Stripe refunds are not built yet.")

    def payout(self, request: PayoutRequest) -> PaymentResult:
        raise NotImplementedError("Stripe payouts are not built yet.")

    def verify_webhook(self, body: bytes, headers: Mapping[str, str]) -> ProviderEvent:
        if not self._webhook_secret:
            raise WebhookSignatureError(
                "No Stripe webhook secret is configured (fkod_stripe.webhook_secret), so no "
                "inbound Stripe event can be verified.")
        signature = next((value for name, value in headers.items()
                          if name.lower() == SIGNATURE_HEADER), None)
        if not signature:
            raise WebhookSignatureError("The Stripe-Signature header is missing.")

        try:
            stripe.Webhook.construct_event(body, signature, self._webhook_secret,
                                           tolerance=WEBHOOK_TOLERANCE_SECONDS)
        except stripe.SignatureVerificationError as exc:
            raise WebhookSignatureError(
                f"The Stripe signature is invalid or older than {WEBHOOK_TOLERANCE_SECONDS} "
                f"seconds: {exc.user_message or exc}") from None
        except (ValueError, UnicodeDecodeError):
            raise WebhookSignatureError("The body is not a Stripe event in JSON.") from None

        # The body is parsed again as plain JSON, so the event's data does not
        # depend on how the stripe library models each object.
        payload = json.loads(body)
        try:
            return ProviderEvent(
                id=str(payload["id"]),
                type=str(payload["type"]),
                created=dt.datetime.fromtimestamp(int(payload["created"]), dt.UTC),
                livemode=bool(payload.get("livemode", False)),
                data=dict(payload.get("data", {}).get("object") or {}),
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            raise WebhookSignatureError(
                "The body is signed but is not a Stripe event: it lacks id, type or created."
            ) from None


def _provider_error(action: str, exc: stripe.StripeError) -> PaymentProviderError:
    retryable = isinstance(exc, stripe.APIConnectionError | stripe.RateLimitError) or (
        exc.http_status is not None and exc.http_status >= 500)
    log.warning("stripe call failed", extra={"action": action, "status": exc.http_status,
                                             "code": exc.code})
    return PaymentProviderError(f"{action} failed: {exc.user_message or exc}",
                                retryable=retryable)
