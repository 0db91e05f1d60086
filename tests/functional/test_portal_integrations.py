"""Portal integration pages: list, create, edit, submit for review, installs and reviews."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
import webtest

from fkod.core.auth.models import Partner, PartnerMember
from fkod.core.db import run_in_transaction
from fkod.core.ids import parse_id
from fkod.core.testing import verify_partner
from fkod.marketplace.models import Integration, IntegrationReview
from tests.functional.portal_pages import (
    add_member,
    field_errors,
    input_value,
    log_in,
    post_form,
    signed_in_owner,
)
from tests.functional.test_marketplace_installs import (
    CONFIG_SCHEMA,
    GOOD_CONFIG,
    add_integration,
    install,
    make_customer,
)

pytestmark = pytest.mark.shared_app

NEW = "/portal/integrations/new"
FIELDS = {
    "name": "Course <Sync>", "description": "Copies courses & progress.", "category": "content",
    "version": "1.0.0", "support_email": "help@acme.example", "pricing_model": "paid",
    "price": "12.50", "event_types": "course.created\ncourse.*",
    "config_schema": json.dumps({"type": "object", "required": ["channel"],
                                 "properties": {"channel": {"type": "string"}}}),
}


def stored(app) -> list[Integration]:
    return run_in_transaction(app.registry["db.session_factory"], lambda session: list(
        session.scalars(sa.select(Integration).order_by(Integration.id))))


def activate(app, partner_id: str) -> None:
    """Make a partner verified and active, as an admin's approval does."""
    verify_partner(app, partner_id)
    run_in_transaction(app.registry["db.session_factory"], lambda session: session.execute(
        sa.update(Partner).where(Partner.id == parse_id("partner", partner_id))
        .values(status="active")))


def create(web, fields, scopes=("users:read",), status=303):
    return post_form(web, "/portal/integrations",
                     list(fields.items()) + [("scopes", scope) for scope in scopes],
                     form_page=NEW, status=status)


def test_integration_pages_need_login_and_csrf(client):
    for path in ("/portal/integrations", NEW, "/portal/integrations/int_1"):
        assert "/portal/login?next=" in client.web.get(path, status=303).location
    signed_in_owner(client)
    page = client.web.post("/portal/integrations", {"name": "x"}, status=403)
    assert "The form expired" in page.text
    client.web.get("/portal/integrations/int_1/submit", status=405)


def test_create_edit_and_submit(client, app):
    registered = signed_in_owner(client)
    assert "No integrations yet" in client.web.get("/portal/integrations").text

    bad = create(client.web, dict(FIELDS, price="12.505", config_schema="{not json",
                                  name=""), status=400)
    assert field_errors(bad, "price")
    assert field_errors(bad, "config_schema")[0].startswith("Not valid JSON")
    assert field_errors(bad, "name")
    assert input_value(bad, "price") == "12.505"
    assert "{not json</textarea>" in bad.text
    assert 'value="users:read" checked' in bad.text
    not_object = create(client.web, dict(FIELDS, config_schema='{"type": "string"}'),
                        status=400)
    assert field_errors(not_object, "config_schema") == [
        "Must be a JSON Schema with &#34;type&#34;: &#34;object&#34;."]
    unpriced = create(client.web, dict(FIELDS, price=""), status=400)
    assert field_errors(unpriced, "price")
    bad_event = create(client.web, dict(FIELDS, event_types="no.such.event"), status=400)
    assert field_errors(bad_event, "event_types")
    assert stored(app) == []

    created = create(client.web, FIELDS)
    [integration] = stored(app)
    assert integration.price_cents == 1250
    assert integration.event_types == ["course.created", "course.*"]
    assert integration.config_schema["required"] == ["channel"]
    detail = client.web.get(created.location)
    assert "Course &lt;Sync&gt;" in detail.text
    assert "12.50 USD a month" in detail.text
    listing = client.web.get("/portal/integrations")
    assert "Course &lt;Sync&gt;" in listing.text
    assert ">draft</span>" in listing.text

    edit = client.web.get(f"/portal/integrations/int_{integration.id}/edit")
    assert input_value(edit, "price") == "12.50"
    post_form(client.web, f"/portal/integrations/int_{integration.id}/edit",
              [*dict(FIELDS, description="Better <b>copy</b>.").items(), ("scopes", "users:read")],
              status=303)
    assert stored(app)[0].description == "Better <b>copy</b>."

    # Review needs a verified company; the refusal is shown on the page.
    refused = post_form(client.web, f"/portal/integrations/int_{integration.id}/submit", {},
                        form_page=created.location, status=303)
    assert "Only a verified, active partner" in client.web.get(refused.location).text
    activate(app, registered["partner"]["id"])
    submitted = post_form(client.web, f"/portal/integrations/int_{integration.id}/submit", {},
                          form_page=created.location, status=303)
    page = client.web.get(submitted.location)
    assert "Pending review" in page.text
    assert stored(app)[0].status == "in_review"

    def reject(session):
        row = session.get(Integration, integration.id)
        row.status = "rejected"
        row.rejection_reason = "The <b>logo</b> is missing."
    run_in_transaction(app.registry["db.session_factory"], reject)
    page = client.web.get(submitted.location)
    assert "The &lt;b&gt;logo&lt;/b&gt; is missing." in page.text
    assert "Submit for review" in page.text


def test_installs_reviews_and_reply(client, app):
    registered = signed_in_owner(client)
    activate(app, registered["partner"]["id"])
    partner_id = parse_id("partner", registered["partner"]["id"])
    integration_id = add_integration(app, partner_id, plugin_name=None,
                                     config_schema=CONFIG_SCHEMA)
    customer = make_customer(client, "<Ada>")
    install(client, customer, integration_id, GOOD_CONFIG)
    client.web.post_json(f"/api/marketplace/integrations/{integration_id}/review",
                         {"rating": 4, "title": "Good <i>tool</i>"}, headers=customer.headers,
                         status=201)

    installs = client.web.get(f"/portal/integrations/{integration_id}/installs")
    assert "active" in installs.text
    assert "users:read" in installs.text
    reviews = client.web.get(f"/portal/integrations/{integration_id}/reviews")
    assert "Good &lt;i&gt;tool&lt;/i&gt;" in reviews.text
    assert "&lt;Ada&gt;" in reviews.text
    review_id = run_in_transaction(app.registry["db.session_factory"], lambda session:
                                   session.scalar(sa.select(IntegrationReview.id)))
    path = f"/portal/integrations/{integration_id}/reviews/rev_{review_id}/reply"
    empty = post_form(client.web, path, {"text": "  "},
                      form_page=f"/portal/integrations/{integration_id}/reviews", status=400)
    assert field_errors(empty, "text")
    replied = post_form(client.web, path, {"text": "Thanks <3"},
                        form_page=f"/portal/integrations/{integration_id}/reviews", status=303)
    assert "Thanks &lt;3" in client.web.get(replied.location).text

    # A published integration takes a new description without a review, but not a new price.
    edit_path = f"/portal/integrations/{integration_id}/edit"
    [form] = [form for form in client.web.get(edit_path).forms.values()
              if form.action == edit_path]
    form["description"] = "Now with <i>threads</i>."
    assert form.submit().status_int == 303
    assert "Now with &lt;i&gt;threads&lt;/i&gt;." in client.web.get(
        f"/portal/integrations/{integration_id}").text
    form = next(form for form in client.web.get(edit_path).forms.values()
                if form.action == edit_path)
    form["pricing_model"] = "paid"
    form["price"] = "5"
    refused = form.submit(status=409)
    assert "is published" in refused.text
    assert input_value(refused, "price") == "5"

    # Another partner's integration and review are 404 pages.
    other = client.register_partner(company_name="Other Co")
    other_integration = add_integration(app, parse_id("partner", other["partner"]["id"]),
                                        plugin_name=None)
    for suffix in ("", "/edit", "/installs", "/reviews"):
        client.web.get(f"/portal/integrations/{other_integration}{suffix}", status=404)
    post_form(client.web, f"/portal/integrations/{other_integration}/submit", {},
              form_page="/portal/integrations", status=404)
    post_form(client.web, f"/portal/integrations/{other_integration}/reviews/rev_{review_id}"
                          "/reply", {"text": "x"}, form_page="/portal/integrations", status=404)

    # A billing member reads but cannot write.
    billing = client.register_partner(company_name="Billing Co")
    run_in_transaction(app.registry["db.session_factory"], lambda session: session.execute(
        sa.delete(PartnerMember).where(
            PartnerMember.partner_id == parse_id("partner", billing["partner"]["id"]))))
    add_member(app, registered["partner"]["id"], billing["user"]["id"], "billing")
    browser = webtest.TestApp(app)
    log_in(browser, billing["user"]["email"])
    assert "Publish reply" not in browser.get(
        f"/portal/integrations/{integration_id}/reviews").text
    denied = browser.get(NEW, status=403)
    assert "integrations:write" in denied.text
