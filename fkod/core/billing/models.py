"""Plans the gateway reads its limits from, and the partner revenue ledger."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from fkod.core.db import Base, utcnow
from fkod.core.types import Money


class Plan(Base):
    """A pricing tier; NULL limits mean unlimited (Enterprise)."""

    __tablename__ = "plans"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(sa.String(50), unique=True)
    name: Mapped[str] = mapped_column(sa.String(100))
    price_monthly: Mapped[Decimal] = mapped_column(Money, default=Decimal("0"))
    currency: Mapped[str] = mapped_column(sa.String(3), default="USD", server_default="USD")
    requests_per_hour: Mapped[int | None]
    requests_per_day: Mapped[int | None]
    included_requests_monthly: Mapped[int | None]
    overage_price_per_request: Mapped[Decimal] = mapped_column(
        sa.Numeric(12, 6, asdecimal=True), default=Decimal("0.001")
    )
    is_default: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    active: Mapped[bool] = mapped_column(default=True, server_default=sa.true())
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=sa.func.now())


class PartnerRevenue(Base):
    """A partner's revenue for one period, as the spec's partner_revenue table."""

    __tablename__ = "partner_revenue"
    __table_args__ = (sa.Index("idx_partner_revenue_partner_id", "partner_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    partner_id: Mapped[int | None] = mapped_column(sa.ForeignKey("partners.id"))
    period_start: Mapped[dt.date]
    period_end: Mapped[dt.date]
    api_calls: Mapped[int] = mapped_column(default=0, server_default="0")
    revenue: Mapped[Decimal] = mapped_column(Money, default=Decimal("0"), server_default="0")
    commission_rate: Mapped[Decimal] = mapped_column(
        sa.Numeric(5, 2, asdecimal=True), default=Decimal("30"), server_default="30"
    )
    commission_amount: Mapped[Decimal] = mapped_column(
        Money, default=Decimal("0"), server_default="0"
    )
    status: Mapped[str] = mapped_column(sa.String(20), default="pending", server_default="pending")
    paid_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=sa.func.now())


class RateLimitBoost(Base):
    """A temporary raise of a partner's hourly and daily limits, billed as overage."""

    __tablename__ = "rate_limit_boosts"
    __table_args__ = (sa.Index("ix_rate_limit_boosts_partner_ends", "partner_id", "ends_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    partner_id: Mapped[int] = mapped_column(sa.ForeignKey("partners.id"))
    livemode: Mapped[bool]
    # Extra requests on top of the plan's windows while the boost lasts.
    extra_requests_per_hour: Mapped[int]
    extra_requests_per_day: Mapped[int | None]
    starts_at: Mapped[dt.datetime]
    ends_at: Mapped[dt.datetime]
    reason: Mapped[str | None] = mapped_column(sa.String(500))
    created_by_user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    cancelled_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=sa.func.now())
