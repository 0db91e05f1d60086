"""The Stripe provider: settings, registration, webhooks, and money moved through FakeStripe."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import time
from decimal import Decimal

import fkod_stripe
import pytest
import stripe
from fkod_stripe.provider import SIGNATURE_INVALID, StripeProvider, check_signature
from fkod_stripe.testing import FakeStripe

from fkod.core.billing.providers import (
    ChargeRequest,
    CustomerDetails,
    PaymentProviderError,
    PayoutRequest,
    ProviderEvent,
    WebhookSignatureError,
    check_provider,
)

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


@pytest.fixture(scope="module")
def fake():
    with FakeStripe() as server:
        yield server


@pytest.fixture
def provider(fake):
    return StripeProvider(api_key=fake.api_key, webhook_secret=SECRET, api_base=fake.url)


@pytest.fixture
def customer(provider, request):
    details = CustomerDetails(reference=f"user_{request.node.name}", email="ada@example.com",
                              name="Ada")
    return provider.create_customer(details).provider_customer_id


def charge_request(customer: str, key: str, amount: str = "12.50", **fields) -> ChargeRequest:
    return ChargeRequest(provider_customer_id=customer, amount=Decimal(amount), currency="USD",
                         description="Pro plan, May", idempotency_key=key, **fields)


def paid_invoice(provider, customer, key, amount="12.50") -> str:
    result = provider.charge(charge_request(customer, key, amount))
    assert result.status == "succeeded"
    return result.provider_id


def event(kind: str, data: dict, created: int = 1780000000) -> ProviderEvent:
    return ProviderEvent(id="evt_x", type=kind, livemode=False, data=data,
                         created=dt.datetime.fromtimestamp(created, dt.UTC))


def test_charge_paid(fake, provider, customer):
    result = provider.charge(charge_request(customer, "charge-paid", metadata={"plan": "pro"}))
    assert result.provider_id.startswith("in_")
    assert (result.status, result.amount, result.currency) == ("succeeded", Decimal("12.50"),
                                                               "USD")
    invoice = fake.objects["invoice"][result.provider_id]
    assert invoice["status"] == "paid"
    assert (invoice["amount_paid"], invoice["collection_method"]) == (1250,
                                                                      "charge_automatically")
    assert invoice["metadata"] == {"plan": "pro"}
    assert fake.charge_of(result.provider_id)["amount"] == 1250


def test_charge_declined_is_failed_result(fake, provider, customer):
    fake.decline_customer(customer, message="Your card has insufficient funds.")
    result = provider.charge(charge_request(customer, "charge-declined"))
    assert result.status == "failed"
    assert result.failure_reason == "Your card has insufficient funds."
    assert fake.objects["invoice"][result.provider_id]["status"] == "open"


def test_send_invoice_pending(fake, provider, customer):
    result = provider.charge(charge_request(customer, "charge-sent", collection="send_invoice",
                                            days_until_due=14))
    assert result.status == "pending"
    invoice = fake.objects["invoice"][result.provider_id]
    assert (invoice["status"], invoice["days_until_due"]) == ("open", 14)
    assert fake.count("POST", f"/v1/invoices/{result.provider_id}/pay") == 0
    assert fake.count("POST", f"/v1/invoices/{result.provider_id}/send") == 1


def test_send_invoice_needs_days(provider, customer):
    with pytest.raises(PaymentProviderError, match="days_until_due"):
        provider.charge(charge_request(customer, "charge-no-days", collection="send_invoice"))


def test_retried_charge_bills_once(fake, provider, customer):
    first = provider.charge(charge_request(customer, "charge-retried"))
    second = provider.charge(charge_request(customer, "charge-retried"))
    assert first == second
    mine = [item for item in fake.objects["invoice"].values() if item["customer"] == customer]
    assert len(mine) == 1
    assert len([item for item in fake.objects["charge"].values()
                if item["customer"] == customer]) == 1
    replayed = [item for item in fake.requests if item.idempotency_key == "charge-retried-pay"]
    assert [item.replayed for item in replayed] == [False, True]


@pytest.mark.parametrize(("amount", "currency", "message"), [
    ("12.505", "USD", "whole number of cents"),
    ("0", "USD", "more than zero"),
    ("-5", "USD", "more than zero"),
    ("10", "EUR", "USD only"),
])
def test_bad_charge_refused(fake, provider, customer, amount, currency, message):
    before = len(fake.requests)
    request = ChargeRequest(provider_customer_id=customer, amount=Decimal(amount),
                            currency=currency, description="x", idempotency_key="bad")
    with pytest.raises(PaymentProviderError, match=message):
        provider.charge(request)
    assert len(fake.requests) == before


def test_server_error_is_retryable(fake, provider, customer):
    fake.fail_next(status=500, should_retry=False)
    with pytest.raises(PaymentProviderError) as caught:
        provider.charge(charge_request(customer, "charge-5xx"))
    assert caught.value.retryable


def test_full_refund(fake, provider, customer):
    invoice = paid_invoice(provider, customer, "refund-full")
    result = provider.refund(invoice, amount=None, idempotency_key="refund-full-r",
                             reason="requested_by_customer")
    assert result.provider_id.startswith("re_")
    assert (result.status, result.amount, result.currency) == ("succeeded", Decimal("12.50"),
                                                               "USD")
    charge = fake.charge_of(invoice)
    assert (charge["amount_refunded"], charge["refunded"]) == (1250, True)
    assert fake.objects["refund"][result.provider_id]["reason"] == "requested_by_customer"


def test_partial_refunds(fake, provider, customer):
    invoice = paid_invoice(provider, customer, "refund-part", amount="30.00")
    first = provider.refund(invoice, amount=Decimal("10.25"), idempotency_key="part-1",
                            reason="goodwill")
    again = provider.refund(invoice, amount=Decimal("10.25"), idempotency_key="part-1",
                            reason="goodwill")
    assert first == again
    assert first.amount == Decimal("10.25")
    assert fake.objects["refund"][first.provider_id]["metadata"]["fkod_reason"] == "goodwill"
    assert fake.charge_of(invoice)["amount_refunded"] == 1025
    with pytest.raises(PaymentProviderError, match="more than what is left") as caught:
        provider.refund(invoice, amount=Decimal("25"), idempotency_key="part-2")
    assert not caught.value.retryable


def test_refund_unknown_invoice(provider):
    with pytest.raises(PaymentProviderError, match="No such invoice"):
        provider.refund("in_missing", amount=None, idempotency_key="refund-missing")


def test_payout_transfer(fake, provider):
    request = PayoutRequest(destination="acct_1PartnerA", amount=Decimal("99.99"),
                            currency="USD", idempotency_key="payout-1", description="May")
    result = provider.payout(request)
    assert result.provider_id.startswith("tr_")
    assert (result.status, result.amount) == ("succeeded", Decimal("99.99"))
    transfer = fake.objects["transfer"][result.provider_id]
    assert (transfer["amount"], transfer["destination"]) == (9999, "acct_1PartnerA")
    assert provider.payout(request) == result
    assert fake.count("POST", "/v1/transfers") == 2
    assert len(fake.objects["transfer"]) == 1


@pytest.mark.parametrize("destination", ["", "acct_", "cus_123", "acct_12-3", "ada@example.com"])
def test_bad_payout_destination(fake, provider, destination):
    assert provider.payout_method == "stripe"
    assert provider.check_payout_destination(destination)
    request = PayoutRequest(destination=destination, amount=Decimal("5"), currency="USD",
                            idempotency_key="payout-bad")
    with pytest.raises(PaymentProviderError, match="Connect account"):
        provider.payout(request)


def test_good_payout_destination(provider):
    assert provider.check_payout_destination("acct_1Nv0FGQ9RKHgCVdK") is None


def test_interpret_invoice_events(provider):
    when = dt.datetime.fromtimestamp(1780000000, dt.UTC)
    invoice = {"id": "in_1", "object": "invoice", "currency": "usd", "status": "paid"}
    for kind in ("invoice.paid", "invoice.payment_succeeded"):
        update, = provider.interpret(event(kind, invoice))
        assert (update.kind, update.provider_id, update.occurred_at) == (
            "payment_succeeded", "in_1", when)
        assert update.amount is None
    update, = provider.interpret(event("invoice.payment_failed", invoice))
    assert (update.kind, update.provider_id) == ("payment_failed", "in_1")


def test_interpret_refund_and_dispute_by_lookup(fake, provider, customer):
    invoice = paid_invoice(provider, customer, "interpret-refund", amount="20.00")
    provider.refund(invoice, amount=Decimal("5.50"), idempotency_key="interpret-refund-r")
    update, = provider.interpret(event("charge.refunded", fake.charge_of(invoice)))
    assert (update.kind, update.provider_id, update.amount) == (
        "refund_succeeded", invoice, Decimal("5.50"))
    dispute = fake.dispute(fake.charge_of(invoice)["id"], amount=1450)
    update, = provider.interpret(event("charge.dispute.created", dispute))
    assert (update.kind, update.provider_id, update.amount, update.reason) == (
        "chargeback", invoice, Decimal("14.50"), "fraudulent")


def test_interpret_charge_naming_its_invoice(provider):
    charge = {"id": "ch_1", "object": "charge", "invoice": "in_old", "amount_refunded": 700,
              "currency": "usd"}
    update, = provider.interpret(event("charge.refunded", charge))
    assert (update.provider_id, update.amount) == ("in_old", Decimal("7.00"))


def test_interpret_charge_of_no_invoice(provider):
    charge = {"id": "ch_1", "object": "charge", "payment_intent": "pi_elsewhere",
              "amount_refunded": 700, "currency": "usd"}
    assert provider.interpret(event("charge.refunded", charge)) == []


def test_interpret_transfer_and_setup(fake, provider):
    result = provider.payout(PayoutRequest(destination="acct_9", amount=Decimal("3"),
                                           currency="USD", idempotency_key="payout-rev"))
    update, = provider.interpret(event("transfer.reversed",
                                       fake.reverse_transfer(result.provider_id)))
    assert (update.kind, update.provider_id) == ("payout_failed", result.provider_id)
    setup = {"id": "seti_1", "object": "setup_intent", "customer": "cus_1",
             "status": "succeeded"}
    update, = provider.interpret(event("setup_intent.succeeded", setup, created=1780000500))
    assert (update.kind, update.provider_id) == ("payment_method_ready", "cus_1")
    assert update.occurred_at == dt.datetime.fromtimestamp(1780000500, dt.UTC)


def test_interpret_unknown_event(provider, caplog):
    assert provider.interpret(event("customer.created", {"id": "cus_1"})) == []
    assert caplog.records == []


@pytest.mark.parametrize(("kind", "data"), [
    ("invoice.paid", {"object": "invoice"}),
    ("charge.refunded", {"id": "ch_1", "invoice": "in_1"}),
    ("charge.refunded", {"id": "ch_1", "amount_refunded": 5}),
    ("charge.dispute.created", {"id": "dp_1", "amount": "many", "payment_intent": "pi_1"}),
    ("setup_intent.succeeded", {"id": "seti_1", "customer": None}),
])
def test_interpret_incomplete_event(provider, kind, data, caplog):
    caplog.set_level("INFO", logger="fkod_stripe")
    assert provider.interpret(event(kind, data)) == []
    assert any(record.name == "fkod_stripe.provider" for record in caplog.records)


def test_fake_webhook_verifies(fake, provider):
    body, headers = fake.webhook("invoice.paid", {"id": "in_9", "object": "invoice"}, SECRET,
                                 created=1780000000)
    verified = provider.verify_webhook(body, headers)
    assert (verified.type, verified.data["id"]) == ("invoice.paid", "in_9")
    assert verified.created == dt.datetime.fromtimestamp(1780000000, dt.UTC)
    with pytest.raises(WebhookSignatureError):
        provider.verify_webhook(body, {"Stripe-Signature": headers["Stripe-Signature"]
                                       .replace("v1=", "v1=0")})
    other_body, other_headers = fake.webhook("invoice.paid", {"id": "in_9"}, "whsec_other")
    with pytest.raises(WebhookSignatureError):
        provider.verify_webhook(other_body, other_headers)


def test_fake_refuses_wrong_key(fake):
    provider = StripeProvider(api_key="sk_test_wrong", webhook_secret=SECRET, api_base=fake.url)
    with pytest.raises(PaymentProviderError, match="Invalid API Key") as caught:
        provider.set_up_payment_method("cus_1", return_url="https://portal.example/billing")
    assert not caught.value.retryable
    assert fake.requests[-1].status == 401


def test_fake_idempotency_key_with_other_body(fake):
    client = stripe.StripeClient(fake.api_key, base_addresses={"api": fake.url})
    client.v1.customers.create(params={"email": "a@example.com"},
                               options={"idempotency_key": "same-key"})
    with pytest.raises(stripe.IdempotencyError):
        client.v1.customers.create(params={"email": "b@example.com"},
                                   options={"idempotency_key": "same-key"})


def test_set_up_payment_method(fake, provider, customer):
    setup = provider.set_up_payment_method(customer, return_url="https://portal.example/b")
    assert setup.setup_id.startswith("seti_")
    assert setup.client_secret.startswith(f"{setup.setup_id}_secret_")


@pytest.mark.parametrize(("offset", "accepted"), [
    (-300, True), (300, True), (-301, False), (301, False)])
def test_signature_tolerance_both_directions(offset, accepted):
    now = 1_780_000_000
    header = signature(BODY, now + offset)
    if accepted:
        check_signature(BODY, header, SECRET, now=now)
    else:
        with pytest.raises(WebhookSignatureError, match="300 seconds"):
            check_signature(BODY, header, SECRET, now=now)


@pytest.mark.parametrize("header", [
    None, "", "t=1780000000", "v1=00", "t=1780000000,v1=" + "é" * 64,
    "t=1780000000,v1=\udcff", "t=١٧٨٠٠٠٠٠٠٠,v1=00", "t=1780000000000,v1=00",
    "t=1780000000,t=1780000000,v1=00", "t=1780000000,v1=" + "0" * 4096,
])
def test_malformed_signature_header_rejected(header):
    with pytest.raises(WebhookSignatureError) as caught:
        check_signature(BODY, header, SECRET, now=1_780_000_000)
    assert str(caught.value) == SIGNATURE_INVALID
