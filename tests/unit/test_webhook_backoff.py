"""Tests for ``backoff_seconds``, the delay between two delivery attempts."""

from __future__ import annotations

import math
import random

import pytest

from fkod.core.webhooks.delivery import backoff_seconds

DAY = 86_400


@pytest.mark.parametrize("attempts, expected", [
    (1, 60),
    (2, 120),
    (3, 240),
    (4, 480),
    (5, 960),
])
def test_backoff_doubles_per_attempt(attempts, expected):
    assert backoff_seconds(attempts, 60, DAY) == expected


@pytest.mark.parametrize("retry_delay", [1, 7, 300])
def test_backoff_first_retry_is_retry_delay(retry_delay):
    assert backoff_seconds(1, retry_delay, DAY) == retry_delay


def test_backoff_capped_at_maximum():
    assert backoff_seconds(6, 300, 3600) == 3600


def test_backoff_just_below_cap():
    # 300 s doubled three times is 2400 s, still below the 3600 s cap.
    assert backoff_seconds(4, 300, 3600) == 2400


def test_backoff_cap_below_retry_delay():
    assert backoff_seconds(1, 600, 60) == 60


@pytest.mark.parametrize("attempts", [47, 1024, 5000, 10**9])
def test_backoff_huge_attempts_return_cap(attempts):
    result = backoff_seconds(attempts, 300, DAY)

    assert result == DAY
    assert type(result) is int


@pytest.mark.parametrize("attempts", [0, 1, 3, 47, 10**9])
def test_backoff_zero_delay_is_zero(attempts):
    assert backoff_seconds(attempts, 0, DAY) == 0


@pytest.mark.parametrize("attempts", [0, -1])
def test_backoff_before_first_failure_is_retry_delay(attempts):
    assert backoff_seconds(attempts, 60, DAY) == 60


def test_backoff_never_decreases():
    delays = [backoff_seconds(attempts, 5, DAY) for attempts in range(1, 60)]

    assert delays == sorted(delays)
    assert delays[-1] == DAY


class FixedDraw(random.Random):
    """A random source whose every draw is ``value``, to pin jitter at its extremes."""

    def __init__(self, value: float):
        super().__init__()
        self.value = value

    def random(self) -> float:
        return self.value


@pytest.mark.parametrize("draw", [0.0, 0.5, 0.999999])
def test_jitter_leaves_first_retry_exact(draw):
    assert backoff_seconds(1, 300, DAY, rng=FixedDraw(draw)) == 300


@pytest.mark.parametrize("attempts", [2, 3, 6, 10])
def test_jitter_stays_within_a_fifth(attempts):
    base = 60 * 2 ** (attempts - 1)

    assert backoff_seconds(attempts, 60, DAY, rng=FixedDraw(0.0)) == base
    assert backoff_seconds(attempts, 60, DAY, rng=FixedDraw(0.999999)) == math.ceil(
        base * (1 - 0.2 * 0.999999))


@pytest.mark.parametrize("attempts", [47, 1024, 5000, 10**9])
def test_jitter_never_passes_cap(attempts):
    for draw in (0.0, 0.5, 0.999999):
        assert backoff_seconds(attempts, 300, DAY, rng=FixedDraw(draw)) == DAY


def test_jittered_delays_never_decrease():
    rng = random.Random(7)
    for _ in range(200):
        delays = [backoff_seconds(attempts, 5, DAY, rng=rng) for attempts in range(1, 40)]
        assert delays == sorted(delays)


def test_jitter_spreads_delays():
    rng = random.Random(11)
    delays = {backoff_seconds(4, 300, DAY, rng=rng) for _ in range(50)}

    assert len(delays) > 10
    assert min(delays) >= 2400 * 0.8
    assert max(delays) <= 2400
