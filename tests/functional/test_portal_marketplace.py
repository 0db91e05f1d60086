"""Marketplace pages: browse, search, integration and partner pages, install, reviews."""

from __future__ import annotations

import re

import sqlalchemy as sa

from fkod.core.auth.models import Partner
from fkod.core.db import run_in_transaction, utcnow
from fkod.core.testing import TestClient
from fkod.marketplace.models import Integration, IntegrationInstall, IntegrationReview
from tests.functional.portal_pages import csrf_token, input_value, log_in, post_form

CONFIG_SCHEMA = {
    "type": "object",
    "required": ["channel", "region"],
    "additionalProperties": False,
    "properties": {
        "channel": {"type": "string", "title": "Channel", "minLength": 2, "maxLength": 40,
                    "description": "The channel that receives course news."},
        "region": {"type": "string", "enum": ["eu", "us"], "title": "Region"},
        "contact": {"type": "string", "format": "email", "title": "Contact email"},
        "daily_limit": {"type": "integer", "minimum": 1, "maximum": 100, "title": "Daily limit"},
        "threshold": {"type": "number", "minimum": 0, "maximum": 1},
        "digest": {"type": "boolean", "title": "Send a daily digest"},
        "topics": {"type": "array", "items": {"enum": ["courses", "mentors", "users"]},
                   "title": "Topics"},
        "token": {"type": "string", "writeOnly": True, "title": "Access token"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


def add_publisher(app, slug: str = "acme-apps", company_name: str = "Acme Apps") -> int:
    def work(session):
        partner = Partner(slug=slug, company_name=company_name, status="active",
                          verification_status="verified",
                          company_website=f"https://{slug}.example")
        session.add(partner)
        session.flush()
        return partner.id

    return run_in_transaction(app.registry["db.session_factory"], work)


def add_integration(app, partner_id: int, name: str, *, status: str = "published",
                    category: str = "communication", install_count: int = 0,
                    description: str | None = None, pricing_model: str = "free") -> str:
    def work(session):
        integration = Integration(
            partner_id=partner_id, name=name, slug=name.lower().replace(" ", "-"),
            category=category, version="1.2.0", status=status, config_schema=CONFIG_SCHEMA,
            description=description or f"{name} posts course news to a chat channel.",
            event_types=["course.*"], scopes=["users:read"], pricing_model=pricing_model,
            price_cents=900 if pricing_model == "paid" else None,
            install_count=install_count, published_at=utcnow())
        session.add(integration)
        session.flush()
        return integration.id

    return f"int_{run_in_transaction(app.registry['db.session_factory'], work)}"


def sign_up_customer(web, email: str = "ada@example.com", name: str = "Ada Lovelace"):
    response = post_form(web, "/marketplace/signup", {
        "name": name, "email": email, "password": "a long customer passphrase"}, status=303)
    assert "/portal/login" in response.location
    landed = post_form(web, "/portal/login", {
        "email": email, "password": "a long customer passphrase"}, status=303)
    return landed


def config_errors(page, name: str) -> list[str]:
    return re.findall(rf'<p class="field-error" id="config-{name}-error">([^<]*)</p>',
                      page.text)


def card_names(page) -> list[str]:
    return re.findall(r'<h3><a href="/marketplace/integrations/int_\d+">([^<]*)</a></h3>',
                      page.text)


def stored(app, model, **where):
    def work(session):
        return list(session.scalars(sa.select(model).filter_by(**where)))

    return run_in_transaction(app.registry["db.session_factory"], work)


def install_fields(**overrides):
    fields = {"config.channel": "#courses", "config.region": "eu",
              "config.contact": "team@example.com", "config.daily_limit": "10",
              "config.threshold": "0.5", "config.digest": "true", "config.token": "s3cret-token",
              "config.labels": '{"team": "<b>ops</b>"}',
              "confirm": "yes"}
    fields.update(overrides)
    items = [(name, value) for name, value in fields.items() if value is not None]
    return [*items, ("config.topics", "courses"), ("config.topics", "users")]


def test_browse_search_and_pages(client, app):
    partner_id = add_publisher(app)
    chat = add_integration(app, partner_id, "Chat Bridge", install_count=7,
                           description="<script>alert(1)</script> posts course news.")
    add_integration(app, partner_id, "Calendar Sync", category="scheduling", install_count=3,
                    pricing_model="paid")
    hidden = add_integration(app, partner_id, "Draft Thing", status="draft")
    web = client.web

    home = web.get("/marketplace")
    assert card_names(home) == ["Chat Bridge", "Calendar Sync"]
    assert "Draft Thing" not in home.text
    assert "<script>alert(1)</script>" not in home.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in home.text
    assert home.headers["Content-Security-Policy"].startswith("default-src 'self'")
    assert 'href="/marketplace/signup"' in home.text

    by_category = web.get("/marketplace", {"category": "scheduling"})
    assert card_names(by_category) == ["Calendar Sync"]
    by_name = web.get("/marketplace", {"sort": "name"})
    assert card_names(by_name) == ["Calendar Sync", "Chat Bridge"]
    bad_filter = web.get("/marketplace", {"pricing": "gratis", "sort": "name"}, status=400)
    assert "Must be one of" in bad_filter.text
    assert 'value="name" selected' in bad_filter.text

    found = web.get("/marketplace/search", {"q": "sync", "pricing": "paid", "sort": "name"})
    assert card_names(found) == ["Calendar Sync"]
    assert 'value="paid" selected' in found.text
    none_free = web.get("/marketplace/search", {"q": "sync", "pricing": "free"})
    assert card_names(none_free) == []
    assert "No integrations match" in none_free.text
    assert web.get("/marketplace/search").status_int == 200

    page = web.get(f"/marketplace/integrations/{chat}")
    assert "Verified partner" in page.text
    assert "users:read" in page.text
    assert "course.*" in page.text
    assert "Free" in page.text
    assert "No ratings yet" in page.text
    assert "<dt>Installs</dt><dd>7</dd>" in page.text
    assert "&lt;script&gt;" in page.text
    assert "<script>alert" not in page.text
    assert f'href="/marketplace/integrations/{chat}/install"' in page.text

    for path in (f"/marketplace/integrations/{hidden}", "/marketplace/integrations/int_999999",
                 "/marketplace/integrations/nonsense", "/marketplace/partners/nobody"):
        missing = web.get(path, status=404)
        assert missing.content_type == "text/html"
        assert "Not found" in missing.text or "Page not found" in missing.text

    profile = web.get("/marketplace/partners/acme-apps")
    assert card_names(profile) == ["Chat Bridge", "Calendar Sync"]
    assert "Verified partner" in profile.text
    assert web.get(f"/marketplace/partners/partner_{partner_id}").status_int == 200


def test_customer_signup_and_login_landing(client, app):
    web = client.web
    failed = post_form(web, "/marketplace/signup", {"name": "<b>Ada</b>", "email": "not-mail",
                                                    "password": "short"}, status=400)
    assert input_value(failed, "email") == "not-mail"
    assert input_value(failed, "password") is None
    assert "&lt;b&gt;Ada&lt;/b&gt;" in failed.text

    landed = sign_up_customer(web)
    assert landed.location.endswith("/marketplace")
    installs = web.get("/marketplace/installs")
    assert "ada@example.com" in installs.text
    assert "You have not installed any integration" in installs.text
    # The partner dashboard is no place for a customer.
    web.get("/portal", status=403)

    web.reset()
    taken = post_form(web, "/marketplace/signup", {
        "email": "ada@example.com", "password": "a long customer passphrase"}, status=409)
    assert "already" in taken.text

    owner = client.register_partner(company_name="Acme Learning")
    member_landing = log_in(web, owner["user"]["email"])
    assert member_landing.location.endswith("/portal")


def test_install_form_errors_install_uninstall(client, app):
    partner_id = add_publisher(app)
    chat = add_integration(app, partner_id, "Chat Bridge")
    web = client.web

    signed_out = web.get(f"/marketplace/integrations/{chat}/install", status=303)
    assert "/portal/login?next=" in signed_out.location
    web.get("/marketplace/installs", status=303)
    web.get("/marketplace")
    posted_signed_out = web.post(f"/marketplace/integrations/{chat}/install",
                                 install_fields(), status=303)
    assert "/portal/login" in posted_signed_out.location

    sign_up_customer(web)
    form = web.get(f"/marketplace/integrations/{chat}/install")
    assert '<select id="config-region" name="config.region" required' in form.text
    assert 'type="email" id="config-contact"' in form.text
    assert 'min="1" max="100" step="1"' in form.text
    assert 'type="checkbox" id="config-digest" name="config.digest" value="true"' in form.text
    assert 'name="config.topics" value="mentors"' in form.text
    assert 'type="password" id="config-token"' in form.text
    assert "The channel that receives course news." in form.text
    assert "users:read" in form.text
    assert "I grant Acme Apps these permissions" in form.text

    refused = web.post(f"/marketplace/integrations/{chat}/install", install_fields(),
                       status=403)
    assert "The form expired" in refused.text

    bad = post_form(web, f"/marketplace/integrations/{chat}/install",
                    install_fields(**{"config.channel": "x", "config.daily_limit": "many",
                                      "config.region": None, "config.labels": "{oops",
                                      "confirm": None}),
                    form_page=f"/marketplace/integrations/{chat}/install", status=400)
    assert config_errors(bad, "daily_limit") == ["Must be a whole number."]
    assert config_errors(bad, "region") == ["This field is required."]
    assert config_errors(bad, "labels")[0].startswith("Must be valid JSON")
    assert "{oops</textarea>" in bad.text
    assert len(config_errors(bad, "channel")) == 1
    assert "Confirm that you grant" in bad.text
    assert input_value(bad, "config.channel") == "x"
    assert input_value(bad, "config.daily_limit") == "many"
    assert input_value(bad, "config.token") is None
    assert "s3cret-token" not in bad.text
    assert 'value="users" checked' in bad.text
    assert stored(app, IntegrationInstall) == []

    out_of_range = post_form(web, f"/marketplace/integrations/{chat}/install",
                             install_fields(**{"config.daily_limit": "500"}),
                             form_page=f"/marketplace/integrations/{chat}/install", status=400)
    assert len(config_errors(out_of_range, "daily_limit")) == 1
    assert stored(app, IntegrationInstall) == []

    done = post_form(web, f"/marketplace/integrations/{chat}/install", install_fields(),
                     form_page=f"/marketplace/integrations/{chat}/install", status=303)
    assert done.location.endswith("/marketplace/installs")
    [row] = stored(app, IntegrationInstall)
    assert row.status == "active"
    assert row.granted_scopes == ["users:read"]
    listing = web.get("/marketplace/installs")
    assert "Chat Bridge is installed." in listing.text
    assert "#courses" in listing.text
    assert "********" in listing.text
    assert "s3cret-token" not in listing.text
    assert "&lt;b&gt;ops&lt;/b&gt;" in listing.text
    assert "Installed" in web.get(f"/marketplace/integrations/{chat}").text

    again = post_form(web, f"/marketplace/integrations/{chat}/install", install_fields(),
                      form_page="/marketplace/installs", status=409)
    assert "You installed this integration already" in again.text

    gone = post_form(web, f"/marketplace/integrations/{chat}/uninstall", {},
                     form_page="/marketplace/installs", status=303)
    assert gone.location.endswith("/marketplace/installs")
    assert stored(app, IntegrationInstall)[0].status == "uninstalled"
    assert "Chat Bridge is uninstalled." in web.get("/marketplace/installs").text
    assert "Chat Bridge" in web.get("/marketplace/installs?status=uninstalled").text
    post_form(web, f"/marketplace/integrations/{chat}/uninstall", {},
              form_page="/marketplace/installs", status=404)


def test_review_create_edit_delete(client, app):
    partner_id = add_publisher(app)
    chat = add_integration(app, partner_id, "Chat Bridge")
    web = client.web
    sign_up_customer(web)
    review_path = f"/marketplace/integrations/{chat}/review"

    not_installed = post_form(web, review_path, {"rating": "4", "body": "Nice."}, status=403)
    assert "install it first" in not_installed.text

    post_form(web, f"/marketplace/integrations/{chat}/install", install_fields(),
              form_page=f"/marketplace/integrations/{chat}/install", status=303)
    missing_rating = post_form(web, review_path, {"title": "Kept title"}, status=400)
    assert "Choose a rating from 1 to 5 stars." in missing_rating.text
    assert input_value(missing_rating, "title") == "Kept title"
    assert web.post(review_path, {"rating": "5"}, status=403).status_int == 403

    created = post_form(web, review_path, {"rating": "4", "title": "<i>Solid</i>",
                                           "body": "<script>alert(2)</script> works."},
                        status=303)
    assert created.location.endswith(f"/marketplace/integrations/{chat}")
    page = web.get(f"/marketplace/integrations/{chat}")
    assert "&lt;i&gt;Solid&lt;/i&gt;" in page.text
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in page.text
    assert "<script>alert(2)" not in page.text
    assert "Ada Lovelace" in page.text
    assert "4.0 of 5 (1 review)" in page.text
    assert "Edit your review" in page.text

    edit_form = web.get(review_path)
    assert 'value="4" checked' in edit_form.text
    post_form(web, review_path, {"rating": "2", "title": "Changed", "body": ""}, status=303)
    [review] = stored(app, IntegrationReview)
    assert (review.rating, review.title, review.body) == (2, "Changed", None)

    post_form(web, f"{review_path}/delete", {}, form_page=review_path, status=303)
    assert stored(app, IntegrationReview) == []
    assert "No reviews yet." in web.get(f"/marketplace/integrations/{chat}").text
    post_form(web, f"{review_path}/delete", {}, form_page=review_path, status=404)


def test_marketplace_methods_and_csrf(client, app):
    partner_id = add_publisher(app)
    chat = add_integration(app, partner_id, "Chat Bridge")
    web = client.web
    web.post("/marketplace", status=405)
    sign_up_customer(web)
    token = csrf_token(web.get("/marketplace/installs"))
    assert token
    web.post(f"/marketplace/integrations/{chat}/uninstall", {"csrf_token": "wrong"}, status=403)
    web.post(f"/marketplace/integrations/{chat}/review/delete", status=403)
    web.get("/marketplace/installs?cursor=%%%", status=400)

    # Another customer's install and review stay out of reach: each page acts on the caller's.
    post_form(web, f"/marketplace/integrations/{chat}/install", install_fields(),
              form_page=f"/marketplace/integrations/{chat}/install", status=303)
    review_path = f"/marketplace/integrations/{chat}/review"
    post_form(web, review_path, {"rating": "5"}, status=303)
    other = TestClient(app).web
    sign_up_customer(other, email="bob@example.com", name="Bob")
    assert "Chat Bridge" not in other.get("/marketplace/installs").text
    post_form(other, f"/marketplace/integrations/{chat}/uninstall", {},
              form_page="/marketplace/installs", status=404)
    post_form(other, f"{review_path}/delete", {}, form_page=review_path, status=404)
    assert len(stored(app, IntegrationReview)) == 1
    assert stored(app, IntegrationInstall)[0].status == "active"
