"""Tests of the in-process rate limiter, driven by a fake clock."""

from __future__ import annotations

import random

import pytest

from fkod.core.ratelimit import (
    LimitCheck,
    MemoryRateLimiter,
    RateLimiter,
    RedisRateLimiter,
    make_rate_limiter,
)
from fkod.core.ratelimit.base import bucket_index, bucket_start_ms
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
