"""Data rights: the partner export and the partner deletion."""

from __future__ import annotations

import datetime as dt
import time
from decimal import Decimal

import pytest
import sqlalchemy as sa

from fkod.core.audit import AuditEntry
from fkod.core.auth.models import ApiKey, Partner, User
from fkod.core.billing.models import PartnerRevenue
from fkod.core.db import run_in_transaction
from fkod.core.ids import parse_id
from fkod.core.testing import TEST_PASSWORD, auth_header
from fkod.core.webhooks import outbox
from fkod.core.webhooks.models import Webhook
from fkod.partners import data_rights
from fkod.partners.models import PartnerInvitation, VerificationDocument
from tests.envelope import assert_envelope
from tests.functional.test_members import (
    ROLES,
    Team,
    accept,
    add_member,
    invitation_token,
    invite,
    make_team,
    new_email,
)
from tests.functional.test_verification import PDF, TAX_ID, upload, verification_body

pytestmark = pytest.mark.shared_app

EXPORT = "/api/partners/export"
DELETION = "/api/partners/deletion"
HEADER_SECRET = "Bearer receiver-credential-123"


def in_db(app, work):
    return run_in_transaction(app.registry["db.session_factory"], work)


@pytest.fixture
def app(app_factory, tmp_path):
    return app_factory(**{"fkod.storage.local_directory": str(tmp_path / "documents")})


@pytest.fixture
def world(client, app, make_receiver) -> dict:
    """A team with a key, a webhook with a delivery, a ticket, a submission and a document."""
    team = make_team(client)
    owner = team.tokens["owner"]
    headers = auth_header(owner)
    key = client.create_key(owner)
    receiver = make_receiver()
    webhook = client.web.post_json("/api/partners/webhooks", {
        "url": receiver.url, "event_types": ["partner.verified"],
        "headers": {"Authorization": HEADER_SECRET}}, headers=headers, status=201).json
    partner_number = parse_id("partner", team.partner["id"])
    in_db(app, lambda session: outbox.publish_event(
        session, event_type="partner.verified", data={"id": team.partner["id"]},
        livemode=False, partner_ids=[partner_number], request_id=None))
    ticket = client.web.post_json("/api/partners/support/tickets", {
        "title": "Keys stopped working", "description": "Since this morning.",
        "category": "api"}, headers=headers, status=201).json
    client.web.post_json(f"/api/partners/support/tickets/{ticket['id']}/reply",
                         {"body": "Any news?"}, headers=headers)
    client.web.post_json("/api/partners/verify", verification_body(), headers=headers)
    document = upload(client, owner, PDF).json
    pending = invite(client, owner, new_email("pending"), "billing").json
    application = client.web.post_json("/api/developers/applications", {
        "name": "Sync", "redirect_uris": ["https://acme.example/callback"],
        "scopes": ["users:read"]}, headers=headers, status=201).json
    return {"team": team, "key": key, "webhook": webhook, "ticket": ticket,
            "document": document, "pending": pending, "application": application}


def export(client, token: str) -> dict:
    return client.web.get(EXPORT, headers=auth_header(token)).json


# Export ---------------------------------------------------------------------------------------


def test_export_owner_only(client, subtests):
    team = make_team(client)
    for role in ROLES[1:]:
        with subtests.test(role=role):
            response = client.web.get(EXPORT, headers=team.headers(role), status=403)

            assert_envelope(response, 403, "owner_required")


def test_export_holds_everything(client, app, world):
    team: Team = world["team"]
    response = client.web.get(EXPORT, headers=team.headers("owner"))
    exported = response.json

    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Content-Disposition"].startswith("attachment; filename=")
    assert exported["partner"]["id"] == team.partner["id"]
    assert exported["partner"]["legal_name"] == "Acme Learning GmbH"
    assert {item["email"] for item in exported["members"]} == set(team.emails.values())
    assert world["pending"]["id"] in [item["id"] for item in exported["invitations"]]
    assert [item["id"] for item in exported["api_keys"]] == [world["key"]["id"]]
    assert exported["api_keys"][0]["key_prefix"] == world["key"]["key_prefix"]
    assert [item["id"] for item in exported["webhooks"]] == [world["webhook"]["id"]]
    assert exported["webhooks"][0]["headers"] == {"Authorization": "****"}
    assert [item["event_type"] for item in exported["deliveries"]] == ["partner.verified"]
    [ticket] = exported["tickets"]
    assert ticket["id"] == world["ticket"]["id"]
    assert [message["body"] for message in ticket["messages"]] == ["Any news?"]
    assert exported["verification"]["verification_status"] == "submitted"
    assert exported["verification"]["tax_id"] == "****1-XK"
    assert [item["id"] for item in exported["verification"]["documents"]] == [
        world["document"]["id"]]
    actions = [entry["action"] for entry in exported["audit_log"]]
    assert "api_key.created" in actions
    assert "member.joined" in actions
    assert exported["audit_log"][0]["id"] > exported["audit_log"][-1]["id"]
    assert exported["limits"]["audit_log"] == data_rights.EXPORT_LIMITS["audit_log"]
    assert exported["truncated"] == []


def test_export_holds_no_secret(client, app, world):
    team: Team = world["team"]
    stored_key_hash = in_db(app, lambda session: session.scalar(
        sa.select(ApiKey.key_hash).where(ApiKey.id == parse_id("key", world["key"]["id"]))))
    storage_key = in_db(app, lambda session: session.scalar(
        sa.select(VerificationDocument.storage_key)))

    body = client.web.get(EXPORT, headers=team.headers("owner")).body.decode()

    assert world["key"]["key"] not in body
    assert stored_key_hash not in body
    assert world["webhook"]["secret"] not in body
    assert "whsec_" not in body
    assert HEADER_SECRET not in body
    assert TAX_ID not in body
    assert storage_key not in body
    assert "password" not in body


def test_export_isolated_from_other_partner(client, app, world, make_receiver):
    other = make_team(client, company_name="Other Learning")
    other_key = client.create_key(other.tokens["owner"])
    other_hook = client.web.post_json("/api/partners/webhooks", {
        "url": make_receiver().url + "/other", "event_types": ["partner.verified"]},
        headers=other.headers("owner"), status=201).json
    other_ticket = client.web.post_json("/api/partners/support/tickets", {
        "title": "Other partner's question", "description": "Details.", "category": "api"},
        headers=other.headers("owner"), status=201).json
    client.web.post_json("/api/partners/verify", verification_body(legal_name="Other Ltd"),
                         headers=other.headers("owner"))
    other_document = upload(client, other.tokens["owner"], PDF).json

    body = client.web.get(EXPORT, headers=world["team"].headers("owner")).body.decode()

    for value in [other.partner["id"], *other.user_ids.values(), *other.emails.values(),
                  other_key["id"], other_key["key_prefix"], other_hook["id"],
                  other_hook["url"], other_ticket["id"], other_ticket["title"], "Other Ltd",
                  other_document["id"]]:
        assert f'"{value}"' not in body, value


def test_export_bounded(client, monkeypatch):
    monkeypatch.setitem(data_rights.EXPORT_LIMITS, "api_keys", 2)
    _partner, token = client.partner_with_token()
    keys = [client.create_key(token, key_name=f"key {index}") for index in range(3)]

    exported = export(client, token)

    assert [item["id"] for item in exported["api_keys"]] == [keys[2]["id"], keys[1]["id"]]
    assert exported["truncated"] == ["api_keys"]
    assert exported["limits"]["api_keys"] == 2


def test_export_audited(client, app):
    partner, token = client.partner_with_token()

    export(client, token)

    actions = in_db(app, lambda session: list(session.scalars(
        sa.select(AuditEntry.action)
        .where(AuditEntry.partner_id == parse_id("partner", partner["id"])))))
    assert "partner.exported" in actions


# Deletion ---------------------------------------------------------------------------------------


def delete_partner(client, team: Team, role: str = "owner", confirm: str | None = None,
                   status: int = 200):
    body = {"confirm": team.partner["company_name"] if confirm is None else confirm}
    return client.web.post_json(DELETION, body, headers=team.headers(role), status=status)


def gateway_call(client, key: str, status: int):
    return client.web.get("/api/v1/users", headers=auth_header(key), status=status)


def test_deletion_owner_only(client, app, subtests):
    team = make_team(client)
    for role in ROLES[1:]:
        with subtests.test(role=role):
            response = delete_partner(client, team, role, status=403)

            assert_envelope(response, 403, "owner_required")
    partner = in_db(app, lambda session: session.get(
        Partner, parse_id("partner", team.partner["id"])))
    assert partner.deleted_at is None


@pytest.mark.parametrize("confirm", ["", "acme learning", "Acme Learning ", "Other"])
def test_deletion_needs_exact_name(client, app, confirm):
    team = make_team(client)

    response = delete_partner(client, team, confirm=confirm, status=400)

    assert_envelope(response, 400, "confirmation_mismatch")
    partner = in_db(app, lambda session: session.get(
        Partner, parse_id("partner", team.partner["id"])))
    assert partner.deleted_at is None
    client.web.get("/api/partners/me", headers=team.headers("owner"))


def test_deletion_effects(client, app, world):
    team: Team = world["team"]
    key = world["key"]["key"]
    gateway_call(client, key, 200)

    deleted = delete_partner(client, team).json

    assert deleted["id"] == team.partner["id"]
    assert deleted["deleted_at"] == deleted["deletion_requested_at"]
    assert deleted["api_keys_revoked"] == 1
    assert deleted["oauth_apps_deleted"] == 1
    assert deleted["webhooks_deleted"] == 1
    assert deleted["users_anonymised"] == 5
    assert deleted["documents_deleted"] == 1

    assert_envelope(gateway_call(client, key, 401), 401, "invalid_api_key")
    for role in ROLES:
        assert_envelope(client.web.get("/api/partners/me", headers=team.headers(role),
                                       status=401), 401, "invalid_token")
        login = client.web.post_json("/api/auth/login", {
            "email": team.emails[role], "password": TEST_PASSWORD}, status=401)
        assert_envelope(login, 401, "invalid_credentials")


def test_deletion_removes_personal_data(client, app, world):
    team: Team = world["team"]
    partner_number = parse_id("partner", team.partner["id"])
    storage_key = in_db(app, lambda session: session.scalar(
        sa.select(VerificationDocument.storage_key)
        .where(VerificationDocument.partner_id == partner_number)))

    delete_partner(client, team)

    def load(session):
        users = [session.get(User, parse_id("user", user_id))
                 for user_id in team.user_ids.values()]
        return (users, session.get(Partner, partner_number),
                list(session.scalars(sa.select(PartnerInvitation)
                                     .where(PartnerInvitation.partner_id == partner_number))),
                list(session.scalars(sa.select(VerificationDocument)
                                     .where(VerificationDocument.partner_id == partner_number))),
                list(session.scalars(sa.select(ApiKey).where(ApiKey.partner_id ==
                                                             partner_number))),
                list(session.scalars(sa.select(Webhook).where(Webhook.partner_id ==
                                                              partner_number))))

    users, partner, invitations, documents, keys, webhooks = in_db(app, load)
    for user in users:
        assert user.email.endswith("@deleted.invalid")
        assert user.email not in team.emails.values()
        assert user.name is None
        assert user.password_hash is None
        assert user.status == "deleted"
    assert partner.deleted_at is not None
    assert partner.deletion_requested_at is not None
    assert partner.contact_email is None
    assert partner.tax_id is None
    assert partner.bank_account is None
    assert partner.verification_data is None
    assert all(invitation.email.endswith("@deleted.invalid") for invitation in invitations)
    assert all(invitation.revoked_at or invitation.accepted_at for invitation in invitations)
    assert [document.filename for document in documents] == ["(deleted)"]
    assert documents[0].deleted_at is not None
    with pytest.raises(KeyError):
        app.registry["document_storage"].open(storage_key)
    assert [key.status for key in keys] == ["revoked"]
    assert [webhook.status for webhook in webhooks] == ["deleted"]


def test_deletion_keeps_billing_and_audit(client, app, world):
    team: Team = world["team"]
    partner_number = parse_id("partner", team.partner["id"])
    in_db(app, lambda session: session.add(PartnerRevenue(
        partner_id=partner_number, period_start=dt.date(2026, 1, 1),
        period_end=dt.date(2026, 1, 31), api_calls=10, revenue=Decimal("12.50"))))

    delete_partner(client, team)

    revenue = in_db(app, lambda session: list(session.scalars(
        sa.select(PartnerRevenue).where(PartnerRevenue.partner_id == partner_number))))
    assert [row.revenue for row in revenue] == [Decimal("12.50")]
    entries = in_db(app, lambda session: list(session.scalars(
        sa.select(AuditEntry).where(AuditEntry.partner_id == partner_number)
        .order_by(AuditEntry.id))))
    assert "api_key.created" in [entry.action for entry in entries]
    [deletion] = [entry for entry in entries if entry.action == "partner.deleted"]
    assert deletion.actor_id == parse_id("user", team.user_ids["owner"])
    assert deletion.details["api_keys_revoked"] == 1
    assert deletion.details["users_anonymised"] == 5


def test_deletion_mails_owner(client, world):
    team: Team = world["team"]

    delete_partner(client, team)

    expected = f"{team.partner['company_name']} was deleted from F-KOD"
    client.drain_tasks()
    deadline = time.monotonic() + 15
    while True:
        subjects = [message.subject for message in
                    client.registry["mailer"].messages_to(team.emails["owner"])]
        if expected in subjects or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert expected in subjects


def test_deleted_owner_email_can_register_again(client, world):
    team: Team = world["team"]
    delete_partner(client, team)

    registered = client.register_partner(email=team.emails["owner"])

    assert registered["user"]["id"] != team.user_ids["owner"]


def test_member_of_other_partner_kept(client, app):
    team = make_team(client)
    other = make_team(client, company_name="Other Learning")
    shared = add_member(client, other.tokens["owner"], "developer")
    invite(client, team.tokens["owner"], shared["email"], "billing")
    accept(client, invitation_token(client, shared["email"], count=2),
           headers=auth_header(shared["token"]))

    deleted = delete_partner(client, team).json

    assert deleted["users_anonymised"] == 5
    user = in_db(app, lambda session: session.get(User, parse_id("user", shared["user_id"])))
    assert user.email == shared["email"]
    assert user.status == "active"
    login = client.web.post_json("/api/auth/login", {
        "email": shared["email"], "password": TEST_PASSWORD}).json
    assert login["partner_id"] == other.partner["id"]


def test_deletion_leaves_other_partner_alone(client, app, world):
    other = make_team(client, company_name="Other Learning")
    other_key = client.create_key(other.tokens["owner"])["key"]

    delete_partner(client, world["team"])

    gateway_call(client, other_key, 200)
    me = client.web.get("/api/partners/me", headers=other.headers("developer")).json
    assert me["id"] == other.partner["id"]
    listed = client.web.get("/api/partners/members", headers=other.headers("owner")).json
    assert len(listed["data"]) == 5


def test_deletion_revokes_pending_invitation(client, world):
    team: Team = world["team"]
    token = invitation_token(client, world["pending"]["email"])

    delete_partner(client, team)

    response = accept(client, token, {"name": "Late", "password": TEST_PASSWORD}, status=400)
    assert_envelope(response, 400, "invitation_revoked")
