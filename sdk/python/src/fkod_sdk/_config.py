"""Client configuration and the request rules shared by the sync and async clients."""

from __future__ import annotations

import dataclasses
import os
import platform
import random
import uuid
from typing import Any, Callable, Union
from urllib.parse import urlsplit

import httpx

from fkod_sdk._version import VERSION
from fkod_sdk.errors import (
    ApiConnectionError,
    ApiTimeoutError,
    RateLimit,
    error_from_response,
    parse_retry_after,
)

USER_AGENT = (f"fkod-sdk-python/{VERSION} (Python {platform.python_version()}; "
              f"httpx {httpx.__version__})")

# Statuses retried when the request may be repeated: rate limited, unavailable.
RETRYABLE_STATUSES = frozenset({429, 503})
# A 409 with this code means a request with the same Idempotency-Key is still running.
IN_PROGRESS_CODE = "idempotency_request_in_progress"

Credential = Union[str, Callable[[], str]]


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """Retry settings for 429, 503 and connection failures.

    The wait before retry ``n`` (from 1) is ``Retry-After`` when the response
    sent one, otherwise a random time between half and all of
    ``min(initial_delay_seconds * 2 ** (n - 1), max_delay_seconds)``. A
    ``Retry-After`` longer than ``max_retry_after_seconds`` is not waited for:
    the error is raised at once so the caller can decide.
    """

    max_retries: int = 2
    initial_delay_seconds: float = 0.5
    max_delay_seconds: float = 8.0
    max_retry_after_seconds: float = 60.0

    def backoff(self, retry: int, retry_after: float | None) -> float | None:
        """Return the seconds to wait before retry number ``retry``, or None to give up."""
        if retry > self.max_retries:
            return None
        if retry_after is not None:
            return retry_after if retry_after <= self.max_retry_after_seconds else None
        ceiling = min(self.initial_delay_seconds * 2 ** (retry - 1), self.max_delay_seconds)
        # Jitter spreads the retries of many clients; it needs no cryptographic randomness.
        return ceiling * (0.5 + random.random() / 2)  # noqa: S311


@dataclasses.dataclass(frozen=True)
class ResponseInfo:
    """The details a response hook receives for every HTTP response, retries included."""

    method: str
    path: str
    status: int
    # 0 for the first attempt, 1 for the first retry, and so on.
    attempt: int
    request_id: str | None
    api_version: str | None
    rate_limit: RateLimit | None
    idempotency_key: str | None
    replayed: bool


ResponseHook = Callable[[ResponseInfo], None]


class NotGiven:
    """The type of :data:`NOT_GIVEN`, a default that differs from an explicit None."""

    def __repr__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN = NotGiven()


@dataclasses.dataclass
class ClientConfig:
    base_url: str
    credential: Credential
    api_version: str | None
    timeout: httpx.Timeout
    retry: RetryPolicy
    auto_idempotency_keys: bool
    response_hook: ResponseHook | None

    @classmethod
    def build(cls, *, base_url: str | None, api_key: str | None,
              access_token: Credential | None, api_version: str | None,
              timeout: float | httpx.Timeout, max_retries: int,
              retry: RetryPolicy | None, auto_idempotency_keys: bool,
              response_hook: ResponseHook | None) -> ClientConfig:
        url = base_url or os.environ.get("FKOD_BASE_URL")
        if not url:
            raise ValueError("base_url is missing: pass base_url=... or set FKOD_BASE_URL.")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"base_url must be an http or https URL, got {url!r}.")

        if api_key is not None and access_token is not None:
            raise ValueError("Pass either api_key or access_token, not both.")
        credential: Credential | None = api_key if api_key is not None else access_token
        if credential is None:
            credential = os.environ.get("FKOD_API_KEY")
        if not credential:
            raise ValueError("No credential: pass api_key=..., access_token=..., "
                             "or set FKOD_API_KEY.")

        return cls(
            base_url=url.rstrip("/"),
            credential=credential,
            api_version=api_version,
            timeout=timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout),
            retry=retry or RetryPolicy(max_retries=max_retries),
            auto_idempotency_keys=auto_idempotency_keys,
            response_hook=response_hook,
        )

    def headers(self) -> dict[str, str]:
        """Return the headers every call sends; the credential is read again each time."""
        token = self.credential() if callable(self.credential) else self.credential
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json",
                   "User-Agent": USER_AGENT}
        if self.api_version:
            headers["FKOD-Version"] = self.api_version
        return headers


def idempotency_key_for(method: str, given: str | NotGiven | None, auto: bool
                        ) -> str | None:
    """Return the Idempotency-Key to send with one logical call, the same on every retry."""
    if method != "POST":
        return None
    if isinstance(given, NotGiven):
        return str(uuid.uuid4()) if auto else None
    return given


def may_retry(method: str, idempotency_key: str | None) -> bool:
    """Return whether repeating the request cannot apply it twice."""
    return method != "POST" or idempotency_key is not None


def should_retry_status(status: int, body: Any) -> bool:
    if status in RETRYABLE_STATUSES:
        return True
    return status == 409 and isinstance(body, dict) and body.get("code") == IN_PROGRESS_CODE


def decode_json(response: httpx.Response) -> Any:
    """Return the decoded JSON body, or None for an empty or non-JSON body."""
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return None


def clean_params(params: dict[str, Any]) -> dict[str, Any]:
    """Drop the query parameters left as None."""
    return {name: value for name, value in params.items() if value is not None}


def delay_after_transport_error(config: ClientConfig, attempt: int, retryable: bool,
                                method: str, path: str, exc: httpx.TransportError) -> float:
    """Return the wait before retrying a request that got no response, or raise."""
    delay = config.retry.backoff(attempt + 1, None) if retryable else None
    if delay is not None:
        return delay
    if isinstance(exc, httpx.TimeoutException):
        raise ApiTimeoutError(f"{method} {path} timed out: {exc}") from exc
    raise ApiConnectionError(f"{method} {path} failed: {exc}") from exc


def delay_after_error_status(config: ClientConfig, attempt: int, retryable: bool,
                             response: httpx.Response, body: Any) -> float:
    """Return the wait before retrying an error response, or raise its ApiError."""
    delay = None
    if retryable and should_retry_status(response.status_code, body):
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        delay = config.retry.backoff(attempt + 1, retry_after)
    if delay is None:
        raise error_from_response(response.status_code, response.headers, body)
    return delay


def report_response(config: ClientConfig, method: str, path: str, response: httpx.Response,
                    attempt: int, key: str | None) -> None:
    """Pass the response's details to the client's response hook, if it has one."""
    hook = config.response_hook
    if hook is None:
        return
    hook(ResponseInfo(
        method=method, path=path, status=response.status_code, attempt=attempt,
        request_id=response.headers.get("x-request-id"),
        api_version=response.headers.get("fkod-version"),
        rate_limit=RateLimit.from_headers(response.headers), idempotency_key=key,
        replayed=response.headers.get("idempotent-replayed") == "true",
    ))
