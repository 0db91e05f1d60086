"""The applications a user authorized: ``/api/auth/me/authorizations``.

A user's authorization of an OAuth application is its consent row. Revoking
it, with ``DELETE /api/auth/me/authorizations/{client_id}``, also revokes
every access and refresh token the application holds for the user. The path
names the application by its ``client_id``, which is what the user saw when
authorizing it and what every token carries.
"""

from __future__ import annotations

import logging
import re
import time

import sqlalchemy as sa
from cornice import Service
from marshmallow import fields

from fkod.core import audit
from fkod.core.api import AUTH_USER, Page, PageQuery, operation, paginate
from fkod.core.auth.models import Partner
from fkod.core.auth.oauth_models import OAuthClient, OAuthConsent, OAuthToken
from fkod.core.db import utcnow
from fkod.core.errors import NotFound
from fkod.core.ids import public_id
from fkod.core.oauth.server import forget_cached_tokens
from fkod.core.schemas import ResponseSchema, Timestamp

log = logging.getLogger(__name__)

CLIENT_ID = re.compile(r"fkod_app_[A-Za-z0-9_-]{24}")
LINK_FIELDS = ("logo_uri", "client_uri", "policy_uri", "tos_uri")

authorizations = Service(name="auth_me_authorizations", path="/api/auth/me/authorizations",
                         description="The applications the caller authorized")
authorization = Service(name="auth_me_authorization",
                        path="/api/auth/me/authorizations/{client_id}",
                        description="One application the caller authorized")

SERVICES = (authorizations, authorization)


def revoke_tokens(session, client_id: str, user_id: int | None = None) -> int:
    """Revoke the access and refresh tokens of a client, for one user if ``user_id`` is given.

    Returns how many token rows were still usable. A revocation time already
    set is kept.
    """
    now = int(time.time())
    where = [OAuthToken.client_id == client_id]
    if user_id is not None:
        where.append(OAuthToken.user_id == user_id)
    result = session.execute(
        sa.update(OAuthToken)
        .where(*where, sa.or_(OAuthToken.access_token_revoked_at == 0,
                              OAuthToken.refresh_token_revoked_at == 0))
        .values(access_token_revoked_at=sa.case(
                    (OAuthToken.access_token_revoked_at == 0, now),
                    else_=OAuthToken.access_token_revoked_at),
                refresh_token_revoked_at=sa.case(
                    (OAuthToken.refresh_token_revoked_at == 0, now),
                    else_=OAuthToken.refresh_token_revoked_at))
        .execution_options(synchronize_session=False))
    return result.rowcount


class LinksSchema(ResponseSchema):
    logo_uri = fields.String(allow_none=True)
    client_uri = fields.String(allow_none=True)
    policy_uri = fields.String(allow_none=True)
    tos_uri = fields.String(allow_none=True)


class AuthorizationSchema(ResponseSchema):
    client_id = fields.String(metadata={"description": "the application; the path of DELETE"})
    name = fields.String(metadata={"description": "the application's name"})
    company_name = fields.String(metadata={"description": "the partner that publishes it"})
    scopes = fields.List(fields.String(), metadata={"description": "the scopes granted"})
    mode = fields.String()
    links = fields.Nested(LinksSchema)
    created_at = Timestamp(metadata={"description": "when the user first authorized it"})
    updated_at = Timestamp()


def _active_consents(user_id: int):
    return (sa.select(OAuthConsent)
            .join(OAuthClient, OAuthClient.id == OAuthConsent.oauth_client_id)
            .where(OAuthConsent.user_id == user_id, OAuthConsent.revoked_at.is_(None),
                   OAuthClient.status == "active"))


def _describe(consent: OAuthConsent, application: OAuthClient, company_name: str) -> dict:
    metadata = application.client_metadata
    return {
        "client_id": application.client_id,
        "name": metadata.get("client_name"),
        "company_name": company_name,
        "scopes": list(consent.scopes or []),
        "mode": "live" if application.livemode else "test",
        "links": {name: metadata.get(name) for name in LINK_FIELDS},
        "created_at": consent.created_at,
        "updated_at": consent.updated_at,
    }


@operation(authorizations, "GET", summary="List the applications the caller authorized",
           auth=AUTH_USER, query=PageQuery, response=AuthorizationSchema, paginated=True)
def list_authorizations(request):
    session = request.dbsession
    page = paginate(_active_consents(request.user.id), OAuthConsent.id, request.query, session)
    ids = [consent.oauth_client_id for consent in page.items]
    rows = session.execute(
        sa.select(OAuthClient, Partner.company_name)
        .join(Partner, Partner.id == OAuthClient.partner_id)
        .where(OAuthClient.id.in_(ids))) if ids else []
    found = {application.id: (application, company) for application, company in rows}
    items = [_describe(consent, *found[consent.oauth_client_id]) for consent in page.items]
    return Page(items, page.next_cursor)


@operation(authorization, "DELETE",
           summary="Revoke the caller's authorization of an application and its tokens",
           auth=AUTH_USER, status=204, errors=((404, "not_found"),))
def revoke_authorization(request):
    client_id = request.matchdict["client_id"]
    missing = NotFound(f"No authorization of application {client_id!r} found for this user.")
    if CLIENT_ID.fullmatch(client_id) is None:
        raise missing
    session = request.dbsession
    row = session.execute(
        _active_consents(request.user.id).add_columns(OAuthClient)
        .where(OAuthClient.client_id == client_id)
        .with_for_update(of=OAuthConsent)).one_or_none()
    if row is None:
        raise missing
    consent, application = row
    now = utcnow()
    consent.revoked_at = now
    consent.updated_at = now
    tokens = revoke_tokens(session, application.client_id, request.user.id)
    forget_cached_tokens(request)
    audit.record(request, "oauth_app.authorization_revoked", partner_id=application.partner_id,
                 target_type="oauth_app", target_id=public_id("app", application.id),
                 details={"client_id": application.client_id, "tokens_revoked": tokens})
    log.info("oauth authorization revoked", extra={
        "user_id": request.user.id, "application_id": application.id,
        "tokens_revoked": tokens})


def includeme(config):
    for service in SERVICES:
        config.add_cornice_service(service)
