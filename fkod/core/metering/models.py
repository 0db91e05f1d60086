"""Raw usage records of gateway calls."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from fkod.core.db import Base, utcnow


class ApiUsage(Base):
    """One call through the gateway, as the spec's api_usage table plus tenancy columns."""

    __tablename__ = "api_usage"
    __table_args__ = (
        sa.Index("idx_api_usage_api_key_id", "api_key_id"),
        sa.Index("idx_api_usage_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(sa.BigInteger().with_variant(sa.Integer, "sqlite"),
                                    primary_key=True)
    api_key_id: Mapped[int | None] = mapped_column(sa.ForeignKey("api_keys.id"))
    partner_id: Mapped[int | None] = mapped_column(sa.ForeignKey("partners.id"))
    endpoint: Mapped[str] = mapped_column(sa.String(255))
    method: Mapped[str] = mapped_column(sa.String(10))
    status_code: Mapped[int]
    # Milliseconds.
    response_time: Mapped[int | None]
    # Bytes.
    request_size: Mapped[int | None]
    response_size: Mapped[int | None]
    error_message: Mapped[str | None] = mapped_column(sa.Text)
    livemode: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    request_id: Mapped[str | None] = mapped_column(sa.String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=sa.func.now())
