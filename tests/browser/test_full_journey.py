"""The main journey in Chromium, in one app: a partner's sign-up to revenue from a customer's
install, and a disabled plugin's integration leaving the marketplace.

Three browser contexts take part: the partner in the portal, an admin in the console and a
customer in the marketplace. The billing period is closed through ``close_due_periods``, the
function the ``billing.close_period`` job runs.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import httpx
import pytest
import sqlalchemy as sa

from fkod.admin.testing import create_admin
from fkod.core.billing.jobs import close_due_periods
from fkod.core.billing.models import RevenueLine
from fkod.core.billing.periods import Period
from fkod.core.db import run_in_transaction, utcnow
from tests.browser import journeys

COMPANY = "Full Journey Learning"
EMAIL = "owner@full-journey.example"
INTEGRATION = "Course Relay"
CUSTOMER_EMAIL = "linus@customer.example"
CUSTOMER_PASSWORD = "a long customer passphrase"


@pytest.fixture
def app(plugin_path, app_factory):
    return journeys.app_with_untrusted_plugin(plugin_path, app_factory)


def marketplace_text(page, path: str) -> str:
    page.goto(path)
    return page.locator("main").inner_text()


def test_full_journey(app, new_page, live_url, make_receiver, screenshots):
    admin = create_admin(app, role="superadmin")
    partner = new_page()
    console = new_page()
    customer = new_page()

    # Sign-up and email verification.
    journeys.sign_up_partner(partner, app, screenshots, company=COMPANY, email=EMAIL)
    journeys.log_in_partner(partner, EMAIL)
    screenshots.take(partner, "dashboard")

    # Company verification: submitted in the portal, approved in the console.
    partner.goto("/portal/company/verification")
    partner.get_by_label("Legal name").fill(f"{COMPANY} GmbH")
    partner.get_by_label("Tax id").fill("DE123456789")
    partner.get_by_label("Website").fill("https://full-journey.example")
    partner.get_by_label("Address line 1").fill("Hauptstrasse 1")
    partner.get_by_label("City").fill("Berlin")
    partner.get_by_label("Postal code").fill("10115")
    partner.get_by_label("Country code").fill("DE")
    contact = partner.locator("fieldset", has_text="Contact person")
    contact.get_by_label("Name").fill("Ada")
    contact.get_by_label("Email").fill(EMAIL)
    screenshots.take(partner, "verification-form")
    partner.get_by_role("button", name="Submit for review").click()
    partner.wait_for_url(re.compile(r"/portal/company/verification$"))
    assert "An F-KOD admin is reviewing it." in partner.locator("main").inner_text()
    screenshots.take(partner, "verification-submitted")

    journeys.sign_in_admin(console, screenshots, admin["email"])
    journeys.approve_verification(console, screenshots, COMPANY)
    partner.goto("/portal/company/verification")
    state = partner.locator("main").inner_text()
    assert "The submitted data and documents can no longer change." in state
    screenshots.take(partner, "verification-verified")

    # A key and a first call with it.
    partner.goto("/portal")
    secret = journeys.create_key(partner, screenshots, "Journey key")
    response = httpx.get(f"{live_url}/api/v1/users",
                         headers={"Authorization": f"Bearer {secret}"}, timeout=10)
    assert response.status_code == 200
    journeys.wait_until(partner, "/portal",
                        lambda page: journeys.step_state(page, "first_call") == "Done")
    screenshots.take(partner, "first-call-done")

    # A webhook test event to a receiver on 127.0.0.1.
    receiver = make_receiver(200)
    journeys.add_webhook_and_send_test(partner, screenshots, receiver)

    # A paid integration, submitted and approved.
    partner.get_by_role("link", name="Integrations", exact=True).click()
    partner.get_by_role("link", name="Create an integration").click()
    partner.get_by_label("Name", exact=True).fill(INTEGRATION)
    partner.get_by_label("Description").fill("Relays course news to your team chat.")
    partner.get_by_label("Category").select_option("communication")
    partner.get_by_label("users:read").check()
    partner.get_by_label("Pricing model").select_option("paid")
    partner.get_by_label("Monthly price in US dollars").fill("9.90")
    partner.get_by_label("Support email").fill("help@full-journey.example")
    partner.get_by_role("button", name="Create draft").click()
    partner.wait_for_url(re.compile(r"/portal/integrations/int_\d+$"))
    assert "9.90 USD a month" in partner.locator("main").inner_text()
    integration_id = partner.url.rsplit("/", 1)[-1]
    screenshots.take(partner, "integration-draft")
    journeys.submit_integration_for_review(partner, screenshots)

    journeys.approve_integration(console, screenshots, INTEGRATION)
    journeys.approve_integration(console, screenshots, "Quiz Sync")

    # A customer finds, installs and reviews the integration.
    journeys.sign_up_customer(customer, screenshots, name="Linus Learner", email=CUSTOMER_EMAIL,
                              password=CUSTOMER_PASSWORD)
    journeys.search_and_open(customer, screenshots, query="relay", name=INTEGRATION,
                             integration_id=integration_id)
    assert "Verified partner" in customer.locator("main").inner_text()
    customer.get_by_role("link", name="Install", exact=True).click()
    journeys.grant_and_install(customer, screenshots, INTEGRATION)
    reviews = journeys.review_install(customer, screenshots, integration_id=integration_id,
                                      title="Works for our team",
                                      body="Course news arrives in our chat.")
    assert "Linus Learner" in reviews
    screenshots.take(customer, "reviewed")

    # The install's month is closed by the billing.close_period job's function, with the clock
    # one hour after the month's end because close_period rejects a month that has not ended.
    now = utcnow()
    month = Period.containing(now)
    closed = close_due_periods(app.registry, now=month.end_at + dt.timedelta(hours=1),
                               period=month)
    assert closed == [str(month)]
    [line] = run_in_transaction(app.registry["db.session_factory"], lambda session: list(
        session.scalars(sa.select(RevenueLine))))
    assert line.gross == Decimal("9.90")
    assert Decimal("0") < line.partner_share < line.gross

    partner.goto("/portal/billing/revenue")
    # Chart.js animates the bars, so the screenshot waits until the chart is drawn.
    partner.wait_for_selector('#chart-revenue[data-drawn="true"]')
    share = partner.locator('#revenue-totals dt:text-is("Your share") + dd').inner_text()
    assert share == f"{line.partner_share:.2f} USD"
    period_cells = partner.locator("section:has(#periods-title) tr",
                                   has_text=str(month)).locator("td").all_inner_texts()
    assert period_cells[2:5] == ["9.90", f"{line.commission:.2f}", f"{line.partner_share:.2f}"]
    screenshots.take(partner, "revenue")

    # Disabling the plugin takes its integration off the marketplace page.
    for path in ("/marketplace/search?q=quiz", "/marketplace"):
        assert "Quiz Sync" in marketplace_text(customer, path), path
    screenshots.take(customer, "plugin-integration-listed")
    journeys.disable_plugin(console, screenshots, "quizsync")
    for path in ("/marketplace/search?q=quiz", "/marketplace"):
        assert "Quiz Sync" not in marketplace_text(customer, path), path
    screenshots.take(customer, "plugin-integration-gone")
    assert INTEGRATION in marketplace_text(customer, "/marketplace")
