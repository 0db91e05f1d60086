"""Request ids and the one log line per request.

The tween gives every request an id (the caller's ``X-Request-Id`` when it is
a safe token, otherwise a new ``req_…``), puts it on every log record emitted
while the request runs, returns it in ``X-Request-Id`` and logs one summary
line when the response is ready.
"""

from __future__ import annotations

import contextvars
import logging
import re
import secrets
import time

log = logging.getLogger(__name__)

current_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "fkod_request_id", default=None
)

_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{8,64}$")


def new_request_id() -> str:
    return "req_" + secrets.token_hex(12)


class ReadableFormatter(logging.Formatter):
    """Readable lines with the request id; ``%(request_id)s`` is ``-`` outside requests."""

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "request_id"):
            record.request_id = current_request_id.get() or "-"
        return super().format(record)


def request_id_tween_factory(handler, registry):
    def request_id_tween(request):
        incoming = request.headers.get("X-Request-Id", "")
        request.request_id = incoming if _SAFE_REQUEST_ID.match(incoming) else new_request_id()
        request.started_at = time.perf_counter()
        token = current_request_id.set(request.request_id)
        try:
            try:
                response = handler(request)
            except Exception as exc:
                # Raised after the exception views ran, such as a failed commit.
                response = _render_late_error(request, exc)
            response.headers["X-Request-Id"] = request.request_id
            _log_request(request, response)
            return response
        finally:
            current_request_id.reset(token)

    return request_id_tween


def _render_late_error(request, exc: Exception):
    import sqlalchemy.exc

    from fkod.core import errors

    if isinstance(exc, sqlalchemy.exc.OperationalError):
        return errors.database_unavailable_view(exc, request)
    return errors.internal_error_view(exc, request)


# Routes whose path carries a secret token, logged by their pattern only.
SECRET_PATH_ROUTES = frozenset({"/api/partners/invitations/{token}/accept"})


def _log_request(request, response) -> None:
    duration_ms = int((time.perf_counter() - request.started_at) * 1000)
    principal = request.environ.get("fkod.principal")
    route = request.matched_route.pattern if request.matched_route else None
    path = request.environ.get("PATH_INFO", "")
    if route in SECRET_PATH_ROUTES:
        # The path contains a bearer token, so the route pattern is logged instead.
        path = route
    # Escaped, so a %0a in a URL cannot start a forged line in the log.
    path = "".join(char if char.isprintable() else f"\\x{ord(char):02x}" for char in path)
    log.info(
        "%s %s %s %dms",
        request.method,
        path,
        response.status_code,
        duration_ms,
        extra={
            "method": request.method,
            "path": path,
            "route": route,
            "status": response.status_code,
            "duration_ms": duration_ms,
            "partner_id": getattr(principal, "partner_id", None),
            "key_prefix": getattr(principal, "key_prefix", None),
            "error_code": request.environ.get("fkod.error_code"),
        },
    )


def includeme(config):
    # Outermost tween, so the id exists before anything else runs and even
    # pyramid_tm's errors carry it.
    config.add_tween("fkod.core.requestlog.request_id_tween_factory",
                     over="pyramid_tm.tm_tween_factory")
