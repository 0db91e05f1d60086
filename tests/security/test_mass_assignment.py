"""Mass assignment: server-owned fields in request bodies are rejected and change nothing.

Every JSON API operation with a body schema gets a body made only of the
server-owned fields that its schema does not declare. Marshmallow's RAISE
policy must turn each into a 400 that names the field. Operations are found from
their declarations, so a new one is covered when it is registered. The
representative operations further down check the stored rows as well.
"""

from __future__ import annotations

import json

import marshmallow
import sqlalchemy as sa

from fkod.admin.testing import admin_login, create_admin
from fkod.core.api import AUTH_ADMIN, AUTH_API_KEY, AUTH_MEMBER, AUTH_NONE, AUTH_USER
from fkod.core.auth.models import ApiKey, Partner, PartnerMember, User
from fkod.core.ids import parse_id
from fkod.core.testing import auth_header, verify_partner
from tests.security.test_authorization_matrix import add_member, cornice_operations
from tests.security.world import create_resources, fill_path, in_db

# Fields whose values the server sets: ids, ownership, state, timestamps,
# money and secrets.
SERVER_OWNED = ("id", "partner_id", "user_id", "owner", "owner_id", "status", "created_at",
                "updated_at", "deleted_at", "livemode", "verification_status", "verified_at",
                "commission_rate", "key_hash", "key_prefix", "secret_key", "client_secret",
                "published_at", "plan_id", "balance", "is_admin")


def declared_names(schema_class) -> set[str]:
    return {field.data_key or name for name, field in schema_class().load_fields.items()}


def test_body_schemas_raise_on_unknown_fields(security_client):
    loose = []
    for method, pattern, op in cornice_operations(security_client.registry):
        if op.body is not None and op.body().unknown != marshmallow.RAISE:
            loose.append(f"{method} {pattern}: {op.body.__name__} unknown={op.body().unknown}")
    assert not loose, "\n".join(loose)


def test_server_owned_fields_rejected_by_every_operation(security_client):
    client = security_client
    registered = client.register_partner()
    verify_partner(client.app, registered["partner"]["id"])
    owner = client.login(registered["user"]["email"])
    scopes = [scope.name for scope in client.registry["scope_catalog"].grantable()]
    key = client.create_key(owner, scopes=scopes)["key"]
    ids = create_resources(client, owner, key)
    admin = admin_login(client, create_admin(client.app)["email"])
    headers = {AUTH_MEMBER: auth_header(owner), AUTH_USER: auth_header(owner),
               AUTH_API_KEY: auth_header(key), AUTH_ADMIN: auth_header(admin), AUTH_NONE: {}}

    checked, failures = 0, []
    for method, pattern, op in cornice_operations(client.registry):
        if op.body is None:
            continue
        sent = [name for name in SERVER_OWNED if name not in declared_names(op.body)]
        path, _names_owned = fill_path(pattern, ids if op.auth != AUTH_ADMIN else {})
        response = client.web.request(
            path, method=method, body=json.dumps({name: "x" for name in sent}).encode(),
            headers={**headers[op.auth], "Content-Type": "application/json"},
            expect_errors=True)
        checked += 1
        named = {error.get("name") for error in (response.json.get("errors") or [])} \
            if response.content_type == "application/json" else set()
        label = f"{method} {pattern}: {response.status_int}"
        print(f"{label}, sent {sent}")
        if response.status_int in (401, 403):
            failures.append(f"{label}: the credential for {op.auth} was refused")
        elif response.status_int != 400 or not set(sent) <= named:
            failures.append(f"{label}: did not reject {sorted(set(sent) - named)}")
    print(f"operations checked: {checked}")
    assert checked > 0
    assert not failures, "\n".join(failures)


def test_partner_profile_keeps_server_fields(security_client):
    client = security_client
    partner, token = client.partner_with_token()
    number = parse_id("partner", partner["id"])
    fields = ("status", "verification_status", "commission_rate")

    def stored(session):
        row = session.get(Partner, number)
        return tuple(getattr(row, name) for name in fields)

    before = in_db(client.app, stored)
    response = client.web.put_json("/api/partners/me", {
        "company_name": "Renamed", "status": "active", "verification_status": "verified",
        "commission_rate": "0"}, headers=auth_header(token), expect_errors=True)

    assert response.status_int == 400
    assert {error["name"] for error in response.json["errors"]} >= {
        "status", "verification_status", "commission_rate"}
    assert in_db(client.app, stored) == before


def test_api_key_create_keeps_server_fields(security_client):
    client = security_client
    _partner, token = client.partner_with_token()
    other, _other_token = client.partner_with_token()
    count = sa.select(sa.func.count()).select_from(ApiKey)
    before = in_db(client.app, lambda session: session.scalar(count))

    response = client.web.post_json("/api/partners/api-keys", {
        "key_name": "k", "scopes": ["users:read"], "partner_id": other["id"],
        "key_hash": "0" * 64, "status": "active", "mode": "live"},
        headers=auth_header(token), expect_errors=True)

    assert response.status_int in (400, 403)
    assert in_db(client.app, lambda session: session.scalar(count)) == before


def test_admin_member_cannot_make_itself_owner(security_client):
    client = security_client
    partner, _owner = client.partner_with_token()
    email = add_member(client, partner["id"], "admin")
    token = client.login(email)
    user_id = in_db(client.app, lambda session: session.scalar(
        sa.select(User.id).where(User.email == email)))

    def role(session):
        return session.scalar(sa.select(PartnerMember.role).where(
            PartnerMember.user_id == user_id))

    response = client.web.put_json(f"/api/partners/members/user_{user_id}", {"role": "owner"},
                                   headers=auth_header(token), expect_errors=True)

    assert response.status_int == 403
    assert in_db(client.app, role) == "admin"
