"""Authlib's authorization server on Pyramid, with the platform's clients and tokens.

One :class:`OAuthServer` is built per Pyramid request: Authlib calls
``query_client`` and ``save_token`` without a request, and the server needs
the request's database session for both.

Access tokens are ES256 JWTs signed by the application's ``TokenSigner``
with the audience :data:`ACCESS_TOKEN_AUDIENCE`; only their ``jti`` is
stored. Refresh tokens are 256-bit random strings stored as their digest.
Every pair issued from one authorization shares a ``family_id``.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import time
from collections import defaultdict

import sqlalchemy as sa
from authlib.common.encoding import json_dumps
from authlib.oauth2.rfc6749 import (
    AuthorizationServer,
    OAuth2Error,
    OAuth2Payload,
    OAuth2Request,
    UnauthorizedClientError,
    UnsupportedGrantTypeError,
)
from pyramid.response import Response

from fkod.core.auth.models import Partner, User
from fkod.core.auth.oauth_models import OAuthClient, OAuthConsent, OAuthToken, digest
from fkod.core.auth.security import BLOCKED_PARTNER_STATUSES
from fkod.core.auth.tokens import InvalidToken

log = logging.getLogger(__name__)

# The ``aud`` claim of OAuth access tokens: they work on the gateway only.
ACCESS_TOKEN_AUDIENCE = "fkod-api"  # noqa: S105 - an audience name, not a secret
# Lifetime of an OAuth access token, in seconds.
ACCESS_TOKEN_TTL_SECONDS = 3600
# Lifetime of a refresh token, in seconds; each refresh issues a new one.
REFRESH_TOKEN_TTL_SECONDS = 30 * 24 * 3600
GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials")
TOKEN_AUTH_METHODS = ("client_secret_basic", "client_secret_post", "none")


class PyramidPayload(OAuth2Payload):
    """The parameters of one request: the query string or the form body."""

    def __init__(self, params):
        self._params = params

    @property
    def data(self):
        # Authlib reads single values; a repeated parameter keeps its first value
        # here and is refused where Authlib checks ``datalist``.
        return {key: self._params.getall(key)[0] for key in self._params}

    @property
    def datalist(self):
        values = defaultdict(list)
        for key, value in self._params.items():
            values[key].append(value)
        return values


class PyramidOAuth2Request(OAuth2Request):
    """Authlib's view of a Pyramid request.

    The authorization endpoint reads the query string; the token, revocation
    and introspection endpoints read the form body only.
    """

    def __init__(self, request, *, use_query: bool):
        super().__init__(method=request.method, uri=request.url, headers=request.headers)
        self.pyramid_request = request
        self._params = request.GET if use_query else request.POST
        self.payload = PyramidPayload(self._params)
        self._form = self.payload.data

    @property
    def args(self):
        return self.pyramid_request.GET

    @property
    def form(self):
        return self._form


@dataclasses.dataclass
class IssuedToken:
    """The token pair ``generate_token`` made, for ``save_token`` to store."""

    jti: str
    refresh_token: str | None
    scope: str
    user_id: int | None
    livemode: bool


class OAuthServer(AuthorizationServer):
    """The authorization server for one Pyramid request."""

    def __init__(self, request):
        super().__init__(scopes_supported=[
            scope.name for scope in request.registry["scope_catalog"].grantable()])
        self.request = request
        self.dbsession = request.dbsession
        # Set by a grant before it issues, so the new pair joins the family.
        self.family_id: str | None = None
        self.issued: IssuedToken | None = None
        self._clients: dict[str, OAuthClient | None] = {}
        self.register_token_generator("default", self._generate)

    # Authlib's framework hooks ----------------------------------------------------

    def create_oauth2_request(self, request) -> OAuth2Request:
        if isinstance(request, OAuth2Request):
            return request
        return PyramidOAuth2Request(request, use_query=request.method == "GET")

    def create_json_request(self, request):
        raise NotImplementedError("no endpoint of this server reads JSON")

    def handle_response(self, status, body, headers):
        response = Response(status=status)
        if isinstance(body, dict):
            response.content_type = "application/json"
            response.charset = "utf-8"
            response.text = json_dumps(body)
        elif body:
            response.text = str(body)
        for name, value in headers:
            if name.lower() == "content-type":
                continue
            response.headers[name] = value
        if status >= 400 or isinstance(body, dict):
            response.headers["Cache-Control"] = "no-store"
        return response

    def send_signal(self, name, *args, **kwargs):
        if name == "after_authenticate_client":
            check_client_can_issue(self.dbsession, kwargs["client"])

    # Clients ----------------------------------------------------------------------

    def query_client(self, client_id):
        """Return the active client with this id whose partner may act, or None."""
        if not isinstance(client_id, str) or not client_id or len(client_id) > 48:
            return None
        if client_id not in self._clients:
            self._clients[client_id] = find_usable_client(self.dbsession, client_id)
        return self._clients[client_id]

    def get_token_grant(self, request):
        """Find the grant for ``grant_type``, and describe the error for an unknown one."""
        try:
            return super().get_token_grant(request)
        except UnsupportedGrantTypeError as error:
            # The description leaves the value out: Authlib refuses some characters in it.
            error.description = ("The grant_type is not supported; send authorization_code, "
                                 "refresh_token or client_credentials.")
            raise

    def validate_requested_scope(self, scope):
        # Each grant checks the scope against the client's own registered scopes.
        return None

    # Tokens -----------------------------------------------------------------------

    def _generate(self, grant_type, client, user=None, scope=None, expires_in=None,
                  include_refresh_token=True):
        jti = secrets.token_urlsafe(16)
        claims = {
            "sub": f"user_{user.id}" if user is not None else client.client_id,
            "client_id": client.client_id,
            "scope": scope or "",
            "partner_id": f"partner_{client.partner_id}",
            "livemode": bool(client.livemode),
            "jti": jti,
        }
        signer = self.request.registry["token_signer"]
        access_token, ttl = signer.issue(claims, audience=ACCESS_TOKEN_AUDIENCE,
                                         ttl_seconds=ACCESS_TOKEN_TTL_SECONDS)
        token = {"token_type": "Bearer", "access_token": access_token, "expires_in": ttl,
                 "scope": scope or ""}
        refresh_token = None
        if include_refresh_token and user is not None:
            refresh_token = secrets.token_urlsafe(32)
            token["refresh_token"] = refresh_token
        self.issued = IssuedToken(jti=jti, refresh_token=refresh_token, scope=scope or "",
                                  user_id=user.id if user is not None else None,
                                  livemode=bool(client.livemode))
        return token

    def save_token(self, token, request):
        issued = self.issued
        row = OAuthToken(
            client_id=request.client.client_id,
            token_type="Bearer",  # noqa: S106 - a token type name, not a secret
            access_token=issued.jti,
            refresh_token=digest(issued.refresh_token) if issued.refresh_token else None,
            scope=issued.scope,
            issued_at=int(time.time()),
            expires_in=token["expires_in"],
            user_id=issued.user_id,
            family_id=self.family_id or secrets.token_hex(16),
            livemode=issued.livemode,
        )
        self.dbsession.add(row)
        self.dbsession.flush()
        log.info("oauth token issued", extra={
            "client_id": row.client_id, "user_id": row.user_id, "family_id": row.family_id})
        return row


def find_usable_client(dbsession, client_id: str) -> OAuthClient | None:
    """Return the active client with ``client_id`` if its partner is not suspended or deleted."""
    row = dbsession.execute(
        sa.select(OAuthClient, Partner)
        .join(Partner, Partner.id == OAuthClient.partner_id)
        .where(OAuthClient.client_id == client_id)
    ).one_or_none()
    if row is None:
        return None
    client, partner = row
    if client.status != "active" or client.deleted_at is not None:
        return None
    if partner.status in BLOCKED_PARTNER_STATUSES or partner.deleted_at is not None:
        return None
    return client


def check_client_can_issue(dbsession, client: OAuthClient) -> None:
    """Refuse a live-mode client whose partner is not verified."""
    if not client.livemode:
        return
    verified = dbsession.scalar(sa.select(Partner.verification_status)
                                .where(Partner.id == client.partner_id)) == "verified"
    if not verified:
        raise UnauthorizedClientError(
            "This is a live-mode application and its partner is not verified yet; "
            "use a test-mode application until the partner is verified.")


def forget_cached_tokens(request) -> None:
    """Drop this process's cached access tokens now and once the revocation commits.

    The gateway caches stored tokens per ``jti`` (see fkod.core.gateway), so
    without this a token revoked here would keep working in this process until
    its cache entry expired. Other processes still see a revocation within
    ``fkod.gateway.key_cache_seconds``. Revocations are rare, so clearing the
    whole cache costs little.
    """
    cache = request.registry.get("oauth_token_cache")
    if cache is None:
        return
    cache.clear()
    request.tm.get().addAfterCommitHook(lambda _committed: cache.clear())


def revoke_family(dbsession, family_id: str | None, reason: str) -> int:
    """Revoke every access and refresh token of one family; return how many rows changed."""
    if not family_id:
        return 0
    now = int(time.time())
    result = dbsession.execute(
        sa.update(OAuthToken)
        .where(OAuthToken.family_id == family_id)
        .values(access_token_revoked_at=sa.case(
                    (OAuthToken.access_token_revoked_at == 0, now),
                    else_=OAuthToken.access_token_revoked_at),
                refresh_token_revoked_at=sa.case(
                    (OAuthToken.refresh_token_revoked_at == 0, now),
                    else_=OAuthToken.refresh_token_revoked_at))
        .execution_options(synchronize_session=False)
    )
    log.warning("oauth token family revoked", extra={"family_id": family_id, "reason": reason,
                                                     "tokens": result.rowcount})
    return result.rowcount


def token_row_is_active(dbsession, row: OAuthToken, *, kind: str) -> bool:
    """Tell whether a stored token still grants access.

    ``kind`` is ``access`` or ``refresh``. A token stops being active when it
    is revoked or expired, when its client is deleted or its partner blocked,
    when its user is no longer active, or when the user withdrew consent.
    """
    now = time.time()
    if kind == "access":
        if row.access_token_revoked_at or row.issued_at + row.expires_in <= now:
            return False
    else:
        if row.refresh_token is None or row.refresh_token_revoked_at or row.rotated_at \
                or row.issued_at + REFRESH_TOKEN_TTL_SECONDS <= now:
            return False
    client = find_usable_client(dbsession, row.client_id)
    if client is None:
        return False
    if row.user_id is None:
        return True
    user = dbsession.get(User, row.user_id)
    if user is None or user.status != "active":
        return False
    consent = dbsession.scalar(
        sa.select(OAuthConsent)
        .where(OAuthConsent.user_id == row.user_id, OAuthConsent.oauth_client_id == client.id))
    return consent is not None and consent.revoked_at is None


def read_access_token(signer, token: str) -> dict:
    """Check an OAuth access token's signature, audience and expiry; return its claims."""
    claims = signer.verify(token, audience=ACCESS_TOKEN_AUDIENCE)
    for name in ("jti", "client_id"):
        value = claims.get(name)
        if not isinstance(value, str) or not 0 < len(value) <= 64:
            raise InvalidToken(f"missing claim {name}")
    return claims


def verify_access_token(registry, token: str, dbsession=None) -> dict:
    """Return the claims of a valid, unrevoked OAuth access token, or raise ``InvalidToken``.

    The claims are ``sub`` (``user_<n>``, or the client id for client
    credentials), ``client_id``, ``scope`` (space-separated), ``partner_id``,
    ``livemode``, ``jti``, ``iat``, ``exp``, ``iss`` and ``aud``. Besides the
    signature and expiry it checks that the ``jti`` is stored and not
    revoked, that the client and its partner may still act, that the user
    is active and still consents, and that a live-mode token's partner is
    verified. ``dbsession`` is used when given; otherwise a short session
    of its own is opened.
    """
    claims = read_access_token(registry["token_signer"], token)
    own_session = dbsession is None
    if own_session:
        dbsession = registry["db.session_factory"]()
    try:
        row = dbsession.scalar(sa.select(OAuthToken)
                               .where(OAuthToken.access_token == claims["jti"]))
        if row is None or row.client_id != claims["client_id"]:
            raise InvalidToken("unknown token")
        if not token_row_is_active(dbsession, row, kind="access"):
            raise InvalidToken("the token was revoked or no longer grants access")
        client = find_usable_client(dbsession, row.client_id)
        if client is None:
            raise InvalidToken("the application was deleted or its partner is blocked")
        if row.livemode:
            try:
                check_client_can_issue(dbsession, client)
            except OAuth2Error:
                raise InvalidToken("the partner is not verified for live mode") from None
        # A token grants only the scopes its application may still request, so
        # narrowing an application's scopes narrows the tokens it holds at once.
        allowed = set(client.scope.split())
        granted = [scope for scope in str(claims.get("scope", "")).split() if scope in allowed]
        return {**claims, "scope": " ".join(granted)}
    finally:
        if own_session:
            dbsession.close()
