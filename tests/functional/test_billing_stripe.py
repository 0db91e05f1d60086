"""Billing through the Stripe plugin against a local fake Stripe: collection and inbound events."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import json
import threading
import time
from decimal import Decimal

import pytest
import sqlalchemy as sa
import stripe

from fkod.core.billing import ledger
from fkod.core.billing.invoicing import close_period, collect_invoice
from fkod.core.billing.models import (
    BillingAccount,
    Invoice,
    LedgerTransaction,
    Payment,
    ProviderEventRecord,
)
from fkod.core.db import run_in_transaction
from tests.functional.test_billing_engine import (
    AFTER_NOVEMBER,
    NOVEMBER,
    assert_ledger_balanced,
    balance,
    in_transaction,
    paid_install,
    rows,
    settled_payments,
)

fake_stripe = pytest.importorskip("fkod_stripe.testing")

SECRET = "whsec_billing_engine_test"  # noqa: S105 (a test value)
WEBHOOK = "/api/billing/providers/stripe/webhook"


@pytest.fixture
def fake():
    with fake_stripe.FakeStripe() as server:
        yield server


@pytest.fixture
def stripe_app(app_factory, fake):
    return app_factory(**{"fkod_stripe.api_key": fake.api_key, "fkod_stripe.api_base": fake.url,
                          "fkod_stripe.webhook_secret": SECRET,
                          "fkod.billing.default_provider": "stripe"})


@pytest.fixture
def stripe_client(stripe_app):
    from fkod.core.testing import TestClient

    return TestClient(stripe_app)


def post_event(client, fake, event_type, obj, *, event_id=None, created=None, status=200):
    body, headers = fake.webhook(event_type, obj, SECRET, event_id=event_id, created=created)
    return client.web.post(WEBHOOK, body, headers=headers, status=status).json


def stripe_client_for(fake):
    return stripe.StripeClient(fake.api_key, base_addresses={"api": fake.url})


def billed_customer(stripe_app, stripe_client, *, price_cents=2500):
    partner_id, _integration_id, user_id = paid_install(stripe_app, stripe_client,
                                                        price_cents=price_cents)
    close_period(stripe_app.registry, NOVEMBER, now=AFTER_NOVEMBER)
    invoice, = rows(stripe_app, Invoice, Invoice.user_id == user_id)
    settled_payments(stripe_app, invoice.id)
    return partner_id, invoice


def test_invoice_collected_then_paid_event_applied_once(stripe_app, stripe_client, fake):
    partner_id, invoice = billed_customer(stripe_app, stripe_client)
    payment, = rows(stripe_app, Payment, Payment.invoice_id == invoice.id)
    # No saved card yet: Stripe sends the invoice and it stays open.
    assert (payment.status, payment.provider) == ("pending", "stripe")
    stripe_invoice = fake.objects["invoice"][payment.provider_payment_id]
    assert (stripe_invoice["amount_due"], stripe_invoice["collection_method"]) == (
        2500, "send_invoice")
    assert stripe_invoice["metadata"]["fkod_invoice"] == f"inv_{invoice.id}"

    stripe_client_for(fake).v1.invoices.pay(payment.provider_payment_id)
    first = post_event(stripe_client, fake, "invoice.paid", payment.provider_payment_id,
                       event_id="evt_paid_1")
    again = post_event(stripe_client, fake, "invoice.paid", payment.provider_payment_id,
                       event_id="evt_paid_1")

    assert first["duplicate"] is False
    assert first["outcome"] == [{"kind": "payment_succeeded",
                                 "provider_id": payment.provider_payment_id,
                                 "result": "applied"}]
    assert again["duplicate"] is True
    payment, = rows(stripe_app, Payment, Payment.invoice_id == invoice.id)
    assert payment.status == "succeeded"
    assert len(rows(stripe_app, ProviderEventRecord)) == 1
    assert balance(stripe_app, partner_id) == Decimal("17.50")
    assert_ledger_balanced(stripe_app)


def test_refund_arriving_before_payment_success(stripe_app, stripe_client, fake):
    partner_id, invoice = billed_customer(stripe_app, stripe_client, price_cents=10000)
    payment, = rows(stripe_app, Payment, Payment.invoice_id == invoice.id)
    client = stripe_client_for(fake)
    client.v1.invoices.pay(payment.provider_payment_id)
    charge = fake.charge_of(payment.provider_payment_id)
    client.v1.refunds.create(params={"charge": charge["id"], "amount": 4000})
    refunded = fake.objects["charge"][charge["id"]]
    paid_at = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)

    # charge.refunded comes first: the payment is recorded as paid, then refunded.
    outcome = post_event(stripe_client, fake, "charge.refunded", refunded,
                         event_id="evt_refund")["outcome"]
    assert outcome[0]["result"] == "applied"
    late_paid = post_event(stripe_client, fake, "invoice.paid", payment.provider_payment_id,
                           event_id="evt_paid", created=paid_at)
    older_failure = post_event(stripe_client, fake, "invoice.payment_failed",
                               payment.provider_payment_id, event_id="evt_failed",
                               created=paid_at - dt.timedelta(minutes=1))

    assert late_paid["outcome"][0]["result"] == "already succeeded"
    assert older_failure["outcome"][0]["result"] == "older than the payment's success"
    payment, = rows(stripe_app, Payment, Payment.invoice_id == invoice.id)
    assert (payment.status, payment.amount_refunded) == ("succeeded", Decimal("40.00"))
    # 100.00 earned 70.00; the 40.00 refund takes back 28.00 of it.
    assert balance(stripe_app, partner_id) == Decimal("42.00")
    # The same refund reported again by a new event changes nothing.
    post_event(stripe_client, fake, "charge.refunded", refunded, event_id="evt_refund_again")
    assert balance(stripe_app, partner_id) == Decimal("42.00")
    assert_ledger_balanced(stripe_app)


def test_saved_card_is_charged_and_dispute_reverses_the_share(stripe_app, stripe_client, fake):
    partner_id, _integration_id, user_id = paid_install(stripe_app, stripe_client,
                                                        price_cents=5000)
    close_period(stripe_app.registry, NOVEMBER, now=AFTER_NOVEMBER)
    invoice, = rows(stripe_app, Invoice, Invoice.user_id == user_id)
    settled_payments(stripe_app, invoice.id)
    account, = rows(stripe_app, BillingAccount)
    # The customer saves a card; the next collection charges it at once.
    post_event(stripe_client, fake, "setup_intent.succeeded",
               {"id": "seti_1", "object": "setup_intent", "status": "succeeded",
                "customer": account.provider_customer_id}, event_id="evt_setup")
    # The emailed invoice went unpaid; the next attempt uses a new idempotency key.
    run_in_transaction(stripe_app.registry["db.session_factory"], lambda session: session.execute(
        sa.update(Payment).where(Payment.invoice_id == invoice.id).values(status="failed")))

    payment = collect_invoice(stripe_app.registry, invoice.id)

    assert payment.status == "succeeded"
    assert fake.objects["invoice"][payment.provider_payment_id]["status"] == "paid"
    charge = fake.charge_of(payment.provider_payment_id)
    post_event(stripe_client, fake, "charge.dispute.created",
               fake.dispute(charge["id"]), event_id="evt_dispute")
    assert balance(stripe_app, partner_id) == Decimal("0.00")
    assert_ledger_balanced(stripe_app)


def test_bad_signature_and_unknown_provider(stripe_client, fake):
    body, headers = fake.webhook("invoice.paid", {"id": "in_x"}, "whsec_wrong")
    error = stripe_client.web.post(WEBHOOK, body, headers=headers, status=400).json
    assert error["code"] == "invalid_signature"
    stripe_client.web.post(WEBHOOK, b"{}", status=400)
    stripe_client.web.post("/api/billing/providers/nope/webhook", b"{}", status=404)
    # The ledger provider takes no inbound events.
    error = stripe_client.web.post("/api/billing/providers/ledger/webhook", b"{}",
                                   status=400).json
    assert "no webhooks" in error["message"]


def test_oversized_event_refused(stripe_client):
    body = b"{" + b" " * (512 * 1024) + b"}"
    error = stripe_client.web.post(WEBHOOK, body, status=413).json
    assert error["code"] == "payload_too_large"


def test_unknown_payment_is_recorded_without_effect(stripe_app, stripe_client, fake):
    result = post_event(stripe_client, fake, "invoice.paid",
                        {"id": "in_unknown", "object": "invoice", "status": "paid"},
                        event_id="evt_unknown")
    assert result["outcome"][0]["result"] == "unknown payment"
    totals = run_in_transaction(stripe_app.registry["db.session_factory"],
                                ledger.account_balances)
    assert totals == {}


def test_connect_transfer_payout_and_its_reversal(stripe_app, stripe_client, fake):
    from fkod.core.billing.models import Payout
    from fkod.core.billing.payouts import payout_run
    from tests.functional.test_billing_engine import credit_partner, new_partner

    vault = stripe_app.registry["webhook_vault"]
    partner_id = new_partner(stripe_client, payout_method="stripe",
                             payout_destination=vault.encrypt("acct_1PartnerConnect"))
    credit_partner(stripe_app, partner_id, Decimal("250.00"), "t:stripe")

    payout_run(stripe_app.registry)

    payout, = rows(stripe_app, Payout)
    assert (payout.status, payout.provider) == ("paid", "stripe")
    transfer = fake.objects["transfer"][payout.provider_payout_id]
    assert (transfer["amount"], transfer["destination"]) == (25000, "acct_1PartnerConnect")
    assert balance(stripe_app, partner_id) == Decimal("0.00")

    result = post_event(stripe_client, fake, "transfer.reversed",
                        fake.reverse_transfer(payout.provider_payout_id), event_id="evt_rev")
    assert result["outcome"][0]["result"] == "applied"
    payout, = rows(stripe_app, Payout)
    assert payout.status == "failed"
    assert balance(stripe_app, partner_id) == Decimal("250.00")
    assert_ledger_balanced(stripe_app)


# Signature checks of inbound events ---------------------------------------------------------


def signed_event(event_type="invoice.paid", obj=None, *, event_id="evt_signed"):
    """Return a Stripe event as a dict, for tests that serialize and sign it themselves."""
    return {"id": event_id, "object": "event", "created": int(time.time()), "livemode": False,
            "type": event_type,
            "data": {"object": obj or {"id": "in_none", "object": "invoice", "status": "paid"}}}


def post_raw(client, body: bytes, signature, *, status):
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["Stripe-Signature"] = signature
    return client.web.post(WEBHOOK, body, headers=headers, status=status)


def test_signature_covers_the_raw_bytes(stripe_client):
    event = signed_event(obj={"status": "paid", "object": "invoice", "id": "in_raw",
                              "description": "Caf\u00e9 \u2615 \"quoted\" \\ back",
                              "amount_due": 0.1})
    # Pretty-printed, keys in reverse order and non-ASCII written as \u escapes.
    pretty = json.dumps(dict(reversed(event.items())), indent=4, ensure_ascii=True).encode()
    assert b"\\u00e9" in pretty
    signature = fake_stripe.sign(pretty, SECRET)

    accepted = post_raw(stripe_client, pretty, signature, status=200).json
    compact = json.dumps(json.loads(pretty), separators=(",", ":")).encode()
    refused = post_raw(stripe_client, compact, signature, status=400).json

    assert accepted["duplicate"] is False
    assert accepted["outcome"] == [{"kind": "payment_succeeded", "provider_id": "in_raw",
                                    "result": "unknown payment"}]
    assert refused["code"] == "invalid_signature"


@pytest.mark.shared_app
@pytest.mark.parametrize(("offset", "status"), [
    (0, 200), (-299, 200), (299, 200), (-301, 400), (301, 400), (3600, 400), (-3600, 400)])
def test_signature_timestamp_tolerance(stripe_client, offset, status):
    body = json.dumps(signed_event(event_id=f"evt_tolerance_{offset}")).encode()
    signature = fake_stripe.sign(body, SECRET, timestamp=int(time.time()) + offset)
    response = post_raw(stripe_client, body, signature, status=status)
    if status == 400:
        assert response.json["code"] == "invalid_signature"
        assert "300 seconds" in response.json["message"]


def malformed_signatures(body: bytes) -> dict[str, str | None]:
    now = int(time.time())
    good = fake_stripe.sign(body, SECRET, timestamp=now)
    digest = good.split("v1=")[1]
    return {
        "milliseconds": fake_stripe.sign(body, SECRET, timestamp=now * 1000),
        "letters": good.replace(f"t={now}", "t=abc"),
        "empty timestamp": good.replace(f"t={now}", "t="),
        "no timestamp": f"v1={digest}",
        "non-ASCII digest": f"t={now},v1={'é' * 64}",
        "63 hex digits": f"t={now},v1={digest[:63]}",
        "65 hex digits": f"t={now},v1={digest}0",
        "empty digest": f"t={now},v1=",
        "missing": None,
        "repeated": f"{good}, {good}",
        "10 KB": f"{good},{'v0=' + 'a' * 10_240}",
        "other scheme only": f"t={now},v0={digest}",
    }


def test_malformed_signatures_get_one_400(stripe_client):
    body = json.dumps(signed_event(event_id="evt_malformed")).encode()
    bodies = {}
    for name, signature in malformed_signatures(body).items():
        response = post_raw(stripe_client, body, signature, status=400)
        error = response.json
        assert error["code"] == "invalid_signature", name
        bodies[name] = {key: value for key, value in error.items() if key != "request_id"}
    assert len({json.dumps(error, sort_keys=True) for error in bodies.values()}) == 1
    # None of them was stored, so the event can still arrive correctly signed.
    good = fake_stripe.sign(body, SECRET)
    assert post_raw(stripe_client, body, good, status=200).json["duplicate"] is False


def test_rotated_secret_signature_accepted(stripe_client):
    body = json.dumps(signed_event(event_id="evt_rotated")).encode()
    now = int(time.time())
    old = fake_stripe.sign(body, "whsec_old_secret", timestamp=now).split("v1=")[1]
    new = fake_stripe.sign(body, SECRET, timestamp=now).split("v1=")[1]
    post_raw(stripe_client, body, f"t={now},v1={old},v1={new}", status=200)


# Duplicates and order -----------------------------------------------------------------------


def count_transactions(app) -> int:
    return in_transaction(app, lambda session: session.scalar(
        sa.select(sa.func.count()).select_from(LedgerTransaction)))


def test_concurrent_duplicate_event_applied_once(stripe_app, stripe_client, fake):
    partner_id, invoice = billed_customer(stripe_app, stripe_client)
    payment, = rows(stripe_app, Payment, Payment.invoice_id == invoice.id)
    stripe_client_for(fake).v1.invoices.pay(payment.provider_payment_id)
    body, headers = fake.webhook("invoice.paid", payment.provider_payment_id, SECRET,
                                 event_id="evt_twice")
    before = count_transactions(stripe_app)
    barrier = threading.Barrier(2)

    def deliver(_index):
        barrier.wait()
        response = stripe_client.web.post(WEBHOOK, body, headers=headers, expect_errors=True)
        return response.status_int, response.json["duplicate"]

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        results = sorted(pool.map(deliver, range(2)))
    after_concurrent = count_transactions(stripe_app)
    again = [stripe_client.web.post(WEBHOOK, body, headers=headers, status=200).json
             for _ in range(2)]

    assert results == [(200, False), (200, True)]
    assert [each["duplicate"] for each in again] == [True, True]
    assert after_concurrent > before
    assert count_transactions(stripe_app) == after_concurrent
    assert len(rows(stripe_app, ProviderEventRecord)) == 1
    assert balance(stripe_app, partner_id) == Decimal("17.50")
    assert_ledger_balanced(stripe_app)


def test_event_failed_with_503_is_applied_on_retry(stripe_app, stripe_client, fake):
    partner_id, invoice = billed_customer(stripe_app, stripe_client, price_cents=10000)
    payment, = rows(stripe_app, Payment, Payment.invoice_id == invoice.id)
    client = stripe_client_for(fake)
    client.v1.invoices.pay(payment.provider_payment_id)
    post_event(stripe_client, fake, "invoice.paid", payment.provider_payment_id,
               event_id="evt_paid_first")
    charge = fake.charge_of(payment.provider_payment_id)
    client.v1.refunds.create(params={"charge": charge["id"], "amount": 10000})
    body, headers = fake.webhook("charge.refunded", charge["id"], SECRET,
                                 event_id="evt_refund_retry")

    # The charge names no invoice, and Stripe fails the look-up of its invoice.
    fake.fail_next(status=500, should_retry=False)
    failed = stripe_client.web.post(WEBHOOK, body, headers=headers, status=503).json
    assert failed["code"] == "provider_unavailable"
    assert rows(stripe_app, ProviderEventRecord,
                ProviderEventRecord.event_id == "evt_refund_retry") == []
    assert balance(stripe_app, partner_id) == Decimal("70.00")

    retried = stripe_client.web.post(WEBHOOK, body, headers=headers, status=200).json
    assert (retried["duplicate"], retried["outcome"][0]["result"]) == (False, "applied")
    assert balance(stripe_app, partner_id) == Decimal("0.00")
    assert_ledger_balanced(stripe_app)


def test_newer_success_survives_older_failure(stripe_app, stripe_client, fake):
    partner_id, invoice = billed_customer(stripe_app, stripe_client)
    payment, = rows(stripe_app, Payment, Payment.invoice_id == invoice.id)
    stripe_client_for(fake).v1.invoices.pay(payment.provider_payment_id)
    now = dt.datetime.now(dt.UTC)

    # invoice.paid (T2) arrives first, then invoice.payment_failed from T1 < T2.
    paid = post_event(stripe_client, fake, "invoice.paid", payment.provider_payment_id,
                      event_id="evt_t2", created=now - dt.timedelta(seconds=10))
    failed = post_event(stripe_client, fake, "invoice.payment_failed",
                        payment.provider_payment_id, event_id="evt_t1",
                        created=now - dt.timedelta(seconds=70))

    assert paid["outcome"][0]["result"] == "applied"
    assert failed["outcome"][0]["result"] == "older than the payment's success"
    payment, = rows(stripe_app, Payment, Payment.invoice_id == invoice.id)
    invoice, = rows(stripe_app, Invoice, Invoice.id == invoice.id)
    assert (payment.status, invoice.status) == ("succeeded", "paid")
    assert balance(stripe_app, partner_id) == Decimal("17.50")


# A customer's install through the marketplace API ----------------------------------------


def test_marketplace_install_charged_by_stripe(stripe_app, stripe_client, fake):
    from fkod.core.billing.periods import Period
    from fkod.core.db import utcnow
    from fkod.core.webhooks.models import Event
    from tests.functional.test_marketplace_installs import (
        add_integration,
        install,
        make_customer,
        make_publisher,
    )

    publisher = make_publisher(stripe_client)
    integration_id = add_integration(stripe_app, publisher.partner_id, plugin_name=None,
                                     config_schema=None, pricing_model="paid")
    customer = make_customer(stripe_client)
    install(stripe_client, customer, integration_id)
    period = Period.containing(utcnow())

    close_period(stripe_app.registry, period, now=period.end_at + dt.timedelta(days=1))

    invoice, = rows(stripe_app, Invoice, Invoice.kind == "integrations")
    assert (invoice.user_id, invoice.total, invoice.provider) == (
        int(customer.user_id.removeprefix("user_")), Decimal("9.00"), "stripe")
    payment, = settled_payments(stripe_app, invoice.id)
    sent = fake.objects["invoice"][payment.provider_payment_id]
    assert (sent["amount_due"], sent["currency"]) == (900, "usd")
    customer_at_stripe = fake.objects["customer"][sent["customer"]]
    assert customer_at_stripe["email"] == customer.email

    stripe_client_for(fake).v1.invoices.pay(payment.provider_payment_id)
    post_event(stripe_client, fake, "invoice.paid", payment.provider_payment_id,
               event_id="evt_install_paid")

    invoice, = rows(stripe_app, Invoice, Invoice.id == invoice.id)
    assert invoice.status == "paid"
    # 9.00 at 30 % commission: 2.70 to F-KOD, 6.30 to the publisher.
    assert balance(stripe_app, publisher.partner_id) == Decimal("6.30")
    processed, = rows(stripe_app, Event, Event.type == "payment.processed")
    assert processed.payload["data"]["amount"] == "9.00"
    assert_ledger_balanced(stripe_app)


def test_payout_goes_to_api_set_account(stripe_app, stripe_client, fake):
    from fkod.core.billing.models import Payout
    from fkod.core.billing.payouts import send_payout
    from fkod.core.ids import parse_id
    from fkod.core.testing import auth_header, verify_partner
    from tests.functional.test_billing_engine import credit_partner

    partner, token = stripe_client.partner_with_token()
    verify_partner(stripe_app, partner["id"])
    headers = auth_header(token)
    partner_id = parse_id("partner", partner["id"])
    method = "/api/partners/payout-method"
    refused = stripe_client.web.put_json(method, {"method": "stripe", "destination": "acct-1"},
                                         headers=headers, status=400).json
    assert refused["errors"][0]["name"] == "destination"
    assert "acct_" in refused["errors"][0]["description"]
    chosen = stripe_client.web.put_json(method, {"method": "stripe",
                                                 "destination": "acct_1ApiChosen"},
                                        headers=headers, status=200).json
    assert (chosen["method"], chosen["provider"], chosen["provider_enabled"]) == (
        "stripe", "stripe", True)
    assert "acct_1ApiChosen" not in chosen["destination"]
    credit_partner(stripe_app, partner_id, Decimal("120.00"), "t:stripe-api")

    requested = stripe_client.web.post_json("/api/partners/payout", {}, headers=headers,
                                            status=201).json
    send_payout(stripe_app.registry, parse_id("po", requested["id"]))

    payout, = rows(stripe_app, Payout, Payout.partner_id == partner_id)
    assert (payout.status, payout.payout_method, payout.amount) == (
        "paid", "stripe", Decimal("120.00"))
    transfer = fake.objects["transfer"][payout.provider_payout_id]
    assert (transfer["destination"], transfer["amount"]) == ("acct_1ApiChosen", 12000)
    assert balance(stripe_app, partner_id) == Decimal("0.00")
