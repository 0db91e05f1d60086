"""The partner and admin billing API: revenue, invoices, payouts, payout methods and refunds."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import itertools
import json
import threading
import time
from decimal import Decimal

import pytest
import sqlalchemy as sa

from fkod.admin.testing import admin_with_headers
from fkod.core.audit import AuditEntry
from fkod.core.auth.models import Partner, PartnerMember, User
from fkod.core.billing import ledger
from fkod.core.billing.invoicing import collect_invoice
from fkod.core.billing.ledger import credit, debit
from fkod.core.billing.models import (
    BillingAccount,
    Invoice,
    InvoiceLine,
    LedgerEntry,
    LedgerTransaction,
    PartnerRevenue,
    Payment,
    Payout,
    RevenueLine,
)
from fkod.core.db import run_in_transaction
from fkod.core.ids import parse_id
from fkod.core.testing import auth_header, verify_partner
from fkod.core.webhooks.models import Event
from fkod.marketplace.models import Integration
from tests.envelope import assert_envelope

pytestmark = pytest.mark.shared_app

REVENUE = "/api/partners/revenue"
INVOICES = "/api/partners/invoices"
PAYOUT = "/api/partners/payout"
PAYOUTS = "/api/partners/payouts"
METHOD = "/api/partners/payout-method"
PAYMENT_METHOD = "/api/partners/billing/payment-method"
ADMIN_PAYOUTS = "/api/admin/payouts"
ADMIN_INVOICES = "/api/admin/invoices"
ADMIN_REVENUE = "/api/admin/revenue"
BANK = "DE89 3704 0044 0532 0130 00"

_references = itertools.count(1)


# Helpers ------------------------------------------------------------------------------


def in_db(app, work):
    return run_in_transaction(app.registry["db.session_factory"], work)


def number(partner: dict) -> int:
    return parse_id("partner", partner["id"])


def fund(app, partner: dict, amount: str) -> None:
    """Credit the partner's balance with ``amount``, as per-call revenue does."""
    value = Decimal(amount)

    def work(session):
        ledger.post(session, kind="revenue", reference=f"test-revenue:{next(_references)}",
                    description="Test revenue",
                    lines=[debit(ledger.MARKETPLACE_FUNDING, value),
                           credit(ledger.PARTNER_PAYABLE, value, number(partner))])

    in_db(app, work)


def balance(app, partner: dict) -> Decimal:
    return in_db(app, lambda session: ledger.partner_balance(session, number(partner)))


def add_revenue(app, partner: dict, year: int, month: int, *, calls: int, revenue: str,
                commission: str, share: str, status: str = "pending") -> None:
    start = dt.date(year, month, 1)
    end = (start + dt.timedelta(days=32)).replace(day=1) - dt.timedelta(days=1)

    def work(session):
        session.add(PartnerRevenue(
            partner_id=number(partner), period_start=start, period_end=end, api_calls=calls,
            revenue=Decimal(revenue), commission_rate=Decimal("30"),
            commission_amount=Decimal(commission), partner_share=Decimal(share),
            status=status))

    in_db(app, work)


def set_role(app, partner: dict, role: str) -> None:
    def work(session):
        session.execute(sa.update(PartnerMember)
                        .where(PartnerMember.partner_id == number(partner))
                        .values(role=role))

    in_db(app, work)


def payout_rows(app, partner: dict) -> list[Payout]:
    return in_db(app, lambda session: session.scalars(
        sa.select(Payout).where(Payout.partner_id == number(partner))).all())


def audit_actions(app, action: str) -> list[AuditEntry]:
    return in_db(app, lambda session: session.scalars(
        sa.select(AuditEntry).where(AuditEntry.action == action)).all())


def set_bank(client, headers, destination: str = BANK):
    return client.web.put_json(METHOD, {"method": "bank_transfer", "destination": destination},
                               headers=headers, status=200)


@pytest.fixture
def owner(client, app):
    """The owner of a verified partner, which payouts need."""
    partner, token = client.partner_with_token()
    verify_partner(app, partner["id"])
    return partner, auth_header(token)


@pytest.fixture
def funded(client, app, owner):
    """A partner with a bank transfer method and a balance of 250.00."""
    partner, headers = owner
    set_bank(client, headers)
    fund(app, partner, "250.00")
    return partner, headers


@pytest.fixture
def finance(client):
    return admin_with_headers(client, "finance")[1]


def check_ledger(app) -> None:
    assert in_db(app, ledger.unbalanced_transactions) == []


# Payout method ------------------------------------------------------------------------


def test_payout_method_encrypted_and_masked(client, app, owner):
    partner, headers = owner
    assert client.web.get(METHOD, headers=headers).json == {
        "method": None, "destination": None, "provider": None, "provider_enabled": False}

    body = set_bank(client, headers).json

    assert body == {"method": "bank_transfer", "destination": "****0 00",
                    "provider": "ledger", "provider_enabled": True}
    stored = in_db(app, lambda session: session.get(Partner, number(partner)))
    vault = app.registry["webhook_vault"]
    assert BANK not in stored.payout_destination
    assert vault.decrypt(stored.payout_destination) == BANK
    assert vault.decrypt(stored.bank_account) == BANK
    assert client.web.get(METHOD, headers=headers).json["destination"] == "****0 00"
    [entry] = audit_actions(app, "payout_method.changed")
    assert entry.details["method"] == "bank_transfer"
    assert BANK not in str(entry.details)
    assert "0130" not in str(entry.details)


@pytest.mark.parametrize(("destination", "reason"), [
    ("1234567", "8 to 100 characters"),
    ("account #12345678", "only letters"),
    ("ABCDEFGH 12", "6 digits or more"),
])
def test_bank_destination_is_checked(client, owner, destination, reason):
    _partner, headers = owner
    response = client.web.put_json(METHOD, {"method": "bank_transfer",
                                            "destination": destination},
                                   headers=headers, status=400)
    body = assert_envelope(response, 400, "validation_failed")
    assert body["errors"][0]["name"] == "destination"
    assert reason in body["errors"][0]["description"]


def test_payout_method_needs_enabled_provider(client, owner):
    _partner, headers = owner
    paypal = {"method": "paypal", "destination": "payouts@acme.example"}
    accepted = client.web.put_json(METHOD, paypal, headers=headers, status=200).json
    assert accepted["provider"] == "paypal"
    assert accepted["provider_enabled"] is True
    superadmin = admin_with_headers(client, "superadmin")[1]
    client.web.put_json("/api/admin/plugins/paypal", {"enabled": False}, headers=superadmin,
                        status=200)
    assert client.web.get(METHOD, headers=headers).json["provider_enabled"] is False
    response = client.web.put_json(METHOD, {"method": "paypal",
                                            "destination": "payouts@acme.example"},
                                   headers=headers, status=400)
    body = assert_envelope(response, 400, "validation_failed")
    assert body["errors"][0]["name"] == "method"


@pytest.mark.parametrize(("body", "field"), [
    ({}, "method"),
    ({"method": "bank_transfer"}, "destination"),
    ({"method": "cheque", "destination": BANK}, "method"),
    ({"method": "bank_transfer", "destination": 12345678}, "destination"),
    ({"method": "bank_transfer", "destination": BANK, "extra": 1}, "extra"),
])
def test_payout_method_body_is_validated(client, owner, body, field):
    _partner, headers = owner
    response = client.web.put_json(METHOD, body, headers=headers, status=400)
    assert field in [error["name"] for error in assert_envelope(response, 400)["errors"]]


def test_destination_alone_keeps_the_method(client, app, owner):
    _partner, headers = owner
    set_bank(client, headers)
    body = client.web.put_json(METHOD, {"destination": "GB29 NWBK 6016 1331 9268 19"},
                               headers=headers, status=200).json
    assert body["method"] == "bank_transfer"
    assert body["destination"] == "****8 19"


# Requesting payouts -------------------------------------------------------------------


def test_payout_below_minimum_is_409(client, app, owner):
    partner, headers = owner
    set_bank(client, headers)
    fund(app, partner, "99.99")
    response = client.web.post_json(PAYOUT, {}, headers=headers, status=409)
    body = assert_envelope(response, 409, "payout_below_minimum")
    assert "$100.00" in body["message"]
    assert payout_rows(app, partner) == []
    assert balance(app, partner) == Decimal("99.99")


def test_unverified_partner_cannot_request_a_payout(client, app):
    partner, token = client.partner_with_token()
    headers = auth_header(token)
    set_bank(client, headers)
    fund(app, partner, "250.00")

    response = client.web.post_json(PAYOUT, {}, headers=headers, status=409)

    body = assert_envelope(response, 409, "partner_not_verified")
    assert "/api/partners/verify" in body["message"]
    assert payout_rows(app, partner) == []
    assert balance(app, partner) == Decimal("250.00")


@pytest.mark.shared_app(False)
def test_payout_run_holds_an_unverified_balance(client, app, funded):
    from fkod.core.billing.payouts import payout_run

    unverified, token = client.partner_with_token()
    set_bank(client, auth_header(token))
    fund(app, unverified, "500.00")

    result = payout_run(app.registry)

    assert (result["created"], result["skipped_unverified"]) == (1, 1)
    assert payout_rows(app, unverified) == []
    assert balance(app, unverified) == Decimal("500.00")
    check_ledger(app)


def test_payout_without_method_is_409(client, app, owner):
    partner, headers = owner
    fund(app, partner, "150.00")
    response = client.web.post_json(PAYOUT, {}, headers=headers, status=409)
    assert_envelope(response, 409, "payout_method_missing")


def test_payout_of_the_exact_balance(client, app, funded):
    partner, headers = funded
    body = client.web.post_json(PAYOUT, {"amount": "250.00"}, headers=headers, status=201).json
    assert body["id"].startswith("po_")
    assert body["amount"] == "250.00"
    assert body["currency"] == "USD"
    assert body["status"] == "pending"
    assert body["source"] == "request"
    assert body["payout_method"] == "bank_transfer"
    assert body["balance_after"] == "0.00"
    assert balance(app, partner) == Decimal("0.00")
    assert [entry.target_id for entry in audit_actions(app, "payout.requested")] == [body["id"]]
    check_ledger(app)


def test_payout_defaults_to_whole_balance(client, app, funded):
    partner, headers = funded
    body = client.web.post_json(PAYOUT, {}, headers=headers, status=201).json
    assert body["amount"] == "250.00"
    assert balance(app, partner) == Decimal("0.00")


def test_payout_amount_as_number(client, app, funded):
    partner, headers = funded
    body = client.web.post_json(PAYOUT, {"amount": 120.5}, headers=headers, status=201).json
    assert body["amount"] == "120.50"
    assert balance(app, partner) == Decimal("129.50")


def test_payout_above_balance_is_409(client, app, funded):
    partner, headers = funded
    response = client.web.post_json(PAYOUT, {"amount": "250.01"}, headers=headers, status=409)
    assert_envelope(response, 409, "amount_exceeds_balance")
    assert balance(app, partner) == Decimal("250.00")


def test_second_open_payout_is_409(client, app, funded):
    partner, headers = funded
    client.web.post_json(PAYOUT, {"amount": "100.00"}, headers=headers, status=201)
    response = client.web.post_json(PAYOUT, {"amount": "100.00"}, headers=headers, status=409)
    assert_envelope(response, 409, "payout_already_open")
    assert len(payout_rows(app, partner)) == 1
    assert balance(app, partner) == Decimal("150.00")


def test_payout_retried_with_idempotency_key(client, app, funded):
    partner, headers = funded
    keyed = {**headers, "Idempotency-Key": "payout-1"}
    first = client.web.post_json(PAYOUT, {"amount": "100.00"}, headers=keyed, status=201)
    again = client.web.post_json(PAYOUT, {"amount": "100.00"}, headers=keyed, status=201)
    assert again.json == first.json
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(payout_rows(app, partner)) == 1
    assert balance(app, partner) == Decimal("150.00")

    other = client.web.post_json(PAYOUT, {"amount": "120.00"}, headers=keyed, status=422)
    assert_envelope(other, 422, "idempotency_key_reused")
    assert len(payout_rows(app, partner)) == 1


@pytest.mark.parametrize("amount", [
    "-5.00", -5, "0", "0.00", 0, "10.005", 10.005, "abc", "", True, [1], {},
    "1e3", "NaN",
])
def test_payout_amount_is_validated(client, app, funded, amount):
    partner, headers = funded
    response = client.web.post_json(PAYOUT, {"amount": amount}, headers=headers, status=400)
    body = assert_envelope(response, 400, "validation_failed")
    assert body["errors"][0]["name"] == "amount"
    assert payout_rows(app, partner) == []


def test_payout_body_refuses_extra_fields(client, funded):
    _partner, headers = funded
    response = client.web.post_json(PAYOUT, {"amount": "100.00", "currency": "USD"},
                                    headers=headers, status=400)
    assert assert_envelope(response, 400)["errors"][0]["name"] == "currency"


def test_read_only_member_cannot_write(client, app, funded):
    partner, headers = funded
    set_role(app, partner, "read_only")
    response = client.web.post_json(PAYOUT, {}, headers=headers, status=403)
    assert_envelope(response, 403)
    put = client.web.put_json(METHOD, {"method": "bank_transfer", "destination": BANK},
                              headers=headers, status=403)
    assert_envelope(put, 403)
    # Reading stays allowed.
    client.web.get(PAYOUTS, headers=headers, status=200)
    client.web.get(REVENUE, headers=headers, status=200)


def test_payouts_list_and_detail(client, app, funded):
    _partner, headers = funded
    created = client.web.post_json(PAYOUT, {"amount": "100.00"}, headers=headers,
                                   status=201).json
    listed = client.web.get(PAYOUTS, headers=headers).json
    assert [item["id"] for item in listed["data"]] == [created["id"]]
    assert listed["has_more"] is False
    detail = client.web.get(f"{PAYOUTS}/{created['id']}", headers=headers).json
    assert detail["amount"] == "100.00"
    assert detail["periods"] == []

    _other, other_token = client.partner_with_token()
    response = client.web.get(f"{PAYOUTS}/{created['id']}", headers=auth_header(other_token),
                              status=404)
    assert_envelope(response, 404, "not_found")
    client.web.get(f"{PAYOUTS}/po_999999", headers=headers, status=404)
    client.web.get(f"{PAYOUTS}/inv_1", headers=headers, status=404)


# Admin payouts ------------------------------------------------------------------------


def request_payout(client, headers, amount: str = "200.00") -> str:
    return client.web.post_json(PAYOUT, {"amount": amount}, headers=headers, status=201).json["id"]


def approve_and_send(client, app, finance, payout_id: str) -> dict:
    approved = client.web.post_json(f"{ADMIN_PAYOUTS}/{payout_id}/approve", {}, headers=finance,
                               status=200).json
    assert approved["approved_by"].startswith("admin_")
    # The send runs in a worker: joined in process, polled on the Redis broker.
    app.registry["tasks"].join()
    deadline = time.monotonic() + 20
    while True:
        payout = client.web.get(f"{ADMIN_PAYOUTS}/{payout_id}", headers=finance).json
        if payout["status"] != "pending" or time.monotonic() > deadline:
            return payout
        time.sleep(0.05)


@pytest.mark.shared_app(False)
def test_approve_send_and_mark_paid(client, app, funded, finance):
    partner, headers = funded
    add_revenue(app, partner, 2026, 1, calls=1000, revenue="357.15", commission="107.15",
                share="250.00")
    payout_id = request_payout(client, headers, "200.00")

    sent = approve_and_send(client, app, finance, payout_id)
    assert sent["status"] == "processing"
    assert sent["provider"] == "ledger"
    assert sent["provider_payout_id"].startswith("ledger_")
    assert sent["sent_at"] is not None
    assert [entry.target_id for entry in audit_actions(app, "payout.approved")] == [payout_id]

    paid = client.web.post_json(f"{ADMIN_PAYOUTS}/{payout_id}/mark-paid",
                                {"reference": "TRF 2026-02-01"}, headers=finance,
                                status=200).json
    assert paid["status"] == "paid"
    assert paid["paid_at"] is not None
    assert paid["periods"] == [{"period": "2026-01", "partner_share": "250.00"}]
    assert balance(app, partner) == Decimal("50.00")
    check_ledger(app)
    assert in_db(app, ledger.account_balances)[ledger.PAYOUTS_IN_TRANSIT] == Decimal("0.00")
    [entry] = audit_actions(app, "payout.marked_paid")
    assert entry.details["reference"] == "TRF 2026-02-01"

    report = client.web.get(REVENUE, headers=headers).json
    assert report["data"][0]["status"] == "paid"
    assert report["payouts"][0]["id"] == payout_id
    assert report["payouts"][0]["periods"][0]["period"] == "2026-01"

    again = client.web.post_json(f"{ADMIN_PAYOUTS}/{payout_id}/mark-paid", {}, headers=finance,
                                 status=409)
    assert_envelope(again, 409, "payout_not_processing")


def test_mark_failed_returns_the_money(client, app, funded, finance):
    partner, headers = funded
    payout_id = request_payout(client, headers, "200.00")
    assert balance(app, partner) == Decimal("50.00")
    approve_and_send(client, app, finance, payout_id)

    failed = client.web.post_json(f"{ADMIN_PAYOUTS}/{payout_id}/mark-failed",
                                  {"reason": "Account closed"}, headers=finance,
                                  status=200).json
    assert failed["status"] == "failed"
    assert failed["failure_reason"] == "Account closed"
    assert balance(app, partner) == Decimal("250.00")
    check_ledger(app)
    # The partner may ask again once the payout failed.
    request_payout(client, headers, "250.00")


def test_mark_paid_needs_processing(client, app, funded, finance):
    _partner, headers = funded
    payout_id = request_payout(client, headers)
    response = client.web.post_json(f"{ADMIN_PAYOUTS}/{payout_id}/mark-paid", {},
                                    headers=finance, status=409)
    assert_envelope(response, 409, "payout_not_processing")
    response = client.web.post_json(f"{ADMIN_PAYOUTS}/{payout_id}/mark-failed",
                                    {"reason": "x"}, headers=finance, status=409)
    assert_envelope(response, 409, "payout_not_processing")


def test_hold_then_approve(client, app, funded, finance):
    _partner, headers = funded
    payout_id = request_payout(client, headers)
    held = client.web.post_json(f"{ADMIN_PAYOUTS}/{payout_id}/hold",
                                {"reason": "Check the bank details"}, headers=finance,
                                status=200).json
    assert held["status"] == "on_hold"
    assert held["hold_reason"] == "Check the bank details"
    app.registry["tasks"].join()
    assert client.web.get(f"{ADMIN_PAYOUTS}/{payout_id}", headers=finance).json["status"] \
        == "on_hold"
    again = client.web.post_json(f"{ADMIN_PAYOUTS}/{payout_id}/hold", {"reason": "x"},
                                 headers=finance, status=409)
    assert_envelope(again, 409, "payout_not_pending")
    [entry] = audit_actions(app, "payout.held")
    assert entry.details["reason"] == "Check the bank details"

    sent = approve_and_send(client, app, finance, payout_id)
    assert sent["status"] == "processing"
    assert sent["hold_reason"] is None
    # A payout already sent cannot be approved again.
    response = client.web.post_json(f"{ADMIN_PAYOUTS}/{payout_id}/approve", {}, headers=finance,
                               status=409)
    assert_envelope(response, 409, "payout_not_pending")


def test_hold_reason_is_required(client, funded, finance):
    _partner, headers = funded
    payout_id = request_payout(client, headers)
    for body in ({}, {"reason": ""}, {"reason": 5}, {"reason": "x", "note": "y"}):
        response = client.web.post_json(f"{ADMIN_PAYOUTS}/{payout_id}/hold", body,
                                        headers=finance, status=400)
        assert_envelope(response, 400, "validation_failed")


@pytest.mark.shared_app(False)
def test_admin_payouts_list_filters(client, app, funded, finance):
    partner, headers = funded
    payout_id = request_payout(client, headers)
    other, other_token = client.partner_with_token()
    verify_partner(app, other["id"])
    set_bank(client, auth_header(other_token))
    fund(app, other, "300.00")
    other_payout = request_payout(client, auth_header(other_token), "300.00")

    listed = client.web.get(ADMIN_PAYOUTS, headers=finance).json
    assert [item["id"] for item in listed["data"]] == [other_payout, payout_id]
    mine = client.web.get(ADMIN_PAYOUTS, {"partner_id": partner["id"]}, headers=finance).json
    assert [item["id"] for item in mine["data"]] == [payout_id]
    assert mine["data"][0]["partner_id"] == partner["id"]
    paid = client.web.get(ADMIN_PAYOUTS, {"status": "paid"}, headers=finance).json
    assert paid["data"] == []
    page = client.web.get(ADMIN_PAYOUTS, {"limit": 1}, headers=finance).json
    assert page["has_more"] is True
    rest = client.web.get(ADMIN_PAYOUTS, {"limit": 1, "cursor": page["next_cursor"]},
                          headers=finance).json
    assert [item["id"] for item in rest["data"]] == [payout_id]
    for query in ({"status": "lost"}, {"partner_id": "42"}, {"sort": "id"}):
        response = client.web.get(ADMIN_PAYOUTS, query, headers=finance, status=400)
        assert_envelope(response, 400, "validation_failed")
    client.web.get(f"{ADMIN_PAYOUTS}/po_999999", headers=finance, status=404)


def test_read_only_admin_cannot_approve(client, funded):
    _partner, headers = funded
    payout_id = request_payout(client, headers)
    readonly = admin_with_headers(client, "readonly")[1]
    client.web.get(f"{ADMIN_PAYOUTS}/{payout_id}", headers=readonly, status=200)
    response = client.web.post_json(f"{ADMIN_PAYOUTS}/{payout_id}/approve", {}, headers=readonly,
                               status=403)
    assert_envelope(response, 403, "missing_permission")
    support = admin_with_headers(client, "support")[1]
    client.web.get(ADMIN_PAYOUTS, headers=support, status=403)


def test_partner_token_cannot_use_admin_api(client, funded):
    _partner, headers = funded
    payout_id = request_payout(client, headers)
    client.web.post_json(f"{ADMIN_PAYOUTS}/{payout_id}/approve", {}, headers=headers, status=401)


# Revenue ------------------------------------------------------------------------------


def test_revenue_report(client, app, funded):
    partner, headers = funded
    add_revenue(app, partner, 2026, 9, calls=10, revenue="100.00", commission="30.00",
                share="70.00")
    add_revenue(app, partner, 2026, 10, calls=5, revenue="33.33", commission="10.00",
                share="23.33")
    add_revenue(app, partner, 2026, 8, calls=1, revenue="1.00", commission="0.30",
                share="0.70")
    other, _token = client.partner_with_token()
    add_revenue(app, other, 2026, 10, calls=99, revenue="999.00", commission="299.70",
                share="699.30")

    report = client.web.get(REVENUE, {"limit": 2}, headers=headers).json
    assert [row["period"] for row in report["data"]] == ["2026-10", "2026-09"]
    assert report["data"][0] == {
        "period": "2026-10", "period_start": "2026-10-01", "period_end": "2026-10-31",
        "api_calls": 5, "currency": "USD", "revenue": "33.33", "commission_rate": "30.00",
        "commission_amount": "10.00", "partner_share": "23.33", "status": "pending",
        "paid_at": None}
    assert report["totals"] == {"api_calls": 16, "revenue": "134.33",
                                "commission_amount": "40.30", "partner_share": "94.03"}
    assert report["balance"] == "250.00"
    assert report["payouts"] == []
    assert report["has_more"] is True
    rest = client.web.get(REVENUE, {"limit": 2, "cursor": report["next_cursor"]},
                          headers=headers).json
    assert [row["period"] for row in rest["data"]] == ["2026-08"]
    assert rest["has_more"] is False
    assert rest["next_cursor"] is None


def test_revenue_period_with_lines(client, app, owner):
    partner, headers = owner

    def work(session):
        integration = Integration(partner_id=number(partner), name="Gradebook Sync",
                                  slug=f"gradebook-{next(_references)}", status="approved")
        session.add(integration)
        session.flush()
        session.add(RevenueLine(
            partner_id=number(partner), period_start=dt.date(2026, 10, 1),
            integration_id=integration.id, kind="call_fee", reference="test-line-1",
            description="1,000 calls", api_calls=1000, gross=Decimal("10.00"),
            commission_rate=Decimal("30"), commission=Decimal("3.00"),
            partner_share=Decimal("7.00")))
        return integration.id

    integration_id = in_db(app, work)
    add_revenue(app, partner, 2026, 10, calls=1000, revenue="10.00", commission="3.00",
                share="7.00")

    body = client.web.get(f"{REVENUE}/2026-10", headers=headers).json
    assert body["period"] == "2026-10"
    assert body["partner_share"] == "7.00"
    [line] = body["lines"]
    assert line["integration_id"] == f"int_{integration_id}"
    assert {key: line[key] for key in ("kind", "description", "api_calls", "gross",
                                       "commission_rate", "commission", "partner_share")} == {
        "kind": "call_fee", "description": "1,000 calls", "api_calls": 1000, "gross": "10.00",
        "commission_rate": "30.00", "commission": "3.00", "partner_share": "7.00"}

    for bad in ("2026-13", "2026-1", "october", "2026-10-01"):
        response = client.web.get(f"{REVENUE}/{bad}", headers=headers, status=400)
        assert assert_envelope(response, 400, "validation_failed")["errors"][0]["name"] \
            == "period"
    assert_envelope(client.web.get(f"{REVENUE}/2026-11", headers=headers, status=404), 404)
    _other, other_token = client.partner_with_token()
    client.web.get(f"{REVENUE}/2026-10", headers=auth_header(other_token), status=404)


@pytest.mark.shared_app(False)
def test_admin_revenue_per_partner(client, app, owner, finance):
    partner, _headers = owner
    other, _token = client.partner_with_token(company_name="Beta Schools")
    add_revenue(app, partner, 2026, 10, calls=5, revenue="10.00", commission="3.00",
                share="7.00")
    add_revenue(app, other, 2026, 10, calls=7, revenue="20.01", commission="6.00",
                share="14.01")
    add_revenue(app, other, 2026, 9, calls=1, revenue="1.00", commission="0.30", share="0.70")

    body = client.web.get(ADMIN_REVENUE, {"period": "2026-10"}, headers=finance).json
    assert body["period"] == "2026-10"
    assert {row["partner_id"]: row["company_name"] for row in body["data"]} == {
        partner["id"]: "Acme Learning", other["id"]: "Beta Schools"}
    assert body["totals"] == {"api_calls": 12, "revenue": "30.01", "commission_amount": "9.00",
                              "partner_share": "21.01"}
    default = client.web.get(ADMIN_REVENUE, headers=finance).json
    assert default["data"] == []
    response = client.web.get(ADMIN_REVENUE, {"period": "2026/10"}, headers=finance, status=400)
    assert assert_envelope(response, 400)["errors"][0]["name"] == "period"


# Invoices -----------------------------------------------------------------------------


def add_plan_invoice(app, partner: dict, *, total: str = "49.00", status: str = "open",
                     year: int = 2026, month: int = 10) -> int:
    amount = Decimal(total)

    def work(session):
        row = Invoice(kind="plan", partner_id=number(partner),
                      period_start=dt.date(year, month, 1),
                      period_end=dt.date(year, month, 28), currency="USD", total=amount,
                      status=status, provider="ledger")
        session.add(row)
        session.flush()
        session.add(InvoiceLine(invoice_id=row.id, kind="plan_fee", description="Growth plan",
                                quantity=1, unit_price=amount, amount=amount))
        ledger.post(session, kind="invoice", reference=f"invoice:{row.id}",
                    description="Test plan invoice",
                    lines=[debit(ledger.RECEIVABLE, amount), credit(ledger.PLAN_REVENUE, amount)])
        return row.id

    return in_db(app, work)


def test_partner_invoices_list_and_detail(client, app, owner):
    partner, headers = owner
    older = add_plan_invoice(app, partner, status="paid", month=9)
    newer = add_plan_invoice(app, partner, total="59.50")
    other, _other_token = client.partner_with_token()
    foreign = add_plan_invoice(app, other)

    listed = client.web.get(INVOICES, headers=headers).json
    assert [item["id"] for item in listed["data"]] == [f"inv_{newer}", f"inv_{older}"]
    open_only = client.web.get(INVOICES, {"status": "open"}, headers=headers).json
    assert [item["id"] for item in open_only["data"]] == [f"inv_{newer}"]
    assert open_only["data"][0]["total"] == "59.50"
    client.web.get(INVOICES, {"status": "late"}, headers=headers, status=400)

    detail = client.web.get(f"{INVOICES}/inv_{newer}", headers=headers).json
    assert detail["period"] == "2026-10"
    assert detail["lines"] == [{"kind": "plan_fee", "description": "Growth plan",
                                "quantity": 1, "unit_price": "59.500000", "amount": "59.50"}]
    assert detail["payments"] == []
    client.web.get(f"{INVOICES}/inv_{foreign}", headers=headers, status=404)
    client.web.get(f"{INVOICES}/pay_{newer}", headers=headers, status=404)


@pytest.mark.shared_app(False)
def test_admin_marks_a_ledger_invoice_paid(client, app, owner, finance):
    partner, headers = owner
    invoice_id = add_plan_invoice(app, partner)
    # The ledger provider leaves the charge pending until the transfer arrives.
    payment = collect_invoice(app.registry, invoice_id)
    assert payment.status == "pending"

    body = client.web.post_json(f"{ADMIN_INVOICES}/inv_{invoice_id}/mark-paid",
                                {"reference": "TRF-778"}, headers=finance, status=200).json
    assert body["status"] == "paid"
    [paid] = body["payments"]
    assert paid["id"] == f"pay_{payment.id}"
    assert paid["status"] == "succeeded"
    assert paid["amount"] == "49.00"
    events = in_db(app, lambda session: session.scalars(
        sa.select(Event).where(Event.type == "payment.processed")).all())
    assert [event.payload["data"]["id"] for event in events] == [f"pay_{payment.id}"]
    check_ledger(app)
    assert in_db(app, ledger.account_balances)[ledger.RECEIVABLE] == Decimal("0.00")
    [entry] = audit_actions(app, "invoice.marked_paid")
    assert entry.details["reference"] == "TRF-778"

    again = client.web.post_json(f"{ADMIN_INVOICES}/inv_{invoice_id}/mark-paid",
                                 {"reference": "TRF-778"}, headers=finance, status=409)
    assert_envelope(again, 409, "invoice_not_open")
    partner_view = client.web.get(f"{INVOICES}/inv_{invoice_id}", headers=headers).json
    assert partner_view["payments"][0]["status"] == "succeeded"


def test_admin_mark_paid_without_a_payment(client, app, owner, finance):
    partner, _headers = owner
    invoice_id = add_plan_invoice(app, partner, total="10.00")
    body = client.web.post_json(f"{ADMIN_INVOICES}/inv_{invoice_id}/mark-paid",
                                {"reference": "cash"}, headers=finance, status=200).json
    assert body["status"] == "paid"
    assert [payment["amount"] for payment in body["payments"]] == ["10.00"]
    for bad in ({}, {"reference": ""}, {"reference": 5}):
        client.web.post_json(f"{ADMIN_INVOICES}/inv_{invoice_id}/mark-paid", bad,
                             headers=finance, status=400)


@pytest.mark.shared_app(False)
def test_admin_invoice_filters(client, app, owner, finance):
    partner, _headers = owner
    first = add_plan_invoice(app, partner, month=9, status="paid")
    second = add_plan_invoice(app, partner)
    listed = client.web.get(ADMIN_INVOICES, {"partner_id": partner["id"], "kind": "plan"},
                            headers=finance).json
    assert [item["id"] for item in listed["data"]] == [f"inv_{second}", f"inv_{first}"]
    paid = client.web.get(ADMIN_INVOICES, {"status": "paid"}, headers=finance).json
    assert [item["id"] for item in paid["data"]] == [f"inv_{first}"]
    assert client.web.get(ADMIN_INVOICES, {"kind": "integrations"},
                          headers=finance).json["data"] == []
    client.web.get(ADMIN_INVOICES, {"kind": "other"}, headers=finance, status=400)


# Refunds ------------------------------------------------------------------------------


def add_integrations_invoice(app, partner: dict, customer_email: str) -> int:
    """A customer's invoice of 100.00 for the partner's integration, 70.00 to the partner."""

    def work(session):
        customer = session.scalar(sa.select(User).where(User.email == customer_email))
        integration = Integration(partner_id=number(partner), name="Attendance Pro",
                                  slug=f"attendance-{next(_references)}", status="approved",
                                  pricing_model="paid", price_cents=10000)
        session.add(integration)
        session.flush()

        row = Invoice(kind="integrations", user_id=customer.id,
                      period_start=dt.date(2026, 10, 1), period_end=dt.date(2026, 10, 31),
                      currency="USD", total=Decimal("100.00"), status="open",
                      provider="ledger")
        session.add(row)
        session.flush()
        line = InvoiceLine(invoice_id=row.id, kind="install_fee",
                           description="Attendance Pro, 2026-10", quantity=1,
                           unit_price=Decimal("100.00"), amount=Decimal("100.00"),
                           integration_id=integration.id)
        session.add(line)
        session.flush()

        session.add(RevenueLine(
            partner_id=number(partner), period_start=dt.date(2026, 10, 1),
            integration_id=integration.id, kind="install_fee",
            reference=f"install_fee:{line.id}", description=line.description,
            gross=Decimal("100.00"), commission_rate=Decimal("30"),
            commission=Decimal("30.00"), partner_share=Decimal("70.00")))
        ledger.post(session, kind="invoice", reference=f"invoice:{row.id}",
                    description="Test customer invoice",
                    lines=[debit(ledger.RECEIVABLE, Decimal("100.00")),
                           credit(ledger.PARTNER_PAYABLE, Decimal("70.00"), number(partner)),
                           credit(ledger.COMMISSION, Decimal("30.00"))])
        return row.id

    return in_db(app, work)


def test_ledger_refund_reduces_balance(client, app, owner, finance):
    partner, headers = owner
    customer = client.register_partner(company_name="Customer School")["user"]["email"]
    invoice_id = add_integrations_invoice(app, partner, customer)
    assert balance(app, partner) == Decimal("70.00")
    paid = client.web.post_json(f"{ADMIN_INVOICES}/inv_{invoice_id}/mark-paid",
                                {"reference": "TRF-1"}, headers=finance, status=200).json
    payment_id = paid["payments"][0]["id"]
    refund_path = f"/api/admin/payments/{payment_id}/refund"

    body = client.web.post_json(refund_path, {"amount": "10.00", "reason": "Outage"},
                                headers=finance, status=200).json
    assert body["status"] == "succeeded"
    assert body["amount"] == "10.00"
    assert body["payment"]["amount_refunded"] == "10.00"
    # The commission keeps 30 % of the refund, so the partner gives back its 7.00 share.
    assert balance(app, partner) == Decimal("63.00")
    check_ledger(app)

    too_much = client.web.post_json(refund_path, {"amount": "90.01", "reason": "x"},
                                    headers=finance, status=409)
    assert_envelope(too_much, 409, "refund_exceeds_payment")
    rest = client.web.post_json(refund_path, {"reason": "Cancelled"}, headers=finance,
                                status=200).json
    assert rest["amount"] == "90.00"
    assert rest["payment"]["amount_refunded"] == "100.00"
    assert balance(app, partner) == Decimal("0.00")
    check_ledger(app)
    invoice = client.web.get(f"{ADMIN_INVOICES}/inv_{invoice_id}", headers=finance).json
    assert invoice["amount_refunded"] == "100.00"
    assert len(audit_actions(app, "payment.refunded")) == 2
    nothing_left = client.web.post_json(refund_path, {"reason": "again"}, headers=finance,
                                        status=409)
    assert_envelope(nothing_left, 409, "refund_exceeds_payment")
    revenue = client.web.get(f"{REVENUE}", headers=headers).json
    assert revenue["balance"] == "0.00"


def test_refund_needs_a_succeeded_payment(client, app, owner, finance):
    partner, _headers = owner
    invoice_id = add_plan_invoice(app, partner)
    payment = collect_invoice(app.registry, invoice_id)
    path = f"/api/admin/payments/pay_{payment.id}/refund"
    response = client.web.post_json(path, {"reason": "x"}, headers=finance, status=409)
    assert_envelope(response, 409, "payment_not_succeeded")
    for bad in ({}, {"reason": "x", "amount": "-1"}, {"reason": "x", "amount": "1.001"},
                {"reason": "x", "amount": "ten"}, {"reason": "x", "extra": True}):
        client.web.post_json(path, bad, headers=finance, status=400)
    client.web.post_json("/api/admin/payments/pay_999999/refund", {"reason": "x"},
                         headers=finance, status=404)
    readonly = admin_with_headers(client, "readonly")[1]
    client.web.post_json(path, {"reason": "x"}, headers=readonly, status=403)
    assert in_db(app, lambda session: session.get(Payment, payment.id)).amount_refunded \
        == Decimal("0.00")


# Payment method for plan invoices -----------------------------------------------------


def test_payment_method_setup_through_ledger(client, app, owner):
    partner, headers = owner
    body = client.web.post_json(PAYMENT_METHOD, {"return_url": "https://portal.example/done"},
                                headers=headers, status=200).json
    assert body["provider"] == "ledger"
    assert body["setup_id"] == f"ledger_partner_{number(partner)}_transfer"
    assert body["redirect_url"] == "https://portal.example/done"
    assert body["client_secret"] is None
    # The second setup reuses the customer created by the first.
    client.web.post_json(PAYMENT_METHOD, {"return_url": "http://127.0.0.1:8080/done"},
                         headers=headers, status=200)
    accounts = in_db(app, lambda session: session.scalars(sa.select(BillingAccount).where(
        BillingAccount.owner_type == "partner",
        BillingAccount.owner_id == number(partner))).all())
    assert [account.provider_customer_id for account in accounts] == [
        f"ledger_partner_{number(partner)}"]

    for url in ("http://portal.example/done", "ftp://x.example/", "/relative", ""):
        response = client.web.post_json(PAYMENT_METHOD, {"return_url": url}, headers=headers,
                                        status=400)
        assert assert_envelope(response, 400)["errors"][0]["name"] == "return_url"
    client.web.post_json(PAYMENT_METHOD, {}, headers=headers, status=400)


def use_billing_provider(app, partner: dict, name: str) -> None:
    def work(session):
        session.get(Partner, number(partner)).billing_provider = name

    in_db(app, work)


def test_payment_method_provider_errors(client, app, owner):
    partner, headers = owner
    body = {"return_url": "https://portal.example/"}
    # The Stripe plugin is enabled but has no API key in tests, so Stripe refuses.
    use_billing_provider(app, partner, "stripe")
    response = client.web.post_json(PAYMENT_METHOD, body, headers=headers, status=502)
    assert "Stripe" in assert_envelope(response, 502, "payment_provider_error")["message"]

    use_billing_provider(app, partner, "no_such_provider")
    response = client.web.post_json(PAYMENT_METHOD, body, headers=headers, status=503)
    assert_envelope(response, 503, "payment_provider_unavailable")


@pytest.mark.shared_app(False)
def test_concurrent_requests_create_one_payout(client, app, funded):
    partner, headers = funded
    barrier = threading.Barrier(4)

    def request(index):
        barrier.wait()
        response = client.web.post_json(PAYOUT, {"amount": "120.00"},
                                        headers={**headers, "Idempotency-Key": f"race-{index}"},
                                        expect_errors=True)
        return response.status_int, response.json.get("code")

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        results = sorted(pool.map(request, range(4)))

    assert results[0] == (201, None)
    assert results[1:] == [(409, "payout_already_open")] * 3
    payouts = in_db(app, lambda session: session.scalars(sa.select(Payout)).all())
    assert len(payouts) == 1
    assert balance(app, partner) == Decimal("130.00")
    check_ledger(app)


# Minimum, idempotency and audit of payouts ----------------------------------------------


def test_payout_minimum_setting_applies(app_factory):
    from fkod.core.testing import TestClient

    small_app = app_factory(**{"fkod.billing.payout_minimum": "10.00"})
    small_client = TestClient(small_app)
    partner, token = small_client.partner_with_token()
    verify_partner(small_app, partner["id"])
    headers = auth_header(token)
    set_bank(small_client, headers)
    fund(small_app, partner, "9.99")
    transactions = in_db(small_app, lambda session: session.scalar(
        sa.select(sa.func.count()).select_from(LedgerTransaction)))

    response = small_client.web.post_json(PAYOUT, {}, headers=headers, status=409)

    body = assert_envelope(response, 409, "payout_below_minimum")
    assert "$10.00" in body["message"]
    assert "$9.99" in body["message"]
    assert payout_rows(small_app, partner) == []
    assert balance(small_app, partner) == Decimal("9.99")
    assert in_db(small_app, lambda session: session.scalar(
        sa.select(sa.func.count()).select_from(LedgerTransaction))) == transactions

    fund(small_app, partner, "0.01")
    paid = small_client.web.post_json(PAYOUT, {}, headers=headers, status=201).json
    assert paid["amount"] == "10.00"


def test_failed_payout_shows_its_reason(client, app, funded, finance):
    _partner, headers = funded
    payout_id = request_payout(client, headers, "150.00")
    approve_and_send(client, app, finance, payout_id)
    client.web.post_json(f"{ADMIN_PAYOUTS}/{payout_id}/mark-failed",
                         {"reason": "IBAN rejected by the receiving bank"}, headers=finance,
                         status=200)

    payout = client.web.get(f"{PAYOUTS}/{payout_id}", headers=headers).json

    assert payout["status"] == "failed"
    assert payout["failure_reason"] == "IBAN rejected by the receiving bank"
    assert payout["failed_at"] is not None


def reserve_entries(app, partner: dict) -> list:
    """Return the partner_payable debits that reserve payouts of ``partner``."""
    return in_db(app, lambda session: session.scalars(
        sa.select(LedgerEntry).where(LedgerEntry.partner_id == number(partner),
                                            LedgerEntry.account == ledger.PARTNER_PAYABLE,
                                            LedgerEntry.amount > 0)).all())


def test_concurrent_retries_with_one_key(client, app, funded):
    partner, headers = funded
    keyed = {**headers, "Idempotency-Key": "payout-race"}
    barrier = threading.Barrier(5)

    def request(_index):
        barrier.wait()
        response = client.web.post_json(PAYOUT, {"amount": "100.00"}, headers=keyed,
                                        expect_errors=True)
        return response.status_int, response.json

    with concurrent.futures.ThreadPoolExecutor(max_workers=5) as pool:
        results = list(pool.map(request, range(5)))

    created = [body for status, body in results if status == 201]
    in_progress = [body for status, body in results if status == 409]
    assert len(created) + len(in_progress) == 5
    assert created
    assert len({body["id"] for body in created}) == 1
    assert {body["code"] for body in in_progress} <= {"idempotency_request_in_progress"}
    assert len(payout_rows(app, partner)) == 1
    assert [entry.amount for entry in reserve_entries(app, partner)] == [Decimal("100.00")]
    assert balance(app, partner) == Decimal("150.00")

    replay = client.web.post_json(PAYOUT, {"amount": "100.00"}, headers=keyed, status=201)
    assert replay.json == created[0]
    assert len(reserve_entries(app, partner)) == 1
    check_ledger(app)


def test_idempotency_keys_belong_to_one_partner(client, app, funded):
    partner, headers = funded
    other, other_token = client.partner_with_token()
    verify_partner(app, other["id"])
    other_headers = auth_header(other_token)
    set_bank(client, other_headers)
    fund(app, other, "300.00")

    mine = client.web.post_json(PAYOUT, {"amount": "100.00"},
                                headers={**headers, "Idempotency-Key": "shared-key"},
                                status=201).json
    theirs = client.web.post_json(PAYOUT, {"amount": "100.00"},
                                  headers={**other_headers, "Idempotency-Key": "shared-key"},
                                  status=201)

    assert "Idempotent-Replayed" not in theirs.headers
    assert theirs.json["id"] != mine["id"]
    assert [row.amount for row in payout_rows(app, other)] == [Decimal("100.00")]
    assert balance(app, partner) == Decimal("150.00")
    assert balance(app, other) == Decimal("200.00")


@pytest.mark.shared_app(False)
def test_payout_run_is_audited(client, app, funded):
    from fkod.core.billing.payouts import payout_run

    partner, headers = funded
    small, small_token = client.partner_with_token()
    set_bank(client, auth_header(small_token))
    fund(app, small, "40.00")

    result = payout_run(app.registry)

    assert (result["created"], result["rolled_over"]) == (1, 1)
    payout, = payout_rows(app, partner)
    [created] = audit_actions(app, "payout.created")
    assert (created.actor_type, created.partner_id, created.target_id) == (
        "system", number(partner), f"po_{payout.id}")
    assert created.details == {"amount": "250.00", "source": "run"}
    [sent] = audit_actions(app, "payout.sent")
    assert (sent.actor_type, sent.target_id) == ("system", f"po_{payout.id}")
    assert sent.details == {"amount": "250.00", "provider": "ledger", "status": "processing"}
    [run] = audit_actions(app, "payout_run.started")
    assert run.partner_id is None
    assert run.details == {"created": 1, "rolled_over": 1, "skipped_no_method": 0,
                           "skipped_unverified": 0}
    # The partner's own audit log lists both entries.
    log = client.web.get("/api/partners/audit-log?action=payout.*", headers=headers).json
    assert sorted(entry["action"] for entry in log["data"]) == ["payout.created", "payout.sent"]


# Rounding of shares ----------------------------------------------------------------------


def no_float(text: str):
    raise AssertionError(f"a binary float {text} in a money response")


def sell_installs(app, partner: dict, prices_cents: list[int]) -> None:
    """Publish one paid integration per price and have one customer install them all."""
    from fkod.marketplace.models import IntegrationInstall

    def work(session):
        customer = User(email=f"buyer{next(_references)}@example.com", name="Buyer")
        session.add(customer)
        integrations = [Integration(partner_id=number(partner), name=f"Sale {index}",
                                    status="published", pricing_model="paid",
                                    price_cents=price)
                        for index, price in enumerate(prices_cents)]
        session.add_all(integrations)
        session.flush()
        session.add_all([IntegrationInstall(integration_id=integration.id, user_id=customer.id,
                                            status="active",
                                            installed_at=dt.datetime(2026, 11, 20))
                         for integration in integrations])

    in_db(app, work)


def revenue_of(client, headers, period: str) -> dict:
    response = client.web.get(f"{REVENUE}/{period}", headers=headers)
    return json.loads(response.text, parse_float=no_float)


def period_totals(row: dict) -> tuple[str, str, str]:
    return row["revenue"], row["commission_amount"], row["partner_share"]


def test_each_sale_splits_exactly(client, app, owner, finance):
    from fkod.core.billing.invoicing import close_period
    from fkod.core.billing.periods import Period

    partner, headers = owner
    other, other_token = client.partner_with_token()
    verify_partner(app, other["id"])
    other_headers = auth_header(other_token)
    client.web.put_json(f"/api/admin/partners/{other['id']}/overrides",
                        {"commission_rate": "0.3333"}, headers=finance, status=200)
    sell_installs(app, partner, [645, 1])
    sell_installs(app, other, [10] * 1000)

    close_period(app.registry, Period(2026, 11), now=dt.datetime(2026, 12, 2, 12))

    # 30 % of 6.45 is 1.935, rounded half up to 1.94, and the partner gets the other 4.51.
    # 30 % of 0.01 is 0.003, rounded to 0.00, so the partner gets the whole cent.
    period_revenue = revenue_of(client, headers, "2026-11")
    assert [(line["gross"], line["commission"], line["partner_share"])
            for line in period_revenue["lines"]] == [("6.45", "1.94", "4.51"),
                                                     ("0.01", "0.00", "0.01")]
    assert period_totals(period_revenue) == ("6.46", "1.94", "4.52")
    assert period_revenue["commission_rate"] == "30.00"

    # 33.33 % of 0.10 is 0.03333, rounded to 0.03, on each of the 1,000 lines, so the
    # period's commission is the sum of the lines' 30.00, not 33.33 % of the total.
    period_revenue = revenue_of(client, other_headers, "2026-11")
    assert len(period_revenue["lines"]) == 1000
    assert {(line["gross"], line["commission"], line["partner_share"], line["commission_rate"])
            for line in period_revenue["lines"]} == {("0.10", "0.03", "0.07", "33.33")}
    assert period_totals(period_revenue) == ("100.00", "30.00", "70.00")
    assert period_revenue["commission_rate"] == "33.33"

    for member_headers, share in ((headers, "4.52"), (other_headers, "70.00")):
        report = json.loads(client.web.get(REVENUE, headers=member_headers).text,
                            parse_float=no_float)
        assert report["totals"]["partner_share"] == share
        assert report["balance"] == share
        assert report["data"][0]["partner_share"] == share
    check_ledger(app)
