"""Billing through the Stripe plugin against a local fake Stripe: collection and inbound events."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import sqlalchemy as sa
import stripe

from fkod.core.billing import ledger
from fkod.core.billing.invoicing import close_period, collect_invoice
from fkod.core.billing.models import BillingAccount, Invoice, Payment, ProviderEventRecord
from fkod.core.db import run_in_transaction
from tests.functional.test_billing_engine import (
    AFTER_NOVEMBER,
    NOVEMBER,
    assert_ledger_balanced,
    balance,
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
    from tests.functional.test_billing_engine import credit_partner, new_partner

    from fkod.core.billing.models import Payout
    from fkod.core.billing.payouts import payout_run

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
