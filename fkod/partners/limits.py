"""Rate-limit boosts that partners request, and the report of their current windows.

A boost raises a partner's plan windows in one mode for 1 to 72 hours: the
hourly limit by ``extra_requests_per_hour`` and the daily limit by
``extra_requests_per_day`` (unchanged when omitted). Each extra is at most the
plan's own limit for that window. A partner has at most one active boost per
mode. The gateway reads active boosts through
:class:`fkod.core.ratelimit.policy.ActiveBoostCache`. The rows stay after a
boost ends or is cancelled, because billing charges them as overage.
"""

from __future__ import annotations

import datetime as dt
import logging

import sqlalchemy as sa

from fkod.core import audit
from fkod.core.auth.models import ApiKey, Partner
from fkod.core.billing.models import Plan, RateLimitBoost
from fkod.core.db import utcnow
from fkod.core.errors import Conflict, NotFound, ServiceUnavailable, ValidationFailed, field_error
from fkod.core.gateway import default_plan
from fkod.core.ratelimit import RateLimiterUnavailable
from fkod.core.ratelimit.policy import (
    MODES,
    active_boost_conditions,
    endpoint_check,
    plan_checks,
    plan_is_limited,
    policy_for,
    with_overrides,
)
from fkod.partners.services import require_live_mode_allowed

log = logging.getLogger(__name__)

MAX_BOOST_HOURS = 72


def boost_status(boost: RateLimitBoost, now: dt.datetime | None = None) -> str:
    """Return ``active``, ``scheduled``, ``expired`` or ``cancelled``."""
    now = now or utcnow()
    if boost.cancelled_at is not None:
        return "cancelled"
    if boost.ends_at <= now:
        return "expired"
    if boost.starts_at > now:
        return "scheduled"
    return "active"


def forget_partner_keys(request, partner_id: int) -> None:
    """Drop the partner's keys from this process's key cache, now and after the commit.

    Other processes see the change when their entries expire, within
    ``fkod.gateway.key_cache_seconds``.
    """
    cache = request.registry["key_cache"]
    key_ids = request.dbsession.scalars(
        sa.select(ApiKey.id).where(ApiKey.partner_id == partner_id)).all()

    def forget(_committed=None):
        for key_id in key_ids:
            cache.invalidate_key(key_id)

    forget()
    request.tm.get().addAfterCommitHook(forget)


def refresh_partner_limits(request, partner_id: int) -> None:
    """Make a change of the partner's plan or overrides apply at once in this process.

    Other processes apply it when their cached keys and overrides expire,
    within a second or two.
    """
    forget_partner_keys(request, partner_id)
    overrides = policy_for(request.registry).overrides
    overrides.forget(partner_id)
    request.tm.get().addAfterCommitHook(lambda _committed: overrides.forget(partner_id))


def partner_plan(request, partner: Partner) -> Plan | None:
    """Return the plan whose limits the gateway applies to the partner, or None."""
    plan = request.dbsession.get(Plan, partner.plan_id) if partner.plan_id else None
    return plan if plan is not None else default_plan(request)


def active_boost(session, partner_id: int, livemode: bool) -> RateLimitBoost | None:
    """Return the partner's active boost in one mode, or None."""
    return session.scalars(
        sa.select(RateLimitBoost)
        .where(*active_boost_conditions(partner_id, livemode))
        .order_by(RateLimitBoost.id.desc())
        .limit(1)
    ).first()


def boosts_query(partner: Partner):
    return sa.select(RateLimitBoost).where(RateLimitBoost.partner_id == partner.id)


def create_boost(request, partner: Partner, data: dict) -> RateLimitBoost:
    """Create an active boost for the partner in ``data["mode"]``.

    Raises 403 for live mode before verification, 409 ``plan_unlimited`` when
    the plan has no limit to raise, 400 ``boost_above_plan_limit`` when an
    extra exceeds the plan's own limit, and 409 ``boost_active`` when the
    partner already has an active boost in that mode.
    """
    mode = data["mode"]
    livemode = mode == "live"
    require_live_mode_allowed(partner, mode, "boosts", request.user)

    plan = partner_plan(request, partner)
    if not plan_is_limited(plan):
        raise Conflict("The partner's plan has no rate limits, so a boost would change nothing.",
                       code="plan_unlimited")
    _check_extra(data, "extra_requests_per_hour", plan.requests_per_hour, "hourly")
    _check_extra(data, "extra_requests_per_day", plan.requests_per_day, "daily")

    session = request.dbsession
    # Locking the partner row makes a concurrent request wait here on
    # PostgreSQL, so two requests cannot both pass the check below. SQLite
    # takes its write lock at BEGIN IMMEDIATE and needs no row lock.
    session.execute(sa.select(Partner.id).where(Partner.id == partner.id).with_for_update())
    existing = active_boost(session, partner.id, livemode)
    if existing is not None:
        raise Conflict(
            f"Boost boost_{existing.id} is already active in {mode} mode until "
            f"{existing.ends_at.isoformat(timespec='seconds')}Z; cancel it before "
            "requesting another.",
            code="boost_active",
        )

    now = utcnow()
    boost = RateLimitBoost(
        partner_id=partner.id,
        livemode=livemode,
        extra_requests_per_hour=data["extra_requests_per_hour"],
        extra_requests_per_day=data.get("extra_requests_per_day"),
        starts_at=now,
        ends_at=now + dt.timedelta(hours=data["duration_hours"]),
        reason=data.get("reason"),
        created_by_user_id=request.user.id,
        created_at=now,
    )
    session.add(boost)
    session.flush()

    audit.record(request, "rate_limit_boost.created", partner_id=partner.id,
                 target_type="rate_limit_boost", target_id=f"boost_{boost.id}", details={
                     "mode": mode, "extra_requests_per_hour": boost.extra_requests_per_hour,
                     "extra_requests_per_day": boost.extra_requests_per_day,
                     "duration_hours": data["duration_hours"],
                     "ends_at": boost.ends_at.isoformat(timespec="seconds") + "Z"})
    log.info("rate limit boost created", extra={
        "partner_id": partner.id, "user_id": request.user.id, "boost_id": boost.id,
        "mode": mode, "extra_requests_per_hour": boost.extra_requests_per_hour,
        "extra_requests_per_day": boost.extra_requests_per_day,
        "ends_at": boost.ends_at.isoformat(timespec="seconds"),
    })
    _forget_cached_boost(request, partner.id, livemode)
    return boost


def _check_extra(data: dict, name: str, plan_limit: int | None, label: str) -> None:
    extra = data.get(name)
    if extra is None:
        return
    if not plan_limit:
        message = f"The plan has no {label} limit, so {name} has nothing to raise; omit it."
        raise ValidationFailed(message, code="boost_above_plan_limit",
                               errors=[field_error("body", name, message)])
    if extra > plan_limit:
        message = f"{name} can be at most the plan's own {label} limit of {plan_limit}."
        raise ValidationFailed(message, code="boost_above_plan_limit",
                               errors=[field_error("body", name, f"at most {plan_limit}")])


def cancel_boost(request, partner: Partner, boost_id: int) -> RateLimitBoost:
    """Cancel the partner's boost at once; 404 for another partner's, 409 when not active."""
    session = request.dbsession
    boost = session.scalars(
        sa.select(RateLimitBoost)
        .where(RateLimitBoost.id == boost_id, RateLimitBoost.partner_id == partner.id)
        .with_for_update()
    ).first()
    if boost is None:
        raise NotFound(f"No rate limit boost with id boost_{boost_id}.")

    now = utcnow()
    status = boost_status(boost, now)
    if status in ("cancelled", "expired"):
        raise Conflict(f"Boost boost_{boost.id} is already {status}.", code="boost_not_active")

    boost.cancelled_at = now
    session.flush()
    audit.record(request, "rate_limit_boost.cancelled", partner_id=partner.id,
                 target_type="rate_limit_boost", target_id=f"boost_{boost.id}",
                 details={"mode": "live" if boost.livemode else "test"})
    log.info("rate limit boost cancelled", extra={
        "partner_id": partner.id, "user_id": request.user.id, "boost_id": boost.id,
        "mode": "live" if boost.livemode else "test",
    })
    _forget_cached_boost(request, partner.id, boost.livemode)
    return boost


def _forget_cached_boost(request, partner_id: int, livemode: bool) -> None:
    # After the response the transaction has committed, so a gateway request
    # that loads the boost afterwards sees the new row.
    boosts = policy_for(request.registry).boosts
    request.add_finished_callback(lambda _request: boosts.forget(partner_id, livemode))


def current_limits(request, partner: Partner) -> dict:
    """Return the partner's plan and, per mode, its windows and any active boost.

    Each window reports its limit (boost included), the requests still free
    and when the oldest counted requests leave it. Endpoint windows of
    ``fkod.ratelimit.endpoint_limits`` are listed by route. Raises 503 when
    the rate limiter is unreachable.
    """
    plan = partner_plan(request, partner)
    # The windows use the limits the gateway applies: an admin's overrides replace the plan's.
    limited_plan = with_overrides(plan, partner.rate_limit_overrides)
    policy = policy_for(request.registry)
    limiter = request.registry["rate_limiter"]
    session = request.dbsession

    modes = []
    for mode in MODES:
        boost = active_boost(session, partner.id, mode == "live")
        named_checks = [("plan", name, check)
                        for name, check in plan_checks(partner.id, mode, limited_plan, boost)]
        named_checks += [("endpoint", endpoint.route, endpoint_check(partner.id, mode, endpoint))
                         for endpoint in policy.endpoint_limits.values()]

        windows = []
        for kind, name, check in named_checks:
            try:
                decision = limiter.peek([check])
            except RateLimiterUnavailable:
                raise ServiceUnavailable("Rate limiting is unavailable; retry the request later.",
                                         code="rate_limiter_unavailable") from None
            windows.append({
                "kind": kind,
                "name": name,
                "window_seconds": check.window_seconds,
                "limit": check.limit,
                "remaining": decision.remaining,
                "reset_at": dt.datetime.fromtimestamp(decision.reset_at, dt.UTC)
                .replace(tzinfo=None),
            })
        modes.append({"mode": mode, "boost": boost, "windows": windows})
    return {"plan": plan, "modes": modes}
