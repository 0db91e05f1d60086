"""Descriptions of the routes served by plain Pyramid views, for the OpenAPI document.

These routes (the OAuth endpoints and the developer playground pages) have no
:class:`fkod.core.api.Operation`, so each method is described here by hand.
Modules that serve HTML pages of their own (the portal) describe them with
:func:`describe_page` as they register them.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class PlainOperation:
    """A route method served by a plain Pyramid view, described by hand."""

    summary: str
    tag: str
    security: tuple = ()
    form: dict | None = None
    query: dict | None = None
    responses: dict = dataclasses.field(default_factory=dict)


_OAUTH_ERROR = {"type": "object", "required": ["error"],
                "properties": {"error": {"type": "string"},
                               "error_description": {"type": "string"}}}
_OAUTH_ERROR_RESPONSE = {"description": "An RFC 6749 error object",
                         "content": {"application/json": {"schema": _OAUTH_ERROR}}}
_HTML = {"text/html": {"schema": {"type": "string"}}}
_AUTHORIZE_QUERY = {
    "response_type": {"type": "string", "enum": ["code"]},
    "client_id": {"type": "string"},
    "redirect_uri": {"type": "string", "format": "uri"},
    "scope": {"type": "string", "description": "Space-separated scopes"},
    "state": {"type": "string"},
    "code_challenge": {"type": "string", "description": "PKCE challenge (RFC 7636)"},
    "code_challenge_method": {"type": "string", "enum": ["S256"]},
}
_CLIENT_AUTH = [{"oauthClientBasic": []}, {}]

# Routes without a Cornice operation, by route name and method.
PLAIN_ROUTES: dict[str, tuple[str, dict[str, PlainOperation]]] = {
    "oauth_authorize": ("/oauth/authorize", {
        "GET": PlainOperation(
            "Show the login or consent page of an authorization request (PKCE required for "
            "public clients)", "oauth", query=_AUTHORIZE_QUERY,
            responses={"200": {"description": "The login or consent page", "content": _HTML},
                       "302": {"description": "Back to the client's redirect URI"},
                       "400": {"description": "An error page", "content": _HTML},
                       "429": {"description": "Too many requests from this address",
                               "content": _HTML}}),
        "POST": PlainOperation(
            "Submit the login or consent form of an authorization request", "oauth",
            query=_AUTHORIZE_QUERY,
            form={"csrf_token": {"type": "string"},
                  "action": {"type": "string", "enum": ["login", "approve", "deny"]},
                  "email": {"type": "string"}, "password": {"type": "string"},
                  "totp_code": {"type": "string"}},
            responses={"200": {"description": "The next page", "content": _HTML},
                       "302": {"description": "Back to the client's redirect URI"},
                       "303": {"description": "The same request after login"},
                       "400": {"description": "An error page", "content": _HTML},
                       "403": {"description": "The form's CSRF token is invalid",
                               "content": _HTML},
                       "429": {"description": "Too many requests from this address",
                               "content": _HTML}}),
    }),
    "oauth_token": ("/oauth/token", {
        "POST": PlainOperation(
            "Exchange an authorization code (with its PKCE verifier), a refresh token or "
            "client credentials for an access token", "oauth", security=tuple(_CLIENT_AUTH),
            form={"grant_type": {"type": "string", "enum": ["authorization_code",
                                                             "refresh_token",
                                                             "client_credentials"]},
                  "code": {"type": "string"}, "redirect_uri": {"type": "string"},
                  "code_verifier": {"type": "string"}, "refresh_token": {"type": "string"},
                  "client_id": {"type": "string"}, "client_secret": {"type": "string"},
                  "scope": {"type": "string"}},
            responses={"200": {"description": "The tokens", "content": {"application/json": {
                "schema": {"type": "object", "properties": {
                    "access_token": {"type": "string"}, "token_type": {"type": "string"},
                    "expires_in": {"type": "integer"}, "refresh_token": {"type": "string"},
                    "scope": {"type": "string"}}}}}},
                "400": _OAUTH_ERROR_RESPONSE, "401": _OAUTH_ERROR_RESPONSE,
                "429": _OAUTH_ERROR_RESPONSE}),
    }),
    "oauth_revoke": ("/oauth/revoke", {
        "POST": PlainOperation(
            "Revoke an access or refresh token (RFC 7009)", "oauth", security=tuple(_CLIENT_AUTH),
            form={"token": {"type": "string"}, "token_type_hint": {"type": "string"},
                  "client_id": {"type": "string"}, "client_secret": {"type": "string"}},
            responses={"200": {"description": "Revoked, or the token was already unknown"},
                       "400": _OAUTH_ERROR_RESPONSE, "401": _OAUTH_ERROR_RESPONSE,
                       "429": _OAUTH_ERROR_RESPONSE}),
    }),
    "oauth_introspect": ("/oauth/introspect", {
        "POST": PlainOperation(
            "Describe a token to the confidential client it was issued to (RFC 7662)", "oauth",
            security=({"oauthClientBasic": []},),
            form={"token": {"type": "string"}, "token_type_hint": {"type": "string"},
                  "client_id": {"type": "string"}, "client_secret": {"type": "string"}},
            responses={"200": {"description": "The token's state", "content": {
                "application/json": {"schema": {"type": "object", "required": ["active"],
                                                "properties": {"active": {"type": "boolean"}},
                                                "additionalProperties": True}}}},
                "400": _OAUTH_ERROR_RESPONSE, "401": _OAUTH_ERROR_RESPONSE,
                "429": _OAUTH_ERROR_RESPONSE}),
    }),
    "developer_playground": ("/developers/playground", {
        "GET": PlainOperation(
            "Show Swagger UI on this document for a signed-in developer (else a redirect to "
            "the sign-in page)", "developers/playground",
            responses={"200": {"description": "The playground page", "content": _HTML},
                       "303": {"description": "To /developers/login with a return URL"}}),
    }),
    "developer_playground_init": ("/developers/playground/init.js", {
        "GET": PlainOperation(
            "Get the script that starts Swagger UI on the playground page",
            "developers/playground",
            responses={"200": {"description": "JavaScript", "content": {
                "text/javascript": {"schema": {"type": "string"}}}}}),
    }),
    "developer_playground_key": ("/developers/playground/key", {
        "POST": PlainOperation(
            "Create a test-mode key that expires in an hour and show the playground "
            "authorized with it", "developers/playground",
            form={"csrf_token": {"type": "string"}},
            responses={"200": {"description": "The playground page", "content": _HTML},
                       "303": {"description": "To /developers/login when not signed in"},
                       "403": {"description": "Invalid CSRF token, or the role cannot create "
                                              "API keys", "content": _HTML}}),
    }),
    "developer_login": ("/developers/login", {
        "GET": PlainOperation(
            "Show the sign-in page of the developer pages", "developers/playground",
            query={"return_to": {"type": "string", "description": "A path under /developers/"}},
            responses={"200": {"description": "The sign-in page", "content": _HTML},
                       "303": {"description": "Already signed in: to the return URL"}}),
        "POST": PlainOperation(
            "Sign in to the developer pages", "developers/playground",
            query={"return_to": {"type": "string", "description": "A path under /developers/"}},
            form={"csrf_token": {"type": "string"}, "email": {"type": "string"},
                  "password": {"type": "string"}, "totp_code": {"type": "string"}},
            responses={"303": {"description": "Signed in: to the return URL"},
                       "400": {"description": "A field is missing", "content": _HTML},
                       "401": {"description": "Wrong credentials", "content": _HTML},
                       "403": {"description": "The form's CSRF token is invalid",
                               "content": _HTML},
                       "429": {"description": "Too many attempts", "content": _HTML}}),
    }),
    "__developers/playground/assets/": ("/developers/playground/assets/{subpath}", {
        "GET": PlainOperation(
            "Get a Swagger UI asset (script, style sheet or image)", "developers/playground",
            responses={"200": {"description": "The file"},
                       "404": {"description": "No such file"}}),
    }),
    "metrics": ("/metrics", {
        "GET": PlainOperation(
            "Get the Prometheus metrics (text exposition format) for the operators' scraper; "
            "open to fkod.metrics.allowed_networks or the bearer token fkod.metrics.token "
            "only", "operations",
            responses={"200": {"description": "The metrics, Prometheus text format 0.0.4",
                               "content": {"text/plain": {"schema": {"type": "string"}}}},
                       "404": {"description": "Not found: the caller may not read the "
                                              "metrics"}}),
    }),
    "oauth_metadata": ("/.well-known/oauth-authorization-server", {
        "GET": PlainOperation(
            "Get the authorization server metadata (RFC 8414)", "oauth",
            responses={"200": {"description": "The metadata", "content": {
                "application/json": {"schema": {"type": "object",
                                                "additionalProperties": True}}}}}),
    }),
}


# The registry key of the routes that modules describe with describe_page.
PAGES_KEY = "openapi.pages"
# The security scheme of the portal's signed session cookie.
PORTAL_SESSION_SCHEME = "portalSession"
# The security scheme of the admin console's signed session cookie.
ADMIN_SESSION_SCHEME = "adminSession"

_PAGE_RESPONSES = {
    "GET": {"200": {"description": "The page", "content": _HTML},
            "303": {"description": "Not signed in: to the login page"},
            "403": {"description": "The member's role lacks the permission", "content": _HTML},
            "404": {"description": "No such page or record", "content": _HTML},
            "429": {"description": "Too many requests", "content": _HTML}},
    "POST": {"200": {"description": "The next page", "content": _HTML},
             "303": {"description": "Done: to the next page"},
             "400": {"description": "A field is invalid: the form again, with the error next "
                                    "to the field", "content": _HTML},
             "403": {"description": "The form's CSRF token is invalid, or the role lacks the "
                                    "permission", "content": _HTML},
             "404": {"description": "No such record", "content": _HTML},
             "429": {"description": "Too many requests", "content": _HTML}},
}


def describe_page(registry, route_name: str, pattern: str, methods, summary: str, *,
                  tag: str, signed_in: bool,
                  security_scheme: str = PORTAL_SESSION_SCHEME) -> None:
    """Add an HTML page of a plain Pyramid view to the OpenAPI document.

    ``signed_in`` pages need the session cookie of ``security_scheme``, the
    portal's by default. Each method gets the responses every page can give;
    POST forms carry a ``csrf_token`` field.
    """
    security = ({security_scheme: []},) if signed_in else ()
    operations = {}
    for method in methods:
        form = {"csrf_token": {"type": "string"}} if method == "POST" else None
        operations[method] = PlainOperation(summary, tag, security=security, form=form,
                                            responses=dict(_PAGE_RESPONSES[method]))
    registry.setdefault(PAGES_KEY, {})[route_name] = (pattern, operations)


def plain_routes(registry) -> dict[str, tuple[str, dict[str, PlainOperation]]]:
    """Return every route described by hand: the table above and the pages modules added."""
    return {**PLAIN_ROUTES, **registry.get(PAGES_KEY, {})}
