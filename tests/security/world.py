"""Partner A's resources and path filling, shared by the security tests."""

from __future__ import annotations

import re
import secrets

from fkod.core.db import run_in_transaction
from fkod.core.testing import auth_header

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::[^}]*)?\}")
# A syntactically valid id that names nothing. Paths use it where partner A
# owns no such resource, so an allowed call is a 404 and a refused one a 401 or 403.
MISSING_ID = "x_999999"


def in_db(app, work):
    return run_in_transaction(app.registry["db.session_factory"], work)


def create_resources(client, owner: str, key: str) -> dict:
    """Create one resource of each kind for partner A; return path prefix -> id."""
    web = client.web
    headers = auth_header(owner)
    target_key = client.create_key(owner)["id"]
    webhook = web.post_json("/api/partners/webhooks", {
        "url": "http://127.0.0.1:9/hook", "event_types": ["partner.verified"]},
        headers=headers, status=201).json["id"]
    ticket = web.post_json("/api/partners/support/tickets", {
        "title": "Keys stopped working", "description": "Since this morning.",
        "category": "api"}, headers=headers, status=201).json["id"]
    application = web.post_json("/api/developers/applications", {
        "name": "Sync", "redirect_uris": ["https://acme.example/callback"],
        "scopes": ["users:read"]}, headers=headers, status=201).json["id"]
    integration = web.post_json("/api/partners/integrations", {
        "name": "Course Sync", "category": "content",
        "description": "Keeps the catalog in step with F-KOD courses.",
        "support_email": "help@acme.example"}, headers=headers, status=201).json["id"]
    user = web.post_json("/api/v1/users", {"email": f"learner-{secrets.token_hex(4)}@a.example"},
                         headers=auth_header(key), status=201).json["id"]
    return {
        "/portal/keys/": target_key,
        "/portal/webhooks/": webhook,
        "/portal/support/": ticket,
        "/portal/developers/applications/": application,
        "/portal/integrations/": integration,
        "/api/partners/api-keys/": target_key,
        "/api/partners/webhooks/": webhook,
        "/api/webhooks/": webhook,
        "/api/partners/support/tickets/": ticket,
        "/api/developers/applications/": application,
        "/api/partners/integrations/": integration,
        "/api/v1/users/": user,
    }


def fill_path(pattern: str, ids: dict) -> tuple[str, bool]:
    """Fill the placeholders of ``pattern``; return the path and whether it names A's data."""
    owned = None
    for prefix, value in ids.items():
        if pattern.startswith(prefix + "{"):
            owned = value
    first = True
    names_owned = False

    def replace(match):
        nonlocal first, names_owned
        value = owned if first and owned is not None else MISSING_ID
        names_owned = names_owned or value is owned
        first = False
        return value

    return PLACEHOLDER.sub(replace, pattern), names_owned


