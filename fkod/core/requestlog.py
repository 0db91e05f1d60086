"""Request ids, the one log line per request, and the two log formats.

The tween gives every request an id (the caller's ``X-Request-Id`` when it is
a safe token, otherwise a new ``req_…``), puts it on every log record emitted
while the request runs, returns it in ``X-Request-Id``, logs one summary
line when the response is ready and counts the request in the metrics.

Records are written as readable lines (:class:`ReadableFormatter`) or as one
JSON object per line (:class:`JsonFormatter`), chosen by ``fkod.logging.format``
(json by default when ``fkod.environment`` is production). Both formatters
redact secrets: a field whose name says it holds one (authorization, api_key,
token, password, secret, cookie, ...) is written as ``[redacted]``, and API
keys, bearer tokens and JWTs are masked wherever they appear in a message.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
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


REDACTED = "[redacted]"

# Field names whose values are never logged. Matched as a part of the name, so
# ``webhook_secret``, ``access_token`` and ``smtp_password`` are covered too.
_SECRET_FIELD = re.compile(
    r"(authorization|api_?key$|^key$|secret|token|password|passwd|cookie|pepper|"
    r"private_key|credential|signature|otp|totp_code)", re.IGNORECASE)
# Fields that name a secret without holding one.
_SAFE_FIELDS = frozenset({"key_prefix", "key_id", "api_key_id", "token_type", "key_name"})

# Values that look like a credential wherever they appear in a message: API
# keys (sk_live_/sk_test_ and the like), webhook secrets (whsec_), bearer
# tokens and JWTs.
_SECRET_VALUE = re.compile(
    r"(?:\b(?:sk|pk|rk|whsec|fkod)_(?:live_|test_)?[A-Za-z0-9_-]{16,})"
    r"|(?:(?<=Bearer )[A-Za-z0-9._~+/=-]{8,})"
    r"|(?:\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*)",
)

# Attributes every LogRecord has; the rest came from ``extra``.
_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime",
                                                                   "request_id"}


def is_secret_field(name: str) -> bool:
    return name not in _SAFE_FIELDS and bool(_SECRET_FIELD.search(name))


def redact_text(text: str) -> str:
    """Mask API keys, webhook secrets, bearer tokens and JWTs in free text."""
    return _SECRET_VALUE.sub(REDACTED, text)


def redact(value, name: str = ""):
    """Return ``value`` with secret fields and secret-looking strings masked."""
    if name and is_secret_field(name):
        return REDACTED if value not in (None, "") else value
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {key: redact(item, str(key)) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [redact(item) for item in value]
    return value


def _extra_fields(record: logging.LogRecord) -> dict:
    return {name: value for name, value in vars(record).items()
            if name not in _RECORD_ATTRIBUTES and not name.startswith("_")}


class ReadableFormatter(logging.Formatter):
    """Readable lines with the request id; ``%(request_id)s`` is ``-`` outside requests."""

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "request_id"):
            record.request_id = current_request_id.get() or "-"
        return redact_text(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, request id and the extras.

    The extras are the fields passed with ``extra=``; secrets among them are
    redacted. An exception is written as ``exc_info``, its formatted traceback.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact_text(record.getMessage()),
            "request_id": getattr(record, "request_id", None) or current_request_id.get(),
        }
        for name, value in _extra_fields(record).items():
            if name not in entry:
                entry[name] = redact(value, name)
        if record.exc_info:
            entry["exc_info"] = redact_text(self.formatException(record.exc_info))
        if record.stack_info:
            entry["stack_info"] = redact_text(self.formatStack(record.stack_info))
        return json.dumps(entry, default=str, ensure_ascii=False)


def log_format(settings) -> str:
    """Return ``json`` or ``text``: the setting, else json in production."""
    chosen = settings.get("fkod.logging.format") or ""
    if chosen:
        return chosen
    return "json" if settings.get("fkod.environment") == "production" else "text"


def apply_log_format(settings) -> None:
    """Give the root logger's handlers the formatter ``fkod.logging.format`` chooses.

    The .ini file's ``[formatter_*]`` sections configure logging before the
    application starts; this switches handlers that use one of the two
    platform formatters to the chosen one, so the setting wins. Handlers with
    another formatter (a test runner's, say) are left alone.
    """
    wanted = log_format(settings)
    for handler in logging.getLogger().handlers:
        current = handler.formatter
        if wanted == "json" and isinstance(current, ReadableFormatter):
            handler.setFormatter(JsonFormatter())
        elif wanted == "text" and isinstance(current, JsonFormatter):
            handler.setFormatter(ReadableFormatter(
                "%(asctime)s %(levelname)-5s [%(name)s] [%(request_id)s] %(message)s"))


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
            _observe(request, response)
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
    route_name = request.matched_route.name if request.matched_route else None
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
            "route_name": route_name,
            "status": response.status_code,
            "duration_ms": duration_ms,
            "partner_id": getattr(principal, "partner_id", None),
            "key_prefix": getattr(principal, "key_prefix", None),
            "error_code": request.environ.get("fkod.error_code"),
        },
    )


def _observe(request, response) -> None:
    try:
        from fkod.core import metrics

        metrics.observe_request(request, response)
    except Exception:  # metrics never break a response
        log.debug("request metrics failed", exc_info=True)


def includeme(config):
    # Outermost tween, so the id exists before anything else runs and even
    # pyramid_tm's errors carry it.
    config.add_tween("fkod.core.requestlog.request_id_tween_factory",
                     over="pyramid_tm.tm_tween_factory")
