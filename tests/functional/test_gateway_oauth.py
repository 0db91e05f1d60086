"""OAuth access tokens at the gateway: verification, tenancy, limits, metering and CORS.

The tests mint tokens with the application's own TokenSigner and store the
matching application and token rows directly, as the authorization server
would.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import secrets
import time

import pytest
import sqlalchemy as sa
from joserfc import jwt
from joserfc.jwk import ECKey

from fkod.core.api import AUTH_API_KEY
from fkod.core.auth.models import Partner, PartnerUser, User
from fkod.core.auth.oauth_models import OAuthClient, OAuthConsent, OAuthToken, digest
from fkod.core.auth.tokens import OAUTH_AUDIENCE
from fkod.core.billing.models import Plan
from fkod.core.db import run_in_transaction, utcnow
from fkod.core.ids import parse_id
from fkod.core.metering import client_usage_summary, rollup_usage
from fkod.core.metering.base import UsageRecord
from fkod.core.metering.models import ApiUsage, ApiUsageHourly
from fkod.core.metering.redis import decode_record, encode_record
from fkod.core.testing import auth_header, verify_partner
from tests.envelope import assert_envelope

pytestmark = pytest.mark.shared_app

USERS = "/api/v1/users"
ORIGIN = "https://learn.acme.example"
OTHER_ORIGIN = "https://evil.example"


def in_transaction(app, work):
    return run_in_transaction(app.registry["db.session_factory"], work)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Tenant:
    """A partner with two test-mode users in its tenancy and an API key."""

    def __init__(self, client, app):
        self.client = client
        self.app = app
        partner, token = client.partner_with_token()
        self.partner_id = partner["id"]
        self.partner_number = parse_id("partner", partner["id"])
        self.login_token = token
        self.key = client.create_key(token, scopes=("users:read", "users:write"))["key"]
        self.users = [self.create_user() for _ in range(2)]

    def create_user(self) -> str:
        body = {"email": f"learner-{secrets.token_hex(4)}@acme.example"}
        return self.client.web.post_json(USERS, body, headers=auth_header(self.key),
                                         status=201).json["id"]

    def add_application(self, *, client_type: str = "public", livemode: bool = False,
                        origins=(ORIGIN,)) -> tuple[int, str]:
        """Store an OAuth client of the partner; return its row id and client_id."""
        client_id = secrets.token_urlsafe(18)

        def work(session):
            application = OAuthClient(
                client_id=client_id, partner_id=self.partner_number, client_type=client_type,
                livemode=livemode, status="active",
                client_secret="" if client_type == "public" else digest(secrets.token_hex(16)),
            )
            application.set_client_metadata({
                "client_name": "Acme Learning App",
                "redirect_uris": ["https://learn.acme.example/callback"],
                "scope": "users:read users:write courses:read",
                "allowed_origins": list(origins),
            })
            session.add(application)
            session.flush()
            return application.id

        return in_transaction(self.app, work), client_id

    def mint(self, client_id: str, *, user: str | None = None, scope: str = "users:read",
             livemode: bool = False, revoked: bool = False, store: bool = True,
             **claims) -> tuple[str, str]:
        """Sign an access token and store its jti; return the token and the jti.

        A user's token also gets the user's consent to the application.
        """
        jti = secrets.token_urlsafe(12)
        user_id = parse_id("user", user) if user else None
        payload = {
            "sub": user if user else client_id, "client_id": client_id, "scope": scope,
            "partner_id": self.partner_number, "livemode": livemode, "jti": jti, **claims,
        }
        token, _ttl = self.app.registry["token_signer"].issue(payload, audience=OAUTH_AUDIENCE,
                                                              ttl_seconds=3600)
        if store:
            def work(session):
                session.add(OAuthToken(
                    client_id=client_id, user_id=user_id, family_id=secrets.token_hex(8),
                    token_type="Bearer", access_token=jti, scope=scope, expires_in=3600,
                    livemode=livemode,
                    access_token_revoked_at=int(time.time()) if revoked else 0,
                ))
                if user_id is None:
                    return
                application_id = session.scalar(
                    sa.select(OAuthClient.id).where(OAuthClient.client_id == client_id))
                consent = session.scalar(sa.select(OAuthConsent).where(
                    OAuthConsent.user_id == user_id,
                    OAuthConsent.oauth_client_id == application_id))
                if consent is None:
                    session.add(OAuthConsent(user_id=user_id, oauth_client_id=application_id,
                                             scopes=scope.split()))

            in_transaction(self.app, work)
        return token, jti


@pytest.fixture
def tenant(client, app):
    return Tenant(client, app)


def get(client, path: str, headers: dict, **kwargs):
    return client.web.get(path, headers=headers, status="*", expect_errors=True, **kwargs)


# Tenancy and scopes ----------------------------------------------------------------


def test_user_token_sees_only_its_user(client, tenant):
    _row, client_id = tenant.add_application()
    own, other = tenant.users
    token, _jti = tenant.mint(client_id, user=own)
    headers = auth_header(token)

    listed = client.web.get(USERS, headers=headers, status=200).json
    assert [user["id"] for user in listed["data"]] == [own]
    client.web.get(f"{USERS}/{own}", headers=headers, status=200)
    assert_envelope(get(client, f"{USERS}/{other}", headers), 404, "not_found")


def test_client_credentials_see_tenancy(client, tenant):
    _row, client_id = tenant.add_application(client_type="confidential")
    token, _jti = tenant.mint(client_id)

    listed = client.web.get(USERS, headers=auth_header(token), status=200).json

    assert sorted(user["id"] for user in listed["data"]) == sorted(tenant.users)


def test_missing_scope_forbidden(client, tenant):
    _row, client_id = tenant.add_application()
    token, _jti = tenant.mint(client_id, user=tenant.users[0], scope="courses:read")

    body = assert_envelope(get(client, USERS, auth_header(token)), 403, "missing_scope")
    assert "users:read" in body["message"]


def test_every_gateway_operation_needs_a_scope(client):
    gateway_operations = []
    for service in client.registry.cornice_services.values():
        for method, view, _args in service.definitions:
            op = getattr(view, "operation", None)
            if op is not None and op.auth == AUTH_API_KEY:
                gateway_operations.append((method, service.path, op.scope))

    assert len(gateway_operations) > 5
    assert [entry for entry in gateway_operations if not entry[2]] == []


@pytest.mark.parametrize(("method", "path"), [
    ("GET", USERS), ("GET", "/api/v1/courses"), ("GET", "/api/v1/mentors"),
    ("POST", USERS), ("POST", "/api/v1/courses"),
])
def test_empty_scope_token_refused(client, tenant, method, path):
    _row, client_id = tenant.add_application()
    token, _jti = tenant.mint(client_id, user=tenant.users[0], scope="")
    headers = {**auth_header(token), "Content-Type": "application/json"}

    response = client.web.request(path, method=method, headers=headers, body=b"{}",
                                  expect_errors=True)

    assert_envelope(response, 403, "missing_scope")


def test_narrowed_application_scope_applies(client, app, tenant):
    row, client_id = tenant.add_application()
    token, _jti = tenant.mint(client_id, user=tenant.users[0])
    client.web.get(USERS, headers=auth_header(token), status=200)

    def narrow(session):
        application = session.get(OAuthClient, row)
        application.set_client_metadata({**application.client_metadata,
                                         "scope": "courses:read"})

    in_transaction(app, narrow)
    app.registry["oauth_token_cache"].clear()

    assert_envelope(get(client, USERS, auth_header(token)), 403, "missing_scope")


# Refused tokens --------------------------------------------------------------------


def test_expired_token(client, tenant):
    _row, client_id = tenant.add_application()
    now = int(time.time())
    token, _jti = tenant.mint(client_id, user=tenant.users[0], iat=now - 3700, exp=now - 100)

    assert_envelope(get(client, USERS, auth_header(token)), 401, "token_expired")


def test_revoked_token(client, app, tenant):
    _row, client_id = tenant.add_application()
    revoked, _jti = tenant.mint(client_id, user=tenant.users[0], revoked=True)
    assert_envelope(get(client, USERS, auth_header(revoked)), 401, "token_revoked")

    token, jti = tenant.mint(client_id, user=tenant.users[0])
    client.web.get(USERS, headers=auth_header(token), status=200)
    in_transaction(app, lambda session: session.execute(
        sa.update(OAuthToken).where(OAuthToken.access_token == jti)
        .values(access_token_revoked_at=int(time.time()))))
    app.registry["oauth_token_cache"].clear()
    assert_envelope(get(client, USERS, auth_header(token)), 401, "token_revoked")


def test_withdrawn_consent_revokes(client, app, tenant):
    row, client_id = tenant.add_application()
    user = tenant.users[0]
    token, _jti = tenant.mint(client_id, user=user)
    client.web.get(USERS, headers=auth_header(token), status=200)
    in_transaction(app, lambda session: session.execute(
        sa.update(OAuthConsent).where(OAuthConsent.oauth_client_id == row)
        .values(revoked_at=utcnow())))
    app.registry["oauth_token_cache"].clear()

    assert_envelope(get(client, USERS, auth_header(token)), 401, "token_revoked")


def test_inactive_user_revokes(client, app, tenant):
    _row, client_id = tenant.add_application()
    user = tenant.users[0]
    token, _jti = tenant.mint(client_id, user=user)
    in_transaction(app, lambda session: session.execute(
        sa.update(User).where(User.id == parse_id("user", user)).values(status="deleted")))

    assert_envelope(get(client, USERS, auth_header(token)), 401, "token_revoked")


def test_partner_id_claim_as_public_id(client, tenant):
    _row, client_id = tenant.add_application()
    token, _jti = tenant.mint(client_id, user=tenant.users[0], partner_id=tenant.partner_id)

    listed = client.web.get(USERS, headers=auth_header(token), status=200).json

    assert [user["id"] for user in listed["data"]] == [tenant.users[0]]


def test_unknown_jti_refused(client, tenant):
    _row, client_id = tenant.add_application()
    token, _jti = tenant.mint(client_id, user=tenant.users[0], store=False)

    assert_envelope(get(client, USERS, auth_header(token)), 401, "invalid_token")


def test_deleted_client(client, app, tenant):
    row, client_id = tenant.add_application()
    token, _jti = tenant.mint(client_id, user=tenant.users[0])
    in_transaction(app, lambda session: session.execute(
        sa.update(OAuthClient).where(OAuthClient.id == row)
        .values(status="deleted", deleted_at=utcnow())))

    assert_envelope(get(client, USERS, auth_header(token)), 401, "oauth_client_deleted")


def test_suspended_partner(client, app, tenant):
    _row, client_id = tenant.add_application()
    token, _jti = tenant.mint(client_id, user=tenant.users[0])
    in_transaction(app, lambda session: session.execute(
        sa.update(Partner).where(Partner.id == tenant.partner_number)
        .values(status="suspended")))

    assert_envelope(get(client, USERS, auth_header(token)), 403, "partner_suspended")


def test_live_token_needs_verified_partner(client, app, tenant):
    _row, client_id = tenant.add_application(client_type="confidential", livemode=True)
    token, _jti = tenant.mint(client_id, livemode=True)

    assert_envelope(get(client, USERS, auth_header(token)), 403, "partner_not_verified")

    verify_partner(app, tenant.partner_id)
    app.registry["oauth_token_cache"].clear()
    listed = client.web.get(USERS, headers=auth_header(token), status=200).json
    # A live token lists live users only, and the tenant's users are test-mode ones.
    assert listed["data"] == []


def test_claims_match_stored_token(client, tenant):
    _row, client_id = tenant.add_application()
    _other_row, other_client = tenant.add_application()
    token, jti = tenant.mint(client_id, user=tenant.users[0])
    _header, payload, _signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["client_id"] = other_client
    forged, _ttl = tenant.app.registry["token_signer"].issue(
        {**claims, "jti": jti}, audience=OAUTH_AUDIENCE)

    assert_envelope(get(client, USERS, auth_header(forged)), 401, "invalid_token")


def forge_none(tenant, client_id: str, user: str) -> str:
    signer = tenant.app.registry["token_signer"]
    _token, jti = tenant.mint(client_id, user=user)
    now = int(time.time())
    header = {"alg": "none", "typ": "JWT", "kid": signer.key_id}
    payload = {"iss": signer.issuer, "aud": OAUTH_AUDIENCE, "sub": user, "client_id": client_id,
               "scope": "users:read", "partner_id": tenant.partner_number, "livemode": False,
               "jti": jti, "iat": now, "exp": now + 600}
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}."


def forge_hs256(tenant, client_id: str, user: str) -> str:
    """Sign with HMAC keyed by the public key's PEM, as a key-confusion attack does."""
    signer = tenant.app.registry["token_signer"]
    _token, jti = tenant.mint(client_id, user=user)
    now = int(time.time())
    header = {"alg": "HS256", "typ": "JWT", "kid": signer.key_id}
    payload = {"iss": signer.issuer, "aud": OAUTH_AUDIENCE, "sub": user, "client_id": client_id,
               "scope": "users:read", "partner_id": tenant.partner_number, "livemode": False,
               "jti": jti, "iat": now, "exp": now + 600}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    secret = signer.key.as_pem(private=False)
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def forge_other_key(tenant, client_id: str, user: str, *, keep_kid: bool) -> str:
    signer = tenant.app.registry["token_signer"]
    _token, jti = tenant.mint(client_id, user=user)
    other = ECKey.generate_key("P-256")
    now = int(time.time())
    header = {"alg": "ES256", "typ": "JWT",
              "kid": signer.key_id if keep_kid else other.thumbprint()}
    payload = {"iss": signer.issuer, "aud": OAUTH_AUDIENCE, "sub": user, "client_id": client_id,
               "scope": "users:read", "partner_id": tenant.partner_number, "livemode": False,
               "jti": jti, "iat": now, "exp": now + 600}
    return jwt.encode(header, payload, other)


@pytest.mark.parametrize("forgery", ["none", "hs256", "other_key", "unknown_kid", "wrong_aud",
                                     "wrong_iss", "login_token", "garbage"])
def test_forged_tokens_refused(client, tenant, forgery):
    _row, client_id = tenant.add_application()
    user = tenant.users[0]
    if forgery == "none":
        token = forge_none(tenant, client_id, user)
    elif forgery == "hs256":
        token = forge_hs256(tenant, client_id, user)
    elif forgery == "other_key":
        token = forge_other_key(tenant, client_id, user, keep_kid=True)
    elif forgery == "unknown_kid":
        token = forge_other_key(tenant, client_id, user, keep_kid=False)
    elif forgery == "wrong_aud":
        token, _jti = tenant.mint(client_id, user=user, aud="fkod-portal-api")
    elif forgery == "wrong_iss":
        token, _jti = tenant.mint(client_id, user=user, iss="someone-else")
    elif forgery == "login_token":
        token = tenant.login_token
    else:
        token = "a.b.c"

    response = get(client, USERS, auth_header(token))

    # Bearers that do not name the OAuth audience are refused as API keys.
    expected = ("invalid_api_key" if forgery in ("wrong_aud", "login_token", "garbage")
                else "invalid_token")
    assert_envelope(response, 401, expected)
    assert "Access-Control-Allow-Origin" not in response.headers


def test_valid_token_accepted(client, tenant):
    """The forgeries above differ from this token only in what makes them forged."""
    _row, client_id = tenant.add_application()
    token, _jti = tenant.mint(client_id, user=tenant.users[0])

    client.web.get(USERS, headers=auth_header(token), status=200)


# Rate limits and metering --------------------------------------------------------------


def put_partner_on_plan(app, partner_number: int, per_hour: int) -> None:
    code = f"test-{time.monotonic_ns()}"

    def work(session):
        plan = Plan(code=code, name=code, requests_per_hour=per_hour, requests_per_day=None)
        session.add(plan)
        session.flush()
        session.get(Partner, partner_number).plan_id = plan.id

    in_transaction(app, work)


def test_rate_limit_windows(client, app, tenant):
    put_partner_on_plan(app, tenant.partner_number, 5000)
    app.registry["key_cache"].clear()
    _row, client_id = tenant.add_application()
    user_token, _jti = tenant.mint(client_id, user=tenant.users[0])
    app_token, _jti = tenant.mint(client_id)

    by_user = client.web.get(USERS, headers=auth_header(user_token), status=200)
    by_app = client.web.get(USERS, headers=auth_header(app_token), status=200)
    by_key = client.web.get(USERS, headers=auth_header(tenant.key), status=200)

    # A user's window in an application is 10% of the plan's hourly limit.
    assert by_user.headers["X-RateLimit-Limit"] == "500"
    assert by_user.headers["X-RateLimit-Remaining"] == "499"
    # The plan window is shared by the application and the partner's keys.
    assert by_app.headers["X-RateLimit-Limit"] == "5000"
    assert by_key.headers["X-RateLimit-Limit"] == "5000"
    assert int(by_key.headers["X-RateLimit-Remaining"]) < int(
        by_app.headers["X-RateLimit-Remaining"])


def flush_usage(app) -> None:
    app.registry["usage_recorder"].flush()
    if app.registry.settings["fkod.metering.backend"] == "redis":
        app.registry["tasks"].run_periodic_now()


def test_usage_rows_oauth_columns(client, app, tenant):
    row, client_id = tenant.add_application()
    user = tenant.users[0]
    token, _jti = tenant.mint(client_id, user=user)
    app_token, _jti = tenant.mint(client_id)

    by_user = client.web.get(USERS, headers=auth_header(token), status=200)
    by_app = client.web.get(USERS, headers=auth_header(app_token), status=200)
    flush_usage(app)

    def read(session):
        return {usage.request_id: (usage.api_key_id, usage.oauth_client_id, usage.oauth_user_id,
                                   usage.partner_id, usage.livemode, usage.endpoint)
                for usage in session.scalars(sa.select(ApiUsage).where(
                    ApiUsage.oauth_client_id.is_not(None)))}

    rows = in_transaction(app, read)
    assert rows[by_user.headers["X-Request-Id"]] == (
        None, row, parse_id("user", user), tenant.partner_number, False, USERS)
    assert rows[by_app.headers["X-Request-Id"]] == (
        None, row, None, tenant.partner_number, False, USERS)


def test_rollup_per_application(app, tenant):
    row, _client_id = tenant.add_application()
    hour = (utcnow() - dt.timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
    base = {"api_key_id": None, "partner_id": tenant.partner_number, "endpoint": USERS,
            "method": "GET", "status_code": 200, "response_time": 10, "request_size": 0,
            "response_size": 100, "error_message": None, "livemode": False,
            "request_id": None, "oauth_client_id": row}
    rows = [{**base, "oauth_user_id": 1, "created_at": hour + dt.timedelta(minutes=5)},
            {**base, "oauth_user_id": 2, "created_at": hour + dt.timedelta(minutes=6)},
            {**base, "oauth_client_id": None, "oauth_user_id": None,
             "created_at": hour + dt.timedelta(minutes=7)}]
    engine = app.registry["db.engine"]
    with engine.begin() as connection:
        connection.execute(ApiUsage.__table__.insert(), rows)

    rollup_usage(engine)

    with engine.connect() as connection:
        hourly = connection.execute(sa.select(ApiUsageHourly).where(
            ApiUsageHourly.partner_id == tenant.partner_number)).all()
        summary = client_usage_summary(connection, row, False, hour, utcnow())
    counts = {entry.oauth_client_id: entry.request_count for entry in hourly}
    assert counts == {row: 2, None: 1}
    assert summary.request_count == 2


def test_usage_stream_codec_keeps_oauth_fields():
    record = UsageRecord(
        api_key_id=None, partner_id=3, endpoint=USERS, method="GET", status_code=200,
        response_time=4, request_size=0, response_size=10, error_message=None, livemode=False,
        request_id="req_1", created_at=dt.datetime(2027, 1, 1, 8), oauth_client_id=7,
        oauth_user_id=42)
    key_record = UsageRecord(
        api_key_id=5, partner_id=3, endpoint=USERS, method="GET", status_code=200,
        response_time=4, request_size=0, response_size=10, error_message=None, livemode=True,
        request_id="req_2", created_at=dt.datetime(2027, 1, 1, 8))

    assert decode_record(encode_record(record)) == record
    assert len(json.loads(encode_record(key_record))) == 12
    assert decode_record(encode_record(key_record)) == key_record


# CORS ------------------------------------------------------------------------------


def test_cors_registered_origin(client, tenant):
    _row, client_id = tenant.add_application(origins=(ORIGIN,))
    token, _jti = tenant.mint(client_id, user=tenant.users[0])

    allowed = client.web.get(USERS, headers={**auth_header(token), "Origin": ORIGIN},
                             status=200)
    other = client.web.get(USERS, headers={**auth_header(token), "Origin": OTHER_ORIGIN},
                           status=200)

    assert allowed.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Origin" in allowed.headers["Vary"]
    assert "X-Request-Id" in allowed.headers["Access-Control-Expose-Headers"]
    assert "Access-Control-Allow-Origin" not in other.headers


def test_cors_on_token_errors(client, tenant):
    _row, client_id = tenant.add_application(origins=(ORIGIN,))
    now = int(time.time())
    expired, _jti = tenant.mint(client_id, user=tenant.users[0], iat=now - 3700,
                                exp=now - 100)
    narrow, _jti = tenant.mint(client_id, user=tenant.users[0], scope="courses:read")
    headers = {"Origin": ORIGIN}

    expired_response = get(client, USERS, {**auth_header(expired), **headers})
    narrow_response = get(client, USERS, {**auth_header(narrow), **headers})

    assert_envelope(expired_response, 401, "token_expired")
    assert expired_response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert_envelope(narrow_response, 403, "missing_scope")
    assert narrow_response.headers["Access-Control-Allow-Origin"] == ORIGIN


def test_no_cors_confidential_or_key(client, tenant):
    _row, client_id = tenant.add_application(client_type="confidential", origins=(ORIGIN,))
    token, _jti = tenant.mint(client_id)

    by_app = client.web.get(USERS, headers={**auth_header(token), "Origin": ORIGIN},
                            status=200)
    by_key = client.web.get(USERS, headers={**auth_header(tenant.key), "Origin": ORIGIN},
                            status=200)

    assert "Access-Control-Allow-Origin" not in by_app.headers
    assert "Access-Control-Allow-Origin" not in by_key.headers


def test_preflight(client):
    response = client.web.options(f"{USERS}/user_1", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "PUT",
        "Access-Control-Request-Headers": "authorization, content-type, idempotency-key"},
        status=204)

    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "PUT" in response.headers["Access-Control-Allow-Methods"]
    allowed = response.headers["Access-Control-Allow-Headers"]
    for name in ("Authorization", "Content-Type", "Idempotency-Key"):
        assert name in allowed
    assert "Origin" in response.headers["Vary"]
    assert "Access-Control-Allow-Credentials" not in response.headers


def test_plain_options_is_not_a_preflight(client):
    response = client.web.options(USERS, headers={"Origin": ORIGIN}, status="*",
                                  expect_errors=True)

    assert response.status_int != 204
    assert "Access-Control-Allow-Origin" not in response.headers


def test_user_outside_tenancy_hidden(client, app, tenant):
    """A user who left the partner's tenancy is not visible to the application's token."""
    _row, client_id = tenant.add_application()
    user = tenant.users[0]
    token, _jti = tenant.mint(client_id, user=user)
    in_transaction(app, lambda session: session.execute(sa.delete(PartnerUser).where(
        PartnerUser.user_id == parse_id("user", user))))

    listed = client.web.get(USERS, headers=auth_header(token), status=200).json

    assert listed["data"] == []
    assert in_transaction(app, lambda session: session.get(User, parse_id("user", user)))
