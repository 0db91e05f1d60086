"""The portal dashboard's checklist, and what every portal page shares: headers, assets, errors."""

from __future__ import annotations

import re
import time

import pytest

from fkod.core.db import run_in_transaction
from fkod.core.ids import parse_id
from fkod.core.testing import auth_header, verify_partner
from fkod.marketplace.models import Integration
from tests.functional.portal_pages import log_in, post_form, signed_in_owner

pytestmark = pytest.mark.shared_app

STEPS = ("verify_company", "create_key", "first_call", "add_webhook", "publish_integration")


def step_states(page) -> dict[str, str]:
    return {name: state for state, name in re.findall(
        r'<li class="step (done|todo)" data-step="(\w+)">', page.text)}


def test_checklist_follows_real_data(client, app):
    owner = signed_in_owner(client)
    page = client.web.get("/portal")
    assert step_states(page) == dict.fromkeys(STEPS, "todo")
    assert "(0 of 5 done)" in page.text
    assert 'href="/portal/keys/new">Create an API key</a>' in page.text

    verify_partner(app, owner["partner"]["id"])
    key_page = post_form(client.web, "/portal/keys", [("key_name", "k"), ("mode", "test"),
                                                      ("scopes", "users:read")],
                         form_page="/portal/keys/new", status=200)
    secret = re.search(r'value="(sk_test_[A-Za-z0-9_-]+)"', key_page.text).group(1)
    states = step_states(client.web.get("/portal"))
    assert states["verify_company"] == "done"
    assert states["create_key"] == "done"
    assert states["first_call"] == "todo"

    client.web.get("/api/v1/users", headers=auth_header(secret), status=200)
    deadline = time.monotonic() + 10
    while step_states(client.web.get("/portal"))["first_call"] != "done":
        assert time.monotonic() < deadline, "the first call never showed on the checklist"
        time.sleep(0.05)

    post_form(client.web, "/portal/webhooks", [("url", "http://127.0.0.1:9/h"), ("mode", "test"),
                                               ("event_types", "user.created")],
              form_page="/portal/webhooks/new", status=200)

    def publish(session):
        session.add(Integration(partner_id=parse_id("partner", owner["partner"]["id"]),
                                name="Sync", slug="sync", status="published"))

    run_in_transaction(app.registry["db.session_factory"], publish)
    page = client.web.get("/portal")
    assert step_states(page) == dict.fromkeys(STEPS, "done")
    assert "(5 of 5 done)" in page.text


def test_pages_send_security_headers_and_own_assets(client):
    signed_in_owner(client)
    for path in ("/portal", "/portal/login", "/portal/keys", "/portal/webhooks", "/portal/nope"):
        # Page times are measured by bench/bench_portal_pages.py, not here.
        response = client.web.get(path, status="*")
        policy = response.headers["Content-Security-Policy"]
        assert "default-src 'self'" in policy
        assert "frame-ancestors 'none'" in policy
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Cache-Control"] == "no-store"
        if response.status_int != 303:
            assert response.content_type == "text/html"
        assert not re.search(r'(src|href)="(https?:)?//', response.text), path

    page = client.web.get("/portal")
    stylesheet = re.search(r'<link rel="stylesheet" href="([^"]+)">', page.text).group(1)
    script = re.search(r'<script src="([^"]+)" defer>', page.text).group(1)
    assert client.web.get(stylesheet).content_type == "text/css"
    assert "navigator.clipboard" in client.web.get(script).text
    assert 'class="skip-link" href="#main"' in page.text
    assert '<main id="main"' in page.text


def test_error_pages_are_html_and_api_stays_json(client):
    signed_in_owner(client)
    missing = client.web.get("/portal/no-such-page", status=404)
    assert "Page not found" in missing.text
    assert "/portal/no-such-page" in missing.text
    client.web.get("/portal/webhooks/whk_0", status=404)
    wrong_method = client.web.delete("/portal/keys", status=405)
    assert wrong_method.content_type == "text/html"

    api = client.web.get("/api/partners/me", status=401)
    assert api.content_type == "application/json"
    # The JSON API never takes the portal's cookie as a credential.
    assert api.json["code"] == "missing_credentials"


def test_customer_without_partner_gets_403(client):
    client.web.post_json("/api/auth/register", {"email": "learner@example.test",
                                                "password": "correct horse battery staple"})
    log_in(client.web, "learner@example.test")
    page = client.web.get("/portal", status=403)
    assert "not a member of any partner" in page.text


def test_lists_paginate(client, app):
    signed_in_owner(client)
    for number in range(21):
        post_form(client.web, "/portal/keys", [("key_name", f"key {number:02}"), ("mode", "test"),
                                               ("scopes", "users:read")],
                  form_page="/portal/keys/new", status=200)
    first = client.web.get("/portal/keys")
    assert "key 20" in first.text
    assert "key 00" not in first.text
    cursor = re.search(r'href="/portal/keys\?cursor=([^"]+)">Next page', first.text).group(1)
    second = client.web.get(f"/portal/keys?cursor={cursor}")
    assert "key 00" in second.text
    assert "key 20" not in second.text
    assert "Next page" not in second.text
