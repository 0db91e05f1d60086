"""The JSON error envelope and the exceptions that produce it.

Every error of the JSON API has one shape::

    {"status": 404, "code": "not_found", "message": "...",
     "errors": [{"location": "path", "name": "id", "description": "..."}],
     "request_id": "..."}

Services raise the exceptions below; the exception views turn them, Pyramid's
own HTTP errors and anything unexpected into that envelope.
"""

from __future__ import annotations

import logging

import sqlalchemy.exc
from pyramid import httpexceptions
from pyramid.exceptions import URLDecodeError
from pyramid.response import Response

from fkod.core import jsonutil

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error the client can act on, rendered as the JSON envelope."""

    status = 400
    code = "invalid_request"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None,
                 errors: list[dict] | None = None, headers: dict | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.errors = errors or []
        self.headers = headers or {}


def field_error(location: str, name: str, description: str) -> dict:
    """Describe one invalid field for the ``errors`` list."""
    return {"location": location, "name": name, "description": description}


class ValidationFailed(ApiError):
    status = 400
    code = "validation_failed"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"

    def __init__(self, message: str, **kwargs):
        kwargs.setdefault("headers", {"WWW-Authenticate": 'Bearer realm="fkod"'})
        super().__init__(message, **kwargs)


class Forbidden(ApiError):
    status = 403
    code = "forbidden"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class Conflict(ApiError):
    status = 409
    code = "conflict"


class PayloadTooLarge(ApiError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(ApiError):
    status = 415
    code = "unsupported_media_type"


class RateLimited(ApiError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int, **kwargs):
        super().__init__(message, **kwargs)
        self.retry_after = retry_after
        self.headers["Retry-After"] = str(retry_after)


class ServiceUnavailable(ApiError):
    status = 503
    code = "service_unavailable"

    def __init__(self, message: str, *, retry_after: int = 5, **kwargs):
        super().__init__(message, **kwargs)
        self.headers["Retry-After"] = str(retry_after)


def envelope_response(request, status: int, code: str, message: str,
                      errors: list[dict] | None = None, headers: dict | None = None) -> Response:
    """Build the JSON envelope response; every JSON API error goes through here."""
    body = {
        "status": status,
        "code": code,
        "message": message,
        "errors": errors or [],
        "request_id": getattr(request, "request_id", None),
    }
    response = Response(
        body=jsonutil.dumps(body),
        status=status,
        content_type="application/json",
        charset="utf-8",
    )
    for name, value in (headers or {}).items():
        response.headers[name] = value
    request.environ["fkod.error_code"] = code
    return response


def api_error_view(exc: ApiError, request):
    return envelope_response(request, exc.status, exc.code, exc.message, exc.errors, exc.headers)


_HTTP_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def raw_path(request) -> str:
    """Return the request path as received, because ``request.path`` raises on invalid UTF-8."""
    return request.environ.get("PATH_INFO", "")


def url_decode_error_view(exc: URLDecodeError, request):
    return envelope_response(
        request, 400, "invalid_url_encoding",
        "The request path is not valid UTF-8 once percent-decoded.",
        [field_error("path", "", "not valid UTF-8")],
    )


def http_exception_view(exc: httpexceptions.HTTPException, request):
    """Render Pyramid's own HTTP errors (404 for unknown routes, 405, ...) as the envelope."""
    if exc.status_int < 400:
        return exc
    code = _HTTP_CODES.get(exc.status_int, "http_error")
    if exc.status_int == 404:
        message = f"No resource at {raw_path(request)}."
    elif exc.status_int == 405:
        message = f"Method {request.method} is not allowed on {raw_path(request)}."
    else:
        message = exc.explanation or exc.title
    headers = {}
    if "Allow" in exc.headers:
        headers["Allow"] = exc.headers["Allow"]
    return envelope_response(request, exc.status_int, code, message, headers=headers)


def database_unavailable_view(exc: sqlalchemy.exc.OperationalError, request):
    """Render a lost or unreachable database as a 503 the client may retry, not a 500."""
    log.warning("database unavailable", extra={"error": str(exc.orig)[:200]})
    return envelope_response(
        request, 503, "database_unavailable",
        "The database is unavailable; retry the request later.", headers={"Retry-After": "5"},
    )


def internal_error_view(exc: Exception, request):
    log.error("unhandled exception", exc_info=exc)
    return envelope_response(
        request, 500, "internal_error",
        "An internal error occurred; the request id identifies it in our logs.",
    )


def cornice_error_handler(request):
    """Turn the errors Cornice collected in ``request.errors`` into the envelope."""
    errors = [
        field_error(error.get("location", "body"), error.get("name") or "",
                    str(error.get("description", "")))
        for error in request.errors
    ]
    status = getattr(request.errors, "status", 400) or 400
    code = _HTTP_CODES.get(status, "validation_failed") if status != 400 else "validation_failed"
    message = errors[0]["description"] if errors else "The request is invalid."
    return envelope_response(request, status, code, message, errors)


def includeme(config):
    config.add_exception_view(api_error_view, context=ApiError)
    config.add_exception_view(url_decode_error_view, context=URLDecodeError)
    config.add_exception_view(http_exception_view, context=httpexceptions.HTTPException)
    config.add_exception_view(database_unavailable_view, context=sqlalchemy.exc.OperationalError)
    config.add_exception_view(internal_error_view, context=Exception)
