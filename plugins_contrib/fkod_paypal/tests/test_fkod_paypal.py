"""The PayPal provider against FakePayPal, a local stand-in for PayPal's REST API."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import fkod_paypal
import httpx
import pytest
from fkod_paypal.api import PayPalClient, PayPalHTTPError
from fkod_paypal.provider import PayPalProvider
from fkod_paypal.testing import FakePayPal

from fkod.core.billing.providers import (
    ChargeRequest,
    CustomerDetails,
    PaymentProviderError,
    PayoutRequest,
    ProviderEvent,
    WebhookSignatureError,
    check_provider,
)

WEBHOOK_ID = "WH-TEST-4JH8"
SECRET = "test-client-secret"  # noqa: S105 (a test value)


@pytest.fixture
def fake():
    with FakePayPal() as server:
        yield server


@pytest.fixture
def provider(fake):
    paypal = PayPalProvider(client_id=fake.client_id, client_secret=fake.client_secret,
                            webhook_id=WEBHOOK_ID, api_base=fake.url)
    yield paypal
    paypal._client.close()


def payout_request(key="payout_42_2026_11", amount="125.50", currency="USD",
                   destination="ada@example.com"):
    return PayoutRequest(destination=destination, amount=Decimal(amount), currency=currency,
                         idempotency_key=key, description="F-KOD earnings for November 2026")


def batch_resource(batch_id, status="SUCCESS"):
    return {"batch_header": {"payout_batch_id": batch_id, "batch_status": status,
                             "amount": {"currency": "USD", "value": "125.50"},
                             "sender_batch_header": {"sender_batch_id": "payout_42_2026_11"}},
            "links": []}


def item_resource(batch_id, status="SUCCESS", errors=None):
    resource = {"payout_item_id": "8AELMXH8UB2P8", "transaction_status": status,
                "payout_batch_id": batch_id,
                "payout_item": {"recipient_type": "EMAIL", "receiver": "ada@example.com",
                                "amount": {"currency": "USD", "value": "125.50"}}}
    if errors:
        resource["errors"] = errors
    return resource


def event(event_type, resource):
    return ProviderEvent(id="WH-1", type=event_type,
                         created=dt.datetime(2026, 12, 1, 9, 30, tzinfo=dt.UTC),
                         livemode=False, data=resource)


# Settings and registration --------------------------------------------------

def test_settings_from_environment():
    settings = fkod_paypal.parse_settings(
        {"fkod_paypal.client_id": "env:MY_PAYPAL_ID", "fkod_paypal.client_secret": "ini-secret",
         "fkod_paypal.webhook_id": "WH-INI"},
        environ={"MY_PAYPAL_ID": "id-from-env", "FKOD_PAYPAL_CLIENT_SECRET": "env-secret"})
    assert settings.client_id == "id-from-env"
    assert settings.client_secret == "env-secret"  # noqa: S105 (a test value)
    assert settings.webhook_id == "WH-INI"
    assert settings.api_base == "https://api-m.sandbox.paypal.com"
    assert "env-secret" not in repr(settings)


def test_settings_live_base():
    settings = fkod_paypal.parse_settings({}, environ={
        "FKOD_PAYPAL_API_BASE": "https://api-m.paypal.com"})
    assert settings.api_base == fkod_paypal.LIVE_API_BASE
    live = PayPalProvider(client_id="id", client_secret=SECRET, api_base=settings.api_base)
    sandbox = PayPalProvider(client_id="id", client_secret=SECRET)
    assert live.livemode is True
    assert sandbox.livemode is False


def test_registered_provider_valid():
    fkod_paypal.configure({"fkod_paypal.webhook_id": WEBHOOK_ID}, environ={})
    try:
        provider, = fkod_paypal.fkod_register_payment_providers()
    finally:
        fkod_paypal.configure({}, environ={})
    assert check_provider(provider) == []
    assert provider.payout_method == "paypal"
    assert provider.describe() == {"name": "paypal", "display_name": "PayPal",
                                   "currencies": ["USD"]}


def test_provider_in_application(tmp_path, monkeypatch, fake):
    from fkod.core.billing.providers import payment_providers
    from fkod.core.testing import make_app, make_settings

    settings = make_settings(tmp_path, extra={
        "fkod_paypal.client_id": fake.client_id, "fkod_paypal.client_secret": "env:TEST_PP",
        "fkod_paypal.webhook_id": WEBHOOK_ID, "fkod_paypal.api_base": fake.url})
    monkeypatch.setenv("TEST_PP", fake.client_secret)
    try:
        app = make_app(settings)
        providers = payment_providers(app.registry)
    finally:
        fkod_paypal.configure({}, environ={})
    provider = providers.get("paypal")
    assert isinstance(provider, PayPalProvider)
    assert providers.rejected == []
    assert provider.payout(payout_request()).status == "pending"


def test_unconfigured_credentials_raise():
    provider = PayPalProvider(client_id="", client_secret="", api_base="http://127.0.0.1:9")
    with pytest.raises(PaymentProviderError, match=r"fkod_paypal\.client_id") as raised:
        provider.payout(payout_request())
    assert raised.value.retryable is False


# Access tokens -----------------------------------------------------------------

def test_token_fetched_once(fake, provider):
    provider.payout(payout_request(key="k1"))
    provider.payout(payout_request(key="k2"))
    assert fake.token_requests == 1
    assert fake.requests.count(("POST", "/v1/oauth2/token")) == 1


def test_token_refetched_after_401(fake, provider):
    provider.payout(payout_request(key="k1"))
    fake.expire_tokens()
    result = provider.payout(payout_request(key="k2"))
    assert result.status == "pending"
    assert fake.token_requests == 2
    assert len(fake.payouts) == 2


def test_token_refetched_after_expiry(fake):
    now = [1000.0]
    client = PayPalClient(client_id=fake.client_id, client_secret=fake.client_secret,
                          api_base=fake.url, clock=lambda: now[0])
    provider = PayPalProvider(client_id="", client_secret="", api_base=fake.url, client=client)
    fake.token_lifetime = 3600
    provider.payout(payout_request(key="k1"))
    now[0] += 3600 - 130
    provider.payout(payout_request(key="k2"))
    assert fake.token_requests == 1
    now[0] += 20
    provider.payout(payout_request(key="k3"))
    assert fake.token_requests == 2
    client.close()


def test_wrong_secret_rejected(fake):
    provider = PayPalProvider(client_id=fake.client_id, client_secret=SECRET,
                              api_base=fake.url)
    with pytest.raises(PaymentProviderError, match="invalid_client") as raised:
        provider.payout(payout_request())
    assert raised.value.retryable is False
    assert fake.payouts == []


# Payouts --------------------------------------------------------------------------

def test_payout_request_body(fake, provider):
    provider.payout(payout_request(key="payout_42_2026_11", amount="125.5"))
    created, = fake.payouts
    assert created["request_id"] == "payout_42_2026_11"
    body = created["request"]
    assert body["sender_batch_header"]["sender_batch_id"] == "payout_42_2026_11"
    assert body["sender_batch_header"]["email_subject"]
    assert body["items"] == [{"recipient_type": "EMAIL",
                              "amount": {"value": "125.50", "currency": "USD"},
                              "receiver": "ada@example.com",
                              "sender_item_id": "payout_42_2026_11",
                              "note": "F-KOD earnings for November 2026"}]


def test_payout_pending_then_paid(fake, provider):
    result = provider.payout(payout_request())
    assert result.status == "pending"
    assert result.amount == Decimal("125.50")
    assert result.currency == "USD"
    assert result.provider_id == fake.payouts[0]["payout_batch_id"]
    assert provider.get_payout(result.provider_id).status == "pending"

    fake.complete(result.provider_id, "SUCCESS")
    fetched = provider.get_payout(result.provider_id)
    assert fetched.status == "succeeded"
    assert fetched.amount == Decimal("125.50")

    body, headers = fake.webhook("PAYMENT.PAYOUTSBATCH.SUCCESS",
                                 batch_resource(result.provider_id), WEBHOOK_ID)
    update, = provider.interpret(provider.verify_webhook(body, headers))
    assert update.kind == "payout_paid"
    assert update.provider_id == result.provider_id


def test_payout_denied_reported(fake, provider):
    result = provider.payout(payout_request())
    fake.complete(result.provider_id, "DENIED")
    fetched = provider.get_payout(result.provider_id)
    assert fetched.status == "failed"
    assert fetched.failure_reason == "Receiver is unregistered"


def test_get_unknown_payout(provider):
    with pytest.raises(PaymentProviderError, match="RESOURCE_NOT_FOUND") as raised:
        provider.get_payout("NOPE123")
    assert raised.value.retryable is False


def test_retry_same_key_one_payout(fake, provider):
    first = provider.payout(payout_request())
    second = provider.payout(payout_request())
    assert second.provider_id == first.provider_id
    assert len(fake.payouts) == 1


def test_retry_after_503_one_payout(fake, provider):
    # The first payout caches the token, so the 503 hits the payout call.
    provider.payout(payout_request(key="warm-up"))
    fake.fail_next(503)
    with pytest.raises(PaymentProviderError) as raised:
        provider.payout(payout_request())
    assert raised.value.retryable is True
    assert "SERVICE_UNAVAILABLE" in str(raised.value)
    result = provider.payout(payout_request())
    assert result.status == "pending"
    assert len(fake.payouts) == 2


def test_429_retryable(fake, provider):
    fake.fail_next(429)
    with pytest.raises(PaymentProviderError, match="RATE_LIMIT_REACHED") as raised:
        provider.payout(payout_request())
    assert raised.value.retryable is True


def test_network_error_retryable(fake):
    url = fake.url
    fake.stop()
    provider = PayPalProvider(client_id="id", client_secret=SECRET, api_base=url)
    with pytest.raises(PaymentProviderError, match="could not be fetched") as raised:
        provider.payout(payout_request())
    assert raised.value.retryable is True


def test_reused_batch_id_rejected(fake, provider):
    provider.payout(payout_request())
    # A different request id with the same sender_batch_id is a new request to PayPal.
    token = provider._client._access_token("test")
    response = httpx.post(f"{fake.url}/v1/payments/payouts",
                          json=fake.payouts[0]["request"],
                          headers={"Authorization": f"Bearer {token}",
                                   "PayPal-Request-Id": "another-request"})
    assert response.status_code == 400
    error = response.json()
    assert error["name"] == "USER_BUSINESS_ERROR"
    assert error["details"][0]["issue"] == "SENDER_BATCH_ID_ALREADY_USED"
    assert error["debug_id"]


def test_4xx_not_retryable(fake, provider):
    # The client is called directly, because the provider rejects a third decimal itself.
    client = provider._client
    with pytest.raises(PayPalHTTPError) as raised:
        client.request("POST", "/v1/payments/payouts", action="creating the PayPal payout",
                       json={"sender_batch_header": {"sender_batch_id": "x"},
                             "items": [{"recipient_type": "EMAIL", "receiver": "a@b.co",
                                        "amount": {"value": "1.234", "currency": "USD"}}]})
    error = raised.value
    assert error.status == 400
    assert error.name == "VALIDATION_ERROR"
    assert error.issues == ("INVALID_PARAMETER_SYNTAX",)
    assert error.retryable is False


def test_payout_4xx_raises_not_retryable(fake, provider):
    provider.payout(payout_request(key="first-key"))
    # The same sender_batch_id under a new PayPal-Request-Id reaches PayPal's duplicate check.
    fake.forget_request_ids()
    with pytest.raises(PaymentProviderError, match="SENDER_BATCH_ID_ALREADY_USED") as raised:
        provider.payout(payout_request(key="first-key"))
    assert raised.value.retryable is False
    assert "USER_BUSINESS_ERROR" in str(raised.value)


@pytest.mark.parametrize(("amount", "currency", "message"), [
    ("10.005", "USD", "whole number of cents"),
    ("0.001", "USD", "whole number of cents"),
    ("-5.00", "USD", "greater than 0"),
    ("0", "USD", "greater than 0"),
    ("NaN", "USD", "whole number of cents"),
    ("10.00", "EUR", "not 'EUR'"),
])
def test_payout_amount_rejected(fake, provider, amount, currency, message):
    with pytest.raises(PaymentProviderError, match=message) as raised:
        provider.payout(payout_request(amount=amount, currency=currency))
    assert raised.value.retryable is False
    assert fake.requests == []


def test_payout_float_rejected(fake, provider):
    request = PayoutRequest(destination="ada@example.com", amount=10.5, currency="USD",
                            idempotency_key="k")
    with pytest.raises(PaymentProviderError, match="Decimal"):
        provider.payout(request)
    assert fake.requests == []


def test_payout_bad_destination_rejected(fake, provider):
    with pytest.raises(PaymentProviderError, match="destination"):
        provider.payout(payout_request(destination="not an email"))
    assert fake.requests == []


# Destinations -----------------------------------------------------------------------

@pytest.mark.parametrize("destination", [
    "ada@example.com", "ada.lovelace+payouts@mail.example.co.uk", "a@b.io"])
def test_destination_accepted(provider, destination):
    assert provider.check_payout_destination(destination) is None


@pytest.mark.parametrize("destination", [
    "", "ada", "ada@example", "ada@@example.com", "ada@exa@mple.com", "@example.com",
    "ada @example.com", "ada@example.com ", "ada@.example.com", "ada@example.com.",
    "ada@example..com", "a" * 250 + "@example.com",
])
def test_destination_rejected(provider, destination):
    reason = provider.check_payout_destination(destination)
    assert isinstance(reason, str)
    assert reason


# Webhooks -----------------------------------------------------------------------------

def test_webhook_verified(fake, provider):
    body, headers = fake.webhook("PAYMENT.PAYOUTS-ITEM.SUCCEEDED", item_resource("B1"),
                                 WEBHOOK_ID, event_id="WH-77", create_time="2026-12-01T09:30:00Z")
    lowered = {name.lower(): value for name, value in headers.items()}
    verified = provider.verify_webhook(body, lowered)
    assert verified.id == "WH-77"
    assert verified.type == "PAYMENT.PAYOUTS-ITEM.SUCCEEDED"
    assert verified.created == dt.datetime(2026, 12, 1, 9, 30, tzinfo=dt.UTC)
    assert verified.livemode is False
    assert verified.data == item_resource("B1")
    assert fake.requests[-1] == ("POST", "/v1/notifications/verify-webhook-signature")


def test_webhook_tampered_body(fake, provider):
    body, headers = fake.webhook("PAYMENT.PAYOUTS-ITEM.SUCCEEDED", item_resource("B1"),
                                 WEBHOOK_ID)
    tampered = body.replace(b'"125.50"', b'"925.50"')
    assert tampered != body
    with pytest.raises(WebhookSignatureError, match="did not verify"):
        provider.verify_webhook(tampered, headers)


def test_webhook_other_webhook_id(fake, provider):
    body, headers = fake.webhook("PAYMENT.PAYOUTS-ITEM.SUCCEEDED", item_resource("B1"),
                                 "WH-SOMEONE-ELSE")
    with pytest.raises(WebhookSignatureError, match="did not verify"):
        provider.verify_webhook(body, headers)


def test_webhook_forged_signature(fake, provider):
    body, headers = fake.webhook("PAYMENT.PAYOUTS-ITEM.SUCCEEDED", item_resource("B1"),
                                 WEBHOOK_ID)
    headers["PAYPAL-TRANSMISSION-SIG"] = "Zm9yZ2Vk"
    with pytest.raises(WebhookSignatureError, match="did not verify"):
        provider.verify_webhook(body, headers)


@pytest.mark.parametrize("header", [
    "PAYPAL-TRANSMISSION-ID", "PAYPAL-TRANSMISSION-TIME", "PAYPAL-TRANSMISSION-SIG",
    "PAYPAL-CERT-URL", "PAYPAL-AUTH-ALGO"])
def test_webhook_missing_header(fake, provider, header):
    body, headers = fake.webhook("PAYMENT.PAYOUTS-ITEM.SUCCEEDED", item_resource("B1"),
                                 WEBHOOK_ID)
    del headers[header]
    with pytest.raises(WebhookSignatureError, match=header):
        provider.verify_webhook(body, headers)
    assert ("POST", "/v1/notifications/verify-webhook-signature") not in fake.requests


@pytest.mark.parametrize("offset", [-400, 400])
def test_webhook_transmission_time_out_of_range(fake, provider, offset):
    sent = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=offset)
    body, headers = fake.webhook("PAYMENT.PAYOUTS-ITEM.SUCCEEDED", item_resource("B1"),
                                 WEBHOOK_ID, transmission_time=sent.isoformat())
    with pytest.raises(WebhookSignatureError, match="300 seconds"):
        provider.verify_webhook(body, headers)
    assert fake.requests == []


def test_webhook_transmission_time_invalid(fake, provider):
    body, headers = fake.webhook("PAYMENT.PAYOUTS-ITEM.SUCCEEDED", item_resource("B1"),
                                 WEBHOOK_ID, transmission_time="yesterday")
    with pytest.raises(WebhookSignatureError, match="ISO 8601"):
        provider.verify_webhook(body, headers)


def test_webhook_without_webhook_id(fake):
    provider = PayPalProvider(client_id=fake.client_id, client_secret=fake.client_secret,
                              api_base=fake.url)
    body, headers = fake.webhook("PAYMENT.PAYOUTS-ITEM.SUCCEEDED", item_resource("B1"),
                                 WEBHOOK_ID)
    with pytest.raises(WebhookSignatureError, match=r"fkod_paypal\.webhook_id"):
        provider.verify_webhook(body, headers)
    assert fake.requests == []


@pytest.mark.parametrize("body", [
    b"not json", b"[1, 2]", json.dumps({"event_type": "PAYMENT.PAYOUTS-ITEM.SUCCEEDED"}).encode(),
    json.dumps({"id": "WH-1"}).encode(), b"\xff\xfe"])
def test_webhook_body_not_event(fake, provider, body):
    _, headers = fake.webhook("PAYMENT.PAYOUTS-ITEM.SUCCEEDED", item_resource("B1"), WEBHOOK_ID)
    with pytest.raises(WebhookSignatureError, match="not a PayPal event"):
        provider.verify_webhook(body, headers)


def test_webhook_paypal_unavailable(fake, provider):
    body, headers = fake.webhook("PAYMENT.PAYOUTS-ITEM.SUCCEEDED", item_resource("B1"),
                                 WEBHOOK_ID)
    provider.payout(payout_request())
    fake.fail_next(503)
    with pytest.raises(PaymentProviderError) as raised:
        provider.verify_webhook(body, headers)
    assert raised.value.retryable is True


def test_webhook_verify_validation_error(fake, provider):
    token = provider._client._access_token("test")
    response = httpx.post(f"{fake.url}/v1/notifications/verify-webhook-signature",
                          json={"webhook_id": WEBHOOK_ID},
                          headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 400
    assert response.json()["name"] == "VALIDATION_ERROR"
    issues = {detail["issue"] for detail in response.json()["details"]}
    assert issues == {"MISSING_REQUIRED_PARAMETER"}


def test_api_without_bearer_401(fake):
    response = httpx.get(f"{fake.url}/v1/payments/payouts/ABC")
    assert response.status_code == 401
    assert response.json()["name"] == "AUTHENTICATION_FAILURE"


# Interpretation ---------------------------------------------------------------------------

@pytest.mark.parametrize("event_type", [
    "PAYMENT.PAYOUTSBATCH.SUCCESS", "PAYMENT.PAYOUTS-ITEM.SUCCEEDED"])
def test_interpret_paid(provider, event_type):
    resource = (batch_resource("B7") if "PAYOUTSBATCH" in event_type else item_resource("B7"))
    update, = provider.interpret(event(event_type, resource))
    assert update.kind == "payout_paid"
    assert update.provider_id == "B7"
    assert update.occurred_at == dt.datetime(2026, 12, 1, 9, 30, tzinfo=dt.UTC)
    assert update.currency == "USD"
    assert update.amount is None
    assert update.reason is None


@pytest.mark.parametrize(("event_type", "reason"), [
    ("PAYMENT.PAYOUTS-ITEM.FAILED", "The PayPal payout failed."),
    ("PAYMENT.PAYOUTS-ITEM.BLOCKED", "PayPal blocked the payout."),
    ("PAYMENT.PAYOUTS-ITEM.DENIED", "PayPal denied the payout."),
    ("PAYMENT.PAYOUTS-ITEM.RETURNED", "PayPal returned it"),
    ("PAYMENT.PAYOUTS-ITEM.REFUNDED", "refunded"),
    ("PAYMENT.PAYOUTS-ITEM.CANCELED", "canceled"),
])
def test_interpret_item_failed(provider, event_type, reason):
    update, = provider.interpret(event(event_type, item_resource("B8", status="FAILED")))
    assert update.kind == "payout_failed"
    assert update.provider_id == "B8"
    assert reason in update.reason


def test_interpret_batch_denied(provider):
    update, = provider.interpret(event("PAYMENT.PAYOUTSBATCH.DENIED",
                                       batch_resource("B9", status="DENIED")))
    assert update.kind == "payout_failed"
    assert update.provider_id == "B9"
    assert update.reason == "PayPal denied the payout batch."


def test_interpret_failed_with_paypal_reason(provider):
    resource = item_resource("B8", status="FAILED",
                             errors={"name": "RECEIVER_UNREGISTERED",
                                     "message": "Receiver is unregistered"})
    update, = provider.interpret(event("PAYMENT.PAYOUTS-ITEM.FAILED", resource))
    assert update.reason == "Receiver is unregistered"


@pytest.mark.parametrize("event_type", [
    "PAYMENT.PAYOUTS-ITEM.UNCLAIMED", "PAYMENT.PAYOUTS-ITEM.HELD",
    "PAYMENT.PAYOUTSBATCH.PROCESSING", "CHECKOUT.ORDER.APPROVED"])
def test_interpret_ignored(provider, event_type):
    assert provider.interpret(event(event_type, item_resource("B1"))) == []


@pytest.mark.parametrize(("event_type", "resource"), [
    ("PAYMENT.PAYOUTSBATCH.SUCCESS", {}),
    ("PAYMENT.PAYOUTSBATCH.SUCCESS", {"batch_header": "B1"}),
    ("PAYMENT.PAYOUTSBATCH.DENIED", {"batch_header": {"batch_status": "DENIED"}}),
    ("PAYMENT.PAYOUTS-ITEM.FAILED", {"payout_item_id": "I1"}),
    ("PAYMENT.PAYOUTS-ITEM.SUCCEEDED", {"payout_batch_id": 7}),
    ("PAYMENT.PAYOUTS-ITEM.SUCCEEDED", ["not", "a", "dict"]),
])
def test_interpret_missing_fields(provider, caplog, event_type, resource):
    assert provider.interpret(event(event_type, resource)) == []
    assert "without payout_batch_id" in caplog.text


# Operations PayPal does not serve here -----------------------------------------------------

def test_charge_refused(provider):
    request = ChargeRequest(provider_customer_id="cus_1", amount=Decimal("10.00"),
                            currency="USD", description="Plan", idempotency_key="c1")
    with pytest.raises(PaymentProviderError, match="partner payouts only"):
        provider.charge(request)


def test_customer_operations_refused(fake, provider):
    with pytest.raises(PaymentProviderError, match="partner payouts only"):
        provider.create_customer(CustomerDetails(reference="user_7", email="u@example.com",
                                                 name="U"))
    with pytest.raises(PaymentProviderError, match="partner payouts only"):
        provider.set_up_payment_method("cus_1", return_url="https://portal.example/billing")
    with pytest.raises(PaymentProviderError, match="partner payouts only"):
        provider.refund("B1", amount=None, idempotency_key="r1")
    assert fake.requests == []
