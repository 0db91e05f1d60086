"""Support tickets on the admin API: list, read, reply, change status, priority and assignee."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from fkod.admin.testing import admin_with_headers, create_admin, set_admin_status
from fkod.core.audit import AuditEntry
from fkod.core.auth.models import Partner, User
from fkod.core.ids import parse_id
from fkod.core.testing import TestClient, auth_header, verify_partner
from fkod.partners.models import SupportTicket, TicketMessage
from tests.envelope import assert_envelope

pytestmark = pytest.mark.shared_app

ADMIN_TICKETS = "/api/admin/tickets"
PARTNER_TICKETS = "/api/partners/support/tickets"
STATUSES = ("open", "in_progress", "waiting_on_partner", "resolved", "closed")
WAIT_SECONDS = 30
QUIET_SECONDS = 1.5

# The status changes an admin may make, written out independently of the
# service's table so that a change to either shows up here.
ADMIN_MOVES = {
    "open": {"in_progress", "waiting_on_partner", "resolved", "closed"},
    "in_progress": {"open", "waiting_on_partner", "resolved", "closed"},
    "waiting_on_partner": {"open", "in_progress", "resolved", "closed"},
    "resolved": {"open", "in_progress", "closed"},
    "closed": set(),
}


@dataclass
class Member:
    """A partner with its owner's email and login headers."""

    partner_id: int
    email: str
    user_id: str
    headers: dict


def register(client: TestClient, *, verified: bool = False) -> Member:
    registered = client.register_partner()
    member = Member(partner_id=parse_id("partner", registered["partner"]["id"]),
                    email=registered["user"]["email"], user_id=registered["user"]["id"],
                    headers=auth_header(client.login(registered["user"]["email"])))
    if verified:
        verify_partner(client.app, registered["partner"]["id"])
    return member


def open_ticket(client: TestClient, member: Member, **fields) -> dict:
    body = {"title": "Key stopped working", "description": "Every call returns 401.",
            "category": "api", **fields}
    return client.web.post_json(PARTNER_TICKETS, body, headers=member.headers, status=201).json


def update_rows(app, statement) -> None:
    with Session(app.registry["db.engine"]) as session, session.begin():
        session.execute(statement)


def set_status(app, ticket: dict, status: str) -> None:
    update_rows(app, sa.update(SupportTicket)
                .where(SupportTicket.id == parse_id("tkt", ticket["id"]))
                .values(status=status, resolved_at=None))


def stored(app, ticket: dict) -> SupportTicket:
    with Session(app.registry["db.engine"]) as session:
        return session.get(SupportTicket, parse_id("tkt", ticket["id"]))


def message_count(app, ticket: dict) -> int:
    with Session(app.registry["db.engine"]) as session:
        return session.scalar(sa.select(sa.func.count()).select_from(TicketMessage)
                              .where(TicketMessage.ticket_id == parse_id("tkt", ticket["id"])))


def audit_entries(app, action: str) -> list[AuditEntry]:
    with Session(app.registry["db.engine"]) as session:
        return list(session.scalars(sa.select(AuditEntry).where(AuditEntry.action == action)
                                    .order_by(AuditEntry.id)))


def ticket_mail(app, address: str, ticket: dict) -> list:
    """Return the messages to ``address`` about ``ticket``; sign-up mail is left out."""
    return [message for message in app.registry["mailer"].messages_to(address)
            if ticket["id"] in message.subject]


def wait_for_mail(app, address: str, ticket: dict, count: int = 1) -> list:
    """Wait until ``address`` has ``count`` messages about ``ticket`` and return them."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        messages = ticket_mail(app, address, ticket)
        if len(messages) >= count:
            return messages
        if time.monotonic() > deadline:
            raise AssertionError(f"expected {count} messages to {address}, got {len(messages)}")
        time.sleep(0.05)


def url(ticket: dict | str, suffix: str = "") -> str:
    ticket_id = ticket if isinstance(ticket, str) else ticket["id"]
    return f"{ADMIN_TICKETS}/{ticket_id}{suffix}"


@pytest.fixture
def member(client) -> Member:
    return register(client)


@pytest.fixture
def support(client) -> tuple[dict, dict]:
    """A support admin and its Authorization header."""
    return admin_with_headers(client, role="support")


# Listing ------------------------------------------------------------------------


def list_ids(client, headers: dict, query: str = "") -> list[str]:
    body = client.web.get(f"{ADMIN_TICKETS}{query}", headers=headers).json
    return [item["id"] for item in body["data"]]


def test_list_every_partners_tickets(client, app, member, support):
    _admin, headers = support
    other = register(client)
    first = open_ticket(client, member)
    second = open_ticket(client, other, priority="urgent")

    body = client.web.get(ADMIN_TICKETS, headers=headers).json

    assert [item["id"] for item in body["data"]] == [second["id"], first["id"]]
    by_id = {item["id"]: item for item in body["data"]}
    assert by_id[first["id"]]["partner_id"] == f"partner_{member.partner_id}"
    assert by_id[second["id"]]["partner_id"] == f"partner_{other.partner_id}"
    assert by_id[second["id"]]["assigned_to"] is None
    assert by_id[second["id"]]["priority"] == "urgent"


@pytest.mark.shared_app(False)
def test_list_filters(client, app, member, support):
    admin, headers = support
    other = register(client)
    low = open_ticket(client, member, priority="low", category="billing")
    urgent = open_ticket(client, other, priority="urgent")
    assigned = open_ticket(client, member, category="webhooks")
    client.web.put_json(url(assigned), {"assigned_to": admin["id"], "status": "in_progress"},
                        headers=headers, status=200)

    cases = [
        (f"?partner_id=partner_{member.partner_id}", [assigned, low]),
        (f"?partner_id=partner_{other.partner_id}", [urgent]),
        ("?partner_id=partner_999999", []),
        (f"?assigned_to={admin['id']}", [assigned]),
        ("?assigned_to=none", [urgent, low]),
        ("?status=in_progress", [assigned]),
        ("?status=open", [urgent, low]),
        ("?priority=urgent", [urgent]),
        ("?category=billing", [low]),
        (f"?category=api&partner_id=partner_{other.partner_id}", [urgent]),
        ("?sort=-priority", [urgent, assigned, low]),
        ("?sort=created_at", [low, urgent, assigned]),
        ("?sort=-updated_at", [assigned, urgent, low]),
    ]
    for query, expected in cases:
        assert list_ids(client, headers, query) == [t["id"] for t in expected], query


@pytest.mark.shared_app(False)
def test_list_pages(client, app, member, support):
    _admin, headers = support
    tickets = [open_ticket(client, member, priority=priority)
               for priority in ("high", "low", "high", "medium", "high")]

    ids, cursor = [], None
    while True:
        query = "?sort=-priority&limit=2" + (f"&cursor={cursor}" if cursor else "")
        body = client.web.get(f"{ADMIN_TICKETS}{query}", headers=headers).json
        ids.extend(item["id"] for item in body["data"])
        cursor = body["next_cursor"]
        if cursor is None:
            break

    high = [tickets[4], tickets[2], tickets[0]]
    assert ids == [t["id"] for t in (*high, tickets[3], tickets[1])]


def test_list_rejects_bad_query(client, support):
    _admin, headers = support
    for query, field in [("assigned_to=someone", "assigned_to"), ("assigned_to=7", "assigned_to"),
                         ("partner_id=7", "partner_id"), ("partner_id=user_1", "partner_id"),
                         ("sort=assigned_to", "sort"), ("status=new", "status"),
                         ("priority=p1", "priority"), ("category=x", "category"),
                         ("search=key", "search")]:
        response = client.web.get(f"{ADMIN_TICKETS}?{query}", headers=headers, status="*")

        envelope = assert_envelope(response, 400, "validation_failed")
        assert [error["name"] for error in envelope["errors"]] == [field], query


# Reading ------------------------------------------------------------------------


def test_get_ticket_with_thread_and_evidence(client, app, member, support):
    admin, headers = support
    ticket = open_ticket(client, member)
    key = client.create_key(member.headers["Authorization"].split()[1], scopes=("mentors:read",))
    client.web.post_json(f"{PARTNER_TICKETS}/{ticket['id']}/evidence",
                         {"kind": "api_key_limits", "reference": key["id"]},
                         headers=member.headers, status=201)
    client.web.post_json(f"{PARTNER_TICKETS}/{ticket['id']}/reply", {"body": "Key attached."},
                         headers=member.headers, status=201)
    client.web.post_json(url(ticket, "/reply"), {"body": "Thanks, checking."}, headers=headers,
                         status=201)

    body = client.web.get(url(ticket), headers=headers).json

    assert body["id"] == ticket["id"]
    assert body["partner_id"] == f"partner_{member.partner_id}"
    assert body["status"] == "in_progress"
    assert [(m["author_type"], m["author_id"], m["body"]) for m in body["messages"]] == [
        ("partner", member.user_id, "Key attached."),
        ("admin", admin["id"], "Thanks, checking."),
    ]
    [evidence] = body["evidence"]
    assert evidence["kind"] == "api_key_limits"
    assert evidence["reference"] == key["id"]
    assert evidence["snapshot"]["id"] == key["id"]


def test_unknown_ticket_not_found(client, support):
    _admin, headers = support
    for bad_id in ("tkt_999999", "tkt_x", "ticket_1"):
        responses = [
            client.web.get(url(bad_id), headers=headers, status="*"),
            client.web.put_json(url(bad_id), {"priority": "low"}, headers=headers, status="*"),
            client.web.post_json(url(bad_id, "/reply"), {"body": "Hi"}, headers=headers,
                                 status="*"),
        ]
        for response in responses:
            assert_envelope(response, 404, "not_found")


# Replies ------------------------------------------------------------------------


@pytest.mark.parametrize(("before", "status", "after"), [
    ("open", None, "in_progress"),
    ("in_progress", None, "in_progress"),
    ("waiting_on_partner", None, "waiting_on_partner"),
    ("resolved", None, "resolved"),
    ("open", "waiting_on_partner", "waiting_on_partner"),
    ("open", "open", "open"),
    ("in_progress", "resolved", "resolved"),
    ("resolved", "closed", "closed"),
])
def test_admin_reply_moves_status(client, app, member, support, before, status, after):
    _admin, headers = support
    ticket = open_ticket(client, member)
    set_status(app, ticket, before)
    body = {"body": "Here is what we found."}
    if status is not None:
        body["status"] = status

    response = client.web.post_json(url(ticket, "/reply"), body, headers=headers, status=201)

    assert response.json["author_type"] == "admin"
    assert stored(app, ticket).status == after
    assert message_count(app, ticket) == 1


def test_admin_reply_rejected_transition(client, app, member, support):
    _admin, headers = support
    ticket = open_ticket(client, member)
    set_status(app, ticket, "resolved")

    response = client.web.post_json(url(ticket, "/reply"),
                                    {"body": "Need more.", "status": "waiting_on_partner"},
                                    headers=headers, status="*")

    body = assert_envelope(response, 409, "invalid_transition")
    assert "from resolved to waiting_on_partner" in body["message"]
    assert stored(app, ticket).status == "resolved"
    assert message_count(app, ticket) == 0


@pytest.mark.parametrize("status", [None, "closed", "open"])
def test_admin_reply_to_closed_ticket_conflicts(client, app, member, support, status):
    _admin, headers = support
    ticket = open_ticket(client, member)
    set_status(app, ticket, "closed")
    body = {"body": "Late answer."}
    if status is not None:
        body["status"] = status

    response = client.web.post_json(url(ticket, "/reply"), body, headers=headers, status="*")

    expected = "invalid_transition" if status == "open" else "ticket_closed"
    assert_envelope(response, 409, expected)
    assert message_count(app, ticket) == 0


def test_admin_reply_rejects_bad_fields(client, app, member, support):
    _admin, headers = support
    ticket = open_ticket(client, member)
    for body, field in [({}, "body"), ({"body": ""}, "body"), ({"body": "b" * 10_001}, "body"),
                        ({"body": 1}, "body"), ({"body": "x", "status": "done"}, "status"),
                        ({"body": "x", "status": None}, "status"),
                        ({"body": "x", "author_type": "partner"}, "author_type")]:
        response = client.web.post_json(url(ticket, "/reply"), body, headers=headers,
                                        status="*")

        envelope = assert_envelope(response, 400, "validation_failed")
        assert [error["name"] for error in envelope["errors"]] == [field], body
    assert message_count(app, ticket) == 0


def test_admin_reply_mails_ticket_creator(client, app, member, support):
    _admin, headers = support
    ticket = open_ticket(client, member, title="Webhook secret lost")

    client.web.post_json(url(ticket, "/reply"), {"body": "Rotate it from the portal."},
                         headers=headers, status=201)

    [message] = wait_for_mail(app, member.email, ticket)
    assert "Webhook secret lost" in message.subject
    assert "Rotate it from the portal." in message.body
    assert "in_progress" in message.body


def test_admin_reply_mails_contact_when_creator_inactive(client, app, member, support):
    _admin, headers = support
    ticket = open_ticket(client, member)
    update_rows(app, sa.update(User).where(User.id == parse_id("user", member.user_id))
                .values(status="disabled"))
    update_rows(app, sa.update(Partner).where(Partner.id == member.partner_id)
                .values(contact_email="help-desk@acme.example"))

    client.web.post_json(url(ticket, "/reply"), {"body": "Answer."}, headers=headers,
                         status=201)

    [message] = wait_for_mail(app, "help-desk@acme.example", ticket)
    assert "Answer." in message.body
    time.sleep(QUIET_SECONDS)
    assert ticket_mail(app, member.email, ticket) == []


def test_partner_reply_mails_assigned_admin(client, app, member, support):
    admin, headers = support
    ticket = open_ticket(client, member)
    client.web.put_json(url(ticket), {"assigned_to": admin["id"]}, headers=headers, status=200)

    client.web.post_json(f"{PARTNER_TICKETS}/{ticket['id']}/reply", {"body": "Still 401."},
                         headers=member.headers, status=201)

    # Assigning oneself sends no mail, so the reply is the only message.
    [message] = wait_for_mail(app, admin["email"], ticket)
    assert "Partner reply" in message.subject
    assert "Still 401." in message.body


def test_events_of_admin_actions(client, app, support, make_receiver):
    _admin, headers = support
    member = register(client, verified=True)
    receiver = make_receiver()
    client.web.post_json("/api/partners/webhooks", {
        "url": receiver.url, "event_types": ["support.ticket_replied",
                                             "support.ticket_status_changed"],
        "mode": "live", "retry_count": 0, "retry_delay": 0},
        headers=member.headers, status=201)
    ticket = open_ticket(client, member)

    client.web.post_json(url(ticket, "/reply"), {"body": "On it."}, headers=headers,
                         status=201)
    client.web.put_json(url(ticket), {"status": "resolved"}, headers=headers, status=200)

    events = [json.loads(request.body) for request in receiver.wait_for(3, WAIT_SECONDS)]
    by_type: dict[str, list] = {}
    for event in events:
        by_type.setdefault(event["type"], []).append(event["data"])
    [replied] = by_type["support.ticket_replied"]
    assert replied["id"] == ticket["id"]
    assert replied["message"]["author_type"] == "admin"
    assert replied["message"]["author_id"] is None
    assert replied["message"]["body"] == "On it."
    changes = sorted((data["previous_status"], data["status"])
                     for data in by_type["support.ticket_status_changed"])
    assert changes == [("in_progress", "resolved"), ("open", "in_progress")]
    assert "assigned_to" not in replied


# Status, priority and assignee ----------------------------------------------------


def test_every_admin_transition(client, app, member, support):
    _admin, headers = support
    ticket = open_ticket(client, member)
    for from_status in STATUSES:
        for to_status in STATUSES:
            if to_status == from_status:
                continue
            set_status(app, ticket, from_status)
            response = client.web.put_json(url(ticket), {"status": to_status},
                                           headers=headers, status="*")

            case = f"{from_status} -> {to_status}"
            if to_status in ADMIN_MOVES[from_status]:
                assert response.status_int == 200, case
                assert response.json["status"] == to_status, case
                assert stored(app, ticket).status == to_status, case
            else:
                body = assert_envelope(response, 409, "invalid_transition")
                assert f"from {from_status} to {to_status}" in body["message"], case
                assert stored(app, ticket).status == from_status, case


@pytest.mark.shared_app(False)
def test_same_status_changes_nothing(client, app, member, support):
    _admin, headers = support
    ticket = open_ticket(client, member)
    for status in STATUSES:
        set_status(app, ticket, status)

        client.web.put_json(url(ticket), {"status": status}, headers=headers, status=200)

    assert audit_entries(app, "support_ticket.status_changed") == []


def test_resolved_at_follows_status(client, app, member, support):
    _admin, headers = support
    ticket = open_ticket(client, member)

    resolved = client.web.put_json(url(ticket), {"status": "resolved"}, headers=headers).json
    assert resolved["resolved_at"] is not None
    reopened = client.web.put_json(url(ticket), {"status": "in_progress"}, headers=headers).json
    assert reopened["resolved_at"] is None
    again = client.web.put_json(url(ticket), {"status": "resolved"}, headers=headers).json
    closed = client.web.put_json(url(ticket), {"status": "closed"}, headers=headers).json
    assert closed["resolved_at"] == again["resolved_at"]
    assert closed["resolved_at"] is not None


@pytest.mark.shared_app(False)
def test_status_change_audited(client, app, member, support):
    admin, headers = support
    ticket = open_ticket(client, member)

    client.web.put_json(url(ticket), {"status": "waiting_on_partner"}, headers=headers)
    client.web.post_json(url(ticket, "/reply"), {"body": "Done?", "status": "resolved"},
                         headers=headers, status=201)

    entries = audit_entries(app, "support_ticket.status_changed")
    assert [entry.details for entry in entries] == [
        {"from": "open", "to": "waiting_on_partner"},
        {"from": "waiting_on_partner", "to": "resolved"},
    ]
    for entry in entries:
        assert entry.actor_type == "admin"
        assert entry.actor_id == parse_id("admin", admin["id"])
        assert entry.partner_id == member.partner_id
        assert entry.target_id == ticket["id"]


@pytest.mark.shared_app(False)
def test_partner_moves_not_audited(client, app, member):
    ticket = open_ticket(client, member)
    set_status(app, ticket, "waiting_on_partner")

    client.web.post_json(f"{PARTNER_TICKETS}/{ticket['id']}/reply", {"body": "Here."},
                         headers=member.headers, status=201)

    assert audit_entries(app, "support_ticket.status_changed") == []


@pytest.mark.shared_app(False)
def test_assign_and_unassign(client, app, member, support):
    admin, headers = support
    colleague = create_admin(app, role="superadmin")
    ticket = open_ticket(client, member)

    assigned = client.web.put_json(url(ticket), {"assigned_to": colleague["id"]},
                                   headers=headers).json
    assert assigned["assigned_to"] == colleague["id"]
    unassigned = client.web.put_json(url(ticket), {"assigned_to": None}, headers=headers).json
    assert unassigned["assigned_to"] is None
    assert stored(app, ticket).assigned_to is None

    entries = audit_entries(app, "support_ticket.assigned")
    assert [entry.details for entry in entries] == [
        {"from": None, "to": colleague["id"]},
        {"from": colleague["id"], "to": None},
    ]
    assert all(entry.actor_id == parse_id("admin", admin["id"]) for entry in entries)
    [message] = wait_for_mail(app, colleague["email"], ticket)
    assert "assigned to you" in message.subject


@pytest.mark.shared_app(False)
def test_assignment_rejected_for_unfit_admins(client, app, member, support):
    _admin, headers = support
    ticket = open_ticket(client, member)
    disabled = create_admin(app, role="support")
    set_admin_status(app, parse_id("admin", disabled["id"]), "disabled")
    unfit = [disabled["id"], create_admin(app, role="finance")["id"],
             create_admin(app, role="readonly")["id"], "admin_999999"]

    for admin_id in unfit:
        response = client.web.put_json(url(ticket), {"assigned_to": admin_id}, headers=headers,
                                       status="*")

        envelope = assert_envelope(response, 400, "invalid_assignee")
        assert envelope["errors"][0]["name"] == "assigned_to", admin_id
        assert admin_id in envelope["message"], admin_id
    assert stored(app, ticket).assigned_to is None
    assert audit_entries(app, "support_ticket.assigned") == []


def test_change_priority(client, app, member, support):
    _admin, headers = support
    ticket = open_ticket(client, member)

    body = client.web.put_json(url(ticket), {"priority": "urgent"}, headers=headers).json

    assert body["priority"] == "urgent"
    assert body["status"] == "open"
    [entry] = audit_entries(app, "support_ticket.priority_changed")
    assert entry.details == {"from": "medium", "to": "urgent"}


@pytest.mark.shared_app(False)
def test_rejected_change_keeps_other_fields(client, app, member, support):
    admin, headers = support
    ticket = open_ticket(client, member)
    set_status(app, ticket, "closed")

    response = client.web.put_json(url(ticket), {"status": "open", "priority": "high",
                                                 "assigned_to": admin["id"]},
                                   headers=headers, status="*")

    assert_envelope(response, 409, "invalid_transition")
    row = stored(app, ticket)
    assert row.priority == "medium"
    assert row.assigned_to is None
    assert audit_entries(app, "support_ticket.assigned") == []


def test_update_rejects_bad_bodies(client, app, member, support):
    _admin, headers = support
    ticket = open_ticket(client, member)
    for body, field in [({}, ""), ({"status": "done"}, "status"), ({"status": None}, "status"),
                        ({"priority": "p0"}, "priority"), ({"priority": 3}, "priority"),
                        ({"assigned_to": "someone"}, "assigned_to"),
                        ({"assigned_to": 5}, "assigned_to"), ({"title": "New"}, "title"),
                        ({"partner_id": "partner_1"}, "partner_id")]:
        response = client.web.put_json(url(ticket), body, headers=headers, status="*")

        envelope = assert_envelope(response, 400, "validation_failed")
        assert [error["name"] for error in envelope["errors"]] == [field], body
    row = stored(app, ticket)
    assert (row.status, row.priority, row.assigned_to) == ("open", "medium", None)


# Roles --------------------------------------------------------------------------


def test_admin_roles(client, app, member):
    ticket = open_ticket(client, member)
    writes = [("put_json", url(ticket), {"priority": "high"}),
              ("post_json", url(ticket, "/reply"), {"body": "Hello"})]

    for role in ("superadmin", "support", "readonly"):
        _admin, headers = admin_with_headers(client, role=role)
        client.web.get(ADMIN_TICKETS, headers=headers, status=200)
        client.web.get(url(ticket), headers=headers, status=200)

    _admin, readonly = admin_with_headers(client, role="readonly")
    for method, path, body in writes:
        response = getattr(client.web, method)(path, body, headers=readonly, status="*")
        envelope = assert_envelope(response, 403, "missing_permission")
        assert "tickets:write" in envelope["message"], path

    _admin, finance = admin_with_headers(client, role="finance")
    for path in (ADMIN_TICKETS, url(ticket)):
        response = client.web.get(path, headers=finance, status="*")
        assert_envelope(response, 403, "missing_permission")
    for method, path, body in writes:
        response = getattr(client.web, method)(path, body, headers=finance, status="*")
        assert_envelope(response, 403, "missing_permission")

    row = stored(app, ticket)
    assert (row.status, row.priority) == ("open", "medium")
    assert message_count(app, ticket) == 0


def test_partner_token_rejected(client, app, member):
    ticket = open_ticket(client, member)

    for response in (client.web.get(ADMIN_TICKETS, headers=member.headers, status="*"),
                     client.web.get(url(ticket), headers=member.headers, status="*"),
                     client.web.put_json(url(ticket), {"priority": "low"},
                                         headers=member.headers, status="*")):
        assert_envelope(response, 401)
    assert stored(app, ticket).priority == "medium"
