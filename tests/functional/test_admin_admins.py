"""Admin users managed by superadmins: list, create, change role and status, last superadmin."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from fkod.admin.testing import admin_login, admin_with_headers, create_admin
from fkod.core.audit import AuditEntry
from fkod.core.auth.models import AdminUser
from fkod.core.db import run_in_transaction
from fkod.core.ids import parse_id
from tests.envelope import assert_envelope

ADMINS = "/api/admin/admins"
NEW_PASSWORD = "a long new admin password"


@pytest.fixture
def superadmin(client):
    return admin_with_headers(client, "superadmin")


@pytest.fixture
def headers(superadmin) -> dict:
    return superadmin[1]


def entries(app, action: str) -> list[AuditEntry]:
    def work(session):
        return session.scalars(sa.select(AuditEntry).where(AuditEntry.action == action)
                               .order_by(AuditEntry.id)).all()

    return run_in_transaction(app.registry["db.session_factory"], work)


def count_admins(app) -> int:
    return run_in_transaction(app.registry["db.session_factory"], lambda session: session.scalar(
        sa.select(sa.func.count()).select_from(AdminUser)))


def new_admin_body(**fields) -> dict:
    body = {"email": "New.Support@staff.fkod.example", "name": "New Support", "role": "support",
            "password": NEW_PASSWORD}
    body.update(fields)
    return body


def test_create_admin(client, app, superadmin):
    creator, headers = superadmin

    response = client.web.post_json(ADMINS, new_admin_body(), headers=headers, status=201)

    body = response.json
    assert body["id"].startswith("admin_")
    assert body["email"] == "new.support@staff.fkod.example"
    assert body["role"] == "support"
    assert body["status"] == "active"
    assert "password" not in body
    assert "password_hash" not in body
    assert NEW_PASSWORD not in response.text
    [entry] = entries(app, "admin.created")
    assert entry.actor_id == parse_id("admin", creator["id"])
    assert entry.target_id == body["id"]
    assert NEW_PASSWORD not in str(entry.details)
    assert admin_login(client, "new.support@staff.fkod.example", NEW_PASSWORD)


def test_create_duplicate_email_rejected(client, app, headers):
    client.web.post_json(ADMINS, new_admin_body(), headers=headers, status=201)

    response = client.web.post_json(ADMINS, new_admin_body(email="new.support@STAFF.fkod.example"),
                                    headers=headers, status=409)

    assert_envelope(response, 409, "email_taken")
    assert len(entries(app, "admin.created")) == 1


@pytest.mark.shared_app
@pytest.mark.parametrize("body,field", [
    (new_admin_body(password="eleven char"), "password"),
    (new_admin_body(password="x" * 257), "password"),
    (new_admin_body(email="not-an-email"), "email"),
    (new_admin_body(role="owner"), "role"),
    (new_admin_body(role="SUPERADMIN"), "role"),
    (new_admin_body(name=""), "name"),
    (new_admin_body(status="disabled"), "status"),
    ({"email": "a@b.example", "name": "A", "password": NEW_PASSWORD}, "role"),
    (new_admin_body(password=123456789012), "password"),
])
def test_create_rejects_bad_body(client, app, headers, body, field):
    before = count_admins(app)

    response = client.web.post_json(ADMINS, body, headers=headers, status=400)

    assert_envelope(response, 400, "validation_failed")
    assert field in [error["name"] for error in response.json["errors"]]
    assert count_admins(app) == before


def test_list_and_filter_admins(client, app, superadmin):
    creator, headers = superadmin
    finance = create_admin(app, role="finance")
    disabled = create_admin(app, role="support", status="disabled")

    everyone = client.web.get(ADMINS, headers=headers).json
    by_role = client.web.get(f"{ADMINS}?role=finance", headers=headers).json
    by_status = client.web.get(f"{ADMINS}?status=disabled", headers=headers).json
    fetched = client.web.get(f"{ADMINS}/{finance['id']}", headers=headers).json

    assert [item["id"] for item in everyone["data"]] == [disabled["id"], finance["id"],
                                                        creator["id"]]
    assert [item["id"] for item in by_role["data"]] == [finance["id"]]
    assert [item["id"] for item in by_status["data"]] == [disabled["id"]]
    assert fetched["email"] == finance["email"]
    for item in everyone["data"]:
        assert "password_hash" not in item


@pytest.mark.parametrize("query,field", [("role=owner", "role"), ("status=gone", "status"),
                                         ("limit=500", "limit"), ("email=x", "email")])
def test_list_rejects_bad_query(client, headers, query, field):
    response = client.web.get(f"{ADMINS}?{query}", headers=headers, status=400)

    assert_envelope(response, 400, "validation_failed")
    assert field in [error["name"] for error in response.json["errors"]]


def test_change_role_and_status(client, app, headers):
    target = create_admin(app, role="support")

    changed = client.web.put_json(f"{ADMINS}/{target['id']}", {"role": "finance"},
                                  headers=headers).json
    disabled = client.web.put_json(f"{ADMINS}/{target['id']}", {"status": "disabled"},
                                   headers=headers).json

    assert changed["role"] == "finance"
    assert disabled["status"] == "disabled"
    assert disabled["role"] == "finance"
    first, second = entries(app, "admin.updated")
    assert first.details == {"changes": {"role": {"from": "support", "to": "finance"}}}
    assert second.details == {"changes": {"status": {"from": "active", "to": "disabled"}}}


def test_disabled_admin_loses_access(client, app, headers):
    target, target_headers = admin_with_headers(client, "support")
    client.web.get("/api/admin/partners", headers=target_headers, status=200)

    client.web.put_json(f"{ADMINS}/{target['id']}", {"status": "disabled"}, headers=headers)

    response = client.web.get("/api/admin/partners", headers=target_headers, status=401)
    assert_envelope(response, 401, "invalid_token")


@pytest.mark.parametrize("body", [{"role": "superadmin"}, {"status": "active"}])
def test_unchanged_admin_not_audited(client, app, superadmin, body):
    admin, headers = superadmin

    client.web.put_json(f"{ADMINS}/{admin['id']}", body, headers=headers)

    assert entries(app, "admin.updated") == []


@pytest.mark.parametrize("body,field", [({"role": "support"}, "role"),
                                        ({"status": "disabled"}, "status"),
                                        ({"role": "readonly", "status": "disabled"}, "role")])
def test_last_superadmin_kept(client, app, superadmin, body, field):
    admin, headers = superadmin

    response = client.web.put_json(f"{ADMINS}/{admin['id']}", body, headers=headers, status=409)

    envelope = assert_envelope(response, 409, "last_superadmin")
    assert envelope["errors"][0]["name"] == field
    number = parse_id("admin", admin["id"])
    row = run_in_transaction(app.registry["db.session_factory"],
                             lambda session: session.get(AdminUser, number))
    assert row.role == "superadmin"
    assert row.status == "active"


def test_superadmin_demoted_when_another_remains(client, app, superadmin):
    admin, headers = superadmin
    create_admin(app, role="superadmin")

    response = client.web.put_json(f"{ADMINS}/{admin['id']}", {"role": "readonly"},
                                   headers=headers)

    assert response.json["role"] == "readonly"
    # The demoted admin's own token loses the admin permissions at once.
    client.web.get(ADMINS, headers=headers, status=403)


def test_disabled_superadmin_does_not_count(client, app, superadmin):
    admin, headers = superadmin
    create_admin(app, role="superadmin", status="disabled")

    response = client.web.put_json(f"{ADMINS}/{admin['id']}", {"status": "disabled"},
                                   headers=headers, status=409)

    assert_envelope(response, 409, "last_superadmin")


@pytest.mark.parametrize("body,field", [
    ({}, ""),
    ({"role": "root"}, "role"),
    ({"status": "deleted"}, "status"),
    ({"name": ""}, "name"),
    ({"email": "new@staff.fkod.example"}, "email"),
    ({"password": NEW_PASSWORD}, "password"),
])
def test_update_rejects_bad_body(client, app, headers, body, field):
    target = create_admin(app, role="support")

    response = client.web.put_json(f"{ADMINS}/{target['id']}", body, headers=headers,
                                   status=400)

    assert_envelope(response, 400, "validation_failed")
    assert field in [error["name"] for error in response.json["errors"]]


@pytest.mark.parametrize("admin_id", ["admin_999999", "admin_x", "partner_1"])
def test_unknown_admin(client, headers, admin_id):
    got = client.web.get(f"{ADMINS}/{admin_id}", headers=headers, status=404)
    put = client.web.put_json(f"{ADMINS}/{admin_id}", {"role": "support"}, headers=headers,
                              status=404)

    assert_envelope(got, 404, "not_found")
    assert_envelope(put, 404, "not_found")
