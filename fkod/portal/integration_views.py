"""Integration pages: the partner's integrations, create and edit, review, installs and reviews.

The forms load with the schemas of ``/api/partners/integrations`` and save
through :mod:`fkod.marketplace.integrations`, so the editing rules and the
status machine are the API's. The configuration schema is typed as JSON, the
event types one per line, and the monthly price in US dollars.
"""

from __future__ import annotations

import decimal
import json

import marshmallow
from pyramid.httpexceptions import HTTPBadRequest, HTTPSeeOther

from fkod.core.api import paginate
from fkod.core.errors import ApiError
from fkod.core.ids import parse_id
from fkod.core.integrations import CATEGORIES, PRICING_MODELS
from fkod.marketplace import installs, integrations, reviews
from fkod.marketplace.install_schemas import ReplyBody
from fkod.marketplace.integration_schemas import (
    CreateIntegrationBody,
    IntegrationListQuery,
    UpdateIntegrationBody,
)
from fkod.marketplace.integrations import integration_public_id
from fkod.marketplace.models import Integration, IntegrationInstall, IntegrationReview
from fkod.portal import forms
from fkod.portal.access import require_member
from fkod.portal.rendering import render

ROUTES = (
    ("portal_integrations", "/portal/integrations", "integration_list", ("GET", "POST"),
     "List the partner's integrations, or create one"),
    ("portal_integration_new", "/portal/integrations/new", "integration_new", ("GET",),
     "Show the form that creates an integration"),
    ("portal_integration", "/portal/integrations/{id}", "integration_detail", ("GET",),
     "Show one integration with its review outcome and versions"),
    ("portal_integration_edit", "/portal/integrations/{id}/edit", "integration_edit",
     ("GET", "POST"),
     "Show the form that edits an integration, or save it"),
    ("portal_integration_submit", "/portal/integrations/{id}/submit", "integration_submit",
     ("POST",),
     "Send an integration to F-KOD's review"),
    ("portal_integration_installs", "/portal/integrations/{id}/installs",
     "integration_installs", ("GET",),
     "List an integration's installs"),
    ("portal_integration_reviews", "/portal/integrations/{id}/reviews", "integration_reviews",
     ("GET",),
     "List an integration's customer reviews"),
    ("portal_review_reply", "/portal/integrations/{id}/reviews/{review_id}/reply",
     "review_reply", ("POST",),
     "Reply to a customer review, replacing an earlier reply"),
)

# Text fields loaded as typed. A blank one is left out of a new integration,
# and an edit clears it (null) when the field is optional.
TEXT_FIELDS = ("name", "slug", "description", "category", "version", "release_notes",
               "logo_url", "documentation_url", "support_url", "support_email",
               "pricing_model", "price_per_call")
CENT = decimal.Decimal("0.01")
# Pages name the API's price_cents field "price", typed in US dollars.
PAGE_FIELDS = {"price_cents": "price"}


def _integration_id(request) -> int:
    return parse_id("int", request.matchdict["id"], noun="integration")


def _own_integration(request, member) -> Integration:
    return integrations.get_partner_integration(request, member.partner, _integration_id(request))


def _form_page(request, form: forms.Form, integration: Integration | None = None,
               status: int = 200):
    catalog = request.registry["scope_catalog"].grantable()
    return render(request, "integration_form.html", status=status, form=form,
                  integration=integration, scopes=catalog, categories=CATEGORIES,
                  pricing_models=PRICING_MODELS, nav="integrations")


def _values_of(integration: Integration, release_notes: str | None) -> dict:
    """Return an integration's fields as the form shows them."""
    values = {name: getattr(integration, name, None) or "" for name in TEXT_FIELDS
              if name != "release_notes"}
    values["release_notes"] = release_notes or ""
    values["price_per_call"] = "" if integration.price_per_call is None \
        else format(integration.price_per_call.normalize(), "f")
    values["price"] = "" if integration.price_cents is None \
        else str((decimal.Decimal(integration.price_cents) / 100).quantize(CENT))
    values["scopes"] = list(integration.scopes or [])
    values["event_types"] = "\n".join(integration.event_types or [])
    values["config_schema"] = "" if integration.config_schema is None \
        else json.dumps(integration.config_schema, indent=2, ensure_ascii=False)
    return values


def _posted_form(request) -> tuple[forms.Form, dict]:
    """Return the typed values and the data for the API's schema, with conversion errors."""
    posted = forms.posted_values(request, lists=("scopes",))
    raw = {name: request.POST.get(name, "") for name in
           (*TEXT_FIELDS, "price", "event_types", "config_schema")}
    raw = {name: value if isinstance(value, str) else "" for name, value in raw.items()}
    form = forms.Form(values={**raw, "scopes": posted["scopes"]})
    data: dict = {name: posted.get(name) for name in TEXT_FIELDS}
    data["scopes"] = posted["scopes"]
    data["event_types"] = [line.strip() for line in raw["event_types"].splitlines()
                           if line.strip()]

    schema_text = raw["config_schema"].strip()
    data["config_schema"] = None
    if schema_text:
        try:
            data["config_schema"] = json.loads(schema_text)
        except ValueError as error:
            form.add_error("config_schema", f"Not valid JSON: {error}.")

    price_text = raw["price"].strip().lstrip("$").strip()
    data["price_cents"] = None
    if price_text:
        try:
            amount = decimal.Decimal(price_text)
        except decimal.InvalidOperation:
            amount = None
        if amount is None or not amount.is_finite() or amount != amount.quantize(CENT):
            form.add_error("price", "Enter an amount in US dollars with at most two decimal "
                                    "places, such as 12.50.")
        else:
            data["price_cents"] = int(amount * 100)
    return form, data


def _load(schema, data: dict, form: forms.Form) -> dict | None:
    loaded = forms.load(schema, data, form)
    for api_name, page_name in PAGE_FIELDS.items():
        if api_name in form.errors:
            form.errors[page_name] = form.errors.pop(api_name)
    return loaded if form.valid else None


# List and create ---------------------------------------------------------------------------


def integration_list(request):
    if request.method == "POST":
        return _create(request)
    member = require_member(request, "integrations:read")
    try:
        query = IntegrationListQuery().load({name: request.GET[name] for name in
                                             ("limit", "cursor", "status") if name in request.GET})
    except marshmallow.ValidationError:
        raise HTTPBadRequest("Invalid page link. Go back to the first page.") from None
    page = integrations.list_partner_integrations(request, member.partner, query)
    return render(request, "integrations.html", integrations=page.items,
                  next_cursor=page.next_cursor, public_id=integration_public_id,
                  nav="integrations")


def integration_new(request):
    require_member(request, "integrations:write")
    return _form_page(request, forms.Form(values={"version": "1.0.0", "pricing_model": "free",
                                                  "scopes": []}))


def _create(request):
    member = require_member(request, "integrations:write")
    form, data = _posted_form(request)
    data = {name: value for name, value in data.items() if value is not None}
    loaded = _load(CreateIntegrationBody(), data, form)
    if loaded is None:
        request.tm.doom()
        return _form_page(request, form, status=400)
    try:
        created = integrations.create_integration(request, member.partner, dict(loaded))
    except ApiError as error:
        forms.add_api_error(form, error, PAGE_FIELDS)
        request.tm.doom()
        return _form_page(request, form, status=error.status)
    request.portal_session.flash(f"The integration {created.name} is created as a draft.")
    return HTTPSeeOther(location=request.route_path(
        "portal_integration", id=integration_public_id(created)))


# One integration ---------------------------------------------------------------------------


def integration_detail(request):
    member = require_member(request, "integrations:read")
    integration = _own_integration(request, member)
    versions = integrations.versions_of(request.dbsession, integration)
    can_submit = integration.status in integrations.TRANSITIONS["submit"][0] \
        and integration.plugin_name is None
    return render(request, "integration_detail.html", integration=integration,
                  versions=versions, public_id=integration_public_id(integration),
                  can_submit=can_submit, nav="integrations")


def integration_edit(request):
    member = require_member(request, "integrations:write")
    integration = _own_integration(request, member)
    if request.method == "GET":
        versions = integrations.versions_of(request.dbsession, integration)
        notes = next((version.release_notes for version in versions
                      if version.version == integration.version), None)
        return _form_page(request, forms.Form(values=_values_of(integration, notes)),
                          integration)

    form, data = _posted_form(request)
    for name in ("name", "slug", "category", "version", "pricing_model"):
        if data.get(name) is None:
            data.pop(name, None)
    loaded = _load(UpdateIntegrationBody(), data, form)
    if loaded is None:
        request.tm.doom()
        return _form_page(request, form, integration, status=400)
    try:
        integrations.update_integration(request, member.partner, integration.id, dict(loaded))
    except ApiError as error:
        if error.status == 404:
            raise
        forms.add_api_error(form, error, PAGE_FIELDS)
        request.tm.doom()
        return _form_page(request, form, integration, status=error.status)
    request.portal_session.flash("The integration is saved.")
    return HTTPSeeOther(location=request.route_path(
        "portal_integration", id=integration_public_id(integration)))


def integration_submit(request):
    member = require_member(request, "integrations:write")
    integration_id = _integration_id(request)
    location = request.route_path("portal_integration", id=f"int_{integration_id}")
    try:
        integrations.submit_integration(request, member.partner, integration_id)
    except ApiError as error:
        if error.status == 404:
            raise
        request.tm.doom()
        request.portal_session.flash(f"The integration was not submitted: {error.message}",
                                     "error")
        return HTTPSeeOther(location=location)
    request.portal_session.flash("The integration is submitted and pending review.")
    return HTTPSeeOther(location=location)


def integration_installs(request):
    member = require_member(request, "integrations:read")
    integration = _own_integration(request, member)
    page = paginate(installs.integration_installs_query(integration), IntegrationInstall.id,
                    forms.page_query(request), request.dbsession)
    return render(request, "integration_installs.html", integration=integration,
                  installs=page.items, next_cursor=page.next_cursor,
                  public_id=integration_public_id(integration), nav="integrations")


def _reviews_page(request, member, integration: Integration, reply: forms.Form | None = None,
                  reply_to: int | None = None, status: int = 200):
    page = paginate(reviews.integration_reviews_query(integration), IntegrationReview.id,
                    forms.page_query(request), request.dbsession)
    return render(request, "integration_reviews.html", status=status, integration=integration,
                  reviews=reviews.review_views(request.dbsession, page.items),
                  next_cursor=page.next_cursor, public_id=integration_public_id(integration),
                  reply=reply or forms.Form(), reply_to=reply_to,
                  can_reply=member.can("integrations:write"), nav="integrations")


def integration_reviews(request):
    member = require_member(request, "integrations:read")
    return _reviews_page(request, member, _own_integration(request, member))


def review_reply(request):
    member = require_member(request, "integrations:write")
    integration = _own_integration(request, member)
    review_id = parse_id("rev", request.matchdict["review_id"], noun="review")
    text = request.POST.get("text", "")
    form = forms.Form(values={"text": text if isinstance(text, str) else ""})
    loaded = forms.load(ReplyBody(), forms.posted_values(request), form)
    if loaded is None:
        request.tm.doom()
        return _reviews_page(request, member, integration, form, review_id, status=400)
    reviews.reply(request, integration_public_id(integration), f"rev_{review_id}",
                  loaded["text"])
    request.portal_session.flash("Your reply is published with the review.")
    return HTTPSeeOther(location=request.route_path(
        "portal_integration_reviews", id=integration_public_id(integration)))
