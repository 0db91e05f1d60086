"""Cornice services of a customer's installs of marketplace integrations.

Integrations are named ``int_<number>`` and installs ``inst_<number>``. Every
operation acts on the caller's own install only.
"""

from __future__ import annotations

from cornice import Service

from fkod.core.api import AUTH_USER, Dumped, Page, operation
from fkod.marketplace import install_schemas as schemas
from fkod.marketplace import installs

install = Service(name="marketplace_install",
                  path="/api/marketplace/integrations/{id}/install",
                  description="The caller's install of an integration")
install_list = Service(name="marketplace_installs", path="/api/marketplace/installs",
                       description="The caller's installs")

SERVICES = (install, install_list)
NOT_FOUND = ((404, "not_found"),)
NOT_INSTALLED = ((404, "not_installed"),)


def _dump(request, row) -> Dumped:
    return Dumped(schemas.InstallSchema().dump(installs.install_view(request, row)))


@operation(install, "POST", summary="Install a listed integration with a configuration valid "
                                    "against its config_schema",
           auth=AUTH_USER, body=schemas.InstallBody, response=schemas.InstallSchema, status=201,
           errors=(*NOT_FOUND, (409, "already_installed"), (422, "integration_refused"),
                   (502, "integration_failed")))
def create_install(request):
    row = installs.install(request, request.matchdict["id"], request.validated["config"])
    return _dump(request, row)


@operation(install, "PUT", summary="Replace the configuration of the caller's install",
           auth=AUTH_USER, body=schemas.UpdateInstallBody, response=schemas.InstallSchema,
           errors=NOT_FOUND + NOT_INSTALLED)
def update_install(request):
    row = installs.update_config(request, request.matchdict["id"], request.validated["config"])
    return _dump(request, row)


@operation(install, "DELETE", summary="Uninstall the caller's install of an integration",
           auth=AUTH_USER, status=204, errors=NOT_FOUND + NOT_INSTALLED)
def delete_install(request):
    installs.uninstall(request, request.matchdict["id"])


@operation(install_list, "GET", summary="List the caller's installs, newest first",
           auth=AUTH_USER, query=schemas.InstallListQuery, response=schemas.InstallSchema,
           paginated=True)
def list_installs(request):
    page = installs.list_installs(request, request.query)
    return Page([installs.install_view(request, row) for row in page.items], page.next_cursor)


def includeme(config):
    for service in SERVICES:
        config.add_cornice_service(service)
