"""Login and the public signing keys; the other account operations are in account_views."""

from __future__ import annotations

import logging

from cornice import Service
from marshmallow import fields, validate

from fkod.core.api import AUTH_NONE, operation
from fkod.core.auth import accounts, totp
from fkod.core.auth.passwords import MAX_LENGTH
from fkod.core.errors import ApiError, api_error_view
from fkod.core.schemas import BodySchema, PublicId, ResponseSchema, Text

log = logging.getLogger(__name__)

login = Service(name="auth_login", path="/api/auth/login", description="Log in")
jwks = Service(name="jwks", path="/.well-known/jwks.json",
               description="Public keys that verify access tokens")

# How often expired revoked-token rows and mailed tokens are deleted, in seconds.
PURGE_INTERVAL_SECONDS = 3600


class LoginBody(BodySchema):
    email = Text(required=True, max_length=255)
    password = Text(required=True, strip=False, max_length=MAX_LENGTH)
    partner_id = PublicId("partner", metadata={
        "description": "The partner to act for, when the user belongs to several."})
    totp_code = Text(validate=validate.Regexp(
        totp.CODE_PATTERN, error="Must be the 6-digit code from the authenticator app."),
        metadata={"description": "Required when the account has two-factor authentication on."})


class LoginResponse(ResponseSchema):
    access_token = fields.String()
    token_type = fields.String()
    expires_in = fields.Integer()
    user_id = fields.String()
    partner_id = fields.String(allow_none=True)
    role = fields.String(allow_none=True)


class JwksResponse(ResponseSchema):
    keys = fields.List(fields.Dict())


@operation(login, "POST", summary="Exchange email and password for an access token",
           auth=AUTH_NONE, body=LoginBody, response=LoginResponse, no_store=True,
           errors=((401, "invalid_credentials"), (401, "totp_required"), (401, "not_a_member"),
                   (429, "too_many_failed_logins")))
def post_login(request):
    data = request.validated
    result = accounts.log_in(request, email=data["email"], password=data["password"],
                             totp_code=data.get("totp_code"), partner_id=data.get("partner_id"))
    if isinstance(result, ApiError):
        # Returned rather than raised, so the transaction commits the audit entry.
        return api_error_view(result, request)
    return result


@operation(jwks, "GET", summary="The JSON Web Key Set that verifies access tokens",
           auth=AUTH_NONE, response=JwksResponse)
def get_jwks(request):
    return request.registry["token_signer"].jwks()


def includeme(config):
    from fkod.core.auth.apikeys import KeyHasher
    from fkod.core.auth.passwords import PasswordHasher
    from fkod.core.auth.scopes import ScopeCatalog
    from fkod.core.auth.tokens import TokenSigner, load_signing_key, token_issuer

    settings = config.get_settings()
    registry = config.registry
    registry["token_signer"] = TokenSigner(
        load_signing_key(settings), issuer=token_issuer(settings),
        ttl_seconds=settings["fkod.auth.access_token_ttl_seconds"],
    )
    registry["key_hasher"] = KeyHasher(settings["fkod.secrets.api_key_pepper"])
    registry["password_hasher"] = PasswordHasher.from_settings(settings)
    registry["scope_catalog"] = ScopeCatalog()
    config.include("fkod.core.clientaddr")
    config.include("fkod.core.auth.security")
    config.add_cornice_service(login)
    config.add_cornice_service(jwks)
    config.include("fkod.core.auth.account_views")

    def purge():
        accounts.purge_expired_tokens(registry["db.session_factory"])

    registry["tasks"].every("purge_expired_tokens", PURGE_INTERVAL_SECONDS,
                            registry["leader_lock"].wrap("purge_expired_tokens", purge))
