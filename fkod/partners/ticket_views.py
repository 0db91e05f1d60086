"""Cornice services of a partner's support tickets, their replies and attached evidence.

Tickets are named ``tkt_<number>``, and another partner's ticket is a 404.
"""

from __future__ import annotations

from cornice import Service

from fkod.core.api import AUTH_MEMBER, Dumped, operation
from fkod.core.ids import parse_id
from fkod.partners import ticket_schemas as schemas
from fkod.partners import tickets

collection = Service(name="partner_support_tickets", path="/api/partners/support/tickets",
                     description="The partner's support tickets")
item = Service(name="partner_support_ticket", path="/api/partners/support/tickets/{id}",
               description="One support ticket with its thread and evidence")
reply = Service(name="partner_support_ticket_reply",
                path="/api/partners/support/tickets/{id}/reply",
                description="Add a message to a ticket's thread")
close = Service(name="partner_support_ticket_close",
                path="/api/partners/support/tickets/{id}/close",
                description="Close a ticket")
evidence = Service(name="partner_support_ticket_evidence",
                   path="/api/partners/support/tickets/{id}/evidence",
                   description="Attach a snapshot of one of the partner's records")

SERVICES = (collection, item, reply, close, evidence)
NOT_FOUND = ((404, "not_found"),)
INVALID_TRANSITION = ((409, "invalid_transition"),)


def ticket_id(request) -> int:
    return parse_id("tkt", request.matchdict["id"], noun="support ticket")


def ticket_detail(request, ticket, ticket_schema=schemas.TicketSchema,
                  message_schema=schemas.MessageSchema) -> Dumped:
    """Dump a ticket with its messages and evidence, oldest first."""
    messages, attached = tickets.thread_of(request.dbsession, ticket)
    result = Dumped(ticket_schema().dump(ticket))
    result["messages"] = message_schema(many=True).dump(messages)
    result["evidence"] = schemas.EvidenceSchema(many=True).dump(attached)
    return result


@operation(collection, "POST", summary="Open a support ticket", auth=AUTH_MEMBER,
           permission="support:write", body=schemas.CreateTicketBody,
           response=schemas.TicketSchema, status=201)
def create_ticket(request):
    return tickets.create_ticket(request, request.partner, dict(request.validated))


@operation(collection, "GET", summary="List the partner's tickets with filters and a sort "
                                      "order, newest first by default",
           auth=AUTH_MEMBER, permission="support:read", query=schemas.TicketListQuery,
           response=schemas.TicketSchema, paginated=True)
def list_tickets(request):
    return tickets.list_partner_tickets(request, request.partner, request.query)


@operation(item, "GET", summary="Get a ticket with its thread and evidence", auth=AUTH_MEMBER,
           permission="support:read", response=schemas.TicketDetailSchema, errors=NOT_FOUND)
def get_ticket(request):
    return ticket_detail(request, tickets.get_partner_ticket(request, request.partner,
                                                             ticket_id(request)))


@operation(reply, "POST", summary="Reply on a ticket; one waiting on the partner or resolved "
                                  "reopens", auth=AUTH_MEMBER, permission="support:write",
           body=schemas.ReplyBody, response=schemas.MessageSchema, status=201,
           errors=NOT_FOUND + INVALID_TRANSITION)
def reply_to_ticket(request):
    _ticket, message = tickets.partner_reply(request, request.partner, ticket_id(request),
                                             request.validated["body"])
    return message


@operation(close, "POST", summary="Close a ticket for good", auth=AUTH_MEMBER,
           permission="support:write", body=schemas.CloseTicketBody,
           response=schemas.TicketSchema,
           errors=NOT_FOUND + INVALID_TRANSITION)
def close_ticket(request):
    return tickets.close_ticket(request, request.partner, ticket_id(request))


@operation(evidence, "POST", summary="Attach a snapshot of a gateway call, a webhook delivery "
                                     "or an API key's rate-limit windows",
           auth=AUTH_MEMBER, permission="support:write", body=schemas.AttachEvidenceBody,
           response=schemas.EvidenceSchema, status=201,
           errors=(*NOT_FOUND, (409, "ticket_closed"), (409, "evidence_limit_reached")))
def attach_evidence(request):
    return tickets.attach_evidence(request, request.partner, ticket_id(request),
                                   dict(request.validated))


def includeme(config):
    for service in SERVICES:
        config.add_cornice_service(service)
