"""The OAuth 2.0 endpoints: authorize (login and consent pages), token, revoke, introspect,
and the server metadata (RFC 8414).

These are plain Pyramid views: their errors follow RFC 6749 (a JSON object
with ``error`` and ``error_description``, or a redirect back to the client),
not the JSON API's envelope. Errors that cannot go back to the client (an
unknown client, an unregistered redirect URI) are shown as an HTML page.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from urllib.parse import urlsplit

import sqlalchemy as sa
from authlib.oauth2.rfc6749 import OAuth2Error, scope_to_list
from authlib.oidc.core.errors import ConsentRequiredError, LoginRequiredError
from pyramid.httpexceptions import HTTPSeeOther
from pyramid.response import Response

from fkod.core import jsonutil
from fkod.core.auth import accounts
from fkod.core.auth.models import Partner
from fkod.core.auth.oauth_models import OAuthConsent
from fkod.core.auth.passwords import MAX_LENGTH as MAX_PASSWORD_LENGTH
from fkod.core.auth.security import address_limit_checks, hit_limits
from fkod.core.auth.tenancy import add_to_tenancy
from fkod.core.auth.tokens import issuer_url
from fkod.core.db import utcnow
from fkod.core.api import read_body
from fkod.core.errors import ApiError, PayloadTooLarge
from fkod.core.oauth import pages
from fkod.core.oauth.grants import make_server
from fkod.core.oauth.server import GRANT_TYPES, TOKEN_AUTH_METHODS, PyramidOAuth2Request
from fkod.core.oauth.session import BrowserSession

log = logging.getLogger(__name__)

TOTP_CODE = re.compile(r"^[0-9]{6}$")
INTROSPECTION_AUTH_METHODS = ("client_secret_basic", "client_secret_post")
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
# The largest form body the OAuth endpoints read; their parameters are short.
MAX_FORM_BYTES = 64 * 1024
# Parameters of the token, revocation and introspection endpoints.
TOKEN_ENDPOINT_PARAMETERS = ("grant_type", "code", "redirect_uri", "code_verifier",
                             "refresh_token", "scope", "client_id", "client_secret", "token",
                             "token_type_hint")
# The token endpoint methods applications are registered with: Basic for
# confidential applications and none (PKCE only) for public ones.
REGISTERED_TOKEN_AUTH_METHODS = ("client_secret_basic", "none")


def _rate_limited(request) -> int | None:
    """Count the request against its client address; return Retry-After when over the limit."""
    checks = address_limit_checks(request.registry.settings, request.client_address)
    if not checks:
        return None
    decision = hit_limits(request, checks)
    if decision is not None and not decision.allowed:
        return decision.retry_after
    return None


def _json_error(status: int, error: str, description: str, headers=None) -> Response:
    response = Response(status=status, content_type="application/json", charset="utf-8")
    response.body = jsonutil.dumps({"error": error, "error_description": description})
    response.headers["Cache-Control"] = "no-store"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _oauth_request(request, *, use_query: bool):
    """Return Authlib's request, or the error response when it cannot be built."""
    if request.method == "POST":
        try:
            read_body(request, MAX_FORM_BYTES)
        except PayloadTooLarge as error:
            return None, _json_error(413, "invalid_request", error.message)
    try:
        return PyramidOAuth2Request(request, use_query=use_query), None
    except OAuth2Error as error:
        return None, _json_error(error.status_code or 400, error.error,
                                 error.description or "The request is invalid.")


def _add_cors(request, server, response) -> Response:
    """Let a public client's registered browser origins read the response."""
    origin = request.headers.get("Origin")
    if origin:
        client = server.query_client(request.POST.get("client_id"))
        if client is not None and client.is_public and origin in client.allowed_origins:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
    return response


# Authorization endpoint ----------------------------------------------------------


def authorize(request):
    """Show the login or consent page (GET) or take the user's decision (POST)."""
    if request.method == "POST":
        retry_after = _rate_limited(request)
        if retry_after is not None:
            response = _error_page("Too many requests from this address; retry in "
                                   f"{retry_after} seconds.", status=429)
            response.headers["Retry-After"] = str(retry_after)
            return response
    server = make_server(request)
    oauth_request, failure = _oauth_request(request, use_query=True)
    if failure is not None:
        if failure.status_code == 413:
            return _error_page(f"The form is larger than {MAX_FORM_BYTES} bytes.", status=413)
        return _error_page("The authorization server must be reached over HTTPS.")
    browser = BrowserSession(request)
    user = browser.user()

    try:
        grant = server.get_consent_grant(oauth_request, end_user=user)
    except OAuth2Error as error:
        return _authorization_error(server, oauth_request, error)
    except ValueError:
        # Authlib refuses to put some characters of the request into an error.
        return _error_page("The authorization request is malformed.", code="invalid_request")

    if request.method == "POST" and not browser.check_csrf(request.POST.get("csrf_token")):
        return _error_page("The form expired or did not come from this page; go back to the "
                           "application and start again.", code="invalid_csrf_token",
                           status=403)
    action = request.POST.get("action") if request.method == "POST" else None

    if request.method == "GET" and oauth_request.payload.data.get("prompt") == "none":
        return _authorize_without_pages(request, server, oauth_request, grant, user)
    if user is None:
        if action == "login":
            return _log_in(request, browser, grant)
        return _login_page(request, browser, grant)
    if action in ("approve", "deny"):
        return _decide(request, server, oauth_request, grant, user, approve=action == "approve")
    # A login posted from a page opened before another login, or a plain GET.
    return _consent_page(request, browser, grant, user)


def _authorize_without_pages(request, server, oauth_request, grant, user) -> Response:
    """Handle ``prompt=none``: issue a code only if no login and no consent is needed.

    A logged-out user gets ``login_required`` and a user who has not yet
    granted every requested scope gets ``consent_required``. Both are
    redirected to the client with its state. The error names are OpenID
    Connect's, as Authlib's ``authlib.oidc.core.errors`` declares them.
    """
    if user is None:
        error = LoginRequiredError(redirect_uri=grant.redirect_uri)
        return _authorization_error(server, oauth_request, error)
    consent = request.dbsession.scalar(
        sa.select(OAuthConsent).where(OAuthConsent.user_id == user.id,
                                      OAuthConsent.oauth_client_id == grant.client.id,
                                      OAuthConsent.revoked_at.is_(None)))
    requested = set(scope_to_list(grant.request.scope) or [])
    if consent is None or not requested <= set(consent.scopes or []):
        error = ConsentRequiredError(redirect_uri=grant.redirect_uri)
        return _authorization_error(server, oauth_request, error)
    return server.create_authorization_response(oauth_request, grant_user=user, grant=grant)


def _authorization_error(server, oauth_request, error: OAuth2Error) -> Response:
    if error.redirect_uri:
        # The client and the redirect URI were checked: the error goes back to the client.
        error.state = oauth_request.payload.state
        return server.handle_error_response(oauth_request, error)
    return _error_page(error.description or "The authorization request is invalid.",
                       code=error.error)


def _error_page(message: str, *, code: str | None = None, status: int = 400) -> Response:
    return pages.render("error", status=status, message=message, code=code)


def _client_name(client) -> str:
    return client.client_name or client.client_id


def _login_page(request, browser, grant, *, error=None, email="", ask_totp=False,
                status=200) -> Response:
    response = pages.render("login", status=status, action=request.url,
                            csrf_token=browser.csrf_token, client_name=_client_name(grant.client),
                            error=error, email=email, ask_totp=ask_totp)
    browser.save(response)
    return response


def _log_in(request, browser, grant) -> Response:
    form = request.POST
    email = form.get("email", "")[:255]
    password = form.get("password", "")
    totp_code = form.get("totp_code") or None
    if not email.strip() or not password or len(password) > MAX_PASSWORD_LENGTH:
        return _login_page(request, browser, grant, email=email,
                           error="Enter your email and password.")
    if totp_code is not None and not TOTP_CODE.match(totp_code):
        return _login_page(request, browser, grant, email=email, ask_totp=True,
                           error="Enter the 6-digit code from your authenticator app.")
    try:
        result = accounts.log_in(request, email=email, password=password, totp_code=totp_code,
                                 partner_id=None)
    except ApiError as error:
        return _login_page(request, browser, grant, email=email, error=error.message,
                           status=error.status)
    if isinstance(result, ApiError):
        if result.code == "totp_required":
            return _login_page(request, browser, grant, email=email, ask_totp=True,
                               error="Enter the code from your authenticator app.")
        return _login_page(request, browser, grant, email=email,
                           error="The email or password is wrong.")
    browser.log_in(request.user)
    # Back to the same authorization request, now as the logged-in user.
    response = HTTPSeeOther(location=request.url)
    browser.save(response)
    return response


def _consent_page(request, browser, grant, user) -> Response:
    client = grant.client
    partner = request.dbsession.get(Partner, client.partner_id)
    catalog = {scope.name: scope for scope in request.registry["scope_catalog"].grantable()}
    scopes = [{"name": name, "description": catalog[name].description if name in catalog
               else "Access named by the application."}
              for name in scope_to_list(grant.request.scope) or []]
    response = pages.render(
        "consent", action=request.url, csrf_token=browser.csrf_token,
        client_name=_client_name(client), company_name=partner.company_name,
        verified=partner.verification_status == "verified", livemode=bool(client.livemode),
        logo_uri=_safe_http_url(client.logo_uri), links=_consent_links(client), scopes=scopes,
        email=user.email)
    browser.save(response)
    return response


# The application's links on the consent page, in the order shown, with their labels.
CONSENT_LINKS = (("client_uri", "Website"), ("policy_uri", "Privacy policy"),
                 ("tos_uri", "Terms of service"))


def _consent_links(client) -> list[dict]:
    metadata = client.client_metadata
    links = []
    for field, label in CONSENT_LINKS:
        url = _safe_http_url(metadata.get(field))
        if url is not None:
            links.append({"label": label, "url": url})
    return links


def _safe_http_url(uri) -> str | None:
    """Return the URL when it is an absolute http(s) URL, else None."""
    if not isinstance(uri, str):
        return None
    try:
        parts = urlsplit(uri)
    except ValueError:
        return None
    return uri if parts.scheme in ("https", "http") and parts.netloc else None


def _decide(request, server, oauth_request, grant, user, *, approve: bool) -> Response:
    client = grant.client
    if approve:
        granted = scope_to_list(grant.request.scope) or []
        consent = request.dbsession.scalar(
            sa.select(OAuthConsent).where(OAuthConsent.user_id == user.id,
                                          OAuthConsent.oauth_client_id == client.id))
        if consent is None:
            consent = OAuthConsent(user_id=user.id, oauth_client_id=client.id, scopes=granted)
            request.dbsession.add(consent)
        else:
            previous = [] if consent.revoked_at is not None else list(consent.scopes or [])
            consent.scopes = sorted(set(previous) | set(granted))
            consent.revoked_at = None
            consent.updated_at = utcnow()
        request.dbsession.flush()
        # Authorizing an application puts the user in its partner's tenancy, in the
        # application's mode, so the user's token can read the user.
        add_to_tenancy(request.dbsession, client.partner_id, user.id, livemode=client.livemode,
                       source="authorized")
        log.info("oauth consent granted", extra={"user_id": user.id,
                                                 "client_id": client.client_id})
    else:
        log.info("oauth consent denied", extra={"user_id": user.id,
                                                "client_id": client.client_id})
    return server.create_authorization_response(oauth_request, grant_user=user if approve
                                                else None, grant=grant)


# Token, revocation and introspection endpoints ----------------------------------


def _unreadable_basic_credentials(request) -> bool:
    """Tell whether an ``Authorization: Basic`` header fails to decode to UTF-8 text.

    Authlib decodes the header itself and raises UnicodeDecodeError on such
    bytes, so such a header is rejected here as invalid client credentials.
    """
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(encoded.strip())
    except binascii.Error:
        return False  # Authlib treats undecodable base64 as no credentials
    try:
        decoded.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def _token_endpoint(request, run) -> Response:
    retry_after = _rate_limited(request)
    if retry_after is not None:
        return _json_error(429, "rate_limited",
                           f"Too many requests from this address; retry in {retry_after} "
                           "seconds.", headers={"Retry-After": str(retry_after)})
    if _unreadable_basic_credentials(request):
        return _json_error(401, "invalid_client",
                           "The Basic credentials are not base64 of UTF-8 'client_id:secret'.",
                           headers={"WWW-Authenticate": 'Basic realm="F-KOD"'})
    server = make_server(request)
    oauth_request, failure = _oauth_request(request, use_query=False)
    if failure is not None:
        return failure
    if request.content_length and request.content_type != FORM_CONTENT_TYPE:
        return _add_cors(request, server, _json_error(
            400, "invalid_request", f"The body must be {FORM_CONTENT_TYPE}."))
    if request.authorization is not None and "client_secret" in request.POST:
        # RFC 6749 section 2.3: a client uses one authentication method per request.
        return _add_cors(request, server, _json_error(
            400, "invalid_request", "The request authenticates the client twice, with Basic "
            "credentials and a client_secret parameter; send the Basic credentials only."))
    repeated = [name for name in TOKEN_ENDPOINT_PARAMETERS if len(request.POST.getall(name)) > 1]
    if repeated:
        # RFC 6749 section 3.2: request parameters must not be included more than once.
        return _add_cors(request, server, _json_error(
            400, "invalid_request",
            f"The parameter {repeated[0]} is sent more than once; send each parameter once."))
    return _add_cors(request, server, run(server, oauth_request))


def token(request):
    def run(server, oauth_request):
        if not request.POST.get("grant_type"):
            return _json_error(400, "invalid_request",
                               "Missing grant_type: send authorization_code, refresh_token "
                               "or client_credentials.")
        return server.create_token_response(oauth_request)

    return _token_endpoint(request, run)


def revoke(request):
    return _token_endpoint(request, lambda server, oauth_request:
                           server.create_endpoint_response("revocation", oauth_request))


def introspect(request):
    return _token_endpoint(request, lambda server, oauth_request:
                           server.create_endpoint_response("introspection", oauth_request))


def metadata(request):
    """Return the authorization server's metadata document (RFC 8414).

    Its URLs come from the settings, not from the request's Host header,
    because the document is cacheable and a cache must not keep a forged host.
    """
    settings = request.registry.settings
    base = issuer_url(settings)
    scopes = [scope.name for scope in request.registry["scope_catalog"].grantable()]
    document = {
        # The iss claim of the access tokens, as RFC 9068 requires.
        "issuer": request.registry["token_signer"].issuer,
        "authorization_endpoint": base + "/oauth/authorize",
        "token_endpoint": base + "/oauth/token",
        "revocation_endpoint": base + "/oauth/revoke",
        "introspection_endpoint": base + "/oauth/introspect",
        "jwks_uri": base + "/.well-known/jwks.json",
        "scopes_supported": scopes,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": list(GRANT_TYPES),
        # Each application has one token endpoint method (see fkod.developers.applications).
        "token_endpoint_auth_methods_supported": list(REGISTERED_TOKEN_AUTH_METHODS),
        "revocation_endpoint_auth_methods_supported": list(TOKEN_AUTH_METHODS),
        "introspection_endpoint_auth_methods_supported": list(INTROSPECTION_AUTH_METHODS),
        "code_challenge_methods_supported": ["S256"],
    }
    response = Response(content_type="application/json", charset="utf-8")
    response.body = jsonutil.dumps(document)
    response.headers["Cache-Control"] = "public, max-age=3600"
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response
