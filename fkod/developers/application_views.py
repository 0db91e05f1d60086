"""Cornice services for a partner's developer applications (OAuth clients)."""

from __future__ import annotations

from cornice import Service

from fkod.core.api import AUTH_MEMBER, Dumped, Page, operation, paginate
from fkod.core.auth.oauth_models import OAuthClient
from fkod.core.ids import parse_id
from fkod.core.schemas import EmptyBody
from fkod.developers import applications, schemas

collection = Service(name="developer_applications", path="/api/developers/applications",
                     description="The partner's OAuth applications")
item = Service(name="developer_application", path="/api/developers/applications/{id}",
               description="One OAuth application")
rotate_secret = Service(name="developer_application_rotate_secret",
                        path="/api/developers/applications/{id}/rotate-secret",
                        description="Give a confidential application a new secret")

SERVICES = (collection, item, rotate_secret)
NOT_FOUND = ((404, "not_found"),)


def _application_id(request) -> int:
    return parse_id("app", request.matchdict["id"], noun="application")


def _with_secret(request, application, secret: str | None) -> Dumped:
    result = Dumped(schemas.ApplicationSchema().dump(
        applications.describe_one(request.dbsession, application)))
    result["client_secret"] = secret
    return result


@operation(collection, "POST",
           summary="Create an application; a confidential one's secret is shown only here",
           auth=AUTH_MEMBER, permission="api_keys:write", body=schemas.CreateApplicationBody,
           response=schemas.CreatedApplicationSchema, status=201, no_store=True,
           errors=((400, "invalid_scope"), (403, "partner_not_verified"),
                   (403, "email_not_verified")))
def create_application(request):
    application, secret = applications.create_application(request, request.partner,
                                                          dict(request.validated))
    return _with_secret(request, application, secret)


@operation(collection, "GET", summary="List the partner's applications, newest first",
           auth=AUTH_MEMBER, permission="api_keys:read", query=schemas.ApplicationQuery,
           response=schemas.ApplicationSchema, paginated=True)
def list_applications(request):
    query = applications.applications_query(request.partner, request.query.get("mode"))
    page = paginate(query, OAuthClient.id, request.query, request.dbsession)
    return Page(applications.describe_many(request.dbsession, page.items), page.next_cursor)


@operation(item, "GET", summary="Get one of the partner's applications", auth=AUTH_MEMBER,
           permission="api_keys:read", response=schemas.ApplicationSchema, errors=NOT_FOUND)
def get_application(request):
    application = applications.get_application(request, _application_id(request))
    return applications.describe_one(request.dbsession, application)


@operation(item, "PUT",
           summary="Change an application's name, redirect URIs, scopes, grants, origins or links",
           auth=AUTH_MEMBER, permission="api_keys:write", body=schemas.UpdateApplicationBody,
           response=schemas.ApplicationSchema, errors=(*NOT_FOUND, (400, "invalid_scope")))
def update_application(request):
    application = applications.update_application(request, _application_id(request),
                                                  dict(request.validated))
    return applications.describe_one(request.dbsession, application)


@operation(item, "DELETE",
           summary="Delete an application and revoke its tokens and users' authorizations",
           auth=AUTH_MEMBER, permission="api_keys:write", status=204, errors=NOT_FOUND)
def delete_application(request):
    applications.delete_application(request, _application_id(request))


@operation(rotate_secret, "POST",
           summary="Give a confidential application a new secret. The old one stops at once",
           auth=AUTH_MEMBER, permission="api_keys:write", body=EmptyBody,
           response=schemas.RotatedSecretSchema, no_store=True,
           errors=(*NOT_FOUND, (409, "public_application")))
def rotate_application_secret(request):
    application, secret = applications.rotate_secret(request, _application_id(request))
    return _with_secret(request, application, secret)


def includeme(config):
    for service in SERVICES:
        config.add_cornice_service(service)
