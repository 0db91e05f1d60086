"""Who is calling: the credential checks that run before every JSON operation.

The JSON API authenticates with bearer tokens only, never with a cookie:

* member operations take a login access token (a JWT) of a user who is a
  member of a partner, and check the member's role against the operation's
  permission on every request, so a removed member or a suspended partner
  loses access at once;
* gateway operations (``/api/v1/…``) take an API key, check its scope, apply
  the rate limits and meter the call (see :mod:`fkod.core.gateway`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import sqlalchemy as sa

from fkod.core.api import AUTH_MEMBER, Operation, register_auth_check
from fkod.core.auth.models import Partner, PartnerMember, User
from fkod.core.auth.roles import ROLE_PERMISSIONS, role_permits
from fkod.core.auth.tokens import InvalidToken
from fkod.core.db import utcnow
from fkod.core.errors import Forbidden, Unauthorized
from fkod.core.ids import try_parse_id

# Partners in these states cannot act through any credential.
BLOCKED_PARTNER_STATUSES = ("suspended",)


@dataclasses.dataclass(frozen=True)
class MemberPrincipal:
    """A user acting for a partner with a login token."""

    user_id: int
    partner_id: int
    role: str
    key_prefix: None = None

    @property
    def permissions(self) -> frozenset[str]:
        return ROLE_PERMISSIONS.get(self.role, frozenset())


def bearer_token(request) -> str | None:
    """Return the token of ``Authorization: Bearer <token>``, or None when absent."""
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized(
            "The Authorization header must be 'Bearer <token>'.", code="invalid_authorization",
        )
    return token.strip()


def verify_login_token(request) -> dict:
    token = bearer_token(request)
    if token is None:
        raise Unauthorized(
            "This operation needs a login access token: send 'Authorization: Bearer <token>' "
            "with a token from POST /api/auth/login.",
            code="missing_credentials",
        )
    try:
        return request.registry["token_signer"].verify(token)
    except InvalidToken:
        raise Unauthorized(
            "The access token is invalid or expired; log in again.", code="invalid_token",
        ) from None


def check_member(request, op: Operation) -> None:
    """Authenticate a partner member and check the operation's permission."""
    claims = verify_login_token(request)
    user_id = try_parse_id("user", claims.get("sub"))
    partner_id = try_parse_id("partner", claims.get("partner_id"))
    if user_id is None or partner_id is None:
        raise Forbidden(
            "This operation is for partner members; the token does not act for a partner.",
            code="not_a_partner_member",
        )

    row = request.dbsession.execute(
        sa.select(PartnerMember, Partner, User)
        .join(Partner, Partner.id == PartnerMember.partner_id)
        .join(User, User.id == PartnerMember.user_id)
        .where(PartnerMember.user_id == user_id, PartnerMember.partner_id == partner_id)
    ).one_or_none()
    if row is None or row.Partner.deleted_at is not None or row.User.status != "active":
        raise Unauthorized("The access token no longer grants access; log in again.",
                           code="invalid_token")
    member, partner, user = row
    if partner.status in BLOCKED_PARTNER_STATUSES:
        raise Forbidden(f"The partner account is {partner.status}.", code="partner_suspended")

    principal = MemberPrincipal(user_id=user.id, partner_id=partner.id, role=member.role)
    request.environ["fkod.principal"] = principal
    request.principal = principal
    request.partner = partner
    request.user = user
    if op.permission and not role_permits(member.role, op.permission):
        raise Forbidden(
            f"The {member.role} role does not grant the permission {op.permission}.",
            code="missing_permission",
            errors=[{"location": "header", "name": "Authorization",
                     "description": f"requires permission {op.permission}"}],
        )


def is_expired(expires_at: dt.datetime | None) -> bool:
    return expires_at is not None and expires_at <= utcnow()


def includeme(config):
    register_auth_check(AUTH_MEMBER, check_member)
