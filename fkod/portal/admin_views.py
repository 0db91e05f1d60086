"""The admin console under ``/admin``: sign-in, partner verification, integration review,
featured integrations, plugins and the audit log.

Each action calls the service function of the matching ``/api/admin/…``
operation, loads its form with that operation's schema and needs the same
admin permission, so it is audited the same way. The console has its own
session (see :mod:`fkod.portal.admin_access`).
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from pyramid.httpexceptions import HTTPBadRequest, HTTPSeeOther

from fkod.admin import plugin_views, schemas, services
from fkod.core.api import encode_cursor, paginate
from fkod.core.audit import AuditEntry
from fkod.core.auth.models import Partner
from fkod.core.errors import ApiError, RateLimited
from fkod.core.ids import parse_id
from fkod.core.plugin_models import PluginState
from fkod.marketplace import integrations
from fkod.marketplace.integration_schemas import (
    AdminIntegrationListQuery,
    FeaturedBody,
    ReviewBody,
)
from fkod.marketplace.models import INTEGRATION_STATUSES, Integration
from fkod.partners.models import SupportTicket, VerificationDocument
from fkod.portal import forms
from fkod.portal.access import limit_address
from fkod.portal.admin_access import (
    check_admin_csrf,
    render_admin,
    require_admin,
    safe_admin_next,
)

log = logging.getLogger(__name__)

PAGE_SIZE = 20

# Pages a visitor who is not signed in can use.
PUBLIC_PAGES = frozenset({"admin_console_login"})

# (route name, path, view function, request methods, summary)
ROUTES = (
    ("admin_console_login", "/admin/login", "login", ("GET", "POST"),
     "Sign an admin in to the admin console"),
    ("admin_console_logout", "/admin/logout", "logout", ("POST",),
     "Sign the admin out of the admin console"),
    ("admin_console_home", "/admin", "home", ("GET",),
     "Show the admin console's home with the queues the admin's role can work on"),
    ("admin_console_verifications", "/admin/verifications", "verification_list", ("GET",),
     "List partners whose verification waits for a decision, oldest submission first"),
    ("admin_console_verification", "/admin/verifications/{id}", "verification_detail",
     ("GET", "POST"),
     "Show a partner's submitted verification with its documents, or approve or reject it"),
    ("admin_console_integrations", "/admin/integrations", "integration_list", ("GET",),
     "List integrations; the review queue, oldest submission first, by default"),
    ("admin_console_integration", "/admin/integrations/{id}", "integration_detail", ("GET",),
     "Show an integration with its review and featuring forms"),
    ("admin_console_integration_review", "/admin/integrations/{id}/review",
     "integration_review", ("POST",),
     "Approve (publish) or reject an integration in review"),
    ("admin_console_integration_featured", "/admin/integrations/{id}/featured",
     "integration_featured", ("POST",),
     "Feature a published integration at a rank, or stop featuring it"),
    ("admin_console_featured", "/admin/featured", "featured_list", ("GET",),
     "List the featured integrations by rank"),
    ("admin_console_plugins", "/admin/plugins", "plugin_list", ("GET",),
     "List installed plugins with their status"),
    ("admin_console_plugin", "/admin/plugins/{name}", "plugin_detail", ("GET", "POST"),
     "Show a plugin with what it contributes, or enable or disable it"),
    ("admin_console_audit_log", "/admin/audit-log", "audit_log", ("GET",),
     "List the audit log with filters, newest first"),
)


def list_query(request, schema, defaults: dict) -> tuple[dict, forms.Form]:
    """Load the list filters of the query string with the API's schema.

    Invalid filters are shown next to their fields and the list is then
    loaded without them.
    """
    form = forms.Form(values={name: value for name, value in request.GET.items()
                              if name != "cursor" and value})
    data = {**defaults, **form.values}
    if "limit" not in data:
        data["limit"] = PAGE_SIZE
    if request.GET.get("cursor"):
        data["cursor"] = request.GET["cursor"]
    loaded = forms.load(schema, data, form)
    if loaded is None:
        if "cursor" in form.errors or "limit" in form.errors:
            raise HTTPBadRequest("Invalid page link. Go back to the first page.")
        loaded = schema.load({**defaults, "limit": PAGE_SIZE})
    return loaded, form


# Sign-in ------------------------------------------------------------------------------


def login(request):
    session = request.admin_session
    next_path = safe_admin_next(request.params.get("next"))
    form = forms.Form()
    if request.method == "GET":
        if session.admin() is not None:
            return HTTPSeeOther(location=next_path)
        return render_admin(request, "admin/login.html", form=form, next_path=next_path)

    check_admin_csrf(request)
    # Per account, services.log_in limits failures; this limits guessing across accounts.
    limit_address(request)
    posted = forms.posted_values(request)
    form.values = {"email": posted.get("email", "")}
    data = {name: posted[name] for name in ("email", "password") if name in posted}
    loaded = forms.load(schemas.AdminLoginBody(), data, form)
    if loaded is None:
        return render_admin(request, "admin/login.html", status=400, form=form,
                            next_path=next_path)
    try:
        admin = services.log_in(request, loaded["email"], loaded["password"])
    except RateLimited as error:
        form.add_error(forms.FORM, error.message)
        response = render_admin(request, "admin/login.html", status=429, form=form,
                                next_path=next_path)
        response.headers["Retry-After"] = str(error.retry_after)
        return response
    if admin is None:
        # Not doomed: the audit entry of the failed attempt must commit.
        form.add_error(forms.FORM, "The email or password is incorrect.")
        return render_admin(request, "admin/login.html", status=401, form=form,
                            next_path=next_path)

    session.log_in_admin(admin)
    log.info("admin console sign-in", extra={"admin_id": admin.id})
    return HTTPSeeOther(location=next_path)


def logout(request):
    session = request.admin_session
    if session.admin() is None:
        return HTTPSeeOther(location=request.route_path("admin_console_login"))
    admin = require_admin(request)
    session.log_out()
    session.flash("You are signed out of the admin console.", "info")
    log.info("admin console sign-out", extra={"admin_id": admin.id})
    return HTTPSeeOther(location=request.route_path("admin_console_login"))


def home(request):
    require_admin(request)
    session = request.dbsession
    counts = {
        "verifications": session.scalar(sa.select(sa.func.count()).select_from(Partner).where(
            Partner.verification_status == "submitted", Partner.deleted_at.is_(None))),
        "integrations": session.scalar(sa.select(sa.func.count()).select_from(Integration)
                                       .where(Integration.status == "in_review")),
        "tickets": session.scalar(sa.select(sa.func.count()).select_from(SupportTicket)
                                  .where(SupportTicket.status == "open")),
    }
    return render_admin(request, "admin/home.html", counts=counts, nav="home")


# Partner verification -----------------------------------------------------------------


def verification_list(request):
    require_admin(request, "partners:read")
    query = forms.page_query(request)
    query.update({"verification_status": "submitted", "sort": "verification_submitted_at"})
    page = services.list_partners(request, query)
    partner_ids = [partner.id for partner in page.items]
    documents = {}
    for document in request.dbsession.scalars(
            sa.select(VerificationDocument)
            .where(VerificationDocument.partner_id.in_(partner_ids),
                   VerificationDocument.deleted_at.is_(None))
            .order_by(VerificationDocument.id)):
        documents.setdefault(document.partner_id, []).append(document)
    return render_admin(request, "admin/verifications.html", partners=page.items,
                        documents=documents, next_cursor=page.next_cursor, nav="verifications")


def _partner_id(request) -> int:
    return parse_id("partner", request.matchdict["id"], noun="partner")


def _verification_page(request, partner_id: int, form: forms.Form, status: int = 200):
    partner = services.partner_detail(request, services.get_partner(request, partner_id))
    documents = request.dbsession.scalars(
        sa.select(VerificationDocument)
        .where(VerificationDocument.partner_id == partner_id,
               VerificationDocument.deleted_at.is_(None))
        .order_by(VerificationDocument.id)).all()
    if status >= 400:
        request.tm.doom()
    return render_admin(request, "admin/verification.html", status=status, partner=partner,
                        documents=documents, form=form, nav="verifications")


def verification_detail(request):
    if request.method == "GET":
        require_admin(request, "partners:read")
        return _verification_page(request, _partner_id(request), forms.Form())

    require_admin(request, "partners:verify")
    partner_id = _partner_id(request)
    posted = forms.posted_values(request)
    form = forms.Form(values={"reason": posted.get("reason", "")})
    data = {name: posted[name] for name in ("decision", "reason") if name in posted}
    loaded = forms.load(schemas.VerificationDecisionBody(), data, form)
    if loaded is None:
        return _verification_page(request, partner_id, form, status=400)
    try:
        partner = services.decide_verification(request, partner_id, loaded["decision"],
                                               loaded.get("reason"))
    except ApiError as error:
        if error.status == 404:
            raise
        forms.add_api_error(form, error)
        return _verification_page(request, partner_id, form, status=error.status)

    verb = "approved" if loaded["decision"] == "approve" else "rejected"
    request.admin_session.flash(f"The verification of {partner.company_name} is {verb}.")
    return HTTPSeeOther(location=request.route_path("admin_console_verifications"))


# Integrations -------------------------------------------------------------------------


def _integration_id(request) -> int:
    return parse_id("int", request.matchdict["id"], noun="integration")


def integration_list(request):
    require_admin(request, "integrations:read")
    query, filters = list_query(request, AdminIntegrationListQuery(), {})
    page = integrations.list_admin_integrations(request, query)
    partners = _partner_names(request, {item.partner_id for item in page.items})
    return render_admin(request, "admin/integrations.html", items=page.items,
                        next_cursor=page.next_cursor, filters=filters, partners=partners,
                        statuses=INTEGRATION_STATUSES, nav="integrations")


def _partner_names(request, partner_ids) -> dict[int, str]:
    ids = [partner_id for partner_id in partner_ids if partner_id is not None]
    if not ids:
        return {}
    return dict(request.dbsession.execute(
        sa.select(Partner.id, Partner.company_name).where(Partner.id.in_(ids))).all())


def _integration_page(request, integration_id: int, status: int = 200, *,
                      review_form: forms.Form | None = None,
                      featured_form: forms.Form | None = None):
    integration = integrations.get_integration(request, integration_id)
    versions = integrations.versions_of(request.dbsession, integration)
    partner = request.dbsession.get(Partner, integration.partner_id) \
        if integration.partner_id is not None else None
    if status >= 400:
        request.tm.doom()
    featured_values = {"rank": "" if integration.featured_rank is None
                       else str(integration.featured_rank)}
    return render_admin(request, "admin/integration.html", status=status,
                        integration=integration, versions=versions, partner=partner,
                        review_form=review_form or forms.Form(),
                        featured_form=featured_form or forms.Form(values=featured_values),
                        nav="integrations")


def integration_detail(request):
    require_admin(request, "integrations:read")
    return _integration_page(request, _integration_id(request))


def integration_review(request):
    require_admin(request, "integrations:review")
    integration_id = _integration_id(request)
    posted = forms.posted_values(request)
    form = forms.Form(values={"reason": posted.get("reason", "")})
    data = {name: posted[name] for name in ("decision", "reason") if name in posted}
    loaded = forms.load(ReviewBody(), data, form)
    if loaded is None:
        return _integration_page(request, integration_id, 400, review_form=form)
    try:
        integration = integrations.review_integration(request, integration_id,
                                                      loaded["decision"], loaded.get("reason"))
    except ApiError as error:
        if error.status == 404:
            raise
        forms.add_api_error(form, error)
        return _integration_page(request, integration_id, error.status, review_form=form)

    verb = "published" if loaded["decision"] == "approve" else "rejected"
    request.admin_session.flash(f"The integration {integration.name} is {verb}.")
    return HTTPSeeOther(location=request.route_path("admin_console_integrations"))


def integration_featured(request):
    require_admin(request, "integrations:review")
    integration_id = _integration_id(request)
    posted = forms.posted_values(request)
    forms.integer_field(posted, "rank")
    form = forms.Form(values={"rank": str(posted.get("rank", ""))})
    featured = posted.get("featured")
    data = {"featured": {"true": True, "false": False}.get(featured, featured)}
    if "rank" in posted and data["featured"] is True:
        data["rank"] = posted["rank"]
    loaded = forms.load(FeaturedBody(), data, form)
    if loaded is None:
        return _integration_page(request, integration_id, 400, featured_form=form)
    try:
        integration = integrations.set_featured(request, integration_id, loaded["featured"],
                                                loaded.get("rank"))
    except ApiError as error:
        if error.status == 404:
            raise
        forms.add_api_error(form, error)
        return _integration_page(request, integration_id, error.status, featured_form=form)

    if integration.featured_rank is None:
        message = f"{integration.name} is no longer featured."
    else:
        message = f"{integration.name} is featured at rank {integration.featured_rank}."
    request.admin_session.flash(message)
    return HTTPSeeOther(location=request.route_path("admin_console_featured"))


def featured_list(request):
    require_admin(request, "integrations:read")
    query = forms.page_query(request)
    # Featured integrations are listed by rank, so the opaque cursor is an offset.
    start = query.get("cursor") or 0
    limit = query["limit"]
    rows = request.dbsession.scalars(
        sa.select(Integration).where(Integration.featured_rank.is_not(None))
        .order_by(Integration.featured_rank, Integration.id)
        .offset(start).limit(limit + 1)).all()
    next_cursor = encode_cursor(start + limit) if len(rows) > limit else None
    return render_admin(request, "admin/featured.html", items=rows[:limit],
                        next_cursor=next_cursor, nav="featured")


# Plugins ------------------------------------------------------------------------------


def plugin_list(request):
    require_admin(request, "plugins:read")
    host = request.registry["plugins"]
    states = plugin_views._states(request)
    query = forms.page_query(request)
    names = sorted(host.plugins)
    start = query.get("cursor") or 0
    page = names[start:start + query["limit"]]
    described = [plugin_views._describe(host, name, states.get(name)) for name in page]
    # The list is small and held in memory, so the opaque cursor is an offset into it.
    more = start + query["limit"] < len(names)
    next_cursor = encode_cursor(start + query["limit"]) if more else None
    return render_admin(request, "admin/plugins.html", plugins=described,
                        next_cursor=next_cursor, nav="plugins")


def _plugin_page(request, name: str, form: forms.Form, status: int = 200):
    host = request.registry["plugins"]
    described = plugin_views._detail(host, name, request.dbsession.get(PluginState, name))
    if status >= 400:
        request.tm.doom()
    return render_admin(request, "admin/plugin.html", status=status, plugin=described,
                        form=form, nav="plugins")


def plugin_detail(request):
    if request.method == "GET":
        require_admin(request, "plugins:read")
        return _plugin_page(request, plugin_views._plugin_name(request), forms.Form())

    require_admin(request, "plugins:write")
    name = plugin_views._plugin_name(request)
    posted = forms.posted_values(request)
    form = forms.Form()
    enabled = {"true": True, "false": False}.get(posted.get("enabled"), posted.get("enabled"))
    loaded = forms.load(plugin_views.UpdatePluginBody(), {"enabled": enabled}
                        if enabled is not None else {}, form)
    if loaded is not None and loaded["enabled"] is False and posted.get("confirm") != "yes":
        form.add_error("confirm", "Confirm that disabling hides this plugin's integrations "
                                  "and event types.")
        loaded = None
    if loaded is None:
        return _plugin_page(request, name, form, status=400)
    try:
        plugin_views._change_enabled(request, request.registry["plugins"], name,
                                     loaded["enabled"])
    except ApiError as error:
        forms.add_api_error(form, error)
        return _plugin_page(request, name, form, status=error.status)

    request.dbsession.flush()
    verb = "enabled" if loaded["enabled"] else "disabled"
    request.admin_session.flash(f"The plugin {name} is {verb}.")
    return HTTPSeeOther(location=request.route_path("admin_console_plugin", name=name))


# Audit log ----------------------------------------------------------------------------


def audit_log(request):
    require_admin(request, "audit:read")
    query, filters = list_query(request, schemas.AdminAuditQuery(), {})
    page = paginate(services.audit_log_query(query), AuditEntry.id, query, request.dbsession)
    next_query = {name: value for name, value in filters.values.items()
                  if name not in filters.errors}
    return render_admin(request, "admin/audit_log.html", entries=page.items,
                        next_cursor=page.next_cursor, filters=filters, next_query=next_query,
                        actor_types=("user", "admin", "api_key", "system"), nav="audit")


# Registration -------------------------------------------------------------------------


# Modules under fkod.portal with more console pages in a ROUTES table of the same shape.
ADMIN_PAGE_MODULES = ("admin_ticket_views", "admin_billing_views", "admin_plan_views")


def includeme(config):
    import importlib
    import sys

    config.include("fkod.portal.admin_access")
    modules = [sys.modules[__name__]] + [importlib.import_module(f"fkod.portal.{name}")
                                         for name in ADMIN_PAGE_MODULES]
    for module in modules:
        for name, path, function, methods, summary in module.ROUTES:
            _add_admin_page(config, name, path, getattr(module, function), methods, summary,
                            signed_in=name not in PUBLIC_PAGES)


def _add_admin_page(config, name, path, view, methods, summary, *, signed_in):
    """Register one console page as ``fkod.portal._add_page`` does, with the admin scheme."""
    from fkod.core.openapi_plain import ADMIN_SESSION_SCHEME, describe_page
    from fkod.portal import _method_not_allowed

    config.add_route(name, path)
    describe_page(config.registry, name, path, methods, summary, tag="admin console",
                  signed_in=signed_in, security_scheme=ADMIN_SESSION_SCHEME)
    config.add_view(view, route_name=name, request_method=methods)
    config.add_view(_method_not_allowed(methods), route_name=name)
