"""Integrations listed in the marketplace, their versions, installs and reviews."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy import orm
from sqlalchemy.orm import Mapped, mapped_column

from fkod.core.db import Base, utcnow
from fkod.core.types import JSONType

INTEGRATION_STATUSES = ("draft", "in_review", "published", "rejected", "unpublished")
PRICING_MODELS = ("free", "freemium", "paid")


class Integration(Base):
    """An integration a partner publishes, as the spec's integrations table.

    ``rating``, ``review_count`` and ``install_count`` are kept in step with
    the reviews and installs tables in the transaction that changes them.
    """

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
    support_url: Mapped[str | None] = mapped_column(sa.String(500))
    # Scopes granted on install, event types the integration reacts to, and
    # the JSON Schema an install's configuration must satisfy.
    scopes: Mapped[list] = mapped_column(JSONType, default=list, server_default="[]")
    event_types: Mapped[list] = mapped_column(JSONType, default=list, server_default="[]")
    config_schema: Mapped[dict | None] = mapped_column(JSONType)
    # free, freemium or paid; price_cents is the monthly USD price of paid plans.
    pricing_model: Mapped[str] = mapped_column(
        sa.String(20), default="free", server_default="free")
    price_cents: Mapped[int | None]
    # USD per API call made with the integration's credentials; NULL is none.
    price_per_call: Mapped[Decimal | None] = mapped_column(sa.Numeric(12, 6, asdecimal=True))
    rating: Mapped[Decimal | None] = mapped_column(sa.Numeric(3, 2, asdecimal=True))
    review_count: Mapped[int] = mapped_column(default=0, server_default="0")
    install_count: Mapped[int] = mapped_column(default=0, server_default="0")
    rejection_reason: Mapped[str | None] = mapped_column(sa.String(1000))
    submitted_at: Mapped[dt.datetime | None]
    published_at: Mapped[dt.datetime | None]
    # NULL when not featured; admins order featured integrations by rank.
    featured_rank: Mapped[int | None]
    # The plugin that ships it, for integrations discovered through entry points.
    plugin_name: Mapped[str | None] = mapped_column(sa.String(100), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=sa.func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(
        default=utcnow, onupdate=utcnow, server_default=sa.func.now()
    )

    partner = orm.relationship("Partner")


class IntegrationVersion(Base):
    """One released version of an integration, with its release notes."""

    __tablename__ = "integration_versions"
    __table_args__ = (sa.UniqueConstraint("integration_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    integration_id: Mapped[int] = mapped_column(
        sa.ForeignKey("integrations.id", ondelete="CASCADE"), index=True)
    version: Mapped[str] = mapped_column(sa.String(20))
    release_notes: Mapped[str | None] = mapped_column(sa.Text)
    # draft, in_review, published, rejected: the review state of this version.
    status: Mapped[str] = mapped_column(sa.String(20), default="draft", server_default="draft")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=sa.func.now())


class IntegrationInstall(Base):
    """A customer's install of an integration; one row per user and integration.

    Uninstalling keeps the row with status ``uninstalled`` so a review can say
    whether its author still uses the integration. ``config`` is the install
    configuration encrypted with the field vault, because it often holds a
    secret such as a Slack webhook URL.
    """

    __tablename__ = "integration_installs"
    __table_args__ = (
        sa.UniqueConstraint("integration_id", "user_id"),
        sa.Index("idx_integration_installs_user", "user_id", "status"),
        sa.Index("idx_integration_installs_recent", "integration_id", "installed_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    integration_id: Mapped[int] = mapped_column(sa.ForeignKey("integrations.id"))
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"))
    # active, uninstalled
    status: Mapped[str] = mapped_column(sa.String(20), default="active", server_default="active")
    config: Mapped[str | None] = mapped_column(sa.Text)
    granted_scopes: Mapped[list] = mapped_column(JSONType, default=list)
    installed_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=sa.func.now())
    uninstalled_at: Mapped[dt.datetime | None]
    updated_at: Mapped[dt.datetime] = mapped_column(
        default=utcnow, onupdate=utcnow, server_default=sa.func.now()
    )

    integration: Mapped[Integration] = orm.relationship()


class IntegrationReview(Base):
    """A customer's 1-5 star review, with the owning partner's reply.

    Hidden reviews (moderated by an admin) do not count in the rating.
    """

    __tablename__ = "integration_reviews"
    __table_args__ = (
        sa.UniqueConstraint("integration_id", "user_id"),
        sa.CheckConstraint("rating BETWEEN 1 AND 5", name="rating"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    integration_id: Mapped[int] = mapped_column(sa.ForeignKey("integrations.id"), index=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"))
    rating: Mapped[int] = mapped_column(sa.SmallInteger)
    title: Mapped[str | None] = mapped_column(sa.String(200))
    body: Mapped[str | None] = mapped_column(sa.Text)
    # visible, hidden
    status: Mapped[str] = mapped_column(sa.String(20), default="visible", server_default="visible")
    moderation_reason: Mapped[str | None] = mapped_column(sa.String(500))
    reply_body: Mapped[str | None] = mapped_column(sa.Text)
    reply_user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    replied_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=sa.func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(
        default=utcnow, onupdate=utcnow, server_default=sa.func.now()
    )


class IntegrationReaction(Base):
    """One call of a plugin's ``fkod_integration_event`` hook for one event and install.

    Written in the event's transaction, so the call is stored even when the
    message that runs it is lost. ``attempts`` counts the calls started,
    including one whose worker stopped before recording its outcome.
    """

    __tablename__ = "integration_reactions"
    __table_args__ = (
        sa.UniqueConstraint("event_id", "install_id"),
        sa.Index("idx_integration_reactions_due", "status", "next_attempt_at"),
        sa.Index("idx_integration_reactions_install_id", "install_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(sa.ForeignKey("events.id"))
    install_id: Mapped[int] = mapped_column(sa.ForeignKey("integration_installs.id"))
    # pending -> running -> succeeded, or back to pending with next_attempt_at
    # after a failed call, or failed once the attempts are spent or the install
    # no longer takes events.
    status: Mapped[str] = mapped_column(sa.String(20), default="pending", server_default="pending")
    attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    next_attempt_at: Mapped[dt.datetime | None]
    # A worker that claims the reaction holds it until this moment; past it,
    # the sweeper treats the call as lost.
    locked_until: Mapped[dt.datetime | None]
    last_error: Mapped[str | None] = mapped_column(sa.String(255))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=sa.func.now())
    completed_at: Mapped[dt.datetime | None]
