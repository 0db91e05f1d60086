"""The Stripe provider: settings, registration and webhook signature verification."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import fkod_stripe
import pytest
from fkod_stripe.provider import StripeProvider

from fkod.core.billing.providers import PaymentProviderError, WebhookSignatureError, check_provider

SECRET = "whsec_package_test"  # noqa: S105 (a test value)
BODY = json.dumps({"id": "evt_1", "type": "payout.paid", "created": 1780000000,
                   "livemode": False, "data": {"object": {"id": "po_1"}}}).encode()


def signature(body: bytes, timestamp: int, secret: str = SECRET) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def test_settings_from_environment():
    settings = fkod_stripe.parse_settings(
        {"fkod_stripe.api_key": "env:MY_STRIPE_KEY", "fkod_stripe.webhook_secret": "whsec_ini"},
        environ={"MY_STRIPE_KEY": "sk_test_env", "FKOD_STRIPE_WEBHOOK_SECRET": "whsec_env"})
    assert settings.api_key == "sk_test_env"
    assert settings.webhook_secret == "whsec_env"  # noqa: S105 (a test value)
    assert settings.api_base == "https://api.stripe.com"


def test_registered_provider_valid():
    fkod_stripe.configure({"fkod_stripe.webhook_secret": SECRET}, environ={})
    provider, = fkod_stripe.fkod_register_payment_providers()
    assert check_provider(provider) == []
    assert provider.describe() == {"name": "stripe", "display_name": "Stripe",
                                   "currencies": ["USD"]}


def test_signature_verified_within_tolerance():
    provider = StripeProvider(api_key="", webhook_secret=SECRET)
    header = signature(BODY, int(time.time()) - 250)
    event = provider.verify_webhook(BODY, {"Stripe-Signature": header})
    assert (event.id, event.type, event.data) == ("evt_1", "payout.paid", {"id": "po_1"})


def test_signature_expired():
    provider = StripeProvider(api_key="", webhook_secret=SECRET)
    with pytest.raises(WebhookSignatureError, match="300 seconds"):
        header = signature(BODY, int(time.time()) - 400)
        provider.verify_webhook(BODY, {"Stripe-Signature": header})


def test_unconfigured_key_raises():
    provider = StripeProvider(api_key="", webhook_secret=SECRET)
    with pytest.raises(PaymentProviderError, match=r"fkod_stripe\.api_key"):
        provider.set_up_payment_method("cus_1", return_url="https://portal.example/billing")


def test_money_operations_not_built():
    provider = StripeProvider(api_key="sk_test_x", webhook_secret=SECRET)
    with pytest.raises(NotImplementedError):
        provider.refund("ch_1", amount=None, idempotency_key="r1")
