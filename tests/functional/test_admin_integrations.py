"""Integrations on the admin API: the review queue, approval, rejection and featuring."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from fkod.admin.testing import admin_with_headers
from fkod.core.audit import AuditEntry
from fkod.core.auth.models import Partner
from fkod.core.db import utcnow
from fkod.core.ids import parse_id
from fkod.core.testing import TestClient, auth_header, verify_partner
from fkod.core.webhooks.models import Event, WebhookEvent
from fkod.marketplace.models import Integration
from tests.envelope import assert_envelope

pytestmark = pytest.mark.shared_app

ADMIN_INTEGRATIONS = "/api/admin/integrations"
PARTNER_INTEGRATIONS = "/api/partners/integrations"
STATUSES = ("draft", "in_review", "published", "rejected", "unpublished")
ADMIN_ROLES = ("superadmin", "support", "finance", "readonly")
REVIEWERS = {"superadmin", "support"}


@dataclass
class Member:
    """A verified, active partner with its owner's login headers."""

    partner_id: int
    headers: dict


def update_rows(app, statement) -> None:
    with Session(app.registry["db.engine"]) as session, session.begin():
        session.execute(statement)


def register(client: TestClient) -> Member:
    registered = client.register_partner()
    member = Member(partner_id=parse_id("partner", registered["partner"]["id"]),
                    headers=auth_header(client.login(registered["user"]["email"])))
    verify_partner(client.app, f"partner_{member.partner_id}")
    update_rows(client.app, sa.update(Partner).where(Partner.id == member.partner_id)
                .values(status="active"))
    return member


def create(client: TestClient, member: Member, **fields) -> dict:
    body = {"name": "Course Sync", "category": "content", "description": "Syncs courses.",
            "support_email": "help@acme.example", **fields}
    return client.web.post_json(PARTNER_INTEGRATIONS, body, headers=member.headers,
                                status=201).json


def submitted(client: TestClient, member: Member, **fields) -> dict:
    integration = create(client, member, **fields)
    return client.web.post_json(f"{PARTNER_INTEGRATIONS}/{integration['id']}/submit", {},
                                headers=member.headers, status=200).json


def url(integration: dict | str, suffix: str = "") -> str:
    integration_id = integration if isinstance(integration, str) else integration["id"]
    return f"{ADMIN_INTEGRATIONS}/{integration_id}{suffix}"


def set_row(app, integration: dict, **values) -> None:
    update_rows(app, sa.update(Integration)
                .where(Integration.id == parse_id("int", integration["id"])).values(**values))


def stored(app, integration: dict) -> Integration:
    with Session(app.registry["db.engine"]) as session:
        return session.get(Integration, parse_id("int", integration["id"]))


def audit_entries(app, integration: dict) -> list[AuditEntry]:
    with Session(app.registry["db.engine"]) as session:
        return list(session.scalars(sa.select(AuditEntry)
                                    .where(AuditEntry.target_id == integration["id"])
                                    .order_by(AuditEntry.id)))


def event_types_about(app, integration: dict) -> list[str]:
    with Session(app.registry["db.engine"]) as session:
        events = session.scalars(sa.select(Event).where(Event.type.like("integration.%"))
                                 .order_by(Event.id))
        return [event.type for event in events
                if event.payload["data"]["id"] == integration["id"]]


def approve(client, headers: dict, integration: dict, status: int = 200):
    return client.web.post_json(url(integration, "/review"), {"decision": "approve"},
                                headers=headers, status=status)


@pytest.fixture
def member(client) -> Member:
    return register(client)


@pytest.fixture
def support(client) -> dict:
    """The Authorization header of a support admin."""
    return admin_with_headers(client, role="support")[1]


# Listing ------------------------------------------------------------------------


def list_ids(client, headers: dict, query: str = "") -> list[str]:
    body = client.web.get(f"{ADMIN_INTEGRATIONS}{query}", headers=headers).json
    return [item["id"] for item in body["data"]]


def test_list_puts_review_queue_first(client, app, member, support):
    other = register(client)
    draft = create(client, member, name="Draft one")
    late = submitted(client, member, name="Submitted late")
    early = submitted(client, other, name="Submitted early")
    published = create(client, other, name="Live one")
    set_row(app, early, submitted_at=utcnow().replace(year=2020))
    set_row(app, published, status="published", submitted_at=utcnow().replace(year=2019))

    # In review first by submission time, then the rest by submission time, never first.
    assert list_ids(client, support) == [early["id"], late["id"], draft["id"], published["id"]]
    assert list_ids(client, support, "?status=in_review") == [early["id"], late["id"]]
    assert list_ids(client, support, f"?partner_id=partner_{other.partner_id}") == [
        early["id"], published["id"]]
    assert list_ids(client, support, "?sort=-created_at") == [
        published["id"], early["id"], late["id"], draft["id"]]
    assert list_ids(client, support, "?sort=name") == [
        draft["id"], published["id"], early["id"], late["id"]]
    assert list_ids(client, support, "?sort=-submitted_at")[:2] == [late["id"], early["id"]]

    item = client.web.get(ADMIN_INTEGRATIONS, headers=support).json["data"][0]
    assert item["partner_id"] == f"partner_{other.partner_id}"
    assert item["status"] == "in_review"
    assert item["submitted_at"].startswith("2020-")


@pytest.mark.shared_app(False)
def test_list_pages_through_queue(client, app, member, support):
    ids = [submitted(client, member, name=f"Queued {number}")["id"] for number in range(3)]
    ids += [create(client, member, name=f"Draft {number}")["id"] for number in range(2)]
    for sort in ("review_queue", "submitted_at", "-submitted_at", "name", "-updated_at"):
        seen, cursor = [], None
        while True:
            query = f"?limit=2&sort={sort}" + (f"&cursor={cursor}" if cursor else "")
            body = client.web.get(f"{ADMIN_INTEGRATIONS}{query}", headers=support).json
            seen.extend(item["id"] for item in body["data"])
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert seen == list_ids(client, support, f"?sort={sort}&limit=100"), sort
        assert sorted(seen) == sorted(ids), sort
    assert list_ids(client, support)[:3] == ids[:3]


def test_list_search_is_literal(client, app, member, support):
    percent = create(client, member, name="100% Sync")
    underscore = create(client, member, name="snake_case helper")
    plain = create(client, member, name="Snakecase Plain")

    assert list_ids(client, support, "?q=100%25") == [percent["id"]]
    assert list_ids(client, support, "?q=%25") == [percent["id"]]
    assert list_ids(client, support, "?q=e_c") == [underscore["id"]]
    assert set(list_ids(client, support, "?q=SNAKE")) == {underscore["id"], plain["id"]}
    assert list_ids(client, support, "?q=nothing") == []


BAD_QUERIES = [
    ("limit=0", "limit"), ("limit=-5", "limit"), ("limit=101", "limit"),
    ("limit=1000000", "limit"), ("sort=rating", "sort"), ("sort=-review_queue", "sort"),
    ("status=archived", "status"), ("partner_id=42", "partner_id"),
    ("partner_id=user_1", "partner_id"), ("q=", "q"), ("q=" + "x" * 201, "q"),
    ("cursor=%%%", "cursor"), ("featured=true", "featured"),
]


def test_list_rejects_bad_queries(client, support):
    for query, name in BAD_QUERIES:
        response = client.web.get(f"{ADMIN_INTEGRATIONS}?{query}", headers=support, status="*")
        body = assert_envelope(response, 400, "validation_failed")
        assert body["errors"][0]["name"] == name, query


def test_get_integration_with_versions(client, app, member, support):
    integration = submitted(client, member, release_notes="First.")

    body = client.web.get(url(integration), headers=support).json

    assert body["id"] == integration["id"]
    assert body["status"] == "in_review"
    assert body["versions"] == integration["versions"]
    assert body["release_notes"] == "First."
    for unknown in ("int_424242", "int_x", "42"):
        response = client.web.get(url(unknown), headers=support, status=404)
        assert_envelope(response, 404, "not_found")


# Credentials and roles ------------------------------------------------------------


def test_admin_roles(client, app, member):
    for role in ADMIN_ROLES:
        _admin, headers = admin_with_headers(client, role=role)
        integration = submitted(client, member, name=f"For {role}")

        client.web.get(ADMIN_INTEGRATIONS, headers=headers, status=200)
        client.web.get(url(integration), headers=headers, status=200)
        review = approve(client, headers, integration, status="*")
        feature = client.web.put_json(url(integration, "/featured"), {"featured": True},
                                      headers=headers, expect_errors=True)
        if role in REVIEWERS:
            assert review.status_int == 200, role
            assert feature.status_int == 200, role
            assert stored(app, integration).featured_rank is not None
        else:
            assert_envelope(review, 403, "missing_permission")
            assert_envelope(feature, 403, "missing_permission")
            assert stored(app, integration).status == "in_review"
            assert stored(app, integration).featured_rank is None


def test_partner_token_rejected_on_admin_api(client, app, member, support):
    integration = submitted(client, member)

    response = client.web.get(ADMIN_INTEGRATIONS, headers=member.headers, status=401)
    assert_envelope(response, 401)
    response = client.web.post_json(url(integration, "/review"), {"decision": "approve"},
                                    headers=member.headers, status=401)
    assert_envelope(response, 401)
    response = client.web.get(PARTNER_INTEGRATIONS, headers=support, status=401)
    assert_envelope(response, 401)
    client.web.get(ADMIN_INTEGRATIONS, status=401)
    assert stored(app, integration).status == "in_review"


# Review -------------------------------------------------------------------------


def test_approve_publishes(client, app, member, support):
    integration = submitted(client, member)

    body = approve(client, support, integration).json

    assert body["status"] == "published"
    assert body["published_at"].endswith("Z")
    assert body["rejection_reason"] is None
    assert body["versions"][0]["status"] == "published"
    partner_view = client.web.get(f"{PARTNER_INTEGRATIONS}/{integration['id']}",
                                  headers=member.headers).json
    assert partner_view == body

    assert event_types_about(app, integration) == ["integration.created",
                                                   "integration.published"]
    entries = audit_entries(app, integration)
    assert [entry.action for entry in entries] == [
        "integration.created", "integration.submitted", "integration.approved"]
    assert entries[-1].actor_type == "admin"
    assert entries[-1].partner_id == member.partner_id


def test_reject_keeps_reason(client, app, member, support):
    integration = submitted(client, member)

    body = client.web.post_json(url(integration, "/review"),
                                {"decision": "reject", "reason": "  Logo is missing.  "},
                                headers=support).json

    assert body["status"] == "rejected"
    assert body["rejection_reason"] == "Logo is missing."
    assert body["published_at"] is None
    assert body["versions"][0]["status"] == "rejected"
    assert event_types_about(app, integration) == ["integration.created"]
    entry = audit_entries(app, integration)[-1]
    assert entry.action == "integration.rejected"
    assert entry.details["reason"] == "Logo is missing."

    resubmitted = client.web.post_json(f"{PARTNER_INTEGRATIONS}/{integration['id']}/submit", {},
                                       headers=member.headers).json
    assert resubmitted["status"] == "in_review"
    assert resubmitted["rejection_reason"] is None


def test_review_rejects_bad_bodies(client, app, member, support):
    integration = submitted(client, member)
    for body, name in (({}, "decision"), ({"decision": "maybe"}, "decision"),
                       ({"decision": "reject"}, "reason"),
                       ({"decision": "reject", "reason": "   "}, "reason"),
                       ({"decision": "reject", "reason": "r" * 1001}, "reason"),
                       ({"decision": True}, "decision"),
                       ({"decision": "approve", "status": "published"}, "status")):
        response = client.web.post_json(url(integration, "/review"), body, headers=support,
                                        status=400)
        errors = assert_envelope(response, 400, "validation_failed")["errors"]
        assert errors[0]["name"] == name, body
    assert stored(app, integration).status == "in_review"


def test_review_only_from_in_review(client, app, member, support):
    for decision in ("approve", "reject"):
        for status in STATUSES:
            if status == "in_review":
                continue
            integration = create(client, member)
            set_row(app, integration, status=status)
            response = client.web.post_json(url(integration, "/review"),
                                            {"decision": decision, "reason": "No."},
                                            headers=support, status=409)
            body = assert_envelope(response, 409, "invalid_transition")
            assert status in body["message"]
            assert decision in body["message"]
            assert stored(app, integration).status == status
    response = client.web.post_json(url("int_987654", "/review"), {"decision": "approve"},
                                    headers=support, status=404)
    assert_envelope(response, 404, "not_found")


def test_full_lifecycle(client, app, member, support, make_receiver):
    receiver = make_receiver()
    webhook = client.web.post_json("/api/partners/webhooks", {
        "url": receiver.url, "event_types": ["integration.published"], "mode": "live",
        "retry_count": 0, "retry_delay": 0}, headers=member.headers, status=201).json
    integration = submitted(client, member)
    partner_url = f"{PARTNER_INTEGRATIONS}/{integration['id']}"

    client.web.post_json(url(integration, "/review"), {"decision": "reject", "reason": "Docs."},
                         headers=support)
    client.web.put_json(partner_url, {"documentation_url": "https://acme.example/docs"},
                        headers=member.headers)
    client.web.post_json(f"{partner_url}/submit", {}, headers=member.headers, status=200)
    approve(client, support, integration)
    client.web.post_json(f"{partner_url}/unpublish", {}, headers=member.headers, status=200)
    client.web.put_json(partner_url, {"version": "1.1.0", "scopes": ["courses:read"]},
                        headers=member.headers)
    client.web.post_json(f"{partner_url}/submit", {}, headers=member.headers, status=200)
    final = approve(client, support, integration).json

    assert final["status"] == "published"
    assert [(item["version"], item["status"]) for item in final["versions"]] == [
        ("1.1.0", "published"), ("1.0.0", "published")]
    assert [entry.action for entry in audit_entries(app, integration)] == [
        "integration.created", "integration.submitted", "integration.rejected",
        "integration.updated", "integration.submitted", "integration.approved",
        "integration.unpublished", "integration.updated", "integration.submitted",
        "integration.approved"]
    with Session(app.registry["db.engine"]) as session:
        deliveries = session.scalars(sa.select(WebhookEvent).where(
            WebhookEvent.webhook_id == parse_id("whk", webhook["id"]))).all()
        assert [delivery.event_type for delivery in deliveries] == ["integration.published"] * 2
    receiver.wait_for(2, 30)


# Featuring ------------------------------------------------------------------------


def feature(client, headers: dict, integration: dict, body: dict, status: int = 200):
    return client.web.put_json(url(integration, "/featured"), body, headers=headers,
                               status=status)


def test_feature_and_unfeature(client, app, member, support):
    first = submitted(client, member, name="First")
    second = submitted(client, member, name="Second")
    approve(client, support, first)
    approve(client, support, second)

    assert feature(client, support, first, {"featured": True, "rank": 5}).json[
        "featured_rank"] == 5
    assert feature(client, support, second, {"featured": True}).json["featured_rank"] == 6
    assert feature(client, support, second, {"featured": True}).json["featured_rank"] == 6
    assert feature(client, support, first, {"featured": True, "rank": 1}).json[
        "featured_rank"] == 1
    body = feature(client, support, first, {"featured": False}).json
    assert body["featured_rank"] is None
    assert body["status"] == "published"

    entries = [entry for entry in audit_entries(app, first)
               if entry.action == "integration.featured"]
    assert [(entry.details["featured"], entry.details["rank"]) for entry in entries] == [
        (True, 5), (True, 1), (False, None)]


def test_feature_needs_published(client, app, member, support):
    for status in ("draft", "in_review", "rejected", "unpublished"):
        integration = create(client, member)
        set_row(app, integration, status=status)
        response = feature(client, support, integration, {"featured": True}, status=409)
        assert_envelope(response, 409, "integration_not_published")
        assert stored(app, integration).featured_rank is None


def test_feature_rejects_bad_bodies(client, app, member, support):
    integration = submitted(client, member)
    approve(client, support, integration)
    for body, name in (({}, "featured"), ({"featured": "yes"}, "featured"),
                       ({"featured": 1}, "featured"), ({"featured": True, "rank": 0}, "rank"),
                       ({"featured": True, "rank": -3}, "rank"),
                       ({"featured": True, "rank": 10_001}, "rank"),
                       ({"featured": True, "rank": "2"}, "rank"),
                       ({"featured": True, "rank": 1.5}, "rank"),
                       ({"featured": False, "rank": 2}, "rank"),
                       ({"featured": True, "position": 2}, "position")):
        response = feature(client, support, integration, body, status=400)
        errors = assert_envelope(response, 400, "validation_failed")["errors"]
        assert errors[0]["name"] == name, body
    assert stored(app, integration).featured_rank is None
