"""Authlib's own OAuth client against the authorization server on a real HTTP server."""

from __future__ import annotations

import re
import threading
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from fkod.core.oauth import verify_access_token
from fkod.core.testing import TEST_PASSWORD, TestClient
from tests.functional.test_oauth_server import REDIRECT_URI, SCOPE, add_client

CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):
        pass


@pytest.fixture
def served(app):
    """Serve the application on 127.0.0.1 in a thread; yield its base URL."""
    server = make_server("127.0.0.1", 0, app, handler_class=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def csrf_token(page: requests.Response) -> str:
    match = CSRF_FIELD.search(page.text)
    assert match, page.text
    return match.group(1)


def test_authlib_client_full_flow(app, served):
    registered = TestClient(app).register_partner()
    client_id, secret = add_client(app, registered["partner"]["id"])
    oauth = OAuth2Session(client_id, secret, scope=SCOPE, redirect_uri=REDIRECT_URI,
                          code_challenge_method="S256",
                          token_endpoint_auth_method="client_secret_basic")
    verifier = "v" * 20 + "-verifier-" + "x" * 30
    url, state = oauth.create_authorization_url(served + "/oauth/authorize",
                                                code_verifier=verifier)
    assert "code_challenge=" + create_s256_code_challenge(verifier) in url

    # The browser: the login page, then the consent page, then the redirect.
    browser = requests.Session()
    login_page = browser.get(url, timeout=10)
    assert login_page.status_code == 200
    consent_page = browser.post(url, data={
        "action": "login", "csrf_token": csrf_token(login_page),
        "email": registered["user"]["email"], "password": TEST_PASSWORD}, timeout=10)
    assert consent_page.status_code == 200
    assert "Allow" in consent_page.text
    decision = browser.post(url, data={"action": "approve",
                                       "csrf_token": csrf_token(consent_page)},
                            allow_redirects=False, timeout=10)
    assert decision.status_code == 302
    callback = decision.headers["Location"]
    assert callback.startswith(REDIRECT_URI + "?")

    token = oauth.fetch_token(served + "/oauth/token", authorization_response=callback,
                              state=state, code_verifier=verifier)
    assert token["token_type"] == "Bearer"
    claims = verify_access_token(app.registry, token["access_token"])
    assert claims["client_id"] == client_id
    assert claims["sub"].startswith("user_")

    refreshed = oauth.refresh_token(served + "/oauth/token")
    assert refreshed["refresh_token"] != token["refresh_token"]
    assert verify_access_token(app.registry, refreshed["access_token"])["scope"] == SCOPE

    machine = OAuth2Session(client_id, secret, scope="users:read",
                            token_endpoint_auth_method="client_secret_basic")
    machine_token = machine.fetch_token(served + "/oauth/token", grant_type="client_credentials")
    assert "refresh_token" not in machine_token
    assert verify_access_token(app.registry, machine_token["access_token"])["sub"] == client_id

    # The client library revokes too (RFC 7009), and introspection then reports it inactive.
    oauth.revoke_token(served + "/oauth/revoke", refreshed["access_token"],
                       token_type_hint="access_token")
    found = requests.post(served + "/oauth/introspect", data={"token": refreshed["access_token"]},
                          auth=(client_id, secret), timeout=10).json()
    assert found == {"active": False}
