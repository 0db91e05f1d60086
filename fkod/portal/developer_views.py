"""Developer pages: documentation, code samples, SDKs, status, limits, error log, sandbox reset.

Each page calls the view function or service of the matching operation under
``/api/developers`` with the query loaded by the API's schema, so the pages
show what the JSON API returns.
"""

from __future__ import annotations

from pyramid.httpexceptions import HTTPSeeOther

from fkod.core.errors import ApiError
from fkod.core.openapi import get_document
from fkod.developers import documentation_views as documentation_api
from fkod.developers import sandbox
from fkod.developers import views as developer_api
from fkod.developers.samples import LANGUAGES, iter_operations
from fkod.developers.schemas import FailedCallsQuery
from fkod.portal.access import require_member
from fkod.portal.charts import load_query
from fkod.portal.rendering import render

ROUTES = (
    ("portal_developers", "/portal/developers", "documentation", ("GET",),
     "Show the API documentation: the OpenAPI document and the operations by tag"),
    ("portal_developer_samples", "/portal/developers/samples", "samples", ("GET",),
     "Show the code samples of one operation in a chosen language"),
    ("portal_developer_sdks", "/portal/developers/sdks", "sdk_list", ("GET",),
     "List the SDKs with their install commands"),
    ("portal_developer_sdk", "/portal/developers/sdks/{language}", "sdk_download", ("GET",),
     "Download one SDK as a tar.gz archive"),
    ("portal_developer_status", "/portal/developers/status", "status", ("GET",),
     "Show the status of the platform's components"),
    ("portal_developer_limits", "/portal/developers/limits", "limits", ("GET",),
     "Show the partner's current rate-limit windows per mode and key"),
    ("portal_developer_errors", "/portal/developers/errors", "error_list", ("GET",),
     "List the partner's failed API calls, with filters"),
    ("portal_developer_error", "/portal/developers/errors/{request_id}", "error_detail",
     ("GET",), "Show one failed API call by its request id"),
    ("portal_developer_sandbox", "/portal/developers/sandbox", "sandbox_reset",
     ("GET", "POST"), "Reset the test-mode sandbox, after a confirmation"),
)

# The confirmation a member types to reset the sandbox.
SANDBOX_CONFIRMATION = "reset"


def _use(request, **query):
    """Set the loaded query the API's view functions read, as their validator does."""
    request.query = query
    return request


def operations_by_tag(document: dict) -> list[tuple[str, list[dict]]]:
    """Return the document's operations grouped by their first tag, tags in name order."""
    groups: dict[str, list[dict]] = {}
    for path, method, op in iter_operations(document):
        tag = (op.get("tags") or ["other"])[0]
        groups.setdefault(tag, []).append({
            "method": method.upper(), "path": path, "summary": op.get("summary", ""),
            "operation_id": op.get("operationId"),
        })
    return sorted(groups.items())


def documentation(request):
    require_member(request, "partner:read")
    document = get_document(request.registry).document
    return render(request, "developers.html", groups=operations_by_tag(document),
                  title=document.get("info", {}).get("title", ""),
                  version=document.get("info", {}).get("version", ""), nav="developers")


def samples(request):
    require_member(request, "partner:read")
    query = load_query(request, documentation_api.SamplesQuery())
    query["language"] = query.get("language") or LANGUAGES[0]
    operation_id = query.get("operation_id")
    page = None
    if operation_id:
        # One operation has one sample per language, so one page of the API's default limit
        # contains all of them.
        page = documentation_api.list_samples(_use(request, **query))
    document = get_document(request.registry).document
    return render(request, "developer_samples.html", groups=operations_by_tag(document),
                  samples=page.items if page else [], operation_id=operation_id or "",
                  language=query["language"], languages=LANGUAGES, nav="developers")


def sdk_list(request):
    require_member(request, "api_keys:read")
    listed = developer_api.list_sdks(request)["data"]
    return render(request, "developer_sdks.html", sdks=listed, nav="developers")


def sdk_download(request):
    require_member(request, "api_keys:read")
    return developer_api.download_sdk(request)


def status(request):
    require_member(request, "partner:read")
    report = developer_api.get_status(request)
    return render(request, "developer_status.html", report=report, nav="developers")


def limits(request):
    require_member(request, "api_keys:read")
    described = developer_api.get_limits(request)
    return render(request, "developer_limits.html", limits=described, nav="developers")


def error_list(request):
    require_member(request, "api_keys:read")
    query = load_query(request, FailedCallsQuery())
    page = developer_api.list_failed_calls(_use(request, **query))
    filters = {name: request.GET[name] for name in ("status", "key_prefix", "endpoint",
                                                    "since", "until")
               if request.GET.get(name)}
    return render(request, "developer_errors.html", calls=page.items,
                  next_cursor=page.next_cursor, filters=filters, nav="developers")


def error_detail(request):
    require_member(request, "api_keys:read")
    call = developer_api.get_failed_call(_use(request))
    return render(request, "developer_error.html", call=call, nav="developers")


def sandbox_reset(request):
    permission = "partner:write" if request.method == "POST" else "partner:read"
    member = require_member(request, permission)
    if request.method == "GET":
        return render(request, "developer_sandbox.html", error=None,
                      confirmation=SANDBOX_CONFIRMATION,
                      can_write=member.can("partner:write"), nav="developers")
    if request.POST.get("confirmation", "").strip().lower() != SANDBOX_CONFIRMATION:
        return render(request, "developer_sandbox.html", status=400,
                      error=f"Type {SANDBOX_CONFIRMATION} to confirm the reset.",
                      confirmation=SANDBOX_CONFIRMATION, can_write=True, nav="developers")
    try:
        result = sandbox.reset_sandbox(request)
    except ApiError as error:
        request.tm.doom()
        return render(request, "developer_sandbox.html", status=error.status,
                      error=error.message, confirmation=SANDBOX_CONFIRMATION,
                      can_write=True, nav="developers")
    removed = ", ".join(f"{count} {name.replace('_', ' ')}"
                        for name, count in result["removed"].items())
    request.portal_session.flash(f"The sandbox is reset. Removed: {removed}.")
    return HTTPSeeOther(location=request.route_path("portal_developer_sandbox"))
