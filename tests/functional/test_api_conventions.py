"""Conventions every JSON operation follows: metadata, error envelope, body checks, request ids.

The operations are discovered from Cornice after the application is built, so an
operation added later is held to the same rules without editing this file.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
import secrets

import pytest
import sqlalchemy as sa
import webtest
from cornice.service import get_services
from pyramid.interfaces import IRoutesMapper

from fkod.admin.testing import admin_login, create_admin
from fkod.core.api import AUTH_ADMIN, AUTH_API_KEY, AUTH_KINDS, AUTH_MEMBER, AUTH_NONE, AUTH_USER
from fkod.core.auth.scopes import SCOPES
from fkod.core.db import read_only, run_in_transaction
from fkod.core.testing import TEST_PASSWORD, TestClient, auth_header
from fkod.plugins.learning.models import Mentor
from tests.envelope import assert_envelope

pytestmark = pytest.mark.shared_app

GENERATED_REQUEST_ID = re.compile(r"^req_[0-9a-f]{24}$")

PARTNER_SCOPES = [scope.name for scope in SCOPES if not scope.admin_only]

# Tables left out of the row counts. A background thread writes usage rows after
# every gateway call, and Alembic owns alembic_version.
UNCOUNTED_TABLES = {"api_usage", "alembic_version"}

# Operations that exist today. The walk must find at least these, so a broken
# discovery cannot make the walking tests pass by checking nothing.
KNOWN_OPERATIONS = {
    ("POST", "/api/partners/register"),
    ("POST", "/api/auth/login"),
    ("GET", "/.well-known/jwks.json"),
    ("GET", "/api/partners/me"),
    ("PUT", "/api/partners/me"),
    ("POST", "/api/partners/api-keys"),
    ("GET", "/api/partners/api-keys"),
    ("POST", "/api/partners/webhooks"),
    ("GET", "/api/partners/webhooks"),
    ("GET", "/api/webhooks/available-events"),
    ("GET", "/health"),
    ("GET", "/ready"),
    ("GET", "/api/v1/users"),
    ("POST", "/api/v1/users"),
    ("GET", "/api/v1/users/{id}"),
    ("PUT", "/api/v1/users/{id}"),
    ("GET", "/api/v1/courses"),
    ("POST", "/api/v1/courses"),
    ("POST", "/api/v1/courses/{id}/complete"),
    ("GET", "/api/v1/mentors"),
    ("POST", "/api/v1/mentors/{id}/match"),
}

# Bodies that are not a JSON object the schemas can load. Each must be a 400.
MALFORMED_BODIES = {
    "truncated_json": b'{"url":',
    "array": b"[]",
    "string": b'"str"',
    "null": b"null",
    "number": b"123",
    "nested_arrays": b"[" * 20_000 + b"]" * 20_000,
    "nested_objects": b'{"a":' * 5_000 + b"null" + b"}" * 5_000,
    "invalid_utf8": b'{"key_name": "\xff\xfe\xc3("}',
    "unknown_field": b'{"zz_unknown_field": 1}',
    "overlong_integer": b'{"retry_count": ' + b"9" * 5000 + b"}",
}


@dataclasses.dataclass(frozen=True)
class RegisteredOperation:
    method: str
    path: str
    operation: object


@dataclasses.dataclass
class World:
    """A partner with a login token, an all-scope test key, a user, a course and a mentor.

    ``admin_token`` belongs to a superadmin, for the admin API.
    """

    email: str
    token: str
    admin_token: str
    key: str
    user_id: str
    course_id: str
    mentor_id: str

    def headers_for(self, auth: str) -> dict:
        if auth in (AUTH_MEMBER, AUTH_USER):
            return auth_header(self.token)
        if auth == AUTH_ADMIN:
            return auth_header(self.admin_token)
        if auth == AUTH_API_KEY:
            return auth_header(self.key)
        return {}


def registered_operations(app) -> list[RegisteredOperation]:
    """Return every method of every Cornice service routed in ``app``, without HEAD."""
    mapper = app.registry.getUtility(IRoutesMapper)
    found = {}
    for service in get_services():
        if mapper.get_route(service.name) is None:
            continue
        for method, view, _arguments in service.definitions:
            if method == "HEAD":
                continue
            found[(method, service.path)] = RegisteredOperation(
                method, service.path, getattr(view, "operation", None))
    return sorted(found.values(), key=lambda item: (item.path, item.method))


def body_operations(app) -> list[RegisteredOperation]:
    """The operations that load a JSON body; raw-body operations check their own bytes."""
    return [item for item in registered_operations(app)
            if item.method in ("POST", "PUT") and item.operation is not None
            and not item.operation.raw_body]


def fill_path(path: str, world: World | None = None) -> str:
    """Replace the ``{id}`` placeholder with an id of the matching kind."""
    ids = {
        "/api/v1/users/{id}": world.user_id if world else "user_1",
        "/api/v1/courses/{id}/complete": world.course_id if world else "course_1",
        "/api/v1/mentors/{id}/match": world.mentor_id if world else "mentor_1",
    }
    if path in ids:
        return path.replace("{id}", ids[path])
    return re.sub(r"\{[^}]+\}", "unknown_1", path)


def valid_body(method: str, path: str, world: World) -> dict:
    """Return a body the operation accepts, or an empty object for an operation added later."""
    bodies = {
        ("POST", "/api/partners/register"): lambda: {
            "company_name": "Beta Learning", "password": TEST_PASSWORD,
            "email": f"owner-{secrets.token_hex(4)}@beta.example"},
        ("POST", "/api/auth/login"): lambda: {"email": world.email, "password": TEST_PASSWORD},
        ("PUT", "/api/partners/me"): lambda: {"description": "Courses for engineering teams."},
        ("POST", "/api/partners/api-keys"): lambda: {"key_name": "ci", "scopes": ["users:read"]},
        # Subscribed to an event no test here publishes, so nothing is ever delivered.
        ("POST", "/api/partners/webhooks"): lambda: {
            "url": "http://127.0.0.1:9/hooks", "event_types": ["partner.verified"]},
        ("POST", "/api/v1/users"): lambda: {
            "email": f"learner-{secrets.token_hex(4)}@acme.example"},
        ("PUT", "/api/v1/users/{id}"): lambda: {"name": "Renamed Learner"},
        ("POST", "/api/v1/courses"): lambda: {"title": "Systems Thinking"},
        ("POST", "/api/v1/courses/{id}/complete"): lambda: {"user_id": world.user_id},
        ("POST", "/api/v1/mentors/{id}/match"): lambda: {"user_id": world.user_id},
    }
    make = bodies.get((method, path))
    return make() if make else {}


def insert_mentor(app) -> str:
    def work(session):
        # A sandbox mentor: the tests call with test-mode keys.
        mentor = Mentor(name="Ada Mentor", expertise="Product design", livemode=False)
        session.add(mentor)
        session.flush()
        return mentor.id

    return f"mentor_{run_in_transaction(app.registry['db.session_factory'], work)}"


def count_rows(app) -> dict[str, int]:
    """Return the row count of every table that only client requests write to."""
    def work(connection):
        names = sa.inspect(connection).get_table_names()
        return {
            name: connection.scalar(sa.select(sa.func.count()).select_from(sa.table(name)))
            for name in names if name not in UNCOUNTED_TABLES
        }

    return read_only(app.registry["db.engine"], work)


def send(client: TestClient, method: str, path: str, body: bytes | None, *,
         headers: dict | None = None, content_type: str | None = "application/json"):
    """Send raw bytes. With ``content_type=None`` the request has no Content-Type header."""
    request = webtest.TestRequest.blank(path, method=method, body=body,
                                        headers=headers or {})
    if content_type is None:
        request.environ.pop("CONTENT_TYPE", None)
    else:
        request.environ["CONTENT_TYPE"] = content_type
    return client.web.do_request(request, status="*", expect_errors=True)



def make_world(client: TestClient, app) -> World:
    registered = client.register_partner()
    email = registered["user"]["email"]
    token = client.login(email)
    key = client.create_key(token, scopes=PARTNER_SCOPES)["key"]
    key_headers = auth_header(key)
    user = client.web.post_json("/api/v1/users", {"email": "learner@acme.example"},
                                headers=key_headers, status=201).json
    course = client.web.post_json("/api/v1/courses", {"title": "Design Thinking"},
                                  headers=key_headers, status=201).json
    admin_token = admin_login(client, create_admin(app)["email"])
    return World(email=email, token=token, admin_token=admin_token, key=key, user_id=user["id"],
                 course_id=course["id"], mentor_id=insert_mentor(app))


@pytest.fixture
def world(client, app) -> World:
    return make_world(client, app)


# Operation metadata -------------------------------------------------------------


def test_walk_finds_known_operations(app):
    found = {(item.method, item.path) for item in registered_operations(app)}

    assert KNOWN_OPERATIONS <= found, sorted(KNOWN_OPERATIONS - found)


def test_operations_declare_metadata(app, subtests):
    for item in registered_operations(app):
        with subtests.test(msg=f"{item.method} {item.path}"):
            op = item.operation
            assert op is not None, "view not declared with fkod.core.api.operation"
            assert isinstance(op.summary, str)
            assert op.summary.strip()
            assert op.auth in AUTH_KINDS
            if item.method in ("POST", "PUT"):
                assert op.body is not None or op.raw_body


# Credentials --------------------------------------------------------------------


def test_operations_require_credentials(client, app, subtests):
    protected = [item for item in registered_operations(app)
                 if item.operation is not None and item.operation.auth != AUTH_NONE]
    assert protected

    for item in protected:
        with subtests.test(msg=f"{item.method} {item.path}"):
            body = b"{}" if item.method in ("POST", "PUT") else None
            response = send(client, item.method, fill_path(item.path), body)

            assert_envelope(response, 401, "missing_credentials")
            assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_credentials_checked_before_body(client, app, subtests):
    protected = [item for item in body_operations(app) if item.operation.auth != AUTH_NONE]
    assert protected

    for item in protected:
        with subtests.test(msg=f"{item.method} {item.path}"):
            response = send(client, item.method, fill_path(item.path), b"[not json",
                            content_type="text/plain")

            assert_envelope(response, 401, "missing_credentials")


def test_operations_reject_garbage_credentials(client, app, subtests):
    protected = [item for item in registered_operations(app)
                 if item.operation is not None and item.operation.auth != AUTH_NONE]

    for item in protected:
        with subtests.test(msg=f"{item.method} {item.path}"):
            body = b"{}" if item.method in ("POST", "PUT") else None
            response = send(client, item.method, fill_path(item.path), body,
                            headers={"Authorization": "Bearer garbage"})

            assert_envelope(response, 401)


# Request bodies -----------------------------------------------------------------


@pytest.mark.parametrize("raw", list(MALFORMED_BODIES.values()), ids=list(MALFORMED_BODIES))
def test_malformed_body_rejected(client, app, world, subtests, raw):
    operations = body_operations(app)
    assert operations
    before = count_rows(app)

    for item in operations:
        with subtests.test(msg=f"{item.method} {item.path}"):
            response = send(client, item.method, fill_path(item.path, world), raw,
                            headers=world.headers_for(item.operation.auth))

            body = assert_envelope(response, 400)
            if raw == MALFORMED_BODIES["unknown_field"]:
                assert {"location": "body", "name": "zz_unknown_field"} in [
                    {"location": error["location"], "name": error["name"]}
                    for error in body["errors"]]

    assert count_rows(app) == before
    assert client.web.get("/health").status_int == 200


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None],
                         ids=["text_plain", "form_urlencoded", "missing"])
def test_non_json_content_type_rejected(client, app, world, subtests, content_type):
    before = count_rows(app)

    for item in body_operations(app):
        with subtests.test(msg=f"{item.method} {item.path}"):
            raw = json.dumps(valid_body(item.method, item.path, world)).encode()
            response = send(client, item.method, fill_path(item.path, world), raw,
                            headers=world.headers_for(item.operation.auth),
                            content_type=content_type)

            body = assert_envelope(response, 415, "unsupported_media_type")
            assert {"location": "header", "name": "Content-Type"} in [
                {"location": error["location"], "name": error["name"]}
                for error in body["errors"]]

    assert count_rows(app) == before


KNOWN_BODY_OPERATIONS = sorted(item for item in KNOWN_OPERATIONS if item[0] in ("POST", "PUT"))


@pytest.mark.parametrize("method,path", KNOWN_BODY_OPERATIONS,
                         ids=[f"{method} {path}" for method, path in KNOWN_BODY_OPERATIONS])
def test_json_charset_parameter_accepted(client, app, world, method, path):
    operation = {(item.method, item.path): item for item in registered_operations(app)}
    auth = operation[(method, path)].operation.auth
    raw = json.dumps(valid_body(method, path, world)).encode()

    response = send(client, method, fill_path(path, world), raw,
                    headers=world.headers_for(auth),
                    content_type="application/json; charset=UTF-8")

    assert response.status_int in (200, 201), response.body[:500]


@pytest.fixture
def small_body_app(app_factory):
    return app_factory(**{"fkod.api.max_body_bytes": "2048"})


def test_oversize_body_rejected(small_body_app, subtests):
    client = TestClient(small_body_app)
    world = make_world(client, small_body_app)
    raw = json.dumps({"padding": "x" * 3000}).encode()
    before = count_rows(small_body_app)

    for item in body_operations(small_body_app):
        with subtests.test(msg=f"{item.method} {item.path}"):
            response = send(client, item.method, fill_path(item.path, world), raw,
                            headers=world.headers_for(item.operation.auth))

            assert_envelope(response, 413, "payload_too_large")

    assert count_rows(small_body_app) == before
    assert client.web.get("/health").status_int == 200


def test_oversize_body_without_length_rejected(small_body_app):
    client = TestClient(small_body_app)
    raw = json.dumps({"company_name": "x" * 3000, "email": "big@acme.example",
                      "password": TEST_PASSWORD}).encode()
    request = webtest.TestRequest.blank("/api/partners/register", method="POST", body=raw,
                                        content_type="application/json")
    del request.environ["CONTENT_LENGTH"]
    request.environ["wsgi.input"] = io.BytesIO(raw)
    request.environ["wsgi.input_terminated"] = True

    response = client.web.do_request(request, status="*", expect_errors=True)

    assert_envelope(response, 413, "payload_too_large")


def test_body_at_limit_accepted(small_body_app):
    client = TestClient(small_body_app)
    body = {"company_name": "Acme", "email": "limit@acme.example", "password": TEST_PASSWORD,
            "description": ""}
    padding = 2048 - len(json.dumps(body).encode())
    body["description"] = "d" * padding
    raw = json.dumps(body).encode()
    assert len(raw) == 2048

    response = send(client, "POST", "/api/partners/register", raw)

    assert response.status_int == 201, response.body[:500]


# Routing errors -----------------------------------------------------------------


@pytest.mark.parametrize("path", ["/nope", "/api/v1/nothing", "/api/partners/unknown"])
def test_unknown_route_returns_envelope(client, path):
    response = client.web.get(path, status="*", expect_errors=True)

    body = assert_envelope(response, 404, "not_found")
    assert path in body["message"]


@pytest.mark.parametrize("method,path", [
    ("DELETE", "/health"),
    ("POST", "/health"),
    ("DELETE", "/api/partners/me"),
    ("PATCH", "/api/v1/users"),
    ("GET", "/api/auth/login"),
])
def test_wrong_method_returns_envelope(client, method, path):
    response = send(client, method, path, None)

    assert_envelope(response, 405, "method_not_allowed")
    assert response.headers["Allow"]
    assert method not in response.headers["Allow"].split(", ")


# Request ids --------------------------------------------------------------------


def test_request_id_on_every_response(client, world):
    key_headers = auth_header(world.key)
    responses = [
        client.web.get("/health"),
        client.web.get("/.well-known/jwks.json"),
        client.web.get("/api/partners/me", headers=auth_header(world.token)),
        client.web.get("/api/v1/users/user_999999", headers=key_headers, status=404),
        client.web.get("/api/partners/me", status=401),
        client.web.get("/api/partners/api-keys?limit=0", headers=auth_header(world.token),
                       status=400),
        send(client, "DELETE", "/health", None),
        send(client, "POST", "/api/v1/users", b"{}", headers=key_headers,
             content_type="text/plain"),
        client.web.get("/nope", status=404),
    ]

    ids = [response.headers.get("X-Request-Id") for response in responses]
    for response, request_id in zip(responses, ids, strict=True):
        assert request_id, f"{response.request.method} {response.request.path}"
        assert GENERATED_REQUEST_ID.match(request_id), request_id
        if response.status_int >= 400 and response.content_type == "application/json":
            assert response.json["request_id"] == request_id
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("request_id", ["trace-0001", "a1B2.c3:d4_e5-f6", "x" * 64])
def test_safe_request_id_echoed(client, request_id):
    ok = client.web.get("/health", headers={"X-Request-Id": request_id})
    failed = client.web.get("/api/partners/me", headers={"X-Request-Id": request_id},
                            status=401)

    assert ok.headers["X-Request-Id"] == request_id
    assert failed.headers["X-Request-Id"] == request_id
    assert failed.json["request_id"] == request_id


@pytest.mark.parametrize("request_id", ["short", "has spaces inside", "x" * 65,
                                        "semi;colon;value", "quote\"inside1", ""])
def test_unsafe_request_id_replaced(client, request_id):
    response = client.web.get("/api/partners/me", headers={"X-Request-Id": request_id},
                              status=401)

    assert response.headers["X-Request-Id"] != request_id
    assert GENERATED_REQUEST_ID.match(response.headers["X-Request-Id"])
    assert response.json["request_id"] == response.headers["X-Request-Id"]


# Input that must never reach the database or the response encoder -------------------


@pytest.mark.shared_app(False)
@pytest.mark.parametrize("content_type", ["Application/JSON", "APPLICATION/JSON; charset=utf-8"])
def test_media_type_case_insensitive(client, content_type):
    raw = json.dumps({"company_name": "Acme", "email": "case@acme.example",
                      "password": TEST_PASSWORD}).encode()

    response = send(client, "POST", "/api/partners/register", raw, content_type=content_type)

    assert response.status_int == 201, response.body[:500]


# JSON text with an escaped lone surrogate: valid JSON, but no valid UTF-8 string.
SURROGATE_CASES = {
    "register_company": ("POST", "/api/partners/register", AUTH_NONE,
                         b'{"company_name": "\\ud800", "email": "s@acme.example", '
                         b'"password": "correct horse battery staple"}'),
    "update_profile": ("PUT", "/api/partners/me", AUTH_MEMBER, b'{"description": "a\\udc00"}'),
    "key_name": ("POST", "/api/partners/api-keys", AUTH_MEMBER,
                 b'{"key_name": "\\ud83d", "scopes": ["users:read"]}'),
    "unknown_field_name": ("POST", "/api/partners/api-keys", AUTH_MEMBER, b'{"\\ud83d": 1}'),
    "gateway_user": ("POST", "/api/v1/users", AUTH_API_KEY,
                     b'{"email": "u@acme.example", "name": "\\ud83d"}'),
}


@pytest.mark.parametrize("method,path,auth,raw", list(SURROGATE_CASES.values()),
                         ids=list(SURROGATE_CASES))
def test_lone_surrogate_rejected(client, world, method, path, auth, raw):
    response = send(client, method, path, raw, headers=world.headers_for(auth))

    assert_envelope(response, 400)


@pytest.mark.parametrize("path,auth", [
    ("/api/partners/api-keys?limit=%FF", AUTH_MEMBER),
    ("/api/partners/api-keys?%FF=1", AUTH_MEMBER),
    ("/api/v1/users?email=%FF", AUTH_API_KEY),
])
def test_invalid_utf8_query_rejected(client, world, path, auth):
    response = client.web.get(path, headers=world.headers_for(auth), status="*",
                              expect_errors=True)

    assert_envelope(response, 400)


@pytest.mark.parametrize("path", ["/api/v1/users/%FF", "/%FF", "/health/%C3"])
def test_invalid_utf8_path_rejected(client, world, path):
    response = client.web.get(path, headers=auth_header(world.key), status="*",
                              expect_errors=True)

    assert response.status_int in (400, 404), response.body[:500]
    assert_envelope(response, response.status_int)
