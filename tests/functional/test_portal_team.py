"""Portal team pages: members and roles, invitations, and accepting an invitation."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
import webtest

from fkod.core.auth.models import PartnerMember
from fkod.core.db import run_in_transaction
from fkod.core.ids import parse_id
from fkod.core.testing import TEST_PASSWORD
from fkod.partners.models import PartnerInvitation
from tests.functional.portal_pages import (
    add_member,
    csrf_token,
    field_errors,
    input_value,
    log_in,
    post_form,
    signed_in_owner,
)
from tests.functional.test_members import invitation_token, new_email

pytestmark = pytest.mark.shared_app


def roles(app, partner_id: str) -> dict[int, str]:
    def read(session):
        rows = session.execute(sa.select(PartnerMember.user_id, PartnerMember.role).where(
            PartnerMember.partner_id == parse_id("partner", partner_id)))
        return dict(rows.all())
    return run_in_transaction(app.registry["db.session_factory"], read)


def invite(web, email: str, role: str, status=303):
    return post_form(web, "/portal/team", {"email": email, "role": role}, status=status)


def test_team_pages_need_login_and_csrf(client):
    response = client.web.get("/portal/team", status=303)
    assert "/portal/login?next=" in response.location
    signed_in_owner(client)
    page = client.web.post("/portal/team", {"email": "x@team.example", "role": "admin"},
                           status=403)
    assert "The form expired" in page.text
    client.web.post("/portal/team/members/user_1/role", {"role": "admin"}, status=403)
    client.web.get("/portal/team/members/user_1/remove", status=405)


def test_invite_accept_and_change_role(client, app):
    registered = signed_in_owner(client)
    partner_id = registered["partner"]["id"]
    owner_id = parse_id("user", registered["user"]["id"])
    page = client.web.get("/portal/team")
    assert registered["user"]["email"] in page.text
    assert "No pending invitations." in page.text

    invalid = invite(client.web, "not an email", "admin", status=400)
    assert field_errors(invalid, "email")
    assert input_value(invalid, "email") == "not an email"
    taken = invite(client.web, registered["user"]["email"], "admin", status=409)
    assert field_errors(taken, "email") == ["Already a member."]

    email = new_email("dev")
    done = invite(client.web, email, "developer")
    assert f"was mailed to {email}" in client.web.get(done.location).text
    assert email in client.web.get("/portal/team").text

    # The invitee opens the mailed link in another browser and creates the account.
    token = invitation_token(client, email)
    invitee = webtest.TestApp(app)
    page = invitee.get(f"/portal/invitations/accept?token={token}")
    assert 'name="password"' in page.text
    short = invitee.post("/portal/invitations/accept", {
        "csrf_token": csrf_token(page), "token": token, "name": "<b>Dev</b>",
        "password": "short"}, status=400)
    assert field_errors(short, "password")
    assert input_value(short, "name") == "&lt;b&gt;Dev&lt;/b&gt;"
    assert input_value(short, "password") is None
    joined = invitee.post("/portal/invitations/accept", {
        "csrf_token": csrf_token(short), "token": token, "name": "<b>Dev</b>",
        "password": TEST_PASSWORD}, status=303)
    dashboard = invitee.get(joined.location)
    assert "You joined Acme Learning as developer." in dashboard.text
    used = invitee.get(f"/portal/invitations/accept?token={token}")
    reused = invitee.post("/portal/invitations/accept", {
        "csrf_token": csrf_token(used), "token": token}, status=400)
    assert "already accepted" in reused.text

    team = client.web.get("/portal/team")
    assert "&lt;b&gt;Dev&lt;/b&gt;" in team.text
    [dev_id] = [user_id for user_id in roles(app, partner_id) if user_id != owner_id]
    post_form(client.web, f"/portal/team/members/user_{dev_id}/role", {"role": "admin"},
              form_page="/portal/team", status=303)
    assert roles(app, partner_id)[dev_id] == "admin"

    # The last owner can be neither demoted nor removed.
    refused = post_form(client.web, f"/portal/team/members/user_{owner_id}/role",
                        {"role": "admin"}, form_page="/portal/team", status=303)
    assert "at least one owner" in client.web.get(refused.location).text
    refused = post_form(client.web, f"/portal/team/members/user_{owner_id}/remove", {},
                        form_page="/portal/team", status=303)
    assert "at least one owner" in client.web.get(refused.location).text
    assert roles(app, partner_id)[owner_id] == "owner"

    # An admin cannot grant the owner role: that is the 403 page.
    denied = post_form(invitee, f"/portal/team/members/user_{dev_id}/role", {"role": "owner"},
                       form_page="/portal/team", status=403)
    assert "Only an owner" in denied.text

    removed = post_form(client.web, f"/portal/team/members/user_{dev_id}/remove", {},
                        form_page="/portal/team", status=303)
    assert "is removed from the team" in client.web.get(removed.location).text
    assert dev_id not in roles(app, partner_id)


def test_team_permissions_and_other_partner(client, app):
    owner = signed_in_owner(client)
    other = client.register_partner(company_name="Other Co")
    other_id = parse_id("user", other["user"]["id"])
    page = post_form(client.web, f"/portal/team/members/user_{other_id}/role",
                     {"role": "admin"}, form_page="/portal/team", status=404)
    assert "No member with id" in page.text
    post_form(client.web, f"/portal/team/members/user_{other_id}/remove", {},
              form_page="/portal/team", status=404)
    post_form(client.web, "/portal/team/invitations/inv_999/revoke", {},
              form_page="/portal/team", status=404)

    # A developer reads the team but cannot invite or change roles.
    developer = client.register_partner(company_name="Dev Co")
    def move(session):
        session.execute(sa.delete(PartnerMember).where(
            PartnerMember.partner_id == parse_id("partner", developer["partner"]["id"])))
    run_in_transaction(app.registry["db.session_factory"], move)
    add_member(app, owner["partner"]["id"], developer["user"]["id"], "developer")
    browser = webtest.TestApp(app)
    log_in(browser, developer["user"]["email"])
    team = browser.get("/portal/team")
    assert "Invite a member" not in team.text
    assert "Leave the team" in team.text
    denied = post_form(browser, "/portal/team", {"email": new_email(), "role": "admin"},
                       status=403)
    assert "members:write" in denied.text

    # Revoking an invitation.
    email = new_email("revoked")
    invite(client.web, email, "billing")
    invitation_id = run_in_transaction(app.registry["db.session_factory"], lambda session:
                                       session.scalar(sa.select(PartnerInvitation.id).where(
                                           PartnerInvitation.email == email)))
    revoked = post_form(client.web, f"/portal/team/invitations/inv_{invitation_id}/revoke", {},
                        form_page="/portal/team", status=303)
    assert f"The invitation for {email} is revoked." in client.web.get(revoked.location).text

    # The developer leaves the team and is logged out.
    left = post_form(browser, f"/portal/team/members/{developer['user']['id']}/remove", {},
                     form_page="/portal/team", status=303)
    assert left.location.endswith("/portal/login")


def test_accept_as_signed_in_user(client, app):
    signed_in_owner(client)
    existing = client.register_partner(company_name="Existing Co")
    invite(client.web, existing["user"]["email"], "read_only")
    token = invitation_token(client, existing["user"]["email"])

    browser = webtest.TestApp(app)
    page = browser.get(f"/portal/invitations/accept?token={token}")
    assert "log in</a> first" in page.text
    log_in(browser, existing["user"]["email"])
    page = browser.get(f"/portal/invitations/accept?token={token}")
    assert "You are signed in as" in page.text
    joined = browser.post("/portal/invitations/accept", {"csrf_token": csrf_token(page),
                                                        "token": token}, status=303)
    assert joined.location.endswith("/portal")
    missing = browser.get("/portal/invitations/accept")
    assert "needs the link from the invitation mail" in missing.text
    bad = browser.post("/portal/invitations/accept", {"csrf_token": csrf_token(page),
                                                     "token": "x" * 40}, status=404)
    assert "No invitation matches" in bad.text
