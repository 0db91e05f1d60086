"""Admin decisions on partners: verification, suspension and reactivation, and their effects."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from fkod.admin.testing import admin_with_headers
from fkod.core.audit import AuditEntry
from fkod.core.auth.models import Partner
from fkod.core.db import run_in_transaction, utcnow
from fkod.core.ids import parse_id
from fkod.core.testing import TestClient, auth_header, verify_partner
from fkod.core.webhooks.models import Event
from tests.envelope import assert_envelope

pytestmark = pytest.mark.shared_app

PARTNERS = "/api/admin/partners"


@pytest.fixture
def admin(client):
    """A superadmin and its Authorization header."""
    return admin_with_headers(client, "superadmin")


@pytest.fixture
def headers(admin) -> dict:
    return admin[1]


def update_partner(app, partner_id: str, **values) -> None:
    def work(session):
        row = session.get(Partner, parse_id("partner", partner_id))
        for name, value in values.items():
            setattr(row, name, value)

    run_in_transaction(app.registry["db.session_factory"], work)


def load_partner(app, partner_id: str) -> Partner:
    number = parse_id("partner", partner_id)
    return run_in_transaction(app.registry["db.session_factory"],
                              lambda session: session.get(Partner, number))


def stored(app, model, *conditions) -> list:
    def work(session):
        return session.scalars(sa.select(model).where(*conditions).order_by(model.id)).all()

    return run_in_transaction(app.registry["db.session_factory"], work)


def submitted_partner(client, app, **values) -> dict:
    partner = client.register_partner()["partner"]
    update_partner(app, partner["id"], verification_status="submitted",
                   verification_submitted_at=utcnow(), **values)
    return partner


def decide(client, headers, partner_id: str, body: dict, status: int = 200):
    return client.web.post_json(f"{PARTNERS}/{partner_id}/verification", body, headers=headers,
                                status=status)


def error_names(response) -> list[str]:
    return [error["name"] for error in response.json["errors"]]


# Verification -------------------------------------------------------------------------


def test_approve_verifies_and_activates(client, app, admin):
    admin_user, headers = admin
    partner = submitted_partner(client, app)

    body = decide(client, headers, partner["id"], {"decision": "approve"}).json

    assert body["verification_status"] == "verified"
    assert body["status"] == "active"
    assert body["verified_at"] is not None
    assert body["verification_rejection_reason"] is None
    row = load_partner(app, partner["id"])
    assert row.verification_status == "verified"
    assert row.verified_at is not None
    [event] = stored(app, Event, Event.type == "partner.verified")
    assert event.payload["data"]["id"] == partner["id"]
    assert event.livemode is True
    [entry] = stored(app, AuditEntry, AuditEntry.action == "partner.verification_approved")
    assert entry.partner_id == parse_id("partner", partner["id"])
    assert entry.actor_type == "admin"
    assert entry.actor_id == parse_id("admin", admin_user["id"])
    assert entry.target_id == partner["id"]


def test_approve_unlocks_live_mode(client, app, headers):
    registered = client.register_partner()
    partner = registered["partner"]
    token = client.login(registered["user"]["email"])
    update_partner(app, partner["id"], verification_status="submitted")
    client.web.post_json("/api/partners/api-keys", {
        "key_name": "live", "scopes": ["users:read"], "mode": "live"},
        headers=auth_header(token), status=403)

    decide(client, headers, partner["id"], {"decision": "approve"})
    # The owner's email is verified too, which live mode also needs.
    verify_partner(app, partner["id"])

    client.create_key(token, mode="live")


def test_approve_keeps_suspension(client, app, headers):
    partner = submitted_partner(client, app, status="suspended")

    body = decide(client, headers, partner["id"], {"decision": "approve"}).json

    assert body["verification_status"] == "verified"
    assert body["status"] == "suspended"


@pytest.mark.shared_app(False)
def test_reject_keeps_reason(client, app, headers):
    partner = submitted_partner(client, app)

    body = decide(client, headers, partner["id"],
                  {"decision": "reject", "reason": "  The tax id does not match.  "}).json

    assert body["verification_status"] == "rejected"
    assert body["verification_rejection_reason"] == "The tax id does not match."
    assert body["status"] == "pending"
    assert body["verified_at"] is None
    assert stored(app, Event, Event.type == "partner.verified") == []
    [entry] = stored(app, AuditEntry, AuditEntry.action == "partner.verification_rejected")
    assert entry.details == {"reason": "The tax id does not match."}


def test_resubmitted_after_rejection_can_be_approved(client, app, headers):
    partner = submitted_partner(client, app)
    decide(client, headers, partner["id"], {"decision": "reject", "reason": "Blurry scan."})
    update_partner(app, partner["id"], verification_status="submitted")

    body = decide(client, headers, partner["id"], {"decision": "approve"}).json

    assert body["verification_status"] == "verified"
    assert body["verification_rejection_reason"] is None


@pytest.mark.shared_app(False)
@pytest.mark.parametrize("verification_status", ["unverified", "verified", "rejected"])
@pytest.mark.parametrize("decision", ["approve", "reject"])
def test_decision_needs_submitted(client, app, headers, verification_status, decision):
    partner = client.register_partner()["partner"]
    update_partner(app, partner["id"], verification_status=verification_status)

    response = decide(client, headers, partner["id"],
                      {"decision": decision, "reason": "Checked."}, status=409)

    assert_envelope(response, 409, "verification_not_submitted")
    assert load_partner(app, partner["id"]).verification_status == verification_status
    assert stored(app, AuditEntry, AuditEntry.action.startswith("partner.verification")) == []


@pytest.mark.parametrize("body,field", [
    ({}, "decision"),
    ({"decision": "maybe"}, "decision"),
    ({"decision": "APPROVE"}, "decision"),
    ({"decision": None}, "decision"),
    ({"decision": "reject"}, "reason"),
    ({"decision": "reject", "reason": ""}, "reason"),
    ({"decision": "reject", "reason": "   "}, "reason"),
    ({"decision": "reject", "reason": "x" * 501}, "reason"),
    ({"decision": "reject", "reason": 5}, "reason"),
    ({"decision": "approve", "verification_status": "verified"}, "verification_status"),
])
def test_decision_rejects_bad_body(client, app, headers, body, field):
    partner = submitted_partner(client, app)

    response = decide(client, headers, partner["id"], body, status=400)

    assert_envelope(response, 400, "validation_failed")
    assert field in error_names(response)
    assert load_partner(app, partner["id"]).verification_status == "submitted"


def test_decision_on_unknown_partner(client, headers):
    response = decide(client, headers, "partner_999999", {"decision": "approve"}, status=404)

    assert_envelope(response, 404, "not_found")


def test_decision_on_deleted_partner(client, app, headers):
    partner = submitted_partner(client, app, deleted_at=utcnow())

    response = decide(client, headers, partner["id"], {"decision": "approve"}, status=409)

    assert_envelope(response, 409, "partner_deleted")


# Suspension ---------------------------------------------------------------------------


def suspend(client, headers, partner_id: str, reason: str = "Chargebacks", status: int = 200):
    return client.web.post_json(f"{PARTNERS}/{partner_id}/suspend", {"reason": reason},
                                headers=headers, status=status)


def reactivate(client, headers, partner_id: str, body: dict | None = None, status: int = 200):
    return client.web.post_json(f"{PARTNERS}/{partner_id}/reactivate", body or {},
                                headers=headers, status=status)


@pytest.mark.shared_app(False)
@pytest.mark.parametrize("initial", ["pending", "active"])
def test_suspend_from_pending_or_active(client, app, headers, initial):
    partner = client.register_partner()["partner"]
    update_partner(app, partner["id"], status=initial)

    body = suspend(client, headers, partner["id"], "Repeated abuse").json

    assert body["status"] == "suspended"
    assert body["suspension_reason"] == "Repeated abuse"
    assert body["suspended_at"] is not None
    [entry] = stored(app, AuditEntry, AuditEntry.action == "partner.suspended")
    assert entry.details == {"reason": "Repeated abuse", "previous_status": initial}


def test_suspend_twice_rejected(client, app, headers):
    partner = client.register_partner()["partner"]
    suspend(client, headers, partner["id"], "First")

    response = suspend(client, headers, partner["id"], "Second", status=409)

    assert_envelope(response, 409, "partner_already_suspended")
    assert load_partner(app, partner["id"]).suspension_reason == "First"


@pytest.mark.shared_app(False)
@pytest.mark.parametrize("verification_status,expected", [
    ("verified", "active"), ("unverified", "pending"), ("submitted", "pending"),
    ("rejected", "pending")])
def test_reactivate_restores_status(client, app, headers, verification_status, expected):
    partner = client.register_partner()["partner"]
    update_partner(app, partner["id"], verification_status=verification_status)
    suspend(client, headers, partner["id"])

    body = reactivate(client, headers, partner["id"], {"reason": "Paid up"}).json

    assert body["status"] == expected
    assert body["suspended_at"] is None
    assert body["suspension_reason"] is None
    [entry] = stored(app, AuditEntry, AuditEntry.action == "partner.reactivated")
    assert entry.details == {"status": expected, "reason": "Paid up"}


@pytest.mark.parametrize("initial", ["pending", "active"])
def test_reactivate_needs_suspension(client, app, headers, initial):
    partner = client.register_partner()["partner"]
    update_partner(app, partner["id"], status=initial)

    response = reactivate(client, headers, partner["id"], status=409)

    assert_envelope(response, 409, "partner_not_suspended")
    assert load_partner(app, partner["id"]).status == initial


@pytest.mark.parametrize("path,body,field", [
    ("suspend", {}, "reason"),
    ("suspend", {"reason": ""}, "reason"),
    ("suspend", {"reason": "  "}, "reason"),
    ("suspend", {"reason": None}, "reason"),
    ("suspend", {"reason": "x" * 501}, "reason"),
    ("suspend", {"reason": "ok", "status": "active"}, "status"),
    ("reactivate", {"reason": ""}, "reason"),
    ("reactivate", {"reason": ["a"]}, "reason"),
    ("reactivate", {"status": "active"}, "status"),
])
def test_status_change_rejects_bad_body(client, app, headers, path, body, field):
    partner = client.register_partner()["partner"]

    response = client.web.post_json(f"{PARTNERS}/{partner['id']}/{path}", body,
                                    headers=headers, status=400)

    assert_envelope(response, 400, "validation_failed")
    assert field in error_names(response)
    assert load_partner(app, partner["id"]).status == "pending"


@pytest.mark.parametrize("path", ["suspend", "reactivate"])
def test_status_change_of_unknown_partner(client, headers, path):
    response = client.web.post_json(f"{PARTNERS}/partner_999999/{path}", {"reason": "x"},
                                    headers=headers, status=404)

    assert_envelope(response, 404, "not_found")


def test_suspend_deleted_partner_rejected(client, app, headers):
    partner = client.register_partner()["partner"]
    update_partner(app, partner["id"], deleted_at=utcnow())

    response = suspend(client, headers, partner["id"], status=409)

    assert_envelope(response, 409, "partner_deleted")


def test_suspension_stops_key_at_once(client, app, headers):
    # The default key cache keeps a verified key for a second; suspension
    # drops the partner's keys from it, so the next call is rejected.
    assert app.registry["key_cache"].ttl_seconds > 0
    partner, token = client.partner_with_token()
    key = client.create_key(token, scopes=("mentors:read",))["key"]
    client.web.get("/api/v1/mentors", headers=auth_header(key), status=200)

    suspend(client, headers, partner["id"])
    rejected = client.web.get("/api/v1/mentors", headers=auth_header(key), status=403)
    reactivate(client, headers, partner["id"])
    restored = client.web.get("/api/v1/mentors", headers=auth_header(key), status=200)

    assert_envelope(rejected, 403, "partner_suspended")
    assert restored.status_int == 200


def test_suspension_leaves_other_partners_keys(client, headers):
    partner, token = client.partner_with_token()
    _other, other_token = client.partner_with_token()
    other_key = client.create_key(other_token, scopes=("mentors:read",))["key"]
    client.create_key(token, scopes=("mentors:read",))

    suspend(client, headers, partner["id"])

    client.web.get("/api/v1/mentors", headers=auth_header(other_key), status=200)


def test_suspension_reaches_other_process(client, app_factory, headers):
    partner, token = client.partner_with_token()
    key = client.create_key(token, scopes=("mentors:read",))["key"]
    other = TestClient(app_factory())
    other.web.get("/api/v1/mentors", headers=auth_header(key), status=200)

    suspend(client, headers, partner["id"])
    # Another process trusts its cached key for at most fkod.gateway.key_cache_seconds.
    time.sleep(1.1)

    response = other.web.get("/api/v1/mentors", headers=auth_header(key), status=403)
    assert_envelope(response, 403, "partner_suspended")
