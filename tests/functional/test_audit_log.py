"""The audit log: what is recorded, the partner's own view, the admin view, and filters."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
import sqlalchemy as sa

from fkod.admin.testing import admin_with_headers
from fkod.core.audit import AuditEntry
from fkod.core.auth.models import ApiKey, Partner
from fkod.core.db import run_in_transaction
from fkod.core.ids import parse_id
from fkod.core.testing import auth_header
from tests.envelope import assert_envelope

pytestmark = pytest.mark.shared_app

AUDIT = "/api/partners/audit-log"
ADMIN_AUDIT = "/api/admin/audit-log"
# Entries inserted by the tests are dated in 2020, before any entry a request writes.
BASE_TIME = dt.datetime(2020, 3, 1, 12, 0, 0)


@dataclasses.dataclass
class Member:
    partner: dict
    token: str

    @property
    def headers(self) -> dict:
        return auth_header(self.token)


@pytest.fixture
def member(client) -> Member:
    """A partner with its owner's login token."""
    return Member(*client.partner_with_token())


def log_of(client, headers, query: str = "") -> list[dict]:
    return client.web.get(f"{AUDIT}?{query}", headers=headers).json["data"]


def actions(entries: list[dict]) -> list[str]:
    return [entry["action"] for entry in entries]


def add_entries(app, partner_id: str | None, *rows: tuple[str, int]) -> None:
    """Insert entries of ``(action, minutes after BASE_TIME)`` for the partner."""
    number = parse_id("partner", partner_id) if partner_id else None

    def work(session):
        for action, minutes in rows:
            session.add(AuditEntry(partner_id=number, actor_type="system", action=action,
                                   created_at=BASE_TIME + dt.timedelta(minutes=minutes)))

    run_in_transaction(app.registry["db.session_factory"], work)


def set_partner(app, partner_id: str, **values) -> None:
    def work(session):
        row = session.get(Partner, parse_id("partner", partner_id))
        for name, value in values.items():
            setattr(row, name, value)

    run_in_transaction(app.registry["db.session_factory"], work)


# What is recorded ---------------------------------------------------------------------


def test_key_lifecycle_recorded(client, app, member):
    partner, headers = member.partner, member.headers
    created = client.create_key(member.token)
    key_path = f"/api/partners/api-keys/{created['id']}"
    client.web.put_json(key_path, {"key_name": "renamed"}, headers=headers)
    rotated = client.web.post_json(f"{key_path}/rotate", {"grace_period_seconds": 0},
                                   headers=headers).json
    client.web.delete(key_path, headers=headers)
    client.web.delete(key_path, headers=headers)

    response = client.web.get(f"{AUDIT}?action=api_key.*", headers=headers)

    entries = response.json["data"]
    assert actions(entries) == ["api_key.revoked", "api_key.rotated", "api_key.updated",
                                "api_key.created"]
    owner_id = client.web.get("/api/partners/me", headers=headers).json["membership"]["user"]["id"]
    for entry in entries:
        assert entry["actor_type"] == "user"
        assert entry["actor_id"] == owner_id
        assert entry["target_type"] == "api_key"
        assert entry["target_id"] == created["id"]
        assert entry["partner_id"] == partner["id"]
        assert entry["request_id"].startswith("req_")
    assert entries[3]["details"] == {"key_name": "test key", "key_prefix": created["key_prefix"],
                                     "mode": "test", "scopes": ["users:read", "users:write"]}
    assert entries[2]["details"]["fields"] == ["key_name"]
    assert entries[1]["details"] == {"key_prefix": rotated["key_prefix"],
                                     "previous_key_prefix": created["key_prefix"],
                                     "grace_period_seconds": 0}
    # Neither secret nor its hash appears in the log.
    key_hash = run_in_transaction(app.registry["db.session_factory"], lambda session: session.get(
        ApiKey, parse_id("key", created["id"])).key_hash)
    admin_view = client.web.get(ADMIN_AUDIT, headers=admin_with_headers(client)[1])
    for secret in (created["key"], rotated["key"], key_hash):
        assert secret not in response.text
        assert secret not in admin_view.text


def test_boosts_recorded(client, member):
    headers = member.headers
    boost = client.web.post_json("/api/partners/limits/boosts", {
        "extra_requests_per_hour": 10, "duration_hours": 2, "reason": "launch"},
        headers=headers, status=201).json
    client.web.delete(f"/api/partners/limits/boosts/{boost['id']}", headers=headers)

    entries = log_of(client, headers, "action=rate_limit_boost.*")

    assert actions(entries) == ["rate_limit_boost.cancelled", "rate_limit_boost.created"]
    assert entries[1]["target_id"] == boost["id"]
    assert entries[1]["details"]["extra_requests_per_hour"] == 10
    assert entries[1]["details"]["duration_hours"] == 2
    assert entries[0]["details"] == {"mode": "test"}


def test_staff_actions_shown_without_identity(client, app, member):
    partner, headers = member.partner, member.headers
    admin, admin_headers = admin_with_headers(client, "support")
    set_partner(app, partner["id"], verification_status="submitted")
    client.web.post_json(f"/api/admin/partners/{partner['id']}/verification",
                         {"decision": "approve"}, headers=admin_headers,
                         extra_environ={"REMOTE_ADDR": "10.0.0.9"})

    [seen_by_partner] = log_of(client, headers, "action=partner.verification_approved")
    [seen_by_admin] = client.web.get(
        f"{ADMIN_AUDIT}?action=partner.verification_approved", headers=admin_headers).json["data"]

    assert seen_by_partner["actor_type"] == "admin"
    assert seen_by_partner["actor_id"] is None
    assert seen_by_partner["ip_address"] is None
    assert seen_by_admin["actor_id"] == admin["id"]
    assert seen_by_admin["ip_address"] == "10.0.0.9"
    assert seen_by_admin["partner_id"] == partner["id"]


# The partner's view -------------------------------------------------------------------


def test_partner_sees_only_own_entries(client, app, member):
    partner, headers = member.partner, member.headers
    other, other_token = client.partner_with_token()
    mine = client.create_key(member.token)
    theirs = client.create_key(other_token)
    add_entries(app, other["id"], ("partner.suspended", 1))
    add_entries(app, None, ("admin.login", 2))

    entries = log_of(client, headers)
    other_entries = log_of(client, auth_header(other_token))
    key_entries = log_of(client, headers, "action=api_key.*")

    assert entries
    assert {entry["partner_id"] for entry in entries} == {partner["id"]}
    assert "partner.suspended" not in actions(entries)
    assert "admin.login" not in actions(entries)
    assert [entry["target_id"] for entry in key_entries] == [mine["id"]]
    assert {entry["partner_id"] for entry in other_entries} == {other["id"]}
    assert theirs["id"] in [entry["target_id"] for entry in other_entries]
    assert mine["id"] not in str(other_entries)


@pytest.mark.parametrize("query", [f"partner_id=partner_{n}" for n in (1, 2)] + [
    "actor_type=admin"])
def test_partner_cannot_widen_view(client, member, query):
    response = client.web.get(f"{AUDIT}?{query}", headers=member.headers, status=400)

    body = assert_envelope(response, 400, "validation_failed")
    assert body["errors"][0]["name"] == query.split("=")[0]


def test_partner_filters(client, app, member):
    partner, headers = member.partner, member.headers
    add_entries(app, partner["id"], ("api_key.created", 0), ("api_key.revoked", 10),
                ("apiXkey.created", 20), ("webhook.secret_revealed", 30))

    by_action = log_of(client, headers, "action=api_key.revoked")
    by_prefix = log_of(client, headers, "action=api_key.*")
    after = log_of(client, headers, "created_after=2020-03-01T12:10:00Z"
                                    "&created_before=2021-01-01T00:00:00Z")
    before = log_of(client, headers, "created_before=2020-03-01T12:10:00Z")
    window = log_of(client, headers, "created_after=2020-03-01T13:05:00%2B01:00"
                                     "&created_before=2020-03-01T12:30:00Z")

    assert actions(by_action) == ["api_key.revoked"]
    assert actions(by_prefix) == ["api_key.revoked", "api_key.created"]
    assert actions(after) == ["webhook.secret_revealed", "apiXkey.created", "api_key.revoked"]
    assert actions(before) == ["api_key.created"]
    assert actions(window) == ["apiXkey.created", "api_key.revoked"]


def test_partner_log_pages(client, app, member):
    partner, headers = member.partner, member.headers
    add_entries(app, partner["id"], *[(f"test.step_{n}", n) for n in range(5)])

    query = f"{AUDIT}?action=test.*&limit=2"
    first = client.web.get(query, headers=headers).json
    second = client.web.get(f"{query}&cursor={first['next_cursor']}", headers=headers).json
    third = client.web.get(f"{query}&cursor={second['next_cursor']}", headers=headers).json

    assert actions(first["data"]) == ["test.step_4", "test.step_3"]
    assert actions(second["data"]) == ["test.step_2", "test.step_1"]
    assert actions(third["data"]) == ["test.step_0"]
    assert third["has_more"] is False
    assert third["next_cursor"] is None


BAD_PARTNER_QUERIES = [
    ("action=DROP TABLE", "action"),
    ("action=%25", "action"),
    ("action=api_key.%25", "action"),
    ("action=api_key.", "action"),
    ("action=*", "action"),
    ("action=" + "a" * 101, "action"),
    ("created_after=yesterday", "created_after"),
    ("created_after=2026-01-01T00:00:00", "created_after"),
    ("created_before=2026-13-01T00:00:00Z", "created_before"),
    ("created_after=2026-03-02T00:00:00Z&created_before=2026-03-01T00:00:00Z",
     "created_before"),
    ("limit=0", "limit"),
    ("cursor=abc!", "cursor"),
    ("cursor=aWQ6OTk5OTk5OTk5OTk5", "cursor"),
    ("sort=created_at", "sort"),
]


@pytest.mark.parametrize("query,field", BAD_PARTNER_QUERIES)
def test_partner_rejects_bad_filters(client, member, query, field):
    response = client.web.get(f"{AUDIT}?{query}", headers=member.headers, status=400)

    body = assert_envelope(response, 400)
    assert field in [error["name"] for error in body["errors"]]


# The admin view -----------------------------------------------------------------------


@pytest.mark.shared_app(False)
def test_admin_filters(client, app):
    first = client.register_partner()["partner"]
    second = client.register_partner()["partner"]
    _admin, headers = admin_with_headers(client, "readonly")
    add_entries(app, first["id"], ("api_key.created", 0), ("partner.suspended", 20))
    add_entries(app, second["id"], ("api_key.created", 10))

    def admin_actions(query: str) -> list[str]:
        data = client.web.get(f"{ADMIN_AUDIT}?{query}", headers=headers).json["data"]
        return [f"{entry['partner_id']} {entry['action']}" for entry in data]

    assert admin_actions(f"partner_id={first['id']}&created_before=2021-01-01T00:00:00Z") == [
        f"{first['id']} partner.suspended", f"{first['id']} api_key.created"]
    assert admin_actions("action=api_key.created") == [
        f"{second['id']} api_key.created", f"{first['id']} api_key.created"]
    assert admin_actions("actor_type=system&created_after=2020-03-01T12:05:00Z"
                         "&created_before=2020-03-01T12:15:00Z") == [
        f"{second['id']} api_key.created"]
    # The readonly admin's own login is in the log as well.
    assert admin_actions("actor_type=admin&action=admin.*") == ["None admin.login"]


@pytest.mark.parametrize("query,field", [
    ("partner_id=abc", "partner_id"),
    ("partner_id=user_1", "partner_id"),
    ("actor_type=robot", "actor_type"),
    ("actor_type=ADMIN", "actor_type"),
    ("action=admin login", "action"),
    ("created_before=now", "created_before"),
    ("limit=101", "limit"),
    ("target_id=key_1", "target_id"),
])
def test_admin_rejects_bad_filters(client, query, field):
    _admin, headers = admin_with_headers(client, "support")

    response = client.web.get(f"{ADMIN_AUDIT}?{query}", headers=headers, status=400)

    body = assert_envelope(response, 400, "validation_failed")
    assert field in [error["name"] for error in body["errors"]]


# Append-only --------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_audit_logs_append_only(client, member, method):
    _admin, admin_headers = admin_with_headers(client)

    for path, path_headers in ((AUDIT, member.headers), (ADMIN_AUDIT, admin_headers)):
        response = client.web.request(path, method=method, headers=path_headers, status=405)

        assert_envelope(response, 405, "method_not_allowed")
    for path in (f"{AUDIT}/audit_1", f"{ADMIN_AUDIT}/audit_1"):
        response = client.web.request(path, method=method, headers=admin_headers, status=404)

        assert_envelope(response, 404, "not_found")


def test_failed_request_leaves_no_entry(client, app, member):
    def count_entries() -> int:
        return run_in_transaction(app.registry["db.session_factory"], lambda session: session.
                                  scalar(sa.select(sa.func.count()).select_from(AuditEntry)))

    before = count_entries()
    client.web.post_json("/api/partners/api-keys", {"key_name": "bad", "scopes": ["nope:read"]},
                         headers=member.headers, status=400)

    assert count_entries() == before
