"""Which rate-limit windows apply to a gateway call, and the headers that report them.

A plan's hourly and daily windows are shared by every key of a partner in one
mode (live or test counted apart). An admin's ``Partner.rate_limit_overrides``
replace the plan's hourly or daily limit for that partner. An active boost
raises both plan limits by its extra amounts. Each route named in
``fkod.ratelimit.endpoint_limits`` adds a window of its own for the partner
and mode, and a key's own ``rate_limit`` and ``rate_limit_window`` add one
more window for that key alone. All windows
are checked at once and a rejected call counts in none of them.

OAuth access tokens count in the same plan and endpoint windows as the
partner's keys. A token that acts for a user adds one hourly window for that
user in that application, so that one user cannot spend the partner's whole
plan: 10% of the plan's hourly limit (with the boost), at least 100 calls,
and 3600 calls when the plan has no hourly limit. A client-credentials token
acts for the partner itself and adds no window of its own.

Counters are keyed by partner and mode, never by plan, so after a plan change
the calls already counted stay counted and the new limits apply at once to the
same windows. docs/rate-limits.md describes upgrades, downgrades and resets.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping

import sqlalchemy as sa
from pyramid.events import ApplicationCreated

from fkod.core.auth.keycache import PlanSnapshot
from fkod.core.auth.models import Partner
from fkod.core.billing.models import RateLimitBoost
from fkod.core.db import utcnow
from fkod.core.errors import RateLimited, ServiceUnavailable
from fkod.core.ratelimit.base import (
    LimitCheck,
    RateLimitDecision,
    RateLimiter,
    RateLimiterUnavailable,
)
from fkod.core.settings import ConfigurationError

log = logging.getLogger(__name__)

HOUR_SECONDS = 3600
DAY_SECONDS = 86400
MODES = ("live", "test")

ENDPOINT_LIMITS_SETTING = "fkod.ratelimit.endpoint_limits"
# Longest window an endpoint limit may declare, and its largest limit. Limits
# stay far below 2**53 so that the Redis script's double arithmetic is exact.
MAX_ENDPOINT_WINDOW_SECONDS = 31 * DAY_SECONDS
MAX_ENDPOINT_LIMIT = 1_000_000_000
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

# A process trusts its cached view of a partner's active boost this long, so a
# boost created or cancelled through another process applies within 1 s.
BOOST_CACHE_SECONDS = 1.0
MAX_CACHED_BOOSTS = 10_000
# Likewise for a partner's rate-limit overrides set by an admin.
OVERRIDE_CACHE_SECONDS = 1.0
# While the limiter stays unavailable, the outage warning repeats this often.
OUTAGE_LOG_INTERVAL_SECONDS = 60.0

REGISTRY_KEY = "rate_limit_policy"

# The hourly window of one user in one OAuth application: this percentage of
# the plan's hourly limit, at least OAUTH_USER_MINIMUM_PER_HOUR, and
# OAUTH_USER_UNLIMITED_PER_HOUR when the plan has no hourly limit.
OAUTH_USER_PERCENT_OF_PLAN = 10
OAUTH_USER_MINIMUM_PER_HOUR = 100
OAUTH_USER_UNLIMITED_PER_HOUR = 3600

_ENDPOINT_ENTRY = re.compile(
    r"(?P<method>[A-Za-z]+)\s+(?P<pattern>\S+)\s*=\s*(?P<limit>[0-9]+)\s*/\s*(?P<window>[0-9]+)"
)


# Endpoint limits --------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EndpointLimit:
    """At most ``limit`` calls per ``window_seconds`` to one route, per partner and mode."""

    method: str
    pattern: str
    limit: int
    window_seconds: int

    @property
    def route(self) -> str:
        """The route as the setting names it, such as ``POST /api/v1/users``."""
        return f"{self.method} {self.pattern}"


EndpointLimits = Mapping[tuple[str, str], EndpointLimit]


def parse_endpoint_limits(raw: str) -> dict[tuple[str, str], EndpointLimit]:
    """Parse ``fkod.ratelimit.endpoint_limits`` into limits keyed by ``(method, pattern)``.

    Entries are separated by semicolons or line breaks and read
    ``METHOD /route/pattern = requests/seconds``. Raises ConfigurationError
    naming the setting and the first invalid entry.
    """
    limits: dict[tuple[str, str], EndpointLimit] = {}
    for entry in raw.replace("\n", ";").split(";"):
        entry = entry.strip()
        if not entry:
            continue

        match = _ENDPOINT_ENTRY.fullmatch(entry)
        if match is None:
            raise _invalid_entry(entry, "expected 'METHOD /route/pattern = requests/seconds', "
                                        "for example 'POST /api/v1/users = 100/60'")
        method = match["method"].upper()
        pattern = match["pattern"]
        limit = int(match["limit"])
        window = int(match["window"])

        if method not in HTTP_METHODS:
            raise _invalid_entry(entry, f"unknown method {method}; expected one of "
                                        f"{', '.join(HTTP_METHODS)}")
        if not pattern.startswith("/"):
            raise _invalid_entry(entry, "the route pattern must start with /")
        if not 1 <= limit <= MAX_ENDPOINT_LIMIT:
            raise _invalid_entry(entry, f"the request count must be from 1 to "
                                        f"{MAX_ENDPOINT_LIMIT}")
        if not 1 <= window <= MAX_ENDPOINT_WINDOW_SECONDS:
            raise _invalid_entry(entry, f"the window must be from 1 to "
                                        f"{MAX_ENDPOINT_WINDOW_SECONDS} seconds")
        if (method, pattern) in limits:
            raise _invalid_entry(entry, f"{method} {pattern} is limited twice")

        limits[(method, pattern)] = EndpointLimit(method, pattern, limit, window)
    return limits


def _invalid_entry(entry: str, problem: str) -> ConfigurationError:
    return ConfigurationError(
        f"invalid setting {ENDPOINT_LIMITS_SETTING}: entry {entry!r} is invalid, {problem}"
    )


def endpoint_limit_for(
    endpoint_limits: EndpointLimits, method: str | None, pattern: str | None
) -> EndpointLimit | None:
    """Return the endpoint limit of a route, or None. HEAD falls back to the GET entry."""
    if not endpoint_limits or method is None or pattern is None:
        return None
    found = endpoint_limits.get((method, pattern))
    if found is None and method == "HEAD":
        found = endpoint_limits.get(("GET", pattern))
    return found


# Which windows apply ----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ActiveBoost:
    """The extra requests of a partner's active boost in one mode."""

    id: int
    extra_requests_per_hour: int
    extra_requests_per_day: int | None
    ends_at: object  # naive UTC datetime, as the column stores it


def partner_subject(partner_id: int, mode: str) -> str:
    """Return the prefix of every counter subject of a partner in one mode."""
    return f"partner:{partner_id}:{mode}"


def plan_is_limited(plan) -> bool:
    """Return True when the plan has an hourly or a daily limit."""
    return plan is not None and bool(plan.requests_per_hour or plan.requests_per_day)


def limit_checks(
    key,
    plan,
    *,
    method: str | None = None,
    route_pattern: str | None = None,
    endpoint_limits: EndpointLimits | None = None,
    boost: ActiveBoost | None = None,
) -> list[LimitCheck]:
    """Return the windows one call with ``key`` counts in.

    ``key`` is an API key snapshot, or a caller with ``partner_id``,
    ``livemode``, ``oauth_client_id`` and ``user_id`` for an OAuth access
    token. ``method`` and ``route_pattern`` select the endpoint limit, if any.
    ``boost`` raises the plan's limited windows. An unlimited plan, no
    endpoint limit and no key override mean no window at all.
    """
    mode = "live" if key.livemode else "test"
    plan_windows = plan_checks(key.partner_id, mode, plan, boost)
    checks = [check for _name, check in plan_windows]

    endpoint = endpoint_limit_for(endpoint_limits or {}, method, route_pattern)
    if endpoint is not None:
        checks.append(endpoint_check(key.partner_id, mode, endpoint))

    if getattr(key, "oauth_client_id", None) is not None:
        if key.user_id is not None:
            hourly = dict(plan_windows).get("hour")
            checks.append(oauth_user_check(key.oauth_client_id, key.user_id,
                                           hourly.limit if hourly is not None else None))
    elif key.rate_limit is not None:
        window = key.rate_limit_window or HOUR_SECONDS
        checks.append(LimitCheck(f"key:{key.id}", key.rate_limit, window))
    return checks


def oauth_user_check(oauth_client_id: int, user_id: int, plan_hourly: int | None) -> LimitCheck:
    """Return the hourly window of one user in one OAuth application.

    ``plan_hourly`` is the partner's hourly limit with its boost, or None
    when the plan has no hourly limit.
    """
    if plan_hourly:
        limit = max(OAUTH_USER_MINIMUM_PER_HOUR, plan_hourly * OAUTH_USER_PERCENT_OF_PLAN // 100)
    else:
        limit = OAUTH_USER_UNLIMITED_PER_HOUR
    return LimitCheck(f"oauth:{oauth_client_id}:user:{user_id}", limit, HOUR_SECONDS)


def plan_checks(
    partner_id: int, mode: str, plan, boost: ActiveBoost | None = None
) -> list[tuple[str, LimitCheck]]:
    """Return the plan's windows of a partner in one mode, named ``hour`` and ``day``.

    A window the plan leaves unlimited (NULL or 0) is left out. ``boost``
    adds its extra requests to the limits.
    """
    subject = partner_subject(partner_id, mode)
    checks = []
    if plan is not None and plan.requests_per_hour:
        extra = boost.extra_requests_per_hour if boost is not None else 0
        checks.append(("hour", LimitCheck(f"{subject}:hour", plan.requests_per_hour + extra,
                                          HOUR_SECONDS)))
    if plan is not None and plan.requests_per_day:
        extra = (boost.extra_requests_per_day or 0) if boost is not None else 0
        checks.append(("day", LimitCheck(f"{subject}:day", plan.requests_per_day + extra,
                                         DAY_SECONDS)))
    return checks


def endpoint_check(partner_id: int, mode: str, endpoint: EndpointLimit) -> LimitCheck:
    """Return the window of one endpoint limit for a partner in one mode."""
    subject = f"{partner_subject(partner_id, mode)}:route:{endpoint.route}"
    return LimitCheck(subject, endpoint.limit, endpoint.window_seconds)


def partner_subjects(partner_id: int, endpoint_limits: Iterable[EndpointLimit] = ()) -> list[str]:
    """Return every counter subject of a partner in both modes: plan and endpoint windows."""
    endpoints = list(endpoint_limits)
    subjects = []
    for mode in MODES:
        subject = partner_subject(partner_id, mode)
        subjects.append(f"{subject}:hour")
        subjects.append(f"{subject}:day")
        subjects.extend(endpoint_check(partner_id, mode, endpoint).subject
                        for endpoint in endpoints)
    return subjects


def reset_partner_counters(
    limiter: RateLimiter, partner_id: int, *, endpoint_limits: Iterable[EndpointLimit] = ()
) -> list[str]:
    """Forget a partner's counted calls in both modes and return the subjects reset.

    The plan windows are always reset. Endpoint windows are reset for the
    limits passed in ``endpoint_limits``: pass
    ``policy_for(registry).endpoint_limits.values()`` to include every
    configured one. Key windows (``key:<id>``) belong to single keys and stay.
    Raises RateLimiterUnavailable when the store is unreachable, possibly after
    some subjects were already reset.
    """
    subjects = partner_subjects(partner_id, endpoint_limits)
    for subject in subjects:
        limiter.reset(subject)
    log.info("rate limit counters reset", extra={"partner_id": partner_id,
                                                 "subjects": len(subjects)})
    return subjects


# Active boosts ----------------------------------------------------------------


def active_boost_conditions(partner_id: int, livemode: bool) -> tuple:
    """Return the WHERE conditions that select a partner's boosts in force now, in one mode."""
    now = utcnow()
    return (RateLimitBoost.partner_id == partner_id,
            RateLimitBoost.ends_at > now,
            RateLimitBoost.starts_at <= now,
            RateLimitBoost.livemode.is_(livemode),
            RateLimitBoost.cancelled_at.is_(None))


def load_active_boost(session, partner_id: int, livemode: bool) -> ActiveBoost | None:
    """Return the partner's active boost in one mode, newest first, in one indexed query."""
    row = session.execute(
        sa.select(RateLimitBoost.id, RateLimitBoost.extra_requests_per_hour,
                  RateLimitBoost.extra_requests_per_day, RateLimitBoost.ends_at)
        .where(*active_boost_conditions(partner_id, livemode))
        .order_by(RateLimitBoost.id.desc())
        .limit(1)
    ).one_or_none()
    if row is None:
        return None
    return ActiveBoost(id=row.id, extra_requests_per_hour=row.extra_requests_per_hour,
                       extra_requests_per_day=row.extra_requests_per_day, ends_at=row.ends_at)


class ActiveBoostCache:
    """Per-process cache of each partner's active boost, trusted for ``ttl_seconds``.

    A cached boost whose ``ends_at`` has passed is never applied. ``forget``
    drops one entry, so the process that created or cancelled a boost sees
    the change at once. A ``ttl_seconds`` of 0 queries on every call.
    """

    def __init__(self, ttl_seconds: float = BOOST_CACHE_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl_seconds
        self._clock = clock
        self._entries: dict[tuple[int, bool], tuple[float, ActiveBoost | None]] = {}
        self._lock = threading.Lock()

    def get(self, session, partner_id: int, livemode: bool) -> ActiveBoost | None:
        """Return the active boost, querying the database when the cached entry is stale."""
        key = (partner_id, livemode)
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
        if entry is not None and entry[0] > now:
            return _still_active(entry[1])

        boost = load_active_boost(session, partner_id, livemode)
        if self._ttl > 0:
            with self._lock:
                if len(self._entries) >= MAX_CACHED_BOOSTS:
                    self._drop_expired(now)
                self._entries[key] = (now + self._ttl, boost)
        return boost

    def forget(self, partner_id: int, livemode: bool) -> None:
        with self._lock:
            self._entries.pop((partner_id, livemode), None)

    def _drop_expired(self, now: float) -> None:
        for key in [key for key, (expires, _) in self._entries.items() if expires <= now]:
            del self._entries[key]
        if len(self._entries) >= MAX_CACHED_BOOSTS:
            self._entries.clear()


def _still_active(boost: ActiveBoost | None) -> ActiveBoost | None:
    if boost is not None and boost.ends_at <= utcnow():
        return None
    return boost


# Admin overrides ----------------------------------------------------------------


def with_overrides(plan, overrides: Mapping | None):
    """Return ``plan`` with a partner's overrides in place of its hourly and daily limits.

    ``overrides`` is ``Partner.rate_limit_overrides``: ``{"hourly": n, "daily": n}``,
    where a missing or null window keeps the plan's limit. Returns ``plan``
    itself when nothing is overridden, otherwise a PlanSnapshot.
    """
    overrides = overrides or {}
    hourly = overrides.get("hourly")
    daily = overrides.get("daily")
    if hourly is None and daily is None:
        return plan
    if hourly is None:
        hourly = getattr(plan, "requests_per_hour", None)
    if daily is None:
        daily = getattr(plan, "requests_per_day", None)
    return PlanSnapshot(id=getattr(plan, "id", None), code=getattr(plan, "code", None),
                        requests_per_hour=hourly, requests_per_day=daily)


class OverrideCache:
    """Per-process cache of each partner's rate-limit overrides, trusted for ``ttl_seconds``.

    ``forget`` drops one entry, so the process that changed the overrides
    applies them at once; other processes do within ``ttl_seconds``.
    """

    def __init__(self, ttl_seconds: float = OVERRIDE_CACHE_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl_seconds
        self._clock = clock
        self._entries: dict[int, tuple[float, dict | None]] = {}
        self._lock = threading.Lock()

    def get(self, session, partner_id: int) -> dict | None:
        now = self._clock()
        with self._lock:
            entry = self._entries.get(partner_id)
        if entry is not None and entry[0] > now:
            return entry[1]

        overrides = session.scalar(
            sa.select(Partner.rate_limit_overrides).where(Partner.id == partner_id))
        if self._ttl > 0:
            with self._lock:
                if len(self._entries) >= MAX_CACHED_BOOSTS:
                    self._entries.clear()
                self._entries[partner_id] = (now + self._ttl, overrides)
        return overrides

    def forget(self, partner_id: int) -> None:
        with self._lock:
            self._entries.pop(partner_id, None)


# Outages ----------------------------------------------------------------------


class OutageLog:
    """Logs a limiter outage once, then a reminder at most every ``interval_seconds``.

    Every request that meets the outage calls :meth:`failed`, every checked
    request calls :meth:`recovered`, which logs once when an outage ends. The
    counts say how many requests were admitted unchecked or rejected.
    """

    def __init__(self, interval_seconds: float = OUTAGE_LOG_INTERVAL_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = interval_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._last_logged = 0.0
        self._affected = 0

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def failed(self, error: Exception, *, fail_open: bool) -> None:
        action = "admitting requests unchecked" if fail_open else "rejecting requests with 503"
        now = self._clock()
        with self._lock:
            if self._down_since is None:
                self._down_since = now
                self._last_logged = now
                self._affected = 1
                log.warning("rate limiter unavailable, %s until it recovers: %s", action, error)
                return
            self._affected += 1
            if now - self._last_logged < self._interval:
                return
            self._last_logged = now
            log.warning("rate limiter still unavailable after %.0f s, %d requests affected so "
                        "far, %s: %s", now - self._down_since, self._affected, action, error)

    def recovered(self) -> None:
        if self._down_since is None:
            return
        with self._lock:
            if self._down_since is None:
                return
            duration = self._clock() - self._down_since
            affected = self._affected
            self._down_since = None
            self._affected = 0
        log.warning("rate limiter recovered after %.1f s; %d requests met the outage",
                    duration, affected)


# The policy of one application ---------------------------------------------------


class RateLimitPolicy:
    """The parsed rate-limit settings of one application and its per-process state."""

    def __init__(self, *, endpoint_limits: EndpointLimits, fail_open: bool,
                 boosts: ActiveBoostCache | None = None,
                 outages: OutageLog | None = None,
                 overrides: OverrideCache | None = None) -> None:
        self.endpoint_limits = dict(endpoint_limits)
        self.fail_open = fail_open
        self.boosts = boosts or ActiveBoostCache()
        self.overrides = overrides or OverrideCache()
        self.outages = outages or OutageLog()

    @classmethod
    def from_settings(cls, settings: Mapping) -> RateLimitPolicy:
        """Build the policy from loaded settings; raises ConfigurationError for invalid ones."""
        return cls(
            endpoint_limits=parse_endpoint_limits(settings.get(ENDPOINT_LIMITS_SETTING) or ""),
            fail_open=bool(settings.get("fkod.ratelimit.fail_open", True)),
        )


_policy_lock = threading.Lock()


def policy_for(registry) -> RateLimitPolicy:
    """Return the application's policy, building it from the settings on first use."""
    policy = registry.get(REGISTRY_KEY)
    if policy is not None:
        return policy
    with _policy_lock:
        policy = registry.get(REGISTRY_KEY)
        if policy is None:
            policy = RateLimitPolicy.from_settings(registry.settings)
            registry[REGISTRY_KEY] = policy
    return policy


def enforce(request, key, plan) -> RateLimitDecision | None:
    """Count the call in every window that applies; raise RateLimited when one is full.

    Returns the decision whose numbers fill the response headers, or None when
    no window applies or the limiter is down and ``fkod.ratelimit.fail_open``
    admits the call. When it is down and fail_open is false, raises
    ServiceUnavailable (503 with Retry-After).
    """
    policy = policy_for(request.registry)
    plan = with_overrides(plan, policy.overrides.get(request.dbsession, key.partner_id))
    boost = None
    if plan_is_limited(plan):
        boost = policy.boosts.get(request.dbsession, key.partner_id, key.livemode)
    route = request.matched_route
    checks = limit_checks(
        key, plan, method=request.method, route_pattern=route.pattern if route else None,
        endpoint_limits=policy.endpoint_limits, boost=boost,
    )
    if not checks:
        return None

    try:
        decision = request.registry["rate_limiter"].hit(checks)
    except RateLimiterUnavailable as error:
        policy.outages.failed(error, fail_open=policy.fail_open)
        if policy.fail_open:
            return None
        raise ServiceUnavailable("Rate limiting is unavailable; retry the request later.",
                                 code="rate_limiter_unavailable") from None
    policy.outages.recovered()

    request.environ["fkod.ratelimit"] = decision
    _alert_quota(request, key, checks, decision)
    if not decision.allowed:
        from fkod.core import metrics

        metrics.count_rate_limited(request, key.livemode)
        raise RateLimited(
            f"Rate limit of {decision.limit} requests exceeded; retry in "
            f"{decision.retry_after} seconds.",
            retry_after=decision.retry_after,
        )
    return decision


def _alert_quota(request, key, checks, decision) -> None:
    """Hand the decision to the partner alerts, which act at 80% and 100% of a window."""
    alerts = request.registry.get("partner_alerts")
    if alerts is None:
        return
    try:
        alerts.observe_quota(key, checks, decision)
    except Exception:
        log.warning("quota alert check failed", exc_info=True)


def response_headers(
    decision: RateLimitDecision | None, now: float | None = None
) -> dict[str, str]:
    """Return the rate-limit headers of a response, none for an unlimited caller.

    ``X-RateLimit-Reset`` is a Unix time in seconds. ``RateLimit-Reset`` is
    the delta in seconds from ``now`` (default: this process's clock) to that
    time, as the IETF draft draft-ietf-httpapi-ratelimit-headers (up to -06)
    defines it. A rejected decision adds ``Retry-After`` and
    ``X-RateLimit-Retry-After`` in seconds.
    """
    if decision is None or decision.unlimited:
        return {}
    now = time.time() if now is None else now
    remaining = str(max(decision.remaining, 0))
    headers = {
        "X-RateLimit-Limit": str(decision.limit),
        "X-RateLimit-Remaining": remaining,
        "X-RateLimit-Reset": str(decision.reset_at),
        "RateLimit-Limit": str(decision.limit),
        "RateLimit-Remaining": remaining,
        "RateLimit-Reset": str(max(0, math.ceil(decision.reset_at - now))),
    }
    if not decision.allowed and decision.retry_after is not None:
        headers["Retry-After"] = str(decision.retry_after)
        headers["X-RateLimit-Retry-After"] = str(decision.retry_after)
    return headers


# Start-up ---------------------------------------------------------------------


def includeme(config) -> None:
    """Parse the rate-limit settings at start-up and store the policy in the registry.

    An invalid ``fkod.ratelimit.endpoint_limits`` raises ConfigurationError
    here, so the application does not start. Endpoint limits naming no route
    are logged as warnings once the application is created.
    """
    settings = config.get_settings()
    policy = RateLimitPolicy.from_settings(settings)
    config.registry[REGISTRY_KEY] = policy

    def warn_unknown_routes(event):
        from pyramid.interfaces import IRoutesMapper

        mapper = event.app.registry.queryUtility(IRoutesMapper)
        known = {route.pattern for route in mapper.get_routes()} if mapper else set()
        for endpoint in policy.endpoint_limits.values():
            if endpoint.pattern not in known:
                log.warning("%s names %s, which matches no route; check the pattern",
                            ENDPOINT_LIMITS_SETTING, endpoint.route)

    # Plugins add their routes late, so the check waits until the app exists.
    config.add_subscriber(warn_unknown_routes, ApplicationCreated)

