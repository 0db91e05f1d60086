"""Partner support tickets."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from fkod.core.db import Base, utcnow


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
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=sa.func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(
        default=utcnow, onupdate=utcnow, server_default=sa.func.now()
    )
    resolved_at: Mapped[dt.datetime | None]
