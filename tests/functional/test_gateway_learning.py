"""The gateway in front of ``/api/v1`` and the learning API behind it.

Covers API key authentication and scopes, tenancy between partners and between
test and live mode, the learning events, and the usage rows of gateway calls.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import secrets
import time

import pytest
import sqlalchemy as sa

from fkod.core.auth.models import ApiKey, Partner, PartnerUser, User, partner_namespace
from fkod.core.auth.scopes import SCOPES
from fkod.core.db import read_only, run_in_transaction, utcnow
from fkod.core.metering.models import ApiUsage
from fkod.core.testing import TestClient, auth_header
from fkod.core.webhooks.models import Event
from fkod.plugins.learning.models import Course, Enrollment, Mentor, MentorMatch
from tests.envelope import assert_envelope

pytestmark = pytest.mark.shared_app

PARTNER_SCOPES = [scope.name for scope in SCOPES if not scope.admin_only]


@dataclasses.dataclass(frozen=True)
class Route:
    method: str
    pattern: str
    scope: str

    def path(self, ids: dict) -> str:
        return self.pattern.replace("{id}", ids.get(self.pattern, "x_1"))

    def body(self, ids: dict) -> dict | None:
        if self.method == "GET":
            return None
        if self.pattern == "/api/v1/users":
            return {"email": f"learner-{secrets.token_hex(3)}@acme.example"}
        if self.pattern == "/api/v1/users/{id}":
            return {"name": "Renamed"}
        if self.pattern == "/api/v1/courses":
            return {"title": "Systems Thinking"}
        return {"user_id": ids.get("user", "user_1")}


ROUTES = [
    Route("GET", "/api/v1/users", "users:read"),
    Route("POST", "/api/v1/users", "users:write"),
    Route("GET", "/api/v1/users/{id}", "users:read"),
    Route("PUT", "/api/v1/users/{id}", "users:write"),
    Route("GET", "/api/v1/courses", "courses:read"),
    Route("POST", "/api/v1/courses", "courses:write"),
    Route("POST", "/api/v1/courses/{id}/complete", "courses:write"),
    Route("GET", "/api/v1/mentors", "mentors:read"),
    Route("POST", "/api/v1/mentors/{id}/match", "mentors:write"),
]
ROUTE_IDS = [f"{route.method} {route.pattern}" for route in ROUTES]


@dataclasses.dataclass
class Tenant:
    """A partner, its owner's login token and one of its test-mode API keys."""

    partner_id: str
    token: str
    key: str
    key_id: str

    @property
    def headers(self) -> dict:
        return auth_header(self.key)


def number_of(public_id: str) -> int:
    return int(public_id.rsplit("_", 1)[1])



def make_tenant(client: TestClient, scopes=PARTNER_SCOPES) -> Tenant:
    partner, token = client.partner_with_token()
    created = client.create_key(token, scopes=scopes)
    return Tenant(partner_id=partner["id"], token=token, key=created["key"],
                  key_id=created["id"])


def send(client: TestClient, method: str, path: str, body: dict | None, headers: dict):
    """Send ``body`` as JSON (or nothing for a GET) and accept any status."""
    if body is None:
        return client.web.request(path, method=method, headers=headers, status="*",
                                  expect_errors=True)
    send_json = getattr(client.web, f"{method.lower()}_json")
    return send_json(path, body, headers=headers, status="*", expect_errors=True)


def call(client: TestClient, route: Route, ids: dict, headers: dict):
    return send(client, route.method, route.path(ids), route.body(ids), headers)


def in_transaction(app, work):
    return run_in_transaction(app.registry["db.session_factory"], work)


def insert_mentor(app, status: str = "active", livemode: bool = False) -> str:
    """Insert a mentor; test-mode keys see only sandbox mentors (livemode false)."""
    def work(session):
        mentor = Mentor(name="Ada Mentor", expertise="Product design", status=status,
                        livemode=livemode)
        session.add(mentor)
        session.flush()
        return mentor.id

    return f"mentor_{in_transaction(app, work)}"


def insert_catalog_course(app, livemode: bool = False) -> str:
    """Insert an F-KOD catalog course; test-mode keys see only the sandbox (livemode false)."""
    def work(session):
        course = Course(title="F-KOD Foundations", level="beginner", created_by_partner_id=None,
                        livemode=livemode)
        session.add(course)
        session.flush()
        return course.id

    return f"course_{in_transaction(app, work)}"


def insert_live_user(app, partner_id: str, email: str) -> str:
    """Insert a live-mode user in the partner's tenancy, as a live key would create it."""
    partner_number = number_of(partner_id)

    def work(session):
        user = User(email=email, email_namespace=partner_namespace(partner_number, True),
                    livemode=True, created_by_partner_id=partner_number)
        session.add(user)
        session.flush()
        session.add(PartnerUser(partner_id=partner_number, user_id=user.id, livemode=True,
                                source="created"))
        return user.id

    return f"user_{in_transaction(app, work)}"


def update_row(app, model, public_id: str, **values) -> None:
    def work(session):
        row = session.get(model, number_of(public_id))
        for name, value in values.items():
            setattr(row, name, value)

    in_transaction(app, work)


def stored_events(app, event_type: str) -> list[Event]:
    return in_transaction(app, lambda session: session.scalars(
        sa.select(Event).where(Event.type == event_type).order_by(Event.id)).all())


def count_rows(app, model) -> int:
    return read_only(app.registry["db.engine"], lambda connection: connection.scalar(
        sa.select(sa.func.count()).select_from(model.__table__)))


def usage_rows(app, expected: int, timeout_seconds: float = 5.0) -> list:
    """Flush the usage recorder and return the api_usage rows once ``expected`` are there.

    With the Redis stack a worker moves records into the table, so this polls
    until the count is reached or the timeout passes.
    """
    recorder = app.registry["usage_recorder"]
    deadline = time.monotonic() + timeout_seconds
    while True:
        recorder.flush()
        rows = read_only(app.registry["db.engine"], lambda connection: connection.execute(
            sa.select(ApiUsage.__table__).order_by(ApiUsage.id)).all())
        if len(rows) >= expected or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


@pytest.fixture
def tenant(client) -> Tenant:
    return make_tenant(client)


@pytest.fixture
def ids(app, client, tenant) -> dict:
    """Ids of a user in ``tenant``, a catalog course and a mentor, keyed by route pattern."""
    user = client.web.post_json("/api/v1/users", {"email": "learner@acme.example"},
                                headers=tenant.headers, status=201).json
    return {
        "user": user["id"],
        "/api/v1/users/{id}": user["id"],
        "/api/v1/courses/{id}/complete": insert_catalog_course(app),
        "/api/v1/mentors/{id}/match": insert_mentor(app),
    }


PLACEHOLDER_IDS = {
    "user": "user_1",
    "/api/v1/users/{id}": "user_1",
    "/api/v1/courses/{id}/complete": "course_1",
    "/api/v1/mentors/{id}/match": "mentor_1",
}


# Authentication -----------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES, ids=ROUTE_IDS)
def test_missing_key_rejected(client, route):
    response = call(client, route, PLACEHOLDER_IDS, {})

    assert_envelope(response, 401, "missing_credentials")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("key", ["sk_test_short", "sk_prod_" + "a" * 43, "sk_test_" + "!" * 43,
                                 "sk_test_" + "a" * 44, "pk_test_" + "a" * 43])
@pytest.mark.parametrize("route", ROUTES, ids=ROUTE_IDS)
def test_malformed_key_rejected(client, route, key):
    response = call(client, route, PLACEHOLDER_IDS, auth_header(key))

    assert_envelope(response, 401, "invalid_api_key")


@pytest.mark.parametrize("route", ROUTES, ids=ROUTE_IDS)
def test_unknown_key_rejected(client, tenant, route):
    unknown = "sk_test_" + secrets.token_urlsafe(32)

    response = call(client, route, PLACEHOLDER_IDS, auth_header(unknown))

    assert_envelope(response, 401, "invalid_api_key")


@pytest.mark.parametrize("route", ROUTES, ids=ROUTE_IDS)
def test_login_token_is_not_a_key(client, tenant, route):
    response = call(client, route, PLACEHOLDER_IDS, auth_header(tenant.token))

    assert_envelope(response, 401, "invalid_api_key")


@pytest.mark.parametrize("route", ROUTES, ids=ROUTE_IDS)
def test_key_without_scope_forbidden(client, route):
    other_scopes = [scope for scope in PARTNER_SCOPES if scope != route.scope]
    tenant = make_tenant(client, scopes=other_scopes)

    response = call(client, route, PLACEHOLDER_IDS, tenant.headers)

    body = assert_envelope(response, 403, "missing_scope")
    assert route.scope in body["message"]
    assert route.scope in body["errors"][0]["description"]


@pytest.mark.parametrize("route", ROUTES, ids=ROUTE_IDS)
def test_suspended_partner_key_forbidden(client, app, tenant, route):
    update_row(app, Partner, tenant.partner_id, status="suspended")

    response = call(client, route, PLACEHOLDER_IDS, tenant.headers)

    assert_envelope(response, 403, "partner_suspended")


@pytest.mark.parametrize("route", ROUTES, ids=ROUTE_IDS)
def test_expired_key_rejected(client, app, tenant, route):
    update_row(app, ApiKey, tenant.key_id, expires_at=utcnow() - dt.timedelta(minutes=1))

    response = call(client, route, PLACEHOLDER_IDS, tenant.headers)

    assert_envelope(response, 401, "api_key_expired")


@pytest.mark.parametrize("route", ROUTES, ids=ROUTE_IDS)
def test_revoked_key_rejected(client, app, tenant, route):
    update_row(app, ApiKey, tenant.key_id, status="revoked", revoked_at=utcnow())

    response = call(client, route, PLACEHOLDER_IDS, tenant.headers)

    assert_envelope(response, 401, "api_key_revoked")


def test_key_with_future_expiry_works(client, app, tenant):
    update_row(app, ApiKey, tenant.key_id, expires_at=utcnow() + dt.timedelta(minutes=5))

    client.web.get("/api/v1/users", headers=tenant.headers, status=200)


# Users --------------------------------------------------------------------------


def test_user_round_trip(client, tenant):
    created = client.web.post_json(
        "/api/v1/users", {"email": "Learner@Acme.Example", "name": "Lena Learner",
                          "archetype": "explorer"},
        headers=tenant.headers, status=201).json
    path = f"/api/v1/users/{created['id']}"

    fetched = client.web.get(path, headers=tenant.headers).json
    updated = client.web.put_json(path, {"name": "Lena L.", "archetype": "builder"},
                                  headers=tenant.headers).json
    refetched = client.web.get(path, headers=tenant.headers).json

    assert re.match(r"^user_[0-9]+$", created["id"])
    assert created["email"] == "learner@acme.example"
    assert fetched == created
    assert updated["name"] == "Lena L."
    assert updated["archetype"] == "builder"
    assert refetched == updated


def test_user_list_and_email_filter(client, tenant):
    first = client.web.post_json("/api/v1/users", {"email": "one@acme.example"},
                                 headers=tenant.headers, status=201).json
    second = client.web.post_json("/api/v1/users", {"email": "two@acme.example"},
                                  headers=tenant.headers, status=201).json

    listed = client.web.get("/api/v1/users", headers=tenant.headers).json
    filtered = client.web.get("/api/v1/users?email=TWO@acme.example", headers=tenant.headers).json

    assert [item["id"] for item in listed["data"]] == [second["id"], first["id"]]
    assert [item["id"] for item in filtered["data"]] == [second["id"]]


@pytest.mark.shared_app(False)
def test_user_events_written(client, app, tenant):
    created = client.web.post_json("/api/v1/users", {"email": "learner@acme.example"},
                                   headers=tenant.headers, status=201)
    updated = client.web.put_json(f"/api/v1/users/{created.json['id']}",
                                  {"name": "Lena", "archetype": "mentor"},
                                  headers=tenant.headers)

    created_events = stored_events(app, "user.created")
    updated_events = stored_events(app, "user.updated")
    assert len(created_events) == 1
    assert created_events[0].payload["data"]["id"] == created.json["id"]
    assert created_events[0].payload["data"]["email"] == "learner@acme.example"
    assert created_events[0].livemode is False
    assert created_events[0].request_id == created.headers["X-Request-Id"]
    assert len(updated_events) == 1
    assert updated_events[0].payload["data"]["changed_fields"] == ["archetype", "name"]
    assert updated_events[0].request_id == updated.headers["X-Request-Id"]


@pytest.mark.parametrize("second_email", ["learner@acme.example", "LEARNER@acme.example"])
def test_duplicate_user_email_conflict(client, app, tenant, second_email):
    client.web.post_json("/api/v1/users", {"email": "learner@acme.example"},
                         headers=tenant.headers, status=201)
    before = count_rows(app, User)

    response = client.web.post_json("/api/v1/users", {"email": second_email},
                                    headers=tenant.headers, status=409)

    body = assert_envelope(response, 409, "user_exists")
    assert [error["name"] for error in body["errors"]] == ["email"]
    assert count_rows(app, User) == before


def test_update_to_taken_email_conflict(client, tenant):
    client.web.post_json("/api/v1/users", {"email": "one@acme.example"},
                         headers=tenant.headers, status=201)
    second = client.web.post_json("/api/v1/users", {"email": "two@acme.example"},
                                  headers=tenant.headers, status=201).json

    response = client.web.put_json(f"/api/v1/users/{second['id']}",
                                   {"email": "one@acme.example"},
                                   headers=tenant.headers, status=409)

    assert_envelope(response, 409, "user_exists")


def test_same_email_in_two_tenants(client):
    first = make_tenant(client)
    second = make_tenant(client)

    first_user = client.web.post_json("/api/v1/users", {"email": "shared@learner.example"},
                                      headers=first.headers, status=201).json
    second_user = client.web.post_json("/api/v1/users", {"email": "shared@learner.example"},
                                       headers=second.headers, status=201).json
    listed = client.web.get("/api/v1/users", headers=first.headers).json

    assert first_user["id"] != second_user["id"]
    assert [item["id"] for item in listed["data"]] == [first_user["id"]]


def test_user_email_not_partner_login(client, tenant):
    # A user created through the API lives in the partner's namespace, so the
    # same address can still sign up as a partner owner.
    client.web.post_json("/api/v1/users", {"email": "future-owner@acme.example"},
                         headers=tenant.headers, status=201)

    client.register_partner(email="future-owner@acme.example")


@pytest.mark.parametrize("body,field", [
    ({}, "email"),
    ({"email": "not-an-email"}, "email"),
    ({"email": "x@acme.example", "archetype": "wizard"}, "archetype"),
    ({"email": "x@acme.example", "created_by_partner_id": 2}, "created_by_partner_id"),
    ({"email": "x@acme.example", "livemode": True}, "livemode"),
    ({"email": "x\u0000@acme.example"}, "email"),
])
def test_invalid_user_body_rejected(client, app, tenant, body, field):
    before = count_rows(app, User)

    response = client.web.post_json("/api/v1/users", body, headers=tenant.headers, status=400)

    assert field in [error["name"] for error in assert_envelope(response, 400)["errors"]]
    assert count_rows(app, User) == before


# Tenancy ------------------------------------------------------------------------


def test_other_partner_cannot_read_user(client, ids):
    other = make_tenant(client)
    path = f"/api/v1/users/{ids['user']}"

    fetched = client.web.get(path, headers=other.headers, status=404)
    updated = client.web.put_json(path, {"name": "Hijacked"}, headers=other.headers, status=404)
    listed = client.web.get("/api/v1/users", headers=other.headers).json

    assert_envelope(fetched, 404, "not_found")
    assert_envelope(updated, 404, "not_found")
    assert listed["data"] == []


def test_other_partner_cannot_complete_for_user(client, app, ids):
    other = make_tenant(client)
    course_path = f"/api/v1/courses/{ids['/api/v1/courses/{id}/complete']}/complete"

    response = client.web.post_json(course_path, {"user_id": ids["user"]},
                                    headers=other.headers, status=404)

    body = assert_envelope(response, 404, "not_found")
    assert [error["name"] for error in body["errors"]] == ["user_id"]
    assert count_rows(app, Enrollment) == 0
    assert stored_events(app, "course.completed") == []


def test_other_partner_cannot_match_user(client, app, ids):
    other = make_tenant(client)
    match_path = f"/api/v1/mentors/{ids['/api/v1/mentors/{id}/match']}/match"

    response = client.web.post_json(match_path, {"user_id": ids["user"]},
                                    headers=other.headers, status=404)

    assert_envelope(response, 404, "not_found")
    assert count_rows(app, MentorMatch) == 0
    assert stored_events(app, "mentor.matched") == []


def test_other_partner_course_invisible(client, tenant):
    own_course = client.web.post_json("/api/v1/courses", {"title": "Acme Only"},
                                      headers=tenant.headers, status=201).json
    other = make_tenant(client)
    other_user = client.web.post_json("/api/v1/users", {"email": "b@beta.example"},
                                      headers=other.headers, status=201).json

    listed = client.web.get("/api/v1/courses", headers=other.headers).json
    response = client.web.post_json(f"/api/v1/courses/{own_course['id']}/complete",
                                    {"user_id": other_user["id"]}, headers=other.headers,
                                    status=404)

    assert own_course["id"] not in [item["id"] for item in listed["data"]]
    assert_envelope(response, 404, "not_found")


def test_test_key_never_sees_live_users(client, app, ids, tenant):
    live_user = insert_live_user(app, tenant.partner_id, "live@acme.example")
    course_path = f"/api/v1/courses/{ids['/api/v1/courses/{id}/complete']}/complete"
    match_path = f"/api/v1/mentors/{ids['/api/v1/mentors/{id}/match']}/match"

    listed = client.web.get("/api/v1/users", headers=tenant.headers).json
    by_email = client.web.get("/api/v1/users?email=live@acme.example",
                              headers=tenant.headers).json
    fetched = client.web.get(f"/api/v1/users/{live_user}", headers=tenant.headers, status=404)
    completed = client.web.post_json(course_path, {"user_id": live_user},
                                     headers=tenant.headers, status=404)
    matched = client.web.post_json(match_path, {"user_id": live_user},
                                   headers=tenant.headers, status=404)

    assert [item["id"] for item in listed["data"]] == [ids["user"]]
    assert by_email["data"] == []
    assert_envelope(fetched, 404, "not_found")
    assert_envelope(completed, 404, "not_found")
    assert_envelope(matched, 404, "not_found")


def test_test_key_never_sees_live_courses(client, app, tenant):
    partner_number = number_of(tenant.partner_id)

    def work(session):
        course = Course(title="Live Only", created_by_partner_id=partner_number, livemode=True)
        session.add(course)
        session.flush()
        return course.id

    live_course = f"course_{in_transaction(app, work)}"
    sandbox_course = insert_catalog_course(app)
    live_catalog_course = insert_catalog_course(app, livemode=True)

    listed = [item["id"] for item in
              client.web.get("/api/v1/courses", headers=tenant.headers).json["data"]]

    assert sandbox_course in listed
    assert live_course not in listed
    assert live_catalog_course not in listed


def test_test_key_never_sees_live_mentors(client, app, tenant):
    sandbox_mentor = insert_mentor(app)
    live_mentor = insert_mentor(app, livemode=True)

    listed = [item["id"] for item in
              client.web.get("/api/v1/mentors", headers=tenant.headers).json["data"]]

    assert sandbox_mentor in listed
    assert live_mentor not in listed
    client.web.post_json(f"/api/v1/mentors/{live_mentor}/match", {"user_id": "user_1"},
                         headers=tenant.headers, status=404)


BAD_IDS = ["{kind}_abc", "{kind}_", "{kind}_99999999999999999999999", "%00", "{kind}_-1",
           "{kind}_1.0", "{kind}_%C2%B3", "{kind}_9223372036854775807",
           "{kind}_9223372036854775808", "other_1", "%2e%2e", "a%2Fb", "{kind}_1%00"]
ID_ROUTES = [
    ("GET", "/api/v1/users/{id}", "user"),
    ("PUT", "/api/v1/users/{id}", "user"),
    ("POST", "/api/v1/courses/{id}/complete", "course"),
    ("POST", "/api/v1/mentors/{id}/match", "mentor"),
]


@pytest.mark.parametrize("bad_id", BAD_IDS)
@pytest.mark.parametrize("method,pattern,kind", ID_ROUTES,
                         ids=[f"{method} {pattern}" for method, pattern, _kind in ID_ROUTES])
def test_bad_path_id_not_found(client, ids, tenant, method, pattern, kind, bad_id):
    path = pattern.replace("{id}", bad_id.replace("{kind}", kind))
    body = {"name": "Renamed"} if method == "PUT" else {"user_id": ids["user"]}

    response = send(client, method, path, None if method == "GET" else body, tenant.headers)

    assert_envelope(response, 404, "not_found")


@pytest.mark.parametrize("user_id", ["user_abc", "user_", "42", 42, None,
                                     "user_99999999999999999999"])
def test_bad_body_user_id_rejected(client, ids, tenant, user_id):
    course_path = f"/api/v1/courses/{ids['/api/v1/courses/{id}/complete']}/complete"

    response = client.web.post_json(course_path, {"user_id": user_id}, headers=tenant.headers,
                                    status=400)

    assert [error["name"] for error in assert_envelope(response, 400)["errors"]] == ["user_id"]


# Courses and mentors ------------------------------------------------------------


def test_complete_course_writes_event(client, app, ids, tenant):
    course_id = ids["/api/v1/courses/{id}/complete"]

    response = client.web.post_json(f"/api/v1/courses/{course_id}/complete",
                                    {"user_id": ids["user"]}, headers=tenant.headers,
                                    status=201)

    assert response.json["course_id"] == course_id
    assert response.json["user_id"] == ids["user"]
    assert response.json["status"] == "completed"
    assert response.json["completed_at"]
    events = stored_events(app, "course.completed")
    assert len(events) == 1
    assert events[0].payload["data"]["course"]["id"] == course_id
    assert events[0].payload["data"]["course"]["owner"] == "fkod"
    assert events[0].payload["data"]["user_id"] == ids["user"]
    assert events[0].request_id == response.headers["X-Request-Id"]


@pytest.mark.shared_app(False)
def test_complete_course_twice_conflict(client, app, ids, tenant):
    path = f"/api/v1/courses/{ids['/api/v1/courses/{id}/complete']}/complete"
    client.web.post_json(path, {"user_id": ids["user"]}, headers=tenant.headers, status=201)

    response = client.web.post_json(path, {"user_id": ids["user"]}, headers=tenant.headers,
                                    status=409)

    assert_envelope(response, 409, "already_completed")
    assert len(stored_events(app, "course.completed")) == 1
    assert count_rows(app, Enrollment) == 1


@pytest.mark.shared_app(False)
def test_own_course_created_and_completed(client, app, ids, tenant):
    course = client.web.post_json("/api/v1/courses", {"title": "Acme Onboarding",
                                                      "level": "advanced"},
                                  headers=tenant.headers, status=201).json

    client.web.post_json(f"/api/v1/courses/{course['id']}/complete", {"user_id": ids["user"]},
                         headers=tenant.headers, status=201)

    assert course["owner"] == "partner"
    assert [event.payload["data"]["id"] for event in stored_events(app, "course.created")] == \
        [course["id"]]


def test_match_mentor_writes_event(client, app, ids, tenant):
    mentor_id = ids["/api/v1/mentors/{id}/match"]

    response = client.web.post_json(f"/api/v1/mentors/{mentor_id}/match",
                                    {"user_id": ids["user"], "note": "Wants product coaching"},
                                    headers=tenant.headers, status=201)

    assert response.json["mentor_id"] == mentor_id
    assert response.json["user_id"] == ids["user"]
    events = stored_events(app, "mentor.matched")
    assert len(events) == 1
    data = events[0].payload["data"]
    assert data["id"] == response.json["id"]
    assert data["mentor"]["id"] == mentor_id
    assert data["user_id"] == ids["user"]
    assert data["note"] == "Wants product coaching"


@pytest.mark.shared_app(False)
def test_inactive_mentor_not_matched(client, app, ids, tenant):
    retired = insert_mentor(app, status="retired")

    listed = client.web.get("/api/v1/mentors", headers=tenant.headers).json
    response = client.web.post_json(f"/api/v1/mentors/{retired}/match",
                                    {"user_id": ids["user"]}, headers=tenant.headers,
                                    status=404)

    assert retired not in [item["id"] for item in listed["data"]]
    assert ids["/api/v1/mentors/{id}/match"] in [item["id"] for item in listed["data"]]
    assert_envelope(response, 404, "not_found")


# Request ids and usage ----------------------------------------------------------


def test_gateway_responses_carry_request_id(client, ids, tenant):
    course_path = f"/api/v1/courses/{ids['/api/v1/courses/{id}/complete']}/complete"
    no_users_key = make_tenant(client, scopes=["courses:read"])
    responses = [
        client.web.get("/api/v1/users", headers=tenant.headers),
        client.web.post_json("/api/v1/users", {"email": "new@acme.example"},
                             headers=tenant.headers, status=201),
        client.web.post_json("/api/v1/users", {"email": "new@acme.example"},
                             headers=tenant.headers, status=409),
        client.web.post_json("/api/v1/users", {"email": 5}, headers=tenant.headers, status=400),
        client.web.get("/api/v1/users/user_abc", headers=tenant.headers, status=404),
        client.web.get("/api/v1/users", headers=no_users_key.headers, status=403),
        client.web.post_json(course_path, {"user_id": ids["user"]}, headers=tenant.headers,
                             status=201),
        client.web.get("/api/v1/users", headers=auth_header("sk_test_nope"), status=401),
    ]

    for response in responses:
        request_id = response.headers.get("X-Request-Id")
        assert request_id, f"{response.request.method} {response.request.path}"
        if response.status_int >= 400:
            assert response.json["request_id"] == request_id


@pytest.mark.shared_app(False)
def test_usage_recorded_per_call(client, app, tenant):
    created = client.web.post_json("/api/v1/users", {"email": "metered@acme.example"},
                                   headers=tenant.headers, status=201)
    user_path = f"/api/v1/users/{created.json['id']}"
    calls = [
        (created, "/api/v1/users"),
        (client.web.get("/api/v1/users?limit=5", headers=tenant.headers), "/api/v1/users"),
        (client.web.get(user_path, headers=tenant.headers), "/api/v1/users/{id}"),
        (client.web.put_json(user_path, {"name": "Metered"}, headers=tenant.headers),
         "/api/v1/users/{id}"),
        (client.web.get("/api/v1/users/user_abc", headers=tenant.headers, status=404),
         "/api/v1/users/{id}"),
        (client.web.post_json("/api/v1/users", {"email": "metered@acme.example"},
                              headers=tenant.headers, status=409), "/api/v1/users"),
    ]

    rows = usage_rows(app, len(calls))

    assert len(rows) == len(calls)
    by_request = {row.request_id: row for row in rows}
    for response, pattern in calls:
        row = by_request[response.headers["X-Request-Id"]]
        label = f"{response.request.method} {response.request.path}"
        assert row.endpoint == pattern, label
        assert row.method == response.request.method, label
        assert row.status_code == response.status_int, label
        assert isinstance(row.response_time, int), label
        assert row.response_time >= 0, label
        assert row.request_size == len(response.request.body or b""), label
        assert row.response_size == len(response.body), label
        assert row.api_key_id == number_of(tenant.key_id), label
        assert row.partner_id == number_of(tenant.partner_id), label
        assert row.livemode is False, label
        expected_error = response.json["code"] if response.status_int >= 400 else None
        assert row.error_message == expected_error, label


@pytest.mark.shared_app(False)
def test_usage_updates_key_last_used(client, app, tenant):
    client.web.get("/api/v1/users", headers=tenant.headers)
    usage_rows(app, 1)

    listed = client.web.get("/api/partners/api-keys", headers=auth_header(tenant.token)).json

    assert listed["data"][0]["id"] == tenant.key_id
    assert listed["data"][0]["last_used"] is not None


@pytest.mark.shared_app(False)
def test_rejected_keys_write_no_usage(client, app, tenant):
    revoked = client.create_key(tenant.token, scopes=PARTNER_SCOPES)
    update_row(app, ApiKey, revoked["id"], status="revoked")
    expired = client.create_key(tenant.token, scopes=PARTNER_SCOPES)
    update_row(app, ApiKey, expired["id"], expires_at=utcnow() - dt.timedelta(minutes=1))
    for headers in ({}, auth_header("sk_test_short"),
                    auth_header("sk_test_" + secrets.token_urlsafe(32)),
                    {"Authorization": "Basic dXNlcjpwYXNz"},
                    auth_header(revoked["key"]), auth_header(expired["key"]),
                    auth_header(tenant.token)):
        client.web.get("/api/v1/users", headers=headers, status=401)
    accepted = client.web.get("/api/v1/users", headers=tenant.headers)

    rows = usage_rows(app, 1)
    time.sleep(0.2)
    rows = usage_rows(app, 1)

    assert [row.request_id for row in rows] == [accepted.headers["X-Request-Id"]]
