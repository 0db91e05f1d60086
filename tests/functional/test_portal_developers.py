"""Portal developer pages: documentation, samples, SDKs, status, limits, errors, sandbox."""

from __future__ import annotations

import re

import pytest

from fkod.core.testing import TestClient, auth_header
from tests.functional.portal_pages import (
    add_member,
    field_errors,
    input_value,
    log_in,
    post_form,
    signed_in_owner,
)
from tests.functional.test_portal_charts import assert_no_inline_script

pytestmark = pytest.mark.shared_app

PAGES = ("/portal/developers", "/portal/developers/samples", "/portal/developers/sdks",
         "/portal/developers/status", "/portal/developers/limits",
         "/portal/developers/errors", "/portal/developers/sandbox")


def test_developer_pages_render_and_need_login(client, app):
    for path in PAGES:
        assert "/portal/login?next=" in client.web.get(path, status=303).location

    signed_in_owner(client)
    for path in PAGES:
        page = client.web.get(path)
        assert page.status_int == 200, path
        assert_no_inline_script(page)
    docs = client.web.get("/portal/developers")
    assert 'href="/api/openapi.json"' in docs.text
    assert 'href="/developers/playground"' in docs.text
    document = client.web.get("/api/openapi.json").json
    some_path, item = next(iter(document["paths"].items()))
    method, op = next((name, value) for name, value in item.items()
                      if name in ("get", "post", "put", "delete", "patch"))
    assert f"{method.upper()} {some_path}" in docs.text
    assert f'<h3 id="tag-{op["tags"][0]}">' in docs.text
    assert 'href="/portal/developers" aria-current="page">Developers</a>' in docs.text

    status = client.web.get("/portal/developers/status")
    assert re.search(r'id="overall-status">(operational|degraded|down)<', status.text)
    assert "database" in status.text
    limits = client.web.get("/portal/developers/limits")
    assert "Test mode" in limits.text
    assert "Live mode" in limits.text


def test_samples_switch_language(client):
    signed_in_owner(client)
    document = client.web.get("/api/openapi.json").json
    operation_id = next(op["operationId"] for item in document["paths"].values()
                        for name, op in item.items()
                        if name == "get" and op.get("operationId"))
    curl = client.web.get("/portal/developers/samples", {"operation_id": operation_id})
    assert "curl" in curl.text
    assert '<pre class="code"><code>' in curl.text
    python = client.web.get("/portal/developers/samples",
                            {"operation_id": operation_id, "language": "python"})
    assert "import " in python.text
    assert 'language=python" aria-current="page">python</a>' in python.text
    missing = client.web.get("/portal/developers/samples",
                             {"operation_id": "<nope>"}, status=404)
    assert "&lt;nope&gt;" in missing.text
    assert "<nope>" not in missing.text
    assert "Invalid filter" in client.web.get("/portal/developers/samples",
                                              {"language": "cobol"}, status=400).text


def test_sdk_list_and_download(client, app):
    signed_in_owner(client)
    listing = client.web.get("/portal/developers/sdks")
    links = re.findall(r'href="(/portal/developers/sdks/[a-z]+)"', listing.text)
    # The repository's sdk/ folder contains the four SDKs the default sdk_dir points to.
    assert sorted(links) == [f"/portal/developers/sdks/{language}"
                             for language in ("go", "java", "javascript", "python")]
    assert "pip install" in listing.text
    archive = client.web.get("/portal/developers/sdks/python")
    assert archive.content_type == "application/gzip"
    assert archive.body[:2] == b"\x1f\x8b"
    assert "attachment" in archive.headers["Content-Disposition"]
    client.web.get("/portal/developers/sdks/cobol", status=404)


def test_error_log_filters_and_detail(client, app):
    owner = signed_in_owner(client)
    token = client.login(owner["user"]["email"])
    key = client.create_key(token, scopes=("users:read",))
    failed = client.web.get("/api/v1/users/user_2147483647", headers=auth_header(key["key"]),
                            status=404)
    request_id = failed.headers["X-Request-Id"]
    client.web.get("/api/v1/users", headers=auth_header(key["key"]), status=200)
    app.registry["usage_recorder"].flush()
    if app.registry.settings["fkod.metering.backend"] == "redis":
        app.registry["tasks"].run_periodic_now()

    log = client.web.get("/portal/developers/errors")
    assert request_id in log.text
    assert "/api/v1/users/{id}" in log.text
    filtered = client.web.get("/portal/developers/errors", {"status": "5xx"})
    assert request_id not in filtered.text
    assert "No failed calls match these filters." in filtered.text
    assert 'value="5xx"' in filtered.text
    kept = client.web.get("/portal/developers/errors", {"status": "404",
                                                        "key_prefix": key["key_prefix"]})
    assert request_id in kept.text
    bad = client.web.get("/portal/developers/errors", {"since": "<yesterday>"}, status=400)
    assert "Invalid filter" in bad.text
    assert "<yesterday>" not in bad.text

    detail = client.web.get(f"/portal/developers/errors/{request_id}")
    assert "404" in detail.text
    assert key["key_prefix"] in detail.text

    # Another partner sees neither the call nor its page.
    other = TestClient(app)
    signed_in_owner(other, company_name="Other Co")
    assert request_id not in other.web.get("/portal/developers/errors").text
    other.web.get(f"/portal/developers/errors/{request_id}", status=404)


def test_sandbox_reset_needs_confirmation(client, app):
    owner = signed_in_owner(client)
    refused = client.web.post("/portal/developers/sandbox", {"confirmation": "reset"},
                              status=403)
    assert "The form expired" in refused.text
    unconfirmed = post_form(client.web, "/portal/developers/sandbox", {"confirmation": "yes"},
                            status=400)
    assert "Type reset to confirm the reset." in unconfirmed.text
    done = post_form(client.web, "/portal/developers/sandbox", {"confirmation": "reset"},
                     status=303).follow()
    assert "The sandbox is reset. Removed: 0 users" in done.text

    reader = TestClient(app)
    user = reader.web.post_json("/api/auth/register", {
        "email": "reader@sandbox.example", "password": "correct horse battery staple"}).json
    add_member(app, owner["partner"]["id"], user["id"], "read_only")
    log_in(reader.web, "reader@sandbox.example")
    page = reader.web.get("/portal/developers/sandbox")
    assert "Your role cannot reset the sandbox" in page.text
    denied = post_form(reader.web, "/portal/developers/sandbox", {"confirmation": "reset"},
                       status=403)
    assert "partner:write" in denied.text


def test_oauth_application_lifecycle(client, app):
    signed_in_owner(client)
    assert "No OAuth applications yet." in client.web.get("/portal/developers/applications").text
    new_page = client.web.get("/portal/developers/applications/new")
    assert 'name="grant_types" value="authorization_code" checked' in new_page.text
    form_page = "/portal/developers/applications/new"

    invalid = post_form(client.web, "/portal/developers/applications", [
        ("name", "<b>Sync</b>"), ("client_type", "confidential"), ("mode", "test"),
        ("redirect_uris", "ftp://sync.example/cb"), ("scopes", "users:read"),
        ("grant_types", "authorization_code")], form_page=form_page, status=400)
    assert field_errors(invalid, "redirect_uris")
    assert input_value(invalid, "name") == "&lt;b&gt;Sync&lt;/b&gt;"
    assert "ftp://sync.example/cb</textarea>" in invalid.text
    assert 'value="users:read" checked' in invalid.text
    no_scope = post_form(client.web, "/portal/developers/applications", [
        ("name", "Sync"), ("grant_types", "authorization_code")], form_page=form_page,
        status=400)
    assert field_errors(no_scope, "scopes") == ["Choose at least one scope."]

    created = post_form(client.web, "/portal/developers/applications", [
        ("name", "<b>Sync</b>"), ("client_type", "confidential"), ("mode", "test"),
        ("redirect_uris", "https://sync.example/cb\nhttp://127.0.0.1:8000/cb"),
        ("scopes", "users:read"), ("grant_types", "authorization_code"),
        ("grant_types", "refresh_token")], form_page=form_page, status=200)
    secret = re.search(r'id="application-secret" value="(fkod_secret_[^"]+)"', created.text)
    assert secret is not None
    assert created.headers["Cache-Control"] == "no-store"
    detail_path = re.search(r'href="(/portal/developers/applications/app_\d+)"',
                            created.text).group(1)
    listing = client.web.get("/portal/developers/applications")
    assert "&lt;b&gt;Sync&lt;/b&gt;" in listing.text
    detail = client.web.get(detail_path)
    assert secret.group(1) not in detail.text
    assert "https://sync.example/cb\nhttp://127.0.0.1:8000/cb</textarea>" in detail.text
    assert_no_inline_script(detail)

    edited = post_form(client.web, detail_path, [
        ("name", "Sync two"), ("redirect_uris", "https://sync.example/cb"),
        ("scopes", "users:read"), ("grant_types", "authorization_code")],
        status=303).follow()
    assert "The application Sync two is saved." in edited.text
    assert "https://sync.example/cb</textarea>" in edited.text
    bad_edit = post_form(client.web, detail_path, [
        ("name", "Sync three"), ("logo_uri", "http://sync.example/logo.png"),
        ("scopes", "users:read"), ("grant_types", "authorization_code")], status=400)
    assert field_errors(bad_edit, "logo_uri")
    assert input_value(bad_edit, "name") == "Sync three"
    assert "<h1>Sync two</h1>" in bad_edit.text

    rotated = post_form(client.web, f"{detail_path}/rotate-secret", {},
                        form_page=detail_path, status=200)
    new_secret = re.search(r'id="application-secret" value="(fkod_secret_[^"]+)"',
                           rotated.text).group(1)
    assert new_secret != secret.group(1)

    other = TestClient(app)
    signed_in_owner(other, company_name="Other Co")
    other.web.get(detail_path, status=404)
    post_form(other.web, f"{detail_path}/delete", {}, form_page="/portal/developers",
              status=404)

    client.web.post(f"{detail_path}/delete", {}, status=403)
    deleted = post_form(client.web, f"{detail_path}/delete", {}, form_page=detail_path,
                        status=303).follow()
    assert "The application Sync two is deleted." in deleted.text
    client.web.get(detail_path, status=404)
