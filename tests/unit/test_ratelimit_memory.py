"""Tests of the in-process rate limiter and the gateway policy, driven by a fake clock."""

from __future__ import annotations

import dataclasses
import logging
import random

import pytest

from fkod.core.ratelimit import (
    UNLIMITED,
    LimitCheck,
    MemoryRateLimiter,
    RateLimitDecision,
    RateLimiter,
    RedisRateLimiter,
    make_rate_limiter,
)
from fkod.core.ratelimit.base import bucket_index, bucket_start_ms
from fkod.core.ratelimit.policy import (
    ActiveBoost,
    ActiveBoostCache,
    EndpointLimit,
    OutageLog,
    limit_checks,
    parse_endpoint_limits,
    partner_subjects,
    reset_partner_counters,
    response_headers,
)
from fkod.core.settings import ConfigurationError, load_settings
from tests.unit.ratelimit_contract import RateLimiterContract

# 2027-01-15T08:00:00Z, a whole second so that expected values are easy to state.
START = 1_800_000_000


class FakeClock:
    """Fake clock that moves only when a test calls advance(), in whole milliseconds."""

    def __init__(self, start_seconds: float = START) -> None:
        self.ms = round(start_seconds * 1000)

    def __call__(self) -> float:
        return self.ms / 1000

    def advance(self, seconds: float) -> None:
        self.ms += round(seconds * 1000)


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


class TestMemoryContract(RateLimiterContract):
    """The shared contract, run against MemoryRateLimiter with a fake clock."""

    @pytest.fixture
    def make_limiter(self, fake_clock):
        return lambda: MemoryRateLimiter(sub_buckets=self.sub_buckets, clock=fake_clock)

    @pytest.fixture
    def clock(self, fake_clock):
        return fake_clock

    @pytest.fixture
    def advance(self, fake_clock):
        return fake_clock.advance


class TestMemoryContractOneSubBucket(TestMemoryContract):
    """The contract with one sub-bucket per window, the coarsest setting."""

    sub_buckets = 1


def test_bucket_arithmetic_covers_each_millisecond_once():
    window, sub_buckets = 7, 60
    first = bucket_index(START * 1000, window, sub_buckets)

    for index in range(first, first + 200):
        start = bucket_start_ms(index, window, sub_buckets)
        assert bucket_index(start, window, sub_buckets) == index
        assert bucket_index(start - 1, window, sub_buckets) == index - 1


def test_window_slides_by_sub_bucket(fake_clock):
    limiter = MemoryRateLimiter(sub_buckets=60, clock=fake_clock)
    checks = [LimitCheck("s", 10, 60)]

    limiter.hit(checks, cost=4)
    fake_clock.advance(30)
    limiter.hit(checks, cost=6)
    assert limiter.hit(checks).allowed is False

    # The first 4 units leave 60 s after their sub-bucket started.
    fake_clock.advance(29.999)
    assert limiter.peek(checks).remaining == 0
    fake_clock.advance(0.001)
    assert limiter.peek(checks).remaining == 4

    fake_clock.advance(30)
    assert limiter.peek(checks).remaining == 10


def test_reset_at_is_expiry_of_oldest_sub_bucket(fake_clock):
    limiter = MemoryRateLimiter(sub_buckets=60, clock=fake_clock)
    checks = [LimitCheck("s", 10, 60)]

    fake_clock.advance(0.4)
    first = limiter.hit(checks)
    fake_clock.advance(20)
    second = limiter.hit(checks)

    assert first.reset_at == START + 60
    assert second.reset_at == START + 60


def test_reset_at_rounds_up_partial_second(fake_clock):
    limiter = MemoryRateLimiter(sub_buckets=60, clock=fake_clock)

    fake_clock.advance(0.25)
    empty = limiter.peek([LimitCheck("s", 10, 7)])
    counted = limiter.hit([LimitCheck("s", 10, 7)])

    assert empty.reset_at == START + 1
    # The sub-bucket of START + 0.25 s starts at START + 0.167 s and leaves 7 s later.
    assert counted.reset_at == START + 8


def test_retry_after_is_ceiling_of_wait(fake_clock):
    limiter = MemoryRateLimiter(sub_buckets=60, clock=fake_clock)
    checks = [LimitCheck("s", 3, 60)]
    limiter.hit(checks, cost=3)

    fake_clock.advance(12.5)
    rejected = limiter.hit(checks)

    # The full sub-bucket leaves at START + 60, 47.5 s from now.
    assert rejected.retry_after == 48
    fake_clock.advance(rejected.retry_after - 1)
    assert limiter.hit(checks).allowed is False
    fake_clock.advance(1)
    assert limiter.hit(checks).allowed is True


def test_retry_after_waits_for_enough_units(fake_clock):
    limiter = MemoryRateLimiter(sub_buckets=60, clock=fake_clock)
    checks = [LimitCheck("s", 10, 60)]
    limiter.hit(checks, cost=2)
    fake_clock.advance(10)
    limiter.hit(checks, cost=5)
    fake_clock.advance(10)
    limiter.hit(checks, cost=3)

    rejected = limiter.hit(checks, cost=6)

    # Cost 6 fits only once the first two sub-buckets (2 + 5 units) have left,
    # and the second one leaves at START + 70, 50 s from now.
    assert rejected.allowed is False
    assert rejected.retry_after == 50
    fake_clock.advance(49)
    assert limiter.hit(checks, cost=6).allowed is False
    fake_clock.advance(1)
    assert limiter.hit(checks, cost=6).allowed is True


def test_retry_after_is_longest_rejecting_wait(fake_clock):
    limiter = MemoryRateLimiter(sub_buckets=60, clock=fake_clock)
    hourly = LimitCheck("partner:1:live", 1, 3600)
    minute = LimitCheck("partner:1:live", 1, 60)
    limiter.hit([hourly, minute])

    rejected = limiter.hit([hourly, minute])

    assert rejected.allowed is False
    assert rejected.retry_after == 3600
    assert rejected.limit == 1
    # Both windows have 0 remaining, so the report names the shorter one.
    assert rejected.reset_at == START + 60


def test_cost_above_limit_waits_full_window(fake_clock):
    limiter = MemoryRateLimiter(sub_buckets=60, clock=fake_clock)

    rejected = limiter.hit([LimitCheck("s", 10, 30)], cost=11)

    assert rejected.retry_after == 30
    fake_clock.advance(rejected.retry_after)
    assert limiter.hit([LimitCheck("s", 10, 30)], cost=11).allowed is False


def test_no_short_span_exceeds_limit(fake_clock):
    window, limit, sub_buckets = 10, 7, 10
    width_ms = window * 1000 // sub_buckets
    limiter = MemoryRateLimiter(sub_buckets=sub_buckets, clock=fake_clock)
    checks = [LimitCheck("s", limit, window)]
    rng = random.Random(20270115)

    admitted: list[int] = []
    rejected: list[int] = []
    for _ in range(3000):
        fake_clock.advance(rng.choice([0, 0, 0.001, 0.05, 0.3, 1.7]))
        if limiter.hit(checks).allowed:
            admitted.append(fake_clock.ms)
        else:
            rejected.append(fake_clock.ms)

    assert len(admitted) > 100
    # No span of one window minus one sub-bucket admits more than the limit.
    for at in admitted:
        in_span = [t for t in admitted if at - (window * 1000 - width_ms) < t <= at]
        assert len(in_span) <= limit, f"span ending at {at}"
    # A rejection only happens when the last full window already contains the limit.
    for at in rejected:
        in_window = [t for t in admitted if at - window * 1000 < t <= at]
        assert len(in_window) >= limit, f"rejection at {at}"


def test_clock_step_back_keeps_counts(fake_clock):
    limiter = MemoryRateLimiter(sub_buckets=60, clock=fake_clock)
    checks = [LimitCheck("s", 3, 60)]
    limiter.hit(checks, cost=3)

    fake_clock.advance(-30)

    assert limiter.hit(checks).allowed is False


def test_sweep_drops_expired_subjects(fake_clock):
    limiter = MemoryRateLimiter(sub_buckets=60, clock=fake_clock, sweep_interval_seconds=120)
    for number in range(100):
        limiter.hit([LimitCheck(f"key:{number}", 5, 60)])
    assert limiter.tracked_subjects() == 100

    fake_clock.advance(121)
    limiter.hit([LimitCheck("key:new", 5, 60)])

    assert limiter.tracked_subjects() == 1


def test_sweep_keeps_live_subjects(fake_clock):
    limiter = MemoryRateLimiter(sub_buckets=60, clock=fake_clock)
    limiter.hit([LimitCheck("daily", 5, 86400)])
    limiter.hit([LimitCheck("minute", 5, 60)])

    fake_clock.advance(3600)
    dropped = limiter.sweep()

    assert dropped == 1
    assert limiter.tracked_subjects() == 1
    assert limiter.peek([LimitCheck("daily", 5, 86400)]).remaining == 4


def test_memory_per_window_is_bounded(fake_clock):
    limiter = MemoryRateLimiter(sub_buckets=60, clock=fake_clock)
    checks = [LimitCheck("s", 1_000_000, 60)]

    for _ in range(600):
        limiter.hit(checks)
        fake_clock.advance(0.7)

    # Reads the private store because no public API exposes counter counts.
    counters = limiter._subjects["s"][60]
    assert len(counters) <= 60


def test_reset_unknown_subject_is_noop(fake_clock):
    limiter = MemoryRateLimiter(clock=fake_clock)

    limiter.reset("nobody")

    assert limiter.tracked_subjects() == 0


def test_rejected_hit_stores_nothing(fake_clock):
    limiter = MemoryRateLimiter(clock=fake_clock)

    limiter.hit([LimitCheck("s", 1, 60)], cost=2)
    limiter.peek([LimitCheck("t", 1, 60)])

    assert limiter.tracked_subjects() == 0


@pytest.mark.parametrize("sub_buckets", [0, -1, 1001, 2.5, True])
def test_invalid_sub_buckets_rejected(sub_buckets):
    with pytest.raises(ValueError, match="sub_buckets must be an integer from 1 to 1000"):
        MemoryRateLimiter(sub_buckets=sub_buckets)


def test_invalid_sweep_interval_rejected():
    with pytest.raises(ValueError, match="sweep_interval_seconds must be positive"):
        MemoryRateLimiter(sweep_interval_seconds=0)


@pytest.mark.parametrize(
    ("subject", "limit", "window", "message"),
    [
        ("", 1, 1, "subject must be a non-empty string"),
        (None, 1, 1, "subject must be a non-empty string"),
        ("s", 0, 1, "limit must be an integer >= 1"),
        ("s", 1.0, 1, "limit must be an integer >= 1"),
        ("s", 1, 0, "window_seconds must be an integer >= 1"),
        ("s", 1, False, "window_seconds must be an integer >= 1"),
    ],
)
def test_invalid_limit_check_rejected(subject, limit, window, message):
    with pytest.raises(ValueError, match=message):
        LimitCheck(subject, limit, window)


def test_single_check_instead_of_list_rejected(fake_clock):
    limiter = MemoryRateLimiter(clock=fake_clock)

    with pytest.raises(TypeError, match="got a single LimitCheck"):
        limiter.hit(LimitCheck("s", 1, 1))


def test_factory_builds_memory_limiter():
    limiter = make_rate_limiter("memory", redis_url=None, sub_buckets=30, key_prefix="unused:")

    assert isinstance(limiter, MemoryRateLimiter)
    assert isinstance(limiter, RateLimiter)
    assert limiter.hit([LimitCheck("s", 1, 1)]).allowed


def test_factory_rejects_unknown_backend():
    with pytest.raises(ValueError, match="invalid rate limit backend 'memcached'"):
        make_rate_limiter("memcached", redis_url=None, sub_buckets=60, key_prefix="x:")


def test_factory_redis_needs_url():
    with pytest.raises(ValueError, match="needs a redis_url"):
        make_rate_limiter("redis", redis_url=None, sub_buckets=60, key_prefix="x:")


def test_redis_limiter_is_rate_limiter():
    assert issubclass(RedisRateLimiter, RateLimiter)


# Gateway policy: which windows apply, headers, outages, plan changes -----------




@dataclasses.dataclass
class StubKey:
    """The key fields limit_checks reads."""

    id: int = 7
    partner_id: int = 3
    livemode: bool = False
    rate_limit: int | None = None
    rate_limit_window: int | None = None


@dataclasses.dataclass
class StubPlan:
    requests_per_hour: int | None = 100
    requests_per_day: int | None = 1000


def test_endpoint_limits_parsed():
    limits = parse_endpoint_limits(
        " POST /api/v1/users = 100/60; get /api/v1/users/{id}=1000 / 3600 ;\n"
        "DELETE /api/v1/x = 1/1;"
    )

    assert list(limits) == [("POST", "/api/v1/users"), ("GET", "/api/v1/users/{id}"),
                            ("DELETE", "/api/v1/x")]
    assert limits[("POST", "/api/v1/users")] == EndpointLimit("POST", "/api/v1/users", 100, 60)
    assert limits[("GET", "/api/v1/users/{id}")].window_seconds == 3600
    assert limits[("GET", "/api/v1/users/{id}")].route == "GET /api/v1/users/{id}"


def test_endpoint_limits_empty_means_none():
    assert parse_endpoint_limits("") == {}
    assert parse_endpoint_limits(" ; \n ") == {}


@pytest.mark.parametrize(
    ("raw", "bad_entry", "problem"),
    [
        ("POST /api/v1/users = 100", "POST /api/v1/users = 100", "expected 'METHOD"),
        ("POST /api/v1/users 100/60", "POST /api/v1/users 100/60", "expected 'METHOD"),
        ("/api/v1/users = 100/60", "/api/v1/users = 100/60", "expected 'METHOD"),
        ("FETCH /api/v1/users = 1/60", "FETCH /api/v1/users = 1/60", "unknown method FETCH"),
        ("GET api/v1/users = 1/60", "GET api/v1/users = 1/60", "must start with /"),
        ("GET /a = 0/60", "GET /a = 0/60", "request count must be from 1"),
        ("GET /a = 1/0", "GET /a = 1/0", "window must be from 1"),
        ("GET /a = 1/2678401", "GET /a = 1/2678401", "window must be from 1"),
        ("GET /a = -1/60", "GET /a = -1/60", "expected 'METHOD"),
        ("GET /a = 1/60; get /a = 2/60", "get /a = 2/60", "GET /a is limited twice"),
    ],
)
def test_endpoint_limits_invalid_entry(raw, bad_entry, problem):
    with pytest.raises(ConfigurationError) as raised:
        parse_endpoint_limits(raw)

    message = str(raised.value)
    assert "fkod.ratelimit.endpoint_limits" in message
    assert repr(bad_entry) in message
    assert problem in message


def test_fail_open_is_default():
    settings = load_settings({"fkod.db.url": "sqlite://", "fkod.secrets.api_key_pepper": "p" * 32,
                              "fkod.secrets.webhook_encryption_key": "k"}, environ={})

    assert settings["fkod.ratelimit.fail_open"] is True
    assert settings["fkod.ratelimit.endpoint_limits"] == ""
    assert settings["fkod.ratelimit.lease_size"] == 1


def test_checks_of_plan_endpoint_and_key():
    key = StubKey(rate_limit=5, rate_limit_window=10)
    endpoints = parse_endpoint_limits("POST /api/v1/users = 20/60")

    checks = limit_checks(key, StubPlan(), method="POST", route_pattern="/api/v1/users",
                          endpoint_limits=endpoints)

    assert checks == [
        LimitCheck("partner:3:test:hour", 100, 3600),
        LimitCheck("partner:3:test:day", 1000, 86400),
        LimitCheck("partner:3:test:route:POST /api/v1/users", 20, 60),
        LimitCheck("key:7", 5, 10),
    ]


def test_endpoint_limit_only_for_its_route():
    endpoints = parse_endpoint_limits("POST /api/v1/users = 20/60")

    other_method = limit_checks(StubKey(), StubPlan(), method="GET",
                                route_pattern="/api/v1/users", endpoint_limits=endpoints)
    other_route = limit_checks(StubKey(), StubPlan(), method="POST",
                               route_pattern="/api/v1/courses", endpoint_limits=endpoints)

    assert [check.window_seconds for check in other_method] == [3600, 86400]
    assert [check.window_seconds for check in other_route] == [3600, 86400]


def test_head_uses_get_endpoint_limit():
    endpoints = parse_endpoint_limits("GET /api/v1/users = 20/60")

    checks = limit_checks(StubKey(), None, method="HEAD", route_pattern="/api/v1/users",
                          endpoint_limits=endpoints)

    assert checks == [LimitCheck("partner:3:test:route:GET /api/v1/users", 20, 60)]


def test_endpoint_limit_applies_to_unlimited_plan():
    endpoints = parse_endpoint_limits("GET /api/v1/users = 20/60")
    unlimited = StubPlan(requests_per_hour=None, requests_per_day=None)

    checks = limit_checks(StubKey(livemode=True), unlimited, method="GET",
                          route_pattern="/api/v1/users", endpoint_limits=endpoints)

    assert checks == [LimitCheck("partner:3:live:route:GET /api/v1/users", 20, 60)]


def test_boost_raises_plan_windows():
    boost = ActiveBoost(id=1, extra_requests_per_hour=50, extra_requests_per_day=None,
                        ends_at=None)
    endpoints = parse_endpoint_limits("GET /api/v1/users = 20/60")

    checks = limit_checks(StubKey(rate_limit=5), StubPlan(), boost=boost, method="GET",
                          route_pattern="/api/v1/users", endpoint_limits=endpoints)

    assert [check.limit for check in checks] == [150, 1000, 20, 5]


def test_boost_raises_daily_window_too():
    boost = ActiveBoost(id=1, extra_requests_per_hour=50, extra_requests_per_day=500,
                        ends_at=None)

    checks = limit_checks(StubKey(), StubPlan(), boost=boost)

    assert [check.limit for check in checks] == [150, 1500]


def test_headers_of_admitted_call():
    decision = RateLimitDecision(allowed=True, limit=100, remaining=42, reset_at=START + 90,
                                 retry_after=None)

    headers = response_headers(decision, now=START + 0.5)

    assert headers == {
        "X-RateLimit-Limit": "100",
        "X-RateLimit-Remaining": "42",
        "X-RateLimit-Reset": str(START + 90),
        "RateLimit-Limit": "100",
        "RateLimit-Remaining": "42",
        "RateLimit-Reset": "90",
    }


def test_headers_of_rejected_call():
    decision = RateLimitDecision(allowed=False, limit=10, remaining=0, reset_at=START + 30,
                                 retry_after=12)

    headers = response_headers(decision, now=START)

    assert headers["Retry-After"] == "12"
    assert headers["X-RateLimit-Retry-After"] == "12"
    assert headers["RateLimit-Reset"] == "30"
    assert headers["X-RateLimit-Remaining"] == "0"


def test_headers_reset_never_negative():
    decision = RateLimitDecision(allowed=True, limit=10, remaining=3, reset_at=START,
                                 retry_after=None)

    assert response_headers(decision, now=START + 5)["RateLimit-Reset"] == "0"


def test_no_headers_for_unlimited():
    assert response_headers(None) == {}
    assert response_headers(UNLIMITED) == {}


class RecordingClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_outage_logged_once_then_throttled(caplog):
    clock = RecordingClock()
    outages = OutageLog(interval_seconds=60, clock=clock)
    error = RuntimeError("connection refused")

    with caplog.at_level(logging.WARNING, logger="fkod.core.ratelimit.policy"):
        for _ in range(50):
            outages.failed(error, fail_open=True)
            clock.now += 1
        outages.recovered()
        outages.recovered()

    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2, messages
    assert messages[0].startswith("rate limiter unavailable, admitting requests unchecked")
    assert "connection refused" in messages[0]
    assert messages[1] == "rate limiter recovered after 50.0 s; 50 requests met the outage"
    assert outages.down is False


def test_outage_reminder_after_interval(caplog):
    clock = RecordingClock()
    outages = OutageLog(interval_seconds=60, clock=clock)

    with caplog.at_level(logging.WARNING, logger="fkod.core.ratelimit.policy"):
        for _ in range(130):
            outages.failed(RuntimeError("timed out"), fail_open=False)
            clock.now += 1

    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 3, messages
    assert "rejecting requests with 503" in messages[0]
    assert messages[1].startswith("rate limiter still unavailable after 60 s, 61 requests")
    assert messages[2].startswith("rate limiter still unavailable after 120 s, 121 requests")


def test_new_outage_logged_again(caplog):
    outages = OutageLog(clock=RecordingClock())

    with caplog.at_level(logging.WARNING, logger="fkod.core.ratelimit.policy"):
        outages.failed(RuntimeError("first"), fail_open=True)
        outages.recovered()
        outages.failed(RuntimeError("second"), fail_open=True)

    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 3
    assert "second" in messages[2]


def admitted_count(limiter, checks_of, attempts: int) -> int:
    return sum(limiter.hit(checks_of()).allowed for _ in range(attempts))


def test_plan_upgrade_keeps_counts_and_adds_headroom(fake_clock):
    limiter = MemoryRateLimiter(clock=fake_clock)
    key = StubKey()
    assert admitted_count(limiter, lambda: limit_checks(key, StubPlan(10, None)), 15) == 10

    upgraded = StubPlan(25, None)
    decision = limiter.peek(limit_checks(key, upgraded))

    # The 10 calls counted under the old plan stay counted under the new one.
    assert decision.allowed is True
    assert decision.limit == 25
    assert decision.remaining == 15
    assert admitted_count(limiter, lambda: limit_checks(key, upgraded), 20) == 15


def test_plan_downgrade_leaves_partner_over_limit(fake_clock):
    limiter = MemoryRateLimiter(clock=fake_clock)
    key = StubKey()
    assert admitted_count(limiter, lambda: limit_checks(key, StubPlan(100, None)), 30) == 30

    downgraded = StubPlan(20, None)
    rejected = limiter.hit(limit_checks(key, downgraded))

    assert rejected.allowed is False
    assert rejected.remaining == 0
    # The 30 calls sit in one sub-bucket, which leaves the hour 3600 s after it started.
    assert rejected.retry_after == 3600
    fake_clock.advance(3599)
    assert limiter.hit(limit_checks(key, downgraded)).allowed is False
    fake_clock.advance(1)
    assert limiter.hit(limit_checks(key, downgraded)).allowed is True


def test_reset_partner_counters_both_modes(fake_clock):
    limiter = MemoryRateLimiter(clock=fake_clock)
    endpoints = parse_endpoint_limits("GET /api/v1/users = 2/60")
    plan = StubPlan(2, 5)
    test_key, live_key = StubKey(rate_limit=3), StubKey(id=8, livemode=True)
    other_partner = StubKey(id=9, partner_id=4)

    def checks(key):
        return limit_checks(key, plan, method="GET", route_pattern="/api/v1/users",
                            endpoint_limits=endpoints)

    for key in (test_key, live_key, other_partner):
        assert admitted_count(limiter, lambda key=key: checks(key), 3) == 2

    subjects = reset_partner_counters(limiter, 3, endpoint_limits=endpoints.values())

    assert subjects == partner_subjects(3, endpoints.values())
    assert len(subjects) == 6
    assert limiter.peek(checks(test_key)).remaining == 1  # the key window keeps its 2 calls
    assert limiter.peek(checks(live_key)).remaining == 2
    assert limiter.peek(checks(other_partner)).remaining == 0


def test_reset_without_endpoints_keeps_endpoint_window(fake_clock):
    limiter = MemoryRateLimiter(clock=fake_clock)
    endpoints = parse_endpoint_limits("GET /api/v1/users = 2/60")
    key = StubKey()

    def checks():
        return limit_checks(key, StubPlan(2, None), method="GET",
                            route_pattern="/api/v1/users", endpoint_limits=endpoints)

    assert admitted_count(limiter, checks, 2) == 2

    reset_partner_counters(limiter, 3)

    assert limiter.peek(limit_checks(key, StubPlan(2, None))).remaining == 2
    assert limiter.peek(checks()).remaining == 0


class CountingSession:
    """Stands in for a SQLAlchemy session and returns no boost row to every query."""

    def __init__(self) -> None:
        self.queries = 0

    def execute(self, _statement):
        self.queries += 1
        return self

    def one_or_none(self):
        return None


def test_boost_cache_queries_once_per_ttl():
    clock = RecordingClock()
    cache = ActiveBoostCache(ttl_seconds=1.0, clock=clock)
    session = CountingSession()

    for _ in range(5):
        assert cache.get(session, 3, False) is None
    clock.now += 0.999
    cache.get(session, 3, False)
    assert session.queries == 1

    cache.get(session, 3, True)
    cache.get(session, 4, False)
    assert session.queries == 3

    clock.now += 0.001
    cache.get(session, 3, False)
    assert session.queries == 4


def test_boost_cache_forget_queries_again():
    cache = ActiveBoostCache(ttl_seconds=1.0, clock=RecordingClock())
    session = CountingSession()
    cache.get(session, 3, False)

    cache.forget(3, False)
    cache.get(session, 3, False)

    assert session.queries == 2


def test_boost_cache_zero_ttl_always_queries():
    cache = ActiveBoostCache(ttl_seconds=0, clock=RecordingClock())
    session = CountingSession()

    for _ in range(3):
        cache.get(session, 3, False)

    assert session.queries == 3
