"""Which rate-limit windows apply to a gateway call, and the headers that report them.

A plan's hourly and daily windows are shared by every key of a partner in one
mode (live or test counted apart); a key's own ``rate_limit`` and
``rate_limit_window`` add one more window for that key alone. All windows are
checked at once and a rejected call counts in none of them.
"""

from __future__ import annotations

import logging

from fkod.core.errors import RateLimited, ServiceUnavailable
from fkod.core.ratelimit.base import LimitCheck, RateLimitDecision, RateLimiterUnavailable

log = logging.getLogger(__name__)

HOUR_SECONDS = 3600
DAY_SECONDS = 86400


def limit_checks(key, plan) -> list[LimitCheck]:
    """The windows one call with ``key`` counts in; an unlimited plan and no override mean none."""
    mode = "live" if key.livemode else "test"
    subject = f"partner:{key.partner_id}:{mode}"
    checks = []
    if plan is not None and plan.requests_per_hour:
        checks.append(LimitCheck(f"{subject}:hour", plan.requests_per_hour, HOUR_SECONDS))
    if plan is not None and plan.requests_per_day:
        checks.append(LimitCheck(f"{subject}:day", plan.requests_per_day, DAY_SECONDS))
    if key.rate_limit is not None:
        window = key.rate_limit_window or HOUR_SECONDS
        checks.append(LimitCheck(f"key:{key.id}", key.rate_limit, window))
    return checks


def enforce(request, key, plan) -> RateLimitDecision | None:
    """Count the call in every window that applies; raise RateLimited when one is full.

    Returns the decision whose numbers fill the response headers, or None when
    no window applies or the limiter is down and ``fkod.ratelimit.fail_open``
    admits the call.
    """
    checks = limit_checks(key, plan)
    if not checks:
        return None
    try:
        decision = request.registry["rate_limiter"].hit(checks)
    except RateLimiterUnavailable:
        if request.registry.settings["fkod.ratelimit.fail_open"]:
            log.warning("rate limiter unavailable; admitting the request (fail open)")
            return None
        raise ServiceUnavailable("Rate limiting is unavailable; retry the request later.",
                                 code="rate_limiter_unavailable") from None
    request.environ["fkod.ratelimit"] = decision
    if not decision.allowed:
        raise RateLimited(
            f"Rate limit of {decision.limit} requests exceeded; retry in "
            f"{decision.retry_after} seconds.",
            retry_after=decision.retry_after,
        )
    return decision


def response_headers(decision: RateLimitDecision | None) -> dict[str, str]:
    """The X-RateLimit-* headers of a response (none for an unlimited caller)."""
    if decision is None or decision.unlimited:
        return {}
    return {
        "X-RateLimit-Limit": str(decision.limit),
        "X-RateLimit-Remaining": str(max(decision.remaining, 0)),
        "X-RateLimit-Reset": str(decision.reset_at),
    }
