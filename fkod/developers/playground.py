"""The API playground: Swagger UI for a signed-in developer at ``/developers/playground``.

Sign-in reuses the browser session of the OAuth pages (:class:`BrowserSession`:
a signed, HttpOnly, SameSite=Lax cookie checked against the user's sessions),
under its own cookie limited to ``/developers``, because the OAuth cookie is
only sent to ``/oauth``. The page lists the partner's active test-mode keys by
prefix, because secrets are stored only as hashes. The developer pastes the
full test key into Swagger UI's Authorize dialog. With the api_keys:write
permission, a button instead creates a test-mode key that expires after
PLAYGROUND_KEY_TTL_SECONDS, and the page pre-authorizes Swagger UI with its
secret. A live key never reaches the page.
Swagger UI's assets come from the ``swagger-ui-bundle-v2`` package and are
served by this application; the Content-Security-Policy allows scripts and
styles from this origin only.
"""

from __future__ import annotations

import datetime as dt
import secrets
from urllib.parse import urlencode, urlsplit

import jinja2
import sqlalchemy as sa
import swagger_ui_bundle
from pyramid.httpexceptions import HTTPSeeOther
from pyramid.response import Response
from webob.cookies import SignedCookieProfile

from fkod.core.auth import accounts
from fkod.core.auth.models import ApiKey, Partner, PartnerMember
from fkod.core.auth.passwords import MAX_LENGTH as MAX_PASSWORD_LENGTH
from fkod.core.auth.roles import role_permits
from fkod.core.auth.security import BLOCKED_PARTNER_STATUSES
from fkod.core.db import utcnow
from fkod.core.errors import ApiError
from fkod.core.oauth.session import SESSION_TTL_SECONDS, BrowserSession
from fkod.partners.api_keys import create_api_key

PLAYGROUND_PATH = "/developers/playground"
KEY_PATH = "/developers/playground/key"
# Lifetime of a key created from the playground page.
PLAYGROUND_KEY_TTL_SECONDS = 3600
LOGIN_PATH = "/developers/login"
ASSETS_PATH = "/developers/playground/assets"
COOKIE_NAME = "fkod_developer_session"
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")

# Starts Swagger UI on the document of this server. Served as a file, so the
# page needs no inline script.
INIT_SCRIPT = """window.addEventListener("load", function () {
  var root = document.getElementById("swagger-ui");
  var apiKey = root.dataset.apiKey;
  window.ui = SwaggerUIBundle({
    url: root.dataset.documentUrl,
    onComplete: function () {
      if (apiKey) {
        window.ui.preauthorizeApiKey("apiKey", apiKey);
      }
    },
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    tryItOutEnabled: true,
    persistAuthorization: false,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout"
  });
});
"""

_TEMPLATES = jinja2.Environment(loader=jinja2.DictLoader({
    "playground": """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="referrer" content="no-referrer">
<title>API playground - F-KOD</title>
<link rel="stylesheet" href="{{ assets }}/swagger-ui.css">
</head>
<body>
<header>
<h1>F-KOD API playground</h1>
<p>Signed in as {{ email }}. Requests go to this server. Choose Authorize and paste the full
secret of one of your test-mode keys; only test keys belong here.</p>
{% if keys %}<p>Your active test-mode keys:</p>
<ul>{% for key in keys %}<li>{{ key.key_name }}: {{ key.key_prefix }}…</li>{% endfor %}</ul>
{% else %}<p>Your partner has no active test-mode key; create one with
POST /api/partners/api-keys and "mode": "test".</p>{% endif %}
{% if created %}<p role="status">Swagger UI is authorized with the new test-mode key
{{ created.key_prefix }}…, which expires at {{ created.expires_at }} UTC.</p>{% endif %}
{% if error %}<p role="alert">{{ error }}</p>{% endif %}
{% if can_create %}<form method="post" action="{{ create_action }}">
<input type="hidden" name="csrf_token" value="{{ csrf_token }}">
<button type="submit">Create a test-mode key for one hour and authorize with it</button>
</form>{% endif %}
</header>
<div id="swagger-ui" data-document-url="{{ document_url }}"
{%- if secret %} data-api-key="{{ secret }}"{% endif %}></div>
<script src="{{ assets }}/swagger-ui-bundle.js"></script>
<script src="{{ init_script }}"></script>
</body>
</html>
""",
    "login": """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="referrer" content="no-referrer">
<title>Sign in - F-KOD developers</title>
</head>
<body>
<h1>Sign in to the F-KOD API playground</h1>
{% if error %}<p role="alert">{{ error }}</p>{% endif %}
<form method="post" action="{{ action }}">
<input type="hidden" name="csrf_token" value="{{ csrf_token }}">
<label for="email">Email</label>
<input type="email" id="email" name="email" value="{{ email }}" required autocomplete="username">
<label for="password">Password</label>
<input type="password" id="password" name="password" required autocomplete="current-password">
<label for="totp_code">Code from your authenticator app, if you use one</label>
<input type="text" id="totp_code" name="totp_code" inputmode="numeric"
       autocomplete="one-time-code">
<button type="submit">Sign in</button>
</form>
</body>
</html>
"""}), autoescape=True, undefined=jinja2.StrictUndefined)


def make_cookie_profile(settings) -> SignedCookieProfile:
    return SignedCookieProfile(
        secret=settings["fkod.secrets.api_key_pepper"],
        salt="fkod.developers.session",
        cookie_name=COOKIE_NAME,
        secure=settings["fkod.environment"] == "production",
        httponly=True,
        samesite="Lax",
        path="/developers",
        max_age=SESSION_TTL_SECONDS,
    )


class DeveloperSession(BrowserSession):
    """The OAuth pages' browser session, stored in the cookie of the developer pages."""

    def __init__(self, request):
        self.request = request
        self._profile = request.registry["developers.cookie_profile"].bind(request)
        value = self._profile.get_value()
        self.data = value if isinstance(value, dict) else {}
        self.changed = False
        if not isinstance(self.data.get("csrf"), str):
            self.data = {"csrf": secrets.token_urlsafe(32)}
            self.changed = True


def _page(name: str, status: int = 200, **values) -> Response:
    response = Response(_TEMPLATES.get_template(name).render(**values), status=status,
                        content_type="text/html", charset="utf-8")
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return response


def _safe_return_path(value) -> str:
    """Return ``value`` when it is a path under /developers/, else the playground path."""
    if not isinstance(value, str) or len(value) > 500:
        return PLAYGROUND_PATH
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or not value.startswith("/developers/") or "\\" in value:
        return PLAYGROUND_PATH
    return value


def _sign_in_redirect(request, session) -> Response:
    location = f"{LOGIN_PATH}?{urlencode({'return_to': PLAYGROUND_PATH})}"
    response = HTTPSeeOther(location=location)
    session.save(response)
    return response


def _key_partner(request, user) -> Partner | None:
    """Return the first partner of ``user`` whose role there may create API keys.

    A deleted or suspended partner is skipped.
    """
    memberships = request.dbsession.scalars(
        sa.select(PartnerMember).where(PartnerMember.user_id == user.id)
        .order_by(PartnerMember.id)).all()
    for membership in memberships:
        if not role_permits(membership.role, "api_keys:write"):
            continue
        partner = request.dbsession.get(Partner, membership.partner_id)
        if partner is not None and partner.deleted_at is None \
                and partner.status not in BLOCKED_PARTNER_STATUSES:
            return partner
    return None


def _playground_page(request, session, user, *, status=200, created=None, secret=None,
                     error=None) -> Response:
    partner_ids = sa.select(PartnerMember.partner_id).where(PartnerMember.user_id == user.id)
    keys = request.dbsession.scalars(
        sa.select(ApiKey).where(ApiKey.partner_id.in_(partner_ids), ApiKey.livemode.is_(False),
                                ApiKey.status == "active", ApiKey.revoked_at.is_(None))
        .order_by(ApiKey.id)).all()
    response = _page("playground", status=status, email=user.email, keys=keys,
                     assets=ASSETS_PATH, init_script=f"{PLAYGROUND_PATH}/init.js",
                     document_url="/api/openapi.json", csrf_token=session.csrf_token,
                     create_action=KEY_PATH, can_create=_key_partner(request, user) is not None,
                     created=created, secret=secret, error=error)
    session.save(response)
    return response


def playground(request):
    session = DeveloperSession(request)
    user = session.user()
    if user is None:
        return _sign_in_redirect(request, session)
    return _playground_page(request, session, user)


def create_playground_key(request):
    """Create a test-mode key with every grantable scope that expires in an hour, and show it."""
    session = DeveloperSession(request)
    user = session.user()
    if user is None:
        return _sign_in_redirect(request, session)
    if not session.check_csrf(request.POST.get("csrf_token")):
        return _playground_page(request, session, user, status=403,
                                error="The form expired; reload the page and try again.")
    partner = _key_partner(request, user)
    if partner is None:
        return _playground_page(request, session, user, status=403,
                                error="Your role cannot create API keys; ask an owner or "
                                      "admin of your partner for a test-mode key.")
    request.user = user
    scopes = [scope.name for scope in request.registry["scope_catalog"].grantable()]
    expires_at = utcnow().replace(tzinfo=dt.UTC) + dt.timedelta(
        seconds=PLAYGROUND_KEY_TTL_SECONDS)
    try:
        key, secret = create_api_key(request, partner, {
            "key_name": "API playground", "scopes": scopes, "mode": "test",
            "expires_at": expires_at})
    except ApiError as error:
        return _playground_page(request, session, user, status=error.status,
                                error=error.message)
    created = {"key_prefix": key.key_prefix,
               "expires_at": key.expires_at.strftime("%Y-%m-%d %H:%M")}
    return _playground_page(request, session, user, created=created, secret=secret)


def init_script(_request):
    response = Response(INIT_SCRIPT, content_type="text/javascript", charset="utf-8")
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


def login(request):
    session = DeveloperSession(request)
    return_to = _safe_return_path(request.GET.get("return_to"))
    action = f"{LOGIN_PATH}?{urlencode({'return_to': return_to})}"

    def form(error=None, email="", status=200):
        response = _page("login", status=status, action=action, csrf_token=session.csrf_token,
                         error=error, email=email)
        session.save(response)
        return response

    if request.method == "GET":
        if session.user() is not None:
            return HTTPSeeOther(location=return_to)
        return form()
    if not session.check_csrf(request.POST.get("csrf_token")):
        return form(error="The form expired; sign in again.", status=403)
    email = request.POST.get("email", "")[:255]
    password = request.POST.get("password", "")
    totp_code = request.POST.get("totp_code") or None
    if not email.strip() or not password or len(password) > MAX_PASSWORD_LENGTH:
        return form(error="Enter your email and password.", email=email, status=400)
    try:
        result = accounts.log_in(request, email=email, password=password, totp_code=totp_code,
                                 partner_id=None)
    except ApiError as error:
        return form(error=error.message, email=email, status=error.status)
    if isinstance(result, ApiError):
        message = "Enter the code from your authenticator app." \
            if result.code == "totp_required" else "The email or password is wrong."
        return form(error=message, email=email, status=401)
    session.log_in(request.user)
    response = HTTPSeeOther(location=return_to)
    session.save(response)
    return response


def includeme(config):
    config.registry["developers.cookie_profile"] = make_cookie_profile(config.get_settings())
    config.add_route("developer_playground", PLAYGROUND_PATH)
    config.add_view(playground, route_name="developer_playground", request_method="GET")
    config.add_route("developer_playground_init", f"{PLAYGROUND_PATH}/init.js")
    config.add_view(init_script, route_name="developer_playground_init", request_method="GET")
    config.add_route("developer_playground_key", KEY_PATH)
    config.add_view(create_playground_key, route_name="developer_playground_key",
                    request_method="POST")
    config.add_route("developer_login", LOGIN_PATH)
    config.add_view(login, route_name="developer_login", request_method=("GET", "POST"))
    config.add_static_view(ASSETS_PATH.lstrip("/"), str(swagger_ui_bundle.swagger_ui_path),
                           cache_max_age=3600)
