"""The partner's audit log (``GET /api/partners/audit-log``) and the filters admins share.

The log is append-only: no operation changes or deletes an entry. A member
sees only the entries of their own partner. Actions by F-KOD staff show as
``actor_type`` admin without the admin's id or address.
"""

from __future__ import annotations

import marshmallow
import sqlalchemy as sa
from cornice import Service
from marshmallow import fields, validate

from fkod.core.api import AUTH_MEMBER, PageQuery, operation, paginate
from fkod.core.audit import AuditEntry
from fkod.core.schemas import PublicId, ResponseSchema, Text, Timestamp
from fkod.partners.schemas import UtcTime

audit_log = Service(name="partner_audit_log", path="/api/partners/audit-log",
                    description="The partner's audit log")

# An action name such as api_key.created, or a prefix pattern such as api_key.*.
ACTION_FILTER = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*(\.\*)?$"

# The public id kind of each actor type; system actions have no actor id.
ACTOR_ID_KINDS = {"user": "user", "admin": "admin", "api_key": "key"}


class AuditQuery(PageQuery):
    """Filters of an audit log, besides ``limit`` and ``cursor``."""

    action = Text(max_length=100, validate=validate.Regexp(
        ACTION_FILTER, error="Must be an action such as api_key.created, or a prefix pattern "
                             "such as api_key.*."),
        metadata={"description": "an action name, or a prefix pattern such as api_key.*"})
    created_after = UtcTime(metadata={"description": "entries created at or after this time, "
                                                     "ISO 8601 with a time zone"})
    created_before = UtcTime(metadata={"description": "entries created before this time, "
                                                      "ISO 8601 with a time zone"})

    @marshmallow.validates_schema
    def _check_range(self, data, **kwargs):
        after, before = data.get("created_after"), data.get("created_before")
        if after is not None and before is not None and after >= before:
            raise marshmallow.ValidationError("Must be later than created_after.",
                                              "created_before")


def filter_entries(select, query: dict):
    """Add the ``action`` and time filters of an :class:`AuditQuery` to ``select``."""
    action = query.get("action")
    if action is not None and action.endswith(".*"):
        # autoescape makes the underscores of names such as api_key literal.
        select = select.where(AuditEntry.action.startswith(action[:-1], autoescape=True))
    elif action is not None:
        select = select.where(AuditEntry.action == action)
    if query.get("created_after") is not None:
        select = select.where(AuditEntry.created_at >= query["created_after"])
    if query.get("created_before") is not None:
        select = select.where(AuditEntry.created_at < query["created_before"])
    return select


def actor_public_id(entry: AuditEntry) -> str | None:
    kind = ACTOR_ID_KINDS.get(entry.actor_type)
    if kind is None or entry.actor_id is None:
        return None
    return f"{kind}_{entry.actor_id}"


class AuditEntrySchema(ResponseSchema):
    """One audit entry as admins see it."""

    id = PublicId("audit")
    partner_id = PublicId("partner")
    action = fields.String()
    actor_type = fields.String(metadata={"description": "user, admin, api_key or system"})
    actor_id = fields.Function(actor_public_id, metadata={
        "description": "user_…, admin_… or key_…; null for system actions"})
    target_type = fields.String()
    target_id = fields.String()
    request_id = fields.String()
    ip_address = fields.String()
    details = fields.Dict()
    created_at = Timestamp()


def _hidden_for_staff(entry: AuditEntry, value):
    return None if entry.actor_type == "admin" else value


class PartnerAuditEntrySchema(AuditEntrySchema):
    """One audit entry as partner members see it: staff stay anonymous."""

    actor_id = fields.Function(
        lambda entry: _hidden_for_staff(entry, actor_public_id(entry)),
        metadata={"description": "user_… or key_…; null for F-KOD staff and system actions"})
    ip_address = fields.Function(
        lambda entry: _hidden_for_staff(entry, entry.ip_address),
        metadata={"description": "the client address; null for F-KOD staff"})


@operation(audit_log, "GET", summary="List the partner's audit log, newest first",
           auth=AUTH_MEMBER, permission="partner:read", query=AuditQuery,
           response=PartnerAuditEntrySchema, paginated=True)
def list_audit_log(request):
    select = sa.select(AuditEntry).where(AuditEntry.partner_id == request.partner.id)
    select = filter_entries(select, request.query)
    return paginate(select, AuditEntry.id, request.query, request.dbsession)


def includeme(config):
    config.add_cornice_service(audit_log)
