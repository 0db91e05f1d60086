"""Add the plans of the pricing tiers, with Free as the default.

Revision: c4d2e8a1f0b7
Parent revision: bb963bf887a2
Created: 2026-12-04 20:20:00

Limits are requests per hour and per day, shared by all keys of a partner in
one mode; NULL means unlimited. ``included_requests_monthly`` is the volume a
plan's price covers; calls beyond it, within the rate limits, are billed at
``overage_price_per_request`` (the pay-as-you-go price, 0.001 USD).
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

import sqlalchemy as sa
from alembic import op

revision: str = "c4d2e8a1f0b7"
down_revision: str | Sequence[str] | None = "bb963bf887a2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

plans = sa.table(
    "plans",
    sa.column("code", sa.String),
    sa.column("name", sa.String),
    sa.column("price_monthly", sa.Numeric(15, 2)),
    sa.column("currency", sa.String),
    sa.column("requests_per_hour", sa.Integer),
    sa.column("requests_per_day", sa.Integer),
    sa.column("included_requests_monthly", sa.Integer),
    sa.column("overage_price_per_request", sa.Numeric(12, 6)),
    sa.column("is_default", sa.Boolean),
    sa.column("active", sa.Boolean),
)

PAY_AS_YOU_GO = Decimal("0.001")

PLANS = [
    # code, name, price, per hour, per day, included per month, default
    ("free", "Free", Decimal("0"), 100, 1_000, 30_000, True),
    ("starter", "Starter", Decimal("99"), 1_000, 10_000, 300_000, False),
    ("professional", "Professional", Decimal("499"), 10_000, 100_000, 3_000_000, False),
    # Enterprise prices are negotiated per contract, so the listed price is 0.
    ("enterprise", "Enterprise", Decimal("0"), None, None, None, False),
    ("pay_as_you_go", "Pay as you go", Decimal("0"), 1_000, 10_000, 0, False),
]


def upgrade() -> None:
    op.bulk_insert(plans, [
        {
            "code": code, "name": name, "price_monthly": price, "currency": "USD",
            "requests_per_hour": per_hour, "requests_per_day": per_day,
            "included_requests_monthly": included,
            "overage_price_per_request": PAY_AS_YOU_GO, "is_default": default, "active": True,
        }
        for code, name, price, per_hour, per_day, included, default in PLANS
    ])


def downgrade() -> None:
    op.execute(plans.delete().where(plans.c.code.in_([plan[0] for plan in PLANS])))
