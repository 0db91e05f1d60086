"""The gateway in front of the F-KOD API: API key or OAuth token, scope, rate limits, metering.

Order of the checks on every ``/api/v1/…`` operation:

1. the credential: an API key (401 when missing, malformed, unknown, revoked
   or expired; 403 when its partner is suspended), or an OAuth access token
   (see below);
2. the scope the operation declares (403 naming it), from the key's scopes or
   the token's ``scope`` claim, limited to the scopes its application may
   still request;
3. the rate limits: the plan's hourly and daily windows, shared by all keys
   and OAuth applications of the partner in one mode, plus the key's own
   window when it overrides, or a user's window in an application (429 with
   Retry-After; see :mod:`fkod.core.ratelimit.policy`). A refused call counts
   toward no quota;
4. after the response: ``X-RateLimit-*`` headers and one usage record, handed
   to the usage recorder without any I/O on the request path.

OAuth access tokens. A bearer that is not shaped like an API key but like a
JWT is verified by :func:`verify_oauth_access_token`, in this order:

- the signature: ES256 only, by the current or a previous signing key named
  by ``kid``, then audience ``fkod-api``, issuer and expiry (401
  ``invalid_token``, or ``token_expired``);
- the ``jti`` is stored in ``oauth_tokens`` and its claims match the row (401
  ``invalid_token``);
- the application is active (401 ``oauth_client_deleted``);
- the token is not revoked, and a user's token has an active user with an
  unrevoked consent (401 ``token_revoked``);
- the partner is not deleted (401) or suspended (403 ``partner_suspended``),
  and is verified for a live-mode token (403 ``partner_not_verified``).

The stored token, application, partner and plan are cached per ``jti`` for
``fkod.gateway.key_cache_seconds``, as API keys are, so a revocation takes
effect on other processes within that time.

CORS. Only calls with a token of a public application get CORS headers, and
only when the request's ``Origin`` is one of the application's
``allowed_origins``; calls with an API key never get any. Preflight requests
(``OPTIONS`` with ``Access-Control-Request-Method``) on ``/api/v1/…`` get a
204 response for any origin, because a preflight carries no credential and
discloses nothing. The browser then reads the real response only when its
origin is registered.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import logging
import time

import sqlalchemy as sa
from pyramid.response import Response

from fkod.core import versions
from fkod.core.api import AUTH_API_KEY, Operation, register_auth_check
from fkod.core.auth.apikeys import address_allowed, looks_like_key
from fkod.core.auth.keycache import KeySnapshot, PlanSnapshot
from fkod.core.auth.models import ApiKey, Partner, User
from fkod.core.auth.oauth_models import OAuthClient, OAuthConsent, OAuthToken
from fkod.core.auth.security import BLOCKED_PARTNER_STATUSES, bearer_token, is_expired
from fkod.core.auth.tokens import OAUTH_AUDIENCE, ExpiredToken, InvalidToken
from fkod.core.billing.models import Plan
from fkod.core.db import utcnow
from fkod.core.errors import Forbidden, Unauthorized
from fkod.core.ids import try_parse_id
from fkod.core.metering import UsageRecord
from fkod.core.ratelimit import policy

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1/"
# The prefix that request logs show for an OAuth caller, before 12 characters of its client_id.
OAUTH_PREFIX = "oauth:"
CORS_ALLOWED_METHODS = "GET, POST, PUT, PATCH, DELETE"
CORS_ALLOWED_HEADERS = f"Authorization, Content-Type, Idempotency-Key, {versions.VERSION_HEADER}"
CORS_EXPOSED_HEADERS = ", ".join((
    "X-Request-Id", versions.VERSION_HEADER, "Retry-After", "X-RateLimit-Limit",
    "X-RateLimit-Remaining", "X-RateLimit-Reset", "X-RateLimit-Retry-After",
    "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "Idempotent-Replayed",
))
CORS_MAX_AGE_SECONDS = 600


@dataclasses.dataclass(frozen=True)
class ApiKeyPrincipal:
    """A partner's software calling with an API key."""

    key_id: int
    partner_id: int
    livemode: bool
    scopes: frozenset[str]
    key_prefix: str

    @property
    def mode(self) -> str:
        return "live" if self.livemode else "test"


@dataclasses.dataclass(frozen=True)
class OAuthPrincipal:
    """A partner's OAuth application calling with an access token.

    ``user_id`` is the user the token acts for, or None for a
    client-credentials token, which acts for the partner itself.
    ``key_prefix`` names the application in request logs.
    """

    partner_id: int
    livemode: bool
    scopes: frozenset[str]
    key_prefix: str
    client_id: str
    oauth_client_id: int
    user_id: int | None

    @property
    def mode(self) -> str:
        return "live" if self.livemode else "test"


@dataclasses.dataclass(frozen=True)
class OAuthTokenSnapshot:
    """The stored token, application, partner and plan fields the gateway reads for one jti.

    ``id`` is the ``oauth_tokens`` row id, so that the key cache can forget
    the entry with ``invalidate_key``.
    """

    id: int
    jti: str
    user_id: int | None
    token_livemode: bool
    # Revoked, or a user token whose user is no longer active or withdrew consent.
    revoked: bool
    oauth_client_id: int
    client_id: str
    client_active: bool
    client_livemode: bool
    public_client: bool
    allowed_origins: tuple[str, ...]
    # The scopes the application may request now (its registered ``scope``).
    client_scopes: frozenset[str]
    partner_id: int
    partner_status: str
    partner_deleted: bool
    partner_verified: bool
    plan: PlanSnapshot | None

    # The rate-limit policy reads the mode from ``livemode``.
    @property
    def livemode(self) -> bool:
        return self.client_livemode


def authenticate_api_key(request) -> KeySnapshot:
    """Verify the bearer key and return what the gateway needs of it, its partner and plan."""
    token = bearer_token(request)
    if token is None:
        raise Unauthorized(
            "This operation needs an API key: send 'Authorization: Bearer sk_live_…' or "
            "'Bearer sk_test_…'.",
            code="missing_credentials",
        )
    if not looks_like_key(token):
        raise Unauthorized("The API key is not valid.", code="invalid_api_key")

    key_hash = request.registry["key_hasher"].hash(token)
    cache = request.registry["key_cache"]
    key = cache.get(key_hash)
    if key is None:
        key = _load_key(request, key_hash)
        cache.put(key_hash, key)

    if key.partner_deleted:
        raise Unauthorized("The API key is not valid.", code="invalid_api_key")
    if key.status != "active":
        raise Unauthorized("The API key has been revoked.", code="api_key_revoked")
    if is_expired(key.expires_at):
        raise Unauthorized("The API key has expired.", code="api_key_expired")
    if key.key_hash != key_hash and (key.previous_key_expires_at is None
                                     or key.previous_key_expires_at <= utcnow()):
        raise Unauthorized("The API key was rotated and its grace period has ended; use the "
                           "new secret.", code="api_key_rotated")
    if key.partner_status in BLOCKED_PARTNER_STATUSES:
        raise Forbidden(f"The partner account is {key.partner_status}; its API keys do not work.",
                        code="partner_suspended")
    # REMOTE_ADDR, never X-Forwarded-For, which any client can set.
    if not address_allowed(key.allowed_ips, request.client_address):
        raise Forbidden("The API key may not be used from this address.", code="ip_not_allowed",
                        errors=[{"location": "header", "name": "Authorization",
                                 "description": "the client address is outside the key's "
                                                "allowed_ips"}])
    return key


def _load_key(request, key_hash: str) -> KeySnapshot:
    row = request.dbsession.execute(
        sa.select(ApiKey, Partner, Plan)
        .join(Partner, Partner.id == ApiKey.partner_id)
        .outerjoin(Plan, Plan.id == Partner.plan_id)
        .where(sa.or_(ApiKey.key_hash == key_hash, ApiKey.previous_key_hash == key_hash))
    ).one_or_none()
    if row is None:
        raise Unauthorized("The API key is not valid.", code="invalid_api_key")
    key, partner, plan = row
    return KeySnapshot.from_rows(key, partner, plan or default_plan(request))


def default_plan(request) -> Plan | None:
    return request.dbsession.scalars(
        sa.select(Plan).where(Plan.is_default.is_(True), Plan.active.is_(True)).limit(1)
    ).first()


def looks_like_jwt(token: str) -> bool:
    """Return True when ``token`` has the shape of a compact JWS: three dot-separated parts."""
    return token.count(".") == 2


def verify_oauth_access_token(request, token: str) -> dict:
    """Return the claims of a valid OAuth access token, or raise Unauthorized or Forbidden.

    See the module docstring for the checks and their error codes.
    """
    claims, _snapshot = _verify_oauth(request, token)
    return claims


def _invalid_token(message: str = "The access token is not valid.") -> Unauthorized:
    return Unauthorized(message, code="invalid_token")


def _verify_oauth(request, token: str) -> tuple[dict, OAuthTokenSnapshot]:
    signer = request.registry["token_signer"]
    try:
        claims = signer.verify(token, audience=OAUTH_AUDIENCE)
    except ExpiredToken as expired:
        _allow_cors_for_client(request, expired.claims.get("client_id"))
        raise Unauthorized("The access token has expired; refresh it or request a new one.",
                           code="token_expired") from None
    except InvalidToken:
        if not _names_oauth_audience(token):
            # Login and admin tokens, and bearers that are no JWT at all.
            raise Unauthorized("The API key is not valid; send an API key or an OAuth access "
                               "token.", code="invalid_api_key") from None
        raise _invalid_token() from None

    jti = claims.get("jti")
    partner_id = claim_partner_id(claims)
    if not (isinstance(jti, str) and jti and isinstance(claims.get("client_id"), str)
            and isinstance(claims.get("scope"), str) and partner_id is not None
            and isinstance(claims.get("livemode"), bool)):
        raise _invalid_token()

    cache = request.registry["oauth_token_cache"]
    snapshot = cache.get(jti)
    if snapshot is None:
        snapshot = _load_oauth_token(request, jti)
        cache.put(jti, snapshot)

    expected_sub = (snapshot.client_id if snapshot.user_id is None
                    else f"user_{snapshot.user_id}")
    if (claims["client_id"] != snapshot.client_id or claims["sub"] != expected_sub
            or partner_id != snapshot.partner_id
            or claims["livemode"] is not snapshot.client_livemode
            or snapshot.token_livemode is not snapshot.client_livemode):
        log.warning("an access token's claims disagree with its stored record",
                    extra={"oauth_client_id": snapshot.oauth_client_id})
        raise _invalid_token()

    if not snapshot.client_active:
        raise Unauthorized("The application this access token was issued to has been deleted.",
                           code="oauth_client_deleted")
    if snapshot.public_client:
        _allow_cors(request, snapshot.allowed_origins)
    if snapshot.revoked:
        raise Unauthorized("The access token has been revoked; request a new one.",
                           code="token_revoked")
    if snapshot.partner_deleted:
        raise _invalid_token()
    if snapshot.partner_status in BLOCKED_PARTNER_STATUSES:
        raise Forbidden(f"The partner account is {snapshot.partner_status}; its applications "
                        "do not work.", code="partner_suspended")
    if snapshot.client_livemode and not snapshot.partner_verified:
        raise Forbidden("The partner is not verified, so its applications work in test mode "
                        "only.", code="partner_not_verified")
    return claims, snapshot


def _names_oauth_audience(token: str) -> bool:
    """Return True when the unverified payload names the OAuth audience, to pick an error code."""
    payload = token.split(".")[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (binascii.Error, ValueError, UnicodeError):
        return False
    audience = claims.get("aud") if isinstance(claims, dict) else None
    return audience == OAUTH_AUDIENCE or (isinstance(audience, list)
                                          and OAUTH_AUDIENCE in audience)


def claim_partner_id(claims: dict) -> int | None:
    """Return the partner number of the ``partner_id`` claim: an int or ``partner_<n>``."""
    value = claims.get("partner_id")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return try_parse_id("partner", value)


def _load_oauth_token(request, jti: str) -> OAuthTokenSnapshot:
    row = request.dbsession.execute(
        sa.select(OAuthToken, OAuthClient, Partner, Plan, User.status,
                  OAuthConsent.id.label("consent_id"), OAuthConsent.revoked_at)
        .join(OAuthClient, OAuthClient.client_id == OAuthToken.client_id)
        .join(Partner, Partner.id == OAuthClient.partner_id)
        .outerjoin(Plan, Plan.id == Partner.plan_id)
        .outerjoin(User, User.id == OAuthToken.user_id)
        .outerjoin(OAuthConsent, sa.and_(OAuthConsent.user_id == OAuthToken.user_id,
                                         OAuthConsent.oauth_client_id == OAuthClient.id))
        .where(OAuthToken.access_token == jti)
    ).one_or_none()
    if row is None:
        raise _invalid_token()
    token, client, partner, plan, user_status, consent_id, consent_revoked_at = row
    plan = plan or default_plan(request)
    revoked = bool(token.access_token_revoked_at)
    if token.user_id is not None:
        revoked = (revoked or user_status != "active" or consent_id is None
                   or consent_revoked_at is not None)
    return OAuthTokenSnapshot(
        id=token.id, jti=jti, user_id=token.user_id, token_livemode=bool(token.livemode),
        revoked=revoked, oauth_client_id=client.id,
        client_id=client.client_id,
        client_active=client.status == "active" and client.deleted_at is None,
        client_livemode=bool(client.livemode), public_client=client.is_public,
        allowed_origins=_origins(client),
        client_scopes=frozenset(str((client.client_metadata or {}).get("scope") or "").split()),
        partner_id=partner.id,
        partner_status=partner.status, partner_deleted=partner.deleted_at is not None,
        partner_verified=partner.verification_status == "verified",
        plan=None if plan is None else PlanSnapshot(
            plan.id, plan.code, plan.requests_per_hour, plan.requests_per_day),
    )


def _origins(client: OAuthClient) -> tuple[str, ...]:
    metadata = client.client_metadata or {}
    origins = metadata.get("allowed_origins") or ()
    return tuple(origin for origin in origins if isinstance(origin, str))


def check_oauth_token(request, op: Operation, token: str) -> None:
    """Verify an OAuth access token, then check the scope and the rate limits."""
    claims, snapshot = _verify_oauth(request, token)
    # Narrowing an application's scopes narrows the tokens it already holds.
    principal = OAuthPrincipal(
        partner_id=snapshot.partner_id, livemode=snapshot.client_livemode,
        scopes=frozenset(claims["scope"].split()) & snapshot.client_scopes,
        key_prefix=OAUTH_PREFIX + snapshot.client_id[:12], client_id=snapshot.client_id,
        oauth_client_id=snapshot.oauth_client_id, user_id=snapshot.user_id,
    )
    request.environ["fkod.principal"] = principal
    request.principal = principal
    request.add_response_callback(_meter)
    requested = request.headers.get(versions.VERSION_HEADER)
    request.environ["fkod.api_version"] = (
        versions.check_version(requested.strip()) if requested is not None else versions.LATEST
    )

    if op.scope and op.scope not in principal.scopes:
        raise Forbidden(
            f"The access token lacks the scope {op.scope} that this operation requires.",
            code="missing_scope",
            errors=[{"location": "header", "name": "Authorization",
                     "description": f"requires scope {op.scope}"}],
        )

    policy.enforce(request, principal, snapshot.plan)


def check_api_key(request, op: Operation) -> None:
    """Authenticate the key or OAuth token, check the scope and the rate limits (the gateway)."""
    token = bearer_token(request)
    if token is not None and not looks_like_key(token) and looks_like_jwt(token):
        check_oauth_token(request, op, token)
        return

    key = authenticate_api_key(request)
    principal = ApiKeyPrincipal(
        key_id=key.id, partner_id=key.partner_id, livemode=key.livemode,
        scopes=frozenset(key.scopes), key_prefix=key.key_prefix,
    )
    request.environ["fkod.principal"] = principal
    request.principal = principal
    request.add_response_callback(_meter)
    requested = request.headers.get(versions.VERSION_HEADER)
    request.environ["fkod.api_version"] = (
        versions.check_version(requested.strip()) if requested is not None
        else key.api_version or versions.LATEST
    )

    if op.scope and op.scope not in principal.scopes:
        raise Forbidden(
            f"The API key lacks the scope {op.scope} that this operation requires.",
            code="missing_scope",
            errors=[{"location": "header", "name": "Authorization",
                     "description": f"requires scope {op.scope}"}],
        )

    policy.enforce(request, key, key.plan)


def _adapt_to_version(request, response) -> None:
    version = request.environ.get("fkod.api_version")
    if version is None:
        return
    response.headers[versions.VERSION_HEADER] = version
    if response.status_code >= 400 or response.content_type != "application/json":
        return
    route = request.matched_route.pattern if request.matched_route else ""
    body = versions.downgrade_response_body(version, route, request.method, response.body)
    if body is not None:
        response.body = body


def _meter(request, response) -> None:
    _adapt_to_version(request, response)
    response.headers.update(policy.response_headers(request.environ.get("fkod.ratelimit")))

    principal = request.principal
    route = request.matched_route.pattern if request.matched_route else "(no route)"
    elapsed_ms = int((time.perf_counter() - request.started_at) * 1000)
    request.registry["usage_recorder"].record(UsageRecord(
        api_key_id=getattr(principal, "key_id", None),
        partner_id=principal.partner_id,
        endpoint=route[:255],
        method=request.method,
        status_code=response.status_code,
        response_time=elapsed_ms,
        request_size=request.content_length or 0,
        response_size=response.content_length or 0,
        error_message=request.environ.get("fkod.error_code") if response.status_code >= 400
        else None,
        livemode=principal.livemode,
        request_id=request.request_id,
        created_at=utcnow(),
        oauth_client_id=getattr(principal, "oauth_client_id", None),
        oauth_user_id=getattr(principal, "user_id", None),
    ))


# CORS -----------------------------------------------------------------------


def _allow_cors_for_client(request, client_id) -> None:
    """Allow CORS for an expired token's application, named by its genuine client_id claim."""
    if not isinstance(client_id, str) or not request.headers.get("Origin"):
        return
    client = request.dbsession.scalar(
        sa.select(OAuthClient).where(OAuthClient.client_id == client_id))
    if client is not None and client.is_public and client.status == "active":
        _allow_cors(request, _origins(client))


def _allow_cors(request, allowed_origins: tuple[str, ...]) -> None:
    """Expose the response to the request's origin when it is one of ``allowed_origins``."""
    origin = request.headers.get("Origin")
    if not origin or origin not in allowed_origins:
        return
    if "fkod.cors_origin" in request.environ:
        return
    request.environ["fkod.cors_origin"] = origin
    request.add_response_callback(_add_cors_headers)


def _add_cors_headers(request, response) -> None:
    response.headers["Access-Control-Allow-Origin"] = request.environ["fkod.cors_origin"]
    response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSED_HEADERS
    _vary_on_origin(response)


def _vary_on_origin(response) -> None:
    vary = [value for value in (response.vary or ()) if value.lower() != "origin"]
    response.vary = (*vary, "Origin")


def cors_preflight_tween_factory(handler, registry):
    """Respond to CORS preflight requests on ``/api/v1/…`` before routing and authentication."""

    def tween(request):
        if (request.method == "OPTIONS" and request.path.startswith(API_PREFIX)
                and request.headers.get("Origin")
                and request.headers.get("Access-Control-Request-Method")):
            return preflight_response(request)
        return handler(request)

    return tween


def preflight_response(request) -> Response:
    """Return the 204 response to a preflight: the methods and headers the F-KOD API accepts."""
    response = Response(status=204)
    response.headers.update({
        "Access-Control-Allow-Origin": request.headers["Origin"],
        "Access-Control-Allow-Methods": CORS_ALLOWED_METHODS,
        "Access-Control-Allow-Headers": CORS_ALLOWED_HEADERS,
        "Access-Control-Max-Age": str(CORS_MAX_AGE_SECONDS),
    })
    response.vary = ("Origin", "Access-Control-Request-Method",
                     "Access-Control-Request-Headers")
    return response


def includeme(config):
    from fkod.core.auth.keycache import KeyCache
    from fkod.core.auth.tokens import load_previous_public_keys

    settings = config.get_settings()
    config.registry["key_cache"] = KeyCache(settings["fkod.gateway.key_cache_seconds"])
    # Stored access tokens by jti. OAuthTokenSnapshot has the ``id`` that the cache reads.
    config.registry["oauth_token_cache"] = KeyCache(settings["fkod.gateway.key_cache_seconds"])
    # The signer verifies and publishes the keys that signed before a rotation.
    config.registry["token_signer"].add_previous_keys(load_previous_public_keys(settings))
    config.include("fkod.core.ratelimit.policy")
    config.add_tween("fkod.core.gateway.cors_preflight_tween_factory",
                     under="fkod.core.requestlog.request_id_tween_factory")
    register_auth_check(AUTH_API_KEY, check_api_key)
