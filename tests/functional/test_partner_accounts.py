"""Partner sign-up, login tokens and the partner profile (``/api/partners/me``)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest
import sqlalchemy as sa
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from fkod.core.auth.models import Partner, PartnerMember, User
from fkod.core.db import read_only, run_in_transaction
from fkod.core.testing import TEST_PASSWORD, auth_header
from fkod.core.webhooks.models import Event
from tests.envelope import assert_envelope

pytestmark = pytest.mark.shared_app

UNSAFE_LINKS = [
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    " javascript:alert(1)",
    "java\tscript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "vbscript:x",
    "file:///etc/passwd",
    "//evil.test/x",
]
LINK_FIELDS = ["company_website", "company_logo_url"]
SERVER_OWNED_FIELDS = {
    "tier": "enterprise",
    "status": "active",
    "verification_status": "verified",
    "plan_id": 1,
    "deleted_at": None,
}



def error_names(body: dict) -> list[str]:
    return [error["name"] for error in body["errors"]]


def register_body(**fields) -> dict:
    body = {"company_name": "Acme Learning", "email": "owner@acme.example",
            "password": TEST_PASSWORD}
    body.update(fields)
    return body


def count_accounts(app) -> dict[str, int]:
    """Return the row counts of the tables a registration writes to."""
    def work(connection):
        return {
            table.name: connection.scalar(sa.select(sa.func.count()).select_from(table))
            for table in (User.__table__, Partner.__table__, PartnerMember.__table__,
                          Event.__table__)
        }

    return read_only(app.registry["db.engine"], work)


def stored_events(app, event_type: str) -> list[Event]:
    def work(session):
        return session.scalars(
            sa.select(Event).where(Event.type == event_type).order_by(Event.id)).all()

    return run_in_transaction(app.registry["db.session_factory"], work)


def stored_partner(app, partner_id: str) -> Partner:
    number = int(partner_id.removeprefix("partner_"))
    return run_in_transaction(app.registry["db.session_factory"],
                              lambda session: session.get(Partner, number))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def decode_segment(segment: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


@pytest.fixture
def partner(client):
    """A registered partner: its registration response, owner email and login token."""
    registered = client.register_partner(company_name="Acme Learning")
    email = registered["user"]["email"]
    return {"registered": registered, "email": email, "token": client.login(email)}


# Registration -------------------------------------------------------------------


def test_register_returns_owner_profile(client, app):
    response = client.web.post_json(
        "/api/partners/register",
        register_body(email="Owner@Acme.Example", name="Olive Owner"), status=201)

    body = response.json
    assert body["partner"]["id"].startswith("partner_")
    assert body["partner"]["company_name"] == "Acme Learning"
    assert body["partner"]["status"] == "pending"
    assert body["partner"]["verification_status"] == "unverified"
    assert body["user"]["id"].startswith("user_")
    assert body["user"]["email"] == "owner@acme.example"
    assert body["user"]["name"] == "Olive Owner"
    assert TEST_PASSWORD.encode() not in response.body
    assert b"password" not in response.body


def test_register_makes_owner_member(client, app):
    registered = client.register_partner()
    token = client.login(registered["user"]["email"])

    me = client.web.get("/api/partners/me", headers=auth_header(token)).json

    assert me["id"] == registered["partner"]["id"]
    assert me["membership"]["role"] == "owner"
    assert me["membership"]["user"]["id"] == registered["user"]["id"]


def test_register_stores_password_hash(client, app):
    registered = client.register_partner()
    number = int(registered["user"]["id"].removeprefix("user_"))

    user = run_in_transaction(app.registry["db.session_factory"],
                              lambda session: session.get(User, number))

    assert user.password_hash
    assert TEST_PASSWORD not in user.password_hash
    assert user.password_hash.startswith("$argon2id$")


@pytest.mark.shared_app(False)
def test_register_writes_created_event(client, app):
    response = client.web.post_json("/api/partners/register", register_body(), status=201)
    partner_id = response.json["partner"]["id"]

    events = stored_events(app, "partner.created")

    assert len(events) == 1
    assert events[0].payload["type"] == "partner.created"
    assert events[0].payload["data"]["id"] == partner_id
    assert events[0].payload["data"]["company_name"] == "Acme Learning"
    assert events[0].request_id == response.headers["X-Request-Id"]
    assert events[0].livemode is True


@pytest.mark.shared_app(False)
def test_register_duplicate_email_conflict(client, app):
    client.web.post_json("/api/partners/register", register_body(), status=201)
    before = count_accounts(app)

    response = client.web.post_json(
        "/api/partners/register", register_body(company_name="Copycat Ltd"), status=409)

    body = assert_envelope(response, 409, "email_taken")
    assert "email" in error_names(body)
    assert count_accounts(app) == before


@pytest.mark.shared_app(False)
@pytest.mark.parametrize("second_email", ["OWNER@ACME.EXAMPLE", "Owner@acme.Example",
                                          "  owner@acme.example  "])
def test_register_duplicate_ignores_case(client, app, second_email):
    client.web.post_json("/api/partners/register", register_body(), status=201)
    before = count_accounts(app)

    response = client.web.post_json(
        "/api/partners/register", register_body(email=second_email), status=409)

    assert_envelope(response, 409, "email_taken")
    assert count_accounts(app) == before


@pytest.mark.parametrize("field", ["company_name", "email", "password"])
def test_register_missing_field_rejected(client, app, field):
    body = register_body()
    del body[field]
    before = count_accounts(app)

    response = client.web.post_json("/api/partners/register", body, status=400)

    assert field in error_names(assert_envelope(response, 400))
    assert count_accounts(app) == before


@pytest.mark.parametrize("field,value", [
    ("company_name", 123),
    ("company_name", ""),
    ("company_name", None),
    ("email", ["owner@acme.example"]),
    ("email", "not-an-email"),
    ("password", 12345678901),
    ("password", "short"),
    ("name", {"first": "Olive"}),
    ("description", True),
    ("category", "space"),
    ("contact_email", "nobody"),
    ("contact_phone", "call me maybe"),
    ("address", "1 Main Street"),
])
def test_register_invalid_field_rejected(client, app, field, value):
    before = count_accounts(app)

    response = client.web.post_json("/api/partners/register", register_body(**{field: value}),
                                    status=400)

    assert field in error_names(assert_envelope(response, 400, "validation_failed"))
    assert count_accounts(app) == before


def test_register_incomplete_address_rejected(client, app):
    response = client.web.post_json(
        "/api/partners/register", register_body(address={"line1": "1 Main Street"}),
        status=400)

    names = error_names(assert_envelope(response, 400))
    assert "address.city" in names
    assert "address.country" in names


@pytest.mark.parametrize("field,value", list(SERVER_OWNED_FIELDS.items()),
                         ids=list(SERVER_OWNED_FIELDS))
def test_register_server_field_rejected(client, app, field, value):
    before = count_accounts(app)

    response = client.web.post_json("/api/partners/register",
                                    register_body(**{field: value}), status=400)

    assert field in error_names(assert_envelope(response, 400, "validation_failed"))
    assert count_accounts(app) == before


@pytest.mark.parametrize("field", ["company_name", "email", "password", "name", "description"])
def test_register_nul_character_rejected(client, app, field):
    value = "owner\u0000@acme.example" if field == "email" else "a\u0000b" + "c" * 10
    before = count_accounts(app)

    response = client.web.post_json("/api/partners/register",
                                    register_body(**{field: value}), status=400)

    assert field in error_names(assert_envelope(response, 400))
    assert count_accounts(app) == before


@pytest.mark.parametrize("field", LINK_FIELDS)
@pytest.mark.parametrize("url", UNSAFE_LINKS)
def test_register_unsafe_link_rejected(client, app, field, url):
    before = count_accounts(app)

    response = client.web.post_json("/api/partners/register",
                                    register_body(**{field: url}), status=400)

    assert field in error_names(assert_envelope(response, 400))
    assert count_accounts(app) == before


@pytest.mark.shared_app(False)
@pytest.mark.parametrize("field", LINK_FIELDS)
def test_register_https_link_stored(client, app, field):
    response = client.web.post_json(
        "/api/partners/register", register_body(**{field: "https://acme.example/about"}),
        status=201)

    assert response.json["partner"][field] == "https://acme.example/about"


# Login --------------------------------------------------------------------------


def test_login_token_verifies_against_jwks(client, app, partner):
    registered = partner["registered"]
    response = client.web.post_json("/api/auth/login",
                                    {"email": partner["email"], "password": TEST_PASSWORD})
    jwks = client.web.get("/.well-known/jwks.json").json
    access_token = response.json["access_token"]

    decoded = jwt.decode(access_token, KeySet.import_key_set(jwks), algorithms=["ES256"])

    assert decoded.header["alg"] == "ES256"
    assert decoded.header["kid"] in [key["kid"] for key in jwks["keys"]]
    claims = decoded.claims
    assert claims["sub"] == registered["user"]["id"]
    assert claims["sub"].startswith("user_")
    assert claims["partner_id"] == registered["partner"]["id"]
    assert claims["role"] == "owner"
    assert claims["email"] == partner["email"]
    assert claims["company"] == "Acme Learning"
    assert "api_keys:write" in claims["scopes"]
    assert isinstance(claims["iat"], int)
    assert claims["exp"] > claims["iat"]
    assert abs(claims["iat"] - time.time()) < 60


def test_login_response_fields(client, partner):
    response = client.web.post_json("/api/auth/login",
                                    {"email": partner["email"].upper(), "password": TEST_PASSWORD})

    assert response.headers["Cache-Control"] == "no-store"
    assert response.json["token_type"] == "Bearer"
    assert response.json["expires_in"] > 0
    assert response.json["partner_id"] == partner["registered"]["partner"]["id"]
    assert response.json["role"] == "owner"


def test_jwks_contains_public_keys_only(client):
    jwks = client.web.get("/.well-known/jwks.json").json

    assert len(jwks["keys"]) >= 1
    for key in jwks["keys"]:
        assert key["kty"] == "EC"
        assert key["crv"] == "P-256"
        assert key["kid"]
        assert "d" not in key


def test_login_failures_look_identical(client, partner):
    wrong_password = client.web.post_json(
        "/api/auth/login", {"email": partner["email"], "password": "wrong password!!"},
        status=401)
    unknown_email = client.web.post_json(
        "/api/auth/login", {"email": "nobody@acme.example", "password": "wrong password!!"},
        status=401)

    first = assert_envelope(wrong_password, 401, "invalid_credentials")
    second = assert_envelope(unknown_email, 401, "invalid_credentials")
    first.pop("request_id")
    second.pop("request_id")
    assert first == second
    assert wrong_password.headers.get("WWW-Authenticate") == \
        unknown_email.headers.get("WWW-Authenticate")


# The profile --------------------------------------------------------------------


def test_update_profile_emits_event(client, app, partner):
    response = client.web.put_json(
        "/api/partners/me",
        {"company_name": "Acme Academy", "description": "Courses for teams.",
         "category": "education"},
        headers=auth_header(partner["token"]))

    assert response.json["company_name"] == "Acme Academy"
    assert response.json["description"] == "Courses for teams."
    events = stored_events(app, "partner.updated")
    assert len(events) == 1
    data = events[0].payload["data"]
    assert data["changed_fields"] == ["category", "company_name", "description"]
    assert data["company_name"] == "Acme Academy"
    assert data["id"] == partner["registered"]["partner"]["id"]
    assert events[0].request_id == response.headers["X-Request-Id"]


@pytest.mark.shared_app(False)
def test_update_unchanged_emits_nothing(client, app, partner):
    client.web.put_json("/api/partners/me", {"company_name": "Acme Learning"},
                        headers=auth_header(partner["token"]))

    assert stored_events(app, "partner.updated") == []


def test_update_empty_body_rejected(client, partner):
    response = client.web.put_json("/api/partners/me", {}, headers=auth_header(partner["token"]),
                                   status=400)

    assert_envelope(response, 400, "validation_failed")


@pytest.mark.parametrize("field,value", list(SERVER_OWNED_FIELDS.items()),
                         ids=list(SERVER_OWNED_FIELDS))
def test_update_server_field_rejected(client, app, partner, field, value):
    headers = auth_header(partner["token"])
    before = client.web.get("/api/partners/me", headers=headers).json
    stored_before = stored_partner(app, partner["registered"]["partner"]["id"])

    response = client.web.put_json("/api/partners/me",
                                   {"description": "Sneaky", field: value},
                                   headers=headers, status=400)

    assert field in error_names(assert_envelope(response, 400, "validation_failed"))
    assert client.web.get("/api/partners/me", headers=headers).json == before
    stored = stored_partner(app, partner["registered"]["partner"]["id"])
    assert stored.status == "pending"
    assert stored.verification_status == "unverified"
    assert stored.plan_id == stored_before.plan_id
    assert stored.deleted_at is None
    assert stored.description is None


def test_update_nul_character_rejected(client, app, partner):
    response = client.web.put_json("/api/partners/me", {"description": "a\u0000b"},
                                   headers=auth_header(partner["token"]), status=400)

    assert "description" in error_names(assert_envelope(response, 400))
    assert stored_partner(app, partner["registered"]["partner"]["id"]).description is None


@pytest.mark.parametrize("field", LINK_FIELDS)
@pytest.mark.parametrize("url", UNSAFE_LINKS)
def test_update_unsafe_link_rejected(client, app, partner, field, url):
    response = client.web.put_json("/api/partners/me", {field: url},
                                   headers=auth_header(partner["token"]), status=400)

    assert field in error_names(assert_envelope(response, 400))
    assert getattr(stored_partner(app, partner["registered"]["partner"]["id"]), field) is None


# Access tokens ------------------------------------------------------------------


def login_claims(client, partner) -> dict:
    jwks = client.web.get("/.well-known/jwks.json").json
    return dict(jwt.decode(partner["token"], KeySet.import_key_set(jwks),
                           algorithms=["ES256"]).claims)


def sign_with_server_key(app, claims: dict) -> str:
    signer = app.registry["token_signer"]
    header = {"alg": "ES256", "kid": signer.key_id, "typ": "JWT"}
    return jwt.encode(header, claims, signer.key)


def test_resigned_token_accepted(client, app, partner):
    # This is the control for the rejection tests below. The same construction with
    # valid claims is accepted, so a 401 there comes from the changed claim.
    token = sign_with_server_key(app, login_claims(client, partner))

    client.web.get("/api/partners/me", headers=auth_header(token), status=200)


@pytest.mark.parametrize("change", [
    {"exp": -120, "iat": -3720},
    {"aud": "another-audience"},
    {"iss": "someone-else"},
], ids=["expired", "wrong_audience", "wrong_issuer"])
def test_server_signed_bad_claims_rejected(client, app, partner, change):
    claims = login_claims(client, partner)
    now = int(time.time())
    for name, value in change.items():
        claims[name] = now + value if isinstance(value, int) else value

    response = client.web.get("/api/partners/me",
                              headers=auth_header(sign_with_server_key(app, claims)),
                              status=401)

    assert_envelope(response, 401, "invalid_token")


def test_forged_payload_rejected(client, app, partner):
    header, _payload, signature = partner["token"].split(".")
    claims = login_claims(client, partner)
    claims["role"] = "admin"
    claims["partner_id"] = "partner_999"
    forged = ".".join([header, b64url(json.dumps(claims).encode()), signature])

    response = client.web.get("/api/partners/me", headers=auth_header(forged), status=401)

    assert_envelope(response, 401, "invalid_token")


@pytest.mark.parametrize("use_server_kid", [True, False], ids=["server_kid", "own_kid"])
def test_other_key_signature_rejected(client, app, partner, use_server_kid):
    other_key = ECKey.generate_key("P-256")
    kid = app.registry["token_signer"].key_id if use_server_kid else other_key.thumbprint()
    token = jwt.encode({"alg": "ES256", "kid": kid, "typ": "JWT"},
                       login_claims(client, partner), other_key)

    response = client.web.get("/api/partners/me", headers=auth_header(token), status=401)

    assert_envelope(response, 401, "invalid_token")


def test_unsigned_token_rejected(client, app, partner):
    header = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    token = f"{header}.{b64url(json.dumps(login_claims(client, partner)).encode())}."

    response = client.web.get("/api/partners/me", headers=auth_header(token), status=401)

    assert_envelope(response, 401, "invalid_token")


def test_hmac_with_public_key_rejected(client, app, partner):
    # An algorithm-confusion attack signs with HS256, using the public key as the secret.
    signer = app.registry["token_signer"]
    public_pem = signer.key.as_pem(private=False)
    header = b64url(json.dumps({"alg": "HS256", "kid": signer.key_id, "typ": "JWT"}).encode())
    payload = b64url(json.dumps(login_claims(client, partner)).encode())
    signing_input = f"{header}.{payload}".encode()
    signature = b64url(hmac.new(public_pem, signing_input, hashlib.sha256).digest())

    response = client.web.get("/api/partners/me",
                              headers=auth_header(f"{header}.{payload}.{signature}"), status=401)

    assert_envelope(response, 401, "invalid_token")


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "eyJ.eyJ.sig", "x" * 5000,
                                   "two words"])
def test_garbage_token_rejected(client, token):
    response = client.web.get("/api/partners/me", headers=auth_header(token), status=401)

    assert_envelope(response, 401, "invalid_token")


@pytest.mark.parametrize("authorization", ["Basic dXNlcjpwYXNzd29yZA==", "Bearer ", "Token abc"])
def test_non_bearer_authorization_rejected(client, authorization):
    response = client.web.get("/api/partners/me", headers={"Authorization": authorization},
                              status=401)

    assert_envelope(response, 401, "invalid_authorization")


def test_token_header_names_jwks_key(client, partner):
    header = decode_segment(partner["token"].split(".")[0])
    jwks = client.web.get("/.well-known/jwks.json").json

    assert header["kid"] == jwks["keys"][0]["kid"]
