"""A customer's first visit to the marketplace, in Chromium: sign-up, search, install, review.

The integration is created, submitted and approved through the JSON API, as
a partner and an admin would do it.
"""

from __future__ import annotations

import re

from fkod.admin.testing import admin_with_headers
from fkod.core.testing import TestClient
from tests.functional.test_admin_integrations import approve, register, submitted

EMAIL = "grace@customer.example"
PASSWORD = "a long customer passphrase"
CONFIG_SCHEMA = {
    "type": "object",
    "required": ["channel"],
    "properties": {
        "channel": {"type": "string", "title": "Channel", "minLength": 2,
                    "description": "Where course news is posted."},
        "region": {"type": "string", "title": "Region", "enum": ["eu", "us"]},
        "daily_limit": {"type": "integer", "title": "Daily limit", "minimum": 1, "maximum": 50},
        "digest": {"type": "boolean", "title": "Send a daily digest"},
    },
}


def publish_integration(app) -> str:
    client = TestClient(app)
    member = register(client)
    integration = submitted(client, member, name="Lecture Relay", category="communication",
                            description="Relays lecture news to your team chat.",
                            config_schema=CONFIG_SCHEMA, scopes=["users:read"],
                            event_types=["course.*"])
    _admin, headers = admin_with_headers(client, role="support")
    approve(client, headers, integration)
    return integration["id"]


def test_customer_marketplace_journey(app, new_page, screenshots):
    integration_id = publish_integration(app)
    page = new_page(width=375, height=800)

    page.goto("/marketplace/signup")
    page.get_by_label("Your name").fill("Grace Hopper")
    page.get_by_label("Email").fill(EMAIL)
    page.get_by_label("Password").fill(PASSWORD)
    screenshots.take(page, "signup")
    page.get_by_role("button", name="Create account").click()
    page.wait_for_url(re.compile(r"/portal/login"))
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"/marketplace$"))

    page.get_by_label("Search integrations").fill("lecture")
    page.get_by_label("Search integrations").press("Enter")
    page.wait_for_url(re.compile(r"/marketplace/search\?q=lecture"))
    screenshots.take(page, "search-results")
    page.get_by_role("link", name="Lecture Relay").click()
    page.wait_for_url(re.compile(rf"/marketplace/integrations/{integration_id}$"))
    assert "Verified partner" in page.locator("main").inner_text()
    assert "users:read" in page.locator("main").inner_text()

    page.get_by_role("link", name="Install", exact=True).click()
    page.get_by_label("Daily limit").fill("500")
    page.get_by_role("button", name="Install", exact=True).click()
    error = page.locator("#config-channel-error")
    assert error.inner_text() == "This field is required."
    assert page.get_by_label("Daily limit").input_value() == "500"
    screenshots.take(page, "install-errors")

    page.get_by_label("Channel").fill("#lectures")
    page.get_by_label("Region").select_option("eu")
    page.get_by_label("Daily limit").fill("20")
    page.get_by_label("Send a daily digest").check()
    page.get_by_label(re.compile("I grant .* these permissions")).check()
    page.get_by_role("button", name="Install", exact=True).click()
    page.wait_for_url(re.compile(r"/marketplace/installs$"))
    assert "Lecture Relay is installed." in page.locator(".flash").inner_text()
    assert "#lectures" in page.locator("main").inner_text()
    screenshots.take(page, "installed")

    page.get_by_role("link", name="Review", exact=True).click()
    page.get_by_label("5 stars").check()
    page.get_by_label("Title").fill("Does what it says")
    page.get_by_label("Your review").fill("Lecture news reaches the team within a minute.")
    page.get_by_role("button", name="Publish review").click()
    page.wait_for_url(re.compile(rf"/marketplace/integrations/{integration_id}$"))
    reviews = page.locator(".review-list").inner_text()
    assert "Does what it says" in reviews
    assert "Grace Hopper" in reviews
    assert "5.0 of 5 (1 review)" in page.locator("main").inner_text()
    # Nothing is wider than the 375 px viewport.
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    screenshots.take(page, "reviewed")
