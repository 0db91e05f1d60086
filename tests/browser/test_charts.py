"""The dashboard's usage charts in Chromium: drawn by the vendored Chart.js, with their table."""

from __future__ import annotations

import re

from fkod.core.db import utcnow
from fkod.core.testing import TEST_PASSWORD, TestClient, auth_header

# Counts the canvas pixels that are not fully transparent.
PAINTED_PIXELS = """canvas => {
  const context = canvas.getContext("2d");
  const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
  let painted = 0;
  for (let index = 3; index < pixels.length; index += 4) {
    if (pixels[index] !== 0) painted += 1;
  }
  return painted;
}"""


def test_dashboard_usage_chart_drawn(app, new_page, screenshots):
    client = TestClient(app)
    registered = client.register_partner(company_name="Chart Learning")
    token = client.login(registered["user"]["email"])
    key = client.create_key(token, scopes=("users:read",))
    for _ in range(4):
        client.web.get("/api/v1/users", headers=auth_header(key["key"]), status=200)
    client.web.get("/api/v1/users/user_2147483647", headers=auth_header(key["key"]), status=404)
    app.registry["usage_recorder"].flush()
    if app.registry.settings["fkod.metering.backend"] == "redis":
        app.registry["tasks"].run_periodic_now()

    page = new_page(width=375, height=800)
    page.goto("/portal/login?next=/portal%3Fmode%3Dtest")
    page.get_by_label("Email").fill(registered["user"]["email"])
    page.get_by_label("Password").fill(TEST_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"/portal\?mode=test$"))

    calls = page.locator("#chart-calls")
    page.wait_for_selector('#chart-calls[data-drawn="true"]')
    page.wait_for_selector('#chart-errors[data-drawn="true"]')
    screenshots.take(page, "dashboard-charts")
    assert calls.bounding_box()["width"] <= 375
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    assert calls.evaluate(PAINTED_PIXELS) > 500
    assert page.locator("#chart-errors").evaluate(PAINTED_PIXELS) > 500

    page.locator("#chart-calls-title").scroll_into_view_if_needed()
    page.locator("figure:has(#chart-calls) summary").click()
    page.locator("figure:has(#chart-errors) summary").press("Enter")
    today = utcnow().date().isoformat()
    row = page.locator("#chart-calls-table tbody tr", has_text=today)
    assert row.locator("td").inner_text() == "5"
    error_row = page.locator("#chart-errors-table tbody tr", has_text=today)
    assert error_row.locator("td").inner_text() == "1"
    screenshots.take(page, "calls-table")

    # The revenue page's chart and tables fit the 375 px viewport without a page-wide scroll.
    page.goto("/portal/billing/revenue")
    page.wait_for_selector('#chart-revenue[data-drawn="true"]')
    assert page.locator("#chart-revenue").evaluate(PAINTED_PIXELS) > 500
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    screenshots.take(page, "revenue-chart")
