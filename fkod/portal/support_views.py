"""Support pages: the partner's tickets with their threads, and the partner's audit log.

Tickets go through :mod:`fkod.partners.tickets`, the module behind
``/api/partners/support/tickets``. Evidence is what that API attaches: a
snapshot of a gateway call, a webhook delivery or an API key's rate-limit
windows, named by its reference. The audit log page reads the entries
``GET /api/partners/audit-log`` returns, with the same filters.
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from pyramid.httpexceptions import HTTPSeeOther

from fkod.core.api import paginate
from fkod.core.audit import AuditEntry
from fkod.core.errors import ApiError
from fkod.core.ids import parse_id
from fkod.partners import ticket_schemas, tickets
from fkod.partners.audit_views import AuditQuery, PartnerAuditEntrySchema, filter_entries
from fkod.portal import forms
from fkod.portal.access import require_member
from fkod.portal.rendering import render

ROUTES = (
    ("portal_support", "/portal/support", "ticket_list", ("GET", "POST"),
     "List the partner's support tickets, or open one"),
    ("portal_ticket_new", "/portal/support/new", "ticket_new", ("GET",),
     "Show the form that opens a support ticket"),
    ("portal_ticket", "/portal/support/{id}", "ticket_detail", ("GET",),
     "Show a support ticket with its thread and evidence"),
    ("portal_ticket_reply", "/portal/support/{id}/reply", "ticket_reply", ("POST",),
     "Reply on a support ticket"),
    ("portal_ticket_close", "/portal/support/{id}/close", "ticket_close", ("POST",),
     "Close a support ticket for good"),
    ("portal_ticket_evidence", "/portal/support/{id}/evidence", "ticket_evidence", ("POST",),
     "Attach evidence to a support ticket"),
    ("portal_audit_log", "/portal/audit-log", "audit_log", ("GET",),
     "List the partner's audit log with filters"),
)

TICKET_FILTERS = ("status", "category", "priority")
AUDIT_FILTERS = ("action", "created_after", "created_before")
# A plain date typed in an audit filter means midnight UTC.
PLAIN_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
EVIDENCE_FIELDS = {"kind": "evidence_kind", "reference": "evidence_reference",
                   "webhook_id": "evidence_webhook_id"}


def _ticket_id(request) -> int:
    return parse_id("tkt", request.matchdict["id"], noun="support ticket")


def _query_values(request, names: tuple[str, ...]) -> dict:
    return {name: request.GET[name] for name in (*names, "limit", "cursor")
            if request.GET.get(name, "").strip()}


# Tickets -------------------------------------------------------------------------------


def ticket_list(request):
    if request.method == "POST":
        return _open_ticket(request)
    member = require_member(request, "support:read")
    typed = _query_values(request, TICKET_FILTERS)
    filters = forms.Form(values=dict(typed))
    query = forms.load(ticket_schemas.TicketListQuery(), typed, filters)
    if query is None:
        # Invalid filters show the first page of every ticket, with the errors beside them.
        query = ticket_schemas.TicketListQuery().load({})
    page = tickets.list_partner_tickets(request, member.partner, query)
    return _ticket_list_page(request, filters, page, status=200 if filters.valid else 400)


def _ticket_list_page(request, filters: forms.Form, page, status: int = 200):
    params = {name: filters.value(name) for name in TICKET_FILTERS if filters.value(name)}
    return render(request, "tickets.html", status=status, tickets=page.items,
                  next_cursor=page.next_cursor, filters=filters, params=params,
                  statuses=ticket_schemas.STATUSES, categories=ticket_schemas.CATEGORIES,
                  priorities=ticket_schemas.PRIORITIES, nav="support")


def _new_ticket_page(request, form: forms.Form, status: int = 200):
    return render(request, "ticket_new.html", status=status, form=form,
                  categories=ticket_schemas.CATEGORIES, priorities=ticket_schemas.PRIORITIES,
                  evidence_kinds=ticket_schemas.EVIDENCE_KINDS, nav="support")


def ticket_new(request):
    require_member(request, "support:write")
    return _new_ticket_page(request, forms.Form(values={"priority": "medium"}))


def _evidence_data(posted: dict) -> dict:
    return {api_name: posted[page_name] for api_name, page_name in EVIDENCE_FIELDS.items()
            if page_name in posted}


def _open_ticket(request):
    """Open a ticket with its first message and, when given, one piece of evidence.

    Both are written in one transaction, so evidence that fails its check
    leaves no ticket behind.
    """
    member = require_member(request, "support:write")
    posted = forms.posted_values(request)
    names = ("title", "description", "category", "priority", *EVIDENCE_FIELDS.values())
    form = forms.Form(values={name: posted.get(name, "") for name in names})
    ticket_data = forms.load(ticket_schemas.CreateTicketBody(),
                             {name: posted[name] for name in
                              ("title", "description", "category", "priority")
                              if name in posted}, form)
    evidence = _evidence_data(posted)
    evidence_data = None
    if evidence:
        evidence_form = forms.Form()
        evidence_data = forms.load(ticket_schemas.AttachEvidenceBody(), evidence, evidence_form)
        _rename_errors(evidence_form, form)
    if not form.valid:
        request.tm.doom()
        return _new_ticket_page(request, form, status=400)

    try:
        ticket = tickets.create_ticket(request, member.partner, dict(ticket_data))
        if evidence_data is not None:
            tickets.attach_evidence(request, member.partner, ticket.id, dict(evidence_data))
    except ApiError as error:
        forms.add_api_error(form, error, EVIDENCE_FIELDS)
        request.tm.doom()
        return _new_ticket_page(request, form, status=error.status)
    request.portal_session.flash(f"Ticket {tickets.ticket_public_id(ticket)} is open. Support "
                                 "replies here and by mail.")
    return HTTPSeeOther(location=request.route_path(
        "portal_ticket", id=tickets.ticket_public_id(ticket)))


def _rename_errors(source: forms.Form, target: forms.Form) -> None:
    for name, messages in source.errors.items():
        for message in messages:
            target.add_error(EVIDENCE_FIELDS.get(name, name), message)


def _ticket_page(request, member, ticket, reply: forms.Form | None = None,
                 evidence: forms.Form | None = None, status: int = 200):
    messages, attached = tickets.thread_of(request.dbsession, ticket)
    return render(request, "ticket_detail.html", status=status, ticket=ticket,
                  public_id=tickets.ticket_public_id(ticket), messages=messages,
                  evidence=attached, reply=reply or forms.Form(),
                  evidence_form=evidence or forms.Form(),
                  evidence_kinds=ticket_schemas.EVIDENCE_KINDS,
                  can_write=member.can("support:write"), nav="support")


def ticket_detail(request):
    member = require_member(request, "support:read")
    ticket = tickets.get_partner_ticket(request, member.partner, _ticket_id(request))
    return _ticket_page(request, member, ticket)


def ticket_reply(request):
    member = require_member(request, "support:write")
    ticket = tickets.get_partner_ticket(request, member.partner, _ticket_id(request))
    posted = forms.posted_values(request)
    body = request.POST.get("body", "")
    form = forms.Form(values={"body": body if isinstance(body, str) else ""})
    loaded = forms.load(ticket_schemas.ReplyBody(),
                        {name: posted[name] for name in ("body",) if name in posted}, form)
    if loaded is None:
        request.tm.doom()
        return _ticket_page(request, member, ticket, reply=form, status=400)
    try:
        tickets.partner_reply(request, member.partner, ticket.id, loaded["body"])
    except ApiError as error:
        forms.add_api_error(form, error)
        request.tm.doom()
        return _ticket_page(request, member, ticket, reply=form, status=error.status)
    request.portal_session.flash("Your reply is sent.")
    return HTTPSeeOther(location=request.route_path("portal_ticket",
                                                    id=tickets.ticket_public_id(ticket)))


def ticket_close(request):
    member = require_member(request, "support:write")
    ticket_id = _ticket_id(request)
    location = request.route_path("portal_ticket", id=f"tkt_{ticket_id}")
    try:
        tickets.close_ticket(request, member.partner, ticket_id)
    except ApiError as error:
        if error.status == 404:
            raise
        request.tm.doom()
        request.portal_session.flash(f"The ticket was not closed: {error.message}", "error")
        return HTTPSeeOther(location=location)
    request.portal_session.flash("The ticket is closed.")
    return HTTPSeeOther(location=location)


def ticket_evidence(request):
    member = require_member(request, "support:write")
    ticket = tickets.get_partner_ticket(request, member.partner, _ticket_id(request))
    posted = forms.posted_values(request)
    form = forms.Form(values={name: posted.get(name, "") for name in EVIDENCE_FIELDS.values()})
    loaded_form = forms.Form()
    loaded = forms.load(ticket_schemas.AttachEvidenceBody(), _evidence_data(posted), loaded_form)
    _rename_errors(loaded_form, form)
    if loaded is None:
        request.tm.doom()
        return _ticket_page(request, member, ticket, evidence=form, status=400)
    try:
        tickets.attach_evidence(request, member.partner, ticket.id, dict(loaded))
    except ApiError as error:
        forms.add_api_error(form, error, EVIDENCE_FIELDS)
        request.tm.doom()
        return _ticket_page(request, member, ticket, evidence=form, status=error.status)
    request.portal_session.flash("The evidence is attached.")
    return HTTPSeeOther(location=request.route_path("portal_ticket",
                                                    id=tickets.ticket_public_id(ticket)))


# Audit log -------------------------------------------------------------------------------


def audit_log(request):
    member = require_member(request, "partner:read")
    typed = _query_values(request, AUDIT_FILTERS)
    filters = forms.Form(values=dict(typed))
    data = dict(typed)
    for name in ("created_after", "created_before"):
        if name in data and PLAIN_DATE.fullmatch(data[name].strip()):
            data[name] = data[name].strip() + "T00:00:00Z"
    query = forms.load(AuditQuery(), data, filters)
    status = 200
    if query is None:
        status = 400
        query = AuditQuery().load({})
    select = filter_entries(
        sa.select(AuditEntry).where(AuditEntry.partner_id == member.partner.id), query)
    page = paginate(select, AuditEntry.id, query, request.dbsession)
    entries = PartnerAuditEntrySchema(many=True).dump(page.items)
    params = {name: typed[name] for name in AUDIT_FILTERS if name in typed}
    return render(request, "audit_log.html", status=status, entries=entries,
                  next_cursor=page.next_cursor if status == 200 else None, filters=filters,
                  params=params, nav="audit")
