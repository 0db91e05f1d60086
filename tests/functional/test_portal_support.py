"""Portal support pages: tickets with their threads and evidence, and the audit log."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
import webtest

from fkod.core.auth.models import PartnerMember
from fkod.core.db import run_in_transaction
from fkod.core.ids import parse_id
from fkod.partners.models import SupportTicket, TicketEvidence
from tests.functional.portal_pages import (
    add_member,
    field_errors,
    input_value,
    log_in,
    post_form,
    signed_in_owner,
)

pytestmark = pytest.mark.shared_app

NEW = "/portal/support/new"
TICKET = {"title": "Webhooks <late>", "category": "webhooks", "priority": "high",
          "description": "Deliveries arrive\nten minutes late & out of order."}


def stored_tickets(app) -> list[SupportTicket]:
    return run_in_transaction(app.registry["db.session_factory"], lambda session: list(
        session.scalars(sa.select(SupportTicket).order_by(SupportTicket.id))))


def evidence_count(app) -> int:
    return run_in_transaction(app.registry["db.session_factory"], lambda session: session.scalar(
        sa.select(sa.func.count()).select_from(TicketEvidence)))


def test_support_pages_need_login_and_csrf(client):
    for path in ("/portal/support", NEW, "/portal/support/tkt_1", "/portal/audit-log"):
        assert "/portal/login?next=" in client.web.get(path, status=303).location
    signed_in_owner(client)
    page = client.web.post("/portal/support", TICKET, status=403)
    assert "The form expired" in page.text
    client.web.post("/portal/support/tkt_1/close", status=403)
    client.web.post("/portal/audit-log", status=405)


def test_open_reply_and_close_ticket(client, app):
    registered = signed_in_owner(client)
    _partner, token = registered["partner"], client.login(registered["user"]["email"])
    key = client.create_key(token)
    assert "No tickets" in client.web.get("/portal/support").text

    missing = post_form(client.web, "/portal/support", dict(TICKET, category="", title=""),
                        form_page=NEW, status=400)
    assert field_errors(missing, "title")
    assert field_errors(missing, "category")
    assert "ten minutes late &amp; out of order.</textarea>" in missing.text
    bad_evidence = post_form(client.web, "/portal/support", dict(
        TICKET, evidence_kind="api_key_limits", evidence_reference="key_999999"),
        form_page=NEW, status=404)
    assert input_value(bad_evidence, "evidence_reference") == "key_999999"
    assert "No API key" in bad_evidence.text
    wrong_reference = post_form(client.web, "/portal/support", dict(
        TICKET, evidence_kind="api_key_limits", evidence_reference="whk_1"),
        form_page=NEW, status=400)
    assert field_errors(wrong_reference, "evidence_reference")
    assert stored_tickets(app) == []

    opened = post_form(client.web, "/portal/support", dict(
        TICKET, evidence_kind="api_key_limits", evidence_reference=key["id"]),
        form_page=NEW, status=303)
    [ticket] = stored_tickets(app)
    assert evidence_count(app) == 1
    page = client.web.get(opened.location)
    assert "Webhooks &lt;late&gt;" in page.text
    assert "ten minutes late &amp; out of order." in page.text
    assert key["id"] in page.text

    listing = client.web.get("/portal/support?status=open&priority=high")
    assert "Webhooks &lt;late&gt;" in listing.text
    assert "No tickets match" in client.web.get("/portal/support?status=closed").text
    invalid = client.web.get("/portal/support?status=lost", status=400)
    assert field_errors(invalid, "status")

    reply_path = f"/portal/support/tkt_{ticket.id}/reply"
    empty = post_form(client.web, reply_path, {"body": " "}, form_page=opened.location,
                      status=400)
    assert field_errors(empty, "body")
    sent = post_form(client.web, reply_path, {"body": "Still <b>late</b> today."},
                     form_page=opened.location, status=303)
    assert "Still &lt;b&gt;late&lt;/b&gt; today." in client.web.get(sent.location).text

    closed = post_form(client.web, f"/portal/support/tkt_{ticket.id}/close", {},
                       form_page=opened.location, status=303)
    page = client.web.get(closed.location)
    assert "The ticket is closed." in page.text
    assert "Send reply" not in page.text
    again = post_form(client.web, f"/portal/support/tkt_{ticket.id}/close", {},
                      form_page=opened.location, status=303)
    assert "The ticket was not closed" in client.web.get(again.location).text

    # Another partner's ticket is a 404 page.
    other = webtest.TestApp(app)
    stranger = client.register_partner(company_name="Other Co")
    log_in(other, stranger["user"]["email"])
    other.get(f"/portal/support/tkt_{ticket.id}", status=404)
    post_form(other, f"/portal/support/tkt_{ticket.id}/reply", {"body": "hi"},
              form_page="/portal/support", status=404)


def test_audit_log_filters_and_permissions(client, app):
    registered = signed_in_owner(client)
    token = client.login(registered["user"]["email"])
    for _ in range(22):
        client.create_key(token)
    page = client.web.get("/portal/audit-log?action=api_key.*")
    assert page.text.count(">api_key.created<") == 20
    next_link = page.html.find("a", string="Next page")["href"]
    assert "action=api_key.%2A" in next_link
    second = client.web.get(next_link)
    assert second.text.count(">api_key.created<") == 2
    assert "First page" in second.text

    invalid = client.web.get("/portal/audit-log?action=DROP<x>&created_after=yesterday",
                             status=400)
    assert field_errors(invalid, "action")
    assert field_errors(invalid, "created_after")
    assert input_value(invalid, "action") == "DROP&lt;x&gt;"
    dated = client.web.get("/portal/audit-log?created_after=2000-01-01&created_before=2000-01-02")
    assert "No entries match" in dated.text

    # A read-only member reads tickets and the log, but cannot open a ticket.
    reader = client.register_partner(company_name="Reader Co")
    run_in_transaction(app.registry["db.session_factory"], lambda session: session.execute(
        sa.delete(PartnerMember).where(
            PartnerMember.partner_id == parse_id("partner", reader["partner"]["id"]))))
    add_member(app, registered["partner"]["id"], reader["user"]["id"], "read_only")
    browser = webtest.TestApp(app)
    log_in(browser, reader["user"]["email"])
    assert "Open a ticket" not in browser.get("/portal/support").text
    browser.get("/portal/audit-log", status=200)
    denied = browser.get(NEW, status=403)
    assert "support:write" in denied.text
