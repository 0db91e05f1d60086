"""Support tickets: threads, attached evidence, status changes and notifications.

A ticket moves between statuses only as :data:`TRANSITIONS` allows. Partner
members move a ticket by replying (back to open) or by closing it; admins make
the other changes. Every status change publishes
``support.ticket_status_changed``. A reply publishes ``support.ticket_replied``
and mails the other side: the member who opened the ticket for an admin's
reply, the assigned admin (or ``fkod.support.notification_address`` while
unassigned) for a partner's reply. Events go to the ticket's partner in live
mode, whatever mode the partner works in.

Evidence copies one of the partner's own records into the ticket when it is
attached (the gateway calls with one request id, the deliveries of one event,
an API key's rate-limit windows), so F-KOD support reads it as it was then.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa

from fkod.admin.auth import admin_role_permits
from fkod.core import audit, mail
from fkod.core.api import Page, encode_cursor
from fkod.core.auth.models import AdminUser, Partner, User
from fkod.core.auth.roles import role_permits
from fkod.core.db import utcnow
from fkod.core.errors import Conflict, Forbidden, NotFound, ValidationFailed, field_error
from fkod.core.ids import try_parse_id
from fkod.core.metering.models import ApiUsage
from fkod.core.webhooks.models import Event, Webhook, WebhookAttempt, WebhookEvent
from fkod.core.webhooks.outbox import publish
from fkod.partners import api_keys
from fkod.partners.models import SupportTicket, TicketEvidence, TicketMessage
from fkod.partners.schemas import (
    ApiKeyTestSchema,
    AttemptSchema,
    DeliveryDetailSchema,
    is_event_id,
)
from fkod.partners.ticket_schemas import EventTicketSchema, MessageSchema

log = logging.getLogger(__name__)

PARTNER = "partner"
ADMIN = "admin"
_BOTH = frozenset({PARTNER, ADMIN})
_ADMIN_ONLY = frozenset({ADMIN})

# Every status change a ticket allows, and who may make it. Any other change is
# rejected with 409 invalid_transition, and closed is final.
TRANSITIONS: dict[str, dict[str, frozenset[str]]] = {
    "open": {"in_progress": _ADMIN_ONLY, "waiting_on_partner": _ADMIN_ONLY,
             "resolved": _ADMIN_ONLY, "closed": _BOTH},
    "in_progress": {"open": _ADMIN_ONLY, "waiting_on_partner": _ADMIN_ONLY,
                    "resolved": _ADMIN_ONLY, "closed": _BOTH},
    "waiting_on_partner": {"open": _BOTH, "in_progress": _ADMIN_ONLY,
                           "resolved": _ADMIN_ONLY, "closed": _BOTH},
    "resolved": {"open": _BOTH, "in_progress": _ADMIN_ONLY, "closed": _BOTH},
    "closed": {},
}

# The status a partner's reply moves a ticket to, by its current status; other
# statuses stay. TRANSITIONS rejects closed -> open, so a reply to a closed ticket is a 409.
PARTNER_REPLY_MOVES = {"waiting_on_partner": "open", "resolved": "open", "closed": "open"}
# The status an admin's reply without a status moves a ticket to; other statuses stay.
ADMIN_REPLY_MOVES = {"open": "in_progress"}

PRIORITY_RANK = {"low": 0, "medium": 1, "high": 2, "urgent": 3}

MAX_EVIDENCE_PER_TICKET = 20
# Size limits of one snapshot. A delivery's attempt_total counts every attempt,
# those left out of its attempt_log included.
MAX_SNAPSHOT_CALLS = 20
MAX_SNAPSHOT_DELIVERIES = 20
MAX_SNAPSHOT_ATTEMPTS = 50

# The member permission each kind of evidence needs besides support:write,
# because it copies records that permission guards.
EVIDENCE_PERMISSIONS = {
    "api_request": "api_keys:read",
    "webhook_delivery": "webhooks:read",
    "api_key_limits": "api_keys:read",
}


def ticket_public_id(ticket: SupportTicket) -> str:
    return f"tkt_{ticket.id}"


# Status changes -------------------------------------------------------------------


def check_transition(ticket: SupportTicket, to_status: str, actor: str,
                     field: str | None = "status") -> None:
    """Raise 409 invalid_transition unless TRANSITIONS lets ``actor`` move the ticket there."""
    from_status = ticket.status
    allowed = TRANSITIONS[from_status].get(to_status, frozenset())
    if actor in allowed:
        return

    if from_status == "closed":
        hint = "A closed ticket is final; open a new ticket instead."
    elif allowed:
        hint = "Only F-KOD support can make this change."
    else:
        targets = ", ".join(TRANSITIONS[from_status])
        hint = f"From {from_status} it can move to {targets}."
    message = (f"Ticket {ticket_public_id(ticket)} cannot move from {from_status} to "
               f"{to_status}. {hint}")
    errors = [] if field is None else [
        field_error("body", field, f"from {from_status} to {to_status} is not allowed")]
    raise Conflict(message, code="invalid_transition", errors=errors)


def _change_status(request, ticket: SupportTicket, to_status: str, actor: str,
                   field: str | None = "status") -> None:
    """Move the ticket to ``to_status``; resolving sets resolved_at and reopening clears it."""
    check_transition(ticket, to_status, actor, field)
    previous = ticket.status
    now = utcnow()
    ticket.status = to_status
    ticket.updated_at = now
    if to_status == "resolved":
        ticket.resolved_at = now
    elif to_status != "closed":
        ticket.resolved_at = None
    request.dbsession.flush()

    if actor == ADMIN:
        audit.record(request, "support_ticket.status_changed", partner_id=ticket.partner_id,
                     target_type="support_ticket", target_id=ticket_public_id(ticket),
                     details={"from": previous, "to": to_status})
    _publish(request, "support.ticket_status_changed", ticket, previous_status=previous)
    log.info("support ticket status changed", extra={
        "ticket_id": ticket.id, "partner_id": ticket.partner_id, "from_status": previous,
        "to_status": to_status, "actor": actor})


# Events and mail ------------------------------------------------------------------


def ticket_event_data(ticket: SupportTicket) -> dict:
    return EventTicketSchema().dump(ticket)


def _publish(request, event_type: str, ticket: SupportTicket, **extra) -> None:
    data = ticket_event_data(ticket)
    data.update(extra)
    partner_ids = [ticket.partner_id] if ticket.partner_id is not None else []
    publish(request, event_type, data, livemode=True, partner_ids=partner_ids)


def _support_address(request, ticket: SupportTicket) -> str:
    """Return the assigned admin's address, or the support address while unassigned."""
    if ticket.assigned_to is not None:
        admin = request.dbsession.get(AdminUser, ticket.assigned_to)
        if admin is not None and admin.status == "active":
            return admin.email
    return request.registry.settings["fkod.support.notification_address"]


def _partner_address(request, ticket: SupportTicket) -> str | None:
    """Return the address of the member who opened the ticket, else the partner's contact."""
    session = request.dbsession
    creator = session.get(User, ticket.created_by_user_id) if ticket.created_by_user_id else None
    if creator is not None and creator.status == "active":
        return creator.email
    partner = session.get(Partner, ticket.partner_id) if ticket.partner_id else None
    return partner.contact_email if partner is not None else None


def _partner_label(request, ticket: SupportTicket) -> str:
    partner = request.dbsession.get(Partner, ticket.partner_id) if ticket.partner_id else None
    if partner is None:
        return "A partner"
    return f"{partner.company_name} (partner_{partner.id})"


def _mail_support_of_new_ticket(request, ticket: SupportTicket) -> None:
    public_id = ticket_public_id(ticket)
    body = (f"{_partner_label(request, ticket)} opened ticket {public_id} in category "
            f"{ticket.category} with {ticket.priority} priority.\n\n{ticket.description}\n\n"
            f"Reply with POST /api/admin/tickets/{public_id}/reply.\n")
    mail.send_after_commit(request, to=_support_address(request, ticket),
                           subject=f"New support ticket {public_id}: {ticket.title}", body=body)


def _mail_support_of_reply(request, ticket: SupportTicket, message: TicketMessage) -> None:
    public_id = ticket_public_id(ticket)
    body = (f"{request.user.email} of {_partner_label(request, ticket)} replied on ticket "
            f"{public_id}:\n\n{message.body}\n\nThe ticket is {ticket.status}. Reply with "
            f"POST /api/admin/tickets/{public_id}/reply.\n")
    mail.send_after_commit(request, to=_support_address(request, ticket),
                           subject=f"Partner reply on ticket {public_id}: {ticket.title}",
                           body=body)


def _mail_partner_of_reply(request, ticket: SupportTicket, message: TicketMessage) -> None:
    public_id = ticket_public_id(ticket)
    address = _partner_address(request, ticket)
    if address is None:
        log.warning("support reply not mailed: no partner address", extra={
            "ticket_id": ticket.id, "partner_id": ticket.partner_id})
        return
    body = (f"F-KOD support replied on your ticket {public_id} \"{ticket.title}\":\n\n"
            f"{message.body}\n\nThe ticket is {ticket.status}. Reply with "
            f"POST /api/partners/support/tickets/{public_id}/reply.\n")
    mail.send_after_commit(request, to=address,
                           subject=f"F-KOD support replied on ticket {public_id}: {ticket.title}",
                           body=body)


def _mail_assignee(request, ticket: SupportTicket, admin: AdminUser) -> None:
    public_id = ticket_public_id(ticket)
    body = (f"{request.admin.name or request.admin.email} assigned ticket {public_id} of "
            f"{_partner_label(request, ticket)} to you. It is {ticket.status}, with "
            f"{ticket.priority} priority.\n\nRead it at GET /api/admin/tickets/{public_id}.\n")
    mail.send_after_commit(request, to=admin.email,
                           subject=f"Ticket {public_id} assigned to you: {ticket.title}",
                           body=body)


# Lists ----------------------------------------------------------------------------


def _sort_key(name: str):
    if name == "updated_at":
        return SupportTicket.updated_at
    if name == "priority":
        return sa.case(PRIORITY_RANK, value=SupportTicket.priority, else_=-1)
    return None


def page_of_tickets(session, select, query: dict) -> Page:
    """Return one page of ``select`` in the order of ``query["sort"]``, keyed by id on ties.

    The cursor contains the last ticket's id, and the next page starts after
    that ticket's current sort value. A ticket whose updated_at or priority changes
    between two pages can therefore appear twice or not at all.
    """
    sort = query["sort"]
    descending = sort.startswith("-")
    sort_key = _sort_key(sort.lstrip("-"))
    cursor = query.get("cursor")
    limit = query["limit"]
    ticket_id = SupportTicket.id

    if sort_key is None:
        # Ids grow with creation time, so created_at sorts by id.
        order = (ticket_id.desc(),) if descending else (ticket_id.asc(),)
        if cursor is not None:
            select = select.where(ticket_id < cursor if descending else ticket_id > cursor)
    else:
        order = ((sort_key.desc(), ticket_id.desc()) if descending
                 else (sort_key.asc(), ticket_id.asc()))
        if cursor is not None:
            # Looked up within the same filters, so another partner's ticket is not a valid cursor.
            last_value = session.scalar(select.with_only_columns(sort_key)
                                        .where(ticket_id == cursor))
            if last_value is None:
                raise ValidationFailed("The cursor does not belong to this list.", errors=[
                    field_error("querystring", "cursor", "Not a cursor this API returned.")])
            if descending:
                after = sa.or_(sort_key < last_value,
                               sa.and_(sort_key == last_value, ticket_id < cursor))
            else:
                after = sa.or_(sort_key > last_value,
                               sa.and_(sort_key == last_value, ticket_id > cursor))
            select = select.where(after)

    rows = session.scalars(select.order_by(*order).limit(limit + 1)).all()
    has_more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, encode_cursor(rows[-1].id) if has_more and rows else None)


def _filter(select, query: dict):
    for name in ("status", "priority", "category"):
        if query.get(name) is not None:
            select = select.where(getattr(SupportTicket, name) == query[name])
    return select


def thread_of(session, ticket: SupportTicket) -> tuple[list[TicketMessage], list[TicketEvidence]]:
    """Return the ticket's messages and evidence, oldest first."""
    messages = session.scalars(sa.select(TicketMessage)
                               .where(TicketMessage.ticket_id == ticket.id)
                               .order_by(TicketMessage.id)).all()
    evidence = session.scalars(sa.select(TicketEvidence)
                               .where(TicketEvidence.ticket_id == ticket.id)
                               .order_by(TicketEvidence.id)).all()
    return list(messages), list(evidence)


# Partner side ---------------------------------------------------------------------


def partner_tickets_query(partner: Partner, query: dict | None = None):
    select = sa.select(SupportTicket).where(SupportTicket.partner_id == partner.id)
    return _filter(select, query or {})


def list_partner_tickets(request, partner: Partner, query: dict) -> Page:
    return page_of_tickets(request.dbsession, partner_tickets_query(partner, query), query)


def get_partner_ticket(request, partner: Partner, ticket_id: int, *,
                       for_update: bool = False) -> SupportTicket:
    """Return a ticket of ``partner``. Another partner's ticket or an unknown id is a 404."""
    select = partner_tickets_query(partner).where(SupportTicket.id == ticket_id)
    if for_update:
        select = select.with_for_update()
    ticket = request.dbsession.scalar(select)
    if ticket is None:
        raise NotFound(f"No support ticket with id tkt_{ticket_id}.")
    return ticket


def create_ticket(request, partner: Partner, data: dict) -> SupportTicket:
    """Open a ticket for ``partner``, publish support.ticket_created and mail support."""
    now = utcnow()
    ticket = SupportTicket(
        partner_id=partner.id, title=data["title"], description=data["description"],
        category=data["category"], priority=data["priority"], status="open",
        created_by_user_id=request.user.id, created_at=now, updated_at=now,
    )
    request.dbsession.add(ticket)
    request.dbsession.flush()

    _publish(request, "support.ticket_created", ticket)
    _mail_support_of_new_ticket(request, ticket)
    log.info("support ticket created", extra={
        "ticket_id": ticket.id, "partner_id": partner.id, "user_id": request.user.id,
        "category": ticket.category, "priority": ticket.priority})
    return ticket


def _add_message(request, ticket: SupportTicket, author_type: str, body: str) -> TicketMessage:
    now = utcnow()
    message = TicketMessage(
        ticket_id=ticket.id, author_type=author_type, body=body, created_at=now,
        user_id=request.user.id if author_type == PARTNER else None,
        admin_user_id=request.admin.id if author_type == ADMIN else None,
    )
    ticket.updated_at = now
    request.dbsession.add(message)
    request.dbsession.flush()
    _publish(request, "support.ticket_replied", ticket,
             message=MessageSchema().dump(message))
    return message


def partner_reply(request, partner: Partner, ticket_id: int,
                  body: str) -> tuple[SupportTicket, TicketMessage]:
    """Add a member's message. A ticket waiting on the partner, or resolved, reopens."""
    ticket = get_partner_ticket(request, partner, ticket_id, for_update=True)
    to_status = PARTNER_REPLY_MOVES.get(ticket.status)
    if to_status is not None:
        _change_status(request, ticket, to_status, PARTNER, field=None)

    message = _add_message(request, ticket, PARTNER, body)
    _mail_support_of_reply(request, ticket, message)
    log.info("support ticket replied", extra={
        "ticket_id": ticket.id, "partner_id": partner.id, "user_id": request.user.id,
        "author_type": PARTNER})
    return ticket, message


def close_ticket(request, partner: Partner, ticket_id: int) -> SupportTicket:
    """Close a ticket for good. Closing a closed ticket is a 409."""
    ticket = get_partner_ticket(request, partner, ticket_id, for_update=True)
    _change_status(request, ticket, "closed", PARTNER, field=None)
    return ticket


# Evidence -------------------------------------------------------------------------


def _invalid_reference(message: str) -> ValidationFailed:
    return ValidationFailed(message, errors=[field_error("body", "reference", message)])


def _iso(moment) -> str | None:
    return None if moment is None else moment.isoformat(timespec="seconds") + "Z"


def snapshot_api_request(request, partner: Partner, reference: str) -> dict:
    """Copy the partner's gateway calls made with request id ``reference``."""
    rows = request.dbsession.scalars(
        sa.select(ApiUsage)
        .where(ApiUsage.partner_id == partner.id, ApiUsage.request_id == reference)
        .order_by(ApiUsage.id)
        .limit(MAX_SNAPSHOT_CALLS)
    ).all()
    if not rows:
        raise NotFound(
            f"No gateway call of this partner has the request id {reference!r}. A call is "
            "recorded a few seconds after it is made; retry shortly if it was just made.")
    calls = [{
        "endpoint": row.endpoint,
        "method": row.method,
        "status_code": row.status_code,
        "response_time_ms": row.response_time,
        "request_size": row.request_size,
        "response_size": row.response_size,
        "error_message": row.error_message,
        "mode": "live" if row.livemode else "test",
        "api_key_id": None if row.api_key_id is None else f"key_{row.api_key_id}",
        "created_at": _iso(row.created_at),
    } for row in rows]
    return {"request_id": reference, "calls": calls}


def snapshot_webhook_delivery(request, partner: Partner, reference: str,
                              webhook_id: int | None) -> dict:
    """Copy the deliveries of event ``reference`` to the partner's endpoints, with attempts.

    ``webhook_id`` narrows them to one endpoint. Deleted endpoints are left
    out, as everywhere in the partner API.
    """
    if not is_event_id(reference):
        raise _invalid_reference("A webhook_delivery reference is an event id of the form "
                                 "evt_<letters and digits>.")
    session = request.dbsession
    select = (
        sa.select(WebhookEvent, Webhook)
        .join(Webhook, Webhook.id == WebhookEvent.webhook_id)
        .join(Event, Event.id == WebhookEvent.event_id)
        .where(Webhook.partner_id == partner.id, Webhook.status != "deleted",
               Event.public_id == reference)
    )
    if webhook_id is not None:
        select = select.where(WebhookEvent.webhook_id == webhook_id)
    rows = session.execute(select.order_by(WebhookEvent.id).limit(MAX_SNAPSHOT_DELIVERIES)).all()
    if not rows:
        where = "" if webhook_id is None else f" to webhook endpoint whk_{webhook_id}"
        raise NotFound(f"No delivery of event {reference}{where} to this partner's endpoints.")

    deliveries = []
    for delivery, webhook in rows:
        item = DeliveryDetailSchema().dump(delivery)
        item["url"] = webhook.url
        latest = session.scalars(
            sa.select(WebhookAttempt).where(WebhookAttempt.delivery_id == delivery.id)
            .order_by(WebhookAttempt.id.desc()).limit(MAX_SNAPSHOT_ATTEMPTS)
        ).all()
        item["attempt_log"] = AttemptSchema(many=True).dump(list(reversed(latest)))
        deliveries.append(item)
    return {"event_id": reference, "event_type": rows[0][0].event_type,
            "deliveries": deliveries}


def snapshot_api_key_limits(request, reference: str) -> dict:
    """Copy the current rate-limit windows of the caller's API key ``reference``."""
    key_id = try_parse_id("key", reference)
    if key_id is None:
        raise _invalid_reference("An api_key_limits reference is an API key id of the form "
                                 "key_<number>.")
    key = api_keys.get_api_key(request, key_id)
    snapshot = ApiKeyTestSchema().dump(api_keys.test_api_key(request, key_id, None))
    snapshot.pop("secret_matches", None)
    snapshot.update(key_name=key.key_name, key_prefix=key.key_prefix,
                    rate_limit=key.rate_limit, rate_limit_window=key.rate_limit_window)
    return snapshot


def attach_evidence(request, partner: Partner, ticket_id: int, data: dict) -> TicketEvidence:
    """Snapshot one of the partner's records into the ticket.

    A record of another partner, or one that does not exist, is a 404 and
    nothing is attached.
    """
    ticket = get_partner_ticket(request, partner, ticket_id, for_update=True)
    if ticket.status == "closed":
        raise Conflict(f"Ticket {ticket_public_id(ticket)} is closed; evidence can no longer "
                       "be attached.", code="ticket_closed")

    kind = data["kind"]
    permission = EVIDENCE_PERMISSIONS[kind]
    if not role_permits(request.principal.role, permission):
        raise Forbidden(f"The {request.principal.role} role does not grant the permission "
                        f"{permission}, which {kind} evidence needs.", code="missing_permission")

    session = request.dbsession
    attached = session.scalar(sa.select(sa.func.count()).select_from(TicketEvidence)
                              .where(TicketEvidence.ticket_id == ticket.id))
    if attached >= MAX_EVIDENCE_PER_TICKET:
        raise Conflict(f"Ticket {ticket_public_id(ticket)} already has "
                       f"{MAX_EVIDENCE_PER_TICKET} pieces of evidence, the most it can hold.",
                       code="evidence_limit_reached")

    reference = data["reference"]
    if kind == "api_request":
        snapshot = snapshot_api_request(request, partner, reference)
    elif kind == "webhook_delivery":
        snapshot = snapshot_webhook_delivery(request, partner, reference, data.get("webhook_id"))
    else:
        snapshot = snapshot_api_key_limits(request, reference)

    now = utcnow()
    evidence = TicketEvidence(ticket_id=ticket.id, kind=kind, reference=reference,
                              snapshot=snapshot, attached_by_user_id=request.user.id,
                              created_at=now)
    ticket.updated_at = now
    session.add(evidence)
    session.flush()
    log.info("support ticket evidence attached", extra={
        "ticket_id": ticket.id, "partner_id": partner.id, "user_id": request.user.id,
        "evidence_id": evidence.id, "kind": kind})
    return evidence


# Admin side -----------------------------------------------------------------------


def admin_tickets_query(query: dict):
    """Select the tickets of every partner that match the admin list filters."""
    select = _filter(sa.select(SupportTicket), query)
    assignee = query.get("assigned_to")
    if assignee == "none":
        select = select.where(SupportTicket.assigned_to.is_(None))
    elif assignee is not None:
        select = select.where(SupportTicket.assigned_to == assignee)
    if query.get("partner_id") is not None:
        select = select.where(SupportTicket.partner_id == query["partner_id"])
    return select


def list_admin_tickets(request, query: dict) -> Page:
    return page_of_tickets(request.dbsession, admin_tickets_query(query), query)


def get_ticket(request, ticket_id: int, *, for_update: bool = False) -> SupportTicket:
    """Return any partner's ticket for admins. An unknown id is a 404."""
    select = sa.select(SupportTicket).where(SupportTicket.id == ticket_id)
    if for_update:
        select = select.with_for_update()
    ticket = request.dbsession.scalar(select)
    if ticket is None:
        raise NotFound(f"No support ticket with id tkt_{ticket_id}.")
    return ticket


def admin_reply(request, ticket_id: int, body: str,
                status: str | None = None) -> tuple[SupportTicket, TicketMessage]:
    """Add an admin's message and move the ticket to ``status``, or open -> in_progress."""
    ticket = get_ticket(request, ticket_id, for_update=True)
    if ticket.status == "closed":
        if status is not None and status != "closed":
            check_transition(ticket, status, ADMIN)
        raise Conflict(f"Ticket {ticket_public_id(ticket)} is closed; it takes no more "
                       "replies.", code="ticket_closed")
    to_status = status if status is not None else ADMIN_REPLY_MOVES.get(ticket.status)
    if to_status is not None and to_status != ticket.status:
        _change_status(request, ticket, to_status, ADMIN)

    message = _add_message(request, ticket, ADMIN, body)
    _mail_partner_of_reply(request, ticket, message)
    log.info("support ticket replied", extra={
        "ticket_id": ticket.id, "partner_id": ticket.partner_id, "admin_id": request.admin.id,
        "author_type": ADMIN})
    return ticket, message


def _assignee(request, admin_id: int) -> AdminUser:
    """Return the active admin ``admin_id`` if their role can answer tickets, else raise a 400."""
    admin = request.dbsession.get(AdminUser, admin_id)
    problem = None
    if admin is None:
        problem = f"No admin with id admin_{admin_id}."
    elif admin.status != "active":
        problem = f"Admin admin_{admin_id} is {admin.status} and cannot be assigned tickets."
    elif not admin_role_permits(admin.role, "tickets:write"):
        problem = (f"Admin admin_{admin_id} has the role {admin.role}, which cannot answer "
                   "tickets.")
    if problem is not None:
        raise ValidationFailed(problem, code="invalid_assignee",
                               errors=[field_error("body", "assigned_to", problem)])
    return admin


def update_ticket(request, ticket_id: int, data: dict) -> SupportTicket:
    """Change a ticket's status, priority or assigned admin, only the fields given."""
    ticket = get_ticket(request, ticket_id, for_update=True)
    public_id = ticket_public_id(ticket)

    if "priority" in data and data["priority"] != ticket.priority:
        previous = ticket.priority
        ticket.priority = data["priority"]
        ticket.updated_at = utcnow()
        audit.record(request, "support_ticket.priority_changed", partner_id=ticket.partner_id,
                     target_type="support_ticket", target_id=public_id,
                     details={"from": previous, "to": ticket.priority})

    assignee = None
    if "assigned_to" in data and data["assigned_to"] != ticket.assigned_to:
        assignee = None if data["assigned_to"] is None else _assignee(request, data["assigned_to"])
        previous = ticket.assigned_to
        ticket.assigned_to = data["assigned_to"]
        ticket.updated_at = utcnow()
        audit.record(request, "support_ticket.assigned", partner_id=ticket.partner_id,
                     target_type="support_ticket", target_id=public_id, details={
                         "from": None if previous is None else f"admin_{previous}",
                         "to": None if assignee is None else f"admin_{assignee.id}"})
        log.info("support ticket assigned", extra={
            "ticket_id": ticket.id, "assigned_to": ticket.assigned_to,
            "admin_id": request.admin.id})

    # The status changes last, so its event and the mail below show the other changes.
    if "status" in data and data["status"] != ticket.status:
        _change_status(request, ticket, data["status"], ADMIN)

    if assignee is not None and assignee.id != request.admin.id:
        _mail_assignee(request, ticket, assignee)
    request.dbsession.flush()
    return ticket
