"""Cornice services of the admin API for support tickets of every partner.

Admins read tickets with their thread and evidence, reply, and change a
ticket's status, priority or assigned admin. Status changes follow
:data:`fkod.partners.tickets.TRANSITIONS`, and status changes and assignments
are audited.
"""

from __future__ import annotations

from cornice import Service

from fkod.core.api import AUTH_ADMIN, operation
from fkod.partners import ticket_schemas as schemas
from fkod.partners import tickets
from fkod.partners.ticket_views import ticket_detail, ticket_id

collection = Service(name="admin_tickets", path="/api/admin/tickets",
                     description="Support tickets of every partner")
item = Service(name="admin_ticket", path="/api/admin/tickets/{id}",
               description="One support ticket with its thread and evidence")
reply = Service(name="admin_ticket_reply", path="/api/admin/tickets/{id}/reply",
                description="Reply to a ticket")

SERVICES = (collection, item, reply)
NOT_FOUND = ((404, "not_found"),)
INVALID_TRANSITION = ((409, "invalid_transition"),)


def _detail(request, ticket):
    return ticket_detail(request, ticket, schemas.AdminTicketSchema, schemas.AdminMessageSchema)


@operation(collection, "GET", summary="List tickets of every partner with filters and a sort "
                                      "order, newest first by default",
           auth=AUTH_ADMIN, permission="tickets:read", query=schemas.AdminTicketListQuery,
           response=schemas.AdminTicketSchema, paginated=True)
def list_tickets(request):
    return tickets.list_admin_tickets(request, request.query)


@operation(item, "GET", summary="Get a ticket with its thread and evidence", auth=AUTH_ADMIN,
           permission="tickets:read", response=schemas.AdminTicketDetailSchema,
           errors=NOT_FOUND)
def get_ticket(request):
    return _detail(request, tickets.get_ticket(request, ticket_id(request)))


@operation(item, "PUT", summary="Change a ticket's status, priority or assigned admin",
           auth=AUTH_ADMIN, permission="tickets:write", body=schemas.UpdateTicketBody,
           response=schemas.AdminTicketDetailSchema,
           errors=NOT_FOUND + INVALID_TRANSITION + ((400, "invalid_assignee"),))
def update_ticket(request):
    updated = tickets.update_ticket(request, ticket_id(request), dict(request.validated))
    return _detail(request, updated)


@operation(reply, "POST", summary="Reply to a ticket; an open ticket moves to in_progress unless "
                                  "a status is given",
           auth=AUTH_ADMIN, permission="tickets:write", body=schemas.AdminReplyBody,
           response=schemas.AdminMessageSchema, status=201,
           errors=NOT_FOUND + INVALID_TRANSITION + ((409, "ticket_closed"),))
def reply_to_ticket(request):
    data = request.validated
    _ticket, message = tickets.admin_reply(request, ticket_id(request), data["body"],
                                           data.get("status"))
    return message


def includeme(config):
    for service in SERVICES:
        config.add_cornice_service(service)
