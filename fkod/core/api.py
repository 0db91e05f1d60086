"""Declaring JSON API operations on Cornice services.

Each view is registered with :func:`operation`, which records what the OpenAPI
generator needs (summary, credential, scope or role permission, request and
response schemas, errors) and runs the request checks in a fixed order before
the view: credential, scope or permission, rate limit, query string, body.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import email.message
import json
import re
from collections.abc import Callable, Sequence

import marshmallow
from cornice import Service
from marshmallow import fields, validate
from pyramid.response import Response

from fkod.core import idempotency, jsonutil, versions
from fkod.core.errors import (
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
    cornice_error_handler,
    field_error,
)
from fkod.core.schemas import QuerySchema, Text

# Credential kinds an operation can require; fkod.core.auth.security and
# fkod.core.gateway implement the checks.
AUTH_NONE = "none"
AUTH_MEMBER = "member"
AUTH_API_KEY = "api_key"
# An admin access token from /api/admin/auth/login; fkod.admin.auth checks it.
AUTH_ADMIN = "admin"
# A login access token of any active user, partner member or customer.
AUTH_USER = "user"
AUTH_KINDS = (AUTH_NONE, AUTH_MEMBER, AUTH_API_KEY, AUTH_ADMIN, AUTH_USER)

MAX_JSON_DEPTH = 32

# Errors every operation of a kind can return, for the OpenAPI document. Each
# code is one that the kind's check raises: fkod.core.auth.security for
# members, users and anonymous callers, fkod.admin.auth for admins and
# fkod.core.gateway for API keys and OAuth access tokens.
_LOGIN_TOKEN_ERRORS = ((401, "invalid_authorization"), (401, "missing_credentials"),
                       (401, "invalid_token"), (401, "token_revoked"))
COMMON_ERRORS = {
    # Operations without a credential are rate limited per client address
    # (fkod.core.auth.security); /health, /ready and the JWKS are exempt.
    AUTH_NONE: ((429, "rate_limited"),),
    AUTH_MEMBER: _LOGIN_TOKEN_ERRORS + ((403, "not_a_partner_member"),
                                        (403, "partner_suspended"),
                                        (403, "missing_permission")),
    # The gateway takes API keys and OAuth access tokens (fkod.core.gateway).
    AUTH_API_KEY: ((401, "invalid_authorization"), (401, "missing_credentials"),
                   (401, "invalid_api_key"), (401, "api_key_revoked"), (401, "api_key_expired"),
                   (401, "api_key_rotated"), (401, "invalid_token"), (401, "token_expired"),
                   (401, "token_revoked"), (401, "oauth_client_deleted"),
                   (403, "missing_scope"), (403, "partner_suspended"), (403, "ip_not_allowed"),
                   (403, "partner_not_verified"), (429, "rate_limited"),
                   (503, "rate_limiter_unavailable")),
    AUTH_ADMIN: ((401, "invalid_authorization"), (401, "missing_credentials"),
                 (401, "invalid_token"), (403, "missing_permission")),
    AUTH_USER: _LOGIN_TOKEN_ERRORS,
}


@dataclasses.dataclass(frozen=True)
class Operation:
    """The contract of one method of one service: input, output, errors and credential."""

    method: str
    summary: str
    auth: str
    scope: str | None = None
    permission: str | None = None
    body: type[marshmallow.Schema] | None = None
    query: type[marshmallow.Schema] | None = None
    response: type[marshmallow.Schema] | None = None
    status: int = 200
    paginated: bool = False
    errors: tuple[tuple[int, str], ...] = ()
    no_store: bool = False
    # Name of the setting that contains the maximum file size, in bytes, of a
    # multipart/form-data body. When set, the operation accepts such a body as
    # well as JSON, and ``body`` loads its fields (see load_multipart).
    multipart_max_bytes_setting: str | None = None
    # The view reads the raw body itself (an inbound event whose signature covers
    # the exact bytes), so ``body`` stays None and no body check runs.
    raw_body: bool = False

    @property
    def all_errors(self) -> tuple[tuple[int, str], ...]:
        body_errors = ((400, "validation_failed"),) if (self.body or self.query) else ()
        media_errors = ((413, "payload_too_large"), (415, "unsupported_media_type")) \
            if self.body else ()
        return COMMON_ERRORS[self.auth] + body_errors + media_errors + self.errors


class Dumped(dict):
    """A response body the view already serialized; rendered as is."""


@dataclasses.dataclass
class Page:
    """One page of a list, before rendering into the list envelope."""

    items: Sequence
    next_cursor: str | None


# Authentication and the gateway checks live in fkod.core.auth; they register
# themselves here so this module does not import them.
_request_checks: dict[str, Callable] = {}


def register_auth_check(auth: str, check: Callable) -> None:
    _request_checks[auth] = check


def operation(service: Service, method: str, *, summary: str, auth: str, **kwargs):
    """Register the decorated function as ``method`` of ``service``.

    Keyword arguments are the fields of :class:`Operation`. The view receives
    the request with ``request.validated`` holding the loaded body fields and
    ``request.query`` the loaded query parameters, and returns what ``response``
    renders (a model object or a dict), a :class:`Dumped` body, a :class:`Page`
    or a ``Response``. A POST sent with an ``Idempotency-Key`` header claims the
    key after the checks, and a retry gets the stored response (see
    :mod:`fkod.core.idempotency`).
    """
    if auth not in AUTH_KINDS:
        raise ValueError(f"unknown auth kind {auth!r}; expected one of {AUTH_KINDS}")
    op = Operation(method=method, summary=summary, auth=auth, **kwargs)

    def decorate(view):
        def validator(request, **_ignored):
            idempotency.buffer_body(request)
            check_request(request, op)
            idempotency.claim(request, op)

        def run(request):
            replay = idempotency.replayed_response(request)
            if replay is not None:
                return replay
            result = view(request)
            response = result if isinstance(result, Response) else render(request, op, result)
            idempotency.store_response(request, op, response)
            return response

        run.__name__ = view.__name__
        run.__doc__ = view.__doc__
        run.operation = op
        service.add_view(method, run, validators=(validator,),
                         error_handler=cornice_error_handler)
        view.operation = op
        return view

    return decorate


def check_request(request, op: Operation) -> None:
    """Run the checks of ``op`` in order; each raises an ApiError on failure."""
    request.operation = op
    check = _request_checks.get(op.auth)
    if check is not None:
        check(request, op)

    request.query = load_query(request, op.query) if op.query else {}
    if op.body is not None and op.multipart_max_bytes_setting and is_multipart(request):
        max_bytes = request.registry.settings[op.multipart_max_bytes_setting]
        request.validated = load_multipart(request, op.body, max_bytes)
    elif op.body is not None:
        request.validated = load_body(request, op.body)
    elif not op.raw_body:
        refuse_unexpected_body(request)


def render(request, op: Operation, result) -> Response:
    response = request.response
    response.status_code = op.status
    if op.no_store:
        response.headers["Cache-Control"] = "no-store"
    if result is None and op.status == 204:
        # A 204 has no body, so it describes none.
        response.content_type = None
        return response
    if isinstance(result, Dumped):
        payload = result
    elif op.paginated:
        schema = op.response(many=True) if op.response else None
        data = schema.dump(result.items) if schema else list(result.items)
        payload = {"data": data, "has_more": result.next_cursor is not None,
                   "next_cursor": result.next_cursor}
    elif op.response is not None:
        payload = op.response().dump(result)
    else:
        payload = result
    response.body = jsonutil.dumps(payload)
    response.content_type = "application/json"
    response.charset = "utf-8"
    return response


def read_body(request, max_bytes: int) -> bytes:
    """Read at most ``max_bytes`` of the body; a larger body is a 413."""
    length = request.content_length
    if length is not None and length > max_bytes:
        raise PayloadTooLarge(f"The request body is larger than {max_bytes} bytes.")
    # Reading body_file keeps the body in memory: request.body would copy a body
    # over 10 KiB to a temporary file that nothing closes.
    raw = request.body_file.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"The request body is larger than {max_bytes} bytes.")
    request.body = raw
    return raw


# No field takes an integer this long; Python refuses to convert one of over
# 4,300 digits with an error that names its own internals.
MAX_INT_DIGITS = 100


class _NumberTooLong(Exception):
    pass


def _bounded_int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        raise _NumberTooLong
    return int(digits)


def parse_json_object(raw: bytes) -> dict:
    """Decode a UTF-8 JSON object; invalid UTF-8, invalid JSON and non-objects are 400s."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationFailed(
            f"The request body is not valid UTF-8 (byte {exc.start}).",
            code="invalid_json", errors=[field_error("body", "", "not valid UTF-8")],
        ) from None
    try:
        value = json.loads(text, parse_int=_bounded_int)
    except _NumberTooLong:
        raise ValidationFailed(
            f"The request body has a number of more than {MAX_INT_DIGITS} digits.",
            code="invalid_json",
            errors=[field_error("body", "", f"a number has more than {MAX_INT_DIGITS} digits")],
        ) from None
    except RecursionError:
        raise ValidationFailed(
            "The request body is nested too deeply.", code="invalid_json",
            errors=[field_error("body", "", f"nested deeper than {MAX_JSON_DEPTH} levels")],
        ) from None
    except ValueError as exc:
        raise ValidationFailed(
            f"The request body is not valid JSON: {exc}.", code="invalid_json",
            errors=[field_error("body", "", "not valid JSON")],
        ) from None
    if not isinstance(value, dict):
        raise ValidationFailed(
            "The request body must be a JSON object.", code="invalid_json",
            errors=[field_error("body", "", f"expected an object, got {type(value).__name__}")],
        )
    if _depth(value) > MAX_JSON_DEPTH:
        raise ValidationFailed(
            "The request body is nested too deeply.", code="invalid_json",
            errors=[field_error("body", "", f"nested deeper than {MAX_JSON_DEPTH} levels")],
        )
    if _has_lone_surrogate(value):
        # Valid JSON escapes such as "\ud83d" without their pair decode to
        # text that cannot be stored or sent as UTF-8.
        raise ValidationFailed(
            "The request body contains an unpaired UTF-16 surrogate escape.", code="invalid_json",
            errors=[field_error("body", "", "unpaired surrogate in a string")],
        )
    return value


def _has_lone_surrogate(value) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_has_lone_surrogate(key) or _has_lone_surrogate(item)
                   for key, item in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(item) for item in value)
    return False


def _depth(value, level: int = 1) -> int:
    if level > MAX_JSON_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(item, level + 1) for item in value.values()), default=level)
    if isinstance(value, list):
        return max((_depth(item, level + 1) for item in value), default=level)
    return level


def require_json_content_type(request) -> None:
    if (request.content_type or "").lower() != "application/json":
        shown = request.content_type or "none"
        raise UnsupportedMediaType(
            f"The request body must be sent as application/json, not {shown}.",
            errors=[field_error("header", "Content-Type", "must be application/json")],
        )


def load_body(request, schema_class: type[marshmallow.Schema]) -> dict:
    require_json_content_type(request)
    max_bytes = request.registry.settings["fkod.api.max_body_bytes"]
    data = parse_json_object(read_body(request, max_bytes))
    version = request.environ.get("fkod.api_version")
    if version is not None:
        route = request.matched_route.pattern if request.matched_route else ""
        data = versions.upgrade_request(version, route, request.method, data)
    try:
        return schema_class().load(data)
    except marshmallow.ValidationError as exc:
        errors = flatten_errors("body", exc.normalized_messages())
        raise ValidationFailed(_summary(errors), errors=errors) from None


# Multipart bodies -------------------------------------------------------------

# Room beside the file for the part headers, the boundaries and the text fields.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
MAX_MULTIPART_PARTS = 20


@dataclasses.dataclass(frozen=True)
class UploadedFile:
    """A file part of a multipart/form-data body."""

    filename: str
    content_type: str
    data: bytes


def is_multipart(request) -> bool:
    return (request.content_type or "").lower() == "multipart/form-data"


def _multipart_boundary(request) -> bytes | None:
    header = email.message.Message()
    header["Content-Type"] = request.headers.get("Content-Type", "")
    boundary = header.get_param("boundary")
    if not isinstance(boundary, str) or not 0 < len(boundary) <= 70 or not boundary.isascii():
        return None
    return boundary.encode("ascii")


def _invalid_form(description: str) -> ValidationFailed:
    return ValidationFailed(f"The multipart/form-data body is invalid: {description}.",
                            code="invalid_multipart",
                            errors=[field_error("body", "", description)])


def load_multipart(request, schema_class: type[marshmallow.Schema], max_file_bytes: int) -> dict:
    """Load a multipart/form-data body with ``schema_class``.

    Text fields are loaded as strings and file parts as :class:`UploadedFile`.
    The body may be ``max_file_bytes`` plus MULTIPART_OVERHEAD_BYTES long (413
    beyond), so the view checks the size of the file itself. A body without
    its closing boundary, such as a truncated upload, a field given twice and
    more than MAX_MULTIPART_PARTS parts are 400s.
    """
    raw = read_body(request, max_file_bytes + MULTIPART_OVERHEAD_BYTES)
    boundary = _multipart_boundary(request)
    if boundary is None:
        raise _invalid_form("the Content-Type header has no valid boundary parameter")
    delimiter = b"--" + boundary
    if delimiter + b"--" not in raw:
        raise _invalid_form("the closing boundary is missing, so the body is incomplete")
    if raw.count(delimiter) > MAX_MULTIPART_PARTS + 1:
        raise _invalid_form(f"it has more than {MAX_MULTIPART_PARTS} parts")
    try:
        # WebOb parses the body that read_body left in memory.
        form = request.POST
    except ValueError as exc:
        raise _invalid_form(str(exc)[:200]) from None

    data, errors = {}, []
    for name in dict.fromkeys(form.keys()):
        values = form.getall(name)
        if len(values) > 1:
            errors.append(field_error("body", name, "given more than once"))
            continue
        value = values[0]
        if getattr(value, "filename", None) is not None:
            value = UploadedFile(filename=value.filename, content_type=(value.type or "").lower(),
                                 data=value.value)
        data[name] = value
    if errors:
        raise ValidationFailed(_summary(errors), errors=errors)
    try:
        return schema_class().load(data)
    except marshmallow.ValidationError as exc:
        errors = flatten_errors("body", exc.normalized_messages())
        raise ValidationFailed(_summary(errors), errors=errors) from None


def refuse_unexpected_body(request) -> None:
    """Reject a body sent to an operation without a body schema (an empty JSON object passes)."""
    if request.method not in ("POST", "PUT", "PATCH", "DELETE"):
        return
    max_bytes = request.registry.settings["fkod.api.max_body_bytes"]
    raw = read_body(request, max_bytes)
    if not raw.strip():
        return
    require_json_content_type(request)
    data = parse_json_object(raw)
    if data:
        raise ValidationFailed(
            "This operation takes no fields in its body.",
            errors=[field_error("body", name, "unknown field") for name in data],
        )


def load_query(request, schema_class: type[marshmallow.Schema]) -> dict:
    params = {}
    errors = []
    try:
        names = list(dict.fromkeys(request.GET.keys()))
    except UnicodeDecodeError:
        raise ValidationFailed(
            "The query string is not valid UTF-8 once percent-decoded.",
            errors=[field_error("querystring", "", "not valid UTF-8")],
        ) from None
    for name in names:
        values = request.GET.getall(name)
        if len(values) > 1:
            errors.append(field_error("querystring", name, "given more than once"))
        params[name] = values[-1]
    if errors:
        raise ValidationFailed(_summary(errors), errors=errors)
    try:
        return schema_class().load(params)
    except marshmallow.ValidationError as exc:
        errors = flatten_errors("querystring", exc.normalized_messages())
        raise ValidationFailed(_summary(errors), errors=errors) from None


def flatten_errors(location: str, messages, prefix: str = "") -> list[dict]:
    """Flatten marshmallow's nested error messages into the envelope's field list."""
    errors = []
    if isinstance(messages, dict):
        for key, value in messages.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if key == "_schema":
                name = prefix
            errors.extend(flatten_errors(location, value, name))
    elif isinstance(messages, list):
        for message in messages:
            if isinstance(message, (dict, list)):
                errors.extend(flatten_errors(location, message, prefix))
            else:
                description = str(message)
                if description == "Unknown field.":
                    description = "Unknown field; it cannot be set here."
                errors.append(field_error(location, prefix, description))
    else:
        errors.append(field_error(location, prefix, str(messages)))
    return errors


def _summary(errors: list[dict]) -> str:
    first = errors[0]
    where = f"{first['name']}" if first["name"] else first["location"]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"Invalid {first['location']} field {where}: {first['description']}{more}"


# Pagination -----------------------------------------------------------------

_CURSOR = re.compile(rb"id:([0-9]{1,10})")
MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20


class Cursor(fields.Field):
    """An opaque cursor: the last id of the previous page, base64-encoded."""

    def _deserialize(self, value, attr, data, **kwargs):
        try:
            decoded = base64.urlsafe_b64decode(value.encode("ascii") + b"==")
        except (ValueError, UnicodeError, binascii.Error):
            raise marshmallow.ValidationError("Not a cursor this API returned.") from None
        match = _CURSOR.fullmatch(decoded)
        if match is None or int(match.group(1)) > 2**31 - 1:
            raise marshmallow.ValidationError("Not a cursor this API returned.")
        return int(match.group(1))


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"id:{last_id}".encode()).decode().rstrip("=")


class PageQuery(QuerySchema):
    """``limit`` (1-100, default 20) and ``cursor`` for every list."""

    limit = fields.Integer(
        load_default=DEFAULT_PAGE_SIZE, strict=False,
        validate=validate.Range(min=1, max=MAX_PAGE_SIZE),
        error_messages={"invalid": "Must be a whole number from 1 to 100."},
    )
    cursor = Cursor(load_default=None)

    @marshmallow.pre_load
    def _refuse_non_digits(self, data, **kwargs):
        # marshmallow accepts "1.0" and " 5" as integers; a page size is digits only.
        limit = data.get("limit")
        if isinstance(limit, str) and not (limit.isascii() and limit.isdigit()):
            raise marshmallow.ValidationError(
                {"limit": ["Must be a whole number from 1 to 100."]})
        if isinstance(limit, str) and len(limit) > 6:
            raise marshmallow.ValidationError({"limit": ["Must be at most 100."]})
        return data


def paginate(select, id_column, query: dict, session, *, descending: bool = True) -> Page:
    """Run ``select`` one page at a time, keyed on ``id_column`` (newest first by default)."""
    limit = query["limit"]
    cursor = query.get("cursor")
    if cursor is not None:
        select = select.where(id_column < cursor if descending else id_column > cursor)
    order = id_column.desc() if descending else id_column.asc()
    rows = session.scalars(select.order_by(order).limit(limit + 1)).all()
    has_more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(rows[-1].id) if has_more and rows else None
    return Page(rows, next_cursor)


__all__ = [
    "AUTH_ADMIN", "AUTH_API_KEY", "AUTH_MEMBER", "AUTH_NONE", "AUTH_USER", "Operation", "Page",
    "PageQuery", "Text", "UploadedFile", "operation", "paginate", "register_auth_check",
]
