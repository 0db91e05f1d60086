"""Request and response schemas of support tickets, and the support.* event types.

Partners and admins share the ticket fields. The admin schemas add the
partner, the assigned admin and the admins who wrote messages, which partner
members never see.
"""

from __future__ import annotations

import marshmallow
from marshmallow import fields, validate

from fkod.core.api import PageQuery
from fkod.core.ids import try_parse_id
from fkod.core.schemas import BodySchema, PublicId, ResponseSchema, Text, Timestamp
from fkod.core.webhooks.catalog import EventType
from fkod.partners.schemas import WebhookId

STATUSES = ("open", "in_progress", "waiting_on_partner", "resolved", "closed")
PRIORITIES = ("low", "medium", "high", "urgent")
CATEGORIES = ("api", "webhooks", "billing", "integrations", "account", "other")
AUTHOR_TYPES = ("partner", "admin")
EVIDENCE_KINDS = ("api_request", "webhook_delivery", "api_key_limits")

# List orders; a leading - sorts descending. Priority sorts by severity, so
# -priority lists urgent tickets first.
SORTS = ("created_at", "updated_at", "priority")
SORT_CHOICES = SORTS + tuple(f"-{name}" for name in SORTS)

MAX_TITLE_LENGTH = 255
MAX_TEXT_LENGTH = 10_000
MAX_REFERENCE_LENGTH = 100


def _single_line(value: str) -> None:
    # The title becomes a mail subject, where a line break would start a new header.
    if any(ord(character) < 32 or ord(character) == 127 for character in value):
        raise marshmallow.ValidationError("Must be one line without control characters.")


def _choice(names: tuple[str, ...], **kwargs) -> Text:
    return Text(validate=validate.OneOf(names, error="Must be one of: {choices}."), **kwargs)


# Partner requests -----------------------------------------------------------------


class CreateTicketBody(BodySchema):
    title = Text(required=True, min_length=1, max_length=MAX_TITLE_LENGTH,
                 validate=_single_line)
    description = Text(required=True, min_length=1, max_length=MAX_TEXT_LENGTH)
    category = _choice(CATEGORIES, required=True)
    priority = _choice(PRIORITIES, load_default="medium",
                       metadata={"description": "low, medium (the default), high or urgent"})


class ReplyBody(BodySchema):
    body = Text(required=True, min_length=1, max_length=MAX_TEXT_LENGTH)


class CloseTicketBody(BodySchema):
    """No fields: the ticket is named by the path."""


class AttachEvidenceBody(BodySchema):
    kind = _choice(EVIDENCE_KINDS, required=True)
    reference = Text(required=True, min_length=1, max_length=MAX_REFERENCE_LENGTH, metadata={
        "description": "the X-Request-Id of a gateway call (api_request), an event id evt_… "
                       "(webhook_delivery) or an API key id key_… (api_key_limits)"})
    webhook_id = WebhookId(metadata={
        "description": "webhook_delivery only: the endpoint whk_… whose delivery to attach; "
                       "without it, every delivery of the event to the partner's endpoints"})

    @marshmallow.validates_schema
    def _webhook_id_only_for_deliveries(self, data, **kwargs):
        if "webhook_id" in data and data.get("kind") != "webhook_delivery":
            raise marshmallow.ValidationError("Only evidence of kind webhook_delivery takes "
                                              "a webhook_id.", "webhook_id")


class TicketListQuery(PageQuery):
    status = _choice(STATUSES)
    priority = _choice(PRIORITIES)
    category = _choice(CATEGORIES)
    sort = _choice(SORT_CHOICES, load_default="-created_at", metadata={
        "description": "created_at, updated_at or priority, with a leading - for descending; "
                       "-created_at by default"})


# Admin requests -------------------------------------------------------------------


class AdminReplyBody(ReplyBody):
    status = _choice(STATUSES, metadata={
        "description": "the status to move the ticket to; without it an open ticket moves "
                       "to in_progress and any other keeps its status"})


class UpdateTicketBody(BodySchema):
    status = _choice(STATUSES)
    priority = _choice(PRIORITIES)
    assigned_to = PublicId("admin", allow_none=True, metadata={
        "description": "the admin admin_… who handles the ticket; null unassigns it"})

    @marshmallow.validates_schema
    def _not_empty(self, data, **kwargs):
        if not data:
            raise marshmallow.ValidationError("Give at least one of status, priority and "
                                              "assigned_to.")


class AssigneeFilter(fields.Field):
    """``admin_<number>``, loaded as the admin's row id, or ``none`` for unassigned tickets."""

    def _deserialize(self, value, attr, data, **kwargs):
        if value == "none":
            return value
        number = try_parse_id("admin", value)
        if number is None:
            raise marshmallow.ValidationError("Must be an id of the form admin_<number>, "
                                              "or none.")
        return number


class AdminTicketListQuery(TicketListQuery):
    assigned_to = AssigneeFilter(metadata={
        "description": "admin_… for that admin's tickets, or none for unassigned tickets"})
    partner_id = PublicId("partner", metadata={"description": "only this partner's tickets"})


# Responses ------------------------------------------------------------------------


class TicketSchema(ResponseSchema):
    """A ticket as partner members see it."""

    id = PublicId("tkt")
    title = fields.String()
    description = fields.String()
    category = fields.String()
    priority = fields.String()
    status = fields.String(metadata={"description": ", ".join(STATUSES)})
    created_by = PublicId("user", attribute="created_by_user_id")
    created_at = Timestamp()
    updated_at = Timestamp()
    resolved_at = Timestamp(metadata={"description": "when the ticket was last resolved; "
                                                     "null while it is not resolved or closed"})


def _partner_author_id(message) -> str | None:
    # Partner members see which member wrote a message, but not which admin replied.
    if message.author_type == "partner" and message.user_id is not None:
        return f"user_{message.user_id}"
    return None


def _any_author_id(message) -> str | None:
    if message.author_type == "admin":
        return None if message.admin_user_id is None else f"admin_{message.admin_user_id}"
    return _partner_author_id(message)


class MessageSchema(ResponseSchema):
    id = PublicId("msg")
    author_type = fields.String(metadata={"description": "partner or admin"})
    author_id = fields.Function(_partner_author_id, metadata={
        "description": "the member user_… who wrote a partner message; null for admins"})
    body = fields.String()
    created_at = Timestamp()


class EvidenceSchema(ResponseSchema):
    id = PublicId("evd")
    kind = fields.String(metadata={"description": ", ".join(EVIDENCE_KINDS)})
    reference = fields.String()
    snapshot = fields.Dict(metadata={"description": "the record as it was when attached"})
    attached_by = PublicId("user", attribute="attached_by_user_id")
    created_at = Timestamp()


class TicketDetailSchema(TicketSchema):
    messages = fields.List(fields.Nested(MessageSchema), metadata={
        "description": "the thread, oldest first"})
    evidence = fields.List(fields.Nested(EvidenceSchema), metadata={
        "description": "attached records, oldest first"})


class AdminTicketSchema(TicketSchema):
    """A ticket as admins see it, with its partner and assigned admin."""

    partner_id = PublicId("partner")
    assigned_to = PublicId("admin")


class AdminMessageSchema(MessageSchema):
    author_id = fields.Function(_any_author_id, metadata={
        "description": "user_… for a partner member, admin_… for an admin"})


class AdminTicketDetailSchema(AdminTicketSchema):
    messages = fields.List(fields.Nested(AdminMessageSchema), metadata={
        "description": "the thread, oldest first"})
    evidence = fields.List(fields.Nested(EvidenceSchema), metadata={
        "description": "attached records, oldest first"})


class EventTicketSchema(TicketSchema):
    """The ticket in the data of support.* events."""

    partner_id = PublicId("partner")


# Event types ----------------------------------------------------------------------

_NULLABLE_STRING = {"type": ["string", "null"]}
_TIMESTAMP = {"type": "string", "format": "date-time"}
_NULLABLE_TIMESTAMP = {"type": ["string", "null"], "format": "date-time"}

TICKET_PROPERTIES = {
    "id": {"type": "string", "pattern": "^tkt_[0-9]+$"},
    "partner_id": {"type": "string", "pattern": "^partner_[0-9]+$"},
    "title": {"type": "string"},
    "description": {"type": "string"},
    "category": {"enum": [*CATEGORIES, None]},
    "priority": {"enum": list(PRIORITIES)},
    "status": {"enum": list(STATUSES)},
    "created_by": {"type": ["string", "null"], "pattern": "^user_[0-9]+$"},
    "created_at": _TIMESTAMP,
    "updated_at": _TIMESTAMP,
    "resolved_at": _NULLABLE_TIMESTAMP,
}
TICKET_REQUIRED = ["id", "partner_id", "title", "category", "priority", "status", "created_at"]

TICKET_DATA_SCHEMA = {"type": "object", "required": TICKET_REQUIRED,
                      "properties": TICKET_PROPERTIES}

MESSAGE_DATA_SCHEMA = {
    "type": "object",
    "required": ["id", "author_type", "body", "created_at"],
    "properties": {
        "id": {"type": "string", "pattern": "^msg_[0-9]+$"},
        "author_type": {"enum": list(AUTHOR_TYPES)},
        "author_id": {"type": ["string", "null"], "pattern": "^user_[0-9]+$"},
        "body": {"type": "string"},
        "created_at": _TIMESTAMP,
    },
}

REPLIED_DATA_SCHEMA = {
    "type": "object",
    "required": [*TICKET_REQUIRED, "message"],
    "properties": {**TICKET_PROPERTIES, "message": MESSAGE_DATA_SCHEMA},
}

STATUS_CHANGED_DATA_SCHEMA = {
    "type": "object",
    "required": [*TICKET_REQUIRED, "previous_status"],
    "properties": {**TICKET_PROPERTIES, "previous_status": {"enum": list(STATUSES)}},
}

TICKET_SAMPLE = {
    "id": "tkt_12",
    "partner_id": "partner_42",
    "title": "Webhook deliveries time out",
    "description": "Deliveries to our user.created endpoint fail since this morning.",
    "category": "webhooks",
    "priority": "high",
    "status": "open",
    "created_by": "user_7",
    "created_at": "2026-06-05T10:00:00Z",
    "updated_at": "2026-06-05T10:00:00Z",
    "resolved_at": None,
}

SUPPORT_EVENT_TYPES = [
    EventType("support.ticket_created", "A partner member opened a support ticket.",
              TICKET_DATA_SCHEMA, TICKET_SAMPLE),
    EventType("support.ticket_replied",
              "A partner member or F-KOD support added a message to a ticket; message is it.",
              REPLIED_DATA_SCHEMA,
              {**TICKET_SAMPLE, "status": "in_progress", "updated_at": "2026-06-05T10:20:00Z",
               "message": {"id": "msg_31", "author_type": "admin", "author_id": None,
                           "body": "We are looking into it.",
                           "created_at": "2026-06-05T10:20:00Z"}}),
    EventType("support.ticket_status_changed",
              "A ticket moved to another status; previous_status is the one it left.",
              STATUS_CHANGED_DATA_SCHEMA,
              {**TICKET_SAMPLE, "status": "resolved", "updated_at": "2026-06-06T09:00:00Z",
               "resolved_at": "2026-06-06T09:00:00Z", "previous_status": "in_progress"}),
]
