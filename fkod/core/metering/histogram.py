"""Latency histograms of the hourly roll-ups, and percentiles estimated from them.

A histogram is a dict that maps a bucket's upper bound in milliseconds, as a
string, to the number of calls whose response time falls in that bucket. A
bucket contains the response times greater than the previous bound and at most
its own bound. The first bucket starts at 0 ms, and the last bucket (``"inf"``)
has no upper bound. Buckets without calls are left out, so ``{}`` means no
timed calls.

The bounds are fixed, so histograms of different hours, keys and endpoints add
up bucket by bucket.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = [
    "BUCKET_BOUNDS_MS",
    "BUCKET_KEYS",
    "INFINITE_BUCKET",
    "bucket_key",
    "estimate_percentile",
    "merge_histograms",
]

# Upper bounds of the finite buckets, in milliseconds, ascending.
BUCKET_BOUNDS_MS: tuple[int, ...] = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
INFINITE_BUCKET = "inf"
# Histogram keys in bucket order, the infinite bucket last.
BUCKET_KEYS: tuple[str, ...] = (*(str(bound) for bound in BUCKET_BOUNDS_MS), INFINITE_BUCKET)


def bucket_key(response_time_ms: int) -> str:
    """Return the key of the bucket that contains ``response_time_ms``."""
    for bound in BUCKET_BOUNDS_MS:
        if response_time_ms <= bound:
            return str(bound)
    return INFINITE_BUCKET


def merge_histograms(histograms: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """Add ``histograms`` bucket by bucket; keys outside :data:`BUCKET_KEYS` raise ValueError."""
    totals = dict.fromkeys(BUCKET_KEYS, 0)
    for histogram in histograms:
        for key, count in histogram.items():
            if key not in totals:
                raise ValueError(
                    f"unknown latency bucket {key!r}; expected one of {', '.join(BUCKET_KEYS)}")
            totals[key] += count
    return {key: count for key, count in totals.items() if count}


def estimate_percentile(histogram: Mapping[str, int], fraction: float,
                        max_response_time_ms: int | None = None) -> float | None:
    """Estimate the response time below which ``fraction`` of the calls fall, in milliseconds.

    The estimate finds the bucket that contains the call of rank
    ``fraction * total`` and interpolates linearly inside it, as if the calls
    of that bucket were spread evenly between its bounds. It is therefore off
    by at most the width of that bucket. The infinite bucket is taken to end
    at ``max_response_time_ms``, and every estimate is capped at it when it is
    given. Returns None for a histogram without calls.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    counts = [histogram.get(key, 0) for key in BUCKET_KEYS]
    total = sum(counts)
    if total == 0:
        return None

    rank = fraction * total
    below = 0
    lower = 0.0
    estimate = float(BUCKET_BOUNDS_MS[-1])
    for index, count in enumerate(counts):
        if index < len(BUCKET_BOUNDS_MS):
            upper = float(BUCKET_BOUNDS_MS[index])
        else:
            upper = float(max(max_response_time_ms or 0, BUCKET_BOUNDS_MS[-1]))
        if count and below + count >= rank:
            estimate = lower + (upper - lower) * (rank - below) / count
            break
        below += count
        lower = upper

    if max_response_time_ms is not None:
        estimate = min(estimate, float(max_response_time_ms))
    return estimate
