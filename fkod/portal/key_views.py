"""API key pages: list, create (the secret shown once), detail with recent errors, rotate,
revoke."""

from __future__ import annotations

import sqlalchemy as sa
from pyramid.httpexceptions import HTTPSeeOther

from fkod.core.api import paginate
from fkod.core.auth.models import ApiKey
from fkod.core.errors import ApiError
from fkod.core.ids import parse_id
from fkod.core.metering.models import ApiUsage
from fkod.core.metering.report import errors_query
from fkod.developers.services import describe_failed_calls
from fkod.partners import api_keys
from fkod.partners.schemas import CreateApiKeyBody, RotateApiKeyBody
from fkod.portal import forms
from fkod.portal.access import require_member
from fkod.portal.charts import key_usage_chart
from fkod.portal.rendering import render

RECENT_ERRORS = 10
# The grace periods offered when a key is rotated, in seconds.
GRACE_PERIODS = ((0, "None: the current secret stops now"), (3600, "1 hour"),
                 (86400, "24 hours"), (7 * 86400, "7 days"))


def _key_id(request) -> int:
    return parse_id("key", request.matchdict["id"], noun="API key")


def _new_key_page(request, form: forms.Form, status: int = 200):
    scopes = request.registry["scope_catalog"].grantable()
    return render(request, "key_new.html", status=status, form=form, scopes=scopes,
                  nav="keys")


def key_list(request):
    if request.method == "POST":
        return _create_key(request)
    member = require_member(request, "api_keys:read")
    page = paginate(api_keys.api_keys_query(member.partner), ApiKey.id, forms.page_query(request),
                    request.dbsession)
    return render(request, "keys.html", keys=page.items, next_cursor=page.next_cursor,
                  key_state=api_keys.key_state, nav="keys")


def key_new(request):
    require_member(request, "api_keys:write")
    return _new_key_page(request, forms.Form(values={"mode": "test", "scopes": []}))


def _create_key(request):
    member = require_member(request, "api_keys:write")
    form = forms.Form()
    posted = forms.posted_values(request, lists=("scopes",))
    form.values = {"key_name": posted.get("key_name", ""), "mode": posted.get("mode", "test"),
                   "scopes": posted["scopes"]}
    data = {name: posted[name] for name in ("key_name", "mode", "scopes") if name in posted}
    if not data["scopes"]:
        form.add_error("scopes", "Choose at least one scope.")
    loaded = forms.load(CreateApiKeyBody(), data, form) if form.valid else None
    if loaded is not None:
        try:
            key, secret = api_keys.create_api_key(request, member.partner, dict(loaded))
        except ApiError as error:
            forms.add_api_error(form, error)
            request.tm.doom()
            return _new_key_page(request, form, status=error.status)
        return render(request, "key_secret.html", key=key, secret=secret, created=True,
                      nav="keys")
    request.tm.doom()
    return _new_key_page(request, form, status=400)


def key_detail(request):
    member = require_member(request, "api_keys:read")
    key = api_keys.get_api_key(request, _key_id(request))
    rows = request.dbsession.scalars(
        errors_query(sa.select(ApiUsage), api_key_id=key.id)
        .order_by(ApiUsage.created_at.desc(), ApiUsage.id.desc()).limit(RECENT_ERRORS)).all()
    return render(request, "key_detail.html", key=key, state=api_keys.key_state(key),
                  recent_errors=describe_failed_calls(request.dbsession, rows),
                  grace_periods=GRACE_PERIODS, can_write=member.can("api_keys:write"),
                  usage_chart=key_usage_chart(request.dbsession, key), nav="keys")


def key_rotate(request):
    require_member(request, "api_keys:write")
    key_id = _key_id(request)
    posted = forms.posted_values(request)
    forms.integer_field(posted, "grace_period_seconds")
    form = forms.Form()
    data = {"grace_period_seconds": posted.get("grace_period_seconds", 86400)}
    loaded = forms.load(RotateApiKeyBody(), data, form)
    if loaded is None:
        request.portal_session.flash(
            "The key was not rotated: " + " ".join(form.field_errors("grace_period_seconds")),
            "error")
        return HTTPSeeOther(location=request.route_path("portal_key", id=f"key_{key_id}"))
    try:
        key, secret = api_keys.rotate_api_key(request, key_id, loaded["grace_period_seconds"])
    except ApiError as error:
        if error.status == 404:
            raise
        request.tm.doom()
        request.portal_session.flash(f"The key was not rotated: {error.message}", "error")
        return HTTPSeeOther(location=request.route_path("portal_key", id=f"key_{key_id}"))
    return render(request, "key_secret.html", key=key, secret=secret, created=False,
                  nav="keys")


def key_revoke(request):
    require_member(request, "api_keys:write")
    key = api_keys.revoke_api_key(request, _key_id(request))
    request.portal_session.flash(f"The key {key.key_name} ({key.key_prefix}…) is revoked.")
    return HTTPSeeOther(location=request.route_path("portal_key", id=f"key_{key.id}"))
