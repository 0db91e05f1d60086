"""Login and the public signing keys."""

from __future__ import annotations

import logging

import sqlalchemy as sa
from cornice import Service
from marshmallow import fields

from fkod.core.api import AUTH_NONE, operation
from fkod.core.auth.models import PLATFORM_NAMESPACE, Partner, PartnerMember, User
from fkod.core.auth.passwords import MAX_LENGTH
from fkod.core.auth.roles import ROLE_PERMISSIONS
from fkod.core.errors import Unauthorized
from fkod.core.schemas import BodySchema, PublicId, ResponseSchema, Text

log = logging.getLogger(__name__)

login = Service(name="auth_login", path="/api/auth/login", description="Log in")
jwks = Service(name="jwks", path="/.well-known/jwks.json",
               description="Public keys that verify access tokens")


class LoginBody(BodySchema):
    email = Text(required=True, max_length=255)
    password = Text(required=True, strip=False, max_length=MAX_LENGTH)
    partner_id = PublicId("partner", metadata={
        "description": "The partner to act for, when the user belongs to several."})


class LoginResponse(ResponseSchema):
    access_token = fields.String()
    token_type = fields.String()
    expires_in = fields.Integer()
    user_id = fields.String()
    partner_id = fields.String(allow_none=True)
    role = fields.String(allow_none=True)


class JwksResponse(ResponseSchema):
    keys = fields.List(fields.Dict())


def _login_failed():
    # The same response whether the email is unknown or the password is wrong.
    return Unauthorized("The email or password is incorrect.", code="invalid_credentials")


@operation(login, "POST", summary="Exchange email and password for an access token",
           auth=AUTH_NONE, body=LoginBody, response=LoginResponse, no_store=True,
           errors=((401, "invalid_credentials"),))
def post_login(request):
    data = request.validated
    session = request.dbsession
    user = session.scalar(sa.select(User).where(
        User.email_namespace == PLATFORM_NAMESPACE, User.email == data["email"].lower()))
    passwords = request.registry["password_hasher"]
    if not passwords.verify(user.password_hash if user else None, data["password"]):
        raise _login_failed()
    if user.status != "active":
        raise _login_failed()
    if passwords.needs_rehash(user.password_hash):
        user.password_hash = passwords.hash(data["password"])

    membership_query = (
        sa.select(PartnerMember, Partner)
        .join(Partner, Partner.id == PartnerMember.partner_id)
        .where(PartnerMember.user_id == user.id, Partner.deleted_at.is_(None))
        .order_by(PartnerMember.id)
    )
    if "partner_id" in data:
        membership_query = membership_query.where(PartnerMember.partner_id == data["partner_id"])
    row = session.execute(membership_query.limit(1)).first()
    if "partner_id" in data and row is None:
        raise Unauthorized("The user is not a member of that partner.", code="not_a_member")

    claims = {"sub": f"user_{user.id}", "email": user.email, "scopes": []}
    if row is not None:
        member, partner = row
        claims.update(
            partner_id=f"partner_{partner.id}", role=member.role, company=partner.company_name,
            scopes=sorted(ROLE_PERMISSIONS.get(member.role, ())),
        )
    token, ttl = request.registry["token_signer"].issue(claims)
    log.info("login", extra={"user_id": user.id, "partner_id": claims.get("partner_id")})
    return {
        "access_token": token, "token_type": "Bearer", "expires_in": ttl,
        "user_id": claims["sub"], "partner_id": claims.get("partner_id"),
        "role": claims.get("role"),
    }


@operation(jwks, "GET", summary="The JSON Web Key Set that verifies access tokens",
           auth=AUTH_NONE, response=JwksResponse)
def get_jwks(request):
    return request.registry["token_signer"].jwks()


def includeme(config):
    from fkod.core.auth.apikeys import KeyHasher
    from fkod.core.auth.passwords import PasswordHasher
    from fkod.core.auth.scopes import ScopeCatalog
    from fkod.core.auth.tokens import TokenSigner, load_signing_key

    settings = config.get_settings()
    config.registry["token_signer"] = TokenSigner(
        load_signing_key(settings), issuer=settings["fkod.auth.jwt_issuer"],
        ttl_seconds=settings["fkod.auth.access_token_ttl_seconds"],
    )
    config.registry["key_hasher"] = KeyHasher(settings["fkod.secrets.api_key_pepper"])
    config.registry["password_hasher"] = PasswordHasher.from_settings(settings)
    config.registry["scope_catalog"] = ScopeCatalog()
    config.include("fkod.core.auth.security")
    config.add_cornice_service(login)
    config.add_cornice_service(jwks)
