"""Exceptions raised by the SDK.

Every error the API returns is one JSON envelope::

    {"status": 404, "code": "not_found", "message": "...",
     "errors": [{"location": "path", "name": "id", "description": "..."}],
     "request_id": "..."}

:class:`ApiError` carries each of those fields. Its subclasses let callers catch
one HTTP status without comparing numbers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any


class FkodError(Exception):
    """Base class of every exception the SDK raises."""


@dataclasses.dataclass(frozen=True)
class FieldError:
    """One invalid input named by an error response."""

    location: str
    name: str
    description: str


@dataclasses.dataclass(frozen=True)
class RateLimit:
    """The rate-limit headers of a gateway response, for its tightest window."""

    limit: int
    remaining: int
    # Unix seconds when the oldest counted calls leave the window.
    reset_at: int

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> RateLimit | None:
        """Read ``X-RateLimit-*``; return None when the response carries none."""
        try:
            return cls(
                limit=int(headers["x-ratelimit-limit"]),
                remaining=int(headers["x-ratelimit-remaining"]),
                reset_at=int(headers["x-ratelimit-reset"]),
            )
        except (KeyError, ValueError):
            return None


class ApiError(FkodError):
    """An error response from the API.

    ``status`` is the HTTP status, ``code`` the stable machine-readable code
    (``validation_failed``, ``not_found``, ``rate_limited`` ...), ``errors`` the
    invalid fields, ``request_id`` the ``X-Request-Id`` to quote to support, and
    ``retry_after`` the ``Retry-After`` seconds when the response sent one.
    """

    def __init__(
        self,
        *,
        status: int,
        code: str,
        message: str,
        errors: list[FieldError],
        request_id: str | None,
        headers: Mapping[str, str],
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors
        self.request_id = request_id
        self.headers = dict(headers)
        self.body = body
        self.retry_after = parse_retry_after(headers.get("retry-after"))
        self.rate_limit = RateLimit.from_headers(headers)

    def field_names(self) -> list[str]:
        """Return the names of the invalid fields, in the order the API listed them."""
        return [error.name for error in self.errors]

    def __str__(self) -> str:
        text = f"{self.status} {self.code}: {self.message}"
        if self.request_id:
            text += f" (request id {self.request_id})"
        return text


class BadRequestError(ApiError):
    """400 or 422: the request is invalid; ``errors`` names the fields."""


class AuthenticationError(ApiError):
    """401: the API key or access token is missing, invalid, expired or revoked."""


class PermissionDeniedError(ApiError):
    """403: the credential lacks a scope or the caller may not act on the resource."""


class NotFoundError(ApiError):
    """404: no such resource in the caller's tenancy."""


class ConflictError(ApiError):
    """409: the request conflicts with the current state, such as a duplicate email."""


class RateLimitError(ApiError):
    """429: a rate limit rejected the call. ``retry_after`` is the wait in seconds."""


class ServerError(ApiError):
    """5xx: the platform failed or is unavailable."""


class ApiConnectionError(FkodError):
    """The request did not get a response: connection refused or reset, DNS failure."""


class ApiTimeoutError(ApiConnectionError):
    """The request timed out."""


class WebhookVerificationError(FkodError):
    """A webhook delivery failed verification.

    ``reason`` is one of ``missing_signature``, ``malformed_header``,
    ``timestamp_outside_tolerance``, ``signature_mismatch`` and
    ``invalid_payload`` (a correctly signed body that is not a JSON object).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class OAuthError(FkodError):
    """An error response of the OAuth endpoints (RFC 6749 section 5.2).

    ``error`` is the OAuth error code (``invalid_grant``, ``invalid_client`` ...).
    """

    def __init__(self, *, status: int, error: str, description: str | None,
                 request_id: str | None) -> None:
        super().__init__(f"{status} {error}: {description or 'no description'}")
        self.status = status
        self.error = error
        self.description = description
        self.request_id = request_id


_ERROR_CLASSES: dict[int, type[ApiError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: BadRequestError,
    429: RateLimitError,
}


def parse_retry_after(value: str | None) -> float | None:
    """Return the seconds of a ``Retry-After`` header, or None when absent or not a number.

    The platform sends whole seconds. An HTTP date is not parsed and counts as absent.
    """
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def error_from_response(status: int, headers: Mapping[str, str], body: Any) -> ApiError:
    """Build the ApiError subclass for an error response and its decoded JSON body.

    A body that is not the envelope (a proxy's HTML page, for instance) still gives
    an error with the status, the code ``http_error`` and the request id header.
    """
    envelope = body if isinstance(body, dict) else {}
    raw_errors = envelope.get("errors")
    field_errors = [
        FieldError(
            location=str(item.get("location", "")),
            name=str(item.get("name", "")),
            description=str(item.get("description", "")),
        )
        for item in (raw_errors if isinstance(raw_errors, list) else [])
        if isinstance(item, dict)
    ]
    if status >= 500:
        error_class: type[ApiError] = ServerError
    else:
        error_class = _ERROR_CLASSES.get(status, ApiError)
    return error_class(
        status=status,
        code=str(envelope.get("code") or "http_error"),
        message=str(envelope.get("message") or f"The API returned HTTP {status}."),
        errors=field_errors,
        request_id=headers.get("x-request-id") or envelope.get("request_id"),
        headers=headers,
        body=body,
    )
