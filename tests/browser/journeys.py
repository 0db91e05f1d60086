"""Browser steps shared by the journeys in this folder: portal, admin console and marketplace.

Each helper drives one step through the pages with the same labels and roles a
user reads, and asserts the outcome the step promises.
"""

from __future__ import annotations

import re
import time

from fkod.admin.testing import ADMIN_TEST_PASSWORD
from fkod.core.testing import TEST_PASSWORD, TestClient
from tests.functional.test_auth_mail import wait_for_mail
from tests.functional.test_plugin_manifests import add_partner, install_manifest_plugin

VERIFY_LINK = re.compile(r"https?://[^/\s]+(/verify-email\?token=[A-Za-z0-9_-]+)")
TEST_EVENT_FLASH = re.compile(
    r"Test event user\.created \(evt_\w+\) sent; the receiver answered 200 in \d+ ms\.")


def wait_until(page, path: str, done, timeout: float = 10) -> None:
    """Reload ``path`` until ``done(page)`` is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        page.goto(path)
        if done(page):
            return
        assert time.monotonic() < deadline, f"{path} did not reach the expected state"
        time.sleep(0.2)


def app_with_untrusted_plugin(plugin_path, app_factory):
    """Build an app with the quizsync plugin installed, its integration Quiz Sync in review.

    The plugin is installed before the app is built, and its integration waits in review
    because the plugin is not trusted.
    """
    install_manifest_plugin(plugin_path)
    add_partner(app_factory(), "quizco")
    return app_factory()


def step_state(page, name: str) -> str:
    """Return the state shown for one onboarding checklist step on the dashboard."""
    return page.locator(f'[data-step="{name}"] .step-state').inner_text()


# Partner portal ------------------------------------------------------------------------


def sign_up_partner(page, app, screenshots, *, company: str, email: str) -> None:
    """Sign a partner up and verify its email through the link of the captured mail."""
    page.goto("/portal/signup")
    page.get_by_label("Company name").fill(company)
    page.get_by_label("Your name").fill("Ada")
    page.get_by_label("Work email").fill(email)
    page.get_by_label("Password").fill(TEST_PASSWORD)
    screenshots.take(page, "signup-form")
    page.get_by_role("button", name="Create account").click()
    page.wait_for_url(re.compile(r"/portal/login"))
    assert f"{company} is registered" in page.locator(".flash").inner_text()
    screenshots.take(page, "registered")

    [message] = wait_for_mail(TestClient(app), email)
    page.goto(VERIFY_LINK.search(message.body).group(1))
    page.get_by_role("button", name="Verify my email").click()
    page.wait_for_url(re.compile(r"/portal/login"))
    assert f"{email} is verified." in page.locator(".flash").inner_text()
    screenshots.take(page, "email-verified")


def log_in_partner(page, email: str, password: str = TEST_PASSWORD) -> None:
    """Log in on the portal's login form and wait for the dashboard."""
    if "/portal/login" not in page.url:
        page.goto("/portal/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"/portal$"))


def create_key(page, screenshots, name: str) -> str:
    """Create a test key with the users scopes, copy it with the Copy button, return it."""
    page.get_by_role("link", name="API keys").click()
    page.get_by_role("link", name="Create a key").click()
    page.get_by_label("Name").fill(name)
    page.get_by_label("users:read").check()
    page.get_by_label("users:write").check()
    screenshots.take(page, "key-form")
    page.get_by_role("button", name="Create key").click()
    page.get_by_role("button", name="Copy").click()
    status = '[data-copy-status="api-key-secret"]'
    page.wait_for_function(f"document.querySelector('{status}').textContent !== ''")
    assert page.locator(status).inner_text() == "Copied to the clipboard."
    secret = page.evaluate("navigator.clipboard.readText()")
    assert secret == page.get_by_label(f"Secret of {name}").input_value()
    assert secret.startswith("sk_test_")
    screenshots.take(page, "key-created")
    return secret


def add_webhook_and_send_test(page, screenshots, receiver) -> None:
    """Subscribe ``receiver`` to user.created and send it a test event from its page.

    The page stays on the endpoint's detail page.
    """
    page.get_by_role("link", name="Webhooks").click()
    page.get_by_role("link", name="Add an endpoint").click()
    page.get_by_label("Endpoint URL").fill(receiver.url)
    page.get_by_label("user.created").check()
    screenshots.take(page, "webhook-form")
    page.get_by_role("button", name="Add endpoint").click()
    assert page.get_by_label("Signing secret").input_value().startswith("whsec_")
    screenshots.take(page, "webhook-created")

    page.get_by_role("link", name="Go to the endpoint").click()
    page.get_by_role("button", name="Send test event").click()
    flash = page.locator(".flash").inner_text()
    assert TEST_EVENT_FLASH.search(flash), flash
    assert len(receiver.wait_for(1, timeout=10)) == 1
    screenshots.take(page, "test-event-sent")


def submit_integration_for_review(page, screenshots) -> None:
    """Submit the integration whose portal page is open, and check it waits in review."""
    page.get_by_role("button", name="Submit for review").click()
    page.wait_for_url(re.compile(r"/portal/integrations/int_\d+$"))
    assert page.locator("#integration-status").inner_text().lower() == "in review"
    assert "Pending review" in page.locator("main").inner_text()
    screenshots.take(page, "pending-review")


# Admin console -------------------------------------------------------------------------


def sign_in_admin(page, screenshots, email: str, path: str = "/admin/verifications") -> None:
    """Open ``path`` in the console and sign in on the login page it redirects to."""
    page.goto(path)
    page.wait_for_url(re.compile(r"/admin/login"))
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(ADMIN_TEST_PASSWORD)
    screenshots.take(page, "admin-sign-in")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(re.escape(path) + "$"))


def approve_verification(page, screenshots, company: str) -> None:
    """Approve the submitted verification of ``company`` from the verification queue."""
    page.goto("/admin/verifications")
    page.get_by_role("link", name=company).click()
    page.get_by_role("button", name="Approve verification").click()
    page.wait_for_url(re.compile(r"/admin/verifications$"))
    assert page.locator(".flash").inner_text() == f"The verification of {company} is approved."
    screenshots.take(page, "verification-approved")


def approve_integration(page, screenshots, name: str) -> None:
    """Approve and publish the integration ``name`` from the console's integration list."""
    page.get_by_role("link", name="Integrations", exact=True).click()
    page.get_by_role("link", name=name).click()
    page.get_by_role("button", name="Approve and publish").click()
    page.wait_for_url(re.compile(r"/admin/integrations$"))
    assert page.locator(".flash").inner_text() == f"The integration {name} is published."
    screenshots.take(page, "integration-published")


def disable_plugin(page, screenshots, plugin: str) -> None:
    """Disable ``plugin`` from its console page, with the confirmation checkbox ticked."""
    page.get_by_role("link", name="Plugins").click()
    page.get_by_role("link", name=plugin).click()
    page.get_by_role("checkbox").check()
    screenshots.take(page, "disable-confirmation")
    page.get_by_role("button", name="Disable plugin").click()
    page.wait_for_url(re.compile(rf"/admin/plugins/{plugin}$"))
    assert page.locator(".flash").inner_text() == f"The plugin {plugin} is disabled."
    screenshots.take(page, "plugin-disabled")


# Marketplace ---------------------------------------------------------------------------


def sign_up_customer(page, screenshots, *, name: str, email: str, password: str) -> None:
    """Sign a customer up in the marketplace, log in and wait for the marketplace page."""
    page.goto("/marketplace/signup")
    page.get_by_label("Your name").fill(name)
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    screenshots.take(page, "customer-signup")
    page.get_by_role("button", name="Create account").click()
    page.wait_for_url(re.compile(r"/portal/login"))
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"/marketplace$"))


def search_and_open(page, screenshots, *, query: str, name: str, integration_id: str) -> None:
    """Search the marketplace for ``query`` and open the integration ``name`` in the results."""
    page.get_by_label("Search integrations").fill(query)
    page.get_by_label("Search integrations").press("Enter")
    page.wait_for_url(re.compile(rf"/marketplace/search\?q={re.escape(query)}"))
    screenshots.take(page, "search-results")
    page.get_by_role("link", name=name).click()
    page.wait_for_url(re.compile(rf"/marketplace/integrations/{integration_id}$"))


def grant_and_install(page, screenshots, name: str) -> None:
    """Grant the permissions on the open install form, install, and wait for the installs."""
    page.get_by_label(re.compile("I grant .* these permissions")).check()
    page.get_by_role("button", name="Install", exact=True).click()
    page.wait_for_url(re.compile(r"/marketplace/installs$"))
    assert f"{name} is installed." in page.locator(".flash").inner_text()
    screenshots.take(page, "installed")


def review_install(page, screenshots, *, integration_id: str, title: str, body: str) -> str:
    """Review the first install on the installs page with 5 stars, and return the reviews' text."""
    page.get_by_role("link", name="Review", exact=True).click()
    page.get_by_label("5 stars").check()
    page.get_by_label("Title").fill(title)
    page.get_by_label("Your review").fill(body)
    page.get_by_role("button", name="Publish review").click()
    page.wait_for_url(re.compile(rf"/marketplace/integrations/{integration_id}$"))
    reviews = page.locator(".review-list").inner_text()
    assert title in reviews
    return reviews
