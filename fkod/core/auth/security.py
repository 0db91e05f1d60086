"""Who is calling: the credential checks that run before every JSON operation.

The JSON API authenticates with bearer tokens only, never with a cookie:

* member operations take a login access token (a JWT) of a user who is a
  member of a partner, and check the member's role against the operation's
  permission on every request, so a removed member or a suspended partner
  loses access at once;
* user operations (``/api/auth/…`` once logged in) take a login access token
  of any active user, partner member or customer;
* gateway operations (``/api/v1/…``) take an API key, check its scope, apply
  the rate limits and meter the call (see :mod:`fkod.core.gateway`);
* operations without a credential are rate limited per client address.

Every login-token check refuses a token whose ``jti`` was revoked by logout
and a token issued before the user's ``tokens_valid_after``, in the same
query that loads the user.
"""

from __future__ import annotations

import calendar
import dataclasses
import datetime as dt
import logging

import sqlalchemy as sa

from fkod.core.api import AUTH_MEMBER, AUTH_NONE, AUTH_USER, Operation, register_auth_check
from fkod.core.auth.models import Partner, PartnerMember, RevokedToken, User
from fkod.core.auth.roles import ROLE_PERMISSIONS, role_permits
from fkod.core.auth.tokens import InvalidToken
from fkod.core.clientaddr import limit_subject
from fkod.core.db import utcnow
from fkod.core.errors import Forbidden, RateLimited, Unauthorized
from fkod.core.ids import try_parse_id
from fkod.core.ratelimit import LimitCheck, RateLimitDecision, RateLimiterUnavailable
from fkod.core.ratelimit.policy import policy_for

log = logging.getLogger(__name__)

# Partners in these states cannot act through any credential.
BLOCKED_PARTNER_STATUSES = ("suspended",)

# Operations without a credential that load balancers and token verifiers
# poll; the per-address limit leaves them alone. Cornice route names.
ADDRESS_LIMIT_EXEMPT_ROUTES = frozenset({"health", "ready", "jwks"})

MAX_JTI_LENGTH = 64


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
    """Return the claims of the request's login token after checking its signature and expiry.

    Revocation is checked by the callers, against the user row they load.
    """
    token = bearer_token(request)
    if token is None:
        raise Unauthorized(
            "This operation needs a login access token: send 'Authorization: Bearer <token>' "
            "with a token from POST /api/auth/login.",
            code="missing_credentials",
        )
    try:
        claims = request.registry["token_signer"].verify(token)
    except InvalidToken:
        raise Unauthorized(
            "The access token is invalid or expired; log in again.", code="invalid_token",
        ) from None
    jti = claims.get("jti")
    if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI_LENGTH \
            or not isinstance(claims.get("iat"), int | float):
        raise Unauthorized("The access token is invalid or expired; log in again.",
                           code="invalid_token")
    return claims


def _revoked() -> Unauthorized:
    return Unauthorized("The access token was revoked by a logout or a password change; "
                        "log in again.", code="token_revoked")


def to_unix_seconds(moment: dt.datetime) -> int:
    """Convert a naive UTC datetime to whole Unix seconds, rounded down."""
    return calendar.timegm(moment.utctimetuple())


def check_not_revoked(claims: dict, user: User, revoked_jti: str | None) -> None:
    """Raise 401 when the token's jti was revoked or it predates ``tokens_valid_after``."""
    if revoked_jti is not None:
        raise _revoked()
    valid_after = user.tokens_valid_after
    if valid_after is not None and claims["iat"] < to_unix_seconds(valid_after):
        raise _revoked()


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

    # The LEFT JOIN on the primary key of revoked_tokens makes the revocation
    # check part of the query that loads the member.
    row = request.dbsession.execute(
        sa.select(PartnerMember, Partner, User, RevokedToken.jti)
        .join(Partner, Partner.id == PartnerMember.partner_id)
        .join(User, User.id == PartnerMember.user_id)
        .outerjoin(RevokedToken, RevokedToken.jti == claims["jti"])
        .where(PartnerMember.user_id == user_id, PartnerMember.partner_id == partner_id)
    ).one_or_none()
    if row is None or row.Partner.deleted_at is not None or row.User.status != "active":
        raise Unauthorized("The access token no longer grants access; log in again.",
                           code="invalid_token")
    member, partner, user, revoked_jti = row
    check_not_revoked(claims, user, revoked_jti)
    if partner.status in BLOCKED_PARTNER_STATUSES:
        raise Forbidden(f"The partner account is {partner.status}.", code="partner_suspended")

    principal = MemberPrincipal(user_id=user.id, partner_id=partner.id, role=member.role)
    request.environ["fkod.principal"] = principal
    request.principal = principal
    request.partner = partner
    request.user = user
    request.login_claims = claims
    if op.permission and not role_permits(member.role, op.permission):
        raise Forbidden(
            f"The {member.role} role does not grant the permission {op.permission}.",
            code="missing_permission",
            errors=[{"location": "header", "name": "Authorization",
                     "description": f"requires permission {op.permission}"}],
        )


def check_user(request, op: Operation) -> None:
    """Authenticate any active user by login token; set ``request.user`` and ``login_claims``.

    The token's partner, if any, is not checked here: these operations act on
    the user's own account.
    """
    claims = verify_login_token(request)
    user_id = try_parse_id("user", claims.get("sub"))
    if user_id is None:
        raise Unauthorized("The access token is not a login token of a user; log in again.",
                           code="invalid_token")

    row = request.dbsession.execute(
        sa.select(User, RevokedToken.jti)
        .outerjoin(RevokedToken, RevokedToken.jti == claims["jti"])
        .where(User.id == user_id)
    ).one_or_none()
    if row is None or row.User.status != "active":
        raise Unauthorized("The access token no longer grants access; log in again.",
                           code="invalid_token")
    user, revoked_jti = row
    check_not_revoked(claims, user, revoked_jti)
    request.user = user
    request.login_claims = claims


# Rate limits without a credential ------------------------------------------------


def hit_limits(request, checks: list[LimitCheck]) -> RateLimitDecision | None:
    """Count one request in ``checks`` with the application's limiter.

    Returns None when the limiter is unavailable: these limits protect
    accounts and always fail open, so an outage of the store stops neither
    sign-up nor login. ``fkod.ratelimit.fail_open`` governs the gateway's
    quotas only. The outage is logged as the gateway logs it.
    """
    policy = policy_for(request.registry)
    try:
        decision = request.registry["rate_limiter"].hit(checks)
    except RateLimiterUnavailable as error:
        policy.outages.failed(error, fail_open=True)
        return None
    policy.outages.recovered()
    return decision


def address_limit_checks(settings, address: str | None) -> list[LimitCheck]:
    subject = limit_subject(address)
    checks = []
    for setting, window_seconds in (("fkod.ratelimit.per_address_per_minute", 60),
                                    ("fkod.ratelimit.per_address_per_hour", 3600)):
        limit = settings[setting]
        if limit > 0:
            checks.append(LimitCheck(subject, limit, window_seconds))
    return checks


def check_anonymous(request, op: Operation) -> None:
    """Count an operation without a credential against its client address; 429 when over."""
    route = request.matched_route
    if route is not None and route.name in ADDRESS_LIMIT_EXEMPT_ROUTES:
        return
    checks = address_limit_checks(request.registry.settings, request.client_address)
    if not checks:
        return
    decision = hit_limits(request, checks)
    if decision is not None and not decision.allowed:
        log.info("address rate limited", extra={"client_address": request.client_address,
                                                "retry_after": decision.retry_after})
        raise RateLimited(
            f"Too many requests from this address: at most {decision.limit} in this window; "
            f"retry in {decision.retry_after} seconds.",
            retry_after=decision.retry_after,
        )


def is_expired(expires_at: dt.datetime | None) -> bool:
    return expires_at is not None and expires_at <= utcnow()


def includeme(config):
    register_auth_check(AUTH_MEMBER, check_member)
    register_auth_check(AUTH_USER, check_user)
    register_auth_check(AUTH_NONE, check_anonymous)
