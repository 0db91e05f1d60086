"""The partner portal: server-rendered pages over the same services as the JSON API.

Pages live under ``/portal``, except ``/password-reset`` and ``/verify-email``,
the pages that account mail links to. They authenticate with the portal's
signed session cookie (see :mod:`fkod.portal.session`), and every POST carries
the session's CSRF token. The JSON API never reads this cookie.
"""

from __future__ import annotations

# Pages a visitor who is not signed in can use.
PUBLIC_PAGES = frozenset({"portal_signup", "portal_login", "portal_password_reset_request",
                          "portal_password_reset", "portal_verify_email"})

# (route name, path, view module, view function, request methods, summary)
ROUTES = (
    ("portal_signup", "/portal/signup", "account_views", "signup", ("GET", "POST"),
     "Sign up a partner and its owner"),
    ("portal_login", "/portal/login", "account_views", "login", ("GET", "POST"),
     "Log in, with the second factor when it is on"),
    ("portal_logout", "/portal/logout", "account_views", "logout", ("POST",),
     "Log out of this browser, or everywhere"),
    ("portal_password_reset_request", "/portal/password-reset", "account_views",
     "password_reset_request", ("GET", "POST"),
     "Ask for a password reset mail"),
    ("portal_password_reset", "/password-reset", "account_views", "password_reset_confirm",
     ("GET", "POST"),
     "Choose a new password with the link from the reset mail"),
    ("portal_verify_email", "/verify-email", "account_views", "verify_email", ("GET", "POST"),
     "Verify the email address with the link from the verification mail"),
    ("portal_dashboard", "/portal", "dashboard_views", "dashboard", ("GET",),
     "Show the partner dashboard and its onboarding checklist"),
    ("portal_keys", "/portal/keys", "key_views", "key_list", ("GET", "POST"),
     "List the partner's API keys, or create one"),
    ("portal_key_new", "/portal/keys/new", "key_views", "key_new", ("GET",),
     "Show the form that creates an API key"),
    ("portal_key", "/portal/keys/{id}", "key_views", "key_detail", ("GET",),
     "Show one API key with its recent failed calls"),
    ("portal_key_rotate", "/portal/keys/{id}/rotate", "key_views", "key_rotate", ("POST",),
     "Rotate an API key with a grace period for the old secret"),
    ("portal_key_revoke", "/portal/keys/{id}/revoke", "key_views", "key_revoke", ("POST",),
     "Revoke an API key"),
    ("portal_webhooks", "/portal/webhooks", "webhook_views", "webhook_list", ("GET", "POST"),
     "List the partner's webhook endpoints, or create one"),
    ("portal_webhook_new", "/portal/webhooks/new", "webhook_views", "webhook_new", ("GET",),
     "Show the form that creates a webhook endpoint"),
    ("portal_webhook", "/portal/webhooks/{id}", "webhook_views", "webhook_detail", ("GET",),
     "Show one webhook endpoint with its delivery log"),
    ("portal_webhook_test", "/portal/webhooks/{id}/test", "webhook_views", "webhook_test",
     ("POST",),
     "Send a test event to a webhook endpoint"),
    ("portal_webhook_secret", "/portal/webhooks/{id}/secret", "webhook_views",
     "webhook_secret", ("POST",),
     "Reveal a webhook endpoint's signing secrets (audited)"),
    ("portal_webhook_rotate_secret", "/portal/webhooks/{id}/rotate-secret", "webhook_views",
     "webhook_rotate_secret", ("POST",),
     "Rotate a webhook endpoint's signing secret"),
    ("portal_delivery", "/portal/webhooks/{id}/deliveries/{event_id}", "webhook_views",
     "delivery_detail", ("GET",),
     "Show one delivery with each of its attempts"),
    ("portal_delivery_replay", "/portal/webhooks/{id}/deliveries/{event_id}/replay",
     "webhook_views", "delivery_replay", ("POST",),
     "Deliver an event to the endpoint again"),
)


# Modules under fkod.portal that declare more pages in tables of their own:
# ROUTES, with (route name, path, view function, request methods, summary)
# rows, and PUBLIC_PAGES, the route names a visitor who is not signed in can use.
PAGE_MODULES: tuple[str, ...] = ("company_views", "team_views", "integration_views",
                                 "support_views",
                                 "marketplace_views",
                                 "customer_views", "billing_views",
                                 "developer_views", "application_views",
                                 "analytics_views", "webhook_debugger_views",
                                 "security_views")


def _portal_session(request):
    from fkod.portal.session import PortalSession

    session = PortalSession(request)
    request.add_response_callback(lambda _request, response: session.save(response))
    return session


def includeme(config):
    import importlib

    from fkod.core.openapi_plain import describe_page
    from fkod.portal.session import make_cookie_profile

    config.registry["portal.cookie_profile"] = make_cookie_profile(config.get_settings())
    config.add_request_method(_portal_session, "portal_session", reify=True)
    # Browsers keep the assets for an hour, because their names do not change with their content.
    config.add_static_view("portal/static", "fkod.portal:static", cache_max_age=3600)
    config.include("fkod.portal.rendering")
    describe_page(config.registry, "__portal/static/", "/portal/static/{subpath}", ("GET",),
                  "Get a portal asset (style sheet or script)", tag="portal",
                  signed_in=False)
    for name, path, module_name, function, methods, summary in ROUTES:
        module = importlib.import_module(f"fkod.portal.{module_name}")
        _add_page(config, name, path, getattr(module, function), methods, summary,
                  signed_in=name not in PUBLIC_PAGES)
    for module_name in PAGE_MODULES:
        module = importlib.import_module(f"fkod.portal.{module_name}")
        public = getattr(module, "PUBLIC_PAGES", frozenset())
        for name, path, function, methods, summary in module.ROUTES:
            _add_page(config, name, path, getattr(module, function), methods, summary,
                      signed_in=name not in public)
    config.include("fkod.portal.admin_views")


def _add_page(config, name: str, path: str, view, methods: tuple[str, ...], summary: str, *,
              signed_in: bool) -> None:
    """Register one page's route and view, and describe it in the OpenAPI document."""
    from fkod.core.openapi_plain import describe_page

    config.add_route(name, path)
    describe_page(config.registry, name, path, methods, summary, tag="portal",
                  signed_in=signed_in)
    config.add_view(view, route_name=name, request_method=methods)
    # Views with a request_method predicate win, and any other method gets this 405.
    config.add_view(_method_not_allowed(methods), route_name=name)


def _method_not_allowed(methods: tuple[str, ...]):
    from pyramid.httpexceptions import HTTPMethodNotAllowed

    def view(request):
        raise HTTPMethodNotAllowed(headers={"Allow": ", ".join(methods)})

    return view
