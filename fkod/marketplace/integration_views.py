"""Cornice services of a partner's own integrations (``/api/partners/integrations``).

Integrations are named ``int_<number>``, and another partner's integration is
a 404. Owners, admins and developers may write; billing and read-only members
may only read. The editing rules and the status machine are in
:mod:`fkod.marketplace.integrations`.
"""

from __future__ import annotations

from cornice import Service

from fkod.core.api import AUTH_MEMBER, Dumped, PageQuery, operation, paginate
from fkod.core.ids import parse_id
from fkod.core.schemas import EmptyBody
from fkod.marketplace import integration_schemas as schemas
from fkod.marketplace import integrations
from fkod.marketplace.models import IntegrationVersion

collection = Service(name="partner_integrations", path="/api/partners/integrations",
                     description="The partner's integrations")
item = Service(name="partner_integration", path="/api/partners/integrations/{id}",
               description="One of the partner's integrations")
submit = Service(name="partner_integration_submit",
                 path="/api/partners/integrations/{id}/submit",
                 description="Send an integration to F-KOD's review")
unpublish = Service(name="partner_integration_unpublish",
                    path="/api/partners/integrations/{id}/unpublish",
                    description="Take a published integration out of the marketplace")
versions = Service(name="partner_integration_versions",
                   path="/api/partners/integrations/{id}/versions",
                   description="The versions of an integration")

SERVICES = (collection, item, submit, unpublish, versions)
NOT_FOUND = ((404, "not_found"),)
MANAGED = ((409, "managed_by_plugin"),)
INVALID_TRANSITION = ((409, "invalid_transition"),)
CHECK_ERRORS = ((400, "invalid_scope"), (400, "invalid_event_type"))


def integration_id(request) -> int:
    return parse_id("int", request.matchdict["id"], noun="integration")


def integration_detail(request, integration) -> Dumped:
    """Dump an integration with its newest versions and its current release notes."""
    found = integrations.versions_of(request.dbsession, integration)
    result = Dumped(schemas.IntegrationDetailSchema().dump(integration))
    result["versions"] = schemas.VersionSchema(many=True).dump(found)
    result["release_notes"] = next((version.release_notes for version in found
                                    if version.version == integration.version), None)
    return result


@operation(collection, "GET", summary="List the partner's integrations, newest first by default",
           auth=AUTH_MEMBER, permission="integrations:read", query=schemas.IntegrationListQuery,
           response=schemas.IntegrationSchema, paginated=True)
def list_integrations(request):
    return integrations.list_partner_integrations(request, request.partner, request.query)


@operation(collection, "POST", summary="Create an integration draft", auth=AUTH_MEMBER,
           permission="integrations:write", body=schemas.CreateIntegrationBody,
           response=schemas.IntegrationDetailSchema, status=201,
           errors=(*CHECK_ERRORS, (409, "slug_taken")))
def create_integration(request):
    created = integrations.create_integration(request, request.partner, dict(request.validated))
    return integration_detail(request, created)


@operation(item, "GET", summary="Get an integration with its versions", auth=AUTH_MEMBER,
           permission="integrations:read", response=schemas.IntegrationDetailSchema,
           errors=NOT_FOUND)
def get_integration(request):
    return integration_detail(request, integrations.get_partner_integration(
        request, request.partner, integration_id(request)))


@operation(item, "PUT", summary="Change the given fields; a published integration takes only "
                                "listing text and links",
           auth=AUTH_MEMBER, permission="integrations:write", body=schemas.UpdateIntegrationBody,
           response=schemas.IntegrationDetailSchema,
           errors=CHECK_ERRORS + NOT_FOUND + MANAGED + (
               (409, "slug_taken"), (409, "version_exists"), (409, "integration_in_review"),
               (409, "integration_published")))
def update_integration(request):
    updated = integrations.update_integration(request, request.partner, integration_id(request),
                                              dict(request.validated))
    return integration_detail(request, updated)


@operation(item, "DELETE", summary="Delete an integration that has no active installs",
           auth=AUTH_MEMBER, permission="integrations:write", status=204,
           errors=NOT_FOUND + MANAGED + ((409, "integration_has_installs"),))
def delete_integration(request):
    integrations.delete_integration(request, request.partner, integration_id(request))


@operation(submit, "POST", summary="Send a draft, rejected or unpublished integration to review",
           auth=AUTH_MEMBER, permission="integrations:write", body=EmptyBody,
           response=schemas.IntegrationDetailSchema,
           errors=NOT_FOUND + MANAGED + INVALID_TRANSITION + (
               (403, "partner_not_verified"), (409, "integration_incomplete")))
def submit_integration(request):
    submitted = integrations.submit_integration(request, request.partner,
                                                integration_id(request))
    return integration_detail(request, submitted)


@operation(unpublish, "POST", summary="Take a published integration out of the marketplace; "
                                      "installs keep working",
           auth=AUTH_MEMBER, permission="integrations:write", body=EmptyBody,
           response=schemas.IntegrationDetailSchema,
           errors=NOT_FOUND + MANAGED + INVALID_TRANSITION)
def unpublish_integration(request):
    unpublished = integrations.unpublish_integration(request, request.partner,
                                                     integration_id(request))
    return integration_detail(request, unpublished)


@operation(versions, "GET", summary="List an integration's versions, newest first",
           auth=AUTH_MEMBER, permission="integrations:read", query=PageQuery,
           response=schemas.VersionSchema, paginated=True, errors=NOT_FOUND)
def list_versions(request):
    integration = integrations.get_partner_integration(request, request.partner,
                                                       integration_id(request))
    return paginate(integrations.versions_query(integration), IntegrationVersion.id,
                    request.query, request.dbsession)


def includeme(config):
    for service in SERVICES:
        config.add_cornice_service(service)
