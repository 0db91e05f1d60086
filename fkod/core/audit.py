"""The audit log: who did what to which record, kept for partners and admins.

Sensitive actions (revealing or rotating a secret, changing who can do what)
call :func:`record` inside the request's transaction, so an entry exists
exactly when the action committed.
"""

from __future__ import annotations

import datetime as dt
import logging

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from fkod.core.db import Base, utcnow
from fkod.core.types import JSONType

log = logging.getLogger(__name__)


class AuditEntry(Base):
    """One audited action."""

    __tablename__ = "audit_logs"
    __table_args__ = (
        sa.Index("ix_audit_logs_partner_id_created_at", "partner_id", "created_at"),
        sa.Index("ix_audit_logs_action", "action"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # The partner the action concerns; None for platform-wide admin actions.
    partner_id: Mapped[int | None] = mapped_column(sa.ForeignKey("partners.id"))
    # user, admin, api_key or system, and that actor's numeric id.
    actor_type: Mapped[str] = mapped_column(sa.String(20))
    actor_id: Mapped[int | None]
    # resource.verb, for example webhook.secret_revealed.
    action: Mapped[str] = mapped_column(sa.String(100))
    target_type: Mapped[str | None] = mapped_column(sa.String(50))
    # The public id of the target, such as whk_12.
    target_id: Mapped[str | None] = mapped_column(sa.String(64))
    request_id: Mapped[str | None] = mapped_column(sa.String(64))
    ip_address: Mapped[str | None] = mapped_column(sa.String(45))
    # Never a secret: only names of changed fields and similar facts.
    details: Mapped[dict] = mapped_column(JSONType, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=sa.func.now())


def _actor(request) -> tuple[str, int | None]:
    for attribute, kind in (("admin", "admin"), ("user", "user"), ("api_key", "api_key")):
        actor = getattr(request, attribute, None)
        if actor is not None and getattr(actor, "id", None) is not None:
            return kind, actor.id
    return "system", None


def record(request, action: str, *, partner_id: int | None, target_type: str | None = None,
           target_id: str | None = None, details: dict | None = None) -> AuditEntry:
    """Add an audit entry for ``action`` to the request's transaction and return it."""
    actor_type, actor_id = _actor(request)
    entry = AuditEntry(
        partner_id=partner_id, actor_type=actor_type, actor_id=actor_id, action=action,
        target_type=target_type, target_id=target_id, request_id=request.request_id,
        ip_address=request.client_address, details=details or {},
    )
    request.dbsession.add(entry)
    log.info("audited", extra={"action": action, "partner_id": partner_id,
                               "target_id": target_id, "actor_type": actor_type})
    return entry


def record_system(session, action: str, *, partner_id: int | None,
                  target_type: str | None = None, target_id: str | None = None,
                  details: dict | None = None) -> AuditEntry:
    """Add an audit entry for ``action`` taken by a scheduled job or worker to ``session``.

    The entry has actor ``system`` and no request id or address.
    """
    entry = AuditEntry(partner_id=partner_id, actor_type="system", actor_id=None, action=action,
                       target_type=target_type, target_id=target_id, details=details or {})
    session.add(entry)
    log.info("audited", extra={"action": action, "partner_id": partner_id,
                               "target_id": target_id, "actor_type": "system"})
    return entry
