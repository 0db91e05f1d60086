"""Raw usage records of gateway calls."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from fkod.core.db import Base, utcnow
from fkod.core.types import JSONType


class ApiUsage(Base):
    """One call through the gateway, as the spec's api_usage table plus tenancy columns."""

    __tablename__ = "api_usage"
    __table_args__ = (
        sa.Index("idx_api_usage_api_key_id", "api_key_id"),
        sa.Index("idx_api_usage_created_at", "created_at"),
        # The developer dashboard lists a partner's failed calls newest first
        # and finds one by its request id.
        sa.Index("ix_api_usage_partner_id_created_at", "partner_id", "created_at"),
        sa.Index("ix_api_usage_request_id", "request_id"),
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
    # Set for calls with an OAuth access token: the application and the user it acts for.
    oauth_client_id: Mapped[int | None] = mapped_column(sa.ForeignKey("oauth_clients.id"))
    oauth_user_id: Mapped[int | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=sa.func.now())


class ApiUsageHourly(Base):
    """Calls of one key to one endpoint with one status in one hour, rolled up from api_usage."""

    __tablename__ = "api_usage_hourly"
    __table_args__ = (
        sa.UniqueConstraint("hour", "api_key_id", "endpoint", "method", "status_code"),
        sa.Index("ix_api_usage_hourly_partner_hour", "partner_id", "hour"),
        sa.Index("ix_api_usage_hourly_key_hour", "api_key_id", "hour"),
        sa.Index("ix_api_usage_hourly_client_hour", "oauth_client_id", "hour"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # The start of the hour, UTC.
    hour: Mapped[dt.datetime]
    api_key_id: Mapped[int | None] = mapped_column(sa.ForeignKey("api_keys.id"))
    partner_id: Mapped[int | None] = mapped_column(sa.ForeignKey("partners.id"))
    oauth_client_id: Mapped[int | None] = mapped_column(sa.ForeignKey("oauth_clients.id"))
    livemode: Mapped[bool]
    endpoint: Mapped[str] = mapped_column(sa.String(255))
    method: Mapped[str] = mapped_column(sa.String(10))
    status_code: Mapped[int]
    request_count: Mapped[int] = mapped_column(sa.BigInteger)
    total_response_time_ms: Mapped[int] = mapped_column(sa.BigInteger)
    max_response_time_ms: Mapped[int]
    request_bytes: Mapped[int] = mapped_column(sa.BigInteger)
    response_bytes: Mapped[int] = mapped_column(sa.BigInteger)
    # Counts of calls per latency bucket, keyed by the bucket's upper bound in
    # milliseconds, so percentiles can be estimated across hours.
    latency_histogram: Mapped[dict] = mapped_column(JSONType, default=dict)


class JobState(Base):
    """Progress of a periodic job (the last hour rolled up, say), shared by all workers."""

    __tablename__ = "job_states"

    name: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    cursor: Mapped[dict] = mapped_column(JSONType, default=dict)
    updated_at: Mapped[dt.datetime] = mapped_column(
        default=utcnow, onupdate=utcnow, server_default=sa.func.now()
    )
