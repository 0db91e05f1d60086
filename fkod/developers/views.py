"""Cornice services of the developer dashboard: profile, limits, failed calls, status, SDKs.

Every operation needs a partner member's login access token. The sandbox
reset is in this module too; :mod:`fkod.developers.sandbox` lists exactly
what it removes.
"""

from __future__ import annotations

from cornice import Service
from pyramid.response import Response

from fkod.core.api import AUTH_MEMBER, Page, operation
from fkod.core.errors import NotFound, ServiceUnavailable
from fkod.core.schemas import EmptyBody, QuerySchema
from fkod.developers import sandbox, schemas, sdks, services
from fkod.developers.status import checker_for

me = Service(name="developer_me", path="/api/developers/me",
             description="The caller's developer profile")
limits = Service(name="developer_limits", path="/api/developers/limits",
                 description="The partner's rate-limit windows and what remains in each")
failed_calls = Service(name="developer_errors", path="/api/developers/errors",
                       description="The partner's recent failed API calls")
failed_call = Service(name="developer_error", path="/api/developers/errors/{request_id}",
                      description="One failed API call")
platform_status = Service(name="developer_status", path="/api/developers/status",
                          description="The status of the platform's components")
sdk_list = Service(name="developer_sdks", path="/api/developers/sdks",
                   description="The SDKs shipped with the platform")
sdk_download = Service(name="developer_sdk_download",
                       path="/api/developers/sdks/{language}/download",
                       description="A tar.gz archive of one SDK")
sandbox_reset = Service(name="developer_sandbox_reset", path="/api/developers/sandbox/reset",
                        description="Restore the test-mode sandbox to its starting data")

SERVICES = (me, limits, failed_calls, failed_call, platform_status, sdk_list, sdk_download,
            sandbox_reset)
MAX_REQUEST_ID_LENGTH = 64


@operation(me, "GET",
           summary="Get the caller's profile, partner, role, permissions, live-mode "
                   "availability and counts of keys, applications and webhook endpoints",
           auth=AUTH_MEMBER, permission="partner:read", query=QuerySchema,
           response=schemas.DeveloperMeSchema)
def get_me(request):
    return services.describe_me(request)


@operation(limits, "GET",
           summary="Get the partner's hourly, daily and endpoint windows per mode and each "
                   "active key's own window, without counting a request",
           auth=AUTH_MEMBER, permission="api_keys:read", query=QuerySchema,
           response=schemas.DeveloperLimitsSchema,
           errors=((503, "rate_limiter_unavailable"),))
def get_limits(request):
    return services.describe_limits(request)


@operation(failed_calls, "GET",
           summary="List the partner's API calls that got a status of 400 or more, newest "
                   "first, from the raw usage records",
           auth=AUTH_MEMBER, permission="api_keys:read", query=schemas.FailedCallsQuery,
           response=schemas.FailedCallSchema, paginated=True)
def list_failed_calls(request):
    query = services.failed_calls_query(request.partner.id, request.query)
    rows, next_cursor = services.page_of_failed_calls(request.dbsession, query, request.query)
    return Page(services.describe_failed_calls(request.dbsession, rows), next_cursor)


@operation(failed_call, "GET", summary="Get one of the partner's failed API calls by request id",
           auth=AUTH_MEMBER, permission="api_keys:read", response=schemas.FailedCallSchema,
           errors=((404, "not_found"),))
def get_failed_call(request):
    request_id = request.matchdict["request_id"]
    if len(request_id) > MAX_REQUEST_ID_LENGTH:
        raise NotFound(f"No failed call with request id {request_id[:MAX_REQUEST_ID_LENGTH]!r}…")
    return services.get_failed_call(request, request_id)


@operation(platform_status, "GET",
           summary="Get the status of the database, Redis, the task broker, the workers, "
                   "webhook deliveries and gateway availability; cached for a few seconds",
           auth=AUTH_MEMBER, permission="partner:read", query=QuerySchema,
           response=schemas.PlatformStatusSchema)
def get_status(request):
    return checker_for(request.registry).report()


def _sdk_dir(request) -> str:
    return request.registry.settings["fkod.developers.sdk_dir"]


def _archive_cache(request) -> sdks.ArchiveCache:
    cache = request.registry.get("developers.sdk_archives")
    if cache is None:
        cache = request.registry["developers.sdk_archives"] = sdks.ArchiveCache()
    return cache


@operation(sdk_list, "GET",
           summary="List the SDKs in the platform's sdk folder with their package, version, "
                   "install command and download link",
           auth=AUTH_MEMBER, permission="api_keys:read", query=QuerySchema,
           response=schemas.SdkListSchema)
def list_sdks(request):
    found = sdks.list_sdks(_sdk_dir(request))
    return {"data": [{
        "language": info.language,
        "package_name": info.package_name,
        "version": info.version,
        "install_command": info.install_command,
        "docs_url": info.docs_url,
        "download_url": request.route_url("developer_sdk_download", language=info.language),
    } for info in found]}


@operation(sdk_download, "GET",
           summary="Download one SDK as a tar.gz archive of its folder, without build "
                   "outputs and dot-files; answers 304 to a matching If-None-Match",
           auth=AUTH_MEMBER, permission="api_keys:read",
           errors=((404, "not_found"), (503, "sdk_too_large")))
def download_sdk(request):
    language = request.matchdict["language"]
    sdk_dir = _sdk_dir(request)
    info = next((item for item in sdks.list_sdks(sdk_dir) if item.language == language), None)
    if info is None:
        raise NotFound(f"No SDK for language {language[:40]!r}; GET /api/developers/sdks "
                       "lists the available ones.")
    try:
        archive = _archive_cache(request).get(sdk_dir, info)
    except sdks.SdkTooLarge:
        raise ServiceUnavailable(f"The {language} SDK folder is larger than the archive limit "
                                 "of this server.", code="sdk_too_large") from None
    etag = f'"{archive.etag}"'
    headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
    if etag in [tag.strip() for tag in request.headers.get("If-None-Match", "").split(",")]:
        return Response(status=304, headers=headers)
    response = Response(body=archive.data, content_type="application/gzip")
    response.headers.update(headers)
    response.headers["Content-Disposition"] = f'attachment; filename="{archive.filename}"'
    return response


@operation(sandbox_reset, "POST",
           summary="Reset the test-mode sandbox: delete the users, courses, enrollments and "
                   "mentor matches the partner created in test mode, the deliveries of its "
                   "test-mode webhook endpoints and the events only they received, and its "
                   "test-mode rate-limit windows. Keys, endpoints, applications, live-mode "
                   "data and the shared sandbox catalog stay",
           auth=AUTH_MEMBER, permission="partner:write", body=EmptyBody,
           response=schemas.SandboxResetSchema,
           errors=((400, "invalid_idempotency_key"), (409, "idempotency_request_in_progress"),
                   (422, "idempotency_key_reused"), (429, "rate_limited"),
                   (503, "rate_limiter_unavailable")))
def reset_sandbox(request):
    return sandbox.reset_sandbox(request)


def includeme(config):
    for service in SERVICES:
        config.add_cornice_service(service)
