"""Cornice services for a partner's API keys."""

from __future__ import annotations

from cornice import Service

from fkod.core.api import AUTH_MEMBER, Dumped, Page, PageQuery, operation, paginate
from fkod.core.auth.models import ApiKey
from fkod.core.ids import parse_id
from fkod.partners import api_keys, schemas

collection = Service(name="partner_api_keys", path="/api/partners/api-keys",
                     description="The partner's API keys")
item = Service(name="partner_api_key", path="/api/partners/api-keys/{id}",
               description="One API key")
rotate = Service(name="partner_api_key_rotate", path="/api/partners/api-keys/{id}/rotate",
                 description="Give a key a new secret")
test = Service(name="partner_api_key_test", path="/api/partners/api-keys/{id}/test",
               description="Check a key and report its quota")
scopes = Service(name="partner_api_key_scopes", path="/api/partners/api-keys/{id}/scopes",
                 description="The scopes granted to a key")

SERVICES = (collection, item, rotate, test, scopes)
NOT_FOUND = ((404, "not_found"),)


def _key_id(request) -> int:
    return parse_id("key", request.matchdict["id"], noun="API key")


def _with_secret(key, secret: str) -> Dumped:
    result = Dumped(schemas.ApiKeySchema().dump(key))
    result["key"] = secret
    return result


@operation(collection, "POST", summary="Create an API key; the key is shown only in this response",
           auth=AUTH_MEMBER, permission="api_keys:write", body=schemas.CreateApiKeyBody,
           response=schemas.CreatedApiKeySchema, status=201, no_store=True,
           errors=((400, "invalid_scope"), (403, "partner_not_verified")))
def create_api_key(request):
    key, secret = api_keys.create_api_key(request, request.partner, dict(request.validated))
    return _with_secret(key, secret)


@operation(collection, "GET", summary="List the partner's API keys, newest first",
           auth=AUTH_MEMBER, permission="api_keys:read", query=PageQuery,
           response=schemas.ApiKeySchema, paginated=True)
def list_api_keys(request):
    return paginate(api_keys.api_keys_query(request.partner), ApiKey.id, request.query,
                    request.dbsession)


@operation(item, "GET", summary="Get one of the partner's API keys", auth=AUTH_MEMBER,
           permission="api_keys:read", response=schemas.ApiKeySchema, errors=NOT_FOUND)
def get_api_key(request):
    return api_keys.get_api_key(request, _key_id(request))


@operation(item, "PUT", summary="Change a key's name, scopes, limit, expiry, IP ranges or integration",
           auth=AUTH_MEMBER, permission="api_keys:write", body=schemas.UpdateApiKeyBody,
           response=schemas.ApiKeySchema,
           errors=NOT_FOUND + ((400, "invalid_scope"), (409, "api_key_revoked")))
def update_api_key(request):
    return api_keys.update_api_key(request, _key_id(request), dict(request.validated))


@operation(item, "DELETE", summary="Revoke a key at once; the record stays for audit",
           auth=AUTH_MEMBER, permission="api_keys:write", response=schemas.ApiKeySchema,
           errors=NOT_FOUND)
def revoke_api_key(request):
    return api_keys.revoke_api_key(request, _key_id(request))


@operation(rotate, "POST", summary="Give a key a new secret; the old one works for a grace period",
           auth=AUTH_MEMBER, permission="api_keys:write", body=schemas.RotateApiKeyBody,
           response=schemas.CreatedApiKeySchema, no_store=True,
           errors=NOT_FOUND + ((409, "api_key_revoked"),))
def rotate_api_key(request):
    key, secret = api_keys.rotate_api_key(request, _key_id(request),
                                          request.validated["grace_period_seconds"])
    return _with_secret(key, secret)


@operation(test, "POST", summary="Check a key (and optionally a secret) and report its quota",
           auth=AUTH_MEMBER, permission="api_keys:read", body=schemas.TestApiKeyBody,
           response=schemas.ApiKeyTestSchema, errors=NOT_FOUND)
def test_api_key(request):
    return api_keys.test_api_key(request, _key_id(request), request.validated.get("key"))


@operation(scopes, "GET", summary="The scope catalog, with the scopes this key holds",
           auth=AUTH_MEMBER, permission="api_keys:read", response=schemas.ScopeGrantSchema,
           paginated=True, errors=NOT_FOUND)
def list_scopes(request):
    key = api_keys.get_api_key(request, _key_id(request))
    return Page(api_keys.scope_listing(request, key), None)


@operation(scopes, "POST", summary="Set the scopes a key holds", auth=AUTH_MEMBER,
           permission="api_keys:write", body=schemas.SetScopesBody,
           response=schemas.ScopeGrantSchema, paginated=True,
           errors=NOT_FOUND + ((400, "invalid_scope"), (409, "api_key_revoked")))
def set_scopes(request):
    key = api_keys.update_api_key(request, _key_id(request),
                                  {"scopes": request.validated["scopes"]})
    return Page(api_keys.scope_listing(request, key), None)


def includeme(config):
    for service in SERVICES:
        config.add_cornice_service(service)
