"""Admin console pages for money: every partner's revenue in a period, and payouts with their
actions (approve, hold, mark paid, mark failed).

They call the functions behind ``/api/admin/revenue`` and ``/api/admin/payouts…``
and need the same permissions: ``payouts:read`` to read and ``payouts:write``
to act.
"""

from __future__ import annotations

from pyramid.httpexceptions import HTTPSeeOther

from fkod.admin import billing_views
from fkod.core.auth.models import Partner
from fkod.core.errors import ApiError, NotFound
from fkod.core.schemas import EmptyBody
from fkod.partners.billing_schemas import PAYOUT_STATUSES
from fkod.partners.billing_views import payout_statements
from fkod.portal import forms
from fkod.portal.admin_access import render_admin, require_admin
from fkod.portal.admin_views import list_query

# (route name, path, view function, request methods, summary)
ROUTES = (
    ("admin_console_revenue", "/admin/revenue", "revenue", ("GET",),
     "Show every partner's revenue in one period, with totals"),
    ("admin_console_payouts", "/admin/payouts", "payout_list", ("GET",),
     "List payouts, newest first, with a status filter"),
    ("admin_console_payout", "/admin/payouts/{id}", "payout_detail", ("GET",),
     "Show one payout with the actions its status allows"),
    ("admin_console_payout_action", "/admin/payouts/{id}/{action}", "payout_action", ("POST",),
     "Approve, hold, mark paid or mark failed a payout"),
)

# Each action: (the schema of its form, the function that does it, the message when done).
ACTIONS = {
    "approve": (EmptyBody, lambda request, row, data: billing_views.approve_payout_row(
        request, row), "is approved and sent"),
    "hold": (billing_views.ReasonBody, lambda request, row, data: billing_views.hold_payout_row(
        request, row, data["reason"]), "is on hold"),
    "mark-paid": (billing_views.MarkPayoutPaidBody,
                  lambda request, row, data: billing_views.mark_payout_paid_row(
                      request, row, data.get("reference")), "is marked paid"),
    "mark-failed": (billing_views.ReasonBody,
                    lambda request, row, data: billing_views.mark_payout_failed_row(
                        request, row, data["reason"]), "is marked failed"),
}


def revenue(request):
    require_admin(request, "payouts:read")
    query, filters = list_query(request, billing_views.RevenueQuery(), {})
    report = billing_views.revenue_report(request, query)
    return render_admin(request, "admin/revenue.html", report=report, filters=filters,
                        nav="revenue")


def payout_list(request):
    require_admin(request, "payouts:read")
    query, filters = list_query(request, billing_views.PayoutQuery(), {})
    page = billing_views.payouts_page(request, query)
    names = _company_names(request, {item["partner_id"] for item in page.items})
    return render_admin(request, "admin/payouts.html", payouts=page.items,
                        next_cursor=page.next_cursor, filters=filters, names=names,
                        statuses=PAYOUT_STATUSES, nav="payouts")


def _company_names(request, partner_ids) -> dict[int, str]:
    if not partner_ids:
        return {}
    return {partner.id: partner.company_name for partner in request.dbsession.query(Partner)
            .filter(Partner.id.in_(partner_ids))}


def _payout_page(request, status: int = 200, form: forms.Form | None = None,
                 action: str | None = None):
    row = billing_views._payout(request)
    [statement] = payout_statements(request.dbsession, [row])
    partner = request.dbsession.get(Partner, row.partner_id)
    if status >= 400:
        request.tm.doom()
    return render_admin(request, "admin/payout.html", status=status, payout=statement,
                        partner=partner, form=form or forms.Form(), failed_action=action,
                        nav="payouts")


def payout_detail(request):
    require_admin(request, "payouts:read")
    return _payout_page(request)


def payout_action(request):
    require_admin(request, "payouts:write")
    action = request.matchdict["action"]
    if action not in ACTIONS:
        raise NotFound(f"There is no payout action {action!r}.")
    schema, perform, done = ACTIONS[action]
    posted = forms.posted_values(request)
    form = forms.Form(values={name: posted.get(name, "") for name in ("reason", "reference")})
    data = {name: posted[name] for name in schema().fields if name in posted}
    loaded = forms.load(schema(), data, form)
    if loaded is None:
        return _payout_page(request, 400, form, action)
    row = billing_views._payout(request, lock=True)
    try:
        perform(request, row, loaded)
    except ApiError as error:
        if error.status == 404:
            raise
        forms.add_api_error(form, error)
        return _payout_page(request, error.status, form, action)

    request.admin_session.flash(f"The payout po_{row.id} {done}.")
    return HTTPSeeOther(location=request.route_path("admin_console_payout", id=f"po_{row.id}"))
