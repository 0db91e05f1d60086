"""The OAuth rules, driven by Authlib's OAuth client against the app served over HTTP.

The application is created through the developer API. A person logs in and
approves on the real pages through a requests session. Authlib's
``OAuth2Session`` then does what a partner's software does: it builds the
authorization URL, exchanges the code, refreshes, revokes and calls the
gateway. Every request crosses a real socket on 127.0.0.1.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session, OAuthError
from joserfc.jwk import ECKey

from fkod.core.auth.tokens import OAUTH_AUDIENCE
from fkod.core.testing import TEST_PASSWORD, TestClient, auth_header
from tests.live import serve

pytestmark = pytest.mark.shared_app

# Loopback redirect URIs on the discard port: the tests never follow a redirect,
# and a mistaken follow reaches no other host.
REDIRECT_URI = "http://localhost:9/callback"
SECOND_REDIRECT_URI = "http://localhost:9/second"
ORIGIN = "https://learn.app.example"
USERS = "/api/v1/users"
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
TIMEOUT = 10


@pytest.fixture
def served(app):
    """Serve the application on 127.0.0.1 in threads; yield its base URL."""
    with serve(app) as url:
        yield url


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def query_of(url: str) -> dict:
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}


class Partner:
    """A partner, its owner's login token, and applications made through the developer API."""

    def __init__(self, app, base: str):
        self.app = app
        self.base = base
        test_client = TestClient(app)
        registered = test_client.register_partner()
        self.email = registered["user"]["email"]
        self.login_token = test_client.login(self.email)

    def create_application(self, **fields) -> dict:
        body = {"name": "Study Buddy", "scopes": ["users:read", "courses:read"],
                "redirect_uris": [REDIRECT_URI], **fields}
        response = requests.post(self.base + "/api/developers/applications", json=body,
                                 headers=auth_header(self.login_token), timeout=TIMEOUT)
        assert response.status_code == 201, response.text
        return response.json()

    def session(self, application: dict, **options) -> OAuth2Session:
        """Return Authlib's client for the application, as the partner's software builds it."""
        public = application["client_type"] == "public"
        options.setdefault("scope", "users:read courses:read")
        options.setdefault("redirect_uri", REDIRECT_URI)
        return OAuth2Session(
            application["client_id"], None if public else application["client_secret"],
            code_challenge_method="S256",
            token_endpoint_auth_method="none" if public else "client_secret_basic",
            **options)

    def approve(self, url: str, *, decision: str = "approve") -> str:
        """Log in on the authorization page and decide; return the redirect's Location."""
        browser = requests.Session()
        page = browser.get(url, allow_redirects=False, timeout=TIMEOUT)
        assert page.status_code == 200, page.text
        if "Log in to F-KOD" in page.text:
            logged_in = browser.post(url, data={
                "action": "login", "csrf_token": CSRF_FIELD.search(page.text).group(1),
                "email": self.email, "password": TEST_PASSWORD},
                allow_redirects=False, timeout=TIMEOUT)
            assert logged_in.status_code == 303, logged_in.text
            page = browser.get(url, allow_redirects=False, timeout=TIMEOUT)
            assert page.status_code == 200, page.text
        decided = browser.post(url, data={"action": decision,
                                          "csrf_token": CSRF_FIELD.search(page.text).group(1)},
                               allow_redirects=False, timeout=TIMEOUT)
        assert decided.status_code == 302, decided.text
        return decided.headers["Location"]

    def authorize(self, oauth: OAuth2Session, verifier: str | None,
                  **params) -> tuple[str, str]:
        """Run the browser part of the flow; return the callback URL and the state."""
        url, state = oauth.create_authorization_url(self.base + "/oauth/authorize",
                                                    code_verifier=verifier, **params)
        return self.approve(url), state

    def fetch(self, oauth: OAuth2Session, callback: str, state: str, verifier: str | None,
              **extra) -> dict:
        return oauth.fetch_token(self.base + "/oauth/token", authorization_response=callback,
                                 state=state, code_verifier=verifier, **extra)

    def flow(self, oauth: OAuth2Session) -> dict:
        verifier = new_verifier()
        callback, state = self.authorize(oauth, verifier)
        return self.fetch(oauth, callback, state, verifier)

    def call_gateway(self, access_token: str, **headers) -> requests.Response:
        return requests.get(self.base + USERS, timeout=TIMEOUT,
                            headers={**auth_header(access_token), **headers})


def new_verifier() -> str:
    return b64(hashlib.sha256(str(time.monotonic_ns()).encode()).digest()) + "-verifier"


@pytest.fixture
def partner(app, served) -> Partner:
    return Partner(app, served)


def expect_oauth_error(call, error: str) -> OAuthError:
    with pytest.raises(OAuthError) as caught:
        call()
    assert caught.value.error == error, caught.value.description
    return caught.value


def assert_refused(response: requests.Response, code: str) -> None:
    assert response.status_code == 401, response.text
    assert response.json()["code"] == code


# The whole flow ----------------------------------------------------------------------


def test_library_flow_reaches_the_gateway(partner):
    application = partner.create_application()
    oauth = partner.session(application)

    token = partner.flow(oauth)
    listed = oauth.get(partner.base + USERS, timeout=TIMEOUT)

    assert token["token_type"] == "Bearer"
    assert token["scope"] == "users:read courses:read"
    assert listed.status_code == 200, listed.text
    assert len(listed.json()["data"]) == 1
    count = requests.get(f"{partner.base}/api/developers/applications/{application['id']}",
                         headers=auth_header(partner.login_token), timeout=TIMEOUT)
    assert count.json()["authorized_users"] == 1


def test_library_token_issuer_matches_metadata(partner):
    token = partner.flow(partner.session(partner.create_application()))
    metadata = requests.get(partner.base + "/.well-known/oauth-authorization-server",
                            timeout=TIMEOUT).json()

    _header, payload, _signature = token["access_token"].split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["iss"] == metadata["issuer"]
    assert metadata["issuer"].startswith("http")


def test_library_public_client_from_browser(partner):
    application = partner.create_application(client_type="public", allowed_origins=[ORIGIN])
    oauth = partner.session(application)
    oauth.headers["Origin"] = ORIGIN

    token = partner.flow(oauth)
    allowed = partner.call_gateway(token["access_token"], Origin=ORIGIN)
    other = partner.call_gateway(token["access_token"], Origin="https://evil.example")

    assert "refresh_token" in token
    assert allowed.status_code == 200
    assert allowed.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Access-Control-Allow-Origin" not in other.headers


def test_library_revoked_token_refused(partner):
    oauth = partner.session(partner.create_application())
    token = partner.flow(oauth)
    assert partner.call_gateway(token["access_token"]).status_code == 200

    revoked = oauth.revoke_token(partner.base + "/oauth/revoke", token["access_token"],
                                 token_type_hint="access_token")

    assert revoked.status_code == 200
    assert_refused(partner.call_gateway(token["access_token"]), "token_revoked")


def test_library_expired_token_refused(partner, app):
    oauth = partner.session(partner.create_application())
    token = partner.flow(oauth)
    _header, payload, _signature = token["access_token"].split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    now = int(time.time())
    # The same token as it reads an hour and a minute later: only iat and exp move.
    aged = {name: value for name, value in claims.items()
            if name not in ("iss", "aud", "iat", "exp")}
    expired, _ttl = app.registry["token_signer"].issue(
        {**aged, "iat": now - 3660, "exp": now - 60}, audience=OAUTH_AUDIENCE)

    assert_refused(partner.call_gateway(expired), "token_expired")
    assert partner.call_gateway(token["access_token"]).status_code == 200


# PKCE --------------------------------------------------------------------------------


def test_library_public_client_without_pkce(partner):
    application = partner.create_application(client_type="public")
    oauth = partner.session(application)

    url, state = oauth.create_authorization_url(partner.base + "/oauth/authorize")
    response = requests.get(url, allow_redirects=False, timeout=TIMEOUT)

    assert response.status_code == 302
    error = query_of(response.headers["Location"])
    assert error["error"] == "invalid_request"
    assert error["state"] == state


@pytest.mark.parametrize("method", ["plain", "s256"])
def test_library_pkce_method_refused(partner, method):
    oauth = partner.session(partner.create_application(client_type="public"))
    verifier = new_verifier()

    url, state = oauth.create_authorization_url(
        partner.base + "/oauth/authorize", code_challenge=verifier,
        code_challenge_method=method)
    response = requests.get(url, allow_redirects=False, timeout=TIMEOUT)

    error = query_of(response.headers["Location"])
    assert error["error"] == "invalid_request"
    assert error["state"] == state


def test_library_wrong_verifier_burns_code(partner):
    oauth = partner.session(partner.create_application())
    verifier = new_verifier()
    callback, state = partner.authorize(oauth, verifier)

    expect_oauth_error(lambda: partner.fetch(oauth, callback, state, new_verifier()),
                       "invalid_grant")
    retried = expect_oauth_error(lambda: partner.fetch(oauth, callback, state, verifier),
                                 "invalid_grant")
    assert "already used" in retried.description


# redirect_uri ------------------------------------------------------------------------


@pytest.mark.parametrize("variant", [
    REDIRECT_URI + "/", "http://LOCALHOST:9/callback", "http://127.0.0.1:9/callback",
    "http://localhost:9/CALLBACK", REDIRECT_URI + "/extra", REDIRECT_URI + "?next=1",
])
def test_library_redirect_uri_variants(partner, variant):
    oauth = partner.session(partner.create_application())
    url, _state = oauth.create_authorization_url(partner.base + "/oauth/authorize",
                                                 code_verifier=new_verifier(),
                                                 redirect_uri=variant)
    at_authorize = requests.get(url, allow_redirects=False, timeout=TIMEOUT)
    assert at_authorize.status_code == 400
    assert "Location" not in at_authorize.headers

    verifier = new_verifier()
    callback, state = partner.authorize(oauth, verifier)
    expect_oauth_error(lambda: partner.fetch(oauth, callback, state, verifier,
                                             redirect_uri=variant), "invalid_grant")


def test_library_redirect_uri_of_another_registration(partner):
    application = partner.create_application(
        redirect_uris=[REDIRECT_URI, SECOND_REDIRECT_URI])
    oauth = partner.session(application)
    verifier = new_verifier()
    callback, state = partner.authorize(oauth, verifier)

    expect_oauth_error(lambda: partner.fetch(oauth, callback, state, verifier,
                                             redirect_uri=SECOND_REDIRECT_URI), "invalid_grant")


# Codes and refresh tokens --------------------------------------------------------------


def test_library_code_reuse_revokes(partner):
    oauth = partner.session(partner.create_application())
    verifier = new_verifier()
    callback, state = partner.authorize(oauth, verifier)
    first = partner.fetch(oauth, callback, state, verifier)
    assert partner.call_gateway(first["access_token"]).status_code == 200

    expect_oauth_error(lambda: partner.fetch(oauth, callback, state, verifier), "invalid_grant")

    assert_refused(partner.call_gateway(first["access_token"]), "token_revoked")
    expect_oauth_error(lambda: oauth.refresh_token(partner.base + "/oauth/token",
                                                   refresh_token=first["refresh_token"]),
                       "invalid_grant")


def test_library_concurrent_exchanges(partner):
    application = partner.create_application()
    oauth = partner.session(application)
    for _round in range(3):
        verifier = new_verifier()
        callback, _state = partner.authorize(oauth, verifier)
        body = {"grant_type": "authorization_code", "code": query_of(callback)["code"],
                "redirect_uri": REDIRECT_URI, "code_verifier": verifier}
        auth = (application["client_id"], application["client_secret"])

        def exchange(_index, body=body, auth=auth):
            return requests.post(partner.base + "/oauth/token", data=body, auth=auth,
                                 timeout=TIMEOUT)

        with ThreadPoolExecutor(max_workers=4) as pool:
            responses = list(pool.map(exchange, range(4)))

        statuses = sorted(response.status_code for response in responses)
        assert statuses.count(200) == 1, statuses
        for response in responses:
            if response.status_code != 200:
                assert response.status_code == 400, response.text
                assert response.json()["error"] == "invalid_grant"


def test_library_refresh_reuse_revokes_family(partner):
    oauth = partner.session(partner.create_application())
    first = partner.flow(oauth)
    second = oauth.refresh_token(partner.base + "/oauth/token")
    assert second["refresh_token"] != first["refresh_token"]
    assert partner.call_gateway(second["access_token"]).status_code == 200

    expect_oauth_error(lambda: oauth.refresh_token(partner.base + "/oauth/token",
                                                   refresh_token=first["refresh_token"]),
                       "invalid_grant")

    assert_refused(partner.call_gateway(second["access_token"]), "token_revoked")
    expect_oauth_error(lambda: oauth.refresh_token(partner.base + "/oauth/token",
                                                   refresh_token=second["refresh_token"]),
                       "invalid_grant")


# Scopes ----------------------------------------------------------------------------------


def test_library_refresh_scope_only_narrows(partner):
    oauth = partner.session(partner.create_application(), scope="users:read")
    first = partner.flow(oauth)
    assert first["scope"] == "users:read"

    expect_oauth_error(lambda: oauth.refresh_token(
        partner.base + "/oauth/token", refresh_token=first["refresh_token"],
        scope="users:read courses:read"), "invalid_scope")
    kept = oauth.refresh_token(partner.base + "/oauth/token",
                               refresh_token=first["refresh_token"])

    assert kept["scope"] == "users:read"


def test_library_client_credentials_scope(partner):
    application = partner.create_application(
        grant_types=["authorization_code", "refresh_token", "client_credentials"])
    machine = OAuth2Session(application["client_id"], application["client_secret"],
                            scope="users:write", token_endpoint_auth_method="client_secret_basic")

    expect_oauth_error(lambda: machine.fetch_token(partner.base + "/oauth/token",
                                                   grant_type="client_credentials"),
                       "invalid_scope")
    machine.scope = "users:read"
    token = machine.fetch_token(partner.base + "/oauth/token", grant_type="client_credentials")

    assert token["scope"] == "users:read"
    assert partner.call_gateway(token["access_token"]).status_code == 200


def test_library_unregistered_scope_at_authorize(partner):
    oauth = partner.session(partner.create_application(), scope="users:read users:write")
    url, state = oauth.create_authorization_url(partner.base + "/oauth/authorize",
                                                code_verifier=new_verifier())

    error = query_of(_redirect_after_login(partner, url))

    assert error["error"] == "invalid_scope"
    assert error["state"] == state


def _redirect_after_login(partner: Partner, url: str) -> str:
    """Log in on the page and return where the authorization request then redirects."""
    browser = requests.Session()
    page = browser.get(url, allow_redirects=False, timeout=TIMEOUT)
    if page.status_code == 302:
        return page.headers["Location"]
    browser.post(url, data={"action": "login",
                            "csrf_token": CSRF_FIELD.search(page.text).group(1),
                            "email": partner.email, "password": TEST_PASSWORD},
                 allow_redirects=False, timeout=TIMEOUT)
    response = browser.get(url, allow_redirects=False, timeout=TIMEOUT)
    assert response.status_code == 302, response.text
    return response.headers["Location"]


# Forged access tokens --------------------------------------------------------------------


def forge(token: str, how: str, app) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["scope"] = "users:read users:write courses:read"
    widened = b64(json.dumps(claims).encode())
    if how == "changed_claims":
        return f"{header}.{widened}.{signature}"
    key_id = app.registry["token_signer"].key_id
    if how == "alg_none":
        none_header = b64(json.dumps({"alg": "none", "typ": "JWT", "kid": key_id}).encode())
        return f"{none_header}.{widened}."
    hs_header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": key_id}).encode())
    public_pem = app.registry["token_signer"].key.as_pem(private=False)
    mac = hmac.new(public_pem, f"{hs_header}.{widened}".encode(), hashlib.sha256).digest()
    return f"{hs_header}.{widened}.{b64(mac)}"


@pytest.mark.parametrize("how", ["changed_claims", "alg_none", "hs256_public_key"])
def test_library_forged_token_refused(partner, app, how):
    oauth = partner.session(partner.create_application())
    token = partner.flow(oauth)

    assert_refused(partner.call_gateway(forge(token["access_token"], how, app)),
                   "invalid_token")
    assert partner.call_gateway(token["access_token"]).status_code == 200


# Signing key rotation ------------------------------------------------------------------


def test_library_token_survives_key_rotation(app_factory, app, partner, tmp_path):
    oauth = partner.session(partner.create_application())
    token = partner.flow(oauth)
    old_public = app.registry["token_signer"].key.as_pem(private=False).decode()
    new_key_file = tmp_path / "rotated-key.pem"
    new_key_file.write_bytes(ECKey.generate_key("P-256").as_pem(private=True))

    rotated = app_factory(**{"fkod.secrets.jwt_private_key_file": str(new_key_file),
                             "fkod.secrets.jwt_previous_public_keys": old_public})
    with serve(rotated) as base:
        keys = requests.get(base + "/.well-known/jwks.json", timeout=TIMEOUT).json()["keys"]
        accepted = requests.get(base + USERS, headers=auth_header(token["access_token"]),
                                timeout=TIMEOUT)
        refreshed = oauth.refresh_token(base + "/oauth/token")

    assert [key["kid"] for key in keys] == [rotated.registry["token_signer"].key_id,
                                            app.registry["token_signer"].key_id]
    assert accepted.status_code == 200, accepted.text
    new_kid = json.loads(base64.urlsafe_b64decode(
        refreshed["access_token"].split(".")[0] + "==="))["kid"]
    assert new_kid == rotated.registry["token_signer"].key_id

    retired = app_factory(**{"fkod.secrets.jwt_private_key_file": str(new_key_file)})
    with serve(retired) as base:
        refused = requests.get(base + USERS, headers=auth_header(token["access_token"]),
                               timeout=TIMEOUT)
    assert_refused(refused, "invalid_token")

