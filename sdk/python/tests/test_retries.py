"""Retries on 429 with Retry-After, against keys with a rate limit of their own.

A key allowing one call per 2 s makes the SDK wait and retry. A key allowing one
call per 60 s gives a 429 that the SDK must not wait for, whatever the load on
the machine running the tests.
"""

from __future__ import annotations

import socket
import time

import pytest
from conftest import unique_email

from fkod_sdk import (
    ApiConnectionError,
    ApiTimeoutError,
    Client,
    RateLimitError,
    ResponseInfo,
    RetryPolicy,
)

SHORT_WINDOW_SECONDS = 2
MAX_CALLS = 5


def limited_key(partner_api, window_seconds: int) -> str:
    created = partner_api.post("/api/partners/api-keys", {
        "key_name": "sdk rate limit", "scopes": ["users:read", "users:write"],
        "mode": "test", "rate_limit": 1, "rate_limit_window": window_seconds})
    return created["key"]


@pytest.fixture
def short_key(partner_api) -> str:
    return limited_key(partner_api, SHORT_WINDOW_SECONDS)


@pytest.fixture
def long_key(partner_api) -> str:
    return limited_key(partner_api, 60)


class Recorder:
    """A response hook that keeps each response with the time it arrived."""

    def __init__(self) -> None:
        self.responses: list[tuple[float, ResponseInfo]] = []

    def __call__(self, info: ResponseInfo) -> None:
        self.responses.append((time.monotonic(), info))

    def first_rejection(self) -> int:
        for index, (_, info) in enumerate(self.responses):
            if info.status == 429:
                return index
        return -1


def call_until_rejected(recorder: Recorder, call) -> int:
    """Call until one response was a 429; return its index in the recorder."""
    for _ in range(MAX_CALLS):
        call()
        index = recorder.first_rejection()
        if index >= 0:
            return index
    pytest.fail(f"No call was rate limited in {MAX_CALLS} calls; the key's limit is not applied.")


def test_get_waits_for_retry_after_then_succeeds(env, short_key):
    recorder = Recorder()
    with Client(base_url=env["FKOD_BASE_URL"], api_key=short_key,
                response_hook=recorder) as limited:
        index = call_until_rejected(recorder, lambda: limited.users.list(limit=1))

    rejected_at, rejected = recorder.responses[index]
    retried_at, retried = recorder.responses[index + 1]
    assert rejected.rate_limit is not None
    assert rejected.rate_limit.remaining == 0
    assert retried.status == 200
    assert retried.attempt == rejected.attempt + 1
    assert retried_at - rejected_at >= 1


def test_post_retry_reuses_its_idempotency_key(env, short_key):
    recorder = Recorder()
    with Client(base_url=env["FKOD_BASE_URL"], api_key=short_key,
                response_hook=recorder) as limited:
        index = call_until_rejected(recorder,
                                    lambda: limited.users.create(email=unique_email()))

    rejected = recorder.responses[index][1]
    retried = recorder.responses[index + 1][1]
    assert rejected.method == "POST"
    assert retried.status == 201
    assert retried.idempotency_key == rejected.idempotency_key
    assert rejected.idempotency_key


def test_without_retries_rate_limit_error_carries_retry_after(env, long_key):
    with Client(base_url=env["FKOD_BASE_URL"], api_key=long_key, max_retries=0) as limited:
        limited.users.list(limit=1)
        with pytest.raises(RateLimitError) as caught:
            limited.users.list(limit=1)

    assert caught.value.status == 429
    assert caught.value.code == "rate_limited"
    assert caught.value.retry_after is not None
    assert caught.value.retry_after > 0
    assert caught.value.retry_after <= 60
    assert caught.value.rate_limit is not None
    assert caught.value.request_id


def test_post_without_idempotency_key_is_not_retried(env, long_key):
    recorder = Recorder()
    policy = RetryPolicy(max_retries=2, max_retry_after_seconds=120)
    with Client(base_url=env["FKOD_BASE_URL"], api_key=long_key, retry=policy,
                auto_idempotency_keys=False, response_hook=recorder) as limited:
        limited.users.list(limit=1)
        with pytest.raises(RateLimitError):
            limited.users.create(email=unique_email())

    posts = [info for _, info in recorder.responses if info.method == "POST"]
    assert [(info.status, info.attempt, info.idempotency_key) for info in posts] == [
        (429, 0, None)]


def test_retry_after_above_cap_is_raised_at_once(env, long_key):
    recorder = Recorder()
    policy = RetryPolicy(max_retries=3, max_retry_after_seconds=0.5)
    with Client(base_url=env["FKOD_BASE_URL"], api_key=long_key, retry=policy,
                response_hook=recorder) as limited:
        limited.users.list(limit=1)
        with pytest.raises(RateLimitError):
            limited.users.list(limit=1)

    assert [info.status for _, info in recorder.responses] == [200, 429]


def test_connection_refused_is_retried_then_raised():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    policy = RetryPolicy(max_retries=2, initial_delay_seconds=0.05)

    started = time.monotonic()
    with Client(base_url=f"http://127.0.0.1:{port}", api_key="sk_test_x", retry=policy) as dead:
        with pytest.raises(ApiConnectionError):
            dead.users.list()

    # Two waits of at least half of 0.05 s and of 0.1 s.
    assert time.monotonic() - started >= 0.075


def test_backoff_grows_and_stays_capped():
    policy = RetryPolicy(max_retries=10, initial_delay_seconds=1, max_delay_seconds=4)

    waits = [policy.backoff(retry, None) for retry in range(1, 6)]

    assert 0.5 <= waits[0] <= 1
    assert 1 <= waits[1] <= 2
    assert all(2 <= wait <= 4 for wait in waits[3:])
    assert policy.backoff(11, None) is None
    assert policy.backoff(1, 3.0) == 3.0
    assert policy.backoff(1, 61.0) is None


def test_silent_server_times_out_after_retry():
    seen: list[ResponseInfo] = []
    with socket.socket() as silent:
        # The kernel accepts connections on the listening socket, and nothing ever replies.
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        policy = RetryPolicy(max_retries=1, initial_delay_seconds=0.05)

        started = time.monotonic()
        with Client(base_url=f"http://127.0.0.1:{port}", api_key="sk_test_x", timeout=0.3,
                    retry=policy, response_hook=seen.append) as slow:
            with pytest.raises(ApiTimeoutError):
                slow.users.get("user_1")
        elapsed = time.monotonic() - started

    assert seen == []
    # Two attempts of 0.3 s each.
    assert elapsed >= 0.6
