"""Accounts: users, admin users, partners, their members and tenancy, API keys."""

from __future__ import annotations

import datetime as dt

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
    company_website: Mapped[str | None] = mapped_column(sa.String(255))
    company_logo_url: Mapped[str | None] = mapped_column(sa.String(500))
    description: Mapped[str | None] = mapped_column(sa.Text)
    category: Mapped[str | None] = mapped_column(sa.String(50))
    status: Mapped[str] = mapped_column(sa.String(20), default="pending", server_default="pending")
    verification_status: Mapped[str] = mapped_column(
        sa.String(20), default="unverified", server_default="unverified"
    )
    tax_id: Mapped[str | None] = mapped_column(sa.String(50))
    bank_account: Mapped[dict | None] = mapped_column(JSONType)
    contact_email: Mapped[str | None] = mapped_column(sa.String(255))
    contact_phone: Mapped[str | None] = mapped_column(sa.String(20))
    address: Mapped[dict | None] = mapped_column(JSONType)
    plan_id: Mapped[int | None] = mapped_column(sa.ForeignKey("plans.id"))
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

    partner: Mapped[Partner] = orm.relationship()

    @property
    def mode(self) -> str:
        return "live" if self.livemode else "test"
