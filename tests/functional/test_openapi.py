"""The OpenAPI 3.1 document: validity, completeness against the routes, security, plugins."""

from __future__ import annotations

import pytest
from openapi_spec_validator import validate
from pyramid.interfaces import IRoutesMapper

from fkod.admin.testing import admin_with_headers
from fkod.core.api import AUTH_API_KEY, AUTH_NONE
from fkod.core.openapi import openapi_path, operation_id
from fkod.core.testing import auth_header

pytestmark = pytest.mark.shared_app

DOCUMENT = "/api/openapi.json"


def route_methods(registry, route) -> set[str]:
    """Every request method the views of ``route`` accept (GET for a static view).

    A Cornice route also has a view that returns 405 to every other method, so
    its methods come from the service's definitions.
    """
    services = {service.name: service for service in registry.cornice_services.values()}
    if route.name in services:
        return {method for method, _view, _args in services[route.name].definitions} - {"HEAD"}
    introspector = registry.introspector
    route_item = introspector.get("routes", route.name)
    methods = set()
    any_method = False
    for related in introspector.related(route_item):
        if related.category_name != "views":
            continue
        accepted = related["request_methods"]
        if accepted is None:
            any_method = True
        elif isinstance(accepted, str):
            methods.add(accepted)
        else:
            methods.update(accepted)
    # A view without a method predicate beside views with one answers 405 to
    # the other methods (as the portal's do); alone, it serves GET.
    if any_method and not methods:
        methods.add("GET")
    # HEAD is described by the GET of the same path, and OPTIONS is CORS preflight.
    return methods - {"HEAD", "OPTIONS"}


def test_document_validates(client):
    document = client.web.get(DOCUMENT, status=200).json

    validate(document)
    assert document["openapi"] == "3.1.0"


def test_every_route_described(client):
    document = client.web.get(DOCUMENT).json
    mapper = client.registry.getUtility(IRoutesMapper)
    missing = []

    for route in mapper.get_routes():
        path = openapi_path(route.pattern)
        for method in sorted(route_methods(client.registry, route)):
            if method.lower() not in document["paths"].get(path, {}):
                missing.append(f"{method} {route.pattern} (route {route.name})")

    assert missing == []


def test_operations_carry_errors_and_security(client):
    document = client.web.get(DOCUMENT).json
    checked = 0

    for service in client.registry.cornice_services.values():
        for method, view, _args in service.definitions:
            op = getattr(view, "operation", None)
            if op is None or method == "HEAD":
                continue
            owner = client.registry["plugins"].owner_of_route(service.name)
            if owner is not None and not client.registry["plugins"].is_enabled(owner):
                continue
            described = document["paths"][openapi_path(service.path)][method.lower()]
            assert described["operationId"] == operation_id(service.name, method)
            assert described["summary"], service.name
            for status, code in op.all_errors:
                response = described["responses"][str(status)]
                schema = response["content"]["application/json"]["schema"]
                assert code in schema["properties"]["code"]["enum"], (service.name, code)
                assert schema["allOf"] == [{"$ref": "#/components/schemas/Error"}]
            if op.auth == AUTH_NONE:
                assert described["security"] == []
            elif op.auth == AUTH_API_KEY:
                assert {"apiKey": [op.scope] if op.scope else []} in described["security"]
                assert {"oauth2": [op.scope] if op.scope else []} in described["security"]
            else:
                needed = [op.permission] if op.permission else []
                assert len(described["security"]) == 1
                assert list(described["security"][0].values()) == [needed]
            checked += 1

    assert checked > 100


def test_security_schemes_and_oauth_scopes(client):
    schemes = client.web.get(DOCUMENT).json["components"]["securitySchemes"]
    flows = schemes["oauth2"]["flows"]

    assert schemes["apiKey"]["scheme"] == "bearer"
    assert schemes["loginToken"]["bearerFormat"] == "JWT"
    assert flows["authorizationCode"]["authorizationUrl"] == "/oauth/authorize"
    assert flows["clientCredentials"]["tokenUrl"] == "/oauth/token"
    assert "users:read" in flows["clientCredentials"]["scopes"]
    assert "admin:write" not in flows["authorizationCode"]["scopes"]


def test_paginated_list_wrapped(client):
    operation = client.web.get(DOCUMENT).json["paths"]["/api/v1/users"]["get"]
    schema = operation["responses"]["200"]["content"]["application/json"]["schema"]

    assert schema["required"] == ["data", "has_more", "next_cursor"]
    assert schema["properties"]["data"]["type"] == "array"
    assert {"name": "limit", "in": "query"}.items() <= operation["parameters"][0].items()


def test_webhooks_describe_events(client):
    webhooks = client.web.get(DOCUMENT).json["webhooks"]
    delivery = webhooks["user.created"]["post"]
    headers = {parameter["name"] for parameter in delivery["parameters"]}
    body = delivery["requestBody"]["content"]["application/json"]

    assert {"X-FKOD-Signature", "webhook-id", "webhook-timestamp",
            "webhook-signature"} <= headers
    assert body["schema"]["properties"]["type"] == {"const": "user.created"}
    assert body["example"]["type"] == "user.created"


def test_document_etag_and_cache(client):
    response = client.web.get(DOCUMENT, status=200)

    assert response.headers["Cache-Control"] == "public, max-age=300"
    etag = response.headers["ETag"]
    client.web.get(DOCUMENT, headers={"If-None-Match": etag}, status=304)
    client.web.get(DOCUMENT, headers={"If-None-Match": '"other"'}, status=200)


def test_document_rejects_unknown_query(client):
    body = client.web.get(DOCUMENT + "?format=yaml", status=400).json

    assert body["errors"][0]["name"] == "format"


def test_documentation_needs_login(client):
    client.web.get("/api/developers/documentation", status=401)
    _partner, token = client.partner_with_token()

    body = client.web.get("/api/developers/documentation", headers=auth_header(token)).json

    assert body == client.web.get(DOCUMENT).json


CSV_DOWNLOAD = "/api/plugins/csv-export/installs/{install_id}/completions.csv"


def test_contributed_plugin_follows_state(client):
    superadmin = admin_with_headers(client, "superadmin")[1]
    assert "get" in client.web.get(DOCUMENT).json["paths"][CSV_DOWNLOAD]

    client.web.put_json("/api/admin/plugins/csv_export", {"enabled": False}, headers=superadmin)
    disabled = client.web.get(DOCUMENT).json

    assert CSV_DOWNLOAD not in disabled["paths"]
    validate(disabled)

    client.web.put_json("/api/admin/plugins/csv_export", {"enabled": True}, headers=superadmin)
    assert CSV_DOWNLOAD in client.web.get(DOCUMENT).json["paths"]


def test_disabled_plugin_leaves_document(client):
    superadmin = admin_with_headers(client, "superadmin")[1]
    assert "/api/v1/users" in client.web.get(DOCUMENT).json["paths"]

    client.web.put_json("/api/admin/plugins/learning", {"enabled": False}, headers=superadmin)
    document = client.web.get(DOCUMENT).json

    assert "/api/v1/users" not in document["paths"]
    assert "user.created" not in document["webhooks"]
    assert "/api/partners/me" in document["paths"]

    client.web.put_json("/api/admin/plugins/learning", {"enabled": True}, headers=superadmin)
    assert "/api/v1/users" in client.web.get(DOCUMENT).json["paths"]


@pytest.mark.parametrize("path", ["/api/openapi.json", "/api/developers/documentation",
                                  "/api/developers/samples"])
def test_own_operations_described(client, path):
    assert "get" in client.web.get(DOCUMENT).json["paths"][path]
