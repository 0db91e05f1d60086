"""Admin console pages for plans: list, create and edit.

They load the forms with the schemas of ``/api/admin/plans…``, call the same
functions (:func:`fkod.admin.plan_views.create_plan` and ``update_plan``) and
need the same permissions: ``plans:read`` to read and ``plans:write`` to change.
"""

from __future__ import annotations

import sqlalchemy as sa
from pyramid.httpexceptions import HTTPSeeOther

from fkod.admin import plan_views
from fkod.core.api import paginate
from fkod.core.billing.models import Plan
from fkod.core.errors import ApiError
from fkod.portal import forms
from fkod.portal.admin_access import render_admin, require_admin

# (route name, path, view function, request methods, summary)
ROUTES = (
    ("admin_console_plans", "/admin/plans", "plan_list", ("GET", "POST"),
     "List every plan, or create one"),
    ("admin_console_plan_new", "/admin/plans/new", "plan_new", ("GET",),
     "Show the form that creates a plan"),
    ("admin_console_plan", "/admin/plans/{code}", "plan_detail", ("GET", "POST"),
     "Show a plan's form, or change the plan"),
)

TEXT_FIELDS = ("code", "name", "price_monthly", "overage_price_per_request")
# Whole numbers where an empty field means unlimited (null in the API).
LIMIT_FIELDS = ("requests_per_hour", "requests_per_day", "included_requests_monthly")
FLAGS = ("self_serve", "active", "is_default")


def _posted_plan(request, *, with_code: bool) -> tuple[dict, dict]:
    """Return the form's typed values and the data for the API's plan schema."""
    posted = forms.posted_values(request)
    names = TEXT_FIELDS if with_code else TEXT_FIELDS[1:]
    values = {name: posted.get(name, "") for name in (*names, *LIMIT_FIELDS)}
    data = {name: posted[name] for name in names if name in posted}
    for name in LIMIT_FIELDS:
        forms.integer_field(posted, name)
        data[name] = posted.get(name)
    for name in FLAGS:
        values[name] = data[name] = request.POST.get(name) == "true"
    return values, data


def plan_list(request):
    if request.method == "POST":
        return _create(request)
    require_admin(request, "plans:read")
    page = paginate(sa.select(Plan), Plan.id, forms.page_query(request), request.dbsession,
                    descending=False)
    return render_admin(request, "admin/plans.html", plans=page.items,
                        next_cursor=page.next_cursor, nav="plans")


def plan_new(request):
    require_admin(request, "plans:write")
    form = forms.Form(values={"self_serve": True, "active": True, "is_default": False,
                              "overage_price_per_request": "0.001"})
    return render_admin(request, "admin/plan_form.html", form=form, plan=None, nav="plans")


def _create(request):
    require_admin(request, "plans:write")
    values, data = _posted_plan(request, with_code=True)
    form = forms.Form(values=values)
    loaded = forms.load(plan_views.CreatePlanBody(), data, form)
    if loaded is not None:
        try:
            created = plan_views.create_plan(request, dict(loaded))
        except ApiError as error:
            forms.add_api_error(form, error)
            request.tm.doom()
            return render_admin(request, "admin/plan_form.html", status=error.status,
                                form=form, plan=None, nav="plans")
        request.admin_session.flash(f"The plan {created.code} is created.")
        return HTTPSeeOther(location=request.route_path("admin_console_plans"))
    request.tm.doom()
    return render_admin(request, "admin/plan_form.html", status=400, form=form, plan=None,
                        nav="plans")


def _plan_values(plan: Plan) -> dict:
    values = {name: "" if getattr(plan, name) is None else str(getattr(plan, name))
              for name in (*TEXT_FIELDS, *LIMIT_FIELDS)}
    values.update({name: bool(getattr(plan, name)) for name in FLAGS})
    return values


def plan_detail(request):
    if request.method == "GET":
        require_admin(request, "plans:read")
        plan = plan_views._plan_by_code(request)
        return render_admin(request, "admin/plan_form.html", form=forms.Form(
            values=_plan_values(plan)), plan=plan, nav="plans")

    require_admin(request, "plans:write")
    plan = plan_views._plan_by_code(request)
    values, data = _posted_plan(request, with_code=False)
    values["code"] = plan.code
    form = forms.Form(values=values)
    loaded = forms.load(plan_views.UpdatePlanBody(), data, form)
    status = 400
    if loaded is not None:
        try:
            plan_views.update_plan(request, plan, dict(loaded))
        except ApiError as error:
            forms.add_api_error(form, error)
            status = error.status
        else:
            request.admin_session.flash(f"The plan {plan.code} is saved.")
            return HTTPSeeOther(location=request.route_path("admin_console_plan",
                                                            code=plan.code))
    request.tm.doom()
    return render_admin(request, "admin/plan_form.html", status=status, form=form, plan=plan,
                        nav="plans")
