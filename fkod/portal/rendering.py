"""Page rendering: the Jinja2 environment, the security headers and the HTML error pages.

Templates are files under ``fkod/portal/templates/``. Autoescape is on for
every template and an undefined name raises, so a typo fails the test that
renders the page instead of printing nothing.
"""

from __future__ import annotations

import logging
import re

import jinja2
import sqlalchemy.exc
from pyramid import httpexceptions
from pyramid.events import NewResponse
from pyramid.response import Response

from fkod.core.auth.passwords import MIN_LENGTH as PASSWORD_MIN_LENGTH
from fkod.core.errors import ApiError, raw_path

log = logging.getLogger(__name__)

# Everything the pages load comes from this application: no inline script or
# style, no CDN, no frames.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "object-src 'none'"
)

# Paths whose errors are HTML pages rather than the JSON envelope: the portal,
# the marketplace pages, and the two pages that account mail links to.
PORTAL_PATHS = r"^(/portal(/.*)?|/marketplace(/.*)?|/password-reset|/verify-email)$"

ENVIRONMENT = jinja2.Environment(
    loader=jinja2.PackageLoader("fkod.portal", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def format_time(moment) -> str:
    """Format a naive UTC datetime as ``2026-01-31 12:00:00 UTC``, and None as an en dash."""
    if moment is None:
        return "–"
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


ENVIRONMENT.filters["time"] = format_time


STATIC_PREFIX = "/portal/static/"


def add_security_headers(event) -> None:
    """Add the security headers to every response of a portal path, redirects and errors too."""
    request, response = event.request, event.response
    path = request.environ.get("PATH_INFO", "")
    if not re.match(PORTAL_PATHS, path):
        return
    headers = response.headers
    headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    headers["X-Frame-Options"] = "DENY"
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Referrer-Policy"] = "same-origin"
    if not path.startswith(STATIC_PREFIX):
        # Every page carries the session's CSRF token in its forms, and some a
        # secret shown once, so no page is stored by a browser or a proxy.
        headers["Cache-Control"] = "no-store"


def base_context(request) -> dict:
    """Return the values every template may use: the session, the member and the flash."""
    session = request.portal_session
    member = getattr(request, "portal_member", None)
    return {
        "request": request,
        "csrf_token": session.csrf_token,
        "member": member,
        "flash_messages": session.pop_flash(),
        "stylesheet_url": request.static_path("fkod.portal:static/portal.css"),
        "script_url": request.static_path("fkod.portal:static/portal.js"),
        "nav": None,
        "password_min_length": PASSWORD_MIN_LENGTH,
    }


def render(request, template: str, status: int = 200, **values) -> Response:
    """Render ``template`` with the base context and ``values`` as an HTML response."""
    context = base_context(request)
    context.update(values)
    body = ENVIRONMENT.get_template(template).render(**context)
    return Response(body, status=status, content_type="text/html", charset="utf-8")


def error_page(request, status: int, title: str, message: str) -> Response:
    try:
        return render(request, "error.html", status=status, title=title, message=message,
                      status_code=status)
    except Exception:
        # The session or the database may be what failed, so show the page without them.
        log.error("error page rendered without the session", exc_info=True)
        body = ENVIRONMENT.get_template("bare_error.html").render(title=title, message=message)
        return Response(body, status=status, content_type="text/html", charset="utf-8")


# Exception views, limited to the portal's paths ---------------------------------


def http_exception_page(exc: httpexceptions.HTTPException, request):
    if exc.status_int < 400:
        return exc
    if exc.status_int == 404:
        return error_page(request, 404, "Page not found",
                          f"There is no page at {raw_path(request)}. Check the address, or go "
                          "back to the dashboard.")
    if exc.status_int == 403:
        return error_page(request, 403, "Access denied", exc.detail or exc.explanation)
    if exc.status_int == 405:
        return error_page(request, 405, "Method not allowed",
                          f"This page does not accept {request.method} requests.")
    return error_page(request, exc.status_int, exc.title, exc.detail or exc.explanation)


def api_error_page(exc: ApiError, request):
    """Render a service error no form handled, such as a 404 for another partner's key."""
    titles = {403: "Access denied", 404: "Not found", 409: "Conflict",
              429: "Too many requests"}
    response = error_page(request, exc.status, titles.get(exc.status, "Request failed"),
                          exc.message)
    for name, value in exc.headers.items():
        if name != "WWW-Authenticate":
            response.headers[name] = value
    return response


def database_unavailable_page(exc, request):
    log.warning("database unavailable", extra={"error": str(exc.orig)[:200]})
    response = error_page(request, 503, "Service unavailable",
                          "The database is unavailable; try again in a few seconds.")
    response.headers["Retry-After"] = "5"
    return response


def internal_error_page(exc: Exception, request):
    log.error("unhandled exception", exc_info=exc)
    return error_page(request, 500, "Something went wrong",
                      f"An internal error occurred. Request id: {request.request_id}.")


def includeme(config):
    config.add_subscriber(add_security_headers, NewResponse)
    for view, context in (
        (http_exception_page, httpexceptions.HTTPException),
        (api_error_page, ApiError),
        (database_unavailable_page, sqlalchemy.exc.OperationalError),
        (internal_error_page, Exception),
    ):
        config.add_exception_view(view, context=context, path_info=PORTAL_PATHS)
