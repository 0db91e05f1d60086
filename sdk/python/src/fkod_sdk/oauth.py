"""OAuth 2.0 with the platform's authorization server.

* Authorization code with PKCE (S256): :meth:`OAuthClient.authorization_request`
  builds the URL to send a user to, with a fresh ``state`` and code verifier;
  :meth:`OAuthClient.exchange_code` trades the code of the callback for tokens.
* :meth:`OAuthClient.refresh` trades a refresh token for new tokens. The server
  rotates refresh tokens: each one works once, and the response carries the
  next one. Reusing a spent refresh token revokes the whole family.
* :meth:`OAuthClient.client_credentials` gets a token for a confidential
  application acting for its partner, with no user.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Sequence
from typing import Any, Union
from urllib.parse import quote, urlencode

import httpx

from fkod_sdk._config import USER_AGENT, decode_json
from fkod_sdk.errors import ApiConnectionError, ApiTimeoutError, OAuthError
from fkod_sdk.types import AuthorizationRequest, TokenResponse

AUTHORIZE_PATH = "/oauth/authorize"
TOKEN_PATH = "/oauth/token"  # noqa: S105 (a URL path, not a password)
REVOKE_PATH = "/oauth/revoke"
METADATA_PATH = "/.well-known/oauth-authorization-server"

Scopes = Union[str, Sequence[str], None]


def generate_code_verifier() -> str:
    """Return a PKCE code verifier: 64 URL-safe characters from 48 random bytes."""
    return secrets.token_urlsafe(48)


def code_challenge_s256(verifier: str) -> str:
    """Return the S256 code challenge of ``verifier``: unpadded base64url of its SHA-256."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _scope_text(scopes: Scopes) -> str | None:
    if scopes is None:
        return None
    return scopes if isinstance(scopes, str) else " ".join(scopes)


class OAuthClient:
    """An OAuth application registered with the platform.

    ``client_secret`` is given for a confidential application only; the SDK then
    authenticates to the token endpoint with HTTP Basic. A public application
    (a browser or mobile app) has no secret and relies on PKCE.
    """

    def __init__(self, *, base_url: str, client_id: str, client_secret: str | None = None,
                 redirect_uri: str | None = None, timeout: float = 30.0,
                 http_client: httpx.Client | None = None) -> None:
        if not base_url:
            raise ValueError("base_url is missing.")
        self.base_url = base_url.rstrip("/")
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uri = redirect_uri
        self._timeout = timeout
        self._owns_http = http_client is None
        self._http = http_client or httpx.Client(follow_redirects=False)

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> OAuthClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def authorization_request(self, *, scopes: Scopes, redirect_uri: str | None = None,
                              state: str | None = None) -> AuthorizationRequest:
        """Build the authorization URL with a new PKCE verifier (S256) and ``state``."""
        redirect = redirect_uri or self.redirect_uri
        if not redirect:
            raise ValueError("redirect_uri is missing: pass it here or to OAuthClient.")
        verifier = generate_code_verifier()
        challenge = code_challenge_s256(verifier)
        state = state or secrets.token_urlsafe(24)
        query = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": redirect,
            "scope": _scope_text(scopes) or "",
            "state": state,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        url = f"{self.base_url}{AUTHORIZE_PATH}?{urlencode(query)}"
        return AuthorizationRequest(url=url, state=state, code_verifier=verifier,
                                    code_challenge=challenge)

    def exchange_code(self, code: str, *, code_verifier: str,
                      redirect_uri: str | None = None) -> TokenResponse:
        """Trade an authorization code and its PKCE verifier for tokens."""
        redirect = redirect_uri or self.redirect_uri
        if not redirect:
            raise ValueError("redirect_uri is missing: pass the one used to authorize.")
        return self._token({"grant_type": "authorization_code", "code": code,
                            "redirect_uri": redirect, "code_verifier": code_verifier})

    def refresh(self, refresh_token: str, *, scopes: Scopes = None) -> TokenResponse:
        """Trade a refresh token for new tokens; keep the new refresh token it returns."""
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        scope = _scope_text(scopes)
        if scope:
            form["scope"] = scope
        return self._token(form)

    def client_credentials(self, *, scopes: Scopes = None) -> TokenResponse:
        """Get a token for the application itself; needs a confidential application."""
        if not self.client_secret:
            raise ValueError("client_credentials needs the client_secret of a confidential "
                             "application.")
        form = {"grant_type": "client_credentials"}
        scope = _scope_text(scopes)
        if scope:
            form["scope"] = scope
        return self._token(form)

    def revoke(self, token: str, *, token_type_hint: str | None = None) -> None:
        """Revoke an access or refresh token. An unknown token is not an error (RFC 7009)."""
        form = {"token": token}
        if token_type_hint:
            form["token_type_hint"] = token_type_hint
        self._post(REVOKE_PATH, form)

    def metadata(self) -> dict[str, Any]:
        """Fetch the authorization server metadata (RFC 8414)."""
        try:
            response = self._http.get(self.base_url + METADATA_PATH, timeout=self._timeout,
                                      headers={"User-Agent": USER_AGENT})
        except httpx.TimeoutException as exc:
            raise ApiTimeoutError(f"GET {METADATA_PATH} timed out: {exc}") from exc
        except httpx.TransportError as exc:
            raise ApiConnectionError(f"GET {METADATA_PATH} failed: {exc}") from exc
        body = decode_json(response)
        if response.status_code != 200 or not isinstance(body, dict):
            raise _oauth_error(response, body)
        return body

    def _token(self, form: dict[str, str]) -> TokenResponse:
        body = self._post(TOKEN_PATH, form)
        if not isinstance(body, dict) or "access_token" not in body:
            raise OAuthError(status=200, error="invalid_response",
                             description="The token response has no access_token.",
                             request_id=None)
        return TokenResponse.from_dict(body)

    def _post(self, path: str, form: dict[str, str]) -> Any:
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        auth: httpx.BasicAuth | None = None
        if self.client_secret:
            # RFC 6749 section 2.3.1: both parts are form-encoded before Basic encoding.
            auth = httpx.BasicAuth(quote(self.client_id, safe=""),
                                   quote(self.client_secret, safe=""))
        else:
            form = {**form, "client_id": self.client_id}
        # Token requests are not retried: a code or refresh token works only once.
        try:
            response = self._http.post(self.base_url + path, data=form, headers=headers,
                                       auth=auth, timeout=self._timeout)
        except httpx.TimeoutException as exc:
            raise ApiTimeoutError(f"POST {path} timed out: {exc}") from exc
        except httpx.TransportError as exc:
            raise ApiConnectionError(f"POST {path} failed: {exc}") from exc
        body = decode_json(response)
        if not response.is_success:
            raise _oauth_error(response, body)
        return body


def _oauth_error(response: httpx.Response, body: Any) -> OAuthError:
    envelope = body if isinstance(body, dict) else {}
    # The OAuth endpoints return {"error", "error_description"}, and other paths return
    # the platform's envelope with "code" and "message".
    error = envelope.get("error") or envelope.get("code") or "http_error"
    description = envelope.get("error_description") or envelope.get("message")
    return OAuthError(status=response.status_code, error=str(error), description=description,
                      request_id=response.headers.get("x-request-id"))
