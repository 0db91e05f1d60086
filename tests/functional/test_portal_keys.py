"""Portal API key pages: list, create with the secret shown once, rotate, revoke, errors."""

from __future__ import annotations

import re
import time

import sqlalchemy as sa

from fkod.core.auth.models import ApiKey
from fkod.core.db import run_in_transaction
from fkod.core.testing import TestClient, auth_header
from tests.functional.portal_pages import (
    add_member,
    csrf_token,
    field_errors,
    input_value,
    log_in,
    post_form,
    signed_in_owner,
)

SECRET = re.compile(r'id="api-key-secret" value="(sk_(?:test|live)_[A-Za-z0-9_-]+)"')


def stored_keys(app) -> list[ApiKey]:
    return run_in_transaction(app.registry["db.session_factory"], lambda session: list(
        session.scalars(sa.select(ApiKey).order_by(ApiKey.id))))


def create_key(web, name: str = "Staging", scopes=("users:read",), mode: str = "test"):
    fields = [("key_name", name), ("mode", mode)] + [("scopes", scope) for scope in scopes]
    return post_form(web, "/portal/keys", fields, form_page="/portal/keys/new", status=200)


def test_key_pages_need_login(client):
    for path in ("/portal/keys", "/portal/keys/new", "/portal/keys/key_1"):
        response = client.web.get(path, status=303)
        assert "/portal/login?next=" in response.location
    client.web.get("/portal/login")
    response = client.web.post("/portal/keys", {"key_name": "x"}, status=303)
    assert "/portal/login" in response.location


def test_create_key_shows_secret_once(client, app):
    signed_in_owner(client)
    assert "No API keys yet" in client.web.get("/portal/keys").text

    created = create_key(client.web, name="<b>Staging</b>", scopes=("users:read", "users:write"))
    secret = SECRET.search(created.text).group(1)
    assert created.headers["Cache-Control"] == "no-store"
    assert 'data-copy="api-key-secret"' in created.text
    [key] = stored_keys(app)
    assert secret.startswith(key.key_prefix)
    assert key.scopes == ["users:read", "users:write"]

    listing = client.web.get("/portal/keys")
    assert "&lt;b&gt;Staging&lt;/b&gt;" in listing.text
    assert key.key_prefix in listing.text
    assert "users:read, users:write" in listing.text
    assert "never" in listing.text
    detail = client.web.get(f"/portal/keys/key_{key.id}")
    assert secret not in detail.text
    assert secret not in listing.text

    # The key works at the gateway, and the list then shows when it was used.
    client.web.get("/api/v1/users", headers=auth_header(secret), status=200)
    deadline = time.monotonic() + 10
    while stored_keys(app)[0].last_used is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "never" not in client.web.get("/portal/keys").text


def test_create_key_field_errors(client, app):
    signed_in_owner(client)
    page = post_form(client.web, "/portal/keys", [("key_name", "Typed name"), ("mode", "live")],
                     form_page="/portal/keys/new", status=400)
    assert field_errors(page, "scopes") == ["Choose at least one scope."]
    assert input_value(page, "key_name") == "Typed name"
    assert 'value="live" checked' in page.text

    live = post_form(
        client.web, "/portal/keys", [("key_name", "Prod"), ("mode", "live"),
                                     ("scopes", "users:read")],
        form_page="/portal/keys/new", status=403)
    assert field_errors(live, "mode") == ["Live mode requires a verified partner."]
    assert input_value(live, "key_name") == "Prod"

    bad_scope = post_form(client.web, "/portal/keys", [("key_name", "X"), ("mode", "test"),
                                                       ("scopes", "admin:everything")],
                          form_page="/portal/keys/new", status=400)
    assert field_errors(bad_scope, "scopes")
    long_name = post_form(client.web, "/portal/keys", [("key_name", "x" * 300), ("mode", "test"),
                                                       ("scopes", "users:read")],
                          form_page="/portal/keys/new", status=400)
    assert field_errors(long_name, "key_name") == ["Length must be between 1 and 255."]
    assert stored_keys(app) == []


def test_rotate_and_revoke_key(client, app):
    signed_in_owner(client)
    first_secret = SECRET.search(create_key(client.web).text).group(1)
    [key] = stored_keys(app)
    detail_path = f"/portal/keys/key_{key.id}"

    rotated = post_form(client.web, f"{detail_path}/rotate", {"grace_period_seconds": "3600"},
                        form_page=detail_path, status=200)
    second_secret = SECRET.search(rotated.text).group(1)
    assert second_secret != first_secret
    assert "The previous secret" in rotated.text
    client.web.get("/api/v1/users", headers=auth_header(first_secret), status=200)
    client.web.get("/api/v1/users", headers=auth_header(second_secret), status=200)

    invalid = post_form(client.web, f"{detail_path}/rotate",
                        {"grace_period_seconds": "forever"}, form_page=detail_path, status=303)
    assert "The key was not rotated: Not a valid integer." in invalid.follow().text

    revoked = post_form(client.web, f"{detail_path}/revoke", {}, form_page=detail_path,
                        status=303)
    page = revoked.follow()
    assert "is revoked." in page.text
    assert "Revoke key" not in page.text
    assert stored_keys(app)[0].status == "revoked"
    client.web.get("/api/v1/users", headers=auth_header(second_secret), status=401)


def test_key_detail_shows_recent_errors(client, app):
    signed_in_owner(client)
    secret = SECRET.search(create_key(client.web, scopes=("users:read",)).text).group(1)
    [key] = stored_keys(app)
    client.web.post_json("/api/v1/users", {"email": "u@x.example"}, headers=auth_header(secret),
                         status=403)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        page = client.web.get(f"/portal/keys/key_{key.id}")
        if "No failed calls with this key." not in page.text:
            break
        time.sleep(0.1)
    assert "POST /api/v1/users" in page.text
    assert "<td>403</td>" in page.text


def test_key_forms_refuse_bad_csrf(client, app):
    signed_in_owner(client)
    create_key(client.web)
    [key] = stored_keys(app)
    forms = (("/portal/keys", {"key_name": "x", "mode": "test", "scopes": "users:read"}),
             (f"/portal/keys/key_{key.id}/rotate", {"grace_period_seconds": "0"}),
             (f"/portal/keys/key_{key.id}/revoke", {}))
    for path, fields in forms:
        client.web.post(path, fields, status=403)
        client.web.post(path, dict(fields, csrf_token="forged"), status=403)
    [unchanged] = stored_keys(app)
    assert unchanged.status == "active"
    assert unchanged.key_hash == key.key_hash


def test_read_only_member_cannot_write_keys(client, app):
    owner = signed_in_owner(client)
    create_key(client.web)
    [key] = stored_keys(app)
    reader = client.web.post_json("/api/auth/register", {
        "email": "reader@acme.example", "password": "correct horse battery staple"}).json
    add_member(app, owner["partner"]["id"], reader["id"], "read_only")

    other = TestClient(app)
    log_in(other.web, "reader@acme.example")
    listing = other.web.get("/portal/keys")
    assert "Create a key" not in listing.text
    assert "Revoke key" not in other.web.get(f"/portal/keys/key_{key.id}").text
    denied = other.web.get("/portal/keys/new", status=403)
    assert "does not grant the permission api_keys:write" in denied.text
    token = csrf_token(listing)
    other.web.post(f"/portal/keys/key_{key.id}/revoke", {"csrf_token": token}, status=403)
    assert stored_keys(app)[0].status == "active"


def test_key_of_another_partner_is_not_found(client, app):
    signed_in_owner(client)
    create_key(client.web)
    [key] = stored_keys(app)

    stranger = TestClient(app)
    signed_in_owner(stranger, company_name="Other Co")
    stranger.web.get(f"/portal/keys/key_{key.id}", status=404)
    stranger.web.get("/portal/keys/key_x", status=404)
    page = stranger.web.get("/portal/keys?cursor=!!", status=400)
    assert "Invalid page link" in page.text
