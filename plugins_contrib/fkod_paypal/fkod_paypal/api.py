"""A small client for PayPal's REST API: OAuth 2.0 access tokens, JSON calls and error mapping."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

import httpx

from fkod.core.billing.providers import PaymentProviderError

log = logging.getLogger(__name__)

TOKEN_PATH = "/v1/oauth2/token"  # noqa: S105 (a URL path, not a secret)
TIMEOUT_SECONDS = 30.0
# A cached token is replaced this long before the expiry PayPal reports, so a
# call never starts with a token that expires on the way.
TOKEN_EXPIRY_MARGIN_SECONDS = 120.0


class PayPalHTTPError(Exception):
    """An error status from PayPal, with ``name`` and ``message`` read from its body."""

    def __init__(self, status: int, name: str, message: str, debug_id: str = "",
                 issues: tuple[str, ...] = ()):
        super().__init__(f"{status} {name}: {message}")
        self.status = status
        self.name = name
        self.message = message
        self.debug_id = debug_id
        self.issues = issues

    @property
    def retryable(self) -> bool:
        return self.status == 429 or self.status >= 500

    def describe(self) -> str:
        """Return the error as one line for a message: status, name, text, issues and debug id."""
        text = f"PayPal returned {self.status} {self.name}: {self.message}"
        if self.issues:
            text += f" (issues: {', '.join(self.issues)})"
        if self.debug_id:
            text += f" [debug_id {self.debug_id}]"
        return text


class PayPalClient:
    """Calls PayPal's REST API with a cached client-credentials access token.

    The token is fetched on first use, kept until shortly before its
    ``expires_in`` runs out, and fetched again once when a call returns 401.
    Calls do not retry on errors themselves: a caller that gets a retryable
    :class:`PaymentProviderError` repeats the call with the same request id.
    """

    def __init__(self, *, client_id: str, client_secret: str, api_base: str,
                 clock: Callable[[], float] = time.monotonic):
        self._client_id = client_id
        self._client_secret = client_secret
        self._api_base = api_base.rstrip("/")
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._token_expires_at = 0.0
        self._http: httpx.Client | None = None

    def _session(self) -> httpx.Client:
        if self._http is None:
            # trust_env=False keeps proxy variables of the host from
            # redirecting calls that carry the client secret.
            self._http = httpx.Client(base_url=self._api_base, timeout=TIMEOUT_SECONDS,
                                      trust_env=False)
        return self._http

    def close(self) -> None:
        """Close the HTTP connections; the next call opens new ones."""
        if self._http is not None:
            self._http.close()
            self._http = None

    def request(self, method: str, path: str, *, action: str, json: Mapping | None = None,
                headers: Mapping[str, str] | None = None) -> dict:
        """Send one authenticated JSON call and return the decoded body.

        ``action`` names the operation in error messages ("creating the PayPal
        payout"). Raises :class:`PayPalHTTPError` for an error status and
        :class:`PaymentProviderError` for a network failure, missing settings
        or credentials that PayPal rejects.
        """
        token = self._access_token(action)
        response = self._send(method, path, token, action=action, json=json, headers=headers)
        if response.status_code == 401:
            # PayPal can revoke a token before its expiry, so one new token is tried.
            log.info("paypal token rejected, fetching a new one", extra={"path": path})
            self._forget_token(token)
            token = self._access_token(action)
            response = self._send(method, path, token, action=action, json=json,
                                  headers=headers)
        if response.status_code >= 400:
            raise _http_error(response)
        return _json_body(response, action)

    def _send(self, method: str, path: str, token: str, *, action: str, json: Mapping | None,
              headers: Mapping[str, str] | None) -> httpx.Response:
        all_headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        all_headers.update(headers or {})
        try:
            return self._session().request(method, path, json=json, headers=all_headers)
        except httpx.HTTPError as exc:
            log.warning("paypal call failed", extra={"path": path, "error": str(exc)})
            raise PaymentProviderError(f"{action} failed: PayPal could not be reached ({exc}).",
                                       retryable=True) from exc

    def _access_token(self, action: str) -> str:
        with self._lock:
            if self._token is not None and self._clock() < self._token_expires_at:
                return self._token
            token, lifetime = self._fetch_token(action)
            margin = min(TOKEN_EXPIRY_MARGIN_SECONDS, lifetime / 2)
            self._token = token
            self._token_expires_at = self._clock() + lifetime - margin
            return token

    def _forget_token(self, token: str) -> None:
        with self._lock:
            if self._token == token:
                self._token = None

    def _fetch_token(self, action: str) -> tuple[str, float]:
        if not self._client_id or not self._client_secret:
            raise PaymentProviderError(
                "PayPal is not configured: set fkod_paypal.client_id and "
                "fkod_paypal.client_secret (or FKOD_PAYPAL_CLIENT_ID and "
                "FKOD_PAYPAL_CLIENT_SECRET).")
        try:
            response = self._session().post(
                TOKEN_PATH, data={"grant_type": "client_credentials"},
                auth=(self._client_id, self._client_secret),
                headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            log.warning("paypal token request failed", extra={"error": str(exc)})
            raise PaymentProviderError(
                f"{action} failed: the PayPal access token could not be fetched ({exc}).",
                retryable=True) from exc
        if response.status_code >= 400:
            error = _http_error(response)
            log.warning("paypal token request rejected", extra={"status": error.status,
                                                       "error_name": error.name})
            raise PaymentProviderError(
                f"{action} failed: the PayPal access token request was rejected: "
                f"{error.describe()}. Check fkod_paypal.client_id and client_secret.",
                retryable=error.retryable)
        body = _json_body(response, action)
        token = body.get("access_token")
        try:
            lifetime = float(body.get("expires_in", 0))
        except (TypeError, ValueError):
            lifetime = 0.0
        if not isinstance(token, str) or not token or lifetime <= 0:
            raise PaymentProviderError(
                f"{action} failed: PayPal's token response lacks access_token or expires_in.",
                retryable=True)
        log.info("paypal access token fetched", extra={"expires_in": lifetime})
        return token, lifetime


def _json_body(response: httpx.Response, action: str) -> dict:
    if response.status_code == 204 or not response.content:
        return {}
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise PaymentProviderError(
            f"{action} failed: PayPal returned {response.status_code} with a body that is not "
            "a JSON object.", retryable=response.status_code >= 500)
    return body


def _http_error(response: httpx.Response) -> PayPalHTTPError:
    """Build the error from PayPal's body, in the REST shape or the OAuth shape."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    # REST errors carry name, message, debug_id and details; OAuth errors
    # carry error and error_description.
    name = str(body.get("name") or body.get("error") or "UNKNOWN_ERROR")
    message = str(body.get("message") or body.get("error_description")
                  or response.reason_phrase or "no message")
    details = body.get("details")
    issues = tuple(str(detail.get("issue")) for detail in details
                   if isinstance(detail, dict) and detail.get("issue")) \
        if isinstance(details, list) else ()
    return PayPalHTTPError(response.status_code, name, message,
                           debug_id=str(body.get("debug_id") or ""), issues=issues)
