"""Integrations listed in the marketplace."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from fkod.core.db import Base, utcnow


class Integration(Base):
    """An integration a partner publishes, as the spec's integrations table."""

    __tablename__ = "integrations"
    __table_args__ = (
        sa.Index("idx_integrations_partner_id", "partner_id"),
        sa.Index("idx_integrations_status", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    partner_id: Mapped[int | None] = mapped_column(sa.ForeignKey("partners.id"))
    name: Mapped[str] = mapped_column(sa.String(255))
    slug: Mapped[str | None] = mapped_column(sa.String(100), unique=True)
    description: Mapped[str | None] = mapped_column(sa.Text)
    logo_url: Mapped[str | None] = mapped_column(sa.String(500))
    category: Mapped[str | None] = mapped_column(sa.String(50))
    version: Mapped[str | None] = mapped_column(sa.String(20))
    status: Mapped[str] = mapped_column(sa.String(20), default="draft", server_default="draft")
    documentation_url: Mapped[str | None] = mapped_column(sa.String(500))
    support_email: Mapped[str | None] = mapped_column(sa.String(255))
    rating: Mapped[Decimal | None] = mapped_column(sa.Numeric(3, 2, asdecimal=True))
    review_count: Mapped[int] = mapped_column(default=0, server_default="0")
    install_count: Mapped[int] = mapped_column(default=0, server_default="0")
    # The plugin that ships it, for integrations discovered through entry points.
    plugin_name: Mapped[str | None] = mapped_column(sa.String(100))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=sa.func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(
        default=utcnow, onupdate=utcnow, server_default=sa.func.now()
    )
