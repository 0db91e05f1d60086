"""Cornice services of a partner's data rights: export everything, or delete the partner.

Both are for owners only; :mod:`fkod.partners.data_rights` describes what each covers.
"""

from __future__ import annotations

from cornice import Service

from fkod.core.api import AUTH_MEMBER, Dumped, operation
from fkod.partners import account_schemas as schemas
from fkod.partners import data_rights

export = Service(name="partner_export", path="/api/partners/export",
                 description="Everything the platform keeps about the partner")
deletion = Service(name="partner_deletion", path="/api/partners/deletion",
                   description="Delete the partner and anonymise its members")

OWNER_REQUIRED = ((403, "owner_required"),)


@operation(export, "GET", summary="Export everything kept about the partner as one JSON "
                                  "document, each list bounded; owners only",
           auth=AUTH_MEMBER, response=schemas.ExportSchema, no_store=True,
           errors=OWNER_REQUIRED)
def export_partner(request):
    result = data_rights.export_partner(request)
    stamp = result["exported_at"].strftime("%Y%m%d")
    request.response.headers["Content-Disposition"] = (
        f'attachment; filename="fkod-export-partner_{request.partner.id}-{stamp}.json"')
    return Dumped(schemas.ExportSchema().dump(result))


@operation(deletion, "POST", summary="Delete the partner: revoke its keys and webhooks and "
                                     "anonymise its members; owners only",
           auth=AUTH_MEMBER, body=schemas.DeletionBody, response=schemas.DeletionSchema,
           errors=(*OWNER_REQUIRED, (400, "confirmation_mismatch")))
def delete_partner(request):
    return data_rights.delete_partner(request, request.validated["confirm"])


def includeme(config):
    for service in (export, deletion):
        config.add_cornice_service(service)
