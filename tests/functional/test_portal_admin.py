"""Admin console pages: sign-in and lockout, roles, each action and its audit entry, CSRF,
escaping, and the separation from partner portal sessions."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa
import webob

from fkod.admin.testing import ADMIN_TEST_PASSWORD, create_admin, set_admin_status
from fkod.core.audit import AuditEntry
from fkod.core.auth.models import Partner
from fkod.core.billing.models import Payout, Plan
from fkod.core.db import run_in_transaction, utcnow
from fkod.core.ids import parse_id
from fkod.core.testing import TestClient, auth_header, verify_partner
from fkod.marketplace.models import Integration
from fkod.partners.models import VerificationDocument
from fkod.portal.admin_access import ADMIN_COOKIE_NAME, ADMIN_SESSION_TTL_SECONDS
from tests.functional.portal_pages import csrf_token, field_errors, input_value, signed_in_owner
from tests.functional.test_admin_integrations import register, submitted
from tests.functional.test_admin_tickets import open_ticket
from tests.functional.test_admin_tickets import register as register_member
from tests.functional.test_billing_api import add_revenue, fund, request_payout, set_bank
from tests.functional.test_plugin_manifests import add_partner, install_manifest_plugin

pytestmark = pytest.mark.shared_app

CONSOLE_PAGES = ("/admin", "/admin/verifications", "/admin/integrations", "/admin/featured",
                 "/admin/tickets", "/admin/revenue", "/admin/payouts", "/admin/plans",
                 "/admin/plugins", "/admin/plugins/learning", "/admin/audit-log")


def sign_in(web, admin: dict, password: str = ADMIN_TEST_PASSWORD, status: int = 303):
    page = web.get("/admin/login")
    return web.post("/admin/login", {"csrf_token": csrf_token(page), "email": admin["email"],
                                     "password": password}, status=status)


def signed_in_admin(client: TestClient, role: str = "superadmin") -> dict:
    admin = create_admin(client.app, role=role)
    sign_in(client.web, admin)
    return admin


def post(web, path: str, fields: dict, *, form_page: str, status="*"):
    page = web.get(form_page)
    return web.post(path, {"csrf_token": csrf_token(page), **fields}, status=status)


def audit_actions(app, prefix: str) -> list[tuple[str, str, str | None, dict]]:
    return run_in_transaction(app.registry["db.session_factory"], lambda session: [
        (entry.action, entry.actor_type, entry.target_id, entry.details)
        for entry in session.scalars(sa.select(AuditEntry)
                                     .where(AuditEntry.action.like(f"{prefix}%"))
                                     .order_by(AuditEntry.id))])


def submitted_partner(app, company_name: str = "Acme Learning") -> int:
    registered = TestClient(app).register_partner(company_name=company_name)
    partner_id = parse_id("partner", registered["partner"]["id"])

    def work(session):
        partner = session.get(Partner, partner_id)
        partner.verification_status = "submitted"
        partner.verification_submitted_at = utcnow()
        partner.legal_name = f"{company_name} GmbH"
        session.add(VerificationDocument(
            partner_id=partner_id, kind="registration", filename=f"{company_name}.pdf",
            content_type="application/pdf", size=1234, sha256="ab" * 32,
            storage_key=f"test/{partner_id}/registration.pdf"))
        partner.verification_data = {"website": "https://acme.example",
                                     "contact": {"name": "Ada", "email": "ada@acme.example",
                                                 "phone": "+49 30 1"},
                                     "address": {"line1": "Hauptstrasse 1", "city": "Berlin",
                                                 "postal_code": "10115", "country": "DE"}}

    run_in_transaction(app.registry["db.session_factory"], work)
    return partner_id


def wait_until_sent(app, payout_id: str) -> None:
    """Wait for the worker to send an approved payout: joined in process, polled on Redis."""
    app.registry["tasks"].join()
    deadline = time.monotonic() + 20
    while run_in_transaction(app.registry["db.session_factory"], lambda session: session.get(
            Payout, parse_id("po", payout_id)).status) == "pending":
        assert time.monotonic() < deadline, f"{payout_id} was not sent"
        time.sleep(0.05)


def stored_partner(app, partner_id: int) -> Partner:
    return run_in_transaction(app.registry["db.session_factory"],
                              lambda session: session.get(Partner, partner_id))


# Sign-in ---------------------------------------------------------------------------------


def test_sign_in_cookie_and_sign_out(client, app):
    page = client.web.get("/admin/plugins", status=303)
    assert page.location.endswith("/admin/login?next=%2Fadmin%2Fplugins")
    admin = create_admin(app, role="readonly")

    response = sign_in(client.web, admin)

    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("fkod_admin_session=")
    assert "Path=/admin" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert "Max-Age=28800" in cookie
    assert "fkod_portal_session" not in cookie
    assert response.location.endswith("/admin")
    home = client.web.get("/admin")
    assert admin["email"] in home.text
    assert home.headers["Cache-Control"] == "no-store"
    assert "frame-ancestors 'none'" in home.headers["Content-Security-Policy"]
    # The console's cookie has the path /admin, so the portal does not see it.
    assert client.web.get("/portal/keys", status=303).location.startswith(
        "http://localhost/portal/login")
    assert audit_actions(app, "admin.login") == [
        ("admin.login", "admin", admin["id"], {})]

    out = client.web.post("/admin/logout", {"csrf_token": csrf_token(home)}, status=303)
    assert out.location.endswith("/admin/login")
    assert client.web.get("/admin", status=303).location.startswith(
        "http://localhost/admin/login")


def test_sign_in_failures_and_lockout(client, app):
    admin = create_admin(app, role="support")
    page = sign_in(client.web, admin, password="wrong password", status=401)
    assert "The email or password is incorrect." in page.text
    assert input_value(page, "email") == admin["email"]
    assert input_value(page, "password") is None
    empty = client.web.post("/admin/login", {"csrf_token": csrf_token(page)}, status=400)
    assert field_errors(empty, "email")
    assert client.web.post("/admin/login", {"email": admin["email"],
                                            "password": ADMIN_TEST_PASSWORD}, status=403)

    statuses = [sign_in(client.web, admin, password="wrong password", status="*").status_int
                for _ in range(12)]
    assert statuses[-1] == 429
    locked = sign_in(client.web, admin, status=429)
    assert "Retry-After" in locked.headers
    failures = audit_actions(app, "admin.login_failed")
    assert failures[0] == ("admin.login_failed", "system", admin["id"],
                           {"reason": "wrong_password"})

    # A disabled admin's console session ends on the next request.
    other = create_admin(app, role="support")
    fresh = TestClient(app)
    sign_in(fresh.web, other)
    set_admin_status(app, parse_id("admin", other["id"]), "disabled")
    fresh.web.get("/admin", status=303)

    # A validly signed session older than 8 hours has ended.
    profile = app.registry["admin.cookie_profile"].bind(webob.Request.blank("/admin"))
    expired = TestClient(app)
    for signed_in_at, status in ((int(time.time()) - ADMIN_SESSION_TTL_SECONDS - 1, 303),
                                 (int(time.time()) - 60, 200)):
        value = {"admin_id": parse_id("admin", admin["id"]), "signed_in_at": signed_in_at,
                 "csrf": "token"}
        cookie = profile.get_headers(value)[0][1].split(";")[0].split("=", 1)[1]
        expired.web.set_cookie(ADMIN_COOKIE_NAME, cookie)
        expired.web.get("/admin", status=status)


def test_partner_session_does_not_open_console(client, app):
    signed_in_owner(client)
    assert client.web.get("/portal/keys").status_int == 200
    for path in CONSOLE_PAGES:
        assert client.web.get(path, status=303).location.startswith(
            "http://localhost/admin/login"), path
    # A partner user's password does not sign in to the console.
    partner = stored_partner(app, 1)
    page = client.web.get("/admin/login")
    client.web.post("/admin/login", {"csrf_token": csrf_token(page),
                                     "email": partner.contact_email,
                                     "password": "a long passphrase"}, status=401)


# Pages and roles -------------------------------------------------------------------------


@pytest.mark.shared_app(False)
def test_pages_render_for_each_role(client, app):
    submitted_partner(app, company_name="<script>alert(1)</script>")
    admin = signed_in_admin(client, "readonly")
    for path in CONSOLE_PAGES:
        page = client.web.get(path, status=200)
        assert admin["email"] in page.text, path
    queue = client.web.get("/admin/verifications")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in queue.text
    assert "<script>alert(1)" not in queue.text
    assert "registration: &lt;script&gt;alert(1)&lt;/script&gt;.pdf" in queue.text
    detail = client.web.get("/admin/verifications/partner_1")
    assert "&lt;script&gt;" in detail.text
    assert "1234 bytes" in detail.text
    assert "Hauptstrasse 1, Berlin, 10115, DE" in detail.text
    assert "Approve verification" not in detail.text
    assert "Disable plugin" not in client.web.get("/admin/plugins/learning").text

    # readonly cannot decide, review, feature or change plugins: each is the 403 page.
    token = csrf_token(detail)
    for path, fields in (("/admin/verifications/partner_1", {"decision": "approve"}),
                         ("/admin/integrations/int_1/review", {"decision": "approve"}),
                         ("/admin/integrations/int_1/featured", {"featured": "true"}),
                         ("/admin/plugins/learning", {"enabled": "false", "confirm": "yes"}),
                         ("/admin/tickets/tkt_1/reply", {"body": "Hello"}),
                         ("/admin/tickets/tkt_1", {"status": "resolved"}),
                         ("/admin/payouts/po_1/approve", {}),
                         ("/admin/plans", {"code": "x"}),
                         ("/admin/plans/free", {"name": "x"})):
        page = client.web.post(path, {"csrf_token": token, **fields}, status=403)
        assert "Access denied" in page.text, path
        assert "readonly" in page.text, path
    assert stored_partner(app, 1).verification_status == "submitted"

    finance = TestClient(app)
    signed_in_admin(finance, "finance")
    finance.web.get("/admin/verifications", status=200)
    denied = finance.web.get("/admin/verifications/partner_1")
    assert "Approve verification" not in denied.text
    assert finance.web.get("/admin/audit-log").status_int == 200

    assert "No partner with id partner_999" in client.web.get("/admin/verifications/partner_999",
                                              status=404).text
    client.web.get("/admin/verifications/nope", status=404)
    client.web.get("/admin/integrations/int_999", status=404)
    client.web.get("/admin/plugins/nope", status=404)
    client.web.get("/admin/verifications?cursor=nope", status=400)
    assert "Method not allowed" in client.web.delete("/admin/plugins", status=405).text


# Actions ---------------------------------------------------------------------------------


@pytest.mark.shared_app(False)
def test_verification_approve_and_reject(client, app):
    approved = submitted_partner(app, company_name="Approved Co")
    rejected = submitted_partner(app, company_name="Rejected Co")
    signed_in_admin(client, "support")
    detail = f"/admin/verifications/partner_{rejected}"

    page = post(client.web, detail, {"decision": "reject"}, form_page=detail, status=400)
    assert field_errors(page, "reason") == ["Give a reason to reject a verification."]
    no_csrf = client.web.post(detail, {"decision": "reject", "reason": "x"}, status=403)
    assert "form expired" in no_csrf.text
    assert stored_partner(app, rejected).verification_status == "submitted"

    done = post(client.web, detail, {"decision": "reject", "reason": "Tax id <unreadable>"},
                form_page=detail, status=303)
    assert done.location.endswith("/admin/verifications")
    queue = client.web.get("/admin/verifications")
    assert "The verification of Rejected Co is rejected." in queue.text
    assert "Approved Co" in queue.text
    path = f"/admin/verifications/partner_{approved}"
    post(client.web, path, {"decision": "approve"}, form_page=path, status=303)

    assert stored_partner(app, approved).verification_status == "verified"
    assert stored_partner(app, approved).status == "active"
    assert stored_partner(app, rejected).verification_rejection_reason == "Tax id <unreadable>"
    assert "No verification waits" in client.web.get("/admin/verifications").text
    again = post(client.web, path, {"decision": "approve"}, form_page=path, status=409)
    assert "Only a submitted verification" in again.text
    actions = audit_actions(app, "partner.verification_")
    assert actions == [
        ("partner.verification_rejected", "admin", f"partner_{rejected}",
         {"reason": "Tax id <unreadable>"}),
        ("partner.verification_approved", "admin", f"partner_{approved}", {})]


def test_integration_review_and_featuring(client, app):
    member = register(client)
    first = submitted(client, member, name="Course <b>Sync</b>")
    second = submitted(client, member, name="Mentor Sync")
    signed_in_admin(client, "support")

    queue = client.web.get("/admin/integrations")
    assert "Course &lt;b&gt;Sync&lt;/b&gt;" in queue.text
    filtered = client.web.get("/admin/integrations?status=in_review&q=mentor")
    assert "Mentor Sync" in filtered.text
    assert "Course &lt;b&gt;" not in filtered.text
    invalid = client.web.get("/admin/integrations?status=bogus")
    assert field_errors(invalid, "status")

    detail = f"/admin/integrations/{second['id']}"
    page = post(client.web, f"{detail}/review", {"decision": "reject"}, form_page=detail,
                status=400)
    assert field_errors(page, "reason") == ["A rejection needs a reason for the partner."]
    post(client.web, f"{detail}/review", {"decision": "reject", "reason": "No docs"},
         form_page=detail, status=303)
    detail = f"/admin/integrations/{first['id']}"
    post(client.web, f"{detail}/review", {"decision": "approve"}, form_page=detail,
         status=303)

    def status_of(integration):
        return run_in_transaction(app.registry["db.session_factory"], lambda session: session.get(
            Integration, parse_id("int", integration["id"])).status)

    assert status_of(first) == "published"
    assert status_of(second) == "rejected"

    rank = post(client.web, f"{detail}/featured", {"featured": "true", "rank": "0"},
                form_page=detail, status=400)
    assert field_errors(rank, "rank")
    assert input_value(rank, "rank") == "0"
    post(client.web, f"{detail}/featured", {"featured": "true", "rank": "3"},
         form_page=detail, status=303)
    featured = client.web.get("/admin/featured")
    assert "is featured at rank 3" in featured.text
    assert "Course &lt;b&gt;Sync&lt;/b&gt;" in featured.text
    other = f"/admin/integrations/{second['id']}"
    refused = post(client.web, f"{other}/featured", {"featured": "true"}, form_page=other,
                   status=409)
    assert "only a published integration can be featured" in refused.text
    post(client.web, f"{detail}/featured", {"featured": "false"}, form_page="/admin/featured",
         status=303)
    assert "No integration is featured" in client.web.get("/admin/featured").text

    actions = [(action, target) for action, actor, target, _details
               in audit_actions(app, "integration.") if actor == "admin"]
    assert actions == [("integration.rejected", second["id"]),
                       ("integration.approved", first["id"]),
                       ("integration.featured", first["id"]),
                       ("integration.featured", first["id"])]


@pytest.mark.shared_app(False)
def test_plugin_disable_needs_confirmation(plugin_path, app_factory):
    install_manifest_plugin(plugin_path)
    add_partner(app_factory(), "quizco")
    app = app_factory()
    client = TestClient(app)
    signed_in_admin(client, "superadmin")
    path = "/admin/plugins/quizsync"

    def listed() -> list[str]:
        return [item["slug"] for item in
                client.web.get("/api/marketplace/integrations").json["data"]]

    # The plugin is not trusted, so its integration waits in review until approved.
    [integration] = run_in_transaction(app.registry["db.session_factory"], lambda session: list(
        session.scalars(sa.select(Integration.id).where(Integration.slug == "quiz-sync"))))
    detail = f"/admin/integrations/int_{integration}"
    assert "quiz-sync" not in listed()
    post(client.web, f"{detail}/review", {"decision": "approve"}, form_page=detail, status=303)
    assert "quiz-sync" in listed()

    page = client.web.get(path)
    assert "hides this plugin's integrations (1)" in page.text
    unconfirmed = post(client.web, path, {"enabled": "false"}, form_page=path, status=400)
    assert field_errors(unconfirmed, "confirm")
    assert client.app.registry["plugins"].is_enabled("quizsync")

    post(client.web, path, {"enabled": "false", "confirm": "yes"}, form_page=path, status=303)
    assert "The plugin quizsync is disabled." in client.web.get(path).text
    assert "quiz-sync" not in listed()
    post(client.web, path, {"enabled": "true"}, form_page=path, status=303)
    assert audit_actions(app, "plugin.") == [
        ("plugin.disabled", "admin", "quizsync", {"version": "1.0"}),
        ("plugin.enabled", "admin", "quizsync", {"version": "1.0"})]


def test_audit_log_filters(client, app):
    admin = signed_in_admin(client, "readonly")
    page = client.web.get("/admin/audit-log?action=admin.*")
    assert "admin.login" in page.text
    assert admin["id"] in page.text
    none = client.web.get("/admin/audit-log?action=plugin.*&actor_type=admin")
    assert "No audit entry matches." in none.text
    invalid = client.web.get("/admin/audit-log?created_after=yesterday&action=admin.login")
    assert field_errors(invalid, "created_after")
    assert input_value(invalid, "created_after") == "yesterday"
    assert "admin.login" in invalid.text


def test_ticket_thread_reply_assign_status(client, app):
    member = register_member(client)
    ticket = open_ticket(client, member, title="Calls fail <img src=x>",
                         description="Every call returns 401.")
    other = open_ticket(client, member, title="Billing question", category="billing")
    support = signed_in_admin(client, "support")
    readonly = create_admin(app, role="readonly")

    listing = client.web.get("/admin/tickets")
    assert "Calls fail &lt;img src=x&gt;" in listing.text
    assert "Billing question" in listing.text
    filtered = client.web.get("/admin/tickets?category=billing&assigned_to=none")
    assert "Billing question" in filtered.text
    assert "Calls fail" not in filtered.text
    invalid = client.web.get("/admin/tickets?priority=panic")
    assert field_errors(invalid, "priority")

    path = f"/admin/tickets/{ticket['id']}"
    page = client.web.get(path)
    assert "Every call returns 401." in page.text
    assert readonly["email"] not in page.text.split('id="assigned_to"')[1]
    empty = post(client.web, f"{path}/reply", {"body": ""}, form_page=path, status=400)
    assert field_errors(empty, "body")
    post(client.web, f"{path}/reply", {"body": "We are <looking> into it."}, form_page=path,
         status=303)
    thread = client.web.get(path)
    assert "We are &lt;looking&gt; into it." in thread.text
    assert "The reply is sent." in thread.text

    wrong = post(client.web, path, {"status": "in_progress", "priority": "medium",
                                    "assigned_to": readonly["id"]}, form_page=path, status=400)
    assert field_errors(wrong, "assigned_to")
    post(client.web, path, {"status": "resolved", "priority": "high",
                            "assigned_to": support["id"]}, form_page=path, status=303)
    updated = client.web.get(path)
    assert "The ticket " + ticket["id"] + " is updated." in updated.text
    mine = client.web.get(f"/admin/tickets?assigned_to={support['id']}")
    assert "Calls fail" in mine.text
    assert "Billing question" not in mine.text

    actions = [(action, actor, target) for action, actor, target, _details
               in audit_actions(app, "support_ticket.")]
    assert ("support_ticket.assigned", "admin", ticket["id"]) in actions
    assert ("support_ticket.priority_changed", "admin", ticket["id"]) in actions
    assert ("support_ticket.status_changed", "admin", ticket["id"]) in actions
    assert all(target != other["id"] for _action, _actor, target in actions)


def test_revenue_and_payout_actions(client, app):
    partner, token = client.partner_with_token(company_name="Payee <b>Co</b>")
    verify_partner(app, partner["id"])
    headers = auth_header(token)
    set_bank(client, headers)
    fund(app, partner, "250.00")
    add_revenue(app, partner, 2026, 1, calls=1000, revenue="357.15", commission="107.15",
                share="250.00")
    first = request_payout(client, headers, "200.00")
    signed_in_admin(client, "finance")

    revenue = client.web.get("/admin/revenue?period=2026-01")
    assert "Revenue in 2026-01" in revenue.text
    assert "Payee &lt;b&gt;Co&lt;/b&gt;" in revenue.text
    assert "357.15" in revenue.text
    invalid = client.web.get("/admin/revenue?period=2026-13")
    assert field_errors(invalid, "period")
    assert "pending" in client.web.get("/admin/payouts?status=pending").text
    assert "No payout matches." in client.web.get("/admin/payouts?status=paid").text

    path = f"/admin/payouts/{first}"
    page = post(client.web, f"{path}/hold", {"reason": ""}, form_page=path, status=400)
    assert field_errors(page, "hold-reason")
    post(client.web, f"{path}/hold", {"reason": "Check <bank>"}, form_page=path, status=303)
    held = client.web.get(path)
    assert f"The payout {first} is on hold." in held.text
    assert "Check &lt;bank&gt;" in held.text
    early = post(client.web, f"{path}/mark-paid", {}, form_page=path, status=409)
    assert "only a processing payout" in early.text
    post(client.web, f"{path}/approve", {}, form_page=path, status=303)
    wait_until_sent(app, first)
    post(client.web, f"{path}/mark-failed", {"reason": "Account closed"}, form_page=path,
         status=303)
    assert "Account closed" in client.web.get(path).text

    second = request_payout(client, headers, "250.00")
    path = f"/admin/payouts/{second}"
    post(client.web, f"{path}/approve", {}, form_page=path, status=303)
    wait_until_sent(app, second)
    post(client.web, f"{path}/mark-paid", {"reference": "TRF 1"}, form_page=path, status=303)
    assert "2026-01" in client.web.get(path).text
    client.web.post(f"{path}/bogus", {"csrf_token": csrf_token(client.web.get(path))},
                    status=404)

    actions = [(action, target) for action, actor, target, _details
               in audit_actions(app, "payout.") if actor == "admin"]
    assert actions == [("payout.held", first), ("payout.approved", first),
                       ("payout.marked_failed", first), ("payout.approved", second),
                       ("payout.marked_paid", second)]


def test_plans_create_and_edit(client, app):
    signed_in_admin(client, "finance")
    listing = client.web.get("/admin/plans")
    default_code = run_in_transaction(app.registry["db.session_factory"], lambda session: (
        session.scalar(sa.select(Plan.code).where(Plan.is_default.is_(True)))))
    assert f'href="/admin/plans/{default_code}"' in listing.text

    fields = {"code": "Bad Code", "name": "<Team>", "price_monthly": "49.5",
              "requests_per_hour": "1000", "requests_per_day": "",
              "included_requests_monthly": "abc", "overage_price_per_request": "0.002",
              "active": "true"}
    page = post(client.web, "/admin/plans", fields, form_page="/admin/plans/new", status=400)
    assert field_errors(page, "code")
    assert field_errors(page, "included_requests_monthly")
    assert input_value(page, "name") == "&lt;Team&gt;"
    assert input_value(page, "code") == "Bad Code"

    fields.update(code="team", included_requests_monthly="50000")
    post(client.web, "/admin/plans", fields, form_page="/admin/plans/new", status=303)
    assert "The plan team is created." in client.web.get("/admin/plans").text
    team = run_in_transaction(app.registry["db.session_factory"], lambda session: (
        session.scalar(sa.select(Plan).where(Plan.code == "team"))))
    assert team.requests_per_day is None
    assert team.self_serve is False
    assert str(team.price_monthly) == "49.50"
    taken = post(client.web, "/admin/plans", fields, form_page="/admin/plans/new", status=409)
    assert "already exists" in taken.text

    path = "/admin/plans/team"
    edit = client.web.get(path)
    assert input_value(edit, "requests_per_hour") == "1000"
    post(client.web, path, {**fields, "name": "Team plan", "self_serve": "true"},
         form_page=path, status=303)
    assert "The plan team is saved." in client.web.get(path).text
    path = f"/admin/plans/{default_code}"
    current = {name: input_value(client.web.get(path), name) or ""
               for name in ("name", "price_monthly", "requests_per_hour", "requests_per_day",
                            "included_requests_monthly", "overage_price_per_request")}
    refused = post(client.web, path, {**current, "active": "true"}, form_page=path,
                   status=409)
    assert "is the default plan" in refused.text
    client.web.get("/admin/plans/nope", status=404)

    actions = [(action, target) for action, actor, target, _details
               in audit_actions(app, "plan.") if actor == "admin"]
    assert actions == [("plan.created", "team"), ("plan.updated", "team")]
