"""The HTML pages of the authorization endpoint: login, consent and error.

The templates live here as strings, so they ship with the module. Jinja2
escapes every value it inserts.
"""

from __future__ import annotations

import jinja2
from pyramid.response import Response

_LAYOUT = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{% block title %}{% endblock %} - F-KOD</title>
<style>
body { font-family: system-ui, sans-serif; background: #f4f5f7; color: #1d2330; margin: 0; }
main { max-width: 28rem; margin: 4rem auto; background: #fff; padding: 2rem;
       border-radius: 8px; box-shadow: 0 1px 4px rgba(0, 0, 0, .12); }
h1 { font-size: 1.3rem; margin-top: 0; }
label { display: block; margin: .8rem 0 .3rem; font-weight: 600; }
input[type=email], input[type=password], input[type=text] {
  width: 100%; box-sizing: border-box; padding: .5rem; font-size: 1rem; }
button { padding: .6rem 1.2rem; font-size: 1rem; margin: 1rem .5rem 0 0; cursor: pointer; }
.primary { background: #2456d3; color: #fff; border: 0; border-radius: 4px; }
.secondary { background: #fff; border: 1px solid #a0a6b1; border-radius: 4px; }
.error { background: #fdecea; color: #8a1c12; padding: .7rem; border-radius: 4px; }
.badge { display: inline-block; font-size: .8rem; padding: .1rem .5rem; border-radius: 1rem; }
.verified { background: #e3f5e8; color: #17622f; }
.unverified { background: #fff4e0; color: #7a4a00; }
.test-mode { background: #eef0f4; color: #404653; }
.app { display: flex; align-items: center; gap: 1rem; margin-bottom: 1rem; }
.app img { width: 56px; height: 56px; object-fit: contain; border-radius: 8px; }
ul.scopes { padding-left: 1.2rem; }
ul.scopes li { margin: .4rem 0; }
.muted { color: #5b6270; font-size: .9rem; }
</style>
</head>
<body><main>{% block body %}{% endblock %}</main></body>
</html>
"""

_LOGIN = """{% extends "layout" %}
{% block title %}Log in{% endblock %}
{% block body %}
<h1>Log in to F-KOD</h1>
<p class="muted">{{ client_name }} asks to connect to your F-KOD account.</p>
{% if error %}<p class="error" role="alert">{{ error }}</p>{% endif %}
<form method="post" action="{{ action }}">
<input type="hidden" name="csrf_token" value="{{ csrf_token }}">
<input type="hidden" name="action" value="login">
<label for="email">Email</label>
<input type="email" id="email" name="email" value="{{ email }}" required autocomplete="username">
<label for="password">Password</label>
<input type="password" id="password" name="password" required autocomplete="current-password">
{% if ask_totp %}
<label for="totp_code">Code from your authenticator app</label>
<input type="text" id="totp_code" name="totp_code" inputmode="numeric"
       autocomplete="one-time-code" pattern="[0-9]{6}" required>
{% endif %}
<button type="submit" class="primary">Log in</button>
</form>
{% endblock %}
"""

_CONSENT = """{% extends "layout" %}
{% block title %}Authorize {{ client_name }}{% endblock %}
{% block body %}
<div class="app">
{% if logo_uri %}<img src="{{ logo_uri }}" alt="">{% endif %}
<div>
<h1>{{ client_name }}</h1>
<div>by {{ company_name }}
{% if verified %}<span class="badge verified">Verified partner</span>
{% else %}<span class="badge unverified">Unverified partner</span>{% endif %}
{% if not livemode %}<span class="badge test-mode">Test mode</span>{% endif %}
</div>
{% if links %}<div class="muted">{% for link in links %}<a href="{{ link.url }}" target="_blank"
 rel="noopener noreferrer">{{ link.label }}</a>{% if not loop.last %} · {% endif %}{% endfor %}
</div>{% endif %}
</div>
</div>
<p>{{ client_name }} asks for access to your F-KOD account <strong>{{ email }}</strong>:</p>
{% if scopes %}
<ul class="scopes">
{% for scope in scopes %}<li><strong>{{ scope.name }}</strong>: {{ scope.description }}</li>
{% endfor %}
</ul>
{% else %}
<p class="muted">No access beyond knowing that you use F-KOD.</p>
{% endif %}
<form method="post" action="{{ action }}">
<input type="hidden" name="csrf_token" value="{{ csrf_token }}">
<button type="submit" name="action" value="approve" class="primary">Allow</button>
<button type="submit" name="action" value="deny" class="secondary">Deny</button>
</form>
<p class="muted">You can withdraw this access at any time from your account.</p>
{% endblock %}
"""

_ERROR = """{% extends "layout" %}
{% block title %}Authorization failed{% endblock %}
{% block body %}
<h1>This authorization request cannot go on</h1>
<p class="error" role="alert">{{ message }}</p>
{% if code %}<p class="muted">Error code: {{ code }}</p>{% endif %}
<p class="muted">Return to the application and try again, or contact its developer.</p>
{% endblock %}
"""

_ENVIRONMENT = jinja2.Environment(
    loader=jinja2.DictLoader({"layout": _LAYOUT, "login": _LOGIN, "consent": _CONSENT,
                              "error": _ERROR}),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


def render(name: str, status: int = 200, **values) -> Response:
    """Render one page as an HTML response that no cache keeps and no frame shows."""
    response = Response(_ENVIRONMENT.get_template(name).render(**values), status=status,
                        content_type="text/html", charset="utf-8")
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'unsafe-inline'; img-src https: http:; "
        "frame-ancestors 'none'")
    return response
