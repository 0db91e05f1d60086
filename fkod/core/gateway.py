"""The gateway in front of the F-KOD API: API key, scope, rate limits, metering.

Order of the checks on every ``/api/v1/…`` operation:

1. the API key (401 when missing, malformed, unknown, revoked or expired;
   403 when its partner is suspended);
2. the scope the operation declares (403 naming it);
3. the rate limits: the plan's hourly and daily windows, shared by all keys of
   the partner in one mode, plus the key's own window when it overrides
   (429 with Retry-After). A refused call counts toward no quota;
4. after the response: ``X-RateLimit-*`` headers and one usage record, handed
   to the usage recorder without any I/O on the request path.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import sqlalchemy as sa

from fkod.core import versions
from fkod.core.api import AUTH_API_KEY, Operation, register_auth_check
from fkod.core.auth.apikeys import address_allowed, looks_like_key
from fkod.core.auth.keycache import KeySnapshot
from fkod.core.auth.models import ApiKey, Partner
from fkod.core.auth.security import BLOCKED_PARTNER_STATUSES, bearer_token, is_expired
from fkod.core.billing.models import Plan
from fkod.core.db import utcnow
from fkod.core.errors import Forbidden, Unauthorized
from fkod.core.metering import UsageRecord
from fkod.core.ratelimit import policy

log = logging.getLogger(__name__)


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


def check_api_key(request, op: Operation) -> None:
    """Authenticate the key, check the scope and the rate limits (the gateway)."""
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
        api_key_id=principal.key_id,
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
    ))


def includeme(config):
    from fkod.core.auth.keycache import KeyCache

    config.registry["key_cache"] = KeyCache(
        config.get_settings()["fkod.gateway.key_cache_seconds"])
    config.include("fkod.core.ratelimit.policy")
    register_auth_check(AUTH_API_KEY, check_api_key)
