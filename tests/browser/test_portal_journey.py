"""A partner's first hour in the portal, in Chromium: sign-up to a delivered webhook.

Also: the login form used with the keyboard only, and the pages at 375 px wide.
"""

from __future__ import annotations

import re

import httpx

from fkod.core.testing import TEST_PASSWORD
from tests.browser.journeys import (
    add_webhook_and_send_test,
    create_key,
    log_in_partner,
    sign_up_partner,
    step_state,
    wait_until,
)

EMAIL = "founder@journey.example"


def test_partner_journey(app, new_page, live_url, make_receiver, screenshots):
    page = new_page()
    sign_up_partner(page, app, screenshots, company="Journey Learning <b>Ltd</b>", email=EMAIL)
    log_in_partner(page, EMAIL)
    screenshots.take(page, "dashboard")
    assert step_state(page, "create_key") == "To do"

    secret = create_key(page, screenshots, "First key")

    response = httpx.get(f"{live_url}/api/v1/users", headers={"Authorization": f"Bearer {secret}"},
                         timeout=10)
    assert response.status_code == 200
    wait_until(page, "/portal", lambda page: step_state(page, "first_call") == "Done")
    assert step_state(page, "create_key") == "Done"
    screenshots.take(page, "first-call-done")

    receiver = make_receiver(200)
    add_webhook_and_send_test(page, screenshots, receiver)

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
    log_in_partner(page, email)
    for path, name in (("/portal", "dashboard"), ("/portal/keys/new", "new-key"),
                       ("/portal/webhooks/new", "new-webhook"), ("/portal/signup", "signup")):
        page.goto(path)
        screenshots.take(page, f"{name}-375px")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 375, f"{path} is {width} px wide at a 375 px viewport"
