"""A customer's first visit to the marketplace, in Chromium: sign-up, search, install, review.

The integration is created, submitted and approved through the JSON API, as
a partner and an admin would do it.
"""

from __future__ import annotations

from fkod.admin.testing import admin_with_headers
from fkod.core.testing import TestClient
from tests.browser.journeys import (
    grant_and_install,
    review_install,
    search_and_open,
    sign_up_customer,
)
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

    sign_up_customer(page, screenshots, name="Grace Hopper", email=EMAIL, password=PASSWORD)
    search_and_open(page, screenshots, query="lecture", name="Lecture Relay",
                    integration_id=integration_id)
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
    grant_and_install(page, screenshots, "Lecture Relay")
    assert "#lectures" in page.locator("main").inner_text()

    reviews = review_install(page, screenshots, integration_id=integration_id,
                             title="Does what it says",
                             body="Lecture news reaches the team within a minute.")
    assert "Grace Hopper" in reviews
    assert "5.0 of 5 (1 review)" in page.locator("main").inner_text()
    # Nothing is wider than the 375 px viewport.
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    screenshots.take(page, "reviewed")
