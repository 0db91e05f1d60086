"""Plans, subscriptions, invoices, payments, the ledger, revenue share and payouts."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from fkod.core.db import Base, utcnow
from fkod.core.types import JSONType, Money


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
    # Partners can choose a self-serve plan themselves; the others (Enterprise and
    # custom contracts) are assigned by an admin.
    self_serve: Mapped[bool] = mapped_column(default=True, server_default=sa.true())
    active: Mapped[bool] = mapped_column(default=True, server_default=sa.true())
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=sa.func.now())


class PartnerRevenue(Base):
    """A partner's revenue for one period, as the spec's partner_revenue table."""

    __tablename__ = "partner_revenue"
    __table_args__ = (
        sa.Index("idx_partner_revenue_partner_id", "partner_id"),
        sa.UniqueConstraint("partner_id", "period_start"),
    )

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
    # The partner's part: revenue minus commission_amount.
    partner_share: Mapped[Decimal] = mapped_column(Money, default=Decimal("0"),
                                                   server_default="0")
    # pending until a paid payout covers the period, then paid.
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


# Subscriptions ------------------------------------------------------------------


class PlanChange(Base):
    """A partner's change of plan: an upgrade applies at once, a downgrade at period end.

    ``effective_at`` is when the new plan's limits apply; ``applied_at`` is set
    when the partner's plan was switched. ``proration`` is the amount an
    upgrade adds to the period's invoice (see ``fkod.core.billing.plans``).
    """

    __tablename__ = "plan_changes"
    __table_args__ = (sa.Index("ix_plan_changes_partner_effective", "partner_id", "effective_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    partner_id: Mapped[int] = mapped_column(sa.ForeignKey("partners.id"))
    from_plan_id: Mapped[int | None] = mapped_column(sa.ForeignKey("plans.id"))
    to_plan_id: Mapped[int] = mapped_column(sa.ForeignKey("plans.id"))
    # upgrade, downgrade
    kind: Mapped[str] = mapped_column(sa.String(20))
    # scheduled, applied, cancelled
    status: Mapped[str] = mapped_column(sa.String(20))
    effective_at: Mapped[dt.datetime]
    applied_at: Mapped[dt.datetime | None]
    proration: Mapped[Decimal] = mapped_column(Money, default=Decimal("0"), server_default="0")
    requested_by_user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=sa.func.now())


# Customers at payment providers -------------------------------------------------


class BillingAccount(Base):
    """The customer record of a partner or a user at one payment provider."""

    __tablename__ = "billing_accounts"
    __table_args__ = (
        sa.UniqueConstraint("owner_type", "owner_id", "provider", "livemode"),
        sa.UniqueConstraint("provider", "provider_customer_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # partner or user
    owner_type: Mapped[str] = mapped_column(sa.String(20))
    owner_id: Mapped[int]
    provider: Mapped[str] = mapped_column(sa.String(50))
    provider_customer_id: Mapped[str] = mapped_column(sa.String(255))
    livemode: Mapped[bool]
    payment_method_ready: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=sa.func.now())


# Invoices and payments ----------------------------------------------------------


class Invoice(Base):
    """The amount one party owes for one period: a plan and usage, or a customer's installs.

    ``kind`` is ``plan`` (billed to ``partner_id``) or ``integrations``
    (billed to ``user_id``). The unique key makes closing a period twice
    create nothing new.
    """

    __tablename__ = "invoices"
    __table_args__ = (
        # One invoice per kind, party and period. NULLs never collide in a unique
        # index, so each party column gets its own partial index.
        sa.Index("uq_invoices_partner_period", "kind", "partner_id", "period_start",
                 unique=True, postgresql_where=sa.text("partner_id IS NOT NULL"),
                 sqlite_where=sa.text("partner_id IS NOT NULL")),
        sa.Index("uq_invoices_user_period", "kind", "user_id", "period_start",
                 unique=True, postgresql_where=sa.text("user_id IS NOT NULL"),
                 sqlite_where=sa.text("user_id IS NOT NULL")),
        sa.Index("ix_invoices_status", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(20))
    partner_id: Mapped[int | None] = mapped_column(sa.ForeignKey("partners.id"))
    user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    period_start: Mapped[dt.date]
    period_end: Mapped[dt.date]
    currency: Mapped[str] = mapped_column(sa.String(3), default="USD", server_default="USD")
    total: Mapped[Decimal] = mapped_column(Money)
    # open, paid, void, uncollectible
    status: Mapped[str] = mapped_column(sa.String(20))
    provider: Mapped[str | None] = mapped_column(sa.String(50))
    amount_refunded: Mapped[Decimal] = mapped_column(Money, default=Decimal("0"),
                                                     server_default="0")
    issued_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=sa.func.now())
    paid_at: Mapped[dt.datetime | None]
    updated_at: Mapped[dt.datetime] = mapped_column(
        default=utcnow, onupdate=utcnow, server_default=sa.func.now())


class InvoiceLine(Base):
    """One line of an invoice; ``amount`` is ``quantity × unit_price`` rounded to the cent."""

    __tablename__ = "invoice_lines"

    id: Mapped[int] = mapped_column(primary_key=True)
    invoice_id: Mapped[int] = mapped_column(sa.ForeignKey("invoices.id"), index=True)
    # plan_fee, proration, overage, install_fee
    kind: Mapped[str] = mapped_column(sa.String(20))
    description: Mapped[str] = mapped_column(sa.String(255))
    quantity: Mapped[int] = mapped_column(sa.BigInteger)
    unit_price: Mapped[Decimal] = mapped_column(sa.Numeric(15, 6, asdecimal=True))
    amount: Mapped[Decimal] = mapped_column(Money)
    integration_id: Mapped[int | None] = mapped_column(sa.ForeignKey("integrations.id"))
    install_id: Mapped[int | None] = mapped_column(sa.ForeignKey("integration_installs.id"))
    details: Mapped[dict | None] = mapped_column(JSONType)


class Payment(Base):
    """One attempt to collect an invoice through a provider, and its refunds."""

    __tablename__ = "payments"
    __table_args__ = (
        sa.UniqueConstraint("idempotency_key"),
        sa.UniqueConstraint("provider", "provider_payment_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    invoice_id: Mapped[int] = mapped_column(sa.ForeignKey("invoices.id"), index=True)
    provider: Mapped[str] = mapped_column(sa.String(50))
    provider_payment_id: Mapped[str | None] = mapped_column(sa.String(255))
    idempotency_key: Mapped[str] = mapped_column(sa.String(100))
    amount: Mapped[Decimal] = mapped_column(Money)
    currency: Mapped[str] = mapped_column(sa.String(3), default="USD", server_default="USD")
    # processing, pending, succeeded, failed
    status: Mapped[str] = mapped_column(sa.String(20))
    failure_reason: Mapped[str | None] = mapped_column(sa.String(500))
    amount_refunded: Mapped[Decimal] = mapped_column(Money, default=Decimal("0"),
                                                     server_default="0")
    succeeded_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=sa.func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(
        default=utcnow, onupdate=utcnow, server_default=sa.func.now())


class ProviderEventRecord(Base):
    """An inbound provider event, stored once per provider and event id."""

    __tablename__ = "provider_events"
    __table_args__ = (sa.UniqueConstraint("provider", "event_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    provider: Mapped[str] = mapped_column(sa.String(50))
    event_id: Mapped[str] = mapped_column(sa.String(255))
    event_type: Mapped[str] = mapped_column(sa.String(100))
    occurred_at: Mapped[dt.datetime]
    # What the event changed: one entry per update, "applied" or why it was skipped.
    outcome: Mapped[list] = mapped_column(JSONType, default=list)
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=sa.func.now())


# The ledger ---------------------------------------------------------------------


class LedgerTransaction(Base):
    """A balanced group of ledger entries; ``reference`` makes posting it idempotent."""

    __tablename__ = "ledger_transactions"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(50))
    reference: Mapped[str] = mapped_column(sa.String(200), unique=True)
    description: Mapped[str] = mapped_column(sa.String(255))
    posted_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=sa.func.now())


class LedgerEntry(Base):
    """One side of a ledger transaction: a debit (positive) or a credit (negative)."""

    __tablename__ = "ledger_entries"
    __table_args__ = (sa.Index("ix_ledger_entries_account", "account", "partner_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    transaction_id: Mapped[int] = mapped_column(sa.ForeignKey("ledger_transactions.id"),
                                                index=True)
    account: Mapped[str] = mapped_column(sa.String(50))
    # Set on a partner's own accounts (its payable balance, its receivable).
    partner_id: Mapped[int | None] = mapped_column(sa.ForeignKey("partners.id"))
    amount: Mapped[Decimal] = mapped_column(Money)
    currency: Mapped[str] = mapped_column(sa.String(3), default="USD", server_default="USD")


# Revenue share and payouts ------------------------------------------------------


class RevenueLine(Base):
    """One sale or refund credited to a partner, split into commission and partner share.

    ``gross = commission + partner_share`` holds exactly for every line;
    ``reference`` names the source (an invoice line, an integration's calls
    in a period, a refund) so crediting it twice is impossible.
    """

    __tablename__ = "revenue_lines"
    __table_args__ = (sa.Index("ix_revenue_lines_partner_period", "partner_id", "period_start"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    partner_id: Mapped[int] = mapped_column(sa.ForeignKey("partners.id"))
    period_start: Mapped[dt.date]
    integration_id: Mapped[int | None] = mapped_column(sa.ForeignKey("integrations.id"))
    # install_fee, call_fee, refund, chargeback
    kind: Mapped[str] = mapped_column(sa.String(20))
    reference: Mapped[str] = mapped_column(sa.String(200), unique=True)
    description: Mapped[str] = mapped_column(sa.String(255))
    api_calls: Mapped[int] = mapped_column(sa.BigInteger, default=0, server_default="0")
    gross: Mapped[Decimal] = mapped_column(Money)
    # Percent, as partner_revenue.commission_rate (30.00 is 30 %).
    commission_rate: Mapped[Decimal] = mapped_column(sa.Numeric(5, 2, asdecimal=True))
    commission: Mapped[Decimal] = mapped_column(Money)
    partner_share: Mapped[Decimal] = mapped_column(Money)
    ledger_transaction_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("ledger_transactions.id"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=sa.func.now())


class Payout(Base):
    """A transfer of a partner's balance: requested by the partner or made by the monthly run.

    Statuses: ``pending`` (waiting to be sent), ``on_hold`` (an admin held
    it), ``processing`` (sent, waiting for the provider), ``paid`` and
    ``failed``. A failed payout's amount goes back to the balance.
    """

    __tablename__ = "payouts"
    __table_args__ = (
        sa.Index("ix_payouts_partner_status", "partner_id", "status"),
        sa.UniqueConstraint("idempotency_key"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    partner_id: Mapped[int] = mapped_column(sa.ForeignKey("partners.id"))
    amount: Mapped[Decimal] = mapped_column(Money)
    currency: Mapped[str] = mapped_column(sa.String(3), default="USD", server_default="USD")
    # request (by the partner) or run (the monthly payout run)
    source: Mapped[str] = mapped_column(sa.String(20))
    payout_method: Mapped[str] = mapped_column(sa.String(20))
    provider: Mapped[str] = mapped_column(sa.String(50))
    provider_payout_id: Mapped[str | None] = mapped_column(sa.String(255), index=True)
    idempotency_key: Mapped[str] = mapped_column(sa.String(100))
    status: Mapped[str] = mapped_column(sa.String(20))
    failure_reason: Mapped[str | None] = mapped_column(sa.String(500))
    hold_reason: Mapped[str | None] = mapped_column(sa.String(500))
    requested_by_user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    approved_by_admin_id: Mapped[int | None]
    # The balance the payout left behind, for the statement.
    balance_after: Mapped[Decimal | None] = mapped_column(Money)
    sent_at: Mapped[dt.datetime | None]
    paid_at: Mapped[dt.datetime | None]
    failed_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=sa.func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(
        default=utcnow, onupdate=utcnow, server_default=sa.func.now())
