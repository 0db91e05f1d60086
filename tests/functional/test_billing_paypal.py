"""Payouts to PayPal through the PayPal plugin, against a local fake PayPal."""

from __future__ import annotations

from decimal import Decimal

import pytest

from fkod.core.billing.models import Payout
from fkod.core.billing.payouts import payout_run
from fkod.core.testing import TestClient
from tests.functional.test_billing_engine import (
    assert_ledger_balanced,
    balance,
    credit_partner,
    new_partner,
    rows,
)

fake_paypal = pytest.importorskip("fkod_paypal.testing")

WEBHOOK_ID = "WH-FKOD-TEST"
WEBHOOK = "/api/billing/providers/paypal/webhook"


@pytest.fixture
def fake():
    with fake_paypal.FakePayPal() as server:
        yield server


@pytest.fixture
def paypal_app(app_factory, fake):
    return app_factory(**{"fkod_paypal.client_id": fake.client_id,
                          "fkod_paypal.client_secret": fake.client_secret,
                          "fkod_paypal.api_base": fake.url,
                          "fkod_paypal.webhook_id": WEBHOOK_ID})


@pytest.fixture
def client(paypal_app):
    return TestClient(paypal_app)


def paypal_partner(app, client, amount):
    vault = app.registry["webhook_vault"]
    partner_id = new_partner(client, payout_method="paypal",
                             payout_destination=vault.encrypt("finance@acme.example"))
    credit_partner(app, partner_id, amount, f"t:paypal:{partner_id}")
    return partner_id


def item_event(fake, event_type, batch_id, event_id):
    resource = {"payout_batch_id": batch_id, "payout_item_id": "ITEM1",
                "transaction_status": event_type.rsplit(".", 1)[-1]}
    return fake.webhook(event_type, resource, WEBHOOK_ID, event_id=event_id)


def test_payout_sent_to_paypal_then_confirmed_once(paypal_app, client, fake):
    partner_id = paypal_partner(paypal_app, client, Decimal("321.09"))

    payout_run(paypal_app.registry)

    payout, = rows(paypal_app, Payout)
    assert (payout.status, payout.provider) == ("processing", "paypal")
    sent, = fake.payouts
    item, = sent["request"]["items"]
    assert item["amount"] == {"value": "321.09", "currency": "USD"}
    assert item["receiver"] == "finance@acme.example"
    assert sent["request_id"] == payout.idempotency_key

    body, headers = item_event(fake, "PAYMENT.PAYOUTS-ITEM.SUCCEEDED", payout.provider_payout_id,
                               "WH-1")
    first = client.web.post(WEBHOOK, body, headers=headers, status=200).json
    again = client.web.post(WEBHOOK, body, headers=headers, status=200).json

    assert first["outcome"][0]["result"] == "applied"
    assert again["duplicate"] is True
    payout, = rows(paypal_app, Payout)
    assert payout.status == "paid"
    assert payout.paid_at is not None
    assert balance(paypal_app, partner_id) == Decimal("0.00")
    assert_ledger_balanced(paypal_app)


def test_denied_payout_returns_the_money(paypal_app, client, fake):
    partner_id = paypal_partner(paypal_app, client, Decimal("150.00"))
    payout_run(paypal_app.registry)
    payout, = rows(paypal_app, Payout)

    body, headers = item_event(fake, "PAYMENT.PAYOUTS-ITEM.FAILED", payout.provider_payout_id,
                               "WH-2")
    client.web.post(WEBHOOK, body, headers=headers, status=200)

    payout, = rows(paypal_app, Payout)
    assert payout.status == "failed"
    assert balance(paypal_app, partner_id) == Decimal("150.00")
    # The next run pays the returned balance again, under a new idempotency key.
    payout_run(paypal_app.registry)
    assert len(fake.payouts) == 2
    assert_ledger_balanced(paypal_app)


def test_paypal_outage_keeps_the_payout_for_the_next_attempt(paypal_app, client, fake):
    partner_id = paypal_partner(paypal_app, client, Decimal("500.00"))
    fake.fail_next(status=503, times=1)

    payout_run(paypal_app.registry)

    payout, = rows(paypal_app, Payout)
    assert payout.status == "pending"
    assert fake.payouts == []
    assert balance(paypal_app, partner_id) == Decimal("0.00")
    payout_run(paypal_app.registry)
    payout, = rows(paypal_app, Payout)
    assert payout.status == "processing"
    assert len(fake.payouts) == 1
    assert fake.payouts[0]["request_id"] == payout.idempotency_key


def test_forged_event_refused(client, fake):
    body, headers = item_event(fake, "PAYMENT.PAYOUTS-ITEM.SUCCEEDED", "BATCH", "WH-3")
    tampered = body.replace(b"BATCH", b"OTHER")
    error = client.web.post(WEBHOOK, tampered, headers=headers, status=400).json
    assert error["code"] == "invalid_signature"
