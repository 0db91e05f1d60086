"""Interface and shared arithmetic of the sliding-window rate limiters.

A window of ``window_seconds`` is split into ``sub_buckets`` equal sub-buckets.
Time is counted in whole milliseconds since the Unix epoch, and sub-bucket ``i``
of a window covers the milliseconds ``t`` with
``floor(t * sub_buckets / (window_seconds * 1000)) == i``. The count of a window
at time ``t`` is the sum of the sub-bucket containing ``t`` and the
``sub_buckets - 1`` sub-buckets before it. So a sub-bucket leaves the window
``window_seconds`` after its own start, and no span of ``window_seconds`` minus
one sub-bucket width admits more than the limit.

Both implementations (``memory.py`` and the Lua script in ``redis.py``) follow
these formulas, and both build their decision with :func:`summarize`.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "MAX_SUB_BUCKETS",
    "UNLIMITED",
    "LimitCheck",
    "RateLimitDecision",
    "RateLimiter",
    "RateLimiterUnavailable",
    "WindowUsage",
    "bucket_index",
    "bucket_start_ms",
    "measure_window",
    "summarize",
    "validate_checks",
    "validate_cost",
    "validate_sub_buckets",
]

# The Redis script computes ``now_ms * sub_buckets`` in Lua numbers, which are
# IEEE doubles and exact only below 2**53. With 1000 sub-buckets that product
# stays exact until about the year 2255.
MAX_SUB_BUCKETS = 1000


@dataclass(frozen=True)
class LimitCheck:
    """One sliding window to enforce: at most ``limit`` units per ``window_seconds``.

    ``subject`` names whose usage is counted, for example ``"partner:12:live"`` or
    ``"key:34"``. Checks with the same subject and window length share one
    count, whatever their limits.
    """

    subject: str
    limit: int
    window_seconds: int

    def __post_init__(self) -> None:
        if not isinstance(self.subject, str) or not self.subject:
            raise ValueError(f"LimitCheck.subject must be a non-empty string, got {self.subject!r}")
        if not _is_int(self.limit) or self.limit < 1:
            raise ValueError(f"LimitCheck.limit must be an integer >= 1, got {self.limit!r}")
        if not _is_int(self.window_seconds) or self.window_seconds < 1:
            raise ValueError(
                f"LimitCheck.window_seconds must be an integer >= 1, got {self.window_seconds!r}"
            )


@dataclass(frozen=True)
class RateLimitDecision:
    """Outcome of :meth:`RateLimiter.hit` or :meth:`RateLimiter.peek`.

    ``limit``, ``remaining`` and ``reset_at`` describe the tightest window: the
    one with the fewest remaining units, and among those the shortest window.
    A window that rejects a request always has fewer remaining units than one
    that accepts it, so a rejection reports a rejecting window.

    - ``remaining``: units still free in that window, never negative. After an
      admitted hit it already excludes the hit's cost. After a rejected hit
      nothing was counted, so it can be positive when the cost exceeded it.
    - ``reset_at``: Unix time in whole seconds, rounded up, of the moment the
      oldest sub-bucket counted in that window leaves the window, which is
      when ``remaining`` next grows without any reset. For an empty window it
      is the current time rounded up. It lies in
      ``[ceil(now), ceil(now) + window_seconds]``, using the limiter's clock
      (Redis server time for the Redis implementation).
    - ``retry_after``: ``None`` when allowed. On rejection, the whole seconds
      (rounded up, at least 1) until every rejecting window would accept the
      same cost, provided nothing else is counted meanwhile. It is at most the
      longest window checked. A cost larger than a window's limit can never
      pass, and that window then contributes its full length.

    An empty list of checks means an unlimited caller and returns
    :data:`UNLIMITED`, whose ``limit`` and ``remaining`` are -1 and whose
    ``reset_at`` is 0. Test it with :attr:`unlimited` and send no rate-limit
    headers for it.
    """

    allowed: bool
    limit: int
    remaining: int
    reset_at: int
    retry_after: int | None

    @property
    def unlimited(self) -> bool:
        """True when no window was checked, so the fields carry no limit."""
        return self.limit == -1


UNLIMITED = RateLimitDecision(allowed=True, limit=-1, remaining=-1, reset_at=0, retry_after=None)


class RateLimiterUnavailable(Exception):
    """The limiter's store could not be reached (connection failure or timeout).

    The caller decides whether to admit (fail open) or reject (fail closed).
    """


class RateLimiter(abc.ABC):
    """Sliding-window rate limiter that checks several windows atomically."""

    @abc.abstractmethod
    def hit(self, checks: Sequence[LimitCheck], cost: int = 1) -> RateLimitDecision:
        """Count ``cost`` units in every window of ``checks`` if all of them accept it.

        Either every window accepts and the cost is counted in all of them, or
        the request is rejected and counted in none. A cost above a window's
        limit is always rejected. ``cost`` must be an integer >= 1, otherwise
        ValueError is raised. See :class:`RateLimitDecision` for the fields.
        """

    @abc.abstractmethod
    def peek(self, checks: Sequence[LimitCheck]) -> RateLimitDecision:
        """Return the decision a hit of cost 1 would get now, without counting it.

        ``remaining`` is the number of free units before any hit.
        """

    @abc.abstractmethod
    def reset(self, subject: str) -> None:
        """Forget every window counted for ``subject``."""

    def close(self) -> None:
        """Release resources held by the limiter. The base implementation does nothing."""


@dataclass(frozen=True)
class WindowUsage:
    """State of one checked window, as measured by an implementation.

    ``used`` includes the request's cost when the request was admitted.
    ``reset_ms`` is the millisecond at which the oldest counted sub-bucket
    leaves the window, or the current millisecond when nothing is counted.
    ``wait_ms`` is 0 when the window accepts the request, otherwise the
    milliseconds until it would accept the same cost (the window length when
    the cost exceeds the limit).
    """

    check: LimitCheck
    used: int
    reset_ms: int
    wait_ms: int


def bucket_index(now_ms: int, window_seconds: int, sub_buckets: int) -> int:
    """Return the index of the sub-bucket that contains the millisecond ``now_ms``."""
    return (now_ms * sub_buckets) // (window_seconds * 1000)


def bucket_start_ms(index: int, window_seconds: int, sub_buckets: int) -> int:
    """Return the first whole millisecond that belongs to sub-bucket ``index``."""
    return -((-index * window_seconds * 1000) // sub_buckets)


def measure_window(
    check: LimitCheck,
    buckets: Iterable[tuple[int, int]],
    now_ms: int,
    cost: int,
    sub_buckets: int,
) -> tuple[int, int, int]:
    """Return ``(used, reset_ms, wait_ms)`` of one window before any counting.

    ``buckets`` contains the live ``(index, count)`` pairs of the window, oldest
    first. ``reset_ms`` and ``wait_ms`` follow :class:`WindowUsage`. The Lua
    script in ``redis.py`` computes the same three values.
    """
    window = check.window_seconds
    live = list(buckets)
    used = sum(count for _, count in live)

    if live:
        reset_ms = bucket_start_ms(live[0][0] + sub_buckets, window, sub_buckets)
    else:
        reset_ms = now_ms

    if used + cost <= check.limit:
        return used, reset_ms, 0
    if cost > check.limit:
        return used, reset_ms, window * 1000

    # Drop sub-buckets oldest first until the cost fits. The wait ends when
    # the last dropped sub-bucket leaves the window.
    left = used
    wait_ms = window * 1000
    for index, count in live:
        left -= count
        if left + cost <= check.limit:
            wait_ms = bucket_start_ms(index + sub_buckets, window, sub_buckets) - now_ms
            break
    return used, reset_ms, wait_ms


def summarize(allowed: bool, usages: Sequence[WindowUsage]) -> RateLimitDecision:
    """Build the decision from the measured windows of one hit or peek.

    ``usages`` must not be empty. The tightest window supplies ``limit``,
    ``remaining`` and ``reset_at``. ``retry_after`` is the longest wait among
    the rejecting windows, in whole seconds rounded up and clamped to
    ``[1, window_seconds]`` of each window.
    """
    tightest = min(
        usages,
        key=lambda usage: (_remaining(usage), usage.check.window_seconds),
    )

    retry_after: int | None = None
    if not allowed:
        waits = [
            min(usage.check.window_seconds, max(1, _ceil_div(usage.wait_ms, 1000)))
            for usage in usages
            if usage.wait_ms > 0
        ]
        retry_after = max(waits) if waits else 1

    return RateLimitDecision(
        allowed=allowed,
        limit=tightest.check.limit,
        remaining=_remaining(tightest),
        reset_at=_ceil_div(tightest.reset_ms, 1000),
        retry_after=retry_after,
    )


def validate_checks(checks: Sequence[LimitCheck]) -> list[LimitCheck]:
    """Return ``checks`` as a list, raising TypeError for an item that is not a LimitCheck."""
    if isinstance(checks, LimitCheck):
        raise TypeError("checks must be a sequence of LimitCheck, got a single LimitCheck")
    result = list(checks)
    for check in result:
        if not isinstance(check, LimitCheck):
            raise TypeError(f"checks must contain only LimitCheck, got {check!r}")
    return result


def validate_cost(cost: int) -> None:
    """Raise ValueError unless ``cost`` is an integer >= 1."""
    if not _is_int(cost) or cost < 1:
        raise ValueError(f"cost must be an integer >= 1, got {cost!r}")


def validate_sub_buckets(sub_buckets: int) -> None:
    """Raise ValueError unless ``sub_buckets`` is an integer in ``[1, MAX_SUB_BUCKETS]``."""
    if not _is_int(sub_buckets) or not 1 <= sub_buckets <= MAX_SUB_BUCKETS:
        raise ValueError(
            f"sub_buckets must be an integer from 1 to {MAX_SUB_BUCKETS}, got {sub_buckets!r}"
        )


def _remaining(usage: WindowUsage) -> int:
    return max(0, usage.check.limit - usage.used)


def _ceil_div(numerator: int, denominator: int) -> int:
    return -((-numerator) // denominator)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
