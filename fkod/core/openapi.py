"""The OpenAPI 3.1 document of the running application.

The document is generated from the Cornice services registered in this
application (``registry.cornice_services``) and the :class:`fkod.core.api.Operation`
each view carries, so a plugin's routes are described exactly when the plugin
is loaded and enabled. apispec's marshmallow plugin renders the schemas into
``components/schemas``. Routes that are not Cornice operations (the OAuth
endpoints, the playground pages) are described by the table in
:mod:`fkod.core.openapi_plain`. Event types of the enabled
plugins become the top-level ``webhooks`` section.

Disabled plugins' routes stay registered and return 404 (see
:mod:`fkod.core.plugins`), so one document is built per set of enabled plugins
and cached on the registry under that set. Enabling or disabling a plugin
changes the set, so the next request builds (or reuses) the matching document.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import hashlib
import re
import threading

import marshmallow
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from apispec.ext.marshmallow.common import resolve_schema_cls

from fkod.core import jsonutil
from fkod.core.api import (
    AUTH_ADMIN,
    AUTH_API_KEY,
    AUTH_MEMBER,
    AUTH_NONE,
    AUTH_USER,
    Cursor,
    Operation,
)
from fkod.core.openapi_plain import ADMIN_SESSION_SCHEME, PORTAL_SESSION_SCHEME, plain_routes
from fkod.core.schemas import Text

OPENAPI_VERSION = "3.1.0"
TITLE = "F-KOD Partner Platform API"
API_VERSION = "1"
ERROR_SCHEMA = "Error"
ERROR_REF = f"#/components/schemas/{ERROR_SCHEMA}"

# Names of the security schemes in components/securitySchemes.
API_KEY_SCHEME = "apiKey"
LOGIN_TOKEN_SCHEME = "loginToken"  # noqa: S105 - a scheme name, not a secret
ADMIN_TOKEN_SCHEME = "adminToken"  # noqa: S105 - a scheme name, not a secret
OAUTH_SCHEME = "oauth2"

# Path segments under /api/ whose second segment names the route family.
_FAMILIES_WITH_SUBFAMILY = frozenset({"partners", "admin", "developers", "marketplace", "v1",
                                      "auth", "billing", "plugins", "webhooks"})
# A Pyramid placeholder with an optional regular expression: {id} or {id:\d+}.
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::[^}]*)?\}")

_REASONS = {200: "OK", 201: "Created", 202: "Accepted", 204: "No Content",
            304: "Not Modified", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
            404: "Not Found", 409: "Conflict", 413: "Payload Too Large",
            415: "Unsupported Media Type", 422: "Unprocessable Content",
            429: "Too Many Requests", 500: "Internal Server Error",
            502: "Bad Gateway", 503: "Service Unavailable"}


# Schema names ------------------------------------------------------------------


class SchemaNames:
    """Give each marshmallow schema (class plus modifiers) one component name.

    Two classes with one name in different modules get the module's last
    segment as a prefix, so apispec never has to rename one (it would warn).
    """

    def __init__(self):
        self._by_key: dict[tuple, str] = {}
        self._used: set[str] = {ERROR_SCHEMA}

    def __call__(self, schema) -> str:
        cls = resolve_schema_cls(schema)
        modifiers = ()
        if not isinstance(schema, type):
            modifiers = tuple((name, repr(getattr(schema, name, None)))
                              for name in ("only", "exclude", "load_only", "dump_only", "partial")
                              if getattr(schema, name, None))
        key = (cls, modifiers)
        if key in self._by_key:
            return self._by_key[key]
        base = cls.__name__.removesuffix("Schema") or cls.__name__
        if modifiers:
            base += "Part"
        name = base
        if name in self._used:
            module = cls.__module__.rsplit(".", 1)[-1].replace("_", " ").title().replace(" ", "")
            name = f"{module}{base}"
        number = 2
        candidate = name
        while candidate in self._used:
            candidate = f"{name}{number}"
            number += 1
        self._used.add(candidate)
        self._by_key[key] = candidate
        return candidate


# Building -----------------------------------------------------------------------


def enabled_plugins(registry) -> frozenset[str]:
    host = registry["plugins"]
    return frozenset(name for name in host.plugins if host.is_enabled(name))


def openapi_path(pattern: str) -> str:
    """Turn a Pyramid route pattern into an OpenAPI path (``{id:\\d+}`` becomes ``{id}``)."""
    path = _PLACEHOLDER.sub(r"{\1}", pattern)
    path = re.sub(r"\*([A-Za-z_][A-Za-z0-9_]*)$", r"{\1}", path)
    return path if path.startswith("/") else "/" + path


def path_parameter_names(pattern: str) -> list[str]:
    return _PLACEHOLDER.findall(pattern)


def route_tag(path: str) -> str:
    """Name the route family of ``path``.

    ``/api/partners/api-keys/{id}`` is ``partners/api-keys``.
    """
    segments = [segment for segment in path.split("/") if segment and not segment.startswith("{")]
    if segments and segments[0] == "api":
        segments = segments[1:]
    if not segments:
        return "api"
    if len(segments) > 1 and segments[0] in _FAMILIES_WITH_SUBFAMILY:
        return f"{segments[0]}/{segments[1]}"
    return segments[0].lstrip(".")


def operation_id(service_name: str, method: str) -> str:
    return f"{service_name}.{method.lower()}"


def security_requirement(op: Operation) -> list[dict]:
    """Return the operation's security requirement; an OAuth scope or role permission is listed."""
    if op.auth == AUTH_NONE:
        return []
    if op.auth == AUTH_API_KEY:
        scopes = [op.scope] if op.scope else []
        return [{API_KEY_SCHEME: list(scopes)}, {OAUTH_SCHEME: list(scopes)}]
    needed = [op.permission] if op.permission else []
    if op.auth == AUTH_ADMIN:
        return [{ADMIN_TOKEN_SCHEME: needed}]
    if op.auth in (AUTH_MEMBER, AUTH_USER):
        return [{LOGIN_TOKEN_SCHEME: needed}]
    raise ValueError(f"unknown auth kind {op.auth!r}")


def security_schemes(scope_catalog) -> dict:
    scopes = {scope.name: scope.description for scope in scope_catalog.grantable()}
    return {
        API_KEY_SCHEME: {
            "type": "http", "scheme": "bearer", "bearerFormat": "sk_live_… or sk_test_…",
            "description": "A partner's API key. sk_test_ keys see the sandbox, sk_live_ keys "
                           "the live data. The key's scopes must include the operation's.",
        },
        LOGIN_TOKEN_SCHEME: {
            "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
            "description": "A login access token from POST /api/auth/login, for partner "
                           "members and users. The listed value is the role permission the "
                           "member needs.",
        },
        ADMIN_TOKEN_SCHEME: {
            "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
            "description": "An admin access token from POST /api/admin/auth/login. The listed "
                           "value is the admin permission needed.",
        },
        OAUTH_SCHEME: {
            "type": "oauth2",
            "description": "An OAuth 2.0 access token. Public clients use PKCE (S256).",
            "flows": {
                "authorizationCode": {"authorizationUrl": "/oauth/authorize",
                                      "tokenUrl": "/oauth/token",
                                      "refreshUrl": "/oauth/token", "scopes": scopes},
                "clientCredentials": {"tokenUrl": "/oauth/token", "scopes": scopes},
            },
        },
        "oauthClientBasic": {
            "type": "http", "scheme": "basic",
            "description": "An OAuth client's id and secret (client_secret_basic).",
        },
        PORTAL_SESSION_SCHEME: {
            "type": "apiKey", "in": "cookie", "name": "fkod_portal_session",
            "description": "The portal's signed session cookie, set by the portal login "
                           "page. The JSON API never reads it.",
        },
        ADMIN_SESSION_SCHEME: {
            "type": "apiKey", "in": "cookie", "name": "fkod_admin_session",
            "description": "The admin console's signed session cookie (path /admin), set by "
                           "the console's sign-in page. The JSON API never reads it.",
        },
    }


def error_schema() -> dict:
    return {
        "type": "object",
        "required": ["status", "code", "message", "errors", "request_id"],
        "properties": {
            "status": {"type": "integer", "description": "The HTTP status code"},
            "code": {"type": "string", "description": "A stable machine-readable error code"},
            "message": {"type": "string"},
            "errors": {"type": "array", "items": {
                "type": "object", "required": ["location", "name", "description"],
                "properties": {"location": {"type": "string"}, "name": {"type": "string"},
                               "description": {"type": "string"}}}},
            "request_id": {"type": ["string", "null"]},
        },
    }


def error_responses(op: Operation) -> dict:
    """Describe one response per error status, its ``code`` an enum of that status's codes."""
    by_status: dict[int, list[str]] = {}
    for status, code in op.all_errors:
        codes = by_status.setdefault(status, [])
        if code not in codes:
            codes.append(code)
    responses = {}
    for status in sorted(by_status):
        codes = by_status[status]
        response = {
            "description": f"{_REASONS.get(status, 'Error')}: " + ", ".join(codes),
            "content": {"application/json": {"schema": {
                "allOf": [{"$ref": ERROR_REF}],
                "properties": {"status": {"const": status}, "code": {"enum": codes}},
            }}},
        }
        if status == 429:
            response["headers"] = {"Retry-After": {
                "description": "Seconds to wait before retrying", "schema": {"type": "integer"}}}
        responses[str(status)] = response
    return responses


def decimal_string_property(converter, field, ret: dict) -> dict:
    """Describe a field that sends a decimal number as a string, such as ``"0.001000"``.

    apispec describes every Decimal field as a JSON number; marshmallow's
    ``as_string`` and the platform's own amount fields (which set
    ``DECIMAL_STRING = True``) read and write strings instead, so no binary
    float ever carries money.
    """
    if not (isinstance(field, marshmallow.fields.Decimal) and field.as_string) \
            and not getattr(field, "DECIMAL_STRING", False):
        return {}
    described = {"type": ["string", "null"] if field.allow_none else "string",
                 "format": "decimal"}
    if isinstance(ret.get("default"), int | float | decimal.Decimal):
        described["default"] = str(ret["default"])
    return described


class _Builder:
    def __init__(self, registry, enabled: frozenset[str]):
        self.registry = registry
        self.enabled = enabled
        self.plugin = MarshmallowPlugin(schema_name_resolver=SchemaNames())
        self.spec = APISpec(title=TITLE, version=API_VERSION, openapi_version=OPENAPI_VERSION,
                            plugins=[self.plugin],
                            info={"description": "The F-KOD Partner Platform API: partners, "
                                                 "API keys, webhooks, the marketplace and the "
                                                 "F-KOD learning API."})
        self.plugin.map_to_openapi_type(Cursor, "string", None)
        self.plugin.map_to_openapi_type(Text, "string", None)
        self.plugin.converter.add_attribute_function(decimal_string_property)
        self.spec.components.schema(ERROR_SCHEMA, error_schema())

    def schema_ref(self, schema_class) -> dict:
        return self.plugin.converter.resolve_nested_schema(schema_class)

    def query_parameters(self, schema_class) -> list[dict]:
        return self.plugin.converter.schema2parameters(schema_class, location="query")

    def describe(self, service, op: Operation) -> dict:
        path = openapi_path(service.path)
        description = {
            "operationId": operation_id(service.name, op.method),
            "summary": op.summary,
            "tags": [route_tag(path)],
            "security": security_requirement(op),
        }
        parameters = [{"name": name, "in": "path", "required": True,
                       "schema": {"type": "string"}}
                      for name in path_parameter_names(service.path)]
        if op.query is not None:
            parameters += self.query_parameters(op.query)
        if parameters:
            description["parameters"] = parameters
        body = self.request_body(op)
        if body is not None:
            description["requestBody"] = body
        description["responses"] = {str(op.status): self.success_response(op),
                                    **error_responses(op)}
        if op.scope:
            description["x-fkod-scope"] = op.scope
        if op.permission:
            description["x-fkod-permission"] = op.permission
        return description

    def request_body(self, op: Operation) -> dict | None:
        if op.raw_body:
            return {"required": True, "description": "The exact bytes the sender signed",
                    "content": {"application/json": {"schema": {"type": "object"}}}}
        if op.body is None:
            return None
        ref = self.schema_ref(op.body)
        content = {"application/json": {"schema": ref}}
        if op.multipart_max_bytes_setting:
            content["multipart/form-data"] = {"schema": self.multipart_schema(op.body)}
        return {"required": True, "content": content}

    def multipart_schema(self, schema_class) -> dict:
        """Describe the body's fields as form fields, where a field that takes a file is binary."""
        properties = {}
        for name, field in schema_class().load_fields.items():
            key = field.data_key or name
            if isinstance(field, marshmallow.fields.String):
                properties[key] = {"type": "string"}
            else:
                properties[key] = {"type": "string", "format": "binary"}
        return {"type": "object", "properties": properties}

    def success_response(self, op: Operation) -> dict:
        response: dict = {"description": _REASONS.get(op.status, "Success")}
        if op.no_store:
            response["headers"] = {"Cache-Control": {
                "description": "no-store: the body contains a secret shown only once",
                "schema": {"type": "string"}}}
        if op.status == 204:
            return response
        if op.response is not None:
            item = self.schema_ref(op.response)
        else:
            item = {"type": "object"}
        if op.paginated:
            schema = {"type": "object", "required": ["data", "has_more", "next_cursor"],
                      "properties": {"data": {"type": "array", "items": item},
                                     "has_more": {"type": "boolean"},
                                     "next_cursor": {"type": ["string", "null"]}}}
        else:
            schema = item
        response["content"] = {"application/json": {"schema": schema}}
        return response

    def add_services(self) -> None:
        host = self.registry["plugins"]
        paths: dict[str, dict] = {}
        for service in self.registry.cornice_services.values():
            owner = host.owner_of_route(service.name)
            if owner is not None and owner not in self.enabled:
                continue
            path = openapi_path(service.path)
            for method, view, _args in service.definitions:
                op = getattr(view, "operation", None)
                if op is None or method == "HEAD":
                    continue
                paths.setdefault(path, {})[method.lower()] = self.describe(service, op)
        for path in sorted(paths):
            self.spec.path(path=path, operations=paths[path])

    def add_plain_routes(self) -> None:
        for route_name, (pattern, methods) in plain_routes(self.registry).items():
            operations = {}
            for method, plain in methods.items():
                description = {"operationId": operation_id(route_name, method),
                               "summary": plain.summary, "tags": [plain.tag],
                               "security": list(plain.security),
                               "responses": dict(plain.responses)}
                parameters = [{"name": name, "in": "path", "required": True,
                               "schema": {"type": "string"}}
                              for name in path_parameter_names(pattern)]
                parameters += [{"name": name, "in": "query", "required": False, "schema": schema}
                               for name, schema in (plain.query or {}).items()]
                if parameters:
                    description["parameters"] = parameters
                if plain.form:
                    description["requestBody"] = {"required": True, "content": {
                        "application/x-www-form-urlencoded": {"schema": {
                            "type": "object", "properties": plain.form}}}}
                operations[method.lower()] = description
            self.spec.path(path=openapi_path(pattern), operations=operations)

    def build(self) -> dict:
        self.add_services()
        self.add_plain_routes()
        schemes = security_schemes(self.registry["scope_catalog"])
        for name, scheme in schemes.items():
            self.spec.components.security_scheme(name, scheme)
        document = json_compatible(self.spec.to_dict())
        document["webhooks"] = webhooks_section(self.registry, self.enabled)
        # Without "servers", the server is the one that served the document, so
        # Swagger UI's "Try it out" sends requests to this server.
        return document


def json_compatible(value):
    """Turn Decimal bounds and defaults from marshmallow schemas into JSON numbers."""
    if isinstance(value, dict):
        return {key: json_compatible(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_compatible(item) for item in value]
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return value


# Webhooks -------------------------------------------------------------------------

_SIGNATURE_HEADERS = (
    ("X-FKOD-Signature", "t=<Unix seconds>,v1=<hex HMAC-SHA256 over \"{t}.{body}\" keyed "
                         "with the whole whsec_ secret>; one v1 per active secret"),
    ("webhook-id", "The event id, the same on every attempt (Standard Webhooks)"),
    ("webhook-timestamp", "Unix seconds when the attempt was signed (Standard Webhooks)"),
    ("webhook-signature", "v1,<base64 HMAC-SHA256 over \"{id}.{timestamp}.{body}\"> keyed "
                          "with the base64-decoded part of the secret (Standard Webhooks)"),
)


def webhooks_section(registry, enabled: frozenset[str]) -> dict:
    """Describe the delivery the platform sends for each event type of the enabled plugins."""
    host = registry["plugins"]
    section = {}
    for event_type in host.event_catalog.available(lambda name: name in enabled):
        envelope = {
            "type": "object",
            "required": ["id", "type", "created", "data", "request"],
            "properties": {
                "id": {"type": "string", "pattern": "^evt_"},
                "type": {"const": event_type.name},
                "created": {"type": "integer", "description": "Unix seconds"},
                "data": event_type.schema,
                "request": {"type": "object", "properties": {
                    "id": {"type": ["string", "null"],
                           "description": "The id of the API request that caused the event"}}},
            },
        }
        sample = {"id": "evt_0123456789abcdef01234567", "type": event_type.name,
                  "created": 1764900000, "data": event_type.sample,
                  "request": {"id": None}}
        section[event_type.name] = {"post": {
            "operationId": f"webhook.{event_type.name}",
            "summary": event_type.description,
            "tags": ["webhooks"],
            "parameters": [{"name": name, "in": "header", "required": True,
                            "description": text, "schema": {"type": "string"}}
                           for name, text in _SIGNATURE_HEADERS],
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": envelope, "example": sample}}},
            "responses": {"2XX": {"description": "Delivered; any other status is retried"}},
        }}
    return section


# Cache -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RenderedDocument:
    """A built document with its JSON bytes and ETag."""

    document: dict
    body: bytes
    etag: str


_build_lock = threading.Lock()


def build_document(registry, enabled: frozenset[str]) -> dict:
    return _Builder(registry, enabled).build()


def get_document(registry) -> RenderedDocument:
    """Return the document for the currently enabled plugins, building it on first use."""
    enabled = enabled_plugins(registry)
    cache = registry.setdefault("openapi.documents", {})
    rendered = cache.get(enabled)
    if rendered is not None:
        return rendered
    with _build_lock:
        rendered = cache.get(enabled)
        if rendered is None:
            document = build_document(registry, enabled)
            body = jsonutil.dumps(document)
            if isinstance(body, str):
                body = body.encode()
            etag = hashlib.sha256(body).hexdigest()[:32]
            rendered = RenderedDocument(document, body, etag)
            cache[enabled] = rendered
    return rendered
