"""The developer dashboard: the caller's profile, rate-limit windows and failed calls.

The platform status is in :mod:`fkod.developers.status`, the SDK list and
archives in :mod:`fkod.developers.sdks` and the sandbox reset in
:mod:`fkod.developers.sandbox`.
"""

from __future__ import annotations

import datetime as dt
import logging

import sqlalchemy as sa

from fkod.core.auth.models import ApiKey, Partner
from fkod.core.auth.oauth_models import OAuthClient
from fkod.core.auth.roles import ROLE_PERMISSIONS
from fkod.core.db import utcnow
from fkod.core.errors import NotFound, ServiceUnavailable
from fkod.core.metering.models import ApiUsage
from fkod.core.metering.report import ERROR_STATUS, errors_query
from fkod.core.ratelimit import LimitCheck, RateLimiterUnavailable
from fkod.core.ratelimit.policy import (
    HOUR_SECONDS,
    MODES,
    endpoint_check,
    plan_checks,
    policy_for,
    with_overrides,
)
from fkod.core.webhooks.models import Webhook
from fkod.developers.schemas import encode_time_cursor
from fkod.partners.limits import active_boost, partner_plan

log = logging.getLogger(__name__)

PLAN_WINDOWS = (("hour", HOUR_SECONDS), ("day", 24 * HOUR_SECONDS))


# The caller's profile -----------------------------------------------------------


def active_keys_condition(now: dt.datetime):
    """Select keys the gateway accepts now: active status and not expired."""
    return sa.and_(ApiKey.status == "active",
                   sa.or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now))


def _counts_by_mode(session, column_livemode, *conditions) -> dict[str, int]:
    rows = session.execute(
        sa.select(column_livemode, sa.func.count()).where(*conditions).group_by(column_livemode))
    counts = {"live": 0, "test": 0}
    for livemode, count in rows:
        counts["live" if livemode else "test"] = int(count)
    return counts


def live_mode_blockers(partner: Partner, user) -> list[str]:
    """Return why live mode is unavailable: ``email_not_verified``, ``partner_not_verified``."""
    reasons = []
    if user.email_verified_at is None:
        reasons.append("email_not_verified")
    if partner.verification_status != "verified":
        reasons.append("partner_not_verified")
    return reasons


def describe_me(request) -> dict:
    """Return the caller's profile, partner, role, permissions and resource counts per mode."""
    session = request.dbsession
    partner = request.partner
    user = request.user
    role = request.principal.role
    now = utcnow()
    plan = partner_plan(request, partner)
    blockers = live_mode_blockers(partner, user)
    return {
        "user_id": user.id,
        "email": user.email,
        "name": user.name,
        "partner": {
            "id": partner.id,
            "company_name": partner.company_name,
            "verification_status": partner.verification_status,
            "plan": plan,
        },
        "role": role,
        "permissions": sorted(ROLE_PERMISSIONS.get(role, ())),
        "live_mode": {"available": not blockers, "blocked_by": blockers},
        "api_keys": _counts_by_mode(session, ApiKey.livemode, ApiKey.partner_id == partner.id,
                                    active_keys_condition(now)),
        "oauth_applications": _counts_by_mode(session, OAuthClient.livemode,
                                              OAuthClient.partner_id == partner.id,
                                              OAuthClient.status == "active"),
        "webhook_endpoints": _counts_by_mode(session, Webhook.livemode,
                                             Webhook.partner_id == partner.id,
                                             Webhook.status == "active"),
    }


# Rate-limit windows -------------------------------------------------------------


def _reset_time(reset_at: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(reset_at, dt.UTC).replace(tzinfo=None)


def _peek(limiter, check: LimitCheck) -> dict:
    """Read one window without counting a request; 503 when the limiter is unreachable."""
    try:
        decision = limiter.peek([check])
    except RateLimiterUnavailable:
        raise ServiceUnavailable("Rate limiting is unavailable, so the remaining requests "
                                 "cannot be read; retry the request later.",
                                 code="rate_limiter_unavailable") from None
    return {"limit": check.limit, "remaining": decision.remaining,
            "reset_at": _reset_time(decision.reset_at)}


def _unlimited_window(kind: str, name: str, window_seconds: int) -> dict:
    return {"kind": kind, "name": name, "window_seconds": window_seconds, "unlimited": True,
            "limit": None, "remaining": None, "reset_at": None}


def _window(limiter, kind: str, name: str, check: LimitCheck) -> dict:
    return {"kind": kind, "name": name, "window_seconds": check.window_seconds,
            "unlimited": False, **_peek(limiter, check)}


def _mode_windows(limiter, policy, partner_id: int, mode: str, plan, boost) -> list[dict]:
    """Return the plan's hour and day windows of one mode and its endpoint windows."""
    checks = dict(plan_checks(partner_id, mode, plan, boost))
    windows = []
    for name, seconds in PLAN_WINDOWS:
        check = checks.get(name)
        windows.append(_window(limiter, "plan", name, check) if check is not None
                       else _unlimited_window("plan", name, seconds))
    for endpoint in policy.endpoint_limits.values():
        windows.append(_window(limiter, "endpoint", endpoint.route,
                               endpoint_check(partner_id, mode, endpoint)))
    return windows


def describe_limits(request) -> dict:
    """Return the partner's windows per mode and each active key's own window.

    Every number comes from the limiter's ``peek``, so reading the limits
    never counts a request. Plan windows are shared by all keys of a mode; a
    key's ``rate_limit`` adds a window for that key alone, reported with the
    key. Raises 503 ``rate_limiter_unavailable`` when the limiter is unreachable.
    """
    session = request.dbsession
    partner = request.partner
    plan = partner_plan(request, partner)
    limited_plan = with_overrides(plan, partner.rate_limit_overrides)
    policy = policy_for(request.registry)
    limiter = request.registry["rate_limiter"]

    modes = []
    for mode in MODES:
        boost = active_boost(session, partner.id, mode == "live")
        modes.append({"mode": mode, "boost": boost,
                      "windows": _mode_windows(limiter, policy, partner.id, mode,
                                               limited_plan, boost)})

    keys = session.scalars(
        sa.select(ApiKey).where(ApiKey.partner_id == partner.id, active_keys_condition(utcnow()))
        .order_by(ApiKey.id)).all()
    described_keys = []
    for key in keys:
        key_window = None
        if key.rate_limit is not None:
            check = LimitCheck(f"key:{key.id}", key.rate_limit,
                               key.rate_limit_window or HOUR_SECONDS)
            key_window = _window(limiter, "key", "key", check)
        described_keys.append({"id": key.id, "key_prefix": key.key_prefix, "mode": key.mode,
                               "key_name": key.key_name, "window": key_window})
    return {"plan": plan, "modes": modes, "api_keys": described_keys}


# Failed calls -------------------------------------------------------------------


def failed_calls_query(partner_id: int, filters: dict):
    """Select the partner's calls with a status of 400 or more, as ApiUsage rows.

    ``filters`` contains the loaded query: ``status`` (a code, or a class
    ``(low, high)``), ``key_prefix``, ``endpoint``, ``since`` and ``until``.
    """
    query = errors_query(sa.select(ApiUsage), partner_id=partner_id)
    status = filters.get("status")
    if isinstance(status, tuple):
        query = query.where(ApiUsage.status_code >= status[0], ApiUsage.status_code < status[1])
    elif status is not None:
        query = query.where(ApiUsage.status_code == status)
    if filters.get("key_prefix") is not None:
        query = query.where(ApiUsage.api_key_id.in_(
            sa.select(ApiKey.id).where(ApiKey.partner_id == partner_id,
                                       sa.or_(ApiKey.key_prefix == filters["key_prefix"],
                                              ApiKey.previous_key_prefix
                                              == filters["key_prefix"]))))
    if filters.get("endpoint") is not None:
        query = query.where(ApiUsage.endpoint == filters["endpoint"])
    if filters.get("since") is not None:
        query = query.where(ApiUsage.created_at >= filters["since"])
    if filters.get("until") is not None:
        query = query.where(ApiUsage.created_at < filters["until"])
    return query


def page_of_failed_calls(session, query, page_query: dict) -> tuple[list, str | None]:
    """Return one page of ``query`` newest first by call time, and the next cursor or None.

    Usage rows can be stored out of time order (the Redis stream is drained
    in batches), so pages are keyed on (created_at, id) rather than on the id.
    """
    limit = page_query["limit"]
    cursor = page_query.get("cursor")
    if cursor is not None:
        moment, row_id = cursor
        query = query.where(sa.or_(ApiUsage.created_at < moment,
                                   sa.and_(ApiUsage.created_at == moment, ApiUsage.id < row_id)))
    rows = session.scalars(query.order_by(ApiUsage.created_at.desc(), ApiUsage.id.desc())
                           .limit(limit + 1)).all()
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, encode_time_cursor(rows[-1].created_at, rows[-1].id)


def describe_failed_calls(session, rows) -> list[dict]:
    """Add each call's key prefix to its usage row."""
    key_ids = {row.api_key_id for row in rows if row.api_key_id is not None}
    prefixes = dict(session.execute(
        sa.select(ApiKey.id, ApiKey.key_prefix).where(ApiKey.id.in_(key_ids))).all()) \
        if key_ids else {}
    return [{
        "request_id": row.request_id,
        "key_prefix": prefixes.get(row.api_key_id),
        "oauth_client_id": row.oauth_client_id,
        "mode": "live" if row.livemode else "test",
        "method": row.method,
        "endpoint": row.endpoint,
        "status": row.status_code,
        "error_message": row.error_message,
        "created_at": row.created_at,
    } for row in rows]


def get_failed_call(request, request_id: str) -> dict:
    """Return one of the partner's failed calls by request id; 404 for anything else."""
    session = request.dbsession
    row = session.scalars(
        failed_calls_query(request.partner.id, {})
        .where(ApiUsage.request_id == request_id)
        .order_by(ApiUsage.id.desc()).limit(1)).first()
    if row is None:
        raise NotFound(f"No failed call with request id {request_id!r}. Calls that succeeded "
                       "and calls of other partners are not listed here.")
    return describe_failed_calls(session, [row])[0]


__all__ = ["ERROR_STATUS", "describe_failed_calls", "describe_limits", "describe_me",
           "failed_calls_query", "get_failed_call", "live_mode_blockers",
           "page_of_failed_calls"]
