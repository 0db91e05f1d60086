"""Support tickets on the partner API: create, list, read, reply, close, notify.

Admin-side changes are made to the rows directly here, so these tests cover
the partner's part of every status change. The admin API has its own tests.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from fkod.admin.testing import create_admin
from fkod.core.auth.models import PartnerMember
from fkod.core.db import utcnow
from fkod.core.ids import parse_id
from fkod.core.testing import TestClient, auth_header, verify_partner
from fkod.partners.models import SupportTicket, TicketMessage
from fkod.partners.tickets import TRANSITIONS
from tests.envelope import assert_envelope

pytestmark = pytest.mark.shared_app

TICKETS = "/api/partners/support/tickets"
EVENTS_PATH = "/api/webhooks/available-events"
# Long enough for a task to pass through Redis on the production stack.
WAIT_SECONDS = 30
# How long a test watches for deliveries that must not happen.
QUIET_SECONDS = 1.5
SUPPORT_EVENTS = ("support.ticket_created", "support.ticket_replied",
                  "support.ticket_status_changed")


@dataclass
class Member:
    """A partner with its owner's email and login headers."""

    partner_id: int
    email: str
    user_id: str
    headers: dict


def register(client: TestClient) -> Member:
    registered = client.register_partner()
    token = client.login(registered["user"]["email"])
    return Member(partner_id=parse_id("partner", registered["partner"]["id"]),
                  email=registered["user"]["email"], user_id=registered["user"]["id"],
                  headers=auth_header(token))


@pytest.fixture
def owner(client) -> Member:
    return register(client)


def ticket_url(ticket: dict | str, suffix: str = "") -> str:
    ticket_id = ticket if isinstance(ticket, str) else ticket["id"]
    return f"{TICKETS}/{ticket_id}{suffix}"


def create(client: TestClient, member: Member, status: int = 201, **fields):
    body = {"title": "Deliveries time out", "description": "Since 09:00 UTC every delivery "
            "to our endpoint times out.", "category": "webhooks", **fields}
    return client.web.post_json(TICKETS, body, headers=member.headers, status=status)


def update_rows(app, statement) -> None:
    with Session(app.registry["db.engine"]) as session, session.begin():
        session.execute(statement)


def set_status(app, ticket: dict, status: str) -> None:
    """Put a ticket in ``status`` the way an admin's change leaves it."""
    resolved_at = utcnow() if status in ("resolved", "closed") else None
    update_rows(app, sa.update(SupportTicket)
                .where(SupportTicket.id == parse_id("tkt", ticket["id"]))
                .values(status=status, resolved_at=resolved_at))


def stored(app, ticket: dict) -> SupportTicket:
    with Session(app.registry["db.engine"]) as session:
        return session.get(SupportTicket, parse_id("tkt", ticket["id"]))


def message_count(app, ticket: dict) -> int:
    with Session(app.registry["db.engine"]) as session:
        return session.scalar(sa.select(sa.func.count()).select_from(TicketMessage)
                              .where(TicketMessage.ticket_id == parse_id("tkt", ticket["id"])))


def set_role(app, member: Member, role: str) -> None:
    update_rows(app, sa.update(PartnerMember)
                .where(PartnerMember.partner_id == member.partner_id).values(role=role))


def wait_for_mail(app, address: str, count: int) -> list:
    """Wait until ``address`` has at least ``count`` messages and return them all."""
    mailer = app.registry["mailer"]
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        messages = mailer.messages_to(address)
        if len(messages) >= count:
            return messages
        if time.monotonic() > deadline:
            raise AssertionError(f"expected {count} messages to {address}, got {len(messages)}")
        time.sleep(0.05)


def support_address(app) -> str:
    return app.registry.settings["fkod.support.notification_address"]


# Creating -----------------------------------------------------------------------


def test_create_ticket_defaults(client, owner):
    response = create(client, owner)
    body = response.json

    assert body["id"].startswith("tkt_")
    assert body["title"] == "Deliveries time out"
    assert body["description"].startswith("Since 09:00 UTC")
    assert body["category"] == "webhooks"
    assert body["priority"] == "medium"
    assert body["status"] == "open"
    assert body["created_by"] == owner.user_id
    assert body["resolved_at"] is None
    assert body["created_at"].endswith("Z")
    assert body["updated_at"] == body["created_at"]
    assert "partner_id" not in body
    assert "assigned_to" not in body


def test_create_ticket_each_priority_and_category(client, owner):
    for priority in ("low", "medium", "high", "urgent"):
        assert create(client, owner, priority=priority).json["priority"] == priority
    for category in ("api", "webhooks", "billing", "integrations", "account", "other"):
        assert create(client, owner, category=category).json["category"] == category


def test_create_ticket_trims_and_accepts_limits(client, owner):
    body = create(client, owner, title="  " + "t" * 255 + "  ",
                  description="d" * 10_000).json

    assert body["title"] == "t" * 255
    assert len(body["description"]) == 10_000


MISSING = object()

BAD_BODIES = [
    ("title", MISSING),
    ("description", MISSING),
    ("category", MISSING),
    ("title", ""),
    ("title", "   "),
    ("title", "t" * 256),
    ("title", "two\nlines"),
    ("title", "tab\there"),
    ("title", 5),
    ("title", None),
    ("title", ["a"]),
    ("description", ""),
    ("description", "d" * 10_001),
    ("description", {"text": "x"}),
    ("description", "nul \x00 inside"),
    ("category", "sales"),
    ("category", "API"),
    ("category", 1),
    ("category", None),
    ("priority", "critical"),
    ("priority", ""),
    ("priority", True),
    ("priority", None),
    ("status", "closed"),
    ("partner_id", "partner_1"),
    ("assigned_to", "admin_1"),
    ("created_by", "user_1"),
]


def with_field(body: dict, field: str, value) -> dict:
    """Return a copy of ``body`` with ``field`` set to ``value``, or removed for MISSING."""
    changed = dict(body)
    if value is MISSING:
        del changed[field]
    else:
        changed[field] = value
    return changed


def test_create_ticket_rejects_bad_fields(client, app, owner):
    valid = {"title": "Help", "description": "Details", "category": "api"}
    for field, value in BAD_BODIES:
        response = client.web.post_json(TICKETS, with_field(valid, field, value),
                                        headers=owner.headers, status="*")

        case = f"{field}={value!r:.40}"
        envelope = assert_envelope(response, 400, "validation_failed")
        assert [error["name"] for error in envelope["errors"]] == [field], case
        assert envelope["errors"][0]["location"] == "body", case

    listed = client.web.get(TICKETS, headers=owner.headers).json
    assert listed["data"] == []


def test_create_ticket_rejects_non_json(client, owner):
    response = client.web.post(TICKETS, "title=Help", headers=owner.headers,
                               content_type="application/x-www-form-urlencoded", status="*")

    assert_envelope(response, 415, "unsupported_media_type")


def test_create_ticket_needs_login(client):
    response = client.web.post_json(TICKETS, {"title": "Help", "description": "Details",
                                              "category": "api"}, status="*")

    assert_envelope(response, 401)


# Listing ------------------------------------------------------------------------


def list_ids(client, member: Member, query: str = "") -> list[str]:
    body = client.web.get(f"{TICKETS}{query}", headers=member.headers).json
    return [item["id"] for item in body["data"]]


def all_pages(client, member: Member, query: str, limit: int = 2) -> list[str]:
    """Follow next_cursor from the first page to the last and return every id in order."""
    ids, cursor = [], None
    while True:
        url = f"{TICKETS}?{query}&limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        body = client.web.get(url, headers=member.headers).json
        assert len(body["data"]) <= limit
        ids.extend(item["id"] for item in body["data"])
        assert body["has_more"] is (body["next_cursor"] is not None)
        if not body["has_more"]:
            return ids
        cursor = body["next_cursor"]


@pytest.fixture
def five_tickets(client, owner) -> list[dict]:
    """Five tickets of ``owner`` with mixed priorities and categories, oldest first."""
    specs = [("low", "api"), ("urgent", "billing"), ("medium", "api"), ("urgent", "webhooks"),
             ("high", "account")]
    return [create(client, owner, title=f"Ticket {index}", priority=priority,
                   category=category).json
            for index, (priority, category) in enumerate(specs)]


def test_list_newest_first_by_default(client, owner, five_tickets):
    body = client.web.get(TICKETS, headers=owner.headers).json

    assert [item["id"] for item in body["data"]] == [t["id"] for t in reversed(five_tickets)]
    assert body["has_more"] is False
    assert body["next_cursor"] is None


def test_list_shows_only_own_tickets(client, owner, five_tickets):
    other = register(client)
    theirs = create(client, other).json

    assert theirs["id"] not in list_ids(client, owner)
    assert list_ids(client, other) == [theirs["id"]]


RANK = {"low": 0, "medium": 1, "high": 2, "urgent": 3}


def _number(ticket: dict) -> int:
    return parse_id("tkt", ticket["id"])


@pytest.mark.parametrize("sort", ["created_at", "-created_at", "priority", "-priority"])
def test_list_sorts_across_pages(client, owner, five_tickets, sort):
    descending = sort.startswith("-")
    if sort.lstrip("-") == "priority":
        expected = sorted(five_tickets, key=lambda t: (RANK[t["priority"]], _number(t)),
                          reverse=descending)
    else:
        expected = sorted(five_tickets, key=_number, reverse=descending)

    assert all_pages(client, owner, f"sort={sort}") == [t["id"] for t in expected]


def test_list_sorts_by_update(client, owner, five_tickets):
    first, second = five_tickets[0], five_tickets[1]
    client.web.post_json(ticket_url(first, "/reply"), {"body": "Any news?"},
                         headers=owner.headers, status=201)
    client.web.post_json(ticket_url(second, "/reply"), {"body": "Still failing."},
                         headers=owner.headers, status=201)
    untouched = [t["id"] for t in reversed(five_tickets[2:])]

    assert all_pages(client, owner, "sort=-updated_at") == [second["id"], first["id"],
                                                             *untouched]
    assert all_pages(client, owner, "sort=updated_at") == [*reversed(untouched), first["id"],
                                                            second["id"]]


@pytest.mark.parametrize(("query", "expected_indexes"), [
    ("priority=urgent", [3, 1]),
    ("priority=low", [0]),
    ("category=api", [2, 0]),
    ("category=api&priority=medium", [2]),
    ("category=integrations", []),
    ("status=open", [4, 3, 2, 1, 0]),
    ("status=closed", []),
])
def test_list_filters(client, owner, five_tickets, query, expected_indexes):
    assert list_ids(client, owner, f"?{query}") == [five_tickets[i]["id"]
                                                     for i in expected_indexes]


def test_list_filters_by_status_after_close(client, owner, five_tickets):
    client.web.post_json(ticket_url(five_tickets[2], "/close"), {}, headers=owner.headers)

    assert list_ids(client, owner, "?status=closed") == [five_tickets[2]["id"]]
    assert five_tickets[2]["id"] not in list_ids(client, owner, "?status=open")


def test_list_filter_with_pages(client, owner, five_tickets):
    assert all_pages(client, owner, "priority=urgent&sort=created_at", limit=1) == [
        five_tickets[1]["id"], five_tickets[3]["id"]]


BAD_QUERIES = [
    ("sort=title", "sort"),
    ("sort=--created_at", "sort"),
    ("sort=", "sort"),
    ("status=pending", "status"),
    ("priority=critical", "priority"),
    ("category=sales", "category"),
    ("limit=0", "limit"),
    ("limit=101", "limit"),
    ("cursor=nonsense", "cursor"),
    ("assigned_to=admin_1", "assigned_to"),
    ("partner_id=partner_1", "partner_id"),
    ("q=help", "q"),
    ("status=open&status=closed", "status"),
]


def test_list_rejects_bad_query(client, owner):
    for query, field in BAD_QUERIES:
        response = client.web.get(f"{TICKETS}?{query}", headers=owner.headers, status="*")

        envelope = assert_envelope(response, 400, "validation_failed")
        assert [error["name"] for error in envelope["errors"]] == [field], query
        assert envelope["errors"][0]["location"] == "querystring", query


def test_list_rejects_another_partners_cursor(client, owner, five_tickets):
    other = register(client)
    for _ in range(2):
        create(client, other)
    cursor = client.web.get(f"{TICKETS}?sort=priority&limit=1",
                            headers=other.headers).json["next_cursor"]

    response = client.web.get(f"{TICKETS}?sort=priority&cursor={cursor}",
                              headers=owner.headers, status="*")

    assert_envelope(response, 400, "validation_failed")


# Reading ------------------------------------------------------------------------


def test_get_ticket_with_thread_oldest_first(client, app, owner):
    ticket = create(client, owner).json
    for text in ("First follow-up", "Second follow-up", "Third follow-up"):
        client.web.post_json(ticket_url(ticket, "/reply"), {"body": text},
                             headers=owner.headers, status=201)

    body = client.web.get(ticket_url(ticket), headers=owner.headers).json

    assert body["id"] == ticket["id"]
    assert body["title"] == ticket["title"]
    assert [message["body"] for message in body["messages"]] == [
        "First follow-up", "Second follow-up", "Third follow-up"]
    for message in body["messages"]:
        assert message["author_type"] == "partner"
        assert message["author_id"] == owner.user_id
        assert message["id"].startswith("msg_")
    assert body["evidence"] == []


def test_get_ticket_hides_admin_identity(client, app, owner):
    ticket = create(client, owner).json
    admin = create_admin(app, role="support")
    admin_id = parse_id("admin", admin["id"])
    with Session(app.registry["db.engine"]) as session, session.begin():
        session.add(TicketMessage(ticket_id=parse_id("tkt", ticket["id"]), author_type="admin",
                                  admin_user_id=admin_id, body="We are on it."))
        session.execute(sa.update(SupportTicket)
                        .where(SupportTicket.id == parse_id("tkt", ticket["id"]))
                        .values(assigned_to=admin_id))

    body = client.web.get(ticket_url(ticket), headers=owner.headers).json

    [message] = body["messages"]
    assert message["author_type"] == "admin"
    assert message["author_id"] is None
    assert "assigned_to" not in body
    assert admin["email"] not in json.dumps(body)


def test_other_partners_ticket_not_found(client, app, owner):
    ticket = create(client, owner).json
    other = register(client)
    posts = {"/reply": {"body": "Mine now"}, "/close": {},
             "/evidence": {"kind": "api_request", "reference": "req_0123456789"}}

    responses = {"": client.web.get(ticket_url(ticket), headers=other.headers, status="*")}
    for suffix, body in posts.items():
        responses[suffix] = client.web.post_json(ticket_url(ticket, suffix), body,
                                                 headers=other.headers, status="*")

    for suffix, response in responses.items():
        envelope = assert_envelope(response, 404, "not_found")
        assert ticket["id"] in envelope["message"], suffix
    row = stored(app, ticket)
    assert row.status == "open"
    assert message_count(app, ticket) == 0
    assert client.web.get(ticket_url(ticket), headers=owner.headers).json["evidence"] == []


def test_unknown_ticket_id_not_found(client, owner):
    create(client, owner)
    for bad_id in ("tkt_999999", "tkt_abc", "ticket_1", "1", "tkt_", "tkt_99999999999",
                   "tkt_-1"):
        response = client.web.get(ticket_url(bad_id), headers=owner.headers, status="*")

        assert_envelope(response, 404, "not_found")


# Replies and status changes -------------------------------------------------------


@pytest.mark.parametrize(("before", "after"), [
    ("open", "open"),
    ("in_progress", "in_progress"),
    ("waiting_on_partner", "open"),
    ("resolved", "open"),
])
def test_partner_reply_moves_status(client, app, owner, before, after):
    ticket = create(client, owner).json
    set_status(app, ticket, before)

    response = client.web.post_json(ticket_url(ticket, "/reply"), {"body": "More details."},
                                    headers=owner.headers, status=201)

    assert response.json["body"] == "More details."
    assert response.json["author_type"] == "partner"
    row = stored(app, ticket)
    assert row.status == after
    assert row.resolved_at is None
    assert message_count(app, ticket) == 1


def test_partner_reply_to_closed_ticket_conflicts(client, app, owner):
    ticket = create(client, owner).json
    client.web.post_json(ticket_url(ticket, "/close"), {}, headers=owner.headers, status=200)

    response = client.web.post_json(ticket_url(ticket, "/reply"), {"body": "Wait"},
                                    headers=owner.headers, status="*")

    body = assert_envelope(response, 409, "invalid_transition")
    assert "from closed to open" in body["message"]
    assert stored(app, ticket).status == "closed"
    assert message_count(app, ticket) == 0


def test_reply_updates_ticket_time(client, app, owner):
    ticket = create(client, owner).json
    before = stored(app, ticket).updated_at

    client.web.post_json(ticket_url(ticket, "/reply"), {"body": "Ping"},
                         headers=owner.headers, status=201)

    assert stored(app, ticket).updated_at > before


BAD_REPLIES = [
    ("body", MISSING), ("body", ""), ("body", "  "), ("body", "b" * 10_001), ("body", 3),
    ("body", None), ("body", ["a"]), ("status", "closed"), ("author_type", "admin"),
]


def test_reply_rejects_bad_fields(client, app, owner):
    ticket = create(client, owner).json
    for field, value in BAD_REPLIES:
        response = client.web.post_json(ticket_url(ticket, "/reply"),
                                        with_field({"body": "Text"}, field, value),
                                        headers=owner.headers, status="*")

        envelope = assert_envelope(response, 400, "validation_failed")
        assert [error["name"] for error in envelope["errors"]] == [field], f"{field}={value!r:.40}"

    assert message_count(app, ticket) == 0
    assert stored(app, ticket).status == "open"


def test_reply_accepts_longest_body(client, owner):
    ticket = create(client, owner).json
    response = client.web.post_json(ticket_url(ticket, "/reply"), {"body": "b" * 10_000},
                                    headers=owner.headers, status=201)

    assert len(response.json["body"]) == 10_000


@pytest.mark.parametrize("before", ["open", "in_progress", "waiting_on_partner", "resolved"])
def test_close_from_each_status(client, app, owner, before):
    ticket = create(client, owner).json
    set_status(app, ticket, before)
    resolved_at = stored(app, ticket).resolved_at

    body = client.web.post_json(ticket_url(ticket, "/close"), {}, headers=owner.headers,
                                status=200).json

    assert body["status"] == "closed"
    row = stored(app, ticket)
    assert row.status == "closed"
    # Closing keeps the time a resolved ticket was resolved.
    assert row.resolved_at == resolved_at


def test_close_closed_ticket_conflicts(client, app, owner):
    ticket = create(client, owner).json
    client.web.post_json(ticket_url(ticket, "/close"), {}, headers=owner.headers, status=200)

    response = client.web.post_json(ticket_url(ticket, "/close"), {}, headers=owner.headers,
                                    status="*")

    body = assert_envelope(response, 409, "invalid_transition")
    assert "from closed to closed" in body["message"]


def test_close_rejects_body_fields(client, app, owner):
    ticket = create(client, owner).json
    response = client.web.post_json(ticket_url(ticket, "/close"), {"reason": "done"},
                                    headers=owner.headers, status="*")

    assert_envelope(response, 400, "validation_failed")
    assert stored(app, ticket).status == "open"


def test_reopen_clears_resolved_at(client, app, owner):
    ticket = create(client, owner).json
    set_status(app, ticket, "resolved")
    assert stored(app, ticket).resolved_at is not None

    client.web.post_json(ticket_url(ticket, "/reply"), {"body": "It broke again."},
                         headers=owner.headers, status=201)

    row = stored(app, ticket)
    assert row.status == "open"
    assert row.resolved_at is None
    body = client.web.get(ticket_url(ticket), headers=owner.headers).json
    assert body["resolved_at"] is None


def test_transition_table_partner_moves():
    # A partner member may only reopen (by replying) and close; closed is final.
    for from_status, targets in TRANSITIONS.items():
        for to_status, actors in targets.items():
            if "partner" in actors:
                assert to_status in ("open", "closed"), (from_status, to_status)
    assert TRANSITIONS["closed"] == {}
    assert set(TRANSITIONS) == {"open", "in_progress", "waiting_on_partner", "resolved",
                                "closed"}


# Roles --------------------------------------------------------------------------


def test_every_role_can_read(client, app, owner):
    ticket = create(client, owner).json
    for role in ("read_only", "billing", "developer", "admin", "owner"):
        set_role(app, owner, role)

        assert list_ids(client, owner) == [ticket["id"]], role
        client.web.get(ticket_url(ticket), headers=owner.headers, status=200)


WRITES = [
    ("", {"title": "Help", "description": "Details", "category": "api"}),
    ("/reply", {"body": "More"}),
    ("/close", {}),
    ("/evidence", {"kind": "api_request", "reference": "req_0123456789"}),
]


def test_read_only_member_cannot_write(client, app, owner):
    ticket = create(client, owner).json
    set_role(app, owner, "read_only")

    for suffix, body in WRITES:
        url = TICKETS if suffix == "" else ticket_url(ticket, suffix)
        response = client.web.post_json(url, body, headers=owner.headers, status="*")

        envelope = assert_envelope(response, 403, "missing_permission")
        assert "support:write" in envelope["message"], suffix

    assert stored(app, ticket).status == "open"
    assert message_count(app, ticket) == 0
    assert len(list_ids(client, owner)) == 1
    assert client.web.get(ticket_url(ticket), headers=owner.headers).json["evidence"] == []


def test_writing_roles_can_write(client, app, owner):
    for role in ("billing", "developer", "admin"):
        set_role(app, owner, role)
        ticket = create(client, owner).json

        client.web.post_json(ticket_url(ticket, "/reply"), {"body": "More"},
                             headers=owner.headers, status=201)
        client.web.post_json(ticket_url(ticket, "/close"), {}, headers=owner.headers,
                             status=200)


# Notifications --------------------------------------------------------------------


@pytest.mark.shared_app(False)
def test_new_ticket_mails_support(client, app, owner):
    ticket = create(client, owner, title="Cannot rotate key", priority="urgent").json

    [message] = wait_for_mail(app, support_address(app), 1)
    assert ticket["id"] in message.subject
    assert "Cannot rotate key" in message.subject
    assert "urgent" in message.body
    assert f"partner_{owner.partner_id}" in message.body
    assert ticket["description"] in message.body


@pytest.mark.shared_app(False)
def test_partner_reply_mails_support_while_unassigned(client, app, owner):
    ticket = create(client, owner).json

    client.web.post_json(ticket_url(ticket, "/reply"), {"body": "Here is the trace."},
                         headers=owner.headers, status=201)

    messages = wait_for_mail(app, support_address(app), 2)
    [reply] = [message for message in messages if "Partner reply" in message.subject]
    assert ticket["id"] in reply.subject
    assert "Here is the trace." in reply.body
    assert owner.email in reply.body


@pytest.mark.shared_app(False)
def test_partner_reply_mails_assigned_admin(client, app, owner):
    ticket = create(client, owner).json
    wait_for_mail(app, support_address(app), 1)
    admin = create_admin(app, role="support")
    update_rows(app, sa.update(SupportTicket)
                .where(SupportTicket.id == parse_id("tkt", ticket["id"]))
                .values(assigned_to=parse_id("admin", admin["id"])))

    client.web.post_json(ticket_url(ticket, "/reply"), {"body": "Any update?"},
                         headers=owner.headers, status=201)

    [reply] = wait_for_mail(app, admin["email"], 1)
    assert "Any update?" in reply.body
    time.sleep(QUIET_SECONDS)
    assert len(app.registry["mailer"].messages_to(support_address(app))) == 1


def test_support_address_is_a_setting(app_factory):
    app = app_factory(**{"fkod.support.notification_address": "helpdesk@staff.fkod.example"})
    client = TestClient(app)
    member = register(client)

    create(client, member)

    [message] = wait_for_mail(app, "helpdesk@staff.fkod.example", 1)
    assert "New support ticket" in message.subject


@pytest.mark.shared_app(False)
def test_refused_reply_sends_nothing(client, app, owner):
    ticket = create(client, owner).json
    wait_for_mail(app, support_address(app), 1)
    set_status(app, ticket, "closed")

    client.web.post_json(ticket_url(ticket, "/reply"), {"body": "Wait"},
                         headers=owner.headers, status=409)

    time.sleep(QUIET_SECONDS)
    assert len(app.registry["mailer"].messages_to(support_address(app))) == 1


def live_member(client: TestClient) -> Member:
    member = register(client)
    verify_partner(client.app, f"partner_{member.partner_id}")
    return member


def subscribe(client: TestClient, member: Member, url: str, mode: str = "live") -> dict:
    body = {"url": url, "event_types": ["support.*"], "mode": mode, "retry_count": 0,
            "retry_delay": 0}
    return client.web.post_json("/api/partners/webhooks", body, headers=member.headers,
                                status=201).json


def received_events(receiver, count: int) -> list[dict]:
    return [json.loads(request.body) for request in receiver.wait_for(count, WAIT_SECONDS)]


def test_ticket_events_reach_live_endpoint(client, app, make_receiver):
    member = live_member(client)
    receiver = make_receiver()
    subscribe(client, member, receiver.url)

    ticket = create(client, member, priority="high").json
    client.web.post_json(ticket_url(ticket, "/reply"), {"body": "Another detail."},
                         headers=member.headers, status=201)
    client.web.post_json(ticket_url(ticket, "/close"), {}, headers=member.headers, status=200)

    events = {event["type"]: event for event in received_events(receiver, 3)}
    assert set(events) == set(SUPPORT_EVENTS)

    created = events["support.ticket_created"]["data"]
    assert created["id"] == ticket["id"]
    assert created["partner_id"] == f"partner_{member.partner_id}"
    assert created["priority"] == "high"
    assert created["status"] == "open"
    assert created["description"] == ticket["description"]

    replied = events["support.ticket_replied"]["data"]
    assert replied["id"] == ticket["id"]
    assert replied["message"]["body"] == "Another detail."
    assert replied["message"]["author_type"] == "partner"
    assert replied["message"]["author_id"] == member.user_id

    changed = events["support.ticket_status_changed"]["data"]
    assert changed["status"] == "closed"
    assert changed["previous_status"] == "open"


def test_ticket_events_match_catalog_schemas(client, app, make_receiver):
    jsonschema = pytest.importorskip("jsonschema")
    catalog = {item["name"]: item for item in client.web.get(EVENTS_PATH).json["data"]}
    member = live_member(client)
    receiver = make_receiver()
    subscribe(client, member, receiver.url)

    ticket = create(client, member).json
    set_status(app, ticket, "resolved")
    client.web.post_json(ticket_url(ticket, "/reply"), {"body": "Broken again."},
                         headers=member.headers, status=201)

    events = received_events(receiver, 3)
    assert sorted(event["type"] for event in events) == sorted(SUPPORT_EVENTS)
    for event in events:
        schema = catalog[event["type"]]["schema"]
        validator_class = jsonschema.validators.validator_for(schema)
        validator = validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)
        errors = [error.message for error in validator.iter_errors(event["data"])]
        assert errors == [], event["type"]
    [changed] = [event for event in events if event["type"] == "support.ticket_status_changed"]
    assert changed["data"]["previous_status"] == "resolved"
    assert changed["data"]["status"] == "open"


def test_ticket_events_skip_test_mode_and_other_partners(client, app, make_receiver):
    member = live_member(client)
    test_receiver = make_receiver()
    subscribe(client, member, test_receiver.url, mode="test")
    other = live_member(client)
    other_receiver = make_receiver()
    subscribe(client, other, other_receiver.url)
    own_receiver = make_receiver()
    subscribe(client, member, own_receiver.url)

    create(client, member)

    received_events(own_receiver, 1)
    time.sleep(QUIET_SECONDS)
    assert test_receiver.requests == []
    assert other_receiver.requests == []


def test_support_event_types_listed(client):
    names = {item["name"] for item in client.web.get(EVENTS_PATH).json["data"]}

    assert set(SUPPORT_EVENTS) <= names
