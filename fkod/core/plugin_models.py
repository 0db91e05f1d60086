"""Run-time state of plugins, shared by every process through the database."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from fkod.core.db import Base, utcnow


class PluginState(Base):
    """Whether an admin enabled a plugin, and how its last load went."""

    __tablename__ = "plugin_states"

    name: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    enabled: Mapped[bool] = mapped_column(default=True, server_default=sa.true())
    # loaded, failed
    load_status: Mapped[str] = mapped_column(sa.String(20), default="loaded")
    load_error: Mapped[str | None] = mapped_column(sa.Text)
    version: Mapped[str | None] = mapped_column(sa.String(50))
    # Updates to a trusted plugin's integration manifest are published without review.
    trusted: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    updated_at: Mapped[dt.datetime] = mapped_column(
        default=utcnow, onupdate=utcnow, server_default=sa.func.now()
    )
