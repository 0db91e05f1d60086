"""The admin console in Chromium: sign in, approve a partner and an integration, disable a
plugin, and the plugin's integration leaves the marketplace."""

from __future__ import annotations

import re

import httpx
import pytest

from fkod.admin.testing import ADMIN_TEST_PASSWORD, create_admin
from tests.functional.test_plugin_manifests import add_partner, install_manifest_plugin
from tests.functional.test_portal_admin import submitted_partner


@pytest.fixture
def app(plugin_path, app_factory):
    # The plugin is installed before the app that the browser talks to is built, and its
    # integration waits in review because the plugin is not trusted.
    install_manifest_plugin(plugin_path)
    add_partner(app_factory(), "quizco")
    return app_factory()


def marketplace_slugs(live_url: str) -> list[str]:
    response = httpx.get(f"{live_url}/api/marketplace/integrations", timeout=10)
    assert response.status_code == 200
    return [item["slug"] for item in response.json()["data"]]


def test_admin_console_review_and_disable(app, new_page, live_url, screenshots):
    admin = create_admin(app, role="superadmin")
    submitted_partner(app, company_name="Pending <i>Learning</i>")
    page = new_page()

    page.goto("/admin/verifications")
    page.wait_for_url(re.compile(r"/admin/login"))
    page.get_by_label("Email").fill(admin["email"])
    page.get_by_label("Password").fill(ADMIN_TEST_PASSWORD)
    screenshots.take(page, "sign-in")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/admin/verifications$"))
    screenshots.take(page, "verification-queue")

    page.get_by_role("link", name="Pending <i>Learning</i>").click()
    page.get_by_role("button", name="Approve verification").click()
    page.wait_for_url(re.compile(r"/admin/verifications$"))
    flash = page.locator(".flash").inner_text()
    assert flash == "The verification of Pending <i>Learning</i> is approved."
    assert "No verification waits for a decision." in page.locator("main").inner_text()
    screenshots.take(page, "partner-approved")

    assert "quiz-sync" not in marketplace_slugs(live_url)
    page.get_by_role("link", name="Integrations", exact=True).click()
    page.get_by_role("link", name="Quiz Sync").click()
    page.get_by_role("button", name="Approve and publish").click()
    page.wait_for_url(re.compile(r"/admin/integrations$"))
    assert page.locator(".flash").inner_text() == "The integration Quiz Sync is published."
    assert "quiz-sync" in marketplace_slugs(live_url)
    screenshots.take(page, "integration-published")

    page.get_by_role("link", name="Plugins").click()
    page.get_by_role("link", name="quizsync").click()
    page.get_by_role("checkbox").check()
    screenshots.take(page, "disable-confirmation")
    page.get_by_role("button", name="Disable plugin").click()
    page.wait_for_url(re.compile(r"/admin/plugins/quizsync$"))
    assert page.locator(".flash").inner_text() == "The plugin quizsync is disabled."
    screenshots.take(page, "plugin-disabled")

    assert "quiz-sync" not in marketplace_slugs(live_url)

    # The console is usable at 375 px wide: nothing but a table scrolls sideways.
    page.set_viewport_size({"width": 375, "height": 800})
    for path in ("/admin", "/admin/plugins/quizsync", "/admin/audit-log"):
        page.goto(path)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 375, f"{path} is {width} px wide"
    screenshots.take(page, "narrow-audit-log")
