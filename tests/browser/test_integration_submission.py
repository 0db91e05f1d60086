"""A verified partner's owner creates a paid integration with a configuration schema in
Chromium, and submits it for review."""

from __future__ import annotations

import json
import re

import sqlalchemy as sa

from fkod.core.auth.models import Partner
from fkod.core.db import run_in_transaction
from fkod.core.ids import parse_id
from fkod.core.testing import TestClient, verify_partner
from fkod.marketplace.models import Integration
from tests.browser.journeys import log_in_partner, submit_integration_for_review

CONFIG_SCHEMA = {"type": "object", "required": ["channel"],
                 "properties": {"channel": {"type": "string", "minLength": 1}}}


def verified_owner(app) -> str:
    """Register a partner, approve it as an admin would, and return its owner's email."""
    registered = TestClient(app).register_partner(company_name="Submit Learning")
    partner_id = registered["partner"]["id"]
    verify_partner(app, partner_id)
    run_in_transaction(app.registry["db.session_factory"], lambda session: session.execute(
        sa.update(Partner).where(Partner.id == parse_id("partner", partner_id))
        .values(status="active")))
    return registered["user"]["email"]


def test_integration_submission(app, new_page, screenshots):
    email = verified_owner(app)
    page = new_page()
    log_in_partner(page, email)

    page.get_by_role("link", name="Integrations", exact=True).click()
    page.get_by_role("link", name="Create an integration").click()
    page.get_by_label("Name", exact=True).fill("Course Sync")
    page.get_by_label("Description").fill("Copies course progress to your team chat.")
    page.get_by_label("Category").select_option("communication")
    page.get_by_label("users:read").check()
    page.get_by_label("Install configuration schema").fill(json.dumps(CONFIG_SCHEMA))
    page.get_by_label("Pricing model").select_option("paid")
    page.get_by_label("Monthly price in US dollars").fill("abc")
    page.get_by_label("Support email").fill("help@submit.example")
    page.get_by_role("button", name="Create draft").click()

    # The typed values survive a field error.
    assert "Enter an amount in US dollars" in page.locator("#price-error").inner_text()
    assert page.get_by_label("Name", exact=True).input_value() == "Course Sync"
    screenshots.take(page, "price-error")
    page.get_by_label("Monthly price in US dollars").fill("9.90")
    page.get_by_role("button", name="Create draft").click()
    page.wait_for_url(re.compile(r"/portal/integrations/int_\d+$"))
    assert "created as a draft" in page.locator(".flash").inner_text()
    assert "9.90 USD a month" in page.locator("main").inner_text()
    screenshots.take(page, "draft")

    submit_integration_for_review(page, screenshots)

    # The pages fit a 375 px wide screen: only tables and code blocks scroll sideways.
    page.set_viewport_size({"width": 375, "height": 800})
    for path in (page.url, "/portal/integrations/new", "/portal/company/verification",
                 "/portal/team", "/portal/support/new"):
        page.goto(path)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 375, f"{path} is {width} px wide"
        screenshots.take(page, "narrow-" + path.rstrip("/").rsplit("/", 1)[-1])

    [integration] = run_in_transaction(app.registry["db.session_factory"], lambda session: list(
        session.scalars(sa.select(Integration))))
    assert integration.status == "in_review"
    assert integration.price_cents == 990
    assert integration.config_schema == CONFIG_SCHEMA
