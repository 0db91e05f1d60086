"""A partner's team: members, roles, invitations and accepting them.

The helpers at the top (a team with one member per role, inviting, reading
the mailed token) are shared with the verification and data-rights tests.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import re
import secrets
import time

import pytest
import sqlalchemy as sa

from fkod.core.audit import AuditEntry
from fkod.core.auth.models import Partner, PartnerMember, User
from fkod.core.db import run_in_transaction, utcnow
from fkod.core.ids import parse_id
from fkod.core.testing import TEST_PASSWORD, TestClient, auth_header
from fkod.partners.models import PartnerInvitation
from tests.envelope import assert_envelope

pytestmark = pytest.mark.shared_app

MEMBERS = "/api/partners/members"
INVITATIONS = "/api/partners/invitations"
ROLES = ("owner", "admin", "developer", "billing", "read_only")
TOKEN_IN_LINK = re.compile(r"token=([A-Za-z0-9_-]+)")


# Helpers -----------------------------------------------------------------------------


def in_db(app, work):
    return run_in_transaction(app.registry["db.session_factory"], work)


def new_email(label: str = "member") -> str:
    return f"{label}-{secrets.token_hex(4)}@team.example"


def invite(client: TestClient, token: str, email: str, role: str, status: int = 201):
    return client.web.post_json(INVITATIONS, {"email": email, "role": role},
                                headers=auth_header(token), status=status)


def invitation_token(client: TestClient, email: str, count: int = 1) -> str:
    """Return the token of the ``count``-th invitation mailed to ``email``."""
    deadline = time.monotonic() + 15
    client.drain_tasks()
    while True:
        messages = [message for message in client.registry["mailer"].messages_to(email)
                    if message.subject.startswith("Join ")]
        if len(messages) >= count:
            return TOKEN_IN_LINK.search(messages[count - 1].body).group(1)
        assert time.monotonic() < deadline, f"no invitation #{count} mailed to {email}"
        time.sleep(0.05)


def accept(client: TestClient, token: str, body: dict | None = None, *,
           headers: dict | None = None, status: int = 200):
    path = f"{INVITATIONS}/{token}/accept"
    return client.web.post_json(path, body if body is not None else {}, headers=headers or {},
                                status=status)


def new_account_body(name: str = "New Member") -> dict:
    return {"name": name, "password": TEST_PASSWORD}


def add_member(client: TestClient, owner_token: str, role: str) -> dict:
    """Invite a new account with ``role`` and accept; return its user id, token and email."""
    email = new_email(role)
    invite(client, owner_token, email, role)
    joined = accept(client, invitation_token(client, email), new_account_body()).json
    return {"user_id": joined["user_id"], "token": joined["access_token"], "email": email}


@dataclasses.dataclass
class Team:
    """A partner with one member per role, each with a login token for the partner."""

    partner: dict
    tokens: dict[str, str]
    user_ids: dict[str, str]
    emails: dict[str, str]

    def headers(self, role: str) -> dict:
        return auth_header(self.tokens[role])


def make_team(client: TestClient, **partner_fields) -> Team:
    registered = client.register_partner(**partner_fields)
    owner_email = registered["user"]["email"]
    owner_token = client.login(owner_email)
    tokens = {"owner": owner_token}
    user_ids = {"owner": registered["user"]["id"]}
    emails = {"owner": owner_email}
    for role in ROLES[1:]:
        member = add_member(client, owner_token, role)
        tokens[role], user_ids[role], emails[role] = (member["token"], member["user_id"],
                                                      member["email"])
    return Team(registered["partner"], tokens, user_ids, emails)


def audit_actions(app, partner_id: str) -> list[str]:
    number = parse_id("partner", partner_id)
    return in_db(app, lambda session: list(session.scalars(
        sa.select(AuditEntry.action).where(AuditEntry.partner_id == number)
        .order_by(AuditEntry.id))))


def set_invitation(app, invitation_id: str, **values) -> None:
    number = parse_id("inv", invitation_id)

    def work(session):
        invitation = session.get(PartnerInvitation, number)
        for name, value in values.items():
            setattr(invitation, name, value)

    in_db(app, work)


@pytest.fixture
def team(client) -> Team:
    return make_team(client)


# Listing -------------------------------------------------------------------------------


def test_members_listed_with_user_details(client, team):
    listed = client.web.get(MEMBERS, headers=team.headers("read_only")).json

    by_role = {item["role"]: item for item in listed["data"]}
    assert set(by_role) == set(ROLES)
    assert by_role["admin"]["id"] == team.user_ids["admin"]
    assert by_role["admin"]["email"] == team.emails["admin"]
    assert by_role["admin"]["name"] == "New Member"
    assert listed["data"][0]["role"] == "owner"
    assert listed["has_more"] is False


def test_members_list_pages(client, team):
    first = client.web.get(f"{MEMBERS}?limit=2", headers=team.headers("owner")).json
    rest = client.web.get(f"{MEMBERS}?cursor={first['next_cursor']}",
                          headers=team.headers("owner")).json

    assert first["has_more"] is True
    ids = [item["id"] for item in first["data"] + rest["data"]]
    assert sorted(ids) == sorted(team.user_ids.values())


def test_login_token_carries_role(client, team):
    me = client.web.get("/api/partners/me", headers=team.headers("billing")).json

    assert me["membership"]["role"] == "billing"


# Role x endpoint matrix --------------------------------------------------------------------


WRITERS = {"owner", "admin"}


def test_invite_by_role(client, team, subtests):
    for role in ROLES:
        with subtests.test(role=role):
            response = invite(client, team.tokens[role], new_email(), "developer", status="*")

            if role in WRITERS:
                assert response.status_int == 201, response.body[:300]
            else:
                assert_envelope(response, 403, "missing_permission")


def test_list_invitations_by_role(client, team, subtests):
    for role in ROLES:
        with subtests.test(role=role):
            listed = client.web.get(INVITATIONS, headers=team.headers(role)).json

            assert len(listed["data"]) == 4


def test_revoke_invitation_by_role(client, team, subtests):
    for role in ROLES:
        with subtests.test(role=role):
            created = invite(client, team.tokens["owner"], new_email(), "billing").json
            response = client.web.delete(f"{INVITATIONS}/{created['id']}",
                                         headers=team.headers(role), status="*")

            if role in WRITERS:
                assert response.status_int == 200
                assert response.json["status"] == "revoked"
            else:
                assert_envelope(response, 403, "missing_permission")


def test_change_role_by_role(client, team, subtests):
    target = add_member(client, team.tokens["owner"], "developer")
    for role in ROLES:
        with subtests.test(role=role):
            new_role = "billing" if role != "billing" else "read_only"
            response = client.web.put_json(f"{MEMBERS}/{target['user_id']}", {"role": new_role},
                                           headers=team.headers(role), status="*")

            if role in WRITERS:
                assert response.status_int == 200
                assert response.json["role"] == new_role
            else:
                assert_envelope(response, 403, "missing_permission")


def test_remove_member_by_role(client, team, subtests):
    for role in ROLES:
        with subtests.test(role=role):
            target = add_member(client, team.tokens["owner"], "developer")
            response = client.web.delete(f"{MEMBERS}/{target['user_id']}",
                                         headers=team.headers(role), status="*")

            if role in WRITERS:
                assert response.status_int == 204
            else:
                assert_envelope(response, 403, "missing_permission")


def test_list_members_by_role(client, team, subtests):
    for role in ROLES:
        with subtests.test(role=role):
            listed = client.web.get(MEMBERS, headers=team.headers(role)).json

            assert len(listed["data"]) == 5


def test_post_members_invites(client, team):
    email = new_email()

    created = client.web.post_json(MEMBERS, {"email": email, "role": "developer"},
                                   headers=team.headers("admin"), status=201).json

    assert created["id"].startswith("inv_")
    assert created["status"] == "pending"
    assert invitation_token(client, email)


# Owner rules ---------------------------------------------------------------------------------


def test_admin_cannot_invite_owner(client, team):
    response = invite(client, team.tokens["admin"], new_email(), "owner", status=403)

    assert_envelope(response, 403, "owner_required")


def test_owner_can_invite_owner(client, team):
    email = new_email("co-owner")
    invite(client, team.tokens["owner"], email, "owner")

    joined = accept(client, invitation_token(client, email), new_account_body()).json

    assert joined["role"] == "owner"


def test_admin_cannot_grant_owner(client, team):
    response = client.web.put_json(f"{MEMBERS}/{team.user_ids['developer']}", {"role": "owner"},
                                   headers=team.headers("admin"), status=403)

    assert_envelope(response, 403, "owner_required")


def test_admin_cannot_demote_owner(client, team):
    co_owner = add_member(client, team.tokens["owner"], "owner")

    response = client.web.put_json(f"{MEMBERS}/{co_owner['user_id']}", {"role": "admin"},
                                   headers=team.headers("admin"), status=403)

    assert_envelope(response, 403, "owner_required")


def test_admin_cannot_remove_owner(client, team):
    co_owner = add_member(client, team.tokens["owner"], "owner")

    response = client.web.delete(f"{MEMBERS}/{co_owner['user_id']}",
                                 headers=team.headers("admin"), status=403)

    assert_envelope(response, 403, "owner_required")


def test_owner_grants_owner(client, team):
    changed = client.web.put_json(f"{MEMBERS}/{team.user_ids['admin']}", {"role": "owner"},
                                  headers=team.headers("owner")).json

    assert changed["role"] == "owner"


def test_last_owner_cannot_be_demoted(client, team):
    response = client.web.put_json(f"{MEMBERS}/{team.user_ids['owner']}", {"role": "admin"},
                                   headers=team.headers("owner"), status=409)

    assert_envelope(response, 409, "last_owner")


def test_last_owner_cannot_leave(client, team):
    response = client.web.delete(f"{MEMBERS}/{team.user_ids['owner']}",
                                 headers=team.headers("owner"), status=409)

    assert_envelope(response, 409, "last_owner")
    listed = client.web.get(MEMBERS, headers=team.headers("owner")).json
    assert len(listed["data"]) == 5


def test_owner_leaves_after_second_owner(client, app, team):
    client.web.put_json(f"{MEMBERS}/{team.user_ids['admin']}", {"role": "owner"},
                        headers=team.headers("owner"))

    client.web.delete(f"{MEMBERS}/{team.user_ids['owner']}", headers=team.headers("owner"),
                      status=204)

    partner = in_db(app, lambda session: session.get(
        Partner, parse_id("partner", team.partner["id"])))
    assert partner.user_id == parse_id("user", team.user_ids["admin"])
    response = client.web.delete(f"{MEMBERS}/{team.user_ids['admin']}",
                                 headers=team.headers("admin"), status=409)
    assert_envelope(response, 409, "last_owner")


def test_demoted_owner_moves_partner_owner(client, app, team):
    client.web.put_json(f"{MEMBERS}/{team.user_ids['admin']}", {"role": "owner"},
                        headers=team.headers("owner"))

    client.web.put_json(f"{MEMBERS}/{team.user_ids['owner']}", {"role": "developer"},
                        headers=team.headers("admin"))

    partner = in_db(app, lambda session: session.get(
        Partner, parse_id("partner", team.partner["id"])))
    assert partner.user_id == parse_id("user", team.user_ids["admin"])


@pytest.mark.parametrize("role", ["admin", "developer", "billing", "read_only"])
def test_member_can_leave(client, team, role):
    client.web.delete(f"{MEMBERS}/{team.user_ids[role]}", headers=team.headers(role),
                      status=204)

    response = client.web.get("/api/partners/me", headers=team.headers(role), status=401)
    assert_envelope(response, 401, "invalid_token")


def test_removed_member_loses_access(client, team):
    client.web.delete(f"{MEMBERS}/{team.user_ids['developer']}", headers=team.headers("admin"),
                      status=204)

    response = client.web.get("/api/partners/api-keys", headers=team.headers("developer"),
                              status=401)
    assert_envelope(response, 401, "invalid_token")
    listed = client.web.get(MEMBERS, headers=team.headers("owner")).json
    assert team.user_ids["developer"] not in [item["id"] for item in listed["data"]]


def test_role_change_applies_at_once(client, team):
    client.web.put_json(f"{MEMBERS}/{team.user_ids['developer']}", {"role": "read_only"},
                        headers=team.headers("owner"))

    response = client.web.post_json("/api/partners/api-keys",
                                    {"key_name": "k", "scopes": ["users:read"]},
                                    headers=team.headers("developer"), status=403)
    assert_envelope(response, 403, "missing_permission")


def test_invalid_role_rejected(client, team):
    response = client.web.put_json(f"{MEMBERS}/{team.user_ids['developer']}",
                                   {"role": "superuser"}, headers=team.headers("owner"),
                                   status=400)

    body = assert_envelope(response, 400, "validation_failed")
    assert body["errors"][0]["name"] == "role"


# Invitations -----------------------------------------------------------------------------


def test_invitation_mailed_with_link(client, team):
    email = new_email()

    created = invite(client, team.tokens["owner"], email, "developer").json

    client.drain_tasks()
    token = invitation_token(client, email)
    message = client.registry["mailer"].messages_to(email)[0]
    assert team.partner["company_name"] in message.subject
    assert f"/invitations/accept?token={token}" in message.body
    assert created["email"] == email
    assert created["role"] == "developer"
    assert created["invited_by"] == team.user_ids["owner"]
    assert token not in str(created)


def test_invitation_stores_only_hash(client, app, team):
    email = new_email()
    created = invite(client, team.tokens["owner"], email, "billing").json
    token = invitation_token(client, email)

    stored = in_db(app, lambda session: session.get(
        PartnerInvitation, parse_id("inv", created["id"])))

    assert stored.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in str(vars(stored))


def test_invitation_expires_after_seven_days(client, app, team):
    created = invite(client, team.tokens["owner"], new_email(), "billing").json

    stored = in_db(app, lambda session: session.get(
        PartnerInvitation, parse_id("inv", created["id"])))
    remaining = stored.expires_at - utcnow()
    assert dt.timedelta(days=7) - dt.timedelta(minutes=1) < remaining <= dt.timedelta(days=7)


def test_invitation_expiry_follows_setting(app_factory):
    app = app_factory(**{"fkod.partners.invitation_ttl_seconds": "3600"})
    client = TestClient(app)
    _partner, token = client.partner_with_token()

    created = invite(client, token, new_email(), "billing").json

    stored = in_db(app, lambda session: session.get(
        PartnerInvitation, parse_id("inv", created["id"])))
    assert stored.expires_at - utcnow() <= dt.timedelta(hours=1)


def test_reinvite_replaces_pending(client, team):
    email = new_email()
    first = invite(client, team.tokens["owner"], email, "billing").json
    second = invite(client, team.tokens["admin"], email, "developer").json

    old_token = invitation_token(client, email, 1)
    new_token = invitation_token(client, email, 2)

    listed = client.web.get(INVITATIONS, headers=team.headers("owner")).json["data"]
    states = {item["id"]: item["status"] for item in listed}
    assert states[first["id"]] == "revoked"
    assert states[second["id"]] == "pending"
    assert_envelope(accept(client, old_token, new_account_body(), status=400), 400,
                    "invitation_revoked")
    joined = accept(client, new_token, new_account_body()).json
    assert joined["role"] == "developer"


def test_invite_existing_member_conflict(client, team):
    response = invite(client, team.tokens["owner"], team.emails["developer"], "billing",
                      status=409)

    assert_envelope(response, 409, "already_member")


def test_invite_email_normalised(client, team):
    response = invite(client, team.tokens["owner"], team.emails["developer"].upper(), "billing",
                      status=409)

    assert_envelope(response, 409, "already_member")


def test_invitations_filter_by_status(client, app, team):
    pending = invite(client, team.tokens["owner"], new_email(), "billing").json
    expired = invite(client, team.tokens["owner"], new_email(), "billing").json
    set_invitation(app, expired["id"], expires_at=utcnow() - dt.timedelta(seconds=1))

    def listed(status: str) -> set[str]:
        response = client.web.get(f"{INVITATIONS}?status={status}", headers=team.headers("owner"))
        return {item["id"] for item in response.json["data"]}

    assert pending["id"] in listed("pending")
    assert expired["id"] not in listed("pending")
    assert listed("expired") == {expired["id"]}
    assert len(listed("accepted")) == 4


def test_revoke_accepted_invitation_conflict(client, team):
    accepted = client.web.get(f"{INVITATIONS}?status=accepted",
                              headers=team.headers("owner")).json["data"][0]

    response = client.web.delete(f"{INVITATIONS}/{accepted['id']}",
                                 headers=team.headers("owner"), status=409)

    assert_envelope(response, 409, "invitation_accepted")


def test_revoke_twice_keeps_first_time(client, team):
    created = invite(client, team.tokens["owner"], new_email(), "billing").json
    first = client.web.delete(f"{INVITATIONS}/{created['id']}",
                              headers=team.headers("owner")).json

    second = client.web.delete(f"{INVITATIONS}/{created['id']}",
                               headers=team.headers("owner")).json

    assert second["revoked_at"] == first["revoked_at"]


# Accepting -----------------------------------------------------------------------------


def test_accept_creates_account(client, app, team):
    email = new_email("newcomer")
    invite(client, team.tokens["owner"], email, "developer")

    joined = accept(client, invitation_token(client, email), new_account_body("Ada")).json

    assert joined["partner_id"] == team.partner["id"]
    assert joined["role"] == "developer"
    assert joined["company_name"] == team.partner["company_name"]
    me = client.web.get("/api/partners/me", headers=auth_header(joined["access_token"])).json
    assert me["membership"]["user"]["email"] == email
    assert me["membership"]["user"]["name"] == "Ada"
    assert client.login(email)
    user = in_db(app, lambda session: session.get(User, parse_id("user", joined["user_id"])))
    assert user.email_verified_at is not None


def test_accept_with_existing_account(client, app, team):
    other = client.register_partner(email=new_email("existing"))
    email = other["user"]["email"]
    their_token = client.login(email)
    invite(client, team.tokens["owner"], email, "billing")

    joined = accept(client, invitation_token(client, email),
                    headers=auth_header(their_token)).json

    assert joined["user_id"] == other["user"]["id"]
    assert joined["partner_id"] == team.partner["id"]
    me = client.web.get("/api/partners/me", headers=auth_header(joined["access_token"])).json
    assert me["id"] == team.partner["id"]
    assert me["membership"]["role"] == "billing"
    login = client.web.post_json("/api/auth/login", {
        "email": email, "password": TEST_PASSWORD, "partner_id": team.partner["id"]}).json
    assert login["role"] == "billing"
    memberships = in_db(app, lambda session: session.scalar(
        sa.select(sa.func.count()).select_from(PartnerMember)
        .where(PartnerMember.user_id == parse_id("user", other["user"]["id"]))))
    assert memberships == 2


def test_accept_token_of_other_email(client, team):
    email = new_email()
    invite(client, team.tokens["owner"], email, "billing")

    response = accept(client, invitation_token(client, email),
                      headers=team.headers("developer"), status=403)

    assert_envelope(response, 403, "invitation_email_mismatch")


def test_accept_existing_email_needs_login(client, team):
    other = client.register_partner(email=new_email("existing"))
    email = other["user"]["email"]
    invite(client, team.tokens["owner"], email, "billing")

    response = accept(client, invitation_token(client, email), new_account_body(), status=409)

    assert_envelope(response, 409, "account_exists")


def test_accept_with_bad_login_token(client, team):
    email = new_email()
    invite(client, team.tokens["owner"], email, "billing")

    response = accept(client, invitation_token(client, email),
                      headers=auth_header("not-a-token"), status=401)

    assert_envelope(response, 401, "invalid_token")


def test_accept_expired(client, app, team):
    email = new_email()
    created = invite(client, team.tokens["owner"], email, "billing").json
    set_invitation(app, created["id"], expires_at=utcnow() - dt.timedelta(seconds=1))

    response = accept(client, invitation_token(client, email), new_account_body(), status=400)

    body = assert_envelope(response, 400, "invitation_expired")
    assert body["errors"][0]["name"] == "token"


def test_accept_revoked(client, team):
    email = new_email()
    created = invite(client, team.tokens["owner"], email, "billing").json
    client.web.delete(f"{INVITATIONS}/{created['id']}", headers=team.headers("owner"))

    response = accept(client, invitation_token(client, email), new_account_body(), status=400)

    assert_envelope(response, 400, "invitation_revoked")


def test_accept_used(client, team):
    email = new_email()
    invite(client, team.tokens["owner"], email, "billing")
    token = invitation_token(client, email)
    accept(client, token, new_account_body())

    response = accept(client, token, new_account_body(), status=400)

    assert_envelope(response, 400, "invitation_used")


@pytest.mark.parametrize("token", ["k" * 43, "short", "x" * 300, "%00abc"],
                         ids=["well_formed", "short", "long", "nul"])
def test_accept_unknown_token(client, token):
    response = accept(client, token, new_account_body(), status=404)

    assert_envelope(response, 404, "invitation_not_found")


@pytest.mark.parametrize("body", [{}, {"name": "Only Name"}, {"password": TEST_PASSWORD}])
def test_accept_needs_name_and_password(client, team, body):
    email = new_email()
    invite(client, team.tokens["owner"], email, "billing")

    response = accept(client, invitation_token(client, email), body, status=400)

    assert_envelope(response, 400, "validation_failed")


def test_accept_short_password_rejected(client, team):
    email = new_email()
    invite(client, team.tokens["owner"], email, "billing")

    response = accept(client, invitation_token(client, email),
                      {"name": "Ada", "password": "short"}, status=400)

    body = assert_envelope(response, 400, "validation_failed")
    assert body["errors"][0]["name"] == "password"


def test_accept_token_and_account_rejected(client, team):
    other = client.register_partner(email=new_email("existing"))
    email = other["user"]["email"]
    invite(client, team.tokens["owner"], email, "billing")

    response = accept(client, invitation_token(client, email), new_account_body(),
                      headers=auth_header(client.login(email)), status=400)

    assert_envelope(response, 400, "validation_failed")


def test_accept_for_suspended_partner(client, app, team):
    email = new_email()
    invite(client, team.tokens["owner"], email, "billing")

    def suspend(session):
        session.get(Partner, parse_id("partner", team.partner["id"])).status = "suspended"

    in_db(app, suspend)

    response = accept(client, invitation_token(client, email), new_account_body(), status=403)
    assert_envelope(response, 403, "partner_suspended")


# Isolation and audit ------------------------------------------------------------------------


def test_other_partners_ids_not_found(client, team):
    other = make_team(client, company_name="Other Learning")
    other_invitation = invite(client, other.tokens["owner"], new_email(), "billing").json
    headers = team.headers("owner")

    responses = [
        client.web.put_json(f"{MEMBERS}/{other.user_ids['developer']}", {"role": "billing"},
                            headers=headers, status=404),
        client.web.delete(f"{MEMBERS}/{other.user_ids['developer']}", headers=headers,
                          status=404),
        client.web.delete(f"{INVITATIONS}/{other_invitation['id']}", headers=headers,
                          status=404),
        client.web.delete(f"{MEMBERS}/user_999999", headers=headers, status=404),
        client.web.delete(f"{INVITATIONS}/inv_abc", headers=headers, status=404),
    ]

    for response in responses:
        assert_envelope(response, 404, "not_found")
    listed = client.web.get(INVITATIONS, headers=headers).json["data"]
    assert other_invitation["id"] not in [item["id"] for item in listed]
    members = client.web.get(MEMBERS, headers=headers).json["data"]
    assert other.user_ids["developer"] not in [item["id"] for item in members]


def test_team_changes_audited(client, app, team):
    email = new_email()
    created = invite(client, team.tokens["owner"], email, "billing").json
    client.web.delete(f"{INVITATIONS}/{created['id']}", headers=team.headers("owner"))
    client.web.put_json(f"{MEMBERS}/{team.user_ids['developer']}", {"role": "billing"},
                        headers=team.headers("admin"))
    client.web.delete(f"{MEMBERS}/{team.user_ids['billing']}", headers=team.headers("owner"),
                      status=204)
    client.web.delete(f"{MEMBERS}/{team.user_ids['read_only']}",
                      headers=team.headers("read_only"), status=204)

    actions = audit_actions(app, team.partner["id"])

    assert actions.count("member.invited") == 5
    assert actions.count("member.joined") == 4
    assert "member.invitation_revoked" in actions
    assert "member.role_changed" in actions
    assert "member.removed" in actions
    assert "member.left" in actions
