"""OAuth against the live authorization server: client credentials, PKCE helpers."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import time
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from fkod_sdk import (
    AuthenticationError,
    Client,
    OAuthClient,
    OAuthError,
    code_challenge_s256,
    generate_code_verifier,
)

REVOCATION_DELAY_SECONDS = 3


@pytest.fixture
def application(partner_api) -> dict:
    """A confidential test-mode application of the partner that may use client_credentials."""
    return partner_api.post("/api/developers/applications", {
        "name": "SDK tests", "client_type": "confidential",
        "grant_types": ["client_credentials"], "redirect_uris": [],
        "scopes": ["users:read", "users:write"]})


def test_client_credentials_token_calls_the_api(env, application):
    with OAuthClient(base_url=env["FKOD_BASE_URL"], client_id=application["client_id"],
                     client_secret=application["client_secret"]) as oauth:
        token = oauth.client_credentials(scopes=["users:read"])

    with Client(base_url=env["FKOD_BASE_URL"], access_token=token.access_token) as api:
        page = api.users.list(limit=1)

    assert token.token_type.lower() == "bearer"
    assert token.scope == "users:read"
    assert token.refresh_token is None
    assert token.expires_in and token.expires_in > 0
    assert page.data is not None


def test_access_token_function_is_called_per_request(env, application):
    with OAuthClient(base_url=env["FKOD_BASE_URL"], client_id=application["client_id"],
                     client_secret=application["client_secret"]) as oauth:
        token = oauth.client_credentials().access_token
    calls: list[str] = []

    def current_token() -> str:
        calls.append(token)
        return token

    with Client(base_url=env["FKOD_BASE_URL"], access_token=current_token) as api:
        api.users.list(limit=1)
        api.users.list(limit=1)

    assert len(calls) == 2


def test_revoked_token_is_unauthorized(env, application):
    with OAuthClient(base_url=env["FKOD_BASE_URL"], client_id=application["client_id"],
                     client_secret=application["client_secret"]) as oauth:
        token = oauth.client_credentials()
        oauth.revoke(token.access_token)

    # The gateway caches a verified token for up to 1 s, so a revoked token may work that long.
    deadline = time.monotonic() + REVOCATION_DELAY_SECONDS
    with Client(base_url=env["FKOD_BASE_URL"], access_token=token.access_token) as api:
        with pytest.raises(AuthenticationError):
            while time.monotonic() < deadline:
                api.users.list()
                time.sleep(0.2)


def test_wrong_client_secret_is_invalid_client(env, application):
    with OAuthClient(base_url=env["FKOD_BASE_URL"], client_id=application["client_id"],
                     client_secret="wrong") as oauth:
        with pytest.raises(OAuthError) as caught:
            oauth.client_credentials()

    assert caught.value.status == 401
    assert caught.value.error == "invalid_client"


def test_scope_beyond_application_is_invalid_scope(env, application):
    with OAuthClient(base_url=env["FKOD_BASE_URL"], client_id=application["client_id"],
                     client_secret=application["client_secret"]) as oauth:
        with pytest.raises(OAuthError) as caught:
            oauth.client_credentials(scopes="courses:write")

    assert caught.value.error == "invalid_scope"


def test_metadata_lists_s256_and_grants(env):
    with OAuthClient(base_url=env["FKOD_BASE_URL"], client_id="unused") as oauth:
        metadata = oauth.metadata()

    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert "client_credentials" in metadata["grant_types_supported"]


def test_authorization_url_carries_pkce_and_state(env):
    oauth = OAuthClient(base_url=env["FKOD_BASE_URL"], client_id="app-client",
                        redirect_uri="https://app.example/callback")

    first = oauth.authorization_request(scopes=["users:read", "courses:read"])
    second = oauth.authorization_request(scopes="users:read")
    oauth.close()

    query = {name: values[0] for name, values in parse_qs(urlsplit(first.url).query).items()}
    assert first.url.startswith(env["FKOD_BASE_URL"] + "/oauth/authorize?")
    assert query["response_type"] == "code"
    assert query["client_id"] == "app-client"
    assert query["redirect_uri"] == "https://app.example/callback"
    assert query["scope"] == "users:read courses:read"
    assert query["state"] == first.state
    assert query["code_challenge_method"] == "S256"
    assert query["code_challenge"] == first.code_challenge
    assert first.state != second.state
    assert first.code_verifier != second.code_verifier
    assert 43 <= len(first.code_verifier) <= 128


def test_code_challenge_matches_rfc_7636_example():
    # The verifier and challenge of RFC 7636, appendix B.
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"

    assert code_challenge_s256(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    assert code_challenge_s256(verifier) == base64.urlsafe_b64encode(
        hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


# Authorization code with PKCE, through the login and consent pages ----------------

REDIRECT_URI = "http://127.0.0.1:9/callback"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def approve_in_browser(env, url: str) -> str:
    """Log in and approve on the platform's pages as a browser would; return the redirect."""
    email = os.environ.get("FKOD_OWNER_EMAIL")
    password = os.environ.get("FKOD_OWNER_PASSWORD")
    if not email or not password:
        pytest.fail("Set FKOD_OWNER_EMAIL and FKOD_OWNER_PASSWORD to test the login pages.")
    with httpx.Client(timeout=30, follow_redirects=False) as browser:
        login_page = browser.get(url)
        assert login_page.status_code == 200, login_page.text
        logged_in = browser.post(url, data={
            "csrf_token": CSRF.search(login_page.text).group(1), "action": "login",
            "email": email, "password": password})
        assert logged_in.status_code == 303, logged_in.text
        consent_page = browser.get(url)
        assert consent_page.status_code == 200, consent_page.text
        decision = browser.post(url, data={
            "csrf_token": CSRF.search(consent_page.text).group(1), "action": "approve"})
        assert decision.status_code == 302, decision.text
        return decision.headers["Location"]


@pytest.fixture
def public_application(partner_api) -> dict:
    return partner_api.post("/api/developers/applications", {
        "name": "SDK browser app", "client_type": "public",
        "grant_types": ["authorization_code", "refresh_token"],
        "redirect_uris": [REDIRECT_URI], "scopes": ["users:read"]})


def test_authorization_code_flow_with_refresh(env, public_application):
    oauth = OAuthClient(base_url=env["FKOD_BASE_URL"], client_id=public_application["client_id"],
                        redirect_uri=REDIRECT_URI)
    request = oauth.authorization_request(scopes=["users:read"])

    callback = approve_in_browser(env, request.url)
    query = {name: values[0] for name, values in parse_qs(urlsplit(callback).query).items()}
    tokens = oauth.exchange_code(query["code"], code_verifier=request.code_verifier)
    with Client(base_url=env["FKOD_BASE_URL"], access_token=tokens.access_token) as api:
        users = api.users.list()
    refreshed = oauth.refresh(tokens.refresh_token)
    with pytest.raises(OAuthError) as reused:
        oauth.refresh(tokens.refresh_token)
    oauth.close()

    assert callback.startswith(REDIRECT_URI + "?")
    assert query["state"] == request.state
    assert tokens.scope == "users:read"
    assert tokens.refresh_token
    assert len(users.data) == 1
    assert refreshed.refresh_token
    assert refreshed.refresh_token != tokens.refresh_token
    assert reused.value.error == "invalid_grant"


def test_code_exchange_with_wrong_verifier_is_refused(env, public_application):
    oauth = OAuthClient(base_url=env["FKOD_BASE_URL"], client_id=public_application["client_id"],
                        redirect_uri=REDIRECT_URI)
    request = oauth.authorization_request(scopes="users:read")
    callback = approve_in_browser(env, request.url)
    code = parse_qs(urlsplit(callback).query)["code"][0]

    with pytest.raises(OAuthError) as caught:
        oauth.exchange_code(code, code_verifier=generate_code_verifier())
    oauth.close()

    assert caught.value.status == 400
    assert caught.value.error == "invalid_grant"
