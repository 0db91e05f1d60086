"""Behaviour that every RateLimiter implementation must show.

:class:`RateLimiterContract` is a mixin for pytest test classes. A subclass
overrides the fixtures ``make_limiter``, ``clock`` and ``advance`` and may
change ``window_seconds`` and ``sub_buckets``.
"""

from __future__ import annotations

import math
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from fkod.core.ratelimit import UNLIMITED, LimitCheck, RateLimitDecision, RateLimiter

MakeLimiter = Callable[[], RateLimiter]


def hit_concurrently(limiter: RateLimiter, checks: list[LimitCheck], requests: int) -> list[bool]:
    """Send ``requests`` hits from as many threads released together, returning each outcome.

    An exception in a thread is re-raised here by ``Future.result``.
    """
    barrier = threading.Barrier(requests)

    def worker() -> bool:
        barrier.wait(timeout=30)
        return limiter.hit(checks).allowed

    with ThreadPoolExecutor(max_workers=requests) as executor:
        futures = [executor.submit(worker) for _ in range(requests)]
        return [future.result(timeout=60) for future in futures]


class RateLimiterContract:
    """Tests shared by the memory and Redis rate limiters."""

    # Short enough that the Redis variant can wait for windows in real time.
    window_seconds = 2
    sub_buckets = 60

    @pytest.fixture
    def make_limiter(self) -> MakeLimiter:
        """Return a factory of limiters with ``self.sub_buckets`` sub-buckets."""
        raise NotImplementedError("a RateLimiterContract subclass must override make_limiter")

    @pytest.fixture
    def clock(self) -> Callable[[], float]:
        """Return the limiter's clock as Unix seconds."""
        raise NotImplementedError("a RateLimiterContract subclass must override clock")

    @pytest.fixture
    def advance(self) -> Callable[[float], None]:
        """Return a function that moves the limiter's clock forward by some seconds."""
        raise NotImplementedError("a RateLimiterContract subclass must override advance")

    @pytest.fixture
    def subject(self) -> str:
        return f"partner:{uuid.uuid4().hex}:live"

    @property
    def slack_seconds(self) -> float:
        """One sub-bucket width plus 50 ms.

        Sequential hits in real time can straddle two sub-buckets, and
        retry_after only covers the first, so a test that needs the whole
        burst to expire waits this much longer.
        """
        return self.window_seconds / self.sub_buckets + 0.05

    def check(self, subject: str, limit: int = 10, window_seconds: int | None = None) -> LimitCheck:
        return LimitCheck(subject, limit, window_seconds or self.window_seconds)

    def test_limit_admits_exactly_n_in_three_windows(self, make_limiter, clock, advance):
        limiter = make_limiter()
        for _try in range(3):
            if self._three_windows_without_stall(limiter, clock, advance):
                return
        pytest.fail("every try stalled for longer than a window; the machine is overloaded")

    def _three_windows_without_stall(self, limiter, clock, advance) -> bool:
        """Check three full windows on a new subject; return False after a stall.

        A burst that takes longer than the window minus two sub-buckets (only
        in real time, on an overloaded machine) lets its first hits expire
        before its last, so its outcome proves nothing and the caller retries.
        """
        checks = [self.check(f"partner:{uuid.uuid4().hex}:live", limit=10)]
        width = self.window_seconds / self.sub_buckets
        stall_seconds = self.window_seconds - min(2 * width, self.window_seconds / 2)

        for window_number in range(3):
            started = clock()
            admitted = [limiter.hit(checks).allowed for _ in range(10)]
            rejected = limiter.hit(checks)
            burst_seconds = clock() - started
            if burst_seconds >= stall_seconds:
                return False

            assert admitted == [True] * 10, f"window {window_number}"
            assert rejected.allowed is False, f"window {window_number}"
            assert rejected.retry_after is not None
            assert 1 <= rejected.retry_after <= self.window_seconds
            assert rejected.remaining == 0

            # retry_after frees the burst's first hit; on a loaded machine the
            # last one can come seconds later in real time and expires as late.
            advance(rejected.retry_after + burst_seconds + self.slack_seconds)
        return True

    def test_retry_after_wait_admits_next(self, make_limiter, advance, subject):
        limiter = make_limiter()
        checks = [self.check(subject, limit=3)]
        for _ in range(3):
            assert limiter.hit(checks).allowed

        rejected = limiter.hit(checks)
        assert rejected.allowed is False
        assert rejected.retry_after is not None

        advance(rejected.retry_after)
        assert limiter.hit(checks).allowed

    def test_rejected_call_counts_in_no_window(self, make_limiter, subject):
        limiter = make_limiter()
        short = self.check(subject, limit=2)
        long = self.check(subject, limit=5, window_seconds=60)

        assert limiter.hit([short, long]).allowed
        assert limiter.hit([short, long]).allowed
        for _ in range(4):
            assert limiter.hit([short, long]).allowed is False

        assert limiter.peek([long]).remaining == 3
        assert limiter.peek([short]).remaining == 0

    def test_long_window_rejection_spares_short_window(self, make_limiter, subject):
        limiter = make_limiter()
        key_subject = subject + ":key"
        short = self.check(key_subject, limit=10)
        long = self.check(subject, limit=3, window_seconds=60)

        for _ in range(3):
            assert limiter.hit([short, long]).allowed
        rejected = limiter.hit([short, long])

        assert rejected.allowed is False
        assert rejected.limit == 3
        assert limiter.peek([short]).remaining == 7

    def test_cost_above_limit_rejected_when_idle(self, make_limiter, subject):
        limiter = make_limiter()
        checks = [self.check(subject, limit=10)]

        decision = limiter.hit(checks, cost=11)

        assert decision.allowed is False
        assert decision.remaining == 10
        assert decision.retry_after is not None
        assert 1 <= decision.retry_after <= self.window_seconds
        assert limiter.peek(checks).remaining == 10

    def test_cost_counts_in_full(self, make_limiter, subject):
        limiter = make_limiter()
        checks = [self.check(subject, limit=10)]

        assert limiter.hit(checks, cost=4).remaining == 6
        assert limiter.hit(checks, cost=6).remaining == 0
        assert limiter.hit(checks, cost=1).allowed is False

    def test_remaining_never_negative(self, make_limiter, subject):
        limiter = make_limiter()
        checks = [self.check(subject, limit=10)]

        for attempt in range(30):
            decision = limiter.hit(checks, cost=1 + attempt % 3)
            assert decision.remaining >= 0, f"attempt {attempt}: {decision}"
            assert limiter.peek(checks).remaining >= 0

    def test_reset_at_within_window(self, make_limiter, clock, subject):
        limiter = make_limiter()
        checks = [self.check(subject, limit=2)]

        decisions: list[tuple[float, RateLimitDecision, float]] = []
        for _ in range(4):
            before = clock()
            decision = limiter.hit(checks)
            after = clock()
            decisions.append((before, decision, after))

        for before, decision, after in decisions:
            assert isinstance(decision.reset_at, int)
            assert len(str(decision.reset_at)) == 10
            assert math.floor(before) <= decision.reset_at
            assert decision.reset_at <= math.ceil(after) + self.window_seconds

    def test_reset_at_is_now_when_empty(self, make_limiter, clock, subject):
        limiter = make_limiter()

        before = clock()
        decision = limiter.peek([self.check(subject)])
        after = clock()

        assert decision.allowed is True
        assert decision.remaining == 10
        assert math.floor(before) <= decision.reset_at <= math.ceil(after)

    def test_quiet_window_restores_quota(self, make_limiter, advance, subject):
        limiter = make_limiter()
        checks = [self.check(subject, limit=5)]
        for _ in range(5):
            assert limiter.hit(checks).allowed
        assert limiter.hit(checks).allowed is False

        advance(self.window_seconds + self.slack_seconds)

        assert limiter.peek(checks).remaining == 5
        admitted = [limiter.hit(checks).allowed for _ in range(5)]
        assert admitted == [True] * 5

    def test_concurrent_threads_admit_exactly_limit(self, make_limiter, subject):
        limiter = make_limiter()

        for repeat in range(5):
            checks = [LimitCheck(f"{subject}:{repeat}", 10, 60)]
            outcomes = hit_concurrently(limiter, checks, 50)
            assert outcomes.count(True) == 10, f"repeat {repeat}"

    def test_concurrent_threads_share_several_windows(self, make_limiter, subject):
        limiter = make_limiter()
        checks = [
            LimitCheck(subject, 10, 60),
            LimitCheck(subject, 25, 120),
            LimitCheck(subject + ":key", 30, 60),
        ]

        outcomes = hit_concurrently(limiter, checks, 50)

        assert outcomes.count(True) == 10
        assert limiter.peek([LimitCheck(subject, 25, 120)]).remaining == 15
        assert limiter.peek([LimitCheck(subject + ":key", 30, 60)]).remaining == 20

    def test_tightest_window_reported(self, make_limiter, subject):
        limiter = make_limiter()
        loose = LimitCheck(subject, 100, 60)
        tight = LimitCheck(subject + ":key", 5, self.window_seconds)

        decision = limiter.hit([loose, tight])

        assert decision.limit == 5
        assert decision.remaining == 4

    def test_tie_reports_shorter_window(self, make_limiter, clock, subject):
        limiter = make_limiter()
        long = LimitCheck(subject, 5, 3600)
        short = LimitCheck(subject, 5, self.window_seconds)

        decision = limiter.hit([long, short])
        after = clock()

        assert decision.remaining == 4
        assert decision.reset_at <= math.ceil(after) + self.window_seconds

    def test_same_window_twice_counts_once(self, make_limiter, subject):
        limiter = make_limiter()
        checks = [self.check(subject, limit=10), self.check(subject, limit=5)]

        for _ in range(5):
            assert limiter.hit(checks).allowed
        rejected = limiter.hit(checks)

        assert rejected.allowed is False
        assert rejected.limit == 5
        assert limiter.peek([self.check(subject, limit=10)]).remaining == 5

    def test_peek_does_not_count(self, make_limiter, subject):
        limiter = make_limiter()
        checks = [self.check(subject, limit=2)]

        for _ in range(5):
            assert limiter.peek(checks).allowed
        assert limiter.hit(checks).remaining == 1

    def test_peek_reports_rejection_when_full(self, make_limiter, subject):
        limiter = make_limiter()
        checks = [self.check(subject, limit=2)]
        limiter.hit(checks, cost=2)

        decision = limiter.peek(checks)

        assert decision.allowed is False
        assert decision.remaining == 0
        assert decision.retry_after is not None
        assert 1 <= decision.retry_after <= self.window_seconds

    def test_reset_forgets_subject(self, make_limiter, subject):
        limiter = make_limiter()
        checks = [self.check(subject, limit=2), LimitCheck(subject, 3, 60)]
        limiter.hit(checks, cost=2)
        assert limiter.hit(checks).allowed is False

        limiter.reset(subject)

        assert limiter.peek([self.check(subject, limit=2)]).remaining == 2
        assert limiter.peek([LimitCheck(subject, 3, 60)]).remaining == 3

    def test_empty_checks_unlimited(self, make_limiter):
        limiter = make_limiter()

        hit = limiter.hit([])
        peek = limiter.peek([])

        assert hit == UNLIMITED
        assert hit.unlimited is True
        assert hit.allowed is True
        assert hit.retry_after is None
        assert peek == UNLIMITED

    def test_allowed_decision_has_no_retry_after(self, make_limiter, subject):
        limiter = make_limiter()
        decision = limiter.hit([self.check(subject)])

        assert decision.allowed is True
        assert decision.retry_after is None
        assert decision.unlimited is False

    @pytest.mark.parametrize("cost", [0, -1, 1.5, True, "1"])
    def test_invalid_cost_rejected(self, make_limiter, subject, cost):
        limiter = make_limiter()

        with pytest.raises(ValueError, match="cost must be an integer"):
            limiter.hit([self.check(subject)], cost=cost)
