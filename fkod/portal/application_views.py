"""OAuth application pages: list, create (the secret shown once), edit, rotate the secret, delete.

The forms are loaded with the API's ``CreateApplicationBody`` and
``UpdateApplicationBody`` and saved by :mod:`fkod.developers.applications`,
as ``/api/developers/applications`` does.
"""

from __future__ import annotations

from pyramid.httpexceptions import HTTPSeeOther

from fkod.core.api import paginate
from fkod.core.auth.oauth_models import OAuthClient
from fkod.core.errors import ApiError
from fkod.core.ids import parse_id
from fkod.developers import applications
from fkod.developers.schemas import (
    CLIENT_TYPES,
    DEFAULT_GRANT_TYPES,
    GRANT_TYPES,
    ApplicationQuery,
    CreateApplicationBody,
    UpdateApplicationBody,
)
from fkod.portal import forms
from fkod.portal.access import require_member
from fkod.portal.charts import load_query
from fkod.portal.rendering import render

ROUTES = (
    ("portal_applications", "/portal/developers/applications", "application_list",
     ("GET", "POST"), "List the partner's OAuth applications, or create one"),
    ("portal_application_new", "/portal/developers/applications/new", "application_new",
     ("GET",), "Show the form that creates an OAuth application"),
    ("portal_application", "/portal/developers/applications/{id}", "application_detail",
     ("GET", "POST"), "Show or edit one OAuth application"),
    ("portal_application_rotate", "/portal/developers/applications/{id}/rotate-secret",
     "application_rotate", ("POST",), "Give a confidential application a new secret"),
    ("portal_application_delete", "/portal/developers/applications/{id}/delete",
     "application_delete", ("POST",),
     "Delete an OAuth application and revoke its tokens"),
)

# Fields typed one value a line.
LINE_LISTS = ("redirect_uris", "allowed_origins")
LINKS = ("logo_uri", "client_uri", "policy_uri", "tos_uri")


def _application_id(request) -> int:
    return parse_id("app", request.matchdict["id"], noun="application")


def _form_data(request, *, creating: bool) -> tuple[forms.Form, dict]:
    """Return the typed form and the body for the API's schema."""
    posted = forms.posted_values(request, lists=("scopes", "grant_types"))
    values = {name: posted.get(name, "") for name in ("name", "client_type", "mode",
                                                       *LINE_LISTS, *LINKS)}
    values["scopes"] = posted["scopes"]
    values["grant_types"] = posted["grant_types"]
    form = forms.Form(values=values)

    data = {"name": posted.get("name", ""), "scopes": posted["scopes"],
            "grant_types": posted["grant_types"]}
    for name in LINE_LISTS:
        data[name] = [line.strip() for line in posted.get(name, "").splitlines()
                      if line.strip()]
    for name in LINKS:
        # An empty link field clears the link on an edit.
        data[name] = posted.get(name) or None
    if creating:
        for name in ("client_type", "mode"):
            if name in posted:
                data[name] = posted[name]
    if not data["grant_types"]:
        form.add_error("grant_types", "Choose at least one grant type.")
    if not data["scopes"]:
        form.add_error("scopes", "Choose at least one scope.")
    return form, data


def _load(schema, data: dict, form: forms.Form) -> dict | None:
    """Load ``data``, with an error about one line of a list shown at the list's field."""
    own = {name: list(messages) for name, messages in form.errors.items()}
    loaded = forms.load(schema, data, form)
    # A field this page already explained keeps only that message.
    form.errors.update(own)
    for key in [key for key in form.errors if "." in key]:
        field, line = key.split(".", 1)
        for message in form.errors.pop(key):
            number = f"Line {int(line) + 1}: " if line.isdigit() else ""
            form.add_error(field, number + message)
    return loaded if form.valid else None


def _form_page(request, template: str, form: forms.Form, status: int = 200, **values):
    scopes = request.registry["scope_catalog"].grantable()
    return render(request, template, status=status, form=form,
                  scope_options=[(scope.name, scope.description) for scope in scopes],
                  grant_options=[(grant, "") for grant in GRANT_TYPES],
                  client_types=CLIENT_TYPES, nav="developers", **values)


def application_list(request):
    if request.method == "POST":
        return _create(request)
    member = require_member(request, "api_keys:read")
    query = load_query(request, ApplicationQuery())
    select = applications.applications_query(member.partner, query.get("mode"))
    page = paginate(select, OAuthClient.id, query, request.dbsession)
    described = applications.describe_many(request.dbsession, page.items)
    return render(request, "applications.html", applications=described,
                  next_cursor=page.next_cursor, can_write=member.can("api_keys:write"),
                  nav="developers")


def application_new(request):
    require_member(request, "api_keys:write")
    form = forms.Form(values={"client_type": "confidential", "mode": "test", "scopes": [],
                              "grant_types": list(DEFAULT_GRANT_TYPES)})
    return _form_page(request, "application_new.html", form)


def _create(request):
    member = require_member(request, "api_keys:write")
    form, data = _form_data(request, creating=True)
    loaded = _load(CreateApplicationBody(), data, form)
    if loaded is None:
        request.tm.doom()
        return _form_page(request, "application_new.html", form, status=400)
    try:
        application, secret = applications.create_application(request, member.partner,
                                                               dict(loaded))
    except ApiError as error:
        request.tm.doom()
        forms.add_api_error(form, error)
        return _form_page(request, "application_new.html", form, status=error.status)
    described = applications.describe_one(request.dbsession, application)
    return render(request, "application_secret.html", application=described, secret=secret,
                  created=True, nav="developers")


def _edit_values(described: dict) -> dict:
    values = {name: described[name] for name in ("name", "scopes", "grant_types")}
    for name in LINE_LISTS:
        values[name] = "\n".join(described[name])
    for name in LINKS:
        values[name] = described["links"][name] or ""
    return values


def application_detail(request):
    if request.method == "POST":
        return _update(request)
    member = require_member(request, "api_keys:read")
    application = applications.get_application(request, _application_id(request))
    described = applications.describe_one(request.dbsession, application)
    return _form_page(request, "application_detail.html",
                      forms.Form(values=_edit_values(described)), application=described,
                      can_write=member.can("api_keys:write"))


def _update(request):
    member = require_member(request, "api_keys:write")
    application_id = _application_id(request)
    application = applications.get_application(request, application_id)
    described = applications.describe_one(request.dbsession, application)
    form, data = _form_data(request, creating=False)
    loaded = _load(UpdateApplicationBody(), data, form)
    if loaded is not None:
        try:
            applications.update_application(request, application_id, dict(loaded))
        except ApiError as error:
            forms.add_api_error(form, error)
        else:
            request.portal_session.flash(f"The application {loaded['name']} is saved.")
            return HTTPSeeOther(location=request.route_path(
                "portal_application", id=f"app_{application_id}"))
    request.tm.doom()
    return _form_page(request, "application_detail.html", form, status=400,
                      application=described, can_write=member.can("api_keys:write"))


def application_rotate(request):
    require_member(request, "api_keys:write")
    application_id = _application_id(request)
    try:
        application, secret = applications.rotate_secret(request, application_id)
    except ApiError as error:
        if error.status == 404:
            raise
        request.tm.doom()
        request.portal_session.flash(f"The secret was not rotated: {error.message}", "error")
        return HTTPSeeOther(location=request.route_path(
            "portal_application", id=f"app_{application_id}"))
    described = applications.describe_one(request.dbsession, application)
    return render(request, "application_secret.html", application=described, secret=secret,
                  created=False, nav="developers")


def application_delete(request):
    require_member(request, "api_keys:write")
    application_id = _application_id(request)
    application = applications.get_application(request, application_id)
    name = applications.fields_of(application)["name"]
    applications.delete_application(request, application_id)
    request.portal_session.flash(f"The application {name} is deleted.")
    return HTTPSeeOther(location=request.route_path("portal_applications"))
