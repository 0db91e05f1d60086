"""Marketplace pages: browse by category, search, an integration, a partner, customer sign-up.

The pages are public and call the same catalog, search and review services
as ``/api/marketplace/``, with the same query schemas. A signed-in user sees
the navigation of customers and, on an integration, the state of their
install and review.
"""

from __future__ import annotations

from urllib.parse import urlencode

import marshmallow
from pyramid.httpexceptions import HTTPSeeOther

from fkod.core.auth import account_mail, accounts
from fkod.core.auth.account_views import RegisterBody
from fkod.core.errors import ApiError
from fkod.core.integrations import CATEGORIES
from fkod.marketplace import catalog, reviews, schemas, search
from fkod.marketplace.install_schemas import ReviewListQuery
from fkod.marketplace.installs import find_install
from fkod.marketplace.models import PRICING_MODELS
from fkod.portal import forms
from fkod.portal.access import check_csrf, limit_address, safe_next
from fkod.portal.rendering import render

PUBLIC_PAGES = frozenset({"portal_marketplace_home", "portal_marketplace_search",
                          "portal_marketplace_integration", "portal_marketplace_partner",
                          "portal_marketplace_signup"})

ROUTES = (
    ("portal_marketplace_home", "/marketplace", "browse", ("GET",),
     "Browse listed integrations by category, with filters and a sort order"),
    ("portal_marketplace_search", "/marketplace/search", "search_page", ("GET",),
     "Search listed integrations, with filters and a sort order"),
    ("portal_marketplace_integration", "/marketplace/integrations/{id}", "integration_page",
     ("GET",),
     "Show a listed integration with its permissions, pricing and reviews"),
    ("portal_marketplace_partner", "/marketplace/partners/{id}", "partner_page", ("GET",),
     "Show a partner's public profile and listed integrations"),
    ("portal_marketplace_signup", "/marketplace/signup", "customer_signup", ("GET", "POST"),
     "Create a customer account"),
)

# The query fields of the filter form, in the order of the form.
FILTER_FIELDS = ("category", "pricing", "min_rating", "sort")
SORT_LABELS = {"relevance": "Best match", "popular": "Most installed", "newest": "Newest",
               "rating": "Highest rated", "name": "Name"}
RATING_CHOICES = ("4", "3", "2", "1")
SIGNUP_FIELDS = ("name", "email", "password")


def signed_in_user(request):
    """Return the signed-in user of a public page, and set ``request.user``; else None."""
    user = request.portal_session.user()
    if user is not None:
        request.user = user
    return user


def scope_descriptions(request, names) -> list[tuple[str, str]]:
    """Return ``(scope, description)`` for each scope an integration requests."""
    known = {scope.name: scope.description
             for scope in request.registry["scope_catalog"].grantable()}
    return [(name, known.get(name, "")) for name in names or ()]


def event_descriptions(request, patterns) -> list[tuple[str, list[tuple[str, str]]]]:
    """Return each event pattern with the event types it covers and their descriptions."""
    host = request.registry["plugins"]
    return [(pattern, [(item.name, item.description)
                       for item in host.event_catalog.matching(pattern, host.is_enabled)])
            for pattern in patterns or ()]


def price_text(integration) -> str:
    """Describe an integration's price as the marketplace shows it."""
    if integration.pricing_model == "free":
        return "Free"
    parts = []
    if integration.price_cents:
        parts.append(f"{integration.price_cents / 100:.2f} {schemas.CURRENCY} a month")
    if integration.price_per_call is not None:
        parts.append(f"{integration.price_per_call} {schemas.CURRENCY} a call")
    label = integration.pricing_model.capitalize()
    return f"{label}: {', '.join(parts)}" if parts else label


def _load_query(request, schema, fields: tuple[str, ...], form: forms.Form) -> dict | None:
    data = {name: request.GET[name] for name in fields if request.GET.get(name, "") != ""}
    form.values = dict(data)
    return forms.load(schema, data, form)


def _page_link(path: str, values: dict, cursor: str | None) -> str:
    query = {name: value for name, value in values.items() if value not in (None, "")}
    if cursor:
        query["cursor"] = cursor
    return f"{path}?{urlencode(query)}" if query else path


def _listing(request, template: str, *, searching: bool):
    """Render the browse or the search page, with field errors under the filters."""
    form = forms.Form()
    if searching:
        fields = ("q", *FILTER_FIELDS, "limit", "cursor")
        loaded = _load_query(request, schemas.SearchQuery(), fields, form)
    else:
        fields = (*FILTER_FIELDS, "limit", "cursor")
        loaded = _load_query(request, schemas.IntegrationListQuery(), fields, form)
    items, next_cursor, status = [], None, 200
    if loaded is not None:
        try:
            if searching:
                page = search.search_integrations(request, loaded)
            else:
                page = catalog.list_integrations(request, loaded)
            items, next_cursor = page.items, page.next_cursor
        except ApiError as error:
            forms.add_api_error(form, error)
            status = error.status
    else:
        status = 400
    if searching and not form.value("q") and "q" in form.errors:
        # An empty search box is not an error worth a red field: show the prompt.
        form.errors.pop("q")
        status = 200 if not form.errors else status

    filter_values = {name: form.value(name) for name in ("q", *FILTER_FIELDS)
                     if form.value(name)}
    next_link = None
    if next_cursor:
        next_link = _page_link(request.path, filter_values, next_cursor)
    first_link = None
    if request.GET.get("cursor"):
        first_link = _page_link(request.path, filter_values, None)
    sorts = schemas.SEARCH_SORTS if searching else tuple(catalog.INTEGRATION_SORTS)
    return render(request, template, status=status, form=form, integrations=items,
                  next_link=next_link, first_link=first_link,
                  categories=catalog.category_counts(request), category_names=CATEGORIES,
                  pricing_models=PRICING_MODELS, rating_choices=RATING_CHOICES,
                  sorts=[(name, SORT_LABELS.get(name, name)) for name in sorts],
                  default_sort="relevance" if searching else catalog.DEFAULT_SORT,
                  searching=searching, customer=signed_in_user(request), price_text=price_text,
                  nav="marketplace")


def browse(request):
    return _listing(request, "marketplace.html", searching=False)


def search_page(request):
    return _listing(request, "marketplace.html", searching=True)


def integration_page(request):
    integration = catalog.get_integration(request, request.matchdict["id"])
    try:
        query = ReviewListQuery().load(
            {name: request.GET[name] for name in ("cursor", "sort") if name in request.GET})
    except marshmallow.ValidationError:
        # An invalid link to a page of reviews shows the first page.
        query = ReviewListQuery().load({})
    try:
        review_page = reviews.list_reviews(request, request.matchdict["id"], query)
    except ApiError:
        # A cursor of another list: start again at the newest reviews.
        review_page = reviews.list_reviews(request, request.matchdict["id"],
                                           ReviewListQuery().load({}))

    user = signed_in_user(request)
    install, own_review = None, None
    if user is not None:
        install = find_install(request.dbsession, integration.id, user.id)
        own_review = reviews.caller_review(request, integration)
    public_id = f"int_{integration.id}"
    path = request.route_path("portal_marketplace_integration", id=public_id)
    return render(request, "marketplace_integration.html", integration=integration,
                  public_id=public_id, partner=integration.partner,
                  scopes=scope_descriptions(request, integration.scopes),
                  events=event_descriptions(request, integration.event_types),
                  price=price_text(integration), reviews=review_page.items,
                  next_link=_page_link(path, {}, review_page.next_cursor)
                  if review_page.next_cursor else None,
                  install=install, own_review=own_review, customer=user, nav="marketplace")


def partner_page(request):
    profile = catalog.get_public_partner(request, request.matchdict["id"])
    # NOTE: like the API's profile, the page lists at most MAX_PROFILE_INTEGRATIONS (100)
    # integrations, most installed first, and has no further pages.
    return render(request, "marketplace_partner.html", profile=profile,
                  integrations=profile.integrations, price_text=price_text,
                  customer=signed_in_user(request), nav="marketplace")


def customer_signup(request):
    """Create a customer account (a user without a partner), as ``POST /api/auth/register``."""
    next_path = safe_next(request.params.get("next") or "/marketplace")
    form = forms.Form()
    if request.method == "GET":
        return render(request, "marketplace_signup.html", form=form, next_path=next_path,
                      customer=signed_in_user(request), nav="marketplace")

    check_csrf(request)
    limit_address(request)
    posted = forms.posted_values(request)
    form.values = {name: posted.get(name, "") for name in SIGNUP_FIELDS if name != "password"}
    data = {name: posted[name] for name in SIGNUP_FIELDS if name in posted}
    loaded = forms.load(RegisterBody(), data, form)
    user = None
    if loaded is not None:
        try:
            user = accounts.create_platform_user(request, email=loaded["email"],
                                                 password=loaded["password"],
                                                 name=loaded.get("name"))
        except ApiError as error:
            forms.add_api_error(form, error)
    if user is None:
        request.tm.doom()
        status = 409 if "email" in form.errors and loaded is not None else 400
        return render(request, "marketplace_signup.html", status=status, form=form,
                      next_path=next_path, customer=None, nav="marketplace")

    request.user = user
    accounts.record_account_action(request, "auth.registered", user)
    account_mail.send_email_verification(request, user, user.email)
    request.portal_session.flash(
        f"Your account is created. We sent a link to {user.email} to verify the address; "
        "log in to continue.")
    return HTTPSeeOther(location=request.route_path(
        "portal_login", _query={"email": user.email, "next": next_path}))
