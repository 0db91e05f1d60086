"""The API playground page (``/developers/playground``): sign-in, assets, no external URL."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest

from fkod.core.testing import TEST_PASSWORD
from tests.functional.test_members import add_member

pytestmark = pytest.mark.shared_app

PLAYGROUND = "/developers/playground"
LOGIN = "/developers/login"
EXTERNAL_URL = re.compile(r"(?:https?:)?//[A-Za-z0-9.-]+", re.IGNORECASE)


def sign_in(client, email: str, password: str = TEST_PASSWORD, status: int = 303):
    form = client.web.get(f"{LOGIN}?return_to={PLAYGROUND}").forms[0]
    form["email"] = email
    form["password"] = password
    return form.submit(status=status)


@pytest.fixture
def developer(client) -> dict:
    registered = client.register_partner()
    token = client.login(registered["user"]["email"])
    return {"email": registered["user"]["email"], "token": token}


def test_redirects_to_sign_in(client):
    response = client.web.get(PLAYGROUND, status=303)
    location = urlsplit(response.headers["Location"])

    assert location.path == LOGIN
    assert parse_qs(location.query) == {"return_to": [PLAYGROUND]}


def test_sign_in_then_page(client, developer):
    response = sign_in(client, developer["email"])
    assert urlsplit(response.headers["Location"]).path == PLAYGROUND

    page = client.web.get(PLAYGROUND, status=200)

    assert developer["email"] in page.text
    assert 'data-document-url="/api/openapi.json"' in page.text
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp
    assert "style-src 'self'" in csp
    assert "unsafe-inline" not in csp


def test_wrong_password_rejected(client, developer):
    response = sign_in(client, developer["email"], password="wrong password here",
                       status=401)

    assert "wrong" in response.text
    client.web.get(PLAYGROUND, status=303)


def test_form_without_csrf_rejected(client, developer):
    client.web.post(LOGIN, {"email": developer["email"], "password": TEST_PASSWORD},
                    status=403)


def test_external_return_url_ignored(client, developer):
    form = client.web.get(f"{LOGIN}?return_to=https://evil.example/").forms[0]
    form["email"] = developer["email"]
    form["password"] = TEST_PASSWORD

    response = form.submit(status=303)

    assert response.headers["Location"].endswith(PLAYGROUND)


def test_assets_served_and_no_external_url(client, developer):
    sign_in(client, developer["email"])
    page = client.web.get(PLAYGROUND)
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)

    assert EXTERNAL_URL.findall(page.text) == []
    assert len(assets) >= 3
    for asset in assets:
        response = client.web.get(asset, status=200)
        assert response.body
    script = client.web.get(f"{PLAYGROUND}/init.js").text
    assert EXTERNAL_URL.findall(script) == []
    assert "validatorUrl: null" in script


def test_lists_test_keys_by_prefix_only(client, developer):
    test_key = client.create_key(developer["token"], mode="test")
    sign_in(client, developer["email"])

    page = client.web.get(PLAYGROUND).text

    assert test_key["key_prefix"] in page
    assert test_key["key"] not in page


def test_created_key_preauthorizes(client, developer):
    sign_in(client, developer["email"])
    page = client.web.get(PLAYGROUND)

    response = page.forms[0].submit(status=200)

    secret = re.search(r'data-api-key="(sk_test_[^"]+)"', response.text).group(1)
    client.web.get("/api/v1/users", headers={"Authorization": f"Bearer {secret}"}, status=200)
    keys = client.web.get("/api/partners/api-keys",
                          headers={"Authorization": f"Bearer {developer['token']}"}).json["data"]
    created = [key for key in keys if secret.startswith(key["key_prefix"])]
    assert len(created) == 1
    assert created[0]["mode"] == "test"
    assert created[0]["expires_at"] is not None
    assert "sk_live_" not in response.text
    assert "preauthorizeApiKey" in client.web.get(f"{PLAYGROUND}/init.js").text


def test_create_key_needs_csrf_and_session(client, developer):
    client.web.post(f"{PLAYGROUND}/key", {"csrf_token": "x"}, status=303)
    sign_in(client, developer["email"])

    response = client.web.post(f"{PLAYGROUND}/key", {"csrf_token": "wrong"}, status=403)

    assert "data-api-key" not in response.text


def test_read_only_member_gets_no_key_form(client, developer):
    reader = add_member(client, developer["token"], "read_only")
    sign_in(client, reader["email"])

    page = client.web.get(PLAYGROUND, status=200)

    assert page.forms == {}
    assert "Create a test-mode key" not in page.text
