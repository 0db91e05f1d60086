"""Portal billing pages: plan change, invoices, revenue with its chart, payouts, payout method."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import pytest
import sqlalchemy as sa

from fkod.core.billing import ledger
from fkod.core.billing.ledger import credit, debit
from fkod.core.billing.models import (
    Invoice,
    InvoiceLine,
    PartnerRevenue,
    Payout,
    Plan,
    RevenueLine,
)
from fkod.core.billing.plans import is_upgrade
from fkod.core.db import run_in_transaction, utcnow
from fkod.core.ids import parse_id
from fkod.core.testing import TestClient, verify_partner
from tests.functional.portal_pages import (
    add_member,
    field_errors,
    input_value,
    log_in,
    post_form,
    signed_in_owner,
)
from tests.functional.test_portal_charts import assert_no_inline_script, chart_data

pytestmark = pytest.mark.shared_app

BANK = "DE89 3704 0044 0532 0130 00"
PAGES = ("/portal/billing", "/portal/billing/invoices", "/portal/billing/revenue",
         "/portal/billing/payouts", "/portal/billing/payout-method")


def in_db(app, work):
    return run_in_transaction(app.registry["db.session_factory"], work)


def partner_number(registered: dict) -> int:
    return parse_id("partner", registered["partner"]["id"])


def fund(app, partner_id: int, amount: str) -> None:
    value = Decimal(amount)

    def work(session):
        ledger.post(session, kind="revenue", reference=f"portal-test:{partner_id}:{amount}",
                    description="Test revenue",
                    lines=[debit(ledger.MARKETPLACE_FUNDING, value),
                           credit(ledger.PARTNER_PAYABLE, value, partner_id)])

    in_db(app, work)


def add_revenue(app, partner_id: int, start: dt.date, gross: str, share: str) -> None:
    end = (start + dt.timedelta(days=32)).replace(day=1) - dt.timedelta(days=1)

    def work(session):
        session.add(PartnerRevenue(
            partner_id=partner_id, period_start=start, period_end=end, api_calls=40,
            revenue=Decimal(gross), commission_rate=Decimal("30"),
            commission_amount=Decimal(gross) - Decimal(share), partner_share=Decimal(share),
            status="pending"))
        session.add(RevenueLine(
            partner_id=partner_id, period_start=start, kind="call_fee",
            reference=f"portal-test:{partner_id}:{start}",
            description="Calls to <b>Sync</b>", api_calls=40, gross=Decimal(gross),
            commission_rate=Decimal("30"), commission=Decimal(gross) - Decimal(share),
            partner_share=Decimal(share)))

    in_db(app, work)


def add_invoice(app, partner_id: int) -> int:
    today = utcnow().date()

    def work(session):
        invoice = Invoice(partner_id=partner_id, kind="plan", period_start=today.replace(day=1),
                          period_end=today, currency="USD", total=Decimal("99.00"),
                          status="open")
        session.add(invoice)
        session.flush()
        session.add(InvoiceLine(invoice_id=invoice.id, kind="plan_fee",
                                description="Starter <plan>", quantity=1,
                                unit_price=Decimal("99.00"), amount=Decimal("99.00")))
        return invoice.id

    return in_db(app, work)


def test_billing_pages_need_login_and_permission(client, app):
    for path in PAGES:
        assert "/portal/login?next=" in client.web.get(path, status=303).location

    owner = signed_in_owner(client)
    for path in PAGES:
        page = client.web.get(path)
        assert page.status_int == 200
        assert_no_inline_script(page)
    assert 'href="/portal/billing" aria-current="page">Billing</a>' in \
        client.web.get("/portal/billing").text

    # A POST without the CSRF token is refused with the 403 page.
    for path in ("/portal/billing/plan", "/portal/billing/payouts",
                 "/portal/billing/payout-method", "/portal/billing/plan/cancel-change"):
        refused = client.web.post(path, {"plan": "starter"}, status=403)
        assert "The form expired" in refused.text

    # A read-only member reads the pages, sees no forms, and cannot post.
    reader = TestClient(app)
    user = reader.web.post_json("/api/auth/register", {
        "email": "reader@billing.example", "password": "correct horse battery staple"}).json
    add_member(app, owner["partner"]["id"], user["id"], "read_only")
    log_in(reader.web, "reader@billing.example")
    overview = reader.web.get("/portal/billing")
    assert "Change the plan" not in overview.text
    denied = post_form(reader.web, "/portal/billing/plan", {"plan": "starter"},
                       form_page="/portal/billing", status=403)
    assert "billing:write" in denied.text
    post_form(reader.web, "/portal/billing/payouts", {}, status=403)


def test_plan_upgrade_downgrade_and_cancel(client, app):
    signed_in_owner(client)
    overview = client.web.get("/portal/billing")
    assert "Current plan: Free" in overview.text
    assert 'id="plan-starter"' in overview.text
    starter = re.search(r'for="plan-starter">([^<]*)</label>', overview.text).group(1)
    assert re.fullmatch(r"Starter: 99\.00 USD a month \(upgrade, \d+\.\d\d USD now\)", starter)

    missing = post_form(client.web, "/portal/billing/plan", {}, form_page="/portal/billing",
                        status=400)
    assert field_errors(missing, "plan")
    unknown = post_form(client.web, "/portal/billing/plan", {"plan": "<gold>"},
                        form_page="/portal/billing", status="*")
    assert unknown.status_int in (400, 404)
    assert "<gold>" not in unknown.text
    assert "Current plan: Free" in unknown.text

    upgraded = post_form(client.web, "/portal/billing/plan", {"plan": "starter"},
                         form_page="/portal/billing", status=303).follow()
    assert "You are now on the starter plan" in upgraded.text
    assert "Current plan: Starter" in upgraded.text
    assert "USD of proration is added to this month&#39;s invoice." in upgraded.text

    downgraded = post_form(client.web, "/portal/billing/plan", {"plan": "free"},
                           form_page="/portal/billing", status=303).follow()
    assert "is scheduled for" in downgraded.text
    assert 'id="scheduled-change"' in downgraded.text
    assert "Current plan: Starter" in downgraded.text

    cancelled = post_form(client.web, "/portal/billing/plan/cancel-change", {},
                          form_page="/portal/billing", status=303).follow()
    assert "The scheduled plan change is cancelled." in cancelled.text
    assert 'id="scheduled-change"' not in cancelled.text
    again = post_form(client.web, "/portal/billing/plan/cancel-change", {},
                      form_page="/portal/billing", status=303).follow()
    assert "There is no scheduled plan change to cancel." in again.text


def test_invoices_and_revenue_pages(client, app):
    owner = signed_in_owner(client)
    partner_id = partner_number(owner)
    invoice_id = add_invoice(app, partner_id)
    this_month = utcnow().date().replace(day=1)
    add_revenue(app, partner_id, this_month, "100.00", "70.00")

    listing = client.web.get("/portal/billing/invoices")
    assert f"inv_{invoice_id}" in listing.text
    assert "99.00 USD" in listing.text
    assert "No invoices with the status paid." in \
        client.web.get("/portal/billing/invoices?status=paid").text
    assert "Invalid filter" in client.web.get("/portal/billing/invoices?status=<x>",
                                              status=400).text
    detail = client.web.get(f"/portal/billing/invoices/inv_{invoice_id}")
    assert "Starter &lt;plan&gt;" in detail.text

    revenue = client.web.get("/portal/billing/revenue")
    period = f"{this_month:%Y-%m}"
    assert f'href="/portal/billing/revenue/{period}"' in revenue.text
    chart = chart_data(revenue)["revenue"]
    assert chart["labels"][-1] == period
    assert chart["series"][0]["values"][-1] == 100.0
    assert chart["series"][1]["values"][-1] == 70.0
    assert len(chart["labels"]) == 12
    period_page = client.web.get(f"/portal/billing/revenue/{period}")
    assert "Calls to &lt;b&gt;Sync&lt;/b&gt;" in period_page.text
    client.web.get("/portal/billing/revenue/2001-01", status=404)
    client.web.get("/portal/billing/revenue/not-a-month", status=400)

    # Another partner's invoice is a 404 page.
    other = TestClient(app)
    other_owner = signed_in_owner(other, company_name="Other Co")
    other_invoice = add_invoice(app, partner_number(other_owner))
    missing = client.web.get(f"/portal/billing/invoices/inv_{other_invoice}", status=404)
    assert "No invoice with id" in missing.text
    client.web.get("/portal/billing/invoices/nonsense", status=404)


def test_payout_requests_and_method(client, app):
    owner = signed_in_owner(client)
    partner_id = partner_number(owner)

    unverified = post_form(client.web, "/portal/billing/payouts", {}, status=409)
    assert "Payouts need a verified company" in unverified.text
    verify_partner(app, owner["partner"]["id"])

    no_method = post_form(client.web, "/portal/billing/payouts", {}, status=409)
    assert "Set a payout method first" in no_method.text

    bad = post_form(client.web, "/portal/billing/payout-method",
                    {"method": "bank_transfer", "destination": "1234567"}, status=400)
    assert field_errors(bad, "destination")
    assert 'value="bank_transfer" selected' in bad.text
    assert "1234567" not in bad.text
    saved = post_form(client.web, "/portal/billing/payout-method",
                      {"method": "bank_transfer", "destination": BANK}, status=303).follow()
    assert "The payout method is saved." in saved.text
    assert BANK not in saved.text
    assert "****" in saved.text

    fund(app, partner_id, "150.00")
    below = post_form(client.web, "/portal/billing/payouts", {"amount": "20.00"}, status=409)
    assert "The amount is below the smallest payout." in below.text
    assert input_value(below, "amount") == "20.00"
    above = post_form(client.web, "/portal/billing/payouts", {"amount": "900.00"}, status=409)
    assert "more than the available balance" in above.text
    invalid = post_form(client.web, "/portal/billing/payouts", {"amount": "1.234<"},
                        status=400)
    assert field_errors(invalid, "amount")
    assert input_value(invalid, "amount") == "1.234&lt;"
    assert in_db(app, lambda session: session.scalars(
        sa.select(Payout).where(Payout.partner_id == partner_id)).all()) == []

    requested = post_form(client.web, "/portal/billing/payouts", {"amount": "120.00"},
                          status=303)
    detail = requested.follow()
    assert "Payout po_" in detail.text
    assert "120.00 USD" in detail.text
    open_again = post_form(client.web, "/portal/billing/payouts", {}, status=409)
    assert "A payout is still open" in open_again.text
    listing = client.web.get("/portal/billing/payouts")
    assert "30.00 USD" in listing.text
    assert requested.location.rsplit("/", 1)[1] in listing.text

    other = TestClient(app)
    signed_in_owner(other, company_name="Other Co")
    other.web.get(requested.location.replace("http://localhost", ""), status=404)


def test_is_upgrade_compares_prices():
    free = Plan(code="free", price_monthly=Decimal("0"))
    starter = Plan(code="starter", price_monthly=Decimal("99"))
    assert is_upgrade(None, free)
    assert is_upgrade(free, starter)
    assert not is_upgrade(starter, free)
    assert not is_upgrade(starter, Plan(code="same", price_monthly=Decimal("99")))
