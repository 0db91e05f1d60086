"""Cornice services of the public marketplace: lists, details, search and partner profiles.

Anyone may call them without a credential (rate limited per client address),
and only listed integrations appear: published, of an active partner, and not
shipped by a disabled plugin.
"""

from __future__ import annotations

from cornice import Service

from fkod.core.api import AUTH_NONE, Page, operation
from fkod.marketplace import catalog, schemas, search

integrations = Service(name="marketplace_integrations", path="/api/marketplace/integrations",
                       description="Listed integrations, filtered and sorted")
integration = Service(name="marketplace_integration",
                      path="/api/marketplace/integrations/{id}",
                      description="One listed integration")
categories = Service(name="marketplace_categories", path="/api/marketplace/categories",
                     description="Integration categories with their counts")
search_service = Service(name="marketplace_search", path="/api/marketplace/search",
                         description="Ranked full-text search over listed integrations")
partners = Service(name="marketplace_partners", path="/api/marketplace/partners",
                   description="Partners with listed integrations")
partner = Service(name="marketplace_partner", path="/api/marketplace/partners/{id}",
                  description="A partner's public profile")
trending = Service(name="marketplace_trending", path="/api/marketplace/trending",
                   description="Integrations with the most recent installs")
featured = Service(name="marketplace_featured", path="/api/marketplace/featured",
                   description="Integrations F-KOD features, by rank")

SERVICES = (integrations, integration, categories, search_service, partners, partner,
            trending, featured)
NOT_FOUND = ((404, "not_found"),)


@operation(integrations, "GET", summary="List listed integrations with filters and a sort "
                                        "order, most installed first by default",
           auth=AUTH_NONE, query=schemas.IntegrationListQuery,
           response=schemas.IntegrationSchema, paginated=True)
def list_integrations(request):
    return catalog.list_integrations(request, request.query)


@operation(integration, "GET", summary="Get a listed integration with its configuration "
                                       "schema, scopes and event types",
           auth=AUTH_NONE, response=schemas.IntegrationDetailSchema, errors=NOT_FOUND)
def get_integration(request):
    return catalog.get_integration(request, request.matchdict["id"])


@operation(categories, "GET", summary="List every category with its number of listed "
                                      "integrations", auth=AUTH_NONE,
           response=schemas.CategoryListSchema)
def list_categories(request):
    return {"data": catalog.category_counts(request)}


@operation(search_service, "GET", summary="Search listed integrations by name, description, "
                                          "category and partner, with prefix and "
                                          "typo-tolerant matches",
           auth=AUTH_NONE, query=schemas.SearchQuery, response=schemas.SearchResultSchema,
           paginated=True)
def search_integrations(request):
    return search.search_integrations(request, request.query)


@operation(partners, "GET", summary="List active partners that have listed integrations, "
                                    "with their counts",
           auth=AUTH_NONE, query=schemas.PartnerListQuery, response=schemas.PublicPartnerSchema,
           paginated=True)
def list_partners(request):
    return catalog.list_partners(request, request.query)


@operation(partner, "GET", summary="Get a partner's public profile and listed integrations, "
                                   "by id or slug",
           auth=AUTH_NONE, response=schemas.PartnerProfileSchema, errors=NOT_FOUND)
def get_partner(request):
    return catalog.get_public_partner(request, request.matchdict["id"])


@operation(trending, "GET", summary="List the integrations with the most active installs of "
                                    "the last 7 days, recent ones weighing more",
           auth=AUTH_NONE, query=schemas.LimitQuery,
           response=schemas.TrendingIntegrationSchema, paginated=True)
def list_trending(request):
    return Page(catalog.trending_integrations(request, request.query["limit"]), None)


@operation(featured, "GET", summary="List the integrations F-KOD features, by rank",
           auth=AUTH_NONE, query=schemas.LimitQuery, response=schemas.IntegrationSchema,
           paginated=True)
def list_featured(request):
    return Page(catalog.featured_integrations(request, request.query["limit"]), None)


def includeme(config):
    for service in SERVICES:
        config.add_cornice_service(service)
