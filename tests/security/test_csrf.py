"""CSRF: every HTML form's POST refuses a missing or wrong csrf_token and changes nothing.

The forms are the POST operations of the OpenAPI document whose form body
declares ``csrf_token``, so a new portal, marketplace or admin console form is
covered when it is described. Each form is sent by the session of its cookie:
the portal owner of partner A, an admin console superadmin, or an anonymous
visitor who is signed in to the developer playground only. Every declared
field is filled, partner A's real ids are in the path, and the OAuth
authorization form gets a valid authorization request in its query. The whole
database is compared before and after each refused POST.
"""

from __future__ import annotations

import base64
import hashlib
from urllib.parse import urlencode

import pytest
import sqlalchemy as sa
import webtest

from fkod.admin.testing import ADMIN_TEST_PASSWORD, create_admin
from fkod.core.openapi import get_document
from fkod.core.testing import TEST_PASSWORD, auth_header, verify_partner
from tests.functional.portal_pages import csrf_token
from tests.security.world import create_resources, fill_path

FORM = "application/x-www-form-urlencoded"


def csrf_forms(document) -> list[tuple[str, str, list[str]]]:
    """Return (path, cookie scheme or "", field names) of every form that takes a CSRF token."""
    forms = []
    for path, operations in document["paths"].items():
        post = operations.get("post")
        if post is None:
            continue
        schema = post.get("requestBody", {}).get("content", {}).get(FORM, {}).get("schema", {})
        fields = sorted(schema.get("properties", {}))
        if "csrf_token" not in fields:
            continue
        schemes = [name for requirement in post.get("security", []) for name in requirement]
        forms.append((path, schemes[0] if schemes else "", fields))
    return forms


def database_digest(engine, tables: list[sa.Table]) -> str:
    """Return a SHA-256 over every row of ``tables``, in primary key order."""
    digest = hashlib.sha256()
    with engine.connect() as connection:
        for table in tables:
            order = list(table.primary_key.columns) or list(table.columns)
            for row in connection.execute(sa.select(table).order_by(*order)):
                digest.update(repr((table.name, tuple(row))).encode())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def sessions(security_client):
    """Return web clients signed in to the portal and the admin console, and path ids."""
    client = security_client
    registered = client.register_partner()
    verify_partner(client.app, registered["partner"]["id"])
    email = registered["user"]["email"]
    owner = client.login(email)
    key = client.create_key(owner, scopes=("users:read", "users:write"))["key"]
    ids = create_resources(client, owner, key)

    portal = webtest.TestApp(client.app)
    page = portal.get("/portal/login")
    portal.post("/portal/login", {"csrf_token": csrf_token(page), "email": email,
                                  "password": TEST_PASSWORD}, status=303)

    admin = create_admin(client.app)
    console = webtest.TestApp(client.app)
    page = console.get("/admin/login")
    console.post("/admin/login", {"csrf_token": csrf_token(page), "email": admin["email"],
                                  "password": ADMIN_TEST_PASSWORD}, status=303)

    # The anonymous client is signed in to the developer playground only,
    # whose key form checks the playground session's own CSRF token.
    anonymous = webtest.TestApp(client.app)
    page = anonymous.get("/developers/login")
    anonymous.post("/developers/login", {"csrf_token": csrf_token(page), "email": email,
                                         "password": TEST_PASSWORD}, status=303)

    application = client.web.post_json("/api/developers/applications", {
        "name": "Login", "client_type": "public",
        "redirect_uris": ["https://acme.example/callback"], "scopes": ["users:read"]},
        headers=auth_header(owner), status=201).json
    challenge = base64.urlsafe_b64encode(hashlib.sha256(b"v" * 64).digest()).rstrip(b"=")
    authorize_query = urlencode({
        "response_type": "code", "client_id": application["client_id"],
        "redirect_uri": "https://acme.example/callback", "scope": "users:read",
        "state": "s", "code_challenge": challenge.decode(), "code_challenge_method": "S256"})
    queries = {"/oauth/authorize": authorize_query}
    return {"portalSession": portal, "adminSession": console, "": anonymous}, ids, queries


def test_forms_refuse_missing_or_wrong_csrf_token(security_client, sessions):
    app = security_client.app
    webs, ids, queries = sessions
    forms = csrf_forms(get_document(app.registry).document)
    assert any(scheme == "portalSession" for _path, scheme, _fields in forms)
    assert any(scheme == "adminSession" for _path, scheme, _fields in forms)

    engine = app.registry["db.engine"]
    metadata = sa.MetaData()
    metadata.reflect(engine)
    tables = sorted(metadata.tables.values(), key=lambda table: table.name)

    failures = []
    for path, scheme, fields in forms:
        web = webs[scheme]
        filled, _names_owned = fill_path(path, ids)
        if path in queries:
            filled = f"{filled}?{queries[path]}"
        values = [(name, "x") for name in fields if name != "csrf_token"]
        for label, token in (("missing", None), ("wrong", "not-the-session-token")):
            before = database_digest(engine, tables)
            body = values if token is None else [("csrf_token", token), *values]
            response = web.post(filled, body, expect_errors=True)
            changed = database_digest(engine, tables) != before
            print(f"POST {path} ({scheme or 'anonymous'}) csrf_token {label}: "
                  f"{response.status_int}, database changed: {changed}")
            if response.status_int != 403 or changed:
                failures.append(f"POST {filled} csrf_token {label}: {response.status_int}, "
                                f"database changed: {changed}")
    assert not failures, "\n".join(failures)
