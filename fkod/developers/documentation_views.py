"""The OpenAPI document (``/api/openapi.json``, ``/api/developers/documentation``) and the
code samples generated from it (``/api/developers/samples``)."""

from __future__ import annotations

from cornice import Service
from marshmallow import fields, validate

from fkod.core.api import AUTH_MEMBER, AUTH_NONE, Dumped, Page, PageQuery, encode_cursor, operation
from fkod.core.errors import NotFound, field_error
from fkod.core.openapi import get_document
from fkod.core.schemas import QuerySchema, ResponseSchema
from fkod.developers.samples import LANGUAGES, generate_samples, operation_ids

# Seconds a client or shared cache may keep the public document.
DOCUMENT_MAX_AGE_SECONDS = 300

public_document = Service(name="openapi_document", path="/api/openapi.json",
                          description="The OpenAPI 3.1 document of this API")
documentation = Service(name="developer_documentation", path="/api/developers/documentation",
                        description="The OpenAPI 3.1 document, for a signed-in developer")
samples = Service(name="developer_samples", path="/api/developers/samples",
                  description="Code samples for each operation")

SERVICES = (public_document, documentation, samples)


class SamplesQuery(PageQuery):
    operation_id = fields.String(load_default=None, validate=validate.Length(min=1, max=200))
    language = fields.String(
        load_default=None, validate=validate.OneOf(
            LANGUAGES, error="Must be one of: " + ", ".join(LANGUAGES) + "."))


class SampleSchema(ResponseSchema):
    operation_id = fields.String(required=True)
    method = fields.String(required=True)
    path = fields.String(required=True)
    language = fields.String(required=True)
    code = fields.String(required=True)


@operation(public_document, "GET",
           summary="Get the OpenAPI 3.1 document of this API (cacheable, with an ETag)",
           auth=AUTH_NONE, query=QuerySchema)
def get_public_document(request):
    rendered = get_document(request.registry)
    response = request.response
    response.headers["Cache-Control"] = f"public, max-age={DOCUMENT_MAX_AGE_SECONDS}"
    response.etag = rendered.etag
    if rendered.etag in request.if_none_match:
        response.status_code = 304
        response.content_type = None
        return response
    response.status_code = 200
    response.body = rendered.body
    response.content_type = "application/json"
    response.charset = "utf-8"
    return response


@operation(documentation, "GET", summary="Get the OpenAPI 3.1 document of this API",
           auth=AUTH_MEMBER, permission="partner:read", query=QuerySchema)
def get_documentation(request):
    return Dumped(get_document(request.registry).document)


@operation(samples, "GET",
           summary="List code samples (curl, Python, JavaScript, Go, Java) for each operation",
           auth=AUTH_MEMBER, permission="partner:read", query=SamplesQuery,
           response=SampleSchema, paginated=True, errors=((404, "not_found"),))
def list_samples(request):
    document = get_document(request.registry).document
    requested = request.query.get("operation_id")
    if requested is not None and requested not in operation_ids(document):
        raise NotFound(f"No operation has the id {requested!r}.",
                       errors=[field_error("querystring", "operation_id",
                                           f"no operation has the id {requested!r}")])
    items = generate_samples(document, request.application_url, operation_id=requested,
                             language=request.query.get("language"))
    # The cursor is the number of samples already returned.
    start = request.query.get("cursor") or 0
    limit = request.query["limit"]
    page = items[start:start + limit]
    has_more = start + limit < len(items)
    return Page(page, encode_cursor(start + limit) if has_more else None)


def includeme(config):
    for service in SERVICES:
        config.add_cornice_service(service)
    config.include("fkod.developers.playground")
