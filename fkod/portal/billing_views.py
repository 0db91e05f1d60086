"""Billing pages: the plan and its change, invoices, revenue, payouts and the payout method.

Each page calls the view function of the matching JSON operation in
:mod:`fkod.partners.billing_views` or the plan functions of
:mod:`fkod.core.billing.plans`, with the query or body loaded by the API's
schemas, so the pages and the API share every rule.
"""

from __future__ import annotations

import sqlalchemy as sa
from pyramid.httpexceptions import HTTPSeeOther

from fkod.core.api import PageQuery
from fkod.core.billing import ledger
from fkod.core.billing import plans as subscriptions
from fkod.core.billing.models import Plan
from fkod.core.billing.money import CURRENCY
from fkod.core.billing.payouts import PAYOUT_METHODS
from fkod.core.db import utcnow
from fkod.core.errors import ApiError
from fkod.partners import billing_views as billing_api
from fkod.partners import dashboard as analytics_service
from fkod.partners.billing_schemas import (
    INVOICE_STATUSES,
    InvoiceListQuery,
    PayoutMethodBody,
    PayoutRequestBody,
)
from fkod.partners.subscription_views import ChangePlanBody, describe_subscription
from fkod.portal import forms
from fkod.portal.access import require_member
from fkod.portal.charts import analytics_charts, load_query
from fkod.portal.rendering import render

ROUTES = (
    ("portal_billing", "/portal/billing", "billing_overview", ("GET",),
     "Show the partner's plan, its limits and the plans it can change to"),
    ("portal_billing_plan", "/portal/billing/plan", "plan_change", ("POST",),
     "Change the plan: an upgrade at once with proration, a downgrade next month"),
    ("portal_billing_plan_cancel", "/portal/billing/plan/cancel-change", "plan_cancel_change",
     ("POST",), "Cancel the scheduled plan change"),
    ("portal_invoices", "/portal/billing/invoices", "invoice_list", ("GET",),
     "List the partner's plan invoices"),
    ("portal_invoice", "/portal/billing/invoices/{id}", "invoice_detail", ("GET",),
     "Show one plan invoice with its lines and payments"),
    ("portal_revenue", "/portal/billing/revenue", "revenue_list", ("GET",),
     "Show the revenue per period with its chart, the totals and the balance"),
    ("portal_revenue_period", "/portal/billing/revenue/{period}", "revenue_period", ("GET",),
     "Show one period's revenue with its lines"),
    ("portal_payouts", "/portal/billing/payouts", "payout_list", ("GET", "POST"),
     "List the partner's payout statements, or request a payout"),
    ("portal_payout", "/portal/billing/payouts/{id}", "payout_detail", ("GET",),
     "Show one payout with the periods it paid"),
    ("portal_payout_method", "/portal/billing/payout-method", "payout_method", ("GET", "POST"),
     "Show or set where the partner's payouts go"),
)

# Explanations of a payout request's 409 errors, by the API's error code.
PAYOUT_CONFLICTS = {
    "partner_not_verified": "Payouts need a verified company; submit its verification on the "
                            "company verification page and wait for its approval.",
    "payout_method_missing": "Set a payout method first, on the payout method page.",
    "payout_already_open": "A payout is still open; a partner has one open payout at a time. "
                           "Wait until it is paid or failed.",
    "payout_below_minimum": "The amount is below the smallest payout.",
    "amount_exceeds_balance": "The amount is more than the available balance.",
}


def _use(request, **query):
    """Set the loaded query the API's view functions read, as their validator does."""
    request.query = query
    return request


# Plan ---------------------------------------------------------------------------------


def _self_serve_plans(session) -> list[Plan]:
    return list(session.scalars(sa.select(Plan).where(Plan.active.is_(True),
                                                      Plan.self_serve.is_(True))
                                .order_by(Plan.price_monthly, Plan.id)))


def billing_overview(request, form: forms.Form | None = None, status: int = 200):
    member = require_member(request, "billing:read")
    subscription = describe_subscription(request)
    current = subscription["plan"]
    plans = _self_serve_plans(request.dbsession)
    moment = utcnow()
    choices = [(plan, "upgrade" if subscriptions.is_upgrade(current, plan) else "downgrade",
                subscriptions.proration(current, plan, moment))
               for plan in plans if current is None or plan.id != current.id]
    return render(request, "billing.html", status=status, subscription=subscription,
                  choices=choices, form=form or forms.Form(),
                  can_write=member.can("billing:write"), nav="billing")


def plan_change(request):
    member = require_member(request, "billing:write")
    form = forms.Form(values=forms.posted_values(request))
    loaded = forms.load(ChangePlanBody(), {"plan": form.value("plan")} if form.value("plan")
                        else {}, form)
    if loaded is None:
        request.tm.doom()
        return billing_overview(request, form, status=400)
    try:
        change = subscriptions.change_plan(request, member.partner, loaded["plan"])
    except ApiError as error:
        request.tm.doom()
        forms.add_api_error(form, error)
        return billing_overview(request, form, status=error.status)
    code = loaded["plan"]
    if change.status == "applied":
        request.portal_session.flash(
            f"You are now on the {code} plan; {change.proration:.2f} {CURRENCY} of proration "
            "is added to this month's invoice.")
    else:
        request.portal_session.flash(
            f"The change to the {code} plan is scheduled for {change.effective_at:%Y-%m-%d}.")
    return HTTPSeeOther(location=request.route_path("portal_billing"))


def plan_cancel_change(request):
    member = require_member(request, "billing:write")
    try:
        subscriptions.cancel_scheduled_change(request, member.partner)
    except ApiError as error:
        if error.status != 404:
            raise
        request.portal_session.flash("There is no scheduled plan change to cancel.", "error")
        return HTTPSeeOther(location=request.route_path("portal_billing"))
    request.portal_session.flash("The scheduled plan change is cancelled.")
    return HTTPSeeOther(location=request.route_path("portal_billing"))


# Invoices -----------------------------------------------------------------------------


def invoice_list(request):
    require_member(request, "billing:read")
    query = load_query(request, InvoiceListQuery())
    page = billing_api.list_invoices(_use(request, **query))
    return render(request, "invoices.html", invoices=page.items, next_cursor=page.next_cursor,
                  statuses=INVOICE_STATUSES, status_filter=query.get("status", ""),
                  nav="billing")


def invoice_detail(request):
    require_member(request, "billing:read")
    invoice = billing_api.get_invoice(request)
    return render(request, "invoice_detail.html", invoice=invoice, nav="billing")


# Revenue ------------------------------------------------------------------------------


def revenue_list(request):
    member = require_member(request, "billing:read")
    report = billing_api.get_revenue(_use(request, **load_query(request, PageQuery())))
    start, end = analytics_service.resolve_range("month", None, None, utcnow().date())
    [chart] = analytics_charts(request.dbsession, member.partner.id, mode="live",
                               granularity="month", start=start, end=end,
                               metrics=("revenue",))
    return render(request, "revenue.html", report=report, revenue_chart=chart, currency=CURRENCY,
                  nav="billing")


def revenue_period(request):
    require_member(request, "billing:read")
    detail = billing_api.get_revenue_period(request)
    return render(request, "revenue_period.html", detail=detail, currency=CURRENCY,
                  nav="billing")


# Payouts ------------------------------------------------------------------------------


def _payouts_page(request, member, form: forms.Form, status: int = 200):
    page = billing_api.list_payouts(_use(request, **load_query(request, PageQuery())))
    report_balance = ledger.partner_balance(request.dbsession, member.partner.id)
    return render(request, "payouts.html", status=status, payouts=page.items,
                  next_cursor=page.next_cursor, balance=report_balance, currency=CURRENCY,
                  minimum=analytics_service.payout_minimum(request.registry.settings),
                  payout_method=member.partner.payout_method, form=form,
                  can_write=member.can("billing:write"), nav="billing")


def payout_list(request):
    if request.method == "POST":
        return _request_payout(request)
    member = require_member(request, "billing:read")
    return _payouts_page(request, member, forms.Form())


def _request_payout(request):
    member = require_member(request, "billing:write")
    posted = forms.posted_values(request)
    form = forms.Form(values={"amount": posted.get("amount", "")})
    loaded = forms.load(PayoutRequestBody(), {"amount": posted["amount"]}
                        if "amount" in posted else {}, form)
    if loaded is None:
        request.tm.doom()
        return _payouts_page(request, member, form, status=400)
    request.validated = loaded
    try:
        payout = billing_api.create_payout(request)
    except ApiError as error:
        request.tm.doom()
        explained = PAYOUT_CONFLICTS.get(error.code)
        if explained:
            form.add_error(forms.FORM, explained)
        form.add_error(forms.FORM, error.message)
        return _payouts_page(request, member, form, status=error.status)
    request.portal_session.flash(
        f"Payout po_{payout.id} of {payout.amount:.2f} {payout.currency} is requested.")
    return HTTPSeeOther(location=request.route_path("portal_payout", id=f"po_{payout.id}"))


def payout_detail(request):
    require_member(request, "billing:read")
    statement = billing_api.get_payout(request)
    return render(request, "payout_detail.html", payout=statement, nav="billing")


# Payout method ------------------------------------------------------------------------


def payout_method(request):
    if request.method == "POST":
        return _set_payout_method(request)
    member = require_member(request, "billing:read")
    return _payout_method_page(request, member, forms.Form(
        values={"method": member.partner.payout_method or ""}))


def _payout_method_page(request, member, form: forms.Form, status: int = 200):
    described = billing_api.get_payout_method(request)
    return render(request, "payout_method.html", status=status, described=described,
                  methods=sorted(PAYOUT_METHODS), form=form,
                  can_write=member.can("billing:write"), nav="billing")


def _set_payout_method(request):
    member = require_member(request, "billing:write")
    posted = forms.posted_values(request)
    # The destination is a bank account or an account id, so the page never shows it again.
    form = forms.Form(values={"method": posted.get("method", "")})
    data = {name: posted[name] for name in ("method", "destination") if name in posted}
    loaded = forms.load(PayoutMethodBody(), data, form)
    if loaded is None:
        request.tm.doom()
        return _payout_method_page(request, member, form, status=400)
    request.validated = loaded
    try:
        billing_api.put_payout_method(request)
    except ApiError as error:
        request.tm.doom()
        forms.add_api_error(form, error)
        return _payout_method_page(request, member, form, status=error.status)
    request.portal_session.flash("The payout method is saved.")
    return HTTPSeeOther(location=request.route_path("portal_payout_method"))
