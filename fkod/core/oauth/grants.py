"""The grants and endpoints the authorization server offers.

* authorization code with PKCE: S256 only, required for public clients;
  a code lives 5 minutes and works once, a failed PKCE check uses it up,
  and a second exchange revokes every token the first one started;
* refresh token with rotation: a refresh returns a new pair; presenting a
  rotated refresh token again revokes the whole family;
* client credentials for confidential clients (no refresh token);
* revocation (RFC 7009) and introspection (RFC 7662).

There is no implicit grant and no password grant.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import secrets
import time

import sqlalchemy as sa
from authlib.oauth2.rfc6749 import (
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    OAuth2Error,
    UnauthorizedClientError,
    grants,
    scope_to_list,
)
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc7636.challenge import CODE_VERIFIER_PATTERN, compare_s256_code_challenge
from authlib.oauth2.rfc7662 import IntrospectionEndpoint

from fkod.core.auth.models import User
from fkod.core.auth.oauth_models import OAuthAuthorizationCode, OAuthToken, digest
from fkod.core.auth.tokens import InvalidToken
from fkod.core.db import utcnow
from fkod.core.oauth.server import (
    REFRESH_TOKEN_TTL_SECONDS,
    TOKEN_AUTH_METHODS,
    OAuthServer,
    forget_cached_tokens,
    read_access_token,
    revoke_family,
    token_row_is_active,
)

log = logging.getLogger(__name__)

# How long an authorization code can be exchanged, in seconds.
CODE_TTL_SECONDS = 300
# Longer values are no token this server issued.
MAX_TOKEN_LENGTH = 4096
# Characters RFC 6749 section 5.2 allows in error_description.
DESCRIPTION_SAFE = re.compile(r"^[\x20\x21\x23-\x5b\x5d-\x7e]*$")
# Unregistered scope names longer than this are not repeated in an error description.
MAX_SHOWN_SCOPE_LENGTH = 64


def _active_user(dbsession, user_id: int | None) -> User | None:
    if user_id is None:
        return None
    user = dbsession.get(User, user_id)
    return user if user is not None and user.status == "active" else None


def _check_scope_allowed(requested: str | None, client) -> None:
    """Raise ``invalid_scope`` when a requested scope is not registered for the client.

    The description names the unregistered scopes only when each is short and
    made of the characters RFC 6749 allows in ``error_description``. Authlib
    raises ValueError on any other character, which would turn a client's
    typo into a server error.
    """
    allowed = set(scope_to_list(client.scope) or [])
    extra = [name for name in scope_to_list(requested) or [] if name not in allowed]
    if not extra:
        return
    if all(len(name) <= MAX_SHOWN_SCOPE_LENGTH and DESCRIPTION_SAFE.match(name)
           for name in extra):
        raise InvalidScopeError(
            "The application is not registered for the scope " + ", ".join(sorted(extra))
            + ".")
    raise InvalidScopeError(
        "The scope parameter names a scope the application is not registered for. "
        "Scopes are space-separated names such as users:read.")


class UnsupportedTokenTypeHint(OAuth2Error):
    """``unsupported_token_type`` with status 400, for an unknown ``token_type_hint``."""

    error = "unsupported_token_type"
    description = "token_type_hint must be access_token or refresh_token."
    status_code = 400


def _check_token_params(endpoint, request) -> None:
    """Check the form of a revocation or introspection request (RFC 7009, RFC 7662).

    Authlib's own check returns status 401 for an unknown ``token_type_hint``,
    which tells the client its credentials failed. RFC 6749 section 5.2 uses
    400 for every error but ``invalid_client``.
    """
    if not request.form.get("token"):
        raise InvalidRequestError("Missing token: send it in the form field 'token'.")
    hint = request.form.get("token_type_hint")
    if hint and hint not in endpoint.SUPPORTED_TOKEN_TYPES:
        raise UnsupportedTokenTypeHint()


class S256CodeChallenge(CodeChallenge):
    """PKCE that accepts S256 only and requires it from public clients.

    Authlib's extension accepts ``plain`` and treats a missing
    ``code_challenge_method`` as ``plain``; here both are refused.
    """

    DEFAULT_CODE_CHALLENGE_METHOD = "S256"
    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]
    CODE_CHALLENGE_METHODS = {"S256": compare_s256_code_challenge}

    def validate_code_challenge(self, grant, redirect_uri):
        data = grant.request.payload.data
        challenge = data.get("code_challenge")
        method = data.get("code_challenge_method")
        if not challenge and not method:
            if grant.request.client.is_public:
                raise InvalidRequestError(
                    "PKCE is required for public clients: send code_challenge "
                    "with code_challenge_method=S256.")
            return
        if method != "S256":
            raise InvalidRequestError(
                "code_challenge_method must be S256; plain and a missing method are refused.")
        super().validate_code_challenge(grant, redirect_uri)

    def validate_code_verifier(self, grant, result):
        """Check the token request's ``code_verifier``, and burn the code when the check fails.

        Every failure is ``invalid_grant``: a verifier for a code issued without
        a challenge, a missing verifier for a code issued with one, and a
        verifier that does not hash to the challenge. The code cannot be
        retried after a failure, so a stolen code gives one guess at most.
        """
        request = grant.request
        code = request.authorization_code
        try:
            self._check_verifier(code, request.form.get("code_verifier"),
                                 public=request.client.is_public)
        except InvalidGrantError:
            grant.burn_code(code)
            raise

    @staticmethod
    def _check_verifier(code, verifier, *, public: bool) -> None:
        challenge = code.code_challenge
        if not challenge:
            if public:
                raise InvalidGrantError("The code was issued without PKCE.")
            if verifier:
                raise InvalidGrantError(
                    "The authorization request had no code_challenge, so the token "
                    "request must not send code_verifier.")
            return
        if code.code_challenge_method != "S256":
            raise InvalidGrantError("The code was issued with an unsupported PKCE method.")
        if not verifier:
            raise InvalidGrantError(
                "Missing code_verifier: the authorization request sent a code_challenge.")
        if not CODE_VERIFIER_PATTERN.match(verifier) \
                or not compare_s256_code_challenge(verifier, challenge):
            raise InvalidGrantError(
                "The code_verifier does not match the code_challenge (S256).")


class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = list(TOKEN_AUTH_METHODS)

    @staticmethod
    def validate_authorization_redirect_uri(request, client):
        """Accept only a registered redirect URI, compared character for character."""
        redirect_uri = request.payload.redirect_uri
        if redirect_uri:
            if redirect_uri not in client.redirect_uris:
                raise InvalidRequestError(
                    "The redirect_uri is not one the application registered.")
            return redirect_uri
        if len(client.redirect_uris) == 1:
            return client.redirect_uris[0]
        if not client.redirect_uris:
            raise InvalidRequestError(
                "The application registered no redirect URI, so it cannot use the "
                "authorization endpoint.")
        raise InvalidRequestError("Missing redirect_uri: the application registered several.")

    def validate_requested_scope(self):
        _check_scope_allowed(self.request.payload.scope, self.request.client)

    def validate_authorization_request(self):
        redirect_uri = super().validate_authorization_request()
        if not self.request.payload.scope:
            # Without a scope parameter the application asks for all it registered.
            self.request.scope = self.request.client.scope
        return redirect_uri

    def save_authorization_code(self, code, request):
        payload = request.payload
        row = OAuthAuthorizationCode(
            code=digest(code),
            client_id=request.client.client_id,
            redirect_uri=payload.redirect_uri or "",
            response_type=payload.response_type,
            scope=request.scope or "",
            user_id=request.user.id,
            code_challenge=payload.data.get("code_challenge"),
            code_challenge_method=payload.data.get("code_challenge_method"),
            auth_time=int(time.time()),
            family_id=secrets.token_hex(16),
        )
        self.server.dbsession.add(row)
        return row

    def query_authorization_code(self, code, client):
        if not isinstance(code, str) or len(code) > MAX_TOKEN_LENGTH:
            return None
        row = self.server.dbsession.scalar(
            sa.select(OAuthAuthorizationCode)
            .where(OAuthAuthorizationCode.code == digest(code),
                   OAuthAuthorizationCode.client_id == client.client_id))
        if row is None:
            return None
        if row.used_at is not None:
            self._reject_reuse(row)
        if row.auth_time + CODE_TTL_SECONDS <= time.time():
            return None
        return row

    def _reject_reuse(self, row):
        revoke_family(self.server.dbsession, row.family_id, "authorization code reused")
        forget_cached_tokens(self.server.request)
        raise InvalidGrantError(
            "The code was already used; the tokens issued from it are now revoked.")

    def burn_code(self, row) -> bool:
        """Mark the code used; return False when another request marked it first.

        The conditional update lets exactly one of two concurrent requests through.
        """
        claimed = self.server.dbsession.execute(
            sa.update(OAuthAuthorizationCode)
            .where(OAuthAuthorizationCode.id == row.id,
                   OAuthAuthorizationCode.used_at.is_(None))
            .values(used_at=utcnow())
            .execution_options(synchronize_session=False)
        ).rowcount
        return claimed == 1

    def create_token_response(self):
        row = self.request.authorization_code
        if not self.burn_code(row):
            self._reject_reuse(row)
        self.server.family_id = row.family_id
        return super().create_token_response()

    def delete_authorization_code(self, authorization_code):
        # The row stays, marked used, so that a second exchange is recognized.
        return None

    def authenticate_user(self, authorization_code):
        return _active_user(self.server.dbsession, authorization_code.user_id)


class RefreshTokenGrant(grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = list(TOKEN_AUTH_METHODS)
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token):
        unusable = InvalidGrantError(
            "The refresh token is unknown, expired or revoked, or was issued to another "
            "application.")
        if len(refresh_token) > MAX_TOKEN_LENGTH:
            raise unusable
        dbsession = self.server.dbsession
        row = dbsession.scalar(sa.select(OAuthToken)
                               .where(OAuthToken.refresh_token == digest(refresh_token)))
        if row is None or row.client_id != self.request.client.client_id:
            raise unusable
        if row.rotated_at is not None:
            self._reject_reuse(row)
        if not token_row_is_active(dbsession, row, kind="refresh"):
            raise unusable
        return row

    def _validate_token_scope(self, token):
        # Authlib's check, with a description: the scope may only keep or narrow.
        try:
            super()._validate_token_scope(token)
        except InvalidScopeError:
            raise InvalidScopeError(
                "A refresh may keep or narrow the scope the user granted, never widen it; "
                f"the granted scope is: {token.scope}.") from None

    def _reject_reuse(self, row):
        revoke_family(self.server.dbsession, row.family_id, "refresh token reused")
        forget_cached_tokens(self.server.request)
        raise InvalidGrantError(
            "The refresh token was already used; every token of this authorization "
            "is now revoked.")

    def create_token_response(self):
        row = self.request.refresh_token
        claimed = self.server.dbsession.execute(
            sa.update(OAuthToken)
            .where(OAuthToken.id == row.id, OAuthToken.rotated_at.is_(None))
            .values(rotated_at=utcnow())
            .execution_options(synchronize_session=False)
        ).rowcount
        if claimed != 1:
            self._reject_reuse(row)
        self.server.family_id = row.family_id
        return super().create_token_response()

    def authenticate_user(self, refresh_token):
        return _active_user(self.server.dbsession, refresh_token.user_id)

    def revoke_old_credential(self, refresh_token):
        # Already marked rotated when the refresh was claimed; its access token
        # stays valid until it expires.
        return None


class ClientCredentialsGrant(grants.ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

    def validate_token_request(self):
        super().validate_token_request()
        client = self.request.client
        if client.is_public:
            raise UnauthorizedClientError(
                "Public clients cannot use the client_credentials grant.")
        _check_scope_allowed(self.request.payload.scope, client)
        self.granted_scope = self.request.payload.scope or client.scope

    def create_token_response(self):
        token = self.generate_token(scope=self.granted_scope, include_refresh_token=False)
        self.save_token(token)
        return 200, token, self.TOKEN_RESPONSE_HEADER


# Revocation and introspection ------------------------------------------------------


@dataclasses.dataclass
class FoundToken:
    """A token presented to the revocation or introspection endpoint."""

    row: OAuthToken
    kind: str  # access or refresh
    claims: dict | None = None

    def check_client(self, client) -> bool:
        return self.row.client_id == client.client_id


def find_token(server, value, hint: str | None) -> FoundToken | None:
    """Find the stored token for an access token (a JWT) or a refresh token."""
    if not isinstance(value, str) or not value or len(value) > MAX_TOKEN_LENGTH:
        return None
    kinds = ("refresh", "access") if hint == "refresh_token" else ("access", "refresh")
    for kind in kinds:
        found = _find_access(server, value) if kind == "access" \
            else _find_refresh(server, value)
        if found is not None:
            return found
    return None


def _find_access(server, value: str) -> FoundToken | None:
    try:
        claims = read_access_token(server.request.registry["token_signer"], value)
    except InvalidToken:
        return None
    row = server.dbsession.scalar(sa.select(OAuthToken)
                                  .where(OAuthToken.access_token == claims["jti"]))
    if row is None or row.client_id != claims["client_id"]:
        return None
    return FoundToken(row, "access", claims)


def _find_refresh(server, value: str) -> FoundToken | None:
    row = server.dbsession.scalar(sa.select(OAuthToken)
                                  .where(OAuthToken.refresh_token == digest(value)))
    return FoundToken(row, "refresh") if row is not None else None


class TokenRevocationEndpoint(RevocationEndpoint):
    CLIENT_AUTH_METHODS = list(TOKEN_AUTH_METHODS)

    def check_params(self, request, client):
        _check_token_params(self, request)

    def query_token(self, token_string, token_type_hint):
        return find_token(self.server, token_string, token_type_hint)

    def revoke_token(self, token, request):
        if token.kind == "refresh":
            # A refresh token stands for the whole authorization.
            revoke_family(self.server.dbsession, token.row.family_id, "refresh token revoked")
        elif not token.row.access_token_revoked_at:
            token.row.access_token_revoked_at = int(time.time())
        forget_cached_tokens(self.server.request)
        log.info("oauth token revoked", extra={"client_id": token.row.client_id,
                                               "kind": token.kind})


class TokenIntrospectionEndpoint(IntrospectionEndpoint):
    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

    def check_params(self, request, client):
        _check_token_params(self, request)

    def query_token(self, token_string, token_type_hint):
        return find_token(self.server, token_string, token_type_hint)

    def check_permission(self, token, client, request):
        # An application may introspect only the tokens issued to it.
        return token.check_client(client)

    def create_introspection_payload(self, token):
        if token is None or not token_row_is_active(self.server.dbsession, token.row,
                                                    kind=token.kind):
            return {"active": False}
        return self.introspect_token(token)

    def introspect_token(self, token):
        row = token.row
        if token.kind == "access":
            claims = token.claims
            return {
                "active": True, "token_type": "Bearer", "client_id": row.client_id,
                "scope": row.scope or "", "sub": claims["sub"], "aud": claims["aud"],
                "iss": claims["iss"], "iat": claims["iat"], "exp": claims["exp"],
                "jti": claims["jti"], "partner_id": claims.get("partner_id"),
                "livemode": bool(row.livemode),
            }
        return {
            "active": True, "token_type": "refresh_token", "client_id": row.client_id,
            "scope": row.scope or "",
            "sub": f"user_{row.user_id}" if row.user_id is not None else row.client_id,
            "iat": row.issued_at, "exp": row.issued_at + REFRESH_TOKEN_TTL_SECONDS,
            "livemode": bool(row.livemode),
        }


def make_server(request) -> OAuthServer:
    """Build the authorization server for one Pyramid request."""
    server = OAuthServer(request)
    server.register_grant(AuthorizationCodeGrant, [S256CodeChallenge(required=True)])
    server.register_grant(RefreshTokenGrant)
    server.register_grant(ClientCredentialsGrant)
    server.register_endpoint(TokenRevocationEndpoint)
    server.register_endpoint(TokenIntrospectionEndpoint)
    return server
