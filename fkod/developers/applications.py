"""A partner's developer applications: OAuth clients users can authorize.

An application is an Authlib client row. Its registered metadata (name,
redirect URIs, allowed scopes, grant types, links, CORS origins) lives in
``client_metadata``. A confidential application gets a secret, shown once at
creation or rotation and stored as its SHA-256 digest. A public application
has no secret, so it authenticates at the token endpoint with PKCE only.

Authlib checks one token endpoint authentication method per client, so a
confidential application uses ``client_secret_basic`` (HTTP Basic) and a
public one ``none``.

Deleting an application keeps the row for audit and usage history, revokes
every token it holds and every user's authorization of it.
"""

from __future__ import annotations

import logging
import secrets
import time

import sqlalchemy as sa

from fkod.core import audit
from fkod.core.auth.authorization_views import revoke_tokens
from fkod.core.auth.models import Partner
from fkod.core.auth.oauth_models import OAuthClient, OAuthConsent, digest
from fkod.core.db import utcnow
from fkod.core.errors import Conflict, NotFound, ValidationFailed, field_error
from fkod.core.ids import public_id
from fkod.core.oauth.server import forget_cached_tokens
from fkod.developers.schemas import GRANT_TYPES
from fkod.marketplace.models import Integration
from fkod.partners.api_keys import check_scopes

log = logging.getLogger(__name__)

CLIENT_ID_PREFIX = "fkod_app_"
SECRET_PREFIX = "fkod_secret_"  # noqa: S105 - a prefix, not a secret
LINK_FIELDS = ("logo_uri", "client_uri", "policy_uri", "tos_uri")
# Fields stored in client_metadata, by their name in the API.
METADATA_FIELDS = ("name", "redirect_uris", "scopes", "grant_types", "allowed_origins",
                   *LINK_FIELDS)


def new_client_id() -> str:
    """Return a client id: the prefix and 24 random URL-safe characters (144 bits)."""
    return CLIENT_ID_PREFIX + secrets.token_urlsafe(18)


def new_client_secret() -> str:
    """Return a client secret: the prefix and 43 random URL-safe characters (256 bits)."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def app_ref(application: OAuthClient) -> str:
    return public_id("app", application.id)


def _integration_ref(integration_id: int | None) -> str | None:
    return None if integration_id is None else public_id("int", integration_id)


# Reading ------------------------------------------------------------------------------


def fields_of(application: OAuthClient) -> dict:
    """Return the settable fields of an application as the API names them."""
    metadata = application.client_metadata
    result = {
        "name": metadata.get("client_name"),
        "redirect_uris": list(metadata.get("redirect_uris", [])),
        "scopes": (metadata.get("scope") or "").split(),
        "grant_types": list(metadata.get("grant_types", [])),
        "allowed_origins": list(metadata.get("allowed_origins", [])),
        "integration_id": application.integration_id,
    }
    for name in LINK_FIELDS:
        result[name] = metadata.get(name)
    return result


def describe(application: OAuthClient, authorized_users: int) -> dict:
    """Return what the API shows of an application, which never includes its secret or digest."""
    settable = fields_of(application)
    return {
        "id": application.id,
        "client_id": application.client_id,
        "name": settable["name"],
        "client_type": application.client_type,
        "mode": "live" if application.livemode else "test",
        "redirect_uris": settable["redirect_uris"],
        "scopes": settable["scopes"],
        "grant_types": settable["grant_types"],
        "allowed_origins": settable["allowed_origins"],
        "token_endpoint_auth_method": application.token_endpoint_auth_method,
        "links": {name: settable[name] for name in LINK_FIELDS},
        "integration_id": application.integration_id,
        "authorized_users": authorized_users,
        "secret_rotated_at": application.secret_rotated_at,
        "created_at": application.created_at,
        "updated_at": application.updated_at,
    }


def authorized_user_counts(session, application_ids: list[int]) -> dict[int, int]:
    """Count the unrevoked authorizations of each application."""
    if not application_ids:
        return {}
    rows = session.execute(
        sa.select(OAuthConsent.oauth_client_id, sa.func.count())
        .where(OAuthConsent.oauth_client_id.in_(application_ids),
               OAuthConsent.revoked_at.is_(None))
        .group_by(OAuthConsent.oauth_client_id))
    return {client_id: count for client_id, count in rows}


def describe_many(session, applications) -> list[dict]:
    counts = authorized_user_counts(session, [application.id for application in applications])
    return [describe(application, counts.get(application.id, 0))
            for application in applications]


def describe_one(session, application: OAuthClient) -> dict:
    return describe_many(session, [application])[0]


def applications_query(partner: Partner, mode: str | None = None):
    """Select the partner's applications that are not deleted, optionally of one mode."""
    query = sa.select(OAuthClient).where(OAuthClient.partner_id == partner.id,
                                         OAuthClient.status == "active")
    if mode is not None:
        query = query.where(OAuthClient.livemode.is_(mode == "live"))
    return query


def get_application(request, application_id: int, *, for_update: bool = False) -> OAuthClient:
    """Return an application of the caller's partner, or raise a 404 for any other id."""
    query = applications_query(request.partner).where(OAuthClient.id == application_id)
    if for_update:
        query = query.with_for_update()
    application = request.dbsession.scalar(query)
    if application is None:
        raise NotFound(f"Application {public_id('app', application_id)} not found.")
    return application


# Checks -------------------------------------------------------------------------------


def _invalid(name: str, description: str, message: str) -> ValidationFailed:
    return ValidationFailed(message, errors=[field_error("body", name, description)])


def check_integration(request, partner: Partner, integration_id: int | None) -> int | None:
    """Return ``integration_id`` if it is one of the partner's integrations (or None).

    Another partner's integration and an unknown id get the same 400.
    """
    if integration_id is None:
        return None
    found = request.dbsession.scalar(
        sa.select(Integration.id).where(Integration.id == integration_id,
                                        Integration.partner_id == partner.id)
        .with_for_update(read=True))
    if found is None:
        raise _invalid(
            "integration_id", "not one of the partner's integrations",
            f"{public_id('int', integration_id)} is not one of the partner's integrations. "
            "Link the application to an integration of this partner, or send null for none.")
    return found


def check_combination(client_type: str, settable: dict) -> None:
    """Check the rules that tie fields together, on the fields as they will be stored."""
    grant_types = settable["grant_types"]
    if client_type == "public" and "client_credentials" in grant_types:
        raise _invalid(
            "grant_types", "client_credentials needs a confidential application",
            "A public application has no secret, so it cannot use client_credentials.")
    if "refresh_token" in grant_types and "authorization_code" not in grant_types:
        raise _invalid(
            "grant_types", "refresh_token needs authorization_code",
            "Refresh tokens are issued only with authorization_code. Add it or remove "
            "refresh_token.")
    if "authorization_code" in grant_types and not settable["redirect_uris"]:
        raise _invalid(
            "redirect_uris", "at least one is needed for authorization_code",
            "Register at least one redirect URI for the authorization_code grant.")
    if client_type == "confidential" and settable["allowed_origins"]:
        raise _invalid(
            "allowed_origins", "only public applications call from browsers",
            "Only public applications can list allowed_origins, because a confidential "
            "application keeps its secret on a server and makes no browser calls.")


def _in_order(grant_types: list[str]) -> list[str]:
    return [grant for grant in GRANT_TYPES if grant in grant_types]


def _metadata(settable: dict, client_type: str) -> dict:
    grant_types = _in_order(settable["grant_types"])
    metadata = {
        "client_name": settable["name"],
        "redirect_uris": settable["redirect_uris"],
        "scope": " ".join(settable["scopes"]),
        "grant_types": grant_types,
        "response_types": ["code"] if "authorization_code" in grant_types else [],
        "token_endpoint_auth_method":
            "none" if client_type == "public" else "client_secret_basic",
        "allowed_origins": settable["allowed_origins"],
    }
    for name in LINK_FIELDS:
        if settable.get(name) is not None:
            metadata[name] = settable[name]
    return metadata


# Writing ------------------------------------------------------------------------------


def create_application(request, partner: Partner,
                       data: dict) -> tuple[OAuthClient, str | None]:
    """Create an application; return it with its secret (None for a public application)."""
    from fkod.partners.services import require_live_mode_allowed

    require_live_mode_allowed(partner, data["mode"], "applications", request.user)
    settable = {name: data.get(name) for name in METADATA_FIELDS}
    settable["scopes"] = check_scopes(request, data["scopes"])
    settable["grant_types"] = _in_order(settable["grant_types"])
    check_combination(data["client_type"], settable)
    integration_id = check_integration(request, partner, data.get("integration_id"))

    secret = new_client_secret() if data["client_type"] == "confidential" else None
    application = OAuthClient(
        partner_id=partner.id, client_id=new_client_id(),
        client_secret=digest(secret) if secret else "",
        client_id_issued_at=int(time.time()), client_secret_expires_at=0,
        client_type=data["client_type"], livemode=data["mode"] == "live", status="active",
        integration_id=integration_id, created_by_user_id=request.user.id,
    )
    application.set_client_metadata(_metadata(settable, data["client_type"]))
    request.dbsession.add(application)
    request.dbsession.flush()
    details = {"client_id": application.client_id, "name": settable["name"],
               "client_type": application.client_type,
               "mode": "live" if application.livemode else "test",
               "scopes": settable["scopes"], "grant_types": settable["grant_types"]}
    if integration_id is not None:
        details["integration_id"] = _integration_ref(integration_id)
    audit.record(request, "oauth_app.created", partner_id=partner.id, target_type="oauth_app",
                 target_id=app_ref(application), details=details)
    log.info("oauth application created", extra={
        "partner_id": partner.id, "application_id": application.id,
        "client_id": application.client_id, "user_id": request.user.id})
    return application, secret


def update_application(request, application_id: int, data: dict) -> OAuthClient:
    """Change the fields given; the others keep their values."""
    application = get_application(request, application_id, for_update=True)
    current = fields_of(application)
    if "scopes" in data:
        data["scopes"] = check_scopes(request, data["scopes"])
    if "grant_types" in data:
        data["grant_types"] = _in_order(data["grant_types"])
    if "integration_id" in data:
        data["integration_id"] = check_integration(request, request.partner,
                                                   data["integration_id"])
    updated = {**current, **data}
    check_combination(application.client_type, updated)

    changed = sorted(name for name, value in data.items() if current[name] != value)
    if not changed:
        return application
    details = {"client_id": application.client_id, "fields": changed}
    if "integration_id" in changed:
        details["integration_id"] = {"old": _integration_ref(current["integration_id"]),
                                     "new": _integration_ref(updated["integration_id"])}
    application.set_client_metadata(_metadata(updated, application.client_type))
    application.integration_id = updated["integration_id"]
    application.updated_at = utcnow()
    audit.record(request, "oauth_app.updated", partner_id=application.partner_id,
                 target_type="oauth_app", target_id=app_ref(application), details=details)
    log.info("oauth application updated", extra={
        "partner_id": application.partner_id, "application_id": application.id,
        "fields": changed, "user_id": request.user.id})
    return application


def retire_application(session, application: OAuthClient, now) -> tuple[int, int]:
    """Mark an application deleted and revoke its tokens and consents; return both counts."""
    application.status = "deleted"
    application.deleted_at = now
    application.updated_at = now
    tokens = revoke_tokens(session, application.client_id)
    consents = session.execute(
        sa.update(OAuthConsent)
        .where(OAuthConsent.oauth_client_id == application.id, OAuthConsent.revoked_at.is_(None))
        .values(revoked_at=now, updated_at=now)
        .execution_options(synchronize_session=False)).rowcount
    return tokens, consents


def delete_application(request, application_id: int) -> None:
    """Mark an application deleted and revoke its tokens and its users' authorizations."""
    application = get_application(request, application_id, for_update=True)
    tokens, consents = retire_application(request.dbsession, application, utcnow())
    forget_cached_tokens(request)
    audit.record(request, "oauth_app.deleted", partner_id=application.partner_id,
                 target_type="oauth_app", target_id=app_ref(application),
                 details={"client_id": application.client_id, "tokens_revoked": tokens,
                          "authorizations_revoked": consents})
    log.info("oauth application deleted", extra={
        "partner_id": application.partner_id, "application_id": application.id,
        "tokens_revoked": tokens, "user_id": request.user.id})


def rotate_secret(request, application_id: int) -> tuple[OAuthClient, str]:
    """Give a confidential application a new secret. The old secret stops working at once."""
    application = get_application(request, application_id, for_update=True)
    if application.client_type != "confidential":
        raise Conflict("A public application has no secret to rotate.",
                       code="public_application")
    secret = new_client_secret()
    now = utcnow()
    application.client_secret = digest(secret)
    application.secret_rotated_at = now
    application.updated_at = now
    audit.record(request, "oauth_app.secret_rotated", partner_id=application.partner_id,
                 target_type="oauth_app", target_id=app_ref(application),
                 details={"client_id": application.client_id})
    log.info("oauth application secret rotated", extra={
        "partner_id": application.partner_id, "application_id": application.id,
        "user_id": request.user.id})
    return application, secret
