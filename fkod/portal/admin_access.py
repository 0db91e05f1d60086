"""The admin console's session, access checks, rendering and error pages.

Admins are ``admin_users``, never partner users, so the console has its own
signed cookie, ``fkod_admin_session``: path ``/admin``, HttpOnly,
SameSite=Strict, Secure in production, signed under its own salt, and valid
for ``ADMIN_SESSION_TTL_SECONDS``. It carries its own CSRF token. A partner's
portal cookie never opens a console page, and the console's cookie is never
sent to the portal or the JSON API.
"""

from __future__ import annotations

import re
import secrets
import time

import sqlalchemy.exc
from pyramid import httpexceptions
from pyramid.events import NewResponse
from pyramid.httpexceptions import HTTPForbidden, HTTPSeeOther
from pyramid.response import Response

from fkod.admin.auth import AdminPrincipal, admin_role_permits
from fkod.core.auth.models import AdminUser
from fkod.core.errors import ApiError, raw_path
from fkod.portal import rendering
from fkod.portal.session import PortalSession, make_cookie_profile

ADMIN_COOKIE_NAME = "fkod_admin_session"
# How long an admin sign-in lasts, in seconds: shorter than a partner's.
ADMIN_SESSION_TTL_SECONDS = 8 * 3600
ADMIN_PATHS = r"^/admin(/.*)?$"


def make_admin_cookie_profile(settings):
    return make_cookie_profile(settings, cookie_name=ADMIN_COOKIE_NAME,
                               salt="fkod.admin.session", samesite="Strict", path="/admin",
                               max_age=ADMIN_SESSION_TTL_SECONDS)


class AdminSession(PortalSession):
    """The console session of one request: the admin, the sign-in time, CSRF token, flash."""

    PROFILE_KEY = "admin.cookie_profile"

    def user(self):
        # The partner user of the portal session never exists in this cookie.
        return None

    def admin(self) -> AdminUser | None:
        """Return the signed-in, active admin, or None when the session has ended."""
        admin_id = self.data.get("admin_id")
        signed_in_at = self.data.get("signed_in_at")
        if not isinstance(admin_id, int) or not isinstance(signed_in_at, int):
            return None
        if signed_in_at + ADMIN_SESSION_TTL_SECONDS <= time.time():
            return None
        admin = self.request.dbsession.get(AdminUser, admin_id)
        if admin is None or admin.status != "active":
            return None
        return admin

    def log_in_admin(self, admin: AdminUser) -> None:
        # A new CSRF token at sign-in, so a token seen before it is worthless after it.
        self.data = {"admin_id": admin.id, "signed_in_at": int(time.time()),
                     "csrf": secrets.token_urlsafe(32), "flash": self.data.get("flash", [])}
        self.changed = True


def admin_session(request) -> AdminSession:
    session = AdminSession(request)
    request.add_response_callback(lambda _request, response: session.save(response))
    return session


def admin_can(admin: AdminUser | None, permission: str) -> bool:
    return admin is not None and admin_role_permits(admin.role, permission)


def require_admin(request, permission: str | None = None) -> AdminUser:
    """Return the signed-in admin, or raise a redirect to sign-in or a 403 page.

    A POST must also carry the console session's CSRF token. The permission
    is checked as the admin API's operation checks it.
    """
    admin = request.admin_session.admin()
    if admin is None:
        target = request.path_qs if request.method == "GET" else "/admin"
        raise HTTPSeeOther(location=request.route_path("admin_console_login",
                                                       _query={"next": target}))
    check_admin_csrf(request)
    # fkod.core.audit records actions of a request with an ``admin`` as the admin's.
    request.admin = admin
    request.environ["fkod.principal"] = AdminPrincipal(admin_id=admin.id)
    if permission is not None and not admin_role_permits(admin.role, permission):
        raise HTTPForbidden(f"The admin role {admin.role} does not grant the permission "
                            f"{permission}. Ask a superadmin.")
    return admin


def check_admin_csrf(request) -> None:
    if request.method != "POST":
        return
    if not request.admin_session.check_csrf(request.POST.get("csrf_token")):
        raise HTTPForbidden("The form expired or did not come from this site. Reload the page "
                            "and submit it again.")


def safe_admin_next(value: str | None) -> str:
    """Return ``value`` when it is a local path of the console, else the console's home."""
    if isinstance(value, str) and re.match(r"^/admin(/|\?|$)", value) and "//" not in value \
            and "\\" not in value and value.isprintable():
        return value
    return "/admin"


# Rendering ------------------------------------------------------------------------------


def render_admin(request, template: str, status: int = 200, **values) -> Response:
    """Render a console template with the console's base context as an HTML response."""
    session = request.admin_session
    admin = getattr(request, "admin", None)
    context = {
        "request": request,
        "csrf_token": session.csrf_token,
        "admin": admin,
        "can": lambda permission: admin_can(admin, permission),
        "flash_messages": session.pop_flash(),
        "stylesheet_url": request.static_path("fkod.portal:static/portal.css"),
        "admin_stylesheet_url": request.static_path("fkod.portal:static/admin.css"),
        "script_url": request.static_path("fkod.portal:static/portal.js"),
        "nav": None,
    }
    context.update(values)
    body = rendering.ENVIRONMENT.get_template(template).render(**context)
    return Response(body, status=status, content_type="text/html", charset="utf-8")


def admin_error_page(request, status: int, title: str, message: str) -> Response:
    try:
        return render_admin(request, "admin/error.html", status=status, title=title,
                            message=message, status_code=status)
    except Exception:
        rendering.log.error("admin error page rendered without the session", exc_info=True)
        body = rendering.ENVIRONMENT.get_template("bare_error.html").render(
            title=title, message=message)
        return Response(body, status=status, content_type="text/html", charset="utf-8")


def _http_exception_page(exc: httpexceptions.HTTPException, request):
    if exc.status_int < 400:
        return exc
    if exc.status_int == 404:
        return admin_error_page(request, 404, "Page not found",
                                f"There is no page at {raw_path(request)}.")
    if exc.status_int == 403:
        return admin_error_page(request, 403, "Access denied", exc.detail or exc.explanation)
    if exc.status_int == 405:
        return admin_error_page(request, 405, "Method not allowed",
                                f"This page does not accept {request.method} requests.")
    return admin_error_page(request, exc.status_int, exc.title, exc.detail or exc.explanation)


def _api_error_page(exc: ApiError, request):
    titles = {403: "Access denied", 404: "Not found", 409: "Conflict",
              429: "Too many requests"}
    response = admin_error_page(request, exc.status, titles.get(exc.status, "Request failed"),
                                exc.message)
    for name, value in exc.headers.items():
        if name != "WWW-Authenticate":
            response.headers[name] = value
    return response


def _database_unavailable_page(exc, request):
    rendering.log.warning("database unavailable", extra={"error": str(exc.orig)[:200]})
    response = admin_error_page(request, 503, "Service unavailable",
                                "The database is unavailable; try again in a few seconds.")
    response.headers["Retry-After"] = "5"
    return response


def _internal_error_page(exc: Exception, request):
    rendering.log.error("unhandled exception", exc_info=exc)
    return admin_error_page(request, 500, "Something went wrong",
                            f"An internal error occurred. Request id: {request.request_id}.")


def _add_security_headers(event) -> None:
    """Give every console response the portal's security headers, and forbid caching."""
    path = event.request.environ.get("PATH_INFO", "")
    if not re.match(ADMIN_PATHS, path):
        return
    headers = event.response.headers
    headers["Content-Security-Policy"] = rendering.CONTENT_SECURITY_POLICY
    headers["X-Frame-Options"] = "DENY"
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Referrer-Policy"] = "same-origin"
    headers["Cache-Control"] = "no-store"


def includeme(config):
    config.registry["admin.cookie_profile"] = make_admin_cookie_profile(config.get_settings())
    config.add_request_method(admin_session, "admin_session", reify=True)
    config.add_subscriber(_add_security_headers, NewResponse)
    for view, context in (
        (_http_exception_page, httpexceptions.HTTPException),
        (_api_error_page, ApiError),
        (_database_unavailable_page, sqlalchemy.exc.OperationalError),
        (_internal_error_page, Exception),
    ):
        config.add_exception_view(view, context=context, path_info=ADMIN_PATHS)
