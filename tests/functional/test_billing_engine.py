"""The billing engine end to end: period close, revenue share, collection, payouts, the ledger."""

from __future__ import annotations

import datetime as dt
import time
from decimal import Decimal

import pytest
import sqlalchemy as sa

from fkod.core.auth.models import ApiKey, Partner, User
from fkod.core.billing import ledger
from fkod.core.billing.invoicing import (
    apply_refund,
    close_period,
    collect_invoice,
    mark_payment_succeeded,
)
from fkod.core.billing.jobs import close_due_periods
from fkod.core.billing.models import (
    Invoice,
    InvoiceLine,
    PartnerRevenue,
    Payment,
    Payout,
    Plan,
    PlanChange,
    RevenueLine,
)
from fkod.core.billing.payouts import mark_payout_paid, payout_run
from fkod.core.billing.periods import Period
from fkod.core.db import run_in_transaction
from fkod.core.ids import parse_id
from fkod.core.metering.models import ApiUsageHourly
from fkod.core.webhooks.models import Event
from fkod.marketplace.models import Integration, IntegrationInstall

NOVEMBER = Period(2026, 11)
AFTER_NOVEMBER = dt.datetime(2026, 12, 2, 12, 0)


def in_transaction(app, work):
    return run_in_transaction(app.registry["db.session_factory"], work)


def add_usage(app, *, partner_id, key_id=None, hour, count, livemode=True, status=200):
    def work(session):
        session.add(ApiUsageHourly(
            hour=hour, api_key_id=key_id, partner_id=partner_id, livemode=livemode,
            endpoint="/api/users", method="GET", status_code=status, request_count=count,
            total_response_time_ms=count, max_response_time_ms=1, request_bytes=0,
            response_bytes=0, latency_histogram={}))

    in_transaction(app, work)


def new_partner(client, plan="free", **fields) -> int:
    """Register a verified partner on ``plan``; ``fields`` set other columns of its row."""
    partner, _token = client.partner_with_token()
    number = parse_id("partner", partner["id"])

    def work(session):
        row = session.get(Partner, number)
        row.plan_id = session.scalar(sa.select(Plan.id).where(Plan.code == plan))
        # Signed up before the months the tests bill.
        row.created_at = dt.datetime(2026, 8, 1)
        row.verification_status = "verified"
        for name, value in fields.items():
            setattr(row, name, value)

    in_transaction(client.app, work)
    return number


def new_integration(app, partner_id, **fields) -> int:
    def work(session):
        integration = Integration(partner_id=partner_id, name=fields.pop("name", "Course Sync"),
                                  status="published", **fields)
        session.add(integration)
        session.flush()
        return integration.id

    return in_transaction(app, work)


def new_key(app, partner_id, integration_id=None) -> int:
    def work(session):
        key = ApiKey(partner_id=partner_id, key_name="billing", key_hash=f"h{partner_id}"
                     f"-{integration_id}", key_prefix="fkod_live_x", livemode=True,
                     integration_id=integration_id, scopes=[], allowed_ips=[])
        session.add(key)
        session.flush()
        return key.id

    return in_transaction(app, work)


def new_customer(app, email="learner@example.com") -> int:
    def work(session):
        user = User(email=email, name="Lee Learner")
        session.add(user)
        session.flush()
        return user.id

    return in_transaction(app, work)


def rows(app, model, *where):
    return in_transaction(app, lambda session: list(session.scalars(
        sa.select(model).where(*where).order_by(model.id))))


def settled_payments(app, invoice_id, timeout: float = 20) -> list[Payment]:
    """Wait until the invoice's collection has stored its result; return its payments.

    On the production stack the collection runs in a worker thread fed by Redis,
    so joining the in-process queue does not wait for it.
    """
    app.registry["tasks"].join()
    deadline = time.monotonic() + timeout
    while True:
        payments = rows(app, Payment, Payment.invoice_id == invoice_id)
        if payments and all(payment.status != "processing" for payment in payments):
            return payments
        if time.monotonic() > deadline:
            raise AssertionError(f"invoice {invoice_id} was not collected: {payments}")
        time.sleep(0.05)


def balance(app, partner_id) -> Decimal:
    return in_transaction(app, lambda session: ledger.partner_balance(session, partner_id))


def assert_ledger_balanced(app):
    assert in_transaction(app, ledger.unbalanced_transactions) == []
    totals = in_transaction(app, ledger.account_balances)
    assert sum(totals.values(), Decimal(0)) == 0


# The spec's example ----------------------------------------------------------------


def test_spec_example_one_million_calls(app, client):
    partner_id = new_partner(client)
    integration_id = new_integration(app, partner_id, price_per_call=Decimal("0.001"))
    key_id = new_key(app, partner_id, integration_id)
    # 1,000,000 live calls in November, spread over two hours.
    add_usage(app, partner_id=partner_id, key_id=key_id, hour=dt.datetime(2026, 11, 3, 10),
              count=600_000)
    add_usage(app, partner_id=partner_id, key_id=key_id, hour=dt.datetime(2026, 11, 30, 23),
              count=400_000)

    close_period(app.registry, NOVEMBER, now=AFTER_NOVEMBER)

    revenue, = rows(app, PartnerRevenue, PartnerRevenue.partner_id == partner_id)
    assert (revenue.api_calls, revenue.revenue, revenue.commission_rate) == (
        1_000_000, Decimal("1000.00"), Decimal("30.00"))
    assert (revenue.commission_amount, revenue.partner_share) == (
        Decimal("300.00"), Decimal("700.00"))
    assert (revenue.period_start, revenue.period_end) == (dt.date(2026, 11, 1),
                                                          dt.date(2026, 11, 30))
    assert balance(app, partner_id) == Decimal("700.00")
    assert_ledger_balanced(app)


def test_closing_twice_changes_nothing(app, client):
    partner_id = new_partner(client, plan="starter")
    integration_id = new_integration(app, partner_id, price_per_call=Decimal("0.0025"))
    key_id = new_key(app, partner_id, integration_id)
    add_usage(app, partner_id=partner_id, key_id=key_id, hour=dt.datetime(2026, 11, 5, 8),
              count=320_001)

    first = close_period(app.registry, NOVEMBER, now=AFTER_NOVEMBER)
    snapshot = (rows(app, Invoice), rows(app, InvoiceLine), rows(app, RevenueLine),
                balance(app, partner_id))
    second = close_period(app.registry, NOVEMBER, now=AFTER_NOVEMBER + dt.timedelta(days=3))

    assert first.plan_invoices == 1
    assert second.plan_invoices == 0
    assert second.revenue_lines == 0
    assert [invoice.id for invoice in rows(app, Invoice)] == [i.id for i in snapshot[0]]
    assert len(rows(app, InvoiceLine)) == len(snapshot[1])
    assert len(rows(app, RevenueLine)) == len(snapshot[2])
    assert balance(app, partner_id) == snapshot[3]
    revenue, = rows(app, PartnerRevenue)
    # 320,001 × 0.0025 = 800.0025, rounded half up once to 800.00.
    assert (revenue.revenue, revenue.commission_amount, revenue.partner_share) == (
        Decimal("800.00"), Decimal("240.00"), Decimal("560.00"))


def test_period_not_ended_is_refused(app):
    from fkod.core.billing.invoicing import PeriodNotReady

    with pytest.raises(PeriodNotReady):
        close_period(app.registry, NOVEMBER, now=dt.datetime(2026, 11, 30, 23, 59, 59))


# Period boundaries ------------------------------------------------------------------


def test_month_end_call_belongs_to_that_month_only():
    last_moment = dt.datetime(2026, 11, 30, 23, 59, 59, 999000)
    assert Period.containing(last_moment) == NOVEMBER
    assert NOVEMBER.start_at <= last_moment < NOVEMBER.end_at
    assert not Period(2026, 12).start_at <= last_moment < Period(2026, 12).end_at
    assert Period.containing(NOVEMBER.end_at) == Period(2026, 12)
    assert str(Period(2026, 12).next()) == "2027-01"
    assert str(Period(2027, 1).previous()) == "2026-12"
    assert NOVEMBER.end == dt.date(2026, 11, 30)
    assert Period(2028, 2).end == dt.date(2028, 2, 29)


@pytest.mark.parametrize("text", ["2026-13", "2026-1", "26-11", "2026-11-01", "", "abcd-ef"])
def test_period_parse_refuses(text):
    with pytest.raises(ValueError):
        Period.parse(text)


def test_boundary_hours_are_billed_in_their_own_month(app, client):
    partner_id = new_partner(client, plan="pay_as_you_go")
    # The last hour of November counts in November; the first of December does not.
    add_usage(app, partner_id=partner_id, hour=dt.datetime(2026, 11, 30, 23), count=7)
    add_usage(app, partner_id=partner_id, hour=dt.datetime(2026, 12, 1, 0), count=1000)
    add_usage(app, partner_id=partner_id, hour=dt.datetime(2026, 10, 31, 23), count=500)

    close_period(app.registry, NOVEMBER, now=AFTER_NOVEMBER)

    invoice, = rows(app, Invoice, Invoice.partner_id == partner_id)
    overage, = rows(app, InvoiceLine, InvoiceLine.invoice_id == invoice.id)
    assert (overage.kind, overage.quantity, overage.amount) == ("overage", 7, Decimal("0.01"))
    assert invoice.total == Decimal("0.01")


# Plan invoices -------------------------------------------------------------------


def test_plan_invoice_fee_and_overage_counts_billable_live_calls(app, client):
    partner_id = new_partner(client, plan="starter")
    hour = dt.datetime(2026, 11, 10, 9)
    add_usage(app, partner_id=partner_id, hour=hour, count=349_000)
    add_usage(app, partner_id=partner_id, hour=hour, count=1_000, status=404)
    # Refused, failed and test-mode calls cost nothing.
    add_usage(app, partner_id=partner_id, hour=hour, count=9_999, status=429)
    add_usage(app, partner_id=partner_id, hour=hour, count=8_888, status=503)
    add_usage(app, partner_id=partner_id, hour=hour, count=77_777, livemode=False)

    close_period(app.registry, NOVEMBER, now=AFTER_NOVEMBER)

    invoice, = rows(app, Invoice, Invoice.partner_id == partner_id)
    lines = rows(app, InvoiceLine, InvoiceLine.invoice_id == invoice.id)
    assert [(line.kind, line.quantity, line.amount) for line in lines] == [
        ("plan_fee", 1, Decimal("99.00")), ("overage", 50_000, Decimal("50.00"))]
    assert lines[1].details == {"billable_calls": 350_000, "included": 300_000,
                                "plan": "starter"}
    assert (invoice.total, invoice.status, invoice.kind) == (Decimal("149.00"), "open", "plan")
    assert_ledger_balanced(app)


def test_upgrade_is_prorated_and_downgrade_waits(app, client):
    partner_id = new_partner(client, plan="starter")

    def history(session):
        starter, professional = (session.scalar(sa.select(Plan.id).where(Plan.code == code))
                                 for code in ("starter", "professional"))
        session.add(PlanChange(partner_id=partner_id, from_plan_id=starter,
                               to_plan_id=professional, kind="upgrade", status="applied",
                               effective_at=dt.datetime(2026, 11, 16), proration=Decimal("200.00"),
                               applied_at=dt.datetime(2026, 11, 16)))
        session.get(Partner, partner_id).plan_id = professional

    in_transaction(app, history)
    add_usage(app, partner_id=partner_id, hour=dt.datetime(2026, 11, 20), count=3_000_100)

    close_period(app.registry, NOVEMBER, now=AFTER_NOVEMBER)

    invoice, = rows(app, Invoice, Invoice.partner_id == partner_id)
    lines = rows(app, InvoiceLine, InvoiceLine.invoice_id == invoice.id)
    # The month began on Starter; it ended on Professional, whose volume decides overage.
    assert [(line.kind, line.amount) for line in lines] == [
        ("plan_fee", Decimal("99.00")), ("proration", Decimal("200.00")),
        ("overage", Decimal("0.10"))]
    assert invoice.total == Decimal("299.10")


def test_free_partner_without_usage_gets_no_invoice(app, client):
    new_partner(client)
    summary = close_period(app.registry, NOVEMBER, now=AFTER_NOVEMBER)
    assert summary.plan_invoices == 0
    assert rows(app, Invoice) == []


# Customers of paid integrations ---------------------------------------------------


def paid_install(app, client, *, price_cents=1000, installed_at=dt.datetime(2026, 11, 20)):
    partner_id = new_partner(client)
    integration_id = new_integration(app, partner_id, pricing_model="paid",
                                     price_cents=price_cents)
    user_id = new_customer(app)

    def work(session):
        session.add(IntegrationInstall(integration_id=integration_id, user_id=user_id,
                                       status="active", installed_at=installed_at))

    in_transaction(app, work)
    return partner_id, integration_id, user_id


def test_install_fee_is_invoiced_and_shared(app, client):
    partner_id, integration_id, user_id = paid_install(app, client, price_cents=1999)

    close_period(app.registry, NOVEMBER, now=AFTER_NOVEMBER)

    invoice, = rows(app, Invoice, Invoice.user_id == user_id)
    assert (invoice.kind, invoice.total, invoice.provider) == ("integrations", Decimal("19.99"),
                                                               "ledger")
    line, = rows(app, RevenueLine, RevenueLine.partner_id == partner_id)
    # 30 % of 19.99 is 5.997, rounded half up to 6.00; the partner keeps the rest.
    assert (line.gross, line.commission, line.partner_share) == (
        Decimal("19.99"), Decimal("6.00"), Decimal("13.99"))
    assert line.integration_id == integration_id
    assert balance(app, partner_id) == Decimal("13.99")
    assert_ledger_balanced(app)


def test_install_after_the_month_is_not_billed(app, client):
    paid_install(app, client, installed_at=dt.datetime(2026, 12, 1))
    assert close_period(app.registry, NOVEMBER, now=AFTER_NOVEMBER).customer_invoices == 0


def test_collection_through_the_ledger_and_payment_processed(app, client):
    partner_id, _integration_id, user_id = paid_install(app, client)
    close_period(app.registry, NOVEMBER, now=AFTER_NOVEMBER)
    invoice, = rows(app, Invoice, Invoice.user_id == user_id)
    payment, = settled_payments(app, invoice.id)
    # A bank transfer waits for an admin; collecting again sends nothing new.
    assert (payment.status, payment.provider, payment.amount) == ("pending", "ledger",
                                                                  Decimal("10.00"))
    assert collect_invoice(app.registry, invoice.id) is None
    assert len(rows(app, Payment)) == 1

    def received(session):
        return mark_payment_succeeded(app.registry, session, session.get(Payment, payment.id),
                                      dt.datetime(2026, 12, 5))

    assert in_transaction(app, received) is True
    assert in_transaction(app, received) is False
    invoice, = rows(app, Invoice, Invoice.id == invoice.id)
    assert (invoice.status, invoice.paid_at) == ("paid", dt.datetime(2026, 12, 5))
    events = rows(app, Event, Event.type == "payment.processed")
    assert len(events) == 1
    assert events[0].payload["data"]["amount"] == "10.00"
    assert events[0].payload["data"]["invoice_id"] == f"inv_{invoice.id}"
    assert_ledger_balanced(app)

    # A partial refund takes the partner's share of it back, exactly.
    def refund(session):
        return apply_refund(app.registry, session, session.get(Payment, payment.id),
                            Decimal("3.33"))

    assert in_transaction(app, refund) == Decimal("3.33")
    assert in_transaction(app, refund) == Decimal("0")
    reversal = rows(app, RevenueLine, RevenueLine.kind == "refund")
    assert [(line.gross, line.commission, line.partner_share) for line in reversal] == [
        (Decimal("-3.33"), Decimal("-1.00"), Decimal("-2.33"))]
    assert balance(app, partner_id) == Decimal("7.00") - Decimal("2.33")
    assert_ledger_balanced(app)


# Payouts ----------------------------------------------------------------------------


def credit_partner(app, partner_id, amount, reference):
    in_transaction(app, lambda session: ledger.post(
        session, kind="revenue", reference=reference, description="test earnings",
        lines=[ledger.debit(ledger.MARKETPLACE_FUNDING, amount),
               ledger.credit(ledger.PARTNER_PAYABLE, amount, partner_id)]))


def test_payout_run_pays_balances_over_the_minimum_and_rolls_over_the_rest(app, client):
    vault = app.registry["webhook_vault"]
    rich = new_partner(client, payout_method="bank_transfer",
                       bank_account=vault.encrypt("DE89 3704 0044 0532 0130 00"))
    poor = new_partner(client, payout_method="bank_transfer",
                       bank_account=vault.encrypt("DE89 3704 0044 0532 0130 01"))
    no_method = new_partner(client)
    credit_partner(app, rich, Decimal("100.00"), "t:rich")
    credit_partner(app, poor, Decimal("99.99"), "t:poor")
    credit_partner(app, no_method, Decimal("500.00"), "t:none")

    result = payout_run(app.registry)

    assert result == {"created": 1, "rolled_over": 1, "skipped_no_method": 1,
                      "skipped_unverified": 0, "sent": 1}
    payout, = rows(app, Payout)
    assert (payout.partner_id, payout.amount, payout.status, payout.source) == (
        rich, Decimal("100.00"), "processing", "run")
    assert payout.provider_payout_id.startswith("ledger_")
    assert balance(app, rich) == Decimal("0.00")
    assert balance(app, poor) == Decimal("99.99")
    # A second run creates nothing while the payout is open.
    assert payout_run(app.registry)["created"] == 0

    in_transaction(app, lambda session: mark_payout_paid(
        session, session.get(Payout, payout.id), dt.datetime(2026, 12, 3)))
    assert rows(app, Payout)[0].status == "paid"
    assert balance(app, rich) == Decimal("0.00")
    assert_ledger_balanced(app)


def test_refund_after_payout_leaves_a_negative_balance_recovered_later(app, client):
    partner_id, _integration_id, user_id = paid_install(app, client, price_cents=20000)

    def fields(session):
        partner = session.get(Partner, partner_id)
        partner.payout_method = "bank_transfer"
        partner.bank_account = app.registry["webhook_vault"].encrypt("GB29 NWBK 6016 1331 9268 19")

    in_transaction(app, fields)
    close_period(app.registry, NOVEMBER, now=AFTER_NOVEMBER)
    invoice, = rows(app, Invoice)
    payment, = settled_payments(app, invoice.id)
    assert balance(app, partner_id) == Decimal("140.00")
    payout_run(app.registry)
    payout, = rows(app, Payout)
    in_transaction(app, lambda session: mark_payout_paid(session, session.get(Payout, payout.id),
                                                         dt.datetime(2026, 12, 3)))
    in_transaction(app, lambda session: mark_payment_succeeded(
        app.registry, session, session.get(Payment, payment.id), dt.datetime(2026, 12, 2)))

    in_transaction(app, lambda session: apply_refund(
        app.registry, session, session.get(Payment, payment.id), Decimal("200.00")))

    assert balance(app, partner_id) == Decimal("-140.00")
    credit_partner(app, partner_id, Decimal("150.00"), "t:later")
    assert balance(app, partner_id) == Decimal("10.00")
    # The recovered amount is below the minimum, so the next run rolls it over.
    assert payout_run(app.registry)["created"] == 0
    assert_ledger_balanced(app)


def test_close_due_periods_catches_up_each_month_once(app, client):
    partner_id = new_partner(client, plan="starter")
    for month in (9, 10, 11):
        add_usage(app, partner_id=partner_id, hour=dt.datetime(2026, month, 2), count=10)

    # The first run, in October, closes September only.
    assert close_due_periods(app.registry, now=dt.datetime(2026, 10, 1, 1)) == ["2026-09"]
    # After two months of downtime, one run closes October and November in order.
    assert close_due_periods(app.registry, now=dt.datetime(2026, 12, 1, 1)) == [
        "2026-10", "2026-11"]
    assert close_due_periods(app.registry, now=dt.datetime(2026, 12, 20)) == []
    periods = [invoice.period_start.month for invoice in rows(app, Invoice)]
    assert periods == [9, 10, 11]


def test_calls_through_a_linked_oauth_application_earn(app, client):
    from fkod.core.auth.oauth_models import OAuthClient

    partner_id = new_partner(client)
    integration_id = new_integration(app, partner_id, price_per_call=Decimal("0.002"))
    key_id = new_key(app, partner_id, integration_id)

    def application(session):
        row = OAuthClient(partner_id=partner_id, client_id="fkod_app_billing", client_secret="",
                          client_type="public", livemode=True, integration_id=integration_id)
        session.add(row)
        session.flush()
        return row.id

    client_id = in_transaction(app, application)

    def usage(session):
        session.add(ApiUsageHourly(
            hour=dt.datetime(2026, 11, 9, 14), api_key_id=None, oauth_client_id=client_id,
            partner_id=partner_id, livemode=True, endpoint="/api/v1/users", method="GET",
            status_code=200, request_count=2_500, total_response_time_ms=0,
            max_response_time_ms=0, request_bytes=0, response_bytes=0, latency_histogram={}))

    in_transaction(app, usage)
    add_usage(app, partner_id=partner_id, key_id=key_id, hour=dt.datetime(2026, 11, 9, 15),
              count=500)

    close_period(app.registry, NOVEMBER, now=AFTER_NOVEMBER)

    line, = rows(app, RevenueLine, RevenueLine.kind == "call_fee")
    # 3,000 calls (2,500 by the application, 500 by the key) at 0.002.
    assert (line.api_calls, line.gross, line.partner_share) == (3_000, Decimal("6.00"),
                                                                Decimal("4.20"))


def test_last_millisecond_call_billed_once(app, client):
    from fkod.core.metering.models import ApiUsage

    partner_id = new_partner(client, plan="pay_as_you_go")
    moments = ([dt.datetime(2026, 11, 1, 0, 0)] * 2
               + [dt.datetime(2026, 11, 30, 23, 59, 59, 999000)] * 3
               + [dt.datetime(2026, 12, 1, 0, 0)] * 4)

    def calls(session):
        session.add_all([ApiUsage(partner_id=partner_id, endpoint="/api/v1/users", method="GET",
                                  status_code=200, response_time=5, request_size=0,
                                  response_size=10, livemode=True, created_at=moment)
                         for moment in moments])

    in_transaction(app, calls)

    # Closing a month rolls the raw calls up to hours first.
    close_period(app.registry, NOVEMBER, now=AFTER_NOVEMBER)
    close_period(app.registry, Period(2026, 12), now=dt.datetime(2027, 1, 2, 12))

    november, december = rows(app, Invoice, Invoice.partner_id == partner_id)
    assert (november.period_start, december.period_start) == (dt.date(2026, 11, 1),
                                                              dt.date(2026, 12, 1))
    overage = {invoice.period_start.month: line.quantity
               for invoice in (november, december)
               for line in rows(app, InvoiceLine, InvoiceLine.invoice_id == invoice.id)}
    assert overage == {11: 5, 12: 4}
