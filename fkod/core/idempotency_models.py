"""Stored responses of requests sent with an Idempotency-Key header."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from fkod.core.db import Base, utcnow
from fkod.core.types import JSONType


class IdempotencyRecord(Base):
    """The first request made with one key by one caller, and the response it got."""

    __tablename__ = "idempotency_records"
    __table_args__ = (
        sa.UniqueConstraint("owner", "idempotency_key"),
        sa.Index("ix_idempotency_records_expires_at", "expires_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # Whose key it is: "partner:12" for members, "key:34" for API keys, so
    # two callers never share a key.
    owner: Mapped[str] = mapped_column(sa.String(64))
    idempotency_key: Mapped[str] = mapped_column(sa.String(255))
    method: Mapped[str] = mapped_column(sa.String(10))
    path: Mapped[str] = mapped_column(sa.String(500))
    # SHA-256 of the method, path and body, to tell a retry from a different request.
    request_hash: Mapped[str] = mapped_column(sa.String(64))
    # in_progress, then completed
    status: Mapped[str] = mapped_column(sa.String(20), default="in_progress")
    response_status: Mapped[int | None]
    # The response as stored: secrets in it are masked before storing.
    response_body: Mapped[str | None] = mapped_column(sa.Text)
    response_headers: Mapped[dict | None] = mapped_column(JSONType)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=sa.func.now())
    completed_at: Mapped[dt.datetime | None]
    expires_at: Mapped[dt.datetime]
