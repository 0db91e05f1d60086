"""The OAuth 2.0 authorization server: authorize, token, revoke, introspect, metadata."""

from __future__ import annotations

import base64
import json
import secrets
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import sqlalchemy as sa
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from fkod.core.auth.oauth_models import OAuthClient, OAuthConsent, OAuthToken, digest
from fkod.core.auth.tokens import InvalidToken
from fkod.core.db import run_in_transaction
from fkod.core.ids import parse_id
from fkod.core.oauth import verify_access_token
from fkod.core.oauth.views import MAX_FORM_BYTES
from fkod.core.testing import TEST_PASSWORD, TestClient, verify_partner
from tests.envelope import assert_envelope

pytestmark = pytest.mark.shared_app

REDIRECT_URI = "https://app.example/callback"
SCOPE = "users:read courses:read"


def add_client(app, partner_id: str, *, public: bool = False, livemode: bool = False,
               name: str = "Study Buddy", scope: str = SCOPE,
               redirect_uris=(REDIRECT_URI,), status: str = "active") -> tuple[str, str | None]:
    """Insert an OAuth client for the partner; return its id and secret (None when public)."""
    client_id = secrets.token_urlsafe(18)
    secret = None if public else secrets.token_urlsafe(32)
    grant_types = ["authorization_code", "refresh_token"]
    if not public:
        grant_types.append("client_credentials")

    def work(session):
        client = OAuthClient(
            client_id=client_id, client_secret=digest(secret) if secret else "",
            partner_id=parse_id("partner", partner_id), livemode=livemode, status=status,
            client_type="public" if public else "confidential")
        client.set_client_metadata({
            "client_name": name, "redirect_uris": list(redirect_uris), "scope": scope,
            "grant_types": grant_types, "response_types": ["code"],
            "token_endpoint_auth_method": "none" if public else "client_secret_basic",
            "logo_uri": "https://app.example/logo.png",
        })
        session.add(client)

    run_in_transaction(app.registry["db.session_factory"], work)
    return client_id, secret


def basic(client_id: str, secret: str) -> dict:
    raw = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    return verifier, create_s256_code_challenge(verifier)


class World:
    def __init__(self, client):
        self.client = client
        self.app = client.app
        self.web = client.web
        registered = client.register_partner(company_name="Acme Learning")
        self.partner_id = registered["partner"]["id"]
        self.email = registered["user"]["email"]
        self.client_id, self.secret = add_client(self.app, self.partner_id)

    def authorize_url(self, **params) -> str:
        query = {"response_type": "code", "client_id": self.client_id,
                 "redirect_uri": REDIRECT_URI, "scope": SCOPE, "state": "xyz-state"}
        query.update(params)
        return "/oauth/authorize?" + urlencode({k: v for k, v in query.items() if v is not None})

    def log_in(self, url: str):
        page = self.web.get(url, status=200)
        assert "Log in to F-KOD" in page.text
        form = page.forms[0]
        form["email"] = self.email
        form["password"] = TEST_PASSWORD
        return form.submit(status=303).follow(status=200)

    def approve(self, url: str, decision: str = "approve") -> dict:
        page = self.web.get(url, status=200)
        if "Log in to F-KOD" in page.text:
            page = self.log_in(url)
        response = page.forms[0].submit("action", value=decision, status=302)
        location = response.headers["Location"]
        assert location.startswith(REDIRECT_URI + "?")
        return {key: values[0] for key, values in parse_qs(urlsplit(location).query).items()}

    def get_code(self, **params) -> tuple[str, str]:
        verifier, challenge = pkce()
        query = self.approve(self.authorize_url(code_challenge=challenge,
                                                code_challenge_method="S256", **params))
        assert query["state"] == params.get("state", "xyz-state")
        return query["code"], verifier

    def token(self, body: dict, *, client_id=None, secret=None, status=200) -> dict:
        headers = basic(client_id or self.client_id, secret or self.secret) \
            if (secret or self.secret) and client_id != "public" else {}
        return self.web.post("/oauth/token", body, headers=headers, status=status).json

    def exchange(self, code: str, verifier: str, **extra) -> dict:
        body = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI,
                "code_verifier": verifier, **extra}
        return self.token(body)

    def introspect(self, token: str) -> dict:
        return self.web.post("/oauth/introspect", {"token": token},
                             headers=basic(self.client_id, self.secret), status=200).json


@pytest.fixture
def world(client):
    return World(client)


def error_of(response) -> dict:
    return {key: values[0] for key, values in
            parse_qs(urlsplit(response.headers["Location"]).query).items()}


# Authorization code with PKCE ------------------------------------------------------


def test_full_flow_issues_a_jwt_for_the_user(world):
    code, verifier = world.get_code()
    token = world.exchange(code, verifier)

    assert token["token_type"] == "Bearer"
    assert token["expires_in"] == 3600
    assert token["scope"] == SCOPE
    assert token["refresh_token"]
    claims = verify_access_token(world.app.registry, token["access_token"])
    assert claims["sub"].startswith("user_")
    assert claims["client_id"] == world.client_id
    assert claims["scope"] == SCOPE
    assert claims["partner_id"] == world.partner_id
    assert claims["livemode"] is False
    assert claims["aud"] == "fkod-api"
    assert claims["exp"] - claims["iat"] == 3600

    def check(session):
        row = session.scalar(sa.select(OAuthToken).where(OAuthToken.access_token == claims["jti"]))
        assert row.refresh_token == digest(token["refresh_token"])
        consent = session.scalar(sa.select(OAuthConsent))
        assert sorted(consent.scopes) == sorted(SCOPE.split())

    run_in_transaction(world.app.registry["db.session_factory"], check)


def test_public_client_flow_with_pkce(world):
    public_id, _ = add_client(world.app, world.partner_id, public=True)
    verifier, challenge = pkce()
    query = world.approve(world.authorize_url(client_id=public_id, code_challenge=challenge,
                                              code_challenge_method="S256"))
    body = {"grant_type": "authorization_code", "code": query["code"], "client_id": public_id,
            "redirect_uri": REDIRECT_URI, "code_verifier": verifier}
    token = world.web.post("/oauth/token", body, status=200).json
    assert verify_access_token(world.app.registry, token["access_token"])["client_id"] \
        == public_id


def test_public_client_without_pkce_is_refused_with_state(world):
    public_id, _ = add_client(world.app, world.partner_id, public=True)
    world.log_in(world.authorize_url(client_id=public_id, code_challenge="x" * 43,
                                     code_challenge_method="S256"))
    response = world.web.get(world.authorize_url(client_id=public_id), status=302)
    error = error_of(response)
    assert error["error"] == "invalid_request"
    assert error["state"] == "xyz-state"


@pytest.mark.parametrize("method", ["plain", None, "s256", "S512"])
def test_pkce_plain_or_missing_method_is_refused(world, method):
    _, challenge = pkce()
    world.log_in(world.authorize_url())
    response = world.web.get(world.authorize_url(code_challenge=challenge,
                                                 code_challenge_method=method), status=302)
    error = error_of(response)
    assert error["error"] == "invalid_request"
    assert "S256" in error["error_description"]
    assert error["state"] == "xyz-state"


def assert_code_burned(world, code: str, verifier: str | None) -> None:
    """Check that the right request now fails too, because the failed one used the code up."""
    body = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI}
    if verifier is not None:
        body["code_verifier"] = verifier
    retried = world.token(body, status=400)
    assert retried["error"] == "invalid_grant"
    assert "already used" in retried["error_description"]


@pytest.mark.parametrize("wrong", ["other", "malformed"])
def test_wrong_verifier_is_refused(world, wrong):
    code, verifier = world.get_code()
    other = pkce()[0] if wrong == "other" else "xyz"
    body = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI,
            "code_verifier": other}
    refused = world.token(body, status=400)
    assert refused["error"] == "invalid_grant"
    assert "code_verifier" in refused["error_description"]
    assert_code_burned(world, code, verifier)


def test_missing_verifier_is_refused(world):
    code, verifier = world.get_code()
    body = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI}
    refused = world.token(body, status=400)
    assert refused["error"] == "invalid_grant"
    assert "code_verifier" in refused["error_description"]
    assert_code_burned(world, code, verifier)


def test_verifier_without_challenge_is_refused(world):
    query = world.approve(world.authorize_url())
    code = query["code"]
    body = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI,
            "code_verifier": "xyz"}
    refused = world.token(body, status=400)
    assert refused["error"] == "invalid_grant"
    assert "code_challenge" in refused["error_description"]
    assert_code_burned(world, code, None)


def test_confidential_client_without_pkce_exchanges(world):
    query = world.approve(world.authorize_url())
    body = {"grant_type": "authorization_code", "code": query["code"],
            "redirect_uri": REDIRECT_URI}
    token = world.token(body)
    assert verify_access_token(world.app.registry, token["access_token"])["client_id"] \
        == world.client_id


@pytest.mark.parametrize("variant", [
    REDIRECT_URI + "/", "https://APP.example/callback", "https://app.example/CALLBACK",
    REDIRECT_URI + "/extra", REDIRECT_URI + "?next=1", "https://app.example/call",
])
def test_redirect_uri_must_match_exactly_at_authorize(world, variant):
    response = world.web.get(world.authorize_url(redirect_uri=variant), status=400)
    assert "Location" not in response.headers
    assert "redirect_uri" in response.text


@pytest.mark.parametrize("variant", [
    REDIRECT_URI + "/", "https://APP.example/callback", REDIRECT_URI + "/extra",
    REDIRECT_URI + "?next=1", None,
])
def test_redirect_uri_must_match_exactly_at_token(world, variant):
    code, verifier = world.get_code()
    body = {"grant_type": "authorization_code", "code": code, "code_verifier": verifier}
    if variant is not None:
        body["redirect_uri"] = variant
    assert world.token(body, status=400)["error"] == "invalid_grant"


def test_redirect_uri_bound_to_the_code(world):
    second_uri = "https://app.example/second"
    two_id, two_secret = add_client(world.app, world.partner_id,
                                    redirect_uris=(REDIRECT_URI, second_uri))
    for sent in (second_uri, None):
        verifier, challenge = pkce()
        query = world.approve(world.authorize_url(client_id=two_id, code_challenge=challenge,
                                                  code_challenge_method="S256"))
        body = {"grant_type": "authorization_code", "code": query["code"],
                "code_verifier": verifier}
        if sent is not None:
            body["redirect_uri"] = sent
        refused = world.token(body, client_id=two_id, secret=two_secret, status=400)
        assert refused["error"] == "invalid_grant"
        assert "redirect_uri" in refused["error_description"]


def test_redirect_uri_omitted_on_both_sides(world):
    verifier, challenge = pkce()
    query = world.approve(world.authorize_url(redirect_uri=None, code_challenge=challenge,
                                              code_challenge_method="S256"))
    body = {"grant_type": "authorization_code", "code": query["code"], "code_verifier": verifier}
    token = world.token(body)
    assert token["token_type"] == "Bearer"


def test_redirect_uri_needed_with_several_registered(world):
    two_id, _ = add_client(world.app, world.partner_id,
                           redirect_uris=(REDIRECT_URI, "https://app.example/second"))
    response = world.web.get(world.authorize_url(client_id=two_id, redirect_uri=None),
                             status=400)
    assert "Location" not in response.headers
    assert "redirect_uri" in response.text


def test_client_without_redirect_uris_gets_error_page(world):
    machine_id, _ = add_client(world.app, world.partner_id, redirect_uris=())
    response = world.web.get(world.authorize_url(client_id=machine_id, redirect_uri=None),
                             status=400)
    assert "Location" not in response.headers
    assert "registered no redirect URI" in response.text


def test_unknown_client_is_an_error_page_not_a_redirect(world):
    response = world.web.get(world.authorize_url(client_id="nope"), status=400)
    assert "Location" not in response.headers
    assert "invalid_client" in response.text


def test_deleted_client_and_suspended_partner_are_refused(world):
    deleted_id, _ = add_client(world.app, world.partner_id, status="deleted")
    world.web.get(world.authorize_url(client_id=deleted_id), status=400)

    def suspend(session):
        from fkod.core.auth.models import Partner

        session.execute(sa.update(Partner).values(status="suspended"))

    code, verifier = world.get_code()
    run_in_transaction(world.app.registry["db.session_factory"], suspend)
    assert world.token({"grant_type": "authorization_code", "code": code,
                        "redirect_uri": REDIRECT_URI, "code_verifier": verifier},
                       status=401)["error"] == "invalid_client"
    world.web.get(world.authorize_url(), status=400)


def test_deny_redirects_with_access_denied_and_state(world):
    query = world.approve(world.authorize_url(state="keep-me"), decision="deny")
    assert query["error"] == "access_denied"
    assert query["state"] == "keep-me"
    assert "code" not in query


def test_scope_not_registered_is_redirected_with_state(world):
    world.log_in(world.authorize_url())
    response = world.web.get(world.authorize_url(scope="users:read admin:write"), status=302)
    error = error_of(response)
    assert error["error"] == "invalid_scope"
    assert error["state"] == "xyz-state"


@pytest.mark.parametrize("response_type", ["token", "token2", "code token"])
def test_unsupported_response_type_is_redirected_with_state(world, response_type):
    response = world.web.get(world.authorize_url(response_type=response_type), status=302)
    assert response.headers["Location"].startswith(REDIRECT_URI + "?")
    error = error_of(response)
    assert error["error"] == "unsupported_response_type"
    assert error["state"] == "xyz-state"


def test_deny_without_state_has_no_state(world):
    query = world.approve(world.authorize_url(state=None), decision="deny")
    assert query["error"] == "access_denied"
    assert "state" not in query


def test_prompt_none_logged_out_is_login_required(world):
    response = world.web.get(world.authorize_url(prompt="none"), status=302)
    assert response.headers["Location"].startswith(REDIRECT_URI + "?")
    error = error_of(response)
    assert error["error"] == "login_required"
    assert error["state"] == "xyz-state"
    assert "code" not in error


def test_prompt_none_without_consent_is_consent_required(world):
    world.log_in(world.authorize_url())
    response = world.web.get(world.authorize_url(prompt="none"), status=302)
    error = error_of(response)
    assert error["error"] == "consent_required"
    assert error["state"] == "xyz-state"
    assert "code" not in error


def test_prompt_none_after_consent_issues_code(world):
    world.get_code(scope="users:read")
    verifier, challenge = pkce()
    url = world.authorize_url(prompt="none", scope="users:read", code_challenge=challenge,
                              code_challenge_method="S256")
    query = error_of(world.web.get(url, status=302))
    assert query["state"] == "xyz-state"
    assert world.exchange(query["code"], verifier)["scope"] == "users:read"

    wider = world.web.get(world.authorize_url(prompt="none", code_challenge=challenge,
                                              code_challenge_method="S256"), status=302)
    assert error_of(wider)["error"] == "consent_required"


def test_code_reuse_revokes_the_tokens_it_issued(world):
    code, verifier = world.get_code()
    first = world.exchange(code, verifier)
    assert world.introspect(first["access_token"])["active"] is True

    second = world.token({"grant_type": "authorization_code", "code": code,
                          "redirect_uri": REDIRECT_URI, "code_verifier": verifier}, status=400)
    assert second["error"] == "invalid_grant"
    assert world.introspect(first["access_token"]) == {"active": False}
    assert world.introspect(first["refresh_token"]) == {"active": False}
    with pytest.raises(InvalidToken):
        verify_access_token(world.app.registry, first["access_token"])
    assert_envelope(world.web.get("/api/v1/users", expect_errors=True, headers={
        "Authorization": f"Bearer {first['access_token']}"}), 401, "token_revoked")
    assert refresh(world, first["refresh_token"], status=400)["error"] == "invalid_grant"


def test_password_grant_and_implicit_grant_are_not_offered(world):
    body = {"grant_type": "password", "username": world.email, "password": TEST_PASSWORD}
    assert world.token(body, status=400)["error"] == "unsupported_grant_type"
    response = world.web.get(world.authorize_url(response_type="token"), status=302)
    assert error_of(response)["error"] == "unsupported_response_type"


def test_live_mode_client_needs_a_verified_partner(world):
    live_id, live_secret = add_client(world.app, world.partner_id, livemode=True)
    body = {"grant_type": "client_credentials"}
    refused = world.token(body, client_id=live_id, secret=live_secret, status=400)
    assert refused["error"] == "unauthorized_client"
    assert "verified" in refused["error_description"]

    verify_partner(world.app, world.partner_id)
    token = world.token(body, client_id=live_id, secret=live_secret)
    assert verify_access_token(world.app.registry, token["access_token"])["livemode"] is True


# Refresh tokens --------------------------------------------------------------------


def refresh(world, refresh_token: str, status=200, **extra) -> dict:
    return world.token({"grant_type": "refresh_token", "refresh_token": refresh_token, **extra},
                       status=status)


def test_refresh_rotates_and_reuse_revokes_the_family(world):
    code, verifier = world.get_code()
    first = world.exchange(code, verifier)
    second = refresh(world, first["refresh_token"])
    assert second["refresh_token"] != first["refresh_token"]
    assert world.introspect(first["refresh_token"]) == {"active": False}
    assert world.introspect(second["access_token"])["active"] is True

    reused = refresh(world, first["refresh_token"], status=400)
    assert reused["error"] == "invalid_grant"
    for token in (second["access_token"], second["refresh_token"], first["access_token"]):
        assert world.introspect(token) == {"active": False}
    assert refresh(world, second["refresh_token"], status=400)["error"] == "invalid_grant"


def test_refresh_scope_can_narrow_but_not_widen(world):
    code, verifier = world.get_code(scope="users:read")
    first = world.exchange(code, verifier)
    assert first["scope"] == "users:read"
    widened = refresh(world, first["refresh_token"], status=400, scope="users:read courses:read")
    assert widened["error"] == "invalid_scope"

    code, verifier = world.get_code()
    both = world.exchange(code, verifier)
    kept = refresh(world, both["refresh_token"])
    assert kept["scope"] == SCOPE
    assert verify_access_token(world.app.registry, kept["access_token"])["scope"] == SCOPE
    narrowed = refresh(world, kept["refresh_token"], scope="courses:read")
    assert narrowed["scope"] == "courses:read"
    claims = verify_access_token(world.app.registry, narrowed["access_token"])
    assert claims["scope"] == "courses:read"
    assert refresh(world, narrowed["refresh_token"], status=400,
                   scope="users:read")["error"] == "invalid_scope"


def test_refresh_token_expires_after_30_days(world):
    code, verifier = world.get_code()
    token = world.exchange(code, verifier)

    def age(session):
        session.execute(sa.update(OAuthToken)
                        .where(OAuthToken.refresh_token == digest(token["refresh_token"]))
                        .values(issued_at=OAuthToken.issued_at - 30 * 24 * 3600 - 1))

    run_in_transaction(world.app.registry["db.session_factory"], age)

    expired = refresh(world, token["refresh_token"], status=400)
    assert expired["error"] == "invalid_grant"
    assert "expired" in expired["error_description"]
    assert world.introspect(token["refresh_token"]) == {"active": False}


def test_refresh_token_of_another_client_is_refused(world):
    code, verifier = world.get_code()
    first = world.exchange(code, verifier)
    other_id, other_secret = add_client(world.app, world.partner_id)
    body = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    assert world.token(body, client_id=other_id, secret=other_secret,
                       status=400)["error"] == "invalid_grant"
    assert world.introspect(first["refresh_token"])["active"] is True


# Client credentials, revocation, introspection ------------------------------------


def test_client_credentials_issues_a_token_for_the_client(world):
    token = world.token({"grant_type": "client_credentials", "scope": "users:read"})
    assert "refresh_token" not in token
    claims = verify_access_token(world.app.registry, token["access_token"])
    assert claims["sub"] == world.client_id
    assert claims["scope"] == "users:read"

    for scope in ("users:write", "billing:write", "users:read billing:write"):
        refused = world.token({"grant_type": "client_credentials", "scope": scope}, status=400)
        assert refused["error"] == "invalid_scope"
        assert "access_token" not in refused
    assert world.token({"grant_type": "client_credentials"})["scope"] == SCOPE
    world.web.post("/oauth/token", {"grant_type": "client_credentials"},
                   headers=basic(world.client_id, "wrong"), status=401)


def test_public_client_cannot_use_client_credentials(world):
    public_id, _ = add_client(world.app, world.partner_id, public=True)
    response = world.web.post("/oauth/token", {"grant_type": "client_credentials",
                                               "client_id": public_id}, status=401)
    assert response.json["error"] == "invalid_client"


def test_revoke_access_and_refresh_tokens(world):
    code, verifier = world.get_code()
    token = world.exchange(code, verifier)
    world.web.post("/oauth/revoke", {"token": token["access_token"]},
                   headers=basic(world.client_id, world.secret), status=200)
    assert world.introspect(token["access_token"]) == {"active": False}
    assert world.introspect(token["refresh_token"])["active"] is True

    world.web.post("/oauth/revoke", {"token": token["refresh_token"],
                                     "token_type_hint": "refresh_token"},
                   headers=basic(world.client_id, world.secret), status=200)
    assert world.introspect(token["refresh_token"]) == {"active": False}
    assert refresh(world, token["refresh_token"], status=400)["error"] == "invalid_grant"
    # An unknown token is not an error (RFC 7009).
    world.web.post("/oauth/revoke", {"token": "unknown"},
                   headers=basic(world.client_id, world.secret), status=200)


def test_introspect_needs_client_authentication(world):
    token = world.token({"grant_type": "client_credentials"})
    world.web.post("/oauth/introspect", {"token": token["access_token"]}, status=401)
    found = world.introspect(token["access_token"])
    assert found["active"] is True
    assert found["client_id"] == world.client_id
    assert found["sub"] == world.client_id
    assert found["scope"] == SCOPE
    assert world.introspect("not-a-token") == {"active": False}

    other_id, other_secret = add_client(world.app, world.partner_id)
    other = world.web.post("/oauth/introspect", {"token": token["access_token"]},
                           headers=basic(other_id, other_secret), status=200).json
    assert other == {"active": False}


def test_metadata_document(world):
    base = world.app.registry.settings["fkod.auth.account_link_base_url"].rstrip("/")
    document = world.web.get("/.well-known/oauth-authorization-server", status=200).json
    assert document["issuer"] == base
    assert document["authorization_endpoint"] == f"{base}/oauth/authorize"
    assert document["token_endpoint"] == f"{base}/oauth/token"
    assert document["revocation_endpoint"] == f"{base}/oauth/revoke"
    assert document["introspection_endpoint"] == f"{base}/oauth/introspect"
    assert document["jwks_uri"] == f"{base}/.well-known/jwks.json"
    assert document["code_challenge_methods_supported"] == ["S256"]
    assert document["token_endpoint_auth_methods_supported"] == ["client_secret_basic", "none"]
    assert document["response_types_supported"] == ["code"]
    assert set(document["grant_types_supported"]) == {
        "authorization_code", "refresh_token", "client_credentials"}
    assert "users:read" in document["scopes_supported"]
    assert "admin:write" not in document["scopes_supported"]


# The pages ---------------------------------------------------------------------------


def test_consent_page_escapes_client_name(world):
    hostile_id, _ = add_client(world.app, world.partner_id, name="<script>alert(1)</script>")
    _, challenge = pkce()
    url = world.authorize_url(client_id=hostile_id, code_challenge=challenge,
                              code_challenge_method="S256")
    page = world.log_in(url)
    assert "<script>alert(1)</script>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "Acme Learning" in page.text
    assert "Unverified partner" in page.text
    assert "Read the users in your tenancy." in page.text
    assert 'src="https://app.example/logo.png"' in page.text
    assert page.forms[0]["csrf_token"].value


def test_consent_page_shows_verification_and_mode(world):
    page = world.log_in(world.authorize_url(code_challenge=pkce()[1],
                                            code_challenge_method="S256"))
    assert "Unverified partner" in page.text
    assert "Test mode" in page.text

    verify_partner(world.app, world.partner_id)
    live_id, _ = add_client(world.app, world.partner_id, livemode=True)
    page = world.web.get(world.authorize_url(client_id=live_id, code_challenge=pkce()[1],
                                             code_challenge_method="S256"), status=200)
    assert "Verified partner" in page.text
    assert "Unverified partner" not in page.text
    assert "Test mode" not in page.text
    assert "Allow" in page.text
    assert "Deny" in page.text


def test_consent_page_shows_application_links(world):
    def add_links(session):
        application = session.scalar(sa.select(OAuthClient)
                                     .where(OAuthClient.client_id == world.client_id))
        application.set_client_metadata({
            **application.client_metadata, "client_uri": "https://app.example/",
            "policy_uri": "https://app.example/privacy", "tos_uri": "javascript:alert(1)"})

    run_in_transaction(world.app.registry["db.session_factory"], add_links)
    page = world.log_in(world.authorize_url(code_challenge=pkce()[1],
                                            code_challenge_method="S256"))

    assert 'href="https://app.example/"' in page.text
    assert "Website" in page.text
    assert 'href="https://app.example/privacy"' in page.text
    assert "Privacy policy" in page.text
    assert "javascript:" not in page.text
    assert "Terms of service" not in page.text


def test_error_page_escapes_what_the_user_sent(world):
    response = world.web.get(world.authorize_url(redirect_uri="https://x/<b>\"'"), status=400)
    assert "<b>" not in response.text


def test_decision_needs_the_csrf_token(world):
    url = world.authorize_url(code_challenge=pkce()[1], code_challenge_method="S256")
    page = world.log_in(url)
    form = page.forms[0]
    form["csrf_token"] = "forged"
    response = form.submit("action", value="approve", status=403)
    assert "Location" not in response.headers

    page = world.web.get(url, status=200)
    del page.forms[0].fields["csrf_token"]
    response = world.web.post(url, {"action": "approve"}, status=403)
    assert "Location" not in response.headers


def test_login_with_a_wrong_password_shows_an_error(world):
    page = world.web.get(world.authorize_url(), status=200)
    form = page.forms[0]
    form["email"] = world.email
    form["password"] = "not the password"
    response = form.submit(status=200)
    assert "The email or password is wrong." in response.text
    assert "Log in to F-KOD" in response.text


def test_session_cookie_is_http_only_and_lax(world):
    page = world.web.get(world.authorize_url(), status=200)
    cookie = page.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Path=/oauth" in cookie


def test_narrowing_the_application_narrows_its_tokens(world):
    code, verifier = world.get_code()
    token = world.exchange(code, verifier)

    def narrow(session):
        application = session.scalar(sa.select(OAuthClient)
                                     .where(OAuthClient.client_id == world.client_id))
        application.set_client_metadata({**application.client_metadata, "scope": "users:read"})

    run_in_transaction(world.app.registry["db.session_factory"], narrow)

    claims = verify_access_token(world.app.registry, token["access_token"])
    assert claims["scope"] == "users:read"


def test_user_token_reads_its_user_through_the_gateway(world):
    code, verifier = world.get_code()
    token = world.exchange(code, verifier)
    claims = verify_access_token(world.app.registry, token["access_token"])

    listed = world.web.get("/api/v1/users", headers={
        "Authorization": f"Bearer {token['access_token']}"}, status=200).json

    assert [user["id"] for user in listed["data"]] == [claims["sub"]]


def test_oauth_token_refused_on_partner_api(world):
    code, verifier = world.get_code()
    token = world.exchange(code, verifier)
    headers = {"Authorization": f"Bearer {token['access_token']}"}

    for path in ("/api/partners/me", "/api/auth/me", "/api/developers/applications"):
        response = world.web.get(path, headers=headers, expect_errors=True)
        assert response.status_int == 401, path


def test_revoked_token_refused_at_once_by_this_process(world):
    # The gateway caches tokens for fkod.gateway.key_cache_seconds; a revocation
    # made by this process must not wait for that cache to expire.
    world.app.registry["oauth_token_cache"].ttl_seconds = 3600
    code, verifier = world.get_code()
    token = world.exchange(code, verifier)
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    world.web.get("/api/v1/users", headers=headers, status=200)

    world.web.post("/oauth/revoke", {"token": token["access_token"]},
                   headers=basic(world.client_id, world.secret), status=200)

    assert_envelope(world.web.get("/api/v1/users", headers=headers, expect_errors=True),
                    401, "token_revoked")


def test_refresh_revocation_refused_at_once_by_this_process(world):
    world.app.registry["oauth_token_cache"].ttl_seconds = 3600
    code, verifier = world.get_code()
    token = world.exchange(code, verifier)
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    world.web.get("/api/v1/users", headers=headers, status=200)

    world.web.post("/oauth/revoke", {"token": token["refresh_token"],
                                     "token_type_hint": "refresh_token"},
                   headers=basic(world.client_id, world.secret), status=200)

    assert_envelope(world.web.get("/api/v1/users", headers=headers, expect_errors=True),
                    401, "token_revoked")


FORM = "application/x-www-form-urlencoded"
MALFORMED_REQUESTS = {
    "missing_grant_type": ("/oauth/token", "scope=users%3Aread", FORM,
                           "invalid_request", "grant_type"),
    "json_body": ("/oauth/token", '{"grant_type": "client_credentials"}', "application/json",
                  "invalid_request", FORM),
    "repeated_grant_type": ("/oauth/token",
                            "grant_type=client_credentials&grant_type=client_credentials", FORM,
                            "invalid_request", "grant_type"),
    "repeated_code": ("/oauth/token", "grant_type=authorization_code&code=a&code=b", FORM,
                      "invalid_request", "code"),
    "nul_grant_type": ("/oauth/token", "grant_type=%00", FORM, "unsupported_grant_type",
                       "grant_type"),
    "password_grant": ("/oauth/token", "grant_type=password&username=a&password=b", FORM,
                       "unsupported_grant_type", "grant_type"),
    "nul_scope": ("/oauth/token", "grant_type=client_credentials&scope=users%3Aread%00", FORM,
                  "invalid_scope", "scope"),
    "non_ascii_scope": ("/oauth/token", "grant_type=client_credentials&scope=%C3%A9%22",
                        FORM, "invalid_scope", "scope"),
    "unknown_refresh_token": ("/oauth/token", "grant_type=refresh_token&refresh_token=%00",
                              FORM, "invalid_grant", "refresh token"),
    "revoke_without_token": ("/oauth/revoke", "token_type_hint=access_token", FORM,
                             "invalid_request", "token"),
    "revoke_unknown_hint": ("/oauth/revoke", "token=x&token_type_hint=id_token", FORM,
                            "unsupported_token_type", "token_type_hint"),
    "introspect_without_token": ("/oauth/introspect", "", FORM, "invalid_request", "token"),
    "introspect_repeated_token": ("/oauth/introspect", "token=a&token=b", FORM,
                                  "invalid_request", "token"),
}


@pytest.mark.parametrize(("endpoint", "body", "content_type", "error", "named"),
                         list(MALFORMED_REQUESTS.values()), ids=list(MALFORMED_REQUESTS))
def test_malformed_token_requests_are_400(world, endpoint, body, content_type, error, named):
    response = world.web.post(endpoint, body.encode(), status=400, headers={
        **basic(world.client_id, world.secret), "Content-Type": content_type})

    assert response.json["error"] == error
    assert named in response.json["error_description"]
    assert response.headers["Cache-Control"] == "no-store"


def test_refresh_widening_names_the_granted_scope(world):
    code, verifier = world.get_code(scope="users:read")
    token = world.exchange(code, verifier)

    widened = refresh(world, token["refresh_token"], status=400, scope=SCOPE)

    assert widened["error"] == "invalid_scope"
    assert "users:read" in widened["error_description"]
    assert refresh(world, token["refresh_token"])["scope"] == "users:read"


@pytest.mark.parametrize("endpoint", ["/oauth/token", "/oauth/introspect", "/oauth/revoke"])
def test_basic_credentials_not_utf8_rejected(world, endpoint):
    not_utf8 = base64.b64encode(b"\xff\xfe:\xa5").decode()
    response = world.web.post(endpoint, {"token": "x", "grant_type": "client_credentials"},
                              headers={"Authorization": f"Basic {not_utf8}"}, status=401)
    assert response.json["error"] == "invalid_client"


@pytest.mark.parametrize("endpoint", ["/oauth/token", "/oauth/introspect", "/oauth/revoke"])
def test_oversized_form_body_is_413(world, endpoint):
    body = b"grant_type=client_credentials&token=x&pad=" + b"a" * (MAX_FORM_BYTES + 1)

    response = world.web.post(endpoint, body, status=413, headers={
        **basic(world.client_id, world.secret),
        "Content-Type": "application/x-www-form-urlencoded"})

    assert response.json["error"] == "invalid_request"
    assert str(MAX_FORM_BYTES) in response.json["error_description"]


def test_oversized_consent_form_is_413(world):
    body = b"decision=approve&pad=" + b"a" * (MAX_FORM_BYTES + 1)

    response = world.web.post("/oauth/authorize", body, status=413, headers={
        "Content-Type": "application/x-www-form-urlencoded"})

    assert f"larger than {MAX_FORM_BYTES} bytes" in response.text


def test_metadata_ignores_the_host_header(app_factory):
    client = TestClient(app_factory(**{
        "fkod.auth.oauth_issuer_url": "https://partners.fkod.example"}))

    document = client.web.get("/.well-known/oauth-authorization-server",
                              headers={"Host": "attacker.example"}, status=200).json

    assert document["issuer"] == "https://partners.fkod.example"
    assert document["token_endpoint"] == "https://partners.fkod.example/oauth/token"
    assert "attacker.example" not in json.dumps(document)


@pytest.mark.parametrize("endpoint", ["/oauth/token", "/oauth/introspect", "/oauth/revoke"])
def test_two_client_authentications_refused(world, endpoint):
    response = world.web.post(endpoint, {
        "grant_type": "client_credentials", "token": "x", "client_id": world.client_id,
        "client_secret": world.secret}, headers=basic(world.client_id, world.secret),
        status=400)

    assert response.json["error"] == "invalid_request"
    assert "authenticates the client twice" in response.json["error_description"]
