"""Cornice services of the admin API for the review of every partner's integrations.

Every admin role may read integrations (``integrations:read``). Reviewing
and featuring change what the marketplace lists for customers, so they need
``integrations:review`` (superadmin and support roles). Decisions are
audited; approval publishes integration.published to the owning partner.
"""

from __future__ import annotations

from cornice import Service

from fkod.core.api import AUTH_ADMIN, operation
from fkod.marketplace import integration_schemas as schemas
from fkod.marketplace import integrations
from fkod.marketplace.integration_views import integration_detail, integration_id

collection = Service(name="admin_integrations", path="/api/admin/integrations",
                     description="Integrations of every partner, for review")
item = Service(name="admin_integration", path="/api/admin/integrations/{id}",
               description="One integration with its versions")
review = Service(name="admin_integration_review", path="/api/admin/integrations/{id}/review",
                 description="Approve or reject an integration in review")
featured = Service(name="admin_integration_featured",
                   path="/api/admin/integrations/{id}/featured",
                   description="Feature a published integration in the marketplace")

SERVICES = (collection, item, review, featured)
NOT_FOUND = ((404, "not_found"),)


@operation(collection, "GET", summary="List integrations of every partner; the review queue, "
                                      "oldest submission first, by default",
           auth=AUTH_ADMIN, permission="integrations:read",
           query=schemas.AdminIntegrationListQuery, response=schemas.IntegrationSchema,
           paginated=True)
def list_integrations(request):
    return integrations.list_admin_integrations(request, request.query)


@operation(item, "GET", summary="Get an integration with its versions", auth=AUTH_ADMIN,
           permission="integrations:read", response=schemas.IntegrationDetailSchema,
           errors=NOT_FOUND)
def get_integration(request):
    return integration_detail(request, integrations.get_integration(request,
                                                                    integration_id(request)))


@operation(review, "POST", summary="Approve (publish) or reject an integration in review",
           auth=AUTH_ADMIN, permission="integrations:review", body=schemas.ReviewBody,
           response=schemas.IntegrationDetailSchema,
           errors=(*NOT_FOUND, (409, "invalid_transition")))
def review_integration(request):
    data = request.validated
    reviewed = integrations.review_integration(request, integration_id(request),
                                               data["decision"], data.get("reason"))
    return integration_detail(request, reviewed)


@operation(featured, "PUT", summary="Feature a published integration at a rank, or stop "
                                    "featuring it",
           auth=AUTH_ADMIN, permission="integrations:review", body=schemas.FeaturedBody,
           response=schemas.IntegrationDetailSchema,
           errors=(*NOT_FOUND, (409, "integration_not_published")))
def set_featured(request):
    data = request.validated
    changed = integrations.set_featured(request, integration_id(request), data["featured"],
                                        data.get("rank"))
    return integration_detail(request, changed)


def includeme(config):
    for service in SERVICES:
        config.add_cornice_service(service)
