"""A partner's first hour in the portal, in Chromium: sign-up to a delivered webhook.

Also: the login form used with the keyboard only, and the pages at 375 px wide.
"""

from __future__ import annotations

import re
import time

import httpx

from fkod.core.testing import TEST_PASSWORD, TestClient
from tests.functional.test_auth_mail import wait_for_mail

VERIFY_LINK = re.compile(r"https?://[^/\s]+(/verify-email\?token=[A-Za-z0-9_-]+)")
EMAIL = "founder@journey.example"


def wait_until(page, path: str, done, timeout: float = 10) -> None:
    """Reload ``path`` until ``done(page)`` is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        page.goto(path)
        if done(page):
            return
        assert time.monotonic() < deadline, f"{path} did not reach the expected state"
        time.sleep(0.2)


def sign_up_and_log_in(page, app, screenshots) -> None:
    page.goto("/portal/signup")
    page.get_by_label("Company name").fill("Journey Learning <b>Ltd</b>")
    page.get_by_label("Your name").fill("Ada")
    page.get_by_label("Work email").fill(EMAIL)
    page.get_by_label("Password").fill(TEST_PASSWORD)
    screenshots.take(page, "signup-form")
    page.get_by_role("button", name="Create account").click()
    page.wait_for_url(re.compile(r"/portal/login"))
    assert "Journey Learning <b>Ltd</b> is registered" in page.locator(".flash").inner_text()
    screenshots.take(page, "registered")

    [message] = wait_for_mail(TestClient(app), EMAIL)
    page.goto(VERIFY_LINK.search(message.body).group(1))
    page.get_by_role("button", name="Verify my email").click()
    page.wait_for_url(re.compile(r"/portal/login"))
    assert f"{EMAIL} is verified." in page.locator(".flash").inner_text()
    screenshots.take(page, "email-verified")

    page.get_by_label("Email").fill(EMAIL)
    page.get_by_label("Password").fill(TEST_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"/portal$"))
    screenshots.take(page, "dashboard")


def step_state(page, name: str) -> str:
    return page.locator(f'[data-step="{name}"] .step-state').inner_text()


def test_partner_journey(app, new_page, live_url, make_receiver, screenshots):
    page = new_page()
    sign_up_and_log_in(page, app, screenshots)
    assert step_state(page, "create_key") == "To do"

    page.get_by_role("link", name="API keys").click()
    page.get_by_role("link", name="Create a key").click()
    page.get_by_label("Name").fill("First key")
    page.get_by_label("users:read").check()
    page.get_by_label("users:write").check()
    screenshots.take(page, "key-form")
    page.get_by_role("button", name="Create key").click()
    page.get_by_role("button", name="Copy").click()
    status = '[data-copy-status="api-key-secret"]'
    page.wait_for_function(f"document.querySelector('{status}').textContent !== ''")
    assert page.locator(status).inner_text() == "Copied to the clipboard."
    secret = page.evaluate("navigator.clipboard.readText()")
    assert secret == page.get_by_label("Secret of First key").input_value()
    assert secret.startswith("sk_test_")
    screenshots.take(page, "key-created")

    response = httpx.get(f"{live_url}/api/v1/users", headers={"Authorization": f"Bearer {secret}"},
                         timeout=10)
    assert response.status_code == 200
    wait_until(page, "/portal", lambda page: step_state(page, "first_call") == "Done")
    assert step_state(page, "create_key") == "Done"
    screenshots.take(page, "first-call-done")

    receiver = make_receiver(200)
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
    assert re.search(r"Test event user\.created \(evt_\w+\) sent; the receiver answered 200 in "
                     r"\d+ ms\.", flash), flash
    assert len(receiver.wait_for(1, timeout=10)) == 1
    screenshots.take(page, "test-event-sent")

    created = httpx.post(f"{live_url}/api/v1/users", json={"email": "learner@journey.example"},
                         headers={"Authorization": f"Bearer {secret}"}, timeout=10)
    assert created.status_code == 201
    receiver.wait_for(2, timeout=10)
    endpoint_path = page.url.removeprefix(live_url)
    wait_until(page, endpoint_path,
               lambda page: "succeeded" in page.locator("tr.delivery").all_inner_texts()[0]
               if page.locator("tr.delivery").count() else False)
    screenshots.take(page, "delivery-logged")
    page.locator("tr.delivery a").first.click()
    assert page.locator("tr.attempt").count() == 1
    assert "200" in page.locator("tr.attempt").first.inner_text()
    screenshots.take(page, "delivery-detail")

    page.goto("/portal")
    assert step_state(page, "add_webhook") == "Done"


def test_login_with_keyboard_only(client, new_page, screenshots):
    email = client.register_partner()["user"]["email"]
    page = new_page()
    page.goto("/portal/login")

    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none"
    screenshots.take(page, "skip-link-focused")
    page.keyboard.press("Enter")
    focused = []
    for _ in range(6):
        page.keyboard.press("Tab")
        focused.append(page.evaluate("document.activeElement.id || "
                                     "document.activeElement.textContent.trim()"))
        if focused[-1] == "email":
            break
    assert focused[-1] == "email", focused
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none"
    page.keyboard.type(email)
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "password"
    page.keyboard.type(TEST_PASSWORD)
    screenshots.take(page, "form-filled")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/portal$"))
    assert page.get_by_role("heading", level=1).inner_text() == "Acme Learning"
    screenshots.take(page, "logged-in")


def test_pages_fit_375_px(client, new_page, screenshots):
    email = client.register_partner(company_name="A company with a rather long name")["user"][
        "email"]
    page = new_page(width=375, height=800)
    page.goto("/portal/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(TEST_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"/portal$"))
    for path, name in (("/portal", "dashboard"), ("/portal/keys/new", "new-key"),
                       ("/portal/webhooks/new", "new-webhook"), ("/portal/signup", "signup")):
        page.goto(path)
        screenshots.take(page, f"{name}-375px")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 375, f"{path} is {width} px wide at a 375 px viewport"
