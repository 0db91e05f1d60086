"""API key lifecycle: create, change, rotate with a grace period, revoke, test.

A key's secret is shown once, when it is created or rotated. After a rotation
the previous secret keeps working until ``previous_key_expires_at``; a grace
period of 0 stops it at once. Revocation keeps the row for audit. Each change
takes effect on the next request in the process that made it and within
``fkod.gateway.key_cache_seconds`` (at most one second) in every other.

A key may be linked to one of its partner's integrations; its live calls then
earn that integration's per-call price when the billing period closes.
"""

from __future__ import annotations

import datetime as dt
import hmac
import ipaddress
import logging

import sqlalchemy as sa

from fkod.core import audit, versions
from fkod.core.auth.apikeys import generate_key
from fkod.core.auth.models import ApiKey, Partner
from fkod.core.db import utcnow
from fkod.core.errors import Conflict, NotFound, ValidationFailed, field_error
from fkod.core.ids import public_id
from fkod.core.ratelimit import RateLimiterUnavailable, policy
from fkod.marketplace.models import Integration

log = logging.getLogger(__name__)

MAX_GRACE_SECONDS = 7 * 86400
MAX_IP_RANGES = 50


def check_scopes(request, scopes: list[str]) -> list[str]:
    problems = request.registry["scope_catalog"].invalid(scopes)
    if problems:
        raise ValidationFailed(
            f"Scope {problems[0][0]} cannot be granted: {problems[0][1]}.", code="invalid_scope",
            errors=[field_error("body", "scopes", f"{name}: {reason}") for name, reason in problems],
        )
    return sorted(set(scopes))


def check_expiry(expires_at: dt.datetime | None) -> dt.datetime | None:
    """Return a timezone-aware expiry as naive UTC; past or out-of-range values are 400s."""
    if expires_at is None:
        return None
    try:
        expires_at = expires_at.astimezone(dt.UTC).replace(tzinfo=None)
    except OverflowError:
        raise ValidationFailed("expires_at is out of range.", errors=[
            field_error("body", "expires_at", "out of range")]) from None
    if expires_at <= utcnow():
        raise ValidationFailed("expires_at must be in the future.",
                               errors=[field_error("body", "expires_at", "is in the past")])
    return expires_at


def check_ip_ranges(ranges: list[str]) -> list[str]:
    """Normalize CIDR ranges (``203.0.113.0/24``, ``2001:db8::/32``, or single addresses)."""
    if len(ranges) > MAX_IP_RANGES:
        raise ValidationFailed(f"At most {MAX_IP_RANGES} IP ranges can be allowed.", errors=[
            field_error("body", "allowed_ips", f"more than {MAX_IP_RANGES} ranges")])
    normalized, errors = [], []
    for index, text in enumerate(ranges):
        try:
            normalized.append(str(ipaddress.ip_network(text, strict=False)))
        except ValueError:
            errors.append(field_error("body", f"allowed_ips.{index}",
                                      f"{text!r} is not an IP address or CIDR range"))
    if errors:
        raise ValidationFailed(errors[0]["description"], errors=errors)
    return sorted(set(normalized))


def check_integration(request, partner: Partner, integration_id: int | None) -> int | None:
    """Return ``integration_id`` if it is one of the partner's integrations (or None).

    Another partner's integration and an unknown id get the same 400, so the
    error does not reveal whether the integration exists. The row is locked for
    share, so a deletion running at the same time finishes first or waits.
    """
    if integration_id is None:
        return None
    found = request.dbsession.scalar(
        sa.select(Integration.id).where(Integration.id == integration_id,
                                        Integration.partner_id == partner.id)
        .with_for_update(read=True))
    if found is None:
        raise ValidationFailed(
            f"{public_id('int', integration_id)} is not one of the partner's integrations. "
            "Link the key to an integration of this partner, or send null for none.",
            errors=[field_error("body", "integration_id",
                                "not one of the partner's integrations")])
    return found


def _integration_ref(integration_id: int | None) -> str | None:
    return None if integration_id is None else public_id("int", integration_id)


def create_api_key(request, partner: Partner, data: dict) -> tuple[ApiKey, str]:
    """Create a key and return it with its secret, which is never stored or shown again."""
    from fkod.partners.services import require_live_mode_allowed

    scopes = check_scopes(request, data["scopes"])
    require_live_mode_allowed(partner, data["mode"], "API keys", request.user)
    expires_at = check_expiry(data.get("expires_at"))
    allowed_ips = check_ip_ranges(data.get("allowed_ips") or [])
    integration_id = check_integration(request, partner, data.get("integration_id"))

    livemode = data["mode"] == "live"
    secret, prefix = generate_key(livemode)
    key = ApiKey(
        partner_id=partner.id, key_name=data["key_name"],
        key_hash=request.registry["key_hasher"].hash(secret), key_prefix=prefix,
        scopes=scopes, livemode=livemode, status="active", allowed_ips=allowed_ips,
        api_version=data.get("api_version") or versions.LATEST,
        rate_limit=data.get("rate_limit"), rate_limit_window=data.get("rate_limit_window"),
        expires_at=expires_at, integration_id=integration_id,
        created_by_user_id=request.user.id,
    )
    request.dbsession.add(key)
    request.dbsession.flush()
    details = {"key_name": key.key_name, "key_prefix": prefix, "mode": key.mode,
               "scopes": scopes}
    if integration_id is not None:
        details["integration_id"] = _integration_ref(integration_id)
    audit.record(request, "api_key.created", partner_id=partner.id, target_type="api_key",
                 target_id=f"key_{key.id}", details=details)
    log.info("api key created", extra={"partner_id": partner.id, "key_id": key.id,
                                        "key_prefix": prefix, "user_id": request.user.id})
    return key, secret


def api_keys_query(partner: Partner):
    return sa.select(ApiKey).where(ApiKey.partner_id == partner.id)


def get_api_key(request, key_id: int, *, for_update: bool = False) -> ApiKey:
    """Return a key of the caller's partner; any other id is a 404."""
    query = api_keys_query(request.partner).where(ApiKey.id == key_id)
    if for_update:
        query = query.with_for_update()
    key = request.dbsession.scalar(query)
    if key is None:
        raise NotFound(f"No API key with id key_{key_id}.")
    return key


def forget_cached(request, key: ApiKey) -> None:
    """Drop the key from this process's verification cache, now and once the change commits."""
    cache = request.registry["key_cache"]
    cache.invalidate_key(key.id)
    key_id = key.id
    request.tm.get().addAfterCommitHook(lambda _committed: cache.invalidate_key(key_id))


def _require_active(key: ApiKey) -> None:
    if key.status != "active":
        raise Conflict(f"The API key is {key.status}; it can no longer be changed.",
                       code="api_key_revoked")


def update_api_key(request, key_id: int, data: dict) -> ApiKey:
    key = get_api_key(request, key_id, for_update=True)
    _require_active(key)
    if "scopes" in data:
        data["scopes"] = check_scopes(request, data["scopes"])
    if "expires_at" in data:
        data["expires_at"] = check_expiry(data["expires_at"])
    if "allowed_ips" in data:
        data["allowed_ips"] = check_ip_ranges(data["allowed_ips"] or [])
    if "integration_id" in data:
        data["integration_id"] = check_integration(request, request.partner,
                                                   data["integration_id"])
    changed = sorted(name for name, value in data.items() if getattr(key, name) != value)
    details = {"key_prefix": key.key_prefix, "fields": changed}
    if "integration_id" in changed:
        details["integration_id"] = {"old": _integration_ref(key.integration_id),
                                     "new": _integration_ref(data["integration_id"])}
    for name in changed:
        setattr(key, name, data[name])
    if changed:
        key.updated_at = utcnow()
        forget_cached(request, key)
        audit.record(request, "api_key.updated", partner_id=key.partner_id,
                     target_type="api_key", target_id=f"key_{key.id}", details=details)
        log.info("api key updated", extra={"partner_id": key.partner_id, "key_id": key.id,
                                            "fields": changed, "user_id": request.user.id})
    return key


def revoke_api_key(request, key_id: int) -> ApiKey:
    """Revoke a key and any previous secret still in its grace period; idempotent."""
    key = get_api_key(request, key_id, for_update=True)
    if key.status != "revoked":
        now = utcnow()
        key.status = "revoked"
        key.revoked_at = now
        key.updated_at = now
        if key.previous_key_hash is not None:
            key.previous_key_expires_at = now
        forget_cached(request, key)
        audit.record(request, "api_key.revoked", partner_id=key.partner_id,
                     target_type="api_key", target_id=f"key_{key.id}",
                     details={"key_prefix": key.key_prefix})
        log.info("api key revoked", extra={"partner_id": key.partner_id, "key_id": key.id,
                                            "user_id": request.user.id})
    return key


def rotate_api_key(request, key_id: int, grace_seconds: int) -> tuple[ApiKey, str]:
    """Give the key a new secret; the current one keeps working for ``grace_seconds``.

    A previous secret still in its grace period from an earlier rotation stops
    now, so at most two secrets work at any time.
    """
    key = get_api_key(request, key_id, for_update=True)
    _require_active(key)
    now = utcnow()
    secret, prefix = generate_key(key.livemode)
    # The replaced secret is remembered even with no grace period, so a call
    # with it gets the error api_key_rotated rather than invalid_api_key.
    key.previous_key_hash = key.key_hash
    key.previous_key_prefix = key.key_prefix
    key.previous_key_expires_at = now + dt.timedelta(seconds=grace_seconds)
    key.key_hash = request.registry["key_hasher"].hash(secret)
    key.key_prefix = prefix
    key.updated_at = now
    forget_cached(request, key)
    audit.record(request, "api_key.rotated", partner_id=key.partner_id, target_type="api_key",
                 target_id=f"key_{key.id}", details={
                     "key_prefix": prefix, "previous_key_prefix": key.previous_key_prefix,
                     "grace_period_seconds": grace_seconds})
    log.info("api key rotated", extra={"partner_id": key.partner_id, "key_id": key.id,
                                        "grace_seconds": grace_seconds,
                                        "user_id": request.user.id})
    return key, secret


def key_state(key: ApiKey) -> str:
    """active, revoked or expired, as the gateway would judge the key now."""
    if key.status != "active":
        return key.status
    if key.expires_at is not None and key.expires_at <= utcnow():
        return "expired"
    return "active"


def test_api_key(request, key_id: int, secret: str | None) -> dict:
    """Report whether a secret authenticates this key, and the key's scopes and quota."""
    key = get_api_key(request, key_id)
    result = {"id": key.id, "state": key_state(key), "scopes": list(key.scopes or []),
              "mode": key.mode, "secret_matches": None}
    if secret is not None:
        digest = request.registry["key_hasher"].hash(secret).encode()
        previous = (key.previous_key_hash or "").encode()
        in_grace = (hmac.compare_digest(previous, digest)
                    and key.previous_key_expires_at is not None
                    and key.previous_key_expires_at > utcnow())
        result["secret_matches"] = hmac.compare_digest(key.key_hash.encode(), digest) or in_grace

    plan = request.partner.plan or _default_plan(request)
    # The limits the gateway applies: an admin's overrides replace the plan's.
    plan = policy.with_overrides(plan, request.partner.rate_limit_overrides)
    windows = []
    limiter = request.registry["rate_limiter"]
    for check in policy.limit_checks(key, plan):
        try:
            decision = limiter.peek([check])
            remaining, reset_at = max(decision.remaining, 0), decision.reset_at
        except RateLimiterUnavailable:
            remaining, reset_at = None, None
        windows.append({"window": _window_name(check.subject), "limit": check.limit,
                        "window_seconds": check.window_seconds, "remaining": remaining,
                        "reset_at": reset_at})
    result["rate_limits"] = windows
    result["plan"] = plan.code if plan else None
    return result


def _window_name(subject: str) -> str:
    """``key`` for the key's own window; ``hour`` or ``day`` for the plan's shared ones."""
    parts = subject.split(":")
    return "key" if parts[0] == "key" else ":".join(parts[3:]) or subject


def _default_plan(request):
    from fkod.core.gateway import default_plan

    return default_plan(request)


def scope_listing(request, key: ApiKey) -> list[dict]:
    granted = set(key.scopes or [])
    return [
        {"name": scope.name, "description": scope.description, "granted": scope.name in granted}
        for scope in request.registry["scope_catalog"].grantable()
    ]
