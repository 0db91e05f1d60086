"""The admin console in Chromium: sign in, approve a partner and an integration, disable a
plugin, and the plugin's integration leaves the marketplace."""

from __future__ import annotations

import httpx
import pytest

from fkod.admin.testing import create_admin
from tests.browser.journeys import (
    app_with_untrusted_plugin,
    approve_integration,
    approve_verification,
    disable_plugin,
    sign_in_admin,
)
from tests.functional.test_portal_admin import submitted_partner


@pytest.fixture
def app(plugin_path, app_factory):
    return app_with_untrusted_plugin(plugin_path, app_factory)


def marketplace_slugs(live_url: str) -> list[str]:
    response = httpx.get(f"{live_url}/api/marketplace/integrations", timeout=10)
    assert response.status_code == 200
    return [item["slug"] for item in response.json()["data"]]


def test_admin_console_review_and_disable(app, new_page, live_url, screenshots):
    admin = create_admin(app, role="superadmin")
    submitted_partner(app, company_name="Pending <i>Learning</i>")
    page = new_page()

    sign_in_admin(page, screenshots, admin["email"])
    screenshots.take(page, "verification-queue")

    approve_verification(page, screenshots, "Pending <i>Learning</i>")
    assert "No verification waits for a decision." in page.locator("main").inner_text()

    assert "quiz-sync" not in marketplace_slugs(live_url)
    approve_integration(page, screenshots, "Quiz Sync")
    assert "quiz-sync" in marketplace_slugs(live_url)

    disable_plugin(page, screenshots, "quizsync")
    assert "quiz-sync" not in marketplace_slugs(live_url)

    # The console is usable at 375 px wide: nothing but a table scrolls sideways.
    page.set_viewport_size({"width": 375, "height": 800})
    for path in ("/admin", "/admin/plugins/quizsync", "/admin/audit-log"):
        page.goto(path)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 375, f"{path} is {width} px wide"
    screenshots.take(page, "narrow-audit-log")
