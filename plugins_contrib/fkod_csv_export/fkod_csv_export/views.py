"""The route that lets a customer download the CSV file of their install."""

from __future__ import annotations

from cornice import Service
from pyramid.response import Response

from fkod.core.api import AUTH_USER, operation
from fkod.core.errors import NotFound
from fkod.core.ids import public_id
from fkod_csv_export.store import INSTALL_ID, ExportNotFound

download = Service(name="csv_export_download",
                   path="/api/plugins/csv-export/installs/{install_id}/completions.csv",
                   description="The course completions CSV file of one install")


@operation(download, "GET", summary="Download the course completions of your install as CSV",
           auth=AUTH_USER, no_store=True, errors=((404, "not_found"),))
def download_csv(request):
    from fkod_csv_export import store

    install_id = request.matchdict["install_id"]
    not_found = NotFound(f"No CSV export {install_id} exists for your account.")
    if not INSTALL_ID.match(install_id):
        raise not_found

    # Another customer's install is reported as missing, never as forbidden.
    exports = store()
    try:
        if exports.owner(install_id) != public_id("user", request.user.id):
            raise not_found
        body = exports.read(install_id)
    except ExportNotFound:
        raise not_found from None

    response = Response(body=body, content_type="text/csv", charset="utf-8")
    response.headers["Content-Disposition"] = (
        f'attachment; filename="completions-{install_id}.csv"')
    response.headers["Cache-Control"] = "no-store"
    return response
