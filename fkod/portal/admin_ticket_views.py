"""Admin console pages for support tickets: the list with filters, a ticket's thread, reply,
assignment and status.

They call the service functions of ``/api/admin/tickets…`` and need the same
permissions: ``tickets:read`` to read and ``tickets:write`` to change.
"""

from __future__ import annotations

import sqlalchemy as sa
from pyramid.httpexceptions import HTTPSeeOther

from fkod.admin.auth import admin_role_permits
from fkod.core.auth.models import AdminUser, Partner
from fkod.core.errors import ApiError
from fkod.partners import ticket_schemas, tickets
from fkod.partners.ticket_views import ticket_id
from fkod.portal import forms
from fkod.portal.admin_access import render_admin, require_admin
from fkod.portal.admin_views import list_query

# (route name, path, view function, request methods, summary)
ROUTES = (
    ("admin_console_tickets", "/admin/tickets", "ticket_list", ("GET",),
     "List support tickets of every partner with filters"),
    ("admin_console_ticket", "/admin/tickets/{id}", "ticket_detail", ("GET", "POST"),
     "Show a ticket with its thread, or change its status, priority or assigned admin"),
    ("admin_console_ticket_reply", "/admin/tickets/{id}/reply", "ticket_reply", ("POST",),
     "Reply to a ticket"),
)


def _admins(request) -> list[AdminUser]:
    return list(request.dbsession.scalars(sa.select(AdminUser).order_by(AdminUser.email)))


def ticket_list(request):
    require_admin(request, "tickets:read")
    query, filters = list_query(request, ticket_schemas.AdminTicketListQuery(), {})
    page = tickets.list_admin_tickets(request, query)
    partner_ids = {ticket.partner_id for ticket in page.items if ticket.partner_id}
    partners = dict(request.dbsession.execute(
        sa.select(Partner.id, Partner.company_name).where(Partner.id.in_(partner_ids))).all()) \
        if partner_ids else {}
    admins = _admins(request)
    return render_admin(request, "admin/tickets.html", tickets=page.items,
                        next_cursor=page.next_cursor, filters=filters, partners=partners,
                        admins=admins, admin_names={admin.id: admin.email for admin in admins},
                        statuses=ticket_schemas.STATUSES, priorities=ticket_schemas.PRIORITIES,
                        categories=ticket_schemas.CATEGORIES, sorts=ticket_schemas.SORT_CHOICES,
                        nav="tickets")


def _ticket_page(request, number: int, status: int = 200, *,
                 reply_form: forms.Form | None = None, update_form: forms.Form | None = None):
    ticket = tickets.get_ticket(request, number)
    messages, evidence = tickets.thread_of(request.dbsession, ticket)
    partner = request.dbsession.get(Partner, ticket.partner_id) if ticket.partner_id else None
    admins = _admins(request)
    if status >= 400:
        request.tm.doom()
    assignee = "" if ticket.assigned_to is None else f"admin_{ticket.assigned_to}"
    update_form = update_form or forms.Form(values={
        "status": ticket.status, "priority": ticket.priority, "assigned_to": assignee})
    return render_admin(
        request, "admin/ticket.html", status=status, ticket=ticket, messages=messages,
        evidence=evidence, partner=partner, reply_form=reply_form or forms.Form(),
        update_form=update_form, admin_names={admin.id: admin.email for admin in admins},
        assignees=[admin for admin in admins if admin.status == "active"
                   and admin_role_permits(admin.role, "tickets:write")],
        statuses=ticket_schemas.STATUSES, priorities=ticket_schemas.PRIORITIES,
        nav="tickets")


def ticket_detail(request):
    if request.method == "GET":
        require_admin(request, "tickets:read")
        return _ticket_page(request, ticket_id(request))

    require_admin(request, "tickets:write")
    number = ticket_id(request)
    posted = forms.posted_values(request)
    form = forms.Form(values={name: request.POST.get(name, "")
                              for name in ("status", "priority", "assigned_to")})
    data = {name: posted[name] for name in ("status", "priority") if name in posted}
    if "assigned_to" in request.POST:
        # An empty choice unassigns the ticket, as null does in the API.
        data["assigned_to"] = posted.get("assigned_to")
    loaded = forms.load(ticket_schemas.UpdateTicketBody(), data, form)
    if loaded is None:
        return _ticket_page(request, number, 400, update_form=form)
    try:
        ticket = tickets.update_ticket(request, number, dict(loaded))
    except ApiError as error:
        if error.status == 404:
            raise
        forms.add_api_error(form, error)
        return _ticket_page(request, number, error.status, update_form=form)

    request.admin_session.flash(f"The ticket {tickets.ticket_public_id(ticket)} is updated.")
    return HTTPSeeOther(location=request.route_path("admin_console_ticket",
                                                    id=tickets.ticket_public_id(ticket)))


def ticket_reply(request):
    require_admin(request, "tickets:write")
    number = ticket_id(request)
    posted = forms.posted_values(request)
    form = forms.Form(values={"body": request.POST.get("body", ""),
                              "reply_status": request.POST.get("reply_status", "")})
    data = {"body": posted.get("body", "")}
    if "reply_status" in posted:
        data["status"] = posted["reply_status"]
    if not data["body"]:
        del data["body"]
    loaded = forms.load(ticket_schemas.AdminReplyBody(), data, form)
    if loaded is None:
        if "status" in form.errors:
            form.errors["reply_status"] = form.errors.pop("status")
        return _ticket_page(request, number, 400, reply_form=form)
    try:
        ticket, _message = tickets.admin_reply(request, number, loaded["body"],
                                               loaded.get("status"))
    except ApiError as error:
        if error.status == 404:
            raise
        forms.add_api_error(form, error, fields={"status": "reply_status"})
        return _ticket_page(request, number, error.status, reply_form=form)

    request.admin_session.flash("The reply is sent.")
    return HTTPSeeOther(location=request.route_path("admin_console_ticket",
                                                    id=tickets.ticket_public_id(ticket)))
