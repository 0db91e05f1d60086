"""A signed-in customer's marketplace pages: install with a configuration, installs, reviews.

Any signed-in user may use them, a partner member too, and each acts on the
user's own install and review only, through the services of
``/api/marketplace/integrations/{id}/install`` and ``.../review``.
"""

from __future__ import annotations

import marshmallow
from pyramid.httpexceptions import HTTPBadRequest, HTTPSeeOther

from fkod.core.errors import ApiError, ValidationFailed
from fkod.core.ids import parse_id
from fkod.marketplace import catalog, installs, reviews
from fkod.marketplace.install_schemas import (
    MAX_REVIEW_BODY_LENGTH,
    MAX_REVIEW_TITLE_LENGTH,
    InstallBody,
    InstallListQuery,
    ReviewBody,
    UpdateReviewBody,
)
from fkod.portal import config_form, forms
from fkod.portal.access import require_user
from fkod.portal.marketplace_views import event_descriptions, price_text, scope_descriptions
from fkod.portal.rendering import render

ROUTES = (
    ("portal_marketplace_install", "/marketplace/integrations/{id}/install", "install_page",
     ("GET", "POST"),
     "Show the install form built from the integration's configuration schema, or install"),
    ("portal_marketplace_installs", "/marketplace/installs", "installs_page", ("GET",),
     "List the signed-in user's installs"),
    ("portal_marketplace_uninstall", "/marketplace/integrations/{id}/uninstall", "uninstall",
     ("POST",), "Uninstall the signed-in user's install of an integration"),
    ("portal_marketplace_review", "/marketplace/integrations/{id}/review", "review_page",
     ("GET", "POST"), "Write or edit the signed-in user's review of an installed integration"),
    ("portal_marketplace_review_delete", "/marketplace/integrations/{id}/review/delete",
     "review_delete", ("POST",), "Delete the signed-in user's review of an integration"),
)

RATINGS = (5, 4, 3, 2, 1)


def _integration_path(request, integration) -> str:
    return request.route_path("portal_marketplace_integration", id=f"int_{integration.id}")


# Install ---------------------------------------------------------------------------------


def _install_form_page(request, integration, fields, form, status: int = 200):
    installed = installs.find_install(request.dbsession, integration.id, request.user.id)
    return render(request, "marketplace_install.html", status=status, form=form,
                  integration=integration, public_id=f"int_{integration.id}", fields=fields,
                  choice_value=config_form.choice_value,
                  scopes=scope_descriptions(request, integration.scopes),
                  events=event_descriptions(request, integration.event_types),
                  price=price_text(integration),
                  installed=installed is not None and installed.status == "active",
                  customer=request.user, nav="marketplace")


def install_page(request):
    require_user(request)
    integration = catalog.get_integration(request, request.matchdict["id"])
    fields = config_form.config_fields(integration.config_schema)
    if request.method == "GET":
        return _install_form_page(request, integration, fields,
                                  forms.Form(values=config_form.initial_values(fields)))

    form = forms.Form()
    config = config_form.read_config(fields, request.POST, form)
    form.values["confirm"] = request.POST.get("confirm") == "yes"
    if not form.values["confirm"]:
        form.add_error("confirm", "Confirm that you grant these permissions to install.")
    if not form.valid:
        # Show the schema's errors on the other fields too, in the same submission.
        try:
            installs.validate_config(integration, config)
        except ValidationFailed as error:
            typed = [item for item in error.errors
                     if config_form.PREFIX + (item.get("name") or "").partition(".")[2]
                     not in form.errors]
            config_form.add_config_errors(form, fields, typed)
        request.tm.doom()
        return _install_form_page(request, integration, fields, form, status=400)

    loaded = forms.load(InstallBody(), {"config": config}, form)
    status = 400
    if loaded is not None:
        try:
            installs.install(request, f"int_{integration.id}", loaded["config"])
        except ApiError as error:
            if error.status == 404:
                raise
            form.add_error(forms.FORM, error.message)
            config_form.add_config_errors(form, fields, error.errors)
            status = error.status
        else:
            request.portal_session.flash(f"{integration.name} is installed.")
            return HTTPSeeOther(location=request.route_path("portal_marketplace_installs"))
    request.tm.doom()
    return _install_form_page(request, integration, fields, form, status=status)


def installs_page(request):
    require_user(request)
    data = {name: request.GET[name] for name in ("limit", "cursor", "status")
            if name in request.GET}
    try:
        query = InstallListQuery().load(data)
    except marshmallow.ValidationError:
        raise HTTPBadRequest("Invalid page link. Go back to the first page of your "
                             "installs.") from None
    page = installs.list_installs(request, query)
    views = [installs.install_view(request, row) for row in page.items]
    return render(request, "marketplace_installs.html", installs=views,
                  status_shown=query["status"], next_cursor=page.next_cursor,
                  json_text=config_form.json_text,
                  customer=request.user, nav="installs")


def uninstall(request):
    user = require_user(request)
    integration_id = request.matchdict["id"]
    row = installs.find_install(request.dbsession,
                                parse_id("int", integration_id, noun="integration"), user.id)
    name = row.integration.name if row is not None else integration_id
    installs.uninstall(request, integration_id)
    request.portal_session.flash(f"{name} is uninstalled.", "info")
    return HTTPSeeOther(location=request.route_path("portal_marketplace_installs"))


# Reviews ---------------------------------------------------------------------------------


def _review_form_page(request, integration, own_review, form, status: int = 200):
    installed = installs.find_install(request.dbsession, integration.id, request.user.id)
    return render(request, "marketplace_review.html", status=status, form=form,
                  integration=integration, public_id=f"int_{integration.id}",
                  own_review=own_review, ever_installed=installed is not None,
                  ratings=RATINGS, title_max=MAX_REVIEW_TITLE_LENGTH,
                  body_max=MAX_REVIEW_BODY_LENGTH, customer=request.user, nav="marketplace")


def review_page(request):
    require_user(request)
    integration = catalog.get_integration(request, request.matchdict["id"])
    public_id = f"int_{integration.id}"
    own_review = reviews.caller_review(request, integration)
    if request.method == "GET":
        values = {}
        if own_review is not None:
            values = {"rating": str(own_review["rating"]), "title": own_review["title"] or "",
                      "body": own_review["body"] or ""}
        return _review_form_page(request, integration, own_review, forms.Form(values=values))

    posted = forms.posted_values(request)
    form = forms.Form(values={name: posted.get(name, "") for name in ("rating", "title", "body")})
    forms.integer_field(posted, "rating")
    if "rating" not in posted:
        form.add_error("rating", "Choose a rating from 1 to 5 stars.")
    data = {"rating": posted.get("rating"), "title": posted.get("title"),
            "body": posted.get("body")}
    schema = ReviewBody() if own_review is None else UpdateReviewBody()
    loaded = forms.load(schema, data, form) if form.valid else None
    status = 400
    if loaded is not None:
        try:
            if own_review is None:
                reviews.create_review(request, public_id, dict(loaded))
            else:
                reviews.update_review(request, public_id, dict(loaded))
        except ApiError as error:
            if error.status == 404:
                raise
            forms.add_api_error(form, error)
            status = error.status
        else:
            request.portal_session.flash("Your review is saved." if own_review is None
                                         else "Your review is updated.")
            return HTTPSeeOther(location=_integration_path(request, integration))
    request.tm.doom()
    return _review_form_page(request, integration, own_review, form, status=status)


def review_delete(request):
    require_user(request)
    reviews.delete_review(request, request.matchdict["id"])
    request.portal_session.flash("Your review is deleted.", "info")
    return HTTPSeeOther(location=request.route_path("portal_marketplace_integration",
                                                    id=request.matchdict["id"]))
