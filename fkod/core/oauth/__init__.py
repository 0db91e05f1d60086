"""OAuth 2.0 authorization server ("Connect with F-KOD"), built on Authlib.

Routes: ``/oauth/authorize``, ``/oauth/token``, ``/oauth/revoke``,
``/oauth/introspect`` and ``/.well-known/oauth-authorization-server``.
Resource servers check an access token with :func:`verify_access_token`.
"""

from __future__ import annotations

from fkod.core.oauth.server import (
    ACCESS_TOKEN_AUDIENCE,
    ACCESS_TOKEN_TTL_SECONDS,
    verify_access_token,
)

__all__ = ["ACCESS_TOKEN_AUDIENCE", "ACCESS_TOKEN_TTL_SECONDS", "verify_access_token"]


def includeme(config):
    from fkod.core.oauth import views
    from fkod.core.oauth.session import make_cookie_profile

    config.registry["oauth.cookie_profile"] = make_cookie_profile(config.get_settings())
    routes = (
        ("oauth_authorize", "/oauth/authorize", views.authorize, ("GET", "POST")),
        ("oauth_token", "/oauth/token", views.token, ("POST",)),
        ("oauth_revoke", "/oauth/revoke", views.revoke, ("POST",)),
        ("oauth_introspect", "/oauth/introspect", views.introspect, ("POST",)),
        ("oauth_metadata", "/.well-known/oauth-authorization-server", views.metadata,
         ("GET",)),
    )
    for name, path, view, methods in routes:
        config.add_route(name, path)
        config.add_view(view, route_name=name, request_method=methods)
