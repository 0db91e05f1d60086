"""Idempotency-Key on POST operations: replays, key reuse, concurrency and masked secrets.

Runs on SQLite, and on PostgreSQL with ``FKOD_TEST_STACK=production``.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import secrets
import threading

import pytest
import sqlalchemy as sa
import webtest
from pyramid.response import Response

from fkod.core import idempotency
from fkod.core.auth.models import ApiKey, User
from fkod.core.db import read_only, run_in_transaction, utcnow
from fkod.core.idempotency_models import IdempotencyRecord
from fkod.core.testing import TestClient, auth_header
from fkod.core.webhooks.models import Event
from fkod.plugins.learning import services as learning_services

USERS = "/api/v1/users"
API_KEYS = "/api/partners/api-keys"
WEBHOOKS = "/api/partners/webhooks"


@pytest.fixture
def caller(client):
    """A partner's login token, and a test-mode API key with the users and courses:write scopes."""
    _partner, token = client.partner_with_token()
    key = client.create_key(token, scopes=("users:read", "users:write", "courses:write"))
    return token, key["key"]


def new_email() -> str:
    return f"learner-{secrets.token_hex(4)}@acme.example"


def post_raw(client, path: str, body: bytes, headers: dict):
    """POST exact body bytes, so a test can compute their hash."""
    return client.web.post(path, body, headers=headers, content_type="application/json",
                           status="*", expect_errors=True)


def keyed(credential: str, idempotency_key: str) -> dict:
    return {**auth_header(credential), "Idempotency-Key": idempotency_key}


def count_users_with_email(app, email: str) -> int:
    return read_only(app.registry["db.engine"], lambda connection: connection.scalar(
        sa.select(sa.func.count()).select_from(User).where(User.email == email)))


def count_user_created_events(app, email: str) -> int:
    def work(connection):
        payloads = connection.scalars(sa.select(Event.payload).where(Event.type == "user.created"))
        return sum(1 for payload in payloads if payload["data"]["email"] == email)

    return read_only(app.registry["db.engine"], work)


def records(app) -> list:
    return read_only(app.registry["db.engine"], lambda connection: connection.execute(
        sa.select(IdempotencyRecord.__table__).order_by(IdempotencyRecord.id)).all())


def insert_record(app, **values) -> None:
    def work(session):
        session.add(IdempotencyRecord(**values))

    run_in_transaction(app.registry["db.session_factory"], work)


def api_key_owner(client, key: str) -> str:
    """Return the record owner of an API key: ``key:`` and the id of the key's row."""
    key_prefix = key[:len("sk_test_") + 8]
    key_id = read_only(client.app.registry["db.engine"], lambda connection: connection.scalar(
        sa.select(ApiKey.id).where(ApiKey.key_prefix == key_prefix)))
    return f"key:{key_id}"


# Replays ----------------------------------------------------------------------


def test_retry_replays_stored_response(client, app, caller):
    _token, key = caller
    body = {"email": new_email(), "name": "Ada"}

    first = client.web.post_json(USERS, body, headers=keyed(key, "create-ada"), status="*")
    retry = client.web.post_json(USERS, body, headers=keyed(key, "create-ada"), status="*")

    assert first.status_int == 201
    assert "Idempotent-Replayed" not in first.headers
    assert retry.status_int == 201
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.body == first.body
    assert retry.content_type == "application/json"
    assert count_users_with_email(app, body["email"]) == 1
    assert count_user_created_events(app, body["email"]) == 1


def test_first_response_same_as_without_key(client, caller):
    _token, key = caller

    plain = client.web.post_json(USERS, {"email": new_email()}, headers=auth_header(key))
    keyed_response = client.web.post_json(USERS, {"email": new_email()},
                                          headers=keyed(key, "compare-1"))

    assert keyed_response.status_int == plain.status_int
    assert set(keyed_response.headers) == set(plain.headers)
    assert set(keyed_response.json) == set(plain.json)


def test_record_stores_completed_response(client, app, caller):
    _token, key = caller
    body = json.dumps({"email": new_email()}).encode()

    response = post_raw(client, USERS, body, keyed(key, "stored-1"))

    assert response.status_int == 201
    (record,) = records(app)
    assert record.owner == api_key_owner(client, key)
    assert record.idempotency_key == "stored-1"
    assert record.method == "POST"
    assert record.path == USERS
    assert record.request_hash == idempotency.request_hash("POST", USERS, body)
    assert record.status == "completed"
    assert record.response_status == 201
    assert record.response_body == response.text
    assert record.response_headers["Content-Type"] == response.headers["Content-Type"]
    assert record.completed_at is not None
    ttl = record.expires_at - record.completed_at
    assert dt.timedelta(hours=23, minutes=59) < ttl <= dt.timedelta(hours=24)


def test_ttl_hours_setting_sets_expiry(app_factory):
    app = app_factory(**{"fkod.idempotency.ttl_hours": "2"})
    client = TestClient(app)
    _partner, token = client.partner_with_token()
    key = client.create_key(token)["key"]

    client.web.post_json(USERS, {"email": new_email()}, headers=keyed(key, "ttl-1"), status=201)

    (record,) = records(app)
    assert record.expires_at - record.completed_at == dt.timedelta(hours=2)


# Key reuse --------------------------------------------------------------------


def test_key_with_other_body_is_422(client, app, caller):
    _token, key = caller
    email = new_email()
    client.web.post_json(USERS, {"email": email}, headers=keyed(key, "reuse-1"), status=201)

    other = new_email()
    response = client.web.post_json(USERS, {"email": other}, headers=keyed(key, "reuse-1"),
                                    status="*")

    assert response.status_int == 422
    assert response.json["code"] == "idempotency_key_reused"
    assert response.json["errors"][0]["name"] == "Idempotency-Key"
    assert count_users_with_email(app, other) == 0


def test_key_with_same_json_other_bytes_is_422(client, caller):
    _token, key = caller
    email = new_email()
    compact = json.dumps({"email": email}, separators=(",", ":")).encode()
    spaced = json.dumps({"email": email}, separators=(", ", ": ")).encode()
    assert post_raw(client, USERS, compact, keyed(key, "bytes-1")).status_int == 201

    response = post_raw(client, USERS, spaced, keyed(key, "bytes-1"))

    assert response.status_int == 422
    assert response.json["code"] == "idempotency_key_reused"


def test_key_on_other_path_is_422(client, caller):
    _token, key = caller
    client.web.post_json(USERS, {"email": new_email()}, headers=keyed(key, "path-1"), status=201)

    response = client.web.post_json("/api/v1/courses", {"title": "Systems Thinking"},
                                    headers=keyed(key, "path-1"), status="*")

    assert response.status_int == 422
    assert response.json["code"] == "idempotency_key_reused"
    assert "POST /api/v1/users" in response.json["message"]


def test_key_with_other_query_is_422(client, caller):
    _token, key = caller
    body = json.dumps({"email": new_email()}).encode()
    assert post_raw(client, USERS, body, keyed(key, "query-1")).status_int == 201

    response = post_raw(client, USERS + "?x=1", body, keyed(key, "query-1"))

    assert response.status_int == 422, response.body[:300]
    assert response.json["code"] == "idempotency_key_reused"
    assert "POST /api/v1/users" in response.json["message"]


# Header values ----------------------------------------------------------------


@pytest.mark.shared_app
@pytest.mark.parametrize("value", [
    pytest.param("", id="empty"),
    pytest.param("k" * 256, id="256_characters"),
    pytest.param("cl\xe9", id="non_ascii"),
    pytest.param("tab\there", id="tab"),
    pytest.param("del\x7f", id="delete_character"),
])
def test_invalid_key_header_is_400(client, app, caller, value):
    _token, key = caller
    email = new_email()

    response = client.web.post_json(USERS, {"email": email}, headers=keyed(key, value),
                                     status="*")

    assert response.status_int == 400
    assert response.json["code"] == "invalid_idempotency_key"
    assert response.json["errors"] == [{
        "location": "header", "name": "Idempotency-Key",
        "description": "must be 1 to 255 printable ASCII characters (space to tilde)"}]
    assert count_users_with_email(app, email) == 0
    assert records(app) == []


@pytest.mark.parametrize("value", [
    pytest.param("k", id="one_character"),
    pytest.param("k" * 255, id="255_characters"),
    pytest.param("order 42 ~!@#$%^&*()", id="spaces_and_punctuation"),
])
def test_valid_key_header_is_accepted(client, caller, value):
    _token, key = caller
    body = {"email": new_email()}

    first = client.web.post_json(USERS, body, headers=keyed(key, value), status="*")
    retry = client.web.post_json(USERS, body, headers=keyed(key, value), status="*")

    assert first.status_int == 201
    assert retry.headers["Idempotent-Replayed"] == "true"


def test_credentials_checked_before_key(client):
    response = client.web.post_json(USERS, {"email": new_email()},
                                    headers={"Idempotency-Key": ""}, status="*")

    assert response.status_int == 401


def test_get_ignores_key_header(client, app, caller):
    _token, key = caller

    response = client.web.get(USERS, headers=keyed(key, ""), status="*")

    assert response.status_int == 200
    assert records(app) == []


def test_anonymous_operations_ignore_key_header(client, app):
    body = {"company_name": "Beta Learning", "email": new_email(),
            "password": "correct horse battery staple"}
    headers = {"Idempotency-Key": "signup-1"}

    first = client.web.post_json("/api/partners/register", body, headers=headers, status="*")
    retry = client.web.post_json("/api/partners/register", body, headers=headers, status="*")
    invalid = client.web.post_json("/api/auth/login", {"email": body["email"],
                                                       "password": body["password"]},
                                   headers={"Idempotency-Key": ""}, status="*")

    assert first.status_int == 201
    assert retry.status_int == 409
    assert retry.json["code"] == "email_taken"
    assert "Idempotent-Replayed" not in retry.headers
    assert invalid.status_int == 200
    assert records(app) == []


# Owners -----------------------------------------------------------------------


def test_other_partner_same_key(client, app):
    responses = []
    for _ in range(2):
        _partner, token = client.partner_with_token()
        key = client.create_key(token)["key"]
        responses.append(client.web.post_json(USERS, {"email": "shared@acme.example"},
                                              headers=keyed(key, "shared-key"), status="*"))

    assert [response.status_int for response in responses] == [201, 201]
    assert "Idempotent-Replayed" not in responses[1].headers
    assert responses[0].json["id"] != responses[1].json["id"]
    assert count_users_with_email(app, "shared@acme.example") == 2


def test_other_api_key_same_key(client, caller):
    token, first_key = caller
    second_key = client.create_key(token)["key"]

    first = client.web.post_json(USERS, {"email": new_email()},
                                 headers=keyed(first_key, "per-key"), status="*")
    second = client.web.post_json(USERS, {"email": new_email()},
                                  headers=keyed(second_key, "per-key"), status="*")

    assert first.status_int == 201
    assert second.status_int == 201
    assert "Idempotent-Replayed" not in second.headers


def test_other_partner_member_same_key(client, app):
    bodies = []
    owners = []
    for _ in range(2):
        partner, token = client.partner_with_token()
        owners.append("partner:" + partner["id"].removeprefix("partner_"))
        response = client.web.post_json(
            WEBHOOKS, {"url": "http://127.0.0.1:9/hooks", "event_types": ["partner.verified"]},
            headers=keyed(token, "hook-1"), status="*")
        assert response.status_int == 201
        assert "Idempotent-Replayed" not in response.headers
        bodies.append(response.json)

    assert bodies[0]["id"] != bodies[1]["id"]
    assert [record.owner for record in records(app)] == owners


# In progress and abandoned requests --------------------------------------------


def in_progress_values(client, key: str, body: bytes, *, age: dt.timedelta) -> dict:
    started = utcnow() - age
    return {
        "owner": api_key_owner(client, key), "idempotency_key": "running-1", "method": "POST",
        "path": USERS, "request_hash": idempotency.request_hash("POST", USERS, body),
        "status": "in_progress", "created_at": started,
        "expires_at": started + dt.timedelta(hours=24),
    }


def test_retry_while_in_progress_is_409(client, app, caller):
    _token, key = caller
    email = new_email()
    body = json.dumps({"email": email}).encode()
    insert_record(app, **in_progress_values(client, key, body, age=dt.timedelta(seconds=5)))

    response = post_raw(client, USERS, body, keyed(key, "running-1"))

    assert response.status_int == 409
    assert response.json["code"] == "idempotency_request_in_progress"
    assert response.headers["Retry-After"] == "1"
    assert count_users_with_email(app, email) == 0
    assert records(app)[0].status == "in_progress"


def test_abandoned_request_is_taken_over(client, app, caller):
    _token, key = caller
    email = new_email()
    body = json.dumps({"email": email}).encode()
    insert_record(app, **in_progress_values(client, key, body, age=dt.timedelta(seconds=61)))

    response = post_raw(client, USERS, body, keyed(key, "running-1"))

    assert response.status_int == 201
    assert "Idempotent-Replayed" not in response.headers
    assert count_users_with_email(app, email) == 1
    (record,) = records(app)
    assert record.status == "completed"
    assert record.response_status == 201


def test_in_progress_timeout_setting_is_used(app_factory):
    app = app_factory(**{"fkod.idempotency.in_progress_timeout_seconds": "600"})
    client = TestClient(app)
    _partner, token = client.partner_with_token()
    key = client.create_key(token)["key"]
    body = json.dumps({"email": new_email()}).encode()
    insert_record(app, **in_progress_values(client, key, body, age=dt.timedelta(seconds=120)))

    response = post_raw(client, USERS, body, keyed(key, "running-1"))

    assert response.status_int == 409
    assert response.json["code"] == "idempotency_request_in_progress"


def test_expired_record_is_ignored(client, app, caller):
    _token, key = caller
    old = utcnow() - dt.timedelta(hours=30)
    insert_record(app, owner=api_key_owner(client, key), idempotency_key="old-1",
                  method="POST", path="/api/v1/courses", request_hash="0" * 64,
                  status="completed", response_status=201, response_body="{}",
                  response_headers={"Content-Type": "application/json"}, created_at=old,
                  completed_at=old, expires_at=old + dt.timedelta(hours=24))
    email = new_email()

    response = client.web.post_json(USERS, {"email": email}, headers=keyed(key, "old-1"),
                                    status="*")

    assert response.status_int == 201
    assert "Idempotent-Replayed" not in response.headers
    assert count_users_with_email(app, email) == 1
    (record,) = records(app)
    assert record.path == USERS
    assert record.expires_at > utcnow()


def test_claim_lost_during_operation_rolls_back(client, app, caller, monkeypatch):
    _token, key = caller
    email = new_email()
    create_user = learning_services.create_user

    def create_user_then_lose_claim(request, data):
        user = create_user(request, data)
        # What a retry does when it takes the request over: a new created_at.
        request.dbsession.execute(
            sa.update(IdempotencyRecord).values(created_at=utcnow() + dt.timedelta(seconds=1))
            .execution_options(synchronize_session=False))
        return user

    monkeypatch.setattr(learning_services, "create_user", create_user_then_lose_claim)

    response = client.web.post_json(USERS, {"email": email}, headers=keyed(key, "lost-1"),
                                    status="*")

    assert response.status_int == 409
    assert response.json["code"] == "idempotency_request_in_progress"
    assert count_users_with_email(app, email) == 0
    assert count_user_created_events(app, email) == 0


# Concurrency ------------------------------------------------------------------


def test_concurrent_requests_have_one_effect(client, app, caller):
    _token, key = caller
    email = new_email()
    body = json.dumps({"email": email}).encode()
    barrier = threading.Barrier(5)
    responses = [None] * 5

    def send(index: int) -> None:
        web = webtest.TestApp(app)
        barrier.wait()
        responses[index] = web.post(USERS, body, headers=keyed(key, "race-1"),
                                    content_type="application/json", status="*",
                                    expect_errors=True)

    threads = [threading.Thread(target=send, args=(index,)) for index in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    statuses = sorted(response.status_int for response in responses)
    created = [response for response in responses if response.status_int == 201]
    assert set(statuses) <= {201, 409}, [response.body[:300] for response in responses]
    assert created
    assert len({response.body for response in created}) == 1
    assert sum("Idempotent-Replayed" not in response.headers for response in created) == 1
    for response in responses:
        if response.status_int == 409:
            assert response.json["code"] == "idempotency_request_in_progress"
    assert count_users_with_email(app, email) == 1
    assert count_user_created_events(app, email) == 1


# Which results are stored -----------------------------------------------------


def test_operation_400_is_replayed(client, app, caller):
    token, _key = caller
    body = {"key_name": "ci", "scopes": ["nonexistent:scope"]}

    first = client.web.post_json(API_KEYS, body, headers=keyed(token, "bad-scope"), status="*")
    retry = client.web.post_json(API_KEYS, body, headers=keyed(token, "bad-scope"), status="*")
    corrected = client.web.post_json(API_KEYS, {"key_name": "ci", "scopes": ["users:read"]},
                                     headers=keyed(token, "bad-scope"), status="*")

    assert first.status_int == 400
    assert first.json["code"] == "invalid_scope"
    assert retry.status_int == 400
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.body == first.body
    assert corrected.status_int == 422
    assert corrected.json["code"] == "idempotency_key_reused"


def test_operation_404_is_replayed(client, caller):
    _token, key = caller
    body = {"user_id": "user_999999"}
    path = "/api/v1/courses/course_999999/complete"

    first = client.web.post_json(path, body, headers=keyed(key, "missing-1"), status="*")
    retry = client.web.post_json(path, body, headers=keyed(key, "missing-1"), status="*")

    assert first.status_int == 404
    assert retry.status_int == 404
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.body == first.body


def test_body_validation_error_is_not_stored(client, app, caller):
    _token, key = caller
    email = new_email()

    invalid = client.web.post_json(USERS, {"email": "not an email"},
                                   headers=keyed(key, "fix-1"), status="*")
    corrected = client.web.post_json(USERS, {"email": email}, headers=keyed(key, "fix-1"),
                                     status="*")

    assert invalid.status_int == 400
    assert invalid.json["code"] == "validation_failed"
    assert corrected.status_int == 201
    assert "Idempotent-Replayed" not in corrected.headers
    assert count_users_with_email(app, email) == 1


def test_409_is_not_stored(client, app, caller):
    _token, key = caller
    email = new_email()
    client.web.post_json(USERS, {"email": email}, headers=auth_header(key), status=201)

    first = client.web.post_json(USERS, {"email": email}, headers=keyed(key, "dup-1"),
                                 status="*")
    retry = client.web.post_json(USERS, {"email": email}, headers=keyed(key, "dup-1"),
                                 status="*")

    assert first.status_int == 409
    assert first.json["code"] == "user_exists"
    assert retry.status_int == 409
    assert "Idempotent-Replayed" not in retry.headers
    assert records(app) == []


def test_500_is_not_stored(client, app, caller, monkeypatch):
    _token, key = caller
    email = new_email()
    create_user = learning_services.create_user

    def fail(request, data):
        create_user(request, data)
        raise RuntimeError("simulated failure after the user was written")

    monkeypatch.setattr(learning_services, "create_user", fail)
    failed = client.web.post_json(USERS, {"email": email}, headers=keyed(key, "crash-1"),
                                  status="*")
    assert records(app) == []
    monkeypatch.setattr(learning_services, "create_user", create_user)
    retry = client.web.post_json(USERS, {"email": email}, headers=keyed(key, "crash-1"),
                                 status="*")

    assert failed.status_int == 500
    assert retry.status_int == 201
    assert "Idempotent-Replayed" not in retry.headers
    assert count_users_with_email(app, email) == 1
    assert count_user_created_events(app, email) == 1


def test_returned_503_response_is_not_stored(client, app, caller, monkeypatch):
    _token, key = caller
    email = new_email()
    create_user = learning_services.create_user

    def unavailable(request, data):
        # Returned, not raised, so the request's transaction commits.
        return Response(status=503, json_body={"status": 503}, content_type="application/json")

    monkeypatch.setattr(learning_services, "create_user", unavailable)
    failed = client.web.post_json(USERS, {"email": email}, headers=keyed(key, "busy-1"),
                                  status="*")
    assert records(app) == []
    monkeypatch.setattr(learning_services, "create_user", create_user)
    retry = client.web.post_json(USERS, {"email": email}, headers=keyed(key, "busy-1"),
                                 status="*")

    assert failed.status_int == 503
    assert retry.status_int == 201
    assert "Idempotent-Replayed" not in retry.headers


# Secrets ----------------------------------------------------------------------


def test_api_key_secret_is_masked_in_replay(client, app, caller):
    token, _key = caller
    body = {"key_name": "replayed", "scopes": ["users:read"]}

    first = client.web.post_json(API_KEYS, body, headers=keyed(token, "key-1"), status=201)
    retry = client.web.post_json(API_KEYS, body, headers=keyed(token, "key-1"), status=201)

    secret = first.json["key"]
    random_part = secret[len("sk_test_"):]
    assert secret.startswith("sk_test_")
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.headers["Idempotent-Masked-Fields"] == "key"
    assert retry.headers["Cache-Control"] == "no-store"
    assert random_part not in retry.text
    assert retry.json["key"] == "sk_test_…"
    assert retry.json["id"] == first.json["id"]
    assert retry.json["key_prefix"] == first.json["key_prefix"]
    assert all(random_part not in (record.response_body or "") for record in records(app))
    assert "Idempotent-Masked-Fields" not in first.headers


def test_rotated_api_key_secret_is_masked_in_replay(client, caller):
    token, _key = caller
    created = client.create_key(token)
    path = f"{API_KEYS}/{created['id']}/rotate"

    first = client.web.post_json(path, {"grace_period_seconds": 0},
                                 headers=keyed(token, "rotate-1"), status=200)
    retry = client.web.post_json(path, {"grace_period_seconds": 0},
                                 headers=keyed(token, "rotate-1"), status=200)

    assert retry.headers["Idempotent-Replayed"] == "true"
    assert first.json["key"][len("sk_test_"):] not in retry.text
    assert retry.json["key"] == "sk_test_…"


def test_webhook_secret_is_masked_in_replay(client, app, caller):
    token, _key = caller
    body = {"url": "http://127.0.0.1:9/hooks", "event_types": ["partner.verified"]}

    first = client.web.post_json(WEBHOOKS, body, headers=keyed(token, "hook-1"), status=201)
    retry = client.web.post_json(WEBHOOKS, body, headers=keyed(token, "hook-1"), status=201)

    secret = first.json["secret"]
    random_part = secret[len("whsec_"):]
    assert secret.startswith("whsec_")
    assert retry.headers["Idempotent-Masked-Fields"] == "secret"
    assert random_part not in retry.text
    assert retry.json["secret"] == "whsec_…"
    assert retry.json["id"] == first.json["id"]
    assert all(random_part not in (record.response_body or "") for record in records(app))


# Bodies of unknown length -----------------------------------------------------


def post_chunked(client, path: str, body: bytes, headers: dict):
    """POST ``body`` without Content-Length, as a server passes on a chunked request."""
    request = webtest.TestRequest.blank(path, method="POST", headers=headers)
    request.environ["CONTENT_TYPE"] = "application/json"
    request.environ.pop("CONTENT_LENGTH", None)
    request.environ["wsgi.input"] = io.BytesIO(body)
    request.environ["wsgi.input_terminated"] = True
    return client.web.do_request(request, status="*", expect_errors=True)


def test_chunked_bodies_are_compared(client, app, caller):
    _token, key = caller
    email = new_email()
    body = json.dumps({"email": email}).encode()

    first = post_chunked(client, USERS, body, keyed(key, "chunked-1"))
    retry = post_chunked(client, USERS, body, keyed(key, "chunked-1"))
    other = post_chunked(client, USERS, json.dumps({"email": new_email()}).encode(),
                         keyed(key, "chunked-1"))

    assert first.status_int == 201
    assert first.json["email"] == email
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert other.status_int == 422
    assert count_users_with_email(app, email) == 1
