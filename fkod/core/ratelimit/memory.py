"""In-process rate limiter for the embedded development mode and tests.

Counts live in a dictionary guarded by one lock, so the limits hold across the
threads of one process but not across processes. Use the Redis implementation
when several workers or hosts share a quota.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from fkod.core.ratelimit.base import (
    UNLIMITED,
    LimitCheck,
    RateLimitDecision,
    RateLimiter,
    WindowUsage,
    bucket_index,
    bucket_start_ms,
    measure_window,
    summarize,
    validate_checks,
    validate_cost,
    validate_sub_buckets,
)

logger = logging.getLogger(__name__)

# Sub-bucket counts of one subject: window length in seconds -> sub-bucket index -> units.
_SubjectWindows = dict[int, dict[int, int]]


class MemoryRateLimiter(RateLimiter):
    """Thread-safe sliding-window limiter that keeps its counts in this process.

    ``clock`` returns Unix time in seconds as a float, which is rounded to the
    nearest millisecond. Tests inject a fake one to move time without sleeping.

    Each window of a subject keeps at most ``sub_buckets`` counters, which are
    pruned on every access. Every ``sweep_interval_seconds`` of clock time, a
    hit also drops every subject whose windows have all expired, so memory is
    bounded by the subjects seen within about one sweep interval plus those
    with live counts.
    """

    def __init__(
        self,
        sub_buckets: int = 60,
        clock: Callable[[], float] = time.time,
        *,
        sweep_interval_seconds: float = 60.0,
    ) -> None:
        validate_sub_buckets(sub_buckets)
        if sweep_interval_seconds <= 0:
            raise ValueError(
                f"sweep_interval_seconds must be positive, got {sweep_interval_seconds!r}"
            )
        self._sub_buckets = sub_buckets
        self._clock = clock
        self._sweep_interval_ms = int(sweep_interval_seconds * 1000)
        self._subjects: dict[str, _SubjectWindows] = {}
        self._lock = threading.Lock()
        self._next_sweep_ms: int | None = None

    def hit(self, checks: Sequence[LimitCheck], cost: int = 1) -> RateLimitDecision:
        """Count ``cost`` in all windows of ``checks``, or in none if any window rejects it."""
        checks = validate_checks(checks)
        validate_cost(cost)
        if not checks:
            return UNLIMITED

        with self._lock:
            now_ms = self._now_ms()
            self._sweep_if_due(now_ms)

            measured = [self._measure(check, now_ms, cost) for check in checks]
            allowed = all(usage.wait_ms == 0 for usage in measured)
            if not allowed:
                return summarize(False, measured)

            self._count(checks, now_ms, cost)
            counted = [self._after_count(usage, now_ms, cost) for usage in measured]
            return summarize(True, counted)

    def peek(self, checks: Sequence[LimitCheck]) -> RateLimitDecision:
        """Return the decision a hit of cost 1 would get now, without counting it."""
        checks = validate_checks(checks)
        if not checks:
            return UNLIMITED

        with self._lock:
            now_ms = self._now_ms()
            measured = [self._measure(check, now_ms, 1) for check in checks]
            allowed = all(usage.wait_ms == 0 for usage in measured)
            return summarize(allowed, measured)

    def reset(self, subject: str) -> None:
        """Forget every window counted for ``subject``."""
        with self._lock:
            self._subjects.pop(subject, None)

    def tracked_subjects(self) -> int:
        """Return how many subjects currently hold counters in memory."""
        with self._lock:
            return len(self._subjects)

    def sweep(self) -> int:
        """Drop expired counters and empty subjects now. Return the number of subjects dropped."""
        with self._lock:
            return self._sweep(self._now_ms())

    def _now_ms(self) -> int:
        # Rounding, not truncation, keeps a fake clock set to a whole
        # millisecond on that millisecond despite float error in the product.
        return round(self._clock() * 1000)

    def _live_buckets(self, subject: str, window_seconds: int, now_ms: int) -> dict[int, int]:
        """Prune and return the live counters of one window, creating nothing.

        A counter is live while its index is above ``current - sub_buckets``.
        Counters from a later index (the clock went backwards) stay live, so a
        clock step back cannot free quota early.
        """
        windows = self._subjects.get(subject)
        if windows is None:
            return {}
        buckets = windows.get(window_seconds)
        if buckets is None:
            return {}

        current = bucket_index(now_ms, window_seconds, self._sub_buckets)
        oldest_live = current - self._sub_buckets + 1
        for index in [index for index in buckets if index < oldest_live]:
            del buckets[index]
        return buckets

    def _measure(self, check: LimitCheck, now_ms: int, cost: int) -> WindowUsage:
        buckets = self._live_buckets(check.subject, check.window_seconds, now_ms)
        used, reset_ms, wait_ms = measure_window(
            check, sorted(buckets.items()), now_ms, cost, self._sub_buckets
        )
        return WindowUsage(check=check, used=used, reset_ms=reset_ms, wait_ms=wait_ms)

    def _count(self, checks: Sequence[LimitCheck], now_ms: int, cost: int) -> None:
        # Checks that share a subject and a window length share one count, so
        # such a pair is counted once.
        done: set[tuple[str, int]] = set()
        for check in checks:
            key = (check.subject, check.window_seconds)
            if key in done:
                continue
            done.add(key)

            windows = self._subjects.setdefault(check.subject, {})
            buckets = windows.setdefault(check.window_seconds, {})
            index = bucket_index(now_ms, check.window_seconds, self._sub_buckets)
            buckets[index] = buckets.get(index, 0) + cost

    def _after_count(self, usage: WindowUsage, now_ms: int, cost: int) -> WindowUsage:
        window = usage.check.window_seconds
        reset_ms = usage.reset_ms
        if usage.used == 0:
            current = bucket_index(now_ms, window, self._sub_buckets)
            reset_ms = bucket_start_ms(current + self._sub_buckets, window, self._sub_buckets)
        return WindowUsage(check=usage.check, used=usage.used + cost, reset_ms=reset_ms, wait_ms=0)

    def _sweep_if_due(self, now_ms: int) -> None:
        if self._next_sweep_ms is None:
            self._next_sweep_ms = now_ms + self._sweep_interval_ms
            return
        if now_ms >= self._next_sweep_ms:
            self._sweep(now_ms)

    def _sweep(self, now_ms: int) -> int:
        dropped = 0
        for subject in list(self._subjects):
            windows = self._subjects[subject]
            for window_seconds in list(windows):
                if not self._live_buckets(subject, window_seconds, now_ms):
                    del windows[window_seconds]
            if not windows:
                del self._subjects[subject]
                dropped += 1

        self._next_sweep_ms = now_ms + self._sweep_interval_ms
        logger.debug(
            "rate limiter sweep dropped %d subjects, %d remain", dropped, len(self._subjects)
        )
        return dropped
