"""Accounts: users, admin users, partners, their members and tenancy, API keys."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy import orm
from sqlalchemy.orm import Mapped, mapped_column

from fkod.core.db import Base, utcnow
from fkod.core.types import JSONType

# Users who sign up themselves share one email namespace; users a partner
# creates through the API live in that partner's namespace for one mode, so a
# partner can never learn whether an email exists outside its own tenancy.
PLATFORM_NAMESPACE = "platform"


def partner_namespace(partner_id: int, livemode: bool) -> str:
    return f"partner:{partner_id}:{'live' if livemode else 'test'}"


class User(Base):
    """An F-KOD account: a learner, a mentor, or a person who works for a partner."""

    __tablename__ = "users"
    __table_args__ = (sa.UniqueConstraint("email_namespace", "email"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(255))
    email_namespace: Mapped[str] = mapped_column(sa.String(64), default=PLATFORM_NAMESPACE)
    name: Mapped[str | None] = mapped_column(sa.String(255))
    archetype: Mapped[str | None] = mapped_column(sa.String(50))
    password_hash: Mapped[str | None] = mapped_column(sa.String(255))
    email_verified_at: Mapped[dt.datetime | None]
    status: Mapped[str] = mapped_column(sa.String(20), default="active", server_default="active")
    livemode: Mapped[bool] = mapped_column(default=True, server_default=sa.true())
    # A new address waiting for its verification link; email changes only then.
    pending_email: Mapped[str | None] = mapped_column(sa.String(255))
    # Fernet token of the TOTP secret; the second factor is on once enabled_at is set.
    totp_secret: Mapped[str | None] = mapped_column(sa.String(255))
    totp_enabled_at: Mapped[dt.datetime | None]
    # The last TOTP time step accepted, so one code cannot log in twice.
    totp_last_step: Mapped[int | None]
    # Login tokens issued before this moment are refused: set by a password
    # change or reset, and by "log out everywhere".
    tokens_valid_after: Mapped[dt.datetime | None]
    password_changed_at: Mapped[dt.datetime | None]
    created_by_partner_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("partners.id", use_alter=True), index=True
    )
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=sa.func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(
        default=utcnow, onupdate=utcnow, server_default=sa.func.now()
    )


class AdminUser(Base):
    """F-KOD staff; never a partner member."""

    __tablename__ = "admin_users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(255), unique=True)
    name: Mapped[str | None] = mapped_column(sa.String(255))
    password_hash: Mapped[str] = mapped_column(sa.String(255))
    role: Mapped[str] = mapped_column(sa.String(20), default="support", server_default="support")
    status: Mapped[str] = mapped_column(sa.String(20), default="active", server_default="active")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=sa.func.now())


class Partner(Base):
    """A company that integrates with F-KOD; ``user_id`` is its owner."""

    __tablename__ = "partners"
    __table_args__ = (
        sa.Index("idx_partners_user_id", "user_id"),
        sa.Index("idx_partners_status", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    company_name: Mapped[str] = mapped_column(sa.String(255))
    # Public handle in marketplace URLs and plugin manifests (``publisher``).
    slug: Mapped[str | None] = mapped_column(sa.String(100), unique=True)
    company_website: Mapped[str | None] = mapped_column(sa.String(255))
    company_logo_url: Mapped[str | None] = mapped_column(sa.String(500))
    description: Mapped[str | None] = mapped_column(sa.Text)
    category: Mapped[str | None] = mapped_column(sa.String(50))
    status: Mapped[str] = mapped_column(sa.String(20), default="pending", server_default="pending")
    verification_status: Mapped[str] = mapped_column(
        sa.String(20), default="unverified", server_default="unverified"
    )
    # Fernet tokens: both are encrypted at rest and masked in every response.
    tax_id: Mapped[str | None] = mapped_column(sa.String(500))
    bank_account: Mapped[str | None] = mapped_column(sa.Text)
    contact_email: Mapped[str | None] = mapped_column(sa.String(255))
    contact_phone: Mapped[str | None] = mapped_column(sa.String(20))
    address: Mapped[dict | None] = mapped_column(JSONType)
    plan_id: Mapped[int | None] = mapped_column(sa.ForeignKey("plans.id"))
    # What the partner submitted for verification (legal name, website, contact,
    # address); the tax id is kept encrypted in tax_id.
    legal_name: Mapped[str | None] = mapped_column(sa.String(255))
    verification_data: Mapped[dict | None] = mapped_column(JSONType)
    verification_submitted_at: Mapped[dt.datetime | None]
    verified_at: Mapped[dt.datetime | None]
    verification_rejection_reason: Mapped[str | None] = mapped_column(sa.String(500))
    suspended_at: Mapped[dt.datetime | None]
    suspension_reason: Mapped[str | None] = mapped_column(sa.String(500))
    # Admin overrides; NULL means the plan's or the platform's default.
    commission_rate: Mapped[Decimal | None] = mapped_column(sa.Numeric(5, 4))
    # bank_transfer, paypal or stripe; the destination is encrypted like bank_account
    # (bank details for a transfer, an email for PayPal, an acct_ id for Stripe).
    payout_method: Mapped[str | None] = mapped_column(sa.String(20))
    payout_destination: Mapped[str | None] = mapped_column(sa.Text)
    # The provider the partner's plan invoices go through; NULL is the platform default.
    billing_provider: Mapped[str | None] = mapped_column(sa.String(50))
    rate_limit_overrides: Mapped[dict | None] = mapped_column(JSONType)
    deletion_requested_at: Mapped[dt.datetime | None]
    deleted_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=sa.func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(
        default=utcnow, onupdate=utcnow, server_default=sa.func.now()
    )

    owner: Mapped[User | None] = orm.relationship(foreign_keys=[user_id])
    plan = orm.relationship("Plan")


MEMBER_ROLES = ("owner", "admin", "developer", "billing", "read_only")


class PartnerMember(Base):
    """A user's membership of a partner, with a role."""

    __tablename__ = "partner_members"
    __table_args__ = (sa.UniqueConstraint("partner_id", "user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    partner_id: Mapped[int] = mapped_column(sa.ForeignKey("partners.id"), index=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), index=True)
    role: Mapped[str] = mapped_column(sa.String(20))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=sa.func.now())

    partner: Mapped[Partner] = orm.relationship()
    user: Mapped[User] = orm.relationship()


class PartnerUser(Base):
    """A user in a partner's tenancy: created by it, or installed or authorized its software."""

    __tablename__ = "partner_users"
    __table_args__ = (sa.UniqueConstraint("partner_id", "user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    partner_id: Mapped[int] = mapped_column(sa.ForeignKey("partners.id"))
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), index=True)
    livemode: Mapped[bool]
    source: Mapped[str] = mapped_column(sa.String(20))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=sa.func.now())


class ApiKey(Base):
    """A partner's API key; only its prefix and an HMAC of the whole key are stored."""

    __tablename__ = "api_keys"
    __table_args__ = (
        sa.Index("idx_api_keys_partner_id", "partner_id"),
        sa.Index("idx_api_keys_key_hash", "key_hash"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    partner_id: Mapped[int] = mapped_column(sa.ForeignKey("partners.id"))
    key_name: Mapped[str] = mapped_column(sa.String(255))
    # Unique, and also indexed as idx_api_keys_key_hash as the spec lists it.
    key_hash: Mapped[str] = mapped_column(sa.String(255), unique=True)
    key_prefix: Mapped[str] = mapped_column(sa.String(16))
    # After a rotation the previous secret keeps working until this moment.
    previous_key_hash: Mapped[str | None] = mapped_column(sa.String(255), unique=True)
    previous_key_prefix: Mapped[str | None] = mapped_column(sa.String(16))
    previous_key_expires_at: Mapped[dt.datetime | None]
    # CIDR ranges the key may be used from; empty means any address.
    allowed_ips: Mapped[list] = mapped_column(JSONType, default=list)
    # The API version (a date such as 2026-06-05) the key's calls are pinned to.
    api_version: Mapped[str | None] = mapped_column(sa.String(10))
    scopes: Mapped[list] = mapped_column(JSONType, default=list)
    # NULL means the partner's plan decides.
    rate_limit: Mapped[int | None]
    rate_limit_window: Mapped[int | None]
    status: Mapped[str] = mapped_column(sa.String(20), default="active", server_default="active")
    livemode: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    last_used: Mapped[dt.datetime | None]
    created_by_user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    revoked_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=sa.func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(
        default=utcnow, onupdate=utcnow, server_default=sa.func.now()
    )
    expires_at: Mapped[dt.datetime | None]
    # The partner's integration the key calls for; its calls earn the integration's
    # per-call price.
    integration_id: Mapped[int | None] = mapped_column(sa.ForeignKey("integrations.id"))

    partner: Mapped[Partner] = orm.relationship()

    @property
    def mode(self) -> str:
        return "live" if self.livemode else "test"


class UserToken(Base):
    """A single-use token mailed to a user: password reset or email verification.

    Only a SHA-256 of the token is stored; ``used_at`` makes it single-use.
    """

    __tablename__ = "user_tokens"
    __table_args__ = (sa.Index("ix_user_tokens_user_id_purpose", "user_id", "purpose"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"))
    # password_reset or email_verification.
    purpose: Mapped[str] = mapped_column(sa.String(30))
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    # The address being verified, which may differ from the current one.
    email: Mapped[str | None] = mapped_column(sa.String(255))
    expires_at: Mapped[dt.datetime]
    used_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=sa.func.now())


class RevokedToken(Base):
    """A login token ended by logout before its expiry, kept until that expiry."""

    __tablename__ = "revoked_tokens"

    jti: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)
