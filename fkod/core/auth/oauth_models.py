"""OAuth 2.0 records: partners' applications (clients), authorization codes, tokens, consents.

The tables build on Authlib's SQLAlchemy mixins. Secrets are never stored in
clear: a client secret, an authorization code and a refresh token are kept
as the SHA-256 hex digest of their value, which is enough for 256-bit random
values and keeps each lookup one indexed equality. Access tokens are JWTs and
are not stored; their ``jti`` is, so that one can be revoked and introspected.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac

import sqlalchemy as sa
from authlib.integrations.sqla_oauth2 import (
    OAuth2AuthorizationCodeMixin,
    OAuth2ClientMixin,
    OAuth2TokenMixin,
)
from sqlalchemy.orm import Mapped, mapped_column

from fkod.core.db import Base, utcnow
from fkod.core.types import JSONType


def digest(value: str) -> str:
    """Return the SHA-256 hex digest under which a secret value is stored."""
    return hashlib.sha256(value.encode()).hexdigest()


class OAuthClient(Base, OAuth2ClientMixin):
    """A partner's developer application: an OAuth client.

    ``client_secret`` holds the digest of the secret (empty for a public
    client). Authlib's ``client_metadata`` holds the registered metadata:
    ``client_name``, ``redirect_uris`` (registered in full), ``scope`` (the
    allowed scopes), ``grant_types``, ``response_types``,
    ``token_endpoint_auth_method`` (``none`` for a public client),
    ``logo_uri``, ``client_uri``, ``policy_uri``, ``tos_uri`` and
    ``allowed_origins`` (for CORS from browsers).
    """

    __tablename__ = "oauth_clients"
    __table_args__ = (
        sa.UniqueConstraint("client_id"),
        sa.Index("ix_oauth_clients_partner", "partner_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    partner_id: Mapped[int] = mapped_column(sa.ForeignKey("partners.id"))
    # confidential or public
    client_type: Mapped[str] = mapped_column(sa.String(20))
    # Live-mode tokens need a verified partner; test mode works from the start.
    livemode: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    # active or deleted; a deleted client's tokens stop working at once.
    status: Mapped[str] = mapped_column(sa.String(20), default="active", server_default="active")
    # The partner's integration the application acts for; its calls earn its per-call price.
    integration_id: Mapped[int | None] = mapped_column(sa.ForeignKey("integrations.id"))
    created_by_user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    secret_rotated_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=sa.func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(
        default=utcnow, onupdate=utcnow, server_default=sa.func.now())
    deleted_at: Mapped[dt.datetime | None]

    def check_client_secret(self, client_secret: str) -> bool:
        if not self.client_secret or not client_secret:
            return False
        return hmac.compare_digest(self.client_secret, digest(client_secret))

    @property
    def is_public(self) -> bool:
        return self.client_type == "public"

    @property
    def allowed_origins(self) -> list[str]:
        return self.client_metadata.get("allowed_origins", [])


class OAuthAuthorizationCode(Base, OAuth2AuthorizationCodeMixin):
    """An authorization code, stored as its digest in ``code``; usable once, for 5 minutes.

    ``used_at`` is set when the code is exchanged. A second exchange finds it
    set and revokes every token of the ``family_id`` the first one started.
    """

    __tablename__ = "oauth_authorization_codes"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), index=True)
    used_at: Mapped[dt.datetime | None]
    family_id: Mapped[str | None] = mapped_column(sa.String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=sa.func.now())


class OAuthToken(Base, OAuth2TokenMixin):
    """One issued token pair: the access token's ``jti`` and the refresh token's digest.

    ``access_token`` holds the JWT's ``jti``; ``refresh_token`` the digest of
    the refresh token (NULL for client credentials). Every pair issued from
    one authorization shares a ``family_id``; a refresh makes a new pair and
    marks the old one ``rotated_at``. Presenting a rotated refresh token again
    revokes the whole family. ``user_id`` is NULL for client credentials.
    """

    __tablename__ = "oauth_tokens"
    __table_args__ = (
        sa.Index("ix_oauth_tokens_family", "family_id"),
        sa.Index("ix_oauth_tokens_user_client", "user_id", "client_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    family_id: Mapped[str] = mapped_column(sa.String(64))
    rotated_at: Mapped[dt.datetime | None]
    livemode: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=sa.func.now())


class OAuthConsent(Base):
    """A user's authorization of an application, with the scopes the user granted.

    Revoking it (``revoked_at``) revokes every token the application holds
    for the user. Partners see how many users have an unrevoked consent.
    """

    __tablename__ = "oauth_consents"
    __table_args__ = (
        sa.UniqueConstraint("user_id", "oauth_client_id"),
        sa.Index("ix_oauth_consents_client", "oauth_client_id", "revoked_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"))
    oauth_client_id: Mapped[int] = mapped_column(sa.ForeignKey("oauth_clients.id"))
    scopes: Mapped[list] = mapped_column(JSONType, default=list)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=sa.func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(
        default=utcnow, onupdate=utcnow, server_default=sa.func.now())
    revoked_at: Mapped[dt.datetime | None]
