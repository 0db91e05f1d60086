"""Idempotency-Key rules that need no database: storing, hashing, masking, key checks."""

from __future__ import annotations

import json

import pytest
from pyramid.response import Response

from fkod.core import idempotency
from fkod.core.auth.security import MemberPrincipal
from fkod.core.errors import ValidationFailed
from fkod.core.gateway import ApiKeyPrincipal

API_KEY = "sk_test_" + "A1b2C3d4" * 5 + "xyz"
WEBHOOK_SECRET = "whsec_" + "c2VjcmV0IHNpZ25pbmcga2V5IGZvciB0ZXN0cw=="


@pytest.mark.parametrize(("status", "stored"), [
    (200, True), (201, True), (204, True),
    (400, True), (403, True), (404, True), (422, True),
    (409, False), (429, False),
    (302, False), (500, False), (502, False), (503, False),
])
def test_should_store_by_status(status, stored):
    assert idempotency.should_store(status) is stored


def test_request_hash_is_stable():
    first = idempotency.request_hash("POST", "/api/v1/users", b'{"email":"a@b.example"}')
    second = idempotency.request_hash("POST", "/api/v1/users", b'{"email":"a@b.example"}')

    assert first == second
    assert len(first) == 64


@pytest.mark.parametrize(("method", "path", "body"), [
    ("PUT", "/api/v1/users", b"{}"),
    ("POST", "/api/v1/courses", b"{}"),
    ("POST", "/api/v1/users?x=1", b"{}"),
    ("POST", "/api/v1/users", b"{ }"),
    # Moving bytes from the path into the body changes the hash.
    ("POST", "/api/v1/user", b"s{}"),
])
def test_request_hash_differs_per_part(method, path, body):
    base = idempotency.request_hash("POST", "/api/v1/users", b"{}")

    assert idempotency.request_hash(method, path, body) != base


@pytest.mark.parametrize(("secret", "masked"), [
    (API_KEY, "sk_test_…"),
    ("sk_live_" + "Z" * 43, "sk_live_…"),
    (WEBHOOK_SECRET, "whsec_…"),
    ("unprefixed-secret", "…"),
])
def test_mask_secret_keeps_type_prefix(secret, masked):
    assert idempotency.mask_secret(secret) == masked


def test_mask_secrets_masks_known_fields():
    body = json.dumps({"id": "key_1", "key": API_KEY, "secret": WEBHOOK_SECRET,
                       "key_prefix": API_KEY[:16], "name": "ç"}, ensure_ascii=False)

    masked_body, masked = idempotency.mask_secrets(body)

    assert masked == ["key", "secret"]
    assert API_KEY[8:] not in masked_body
    assert WEBHOOK_SECRET[6:] not in masked_body
    assert json.loads(masked_body) == {"id": "key_1", "key": "sk_test_…", "secret": "whsec_…",
                                       "key_prefix": API_KEY[:16], "name": "ç"}


@pytest.mark.parametrize("body", [
    '{"id": "user_1"}',
    '{"key": null}',
    '["sk_test_x"]',
    "not json",
])
def test_mask_secrets_leaves_other_bodies(body):
    assert idempotency.mask_secrets(body) == (body, [])


@pytest.mark.parametrize("value", ["k", "k" * 255, "a b", "~!@#$%^&*()_+{}|:<>?"])
def test_validate_key_accepts_printable_ascii(value):
    assert idempotency.validate_key(value) == value


@pytest.mark.parametrize("value", ["", "k" * 256, "tab\t", "line\n", "del\x7f", "clé", "ключ"])
def test_validate_key_rejects_others(value):
    with pytest.raises(ValidationFailed) as caught:
        idempotency.validate_key(value)

    assert caught.value.code == "invalid_idempotency_key"
    assert caught.value.errors[0]["name"] == "Idempotency-Key"
    assert caught.value.errors[0]["location"] == "header"


def test_caller_owner_per_credential():
    api_key = ApiKeyPrincipal(key_id=34, partner_id=12, livemode=False,
                              scopes=frozenset(), key_prefix="sk_test_abcdefgh")
    member = MemberPrincipal(user_id=7, partner_id=12, role="owner")

    assert idempotency.caller_owner(api_key) == "key:34"
    assert idempotency.caller_owner(member) == "partner:12"
    assert idempotency.caller_owner(None) is None


def json_response(status: int, body: dict, **headers) -> Response:
    response = Response(status=status, body=json.dumps(body).encode(),
                        content_type="application/json", charset="utf-8")
    response.headers.update(headers)
    return response


def test_stored_form_keeps_replayed_headers():
    response = json_response(201, {"id": "user_1"}, Location="/api/v1/users/user_1",
                             **{"X-Request-Id": "req_1", "X-RateLimit-Limit": "10"})

    stored = idempotency.stored_form(response, no_store=False)

    assert stored.status == 201
    assert stored.body == '{"id": "user_1"}'
    assert stored.headers == {"Content-Type": response.headers["Content-Type"],
                              "Location": "/api/v1/users/user_1"}


def test_stored_form_masks_no_store_success():
    response = json_response(201, {"id": "key_1", "key": API_KEY}, **{"Cache-Control": "no-store"})

    stored = idempotency.stored_form(response, no_store=True)

    assert API_KEY[8:] not in stored.body
    assert json.loads(stored.body)["key"] == "sk_test_…"
    assert stored.headers["Idempotent-Masked-Fields"] == "key"
    assert stored.headers["Cache-Control"] == "no-store"


def test_stored_form_refuses_no_store_without_known_field():
    response = json_response(201, {"id": "tok_1", "token": "tok_secret_value"})

    assert idempotency.stored_form(response, no_store=True) is None


def test_stored_form_keeps_no_store_error_body():
    body = {"status": 400, "code": "invalid_scope", "message": "Unknown scope."}
    response = json_response(400, body)

    stored = idempotency.stored_form(response, no_store=True)

    assert json.loads(stored.body) == body
    assert "Idempotent-Masked-Fields" not in stored.headers


def test_stored_form_refuses_non_utf8_body():
    response = Response(status=200, body=b"\xff\xfe", content_type="application/octet-stream")

    assert idempotency.stored_form(response, no_store=False) is None
