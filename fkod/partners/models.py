"""Support tickets with their threads and evidence, invitations, verification documents."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from fkod.core.db import Base, utcnow
from fkod.core.types import JSONType


class SupportTicket(Base):
    """A partner's request for help, as the spec's support_tickets table."""

    __tablename__ = "support_tickets"
    __table_args__ = (sa.Index("idx_support_tickets_partner_id", "partner_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    partner_id: Mapped[int | None] = mapped_column(sa.ForeignKey("partners.id"))
    title: Mapped[str] = mapped_column(sa.String(255))
    description: Mapped[str] = mapped_column(sa.Text)
    category: Mapped[str | None] = mapped_column(sa.String(50))
    priority: Mapped[str] = mapped_column(sa.String(20), default="medium", server_default="medium")
    status: Mapped[str] = mapped_column(sa.String(20), default="open", server_default="open")
    assigned_to: Mapped[int | None] = mapped_column(sa.ForeignKey("admin_users.id"))
    created_by_user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=sa.func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(
        default=utcnow, onupdate=utcnow, server_default=sa.func.now()
    )
    resolved_at: Mapped[dt.datetime | None]


class TicketMessage(Base):
    """One message in a ticket's thread, by a partner member or an admin."""

    __tablename__ = "support_ticket_messages"

    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(sa.ForeignKey("support_tickets.id"), index=True)
    # partner (a member, user_id set) or admin (admin_user_id set).
    author_type: Mapped[str] = mapped_column(sa.String(20))
    user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    admin_user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("admin_users.id"))
    body: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=sa.func.now())


class TicketEvidence(Base):
    """A record of the partner's own attached to a ticket, as it was when attached."""

    __tablename__ = "support_ticket_evidence"

    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(sa.ForeignKey("support_tickets.id"), index=True)
    # api_request, webhook_delivery or api_key_limits.
    kind: Mapped[str] = mapped_column(sa.String(30))
    # The public id of what was attached: a request id, evt_..., key_...
    reference: Mapped[str] = mapped_column(sa.String(100))
    snapshot: Mapped[dict] = mapped_column(JSONType, default=dict)
    attached_by_user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=sa.func.now())


class PartnerInvitation(Base):
    """An invitation to join a partner with a role; only a SHA-256 of its token is stored."""

    __tablename__ = "partner_invitations"
    __table_args__ = (sa.Index("ix_partner_invitations_partner_id", "partner_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    partner_id: Mapped[int] = mapped_column(sa.ForeignKey("partners.id"))
    email: Mapped[str] = mapped_column(sa.String(255))
    role: Mapped[str] = mapped_column(sa.String(20))
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    invited_by_user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    expires_at: Mapped[dt.datetime]
    accepted_at: Mapped[dt.datetime | None]
    accepted_by_user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    revoked_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=sa.func.now())


class VerificationDocument(Base):
    """A file a partner uploaded for verification, kept in the document storage back end."""

    __tablename__ = "verification_documents"
    __table_args__ = (sa.Index("ix_verification_documents_partner_id", "partner_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    partner_id: Mapped[int] = mapped_column(sa.ForeignKey("partners.id"))
    # What the document proves, such as registration or tax.
    kind: Mapped[str] = mapped_column(sa.String(30))
    filename: Mapped[str] = mapped_column(sa.String(255))
    content_type: Mapped[str] = mapped_column(sa.String(100))
    size: Mapped[int]
    sha256: Mapped[str] = mapped_column(sa.String(64))
    # Where the storage back end keeps it; never a public URL.
    storage_key: Mapped[str] = mapped_column(sa.String(255), unique=True)
    uploaded_by_user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    deleted_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=sa.func.now())
