"""Integrations on the partner API: create, list, read, edit, version, submit, unpublish, delete.

Admin review is made to the rows directly here, so these tests cover the
partner's part of each status change. The admin API has its own tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import jsonschema
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from fkod.core.audit import AuditEntry
from fkod.core.auth.models import Partner, PartnerMember, User
from fkod.core.ids import parse_id
from fkod.core.testing import TestClient, auth_header, verify_partner
from fkod.core.webhooks.models import Event, WebhookEvent
from fkod.marketplace.models import (
    Integration,
    IntegrationInstall,
    IntegrationReview,
    IntegrationVersion,
)
from tests.envelope import assert_envelope

pytestmark = pytest.mark.shared_app

INTEGRATIONS = "/api/partners/integrations"
EVENTS_PATH = "/api/webhooks/available-events"
STATUSES = ("draft", "in_review", "published", "rejected", "unpublished")
ROLES = ("owner", "admin", "developer", "billing", "read_only")
WRITERS = {"owner", "admin", "developer"}

# The partner's status changes, written out independently of the service's table.
PARTNER_MOVES = {
    "submit": {"draft": "in_review", "rejected": "in_review", "unpublished": "in_review"},
    "unpublish": {"published": "unpublished"},
}


@dataclass
class Member:
    """A partner with its owner's email and login headers."""

    partner_id: int
    email: str
    user_id: str
    headers: dict


def update_rows(app, statement) -> None:
    with Session(app.registry["db.engine"]) as session, session.begin():
        session.execute(statement)


def register(client: TestClient, *, verified: bool = True) -> Member:
    """Register a partner; a verified one is also active, as an admin's approval leaves it."""
    registered = client.register_partner()
    member = Member(partner_id=parse_id("partner", registered["partner"]["id"]),
                    email=registered["user"]["email"], user_id=registered["user"]["id"],
                    headers=auth_header(client.login(registered["user"]["email"])))
    if verified:
        verify_partner(client.app, f"partner_{member.partner_id}")
        update_rows(client.app, sa.update(Partner).where(Partner.id == member.partner_id)
                    .values(status="active"))
    return member


@pytest.fixture
def owner(client) -> Member:
    return register(client)


def body_of(**fields) -> dict:
    return {"name": "Course Sync", "category": "content",
            "description": "Keeps the catalog in step with F-KOD courses.",
            "support_email": "help@acme.example", **fields}


def create(client: TestClient, member: Member, status: int = 201, **fields):
    return client.web.post_json(INTEGRATIONS, body_of(**fields), headers=member.headers,
                                status=status)


def url(integration: dict | str, suffix: str = "") -> str:
    integration_id = integration if isinstance(integration, str) else integration["id"]
    return f"{INTEGRATIONS}/{integration_id}{suffix}"


def set_status(app, integration: dict, status: str, **values) -> None:
    update_rows(app, sa.update(Integration)
                .where(Integration.id == parse_id("int", integration["id"]))
                .values(status=status, **values))


def set_role(app, member: Member, role: str) -> None:
    update_rows(app, sa.update(PartnerMember)
                .where(PartnerMember.partner_id == member.partner_id).values(role=role))


def stored(app, integration: dict) -> Integration | None:
    with Session(app.registry["db.engine"]) as session:
        return session.get(Integration, parse_id("int", integration["id"]))


def count_rows(app, model, **where) -> int:
    with Session(app.registry["db.engine"]) as session:
        select = sa.select(sa.func.count()).select_from(model)
        for name, value in where.items():
            select = select.where(getattr(model, name) == value)
        return session.scalar(select)


def audit_actions(app, integration: dict) -> list[str]:
    with Session(app.registry["db.engine"]) as session:
        return list(session.scalars(sa.select(AuditEntry.action)
                                    .where(AuditEntry.target_id == integration["id"])
                                    .order_by(AuditEntry.id)))


def events_about(app, integration: dict) -> list[dict]:
    """Return the payloads of events whose data is ``integration``, oldest first."""
    with Session(app.registry["db.engine"]) as session:
        payloads = session.scalars(sa.select(Event.payload)
                                   .where(Event.type.like("integration.%"))
                                   .order_by(Event.id))
        return [payload for payload in payloads if payload["data"]["id"] == integration["id"]]


# Creating -----------------------------------------------------------------------


def test_create_draft_defaults(client, app, owner):
    body = create(client, owner, name="Acme Course Sync").json

    assert body["id"].startswith("int_")
    assert body["partner_id"] == f"partner_{owner.partner_id}"
    assert body["name"] == "Acme Course Sync"
    assert body["slug"] == "acme-course-sync"
    assert body["status"] == "draft"
    assert body["version"] == "1.0.0"
    assert body["category"] == "content"
    assert body["scopes"] == []
    assert body["event_types"] == []
    assert body["config_schema"] is None
    assert body["pricing_model"] == "free"
    assert body["price_cents"] is None
    assert body["price"] is None
    assert body["currency"] == "USD"
    assert body["rejection_reason"] is None
    assert body["submitted_at"] is None
    assert body["published_at"] is None
    assert body["featured_rank"] is None
    assert body["install_count"] == 0
    assert body["rating"] is None
    assert body["review_count"] == 0
    assert body["managed_by_plugin"] is False
    assert body["plugin_name"] is None
    assert body["release_notes"] is None
    assert body["created_at"].endswith("Z")
    assert [version["version"] for version in body["versions"]] == ["1.0.0"]
    assert body["versions"][0]["status"] == "draft"


def test_create_with_every_field(client, app, owner):
    config_schema = {
        "type": "object",
        "required": ["channel"],
        "properties": {"channel": {"$ref": "#/$defs/channel"}},
        "$defs": {"channel": {"type": "string", "minLength": 1}},
    }
    body = create(client, owner, slug="sync-pro", version="2.1.0-beta.1",
                  release_notes="First public beta.", logo_url="https://cdn.acme.example/l.png",
                  documentation_url="https://acme.example/docs",
                  support_url="https://acme.example/help", scopes=["courses:read", "users:read"],
                  event_types=["course.*", "integration.created"], config_schema=config_schema,
                  pricing_model="paid", price_cents=1999).json

    assert body["slug"] == "sync-pro"
    assert body["version"] == "2.1.0-beta.1"
    assert body["release_notes"] == "First public beta."
    assert body["versions"][0]["release_notes"] == "First public beta."
    assert body["logo_url"] == "https://cdn.acme.example/l.png"
    assert body["documentation_url"] == "https://acme.example/docs"
    assert body["support_url"] == "https://acme.example/help"
    assert body["support_email"] == "help@acme.example"
    assert body["scopes"] == ["courses:read", "users:read"]
    assert body["event_types"] == ["course.*", "integration.created"]
    assert body["config_schema"] == config_schema
    assert body["pricing_model"] == "paid"
    assert body["price_cents"] == 1999
    assert body["price"] == "19.99"
    assert client.web.get(url(body), headers=owner.headers).json == body


@pytest.mark.shared_app(False)
def test_create_generates_unique_slugs(client, app, owner):
    first = create(client, owner, name="Team Chat!").json
    second = create(client, owner, name="Team  Chat").json
    third = create(client, owner, name="Ünïcode ☃").json

    assert first["slug"] == "team-chat"
    assert second["slug"] == "team-chat-2"
    assert third["slug"] == "unicode"

    taken = create(client, owner, status=409, slug="team-chat")
    body = assert_envelope(taken, 409, "slug_taken")
    assert body["errors"][0]["name"] == "slug"
    response = client.web.put_json(url(third), {"slug": "team-chat-2"}, headers=owner.headers,
                                   status=409)
    assert_envelope(response, 409, "slug_taken")
    assert count_rows(app, Integration) == 3


MISSING = object()

# (field, value, error code); each is sent on an otherwise valid creation body.
BAD_FIELDS = [
    ("name", MISSING, "validation_failed"),
    ("category", MISSING, "validation_failed"),
    ("name", "", "validation_failed"),
    ("name", "   ", "validation_failed"),
    ("name", "n" * 256, "validation_failed"),
    ("name", "two\nlines", "validation_failed"),
    ("name", 5, "validation_failed"),
    ("name", None, "validation_failed"),
    ("description", "d" * 5001, "validation_failed"),
    ("description", ["text"], "validation_failed"),
    ("category", "sales", "validation_failed"),
    ("category", None, "validation_failed"),
    ("slug", "Bad Slug", "validation_failed"),
    ("slug", "-edge", "validation_failed"),
    ("slug", "s" * 101, "validation_failed"),
    ("version", "one", "validation_failed"),
    ("version", "1.2.3.4", "validation_failed"),
    ("version", 1, "validation_failed"),
    ("release_notes", "r" * 10_001, "validation_failed"),
    ("logo_url", "http://acme.example/logo.png", "validation_failed"),
    ("documentation_url", "javascript:alert(1)", "validation_failed"),
    ("support_url", "ftp://acme.example", "validation_failed"),
    ("support_url", "https://" + "a" * 500 + ".example", "validation_failed"),
    ("support_email", "not an address", "validation_failed"),
    ("scopes", "courses:read", "validation_failed"),
    ("scopes", ["nope:read"], "invalid_scope"),
    ("scopes", ["admin:write"], "invalid_scope"),
    ("scopes", [f"s{number}:read" for number in range(51)], "validation_failed"),
    ("scopes", [7], "validation_failed"),
    ("event_types", ["nothing.matches"], "invalid_event_type"),
    ("event_types", ["Not A Pattern"], "invalid_event_type"),
    ("event_types", ["course.*", "zzz.*"], "invalid_event_type"),
    ("event_types", "course.*", "validation_failed"),
    ("config_schema", {"type": "string"}, "validation_failed"),
    ("config_schema", {"properties": {}}, "validation_failed"),
    ("config_schema", {"type": "object", "properties": {"a": {"type": "nonsense"}}},
     "validation_failed"),
    ("config_schema", {"type": "object", "minProperties": -1}, "validation_failed"),
    ("config_schema", {"type": "object", "properties": {"a": {
        "$ref": "https://schemas.example/remote.json"}}}, "validation_failed"),
    ("config_schema", {"type": "object", "description": "x" * 17_000}, "validation_failed"),
    ("config_schema", "{}", "validation_failed"),
    ("config_schema", [], "validation_failed"),
    ("pricing_model", "subscription", "validation_failed"),
    ("pricing_model", "paid", "validation_failed"),
    ("price_cents", 500, "validation_failed"),
    ("price_cents", "500", "validation_failed"),
    ("status", "published", "validation_failed"),
    ("partner_id", "partner_1", "validation_failed"),
    ("featured_rank", 1, "validation_failed"),
    ("plugin_name", "acme", "validation_failed"),
    ("install_count", 10, "validation_failed"),
]


def with_field(body: dict, field: str, value) -> dict:
    changed = dict(body)
    if value is MISSING:
        del changed[field]
    else:
        changed[field] = value
    return changed


@pytest.mark.shared_app(False)
def test_create_rejects_bad_fields(client, app, owner):
    for field, value, code in BAD_FIELDS:
        response = client.web.post_json(INTEGRATIONS, with_field(body_of(), field, value),
                                        headers=owner.headers, status="*")
        body = assert_envelope(response, 400, code)
        names = {error["name"] for error in body["errors"]}
        expected = "price_cents" if field == "pricing_model" and value == "paid" else field
        assert any(name.split(".")[0] == expected for name in names), (field, body)

    assert count_rows(app, Integration) == 0
    assert count_rows(app, Event, type="integration.created") == 0


def test_create_rejects_price_out_of_range(client, app, owner):
    for price in (0, -100, 10_000_001, 1.5, True, None):
        response = create(client, owner, status="*", pricing_model="paid", price_cents=price)
        body = assert_envelope(response, 400)
        assert body["errors"][0]["name"] == "price_cents", price
    assert create(client, owner, pricing_model="paid", price_cents=10_000_000).json[
        "price"] == "100000.00"


def test_create_rejects_non_json_bodies(client, owner):
    response = client.web.post(INTEGRATIONS, "name=x", headers=owner.headers,
                               content_type="application/x-www-form-urlencoded", status=415)
    assert_envelope(response, 415, "unsupported_media_type")
    response = client.web.post(INTEGRATIONS, "{not json", headers=owner.headers,
                               content_type="application/json", status=400)
    assert_envelope(response, 400, "invalid_json")


def test_create_needs_token(client):
    response = client.web.post_json(INTEGRATIONS, body_of(), status=401)
    assert_envelope(response, 401)
    response = client.web.get(INTEGRATIONS, status=401)
    assert_envelope(response, 401)


# Listing ------------------------------------------------------------------------


def list_ids(client, member: Member, query: str = "") -> list[str]:
    body = client.web.get(f"{INTEGRATIONS}{query}", headers=member.headers).json
    return [item["id"] for item in body["data"]]


def test_list_filters_and_sorts(client, app, owner):
    bravo = create(client, owner, name="Bravo").json
    alpha = create(client, owner, name="Alpha").json
    charlie = create(client, owner, name="Charlie").json
    set_status(app, alpha, "published")

    assert list_ids(client, owner) == [charlie["id"], alpha["id"], bravo["id"]]
    assert list_ids(client, owner, "?sort=created_at") == [bravo["id"], alpha["id"],
                                                          charlie["id"]]
    assert list_ids(client, owner, "?sort=name") == [alpha["id"], bravo["id"], charlie["id"]]
    assert list_ids(client, owner, "?sort=-name") == [charlie["id"], bravo["id"], alpha["id"]]
    assert list_ids(client, owner, "?status=published") == [alpha["id"]]
    assert list_ids(client, owner, "?status=draft&sort=name") == [bravo["id"], charlie["id"]]
    assert list_ids(client, owner, "?status=rejected") == []

    client.web.put_json(url(bravo), {"description": "Touched last."}, headers=owner.headers)
    assert list_ids(client, owner, "?sort=-updated_at")[0] == bravo["id"]
    item = client.web.get(INTEGRATIONS, headers=owner.headers).json["data"][0]
    assert "versions" not in item
    assert item["id"] == charlie["id"]


def test_list_pages_through_every_sort(client, app, owner):
    created = [create(client, owner, name=name).json["id"]
               for name in ("delta", "alpha", "charlie", "bravo", "echo")]
    for sort in ("-created_at", "created_at", "name", "-name", "updated_at", "-updated_at"):
        seen, cursor = [], None
        while True:
            query = f"?limit=2&sort={sort}" + (f"&cursor={cursor}" if cursor else "")
            body = client.web.get(f"{INTEGRATIONS}{query}", headers=owner.headers).json
            assert len(body["data"]) <= 2
            seen.extend(item["id"] for item in body["data"])
            assert body["has_more"] is (body["next_cursor"] is not None)
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert sorted(seen) == sorted(created), sort
        assert len(seen) == len(set(seen)), sort
        assert seen == list_ids(client, owner, f"?sort={sort}&limit=100"), sort


BAD_QUERIES = [
    ("limit=0", "limit"), ("limit=-1", "limit"), ("limit=101", "limit"),
    ("limit=99999999999", "limit"), ("limit=ten", "limit"), ("limit=1.5", "limit"),
    ("sort=rating", "sort"), ("sort=--name", "sort"), ("sort=", "sort"),
    ("status=live", "status"), ("cursor=garbage", "cursor"), ("owner=me", "owner"),
    ("limit=1&limit=2", "limit"),
]


def test_list_rejects_bad_queries(client, owner):
    for query, name in BAD_QUERIES:
        response = client.web.get(f"{INTEGRATIONS}?{query}", headers=owner.headers, status="*")
        body = assert_envelope(response, 400, "validation_failed")
        assert body["errors"][0]["name"] == name, query
        assert body["errors"][0]["location"] == "querystring"


def test_list_rejects_cursor_from_other_list(client, app, owner):
    other = register(client)
    foreign = create(client, other).json
    create(client, owner)
    create(client, owner)
    create(client, other)
    # A cursor naming another partner's integration, on a sort that looks its values up.
    cursor = client.web.get(f"{INTEGRATIONS}?limit=1&sort=name",
                            headers=other.headers).json["next_cursor"]
    assert cursor is not None
    response = client.web.get(f"{INTEGRATIONS}?sort=name&cursor={cursor}",
                              headers=owner.headers, status=400)
    assert_envelope(response, 400, "validation_failed")
    assert foreign["id"] not in list_ids(client, owner)


# Roles --------------------------------------------------------------------------


def call(client, method: str, path: str, body, headers: dict):
    """Send ``body`` as JSON, or no body when it is None; return the response of any status."""
    if body is None:
        send = getattr(client.web, method.lower())
        return send(path, headers=headers, expect_errors=True)
    send = getattr(client.web, f"{method.lower()}_json")
    return send(path, body, headers=headers, expect_errors=True)


def test_role_matrix(client, app, owner):
    """Every role reads; only owner, admin and developer write."""
    for role in ROLES:
        set_role(app, owner, role)
        allowed = role in WRITERS
        set_role(app, owner, "owner")
        draft = create(client, owner, name=f"{role} draft").json
        published = create(client, owner, name=f"{role} published").json
        set_status(app, published, "published")
        doomed = create(client, owner, name=f"{role} doomed").json
        set_role(app, owner, role)

        for path in (INTEGRATIONS, url(draft), url(draft, "/versions")):
            assert client.web.get(path, headers=owner.headers, status="*").status_int == 200

        calls = [
            ("POST", INTEGRATIONS, body_of(name=f"{role} new"), 201),
            ("PUT", url(draft), {"description": "Changed."}, 200),
            ("POST", url(draft, "/submit"), {}, 200),
            ("POST", url(published, "/unpublish"), {}, 200),
            ("DELETE", url(doomed), None, 204),
        ]
        for method, path, body, success in calls:
            response = call(client, method, path, body, owner.headers)
            if allowed:
                assert response.status_int == success, (role, method, path, response.body)
            else:
                assert_envelope(response, 403, "missing_permission")

        set_role(app, owner, "owner")
        expected = {draft["id"]: "in_review" if allowed else "draft",
                    published["id"]: "unpublished" if allowed else "published"}
        for integration_id, status in expected.items():
            assert stored(app, {"id": integration_id}).status == status, role
        assert (stored(app, doomed) is None) is allowed, role
        assert (stored(app, draft).description == "Changed.") is allowed, role


# Cross-partner access and unknown ids -----------------------------------------------


def every_call(integration: dict):
    return [
        ("GET", url(integration), None),
        ("GET", url(integration, "/versions"), None),
        ("PUT", url(integration), {"name": "Taken over"}),
        ("DELETE", url(integration), None),
        ("POST", url(integration, "/submit"), {}),
        ("POST", url(integration, "/unpublish"), {}),
    ]




def test_other_partners_integration_is_404(client, app, owner):
    other = register(client)
    foreign = create(client, other, name="Theirs").json
    published = create(client, other, name="Theirs published").json
    set_status(app, published, "published")

    for integration in (foreign, published):
        for method, path, body in every_call(integration):
            response = call(client, method, path, body, owner.headers)
            assert_envelope(response, 404, "not_found")
    for unknown in ("int_999999", "int_abc", "int_99999999999", "123", "int_"):
        for method, path, body in every_call(unknown):
            response = call(client, method, path, body, owner.headers)
            assert_envelope(response, 404, "not_found")

    assert stored(app, foreign).name == "Theirs"
    assert stored(app, foreign).status == "draft"
    assert stored(app, published).status == "published"
    assert list_ids(client, owner) == []


def test_plugin_integration_is_read_only(client, app, owner):
    integration = create(client, owner).json
    set_status(app, integration, "published", plugin_name="acme_sync")

    body = client.web.get(url(integration), headers=owner.headers).json
    assert body["managed_by_plugin"] is True
    assert body["plugin_name"] == "acme_sync"
    for method, path, payload in every_call(integration)[2:]:
        response = call(client, method, path, payload, owner.headers)
        assert_envelope(response, 409, "managed_by_plugin")
    assert stored(app, integration).status == "published"
    assert stored(app, integration).name == "Course Sync"


# Status changes -------------------------------------------------------------------


def test_partner_transitions(client, app, owner):
    for action, moves in PARTNER_MOVES.items():
        for status in STATUSES:
            integration = create(client, owner).json
            set_status(app, integration, status)
            response = client.web.post_json(url(integration, f"/{action}"), {},
                                            headers=owner.headers,
                                       expect_errors=True)
            if status in moves:
                assert response.status_int == 200, (action, status, response.body)
                assert response.json["status"] == moves[status]
                assert stored(app, integration).status == moves[status]
            else:
                body = assert_envelope(response, 409, "invalid_transition")
                assert status in body["message"], (action, status)
                assert action in body["message"], (action, status)
                assert stored(app, integration).status == status


def test_submit_sets_review_fields(client, app, owner):
    integration = create(client, owner).json
    set_status(app, integration, "rejected", rejection_reason="Logo is blurry.")

    body = client.web.post_json(url(integration, "/submit"), {}, headers=owner.headers).json

    assert body["status"] == "in_review"
    assert body["rejection_reason"] is None
    assert body["submitted_at"].endswith("Z")
    assert body["versions"][0]["status"] == "in_review"
    assert audit_actions(app, integration) == ["integration.created", "integration.submitted"]


def test_submit_needs_verified_active_partner(client, app):
    member = register(client, verified=False)
    integration = create(client, member).json

    response = client.web.post_json(url(integration, "/submit"), {},
                                    headers=member.headers, status=403)
    assert_envelope(response, 403, "partner_not_verified")
    verify_partner(app, f"partner_{member.partner_id}")
    response = client.web.post_json(url(integration, "/submit"), {},
                                    headers=member.headers, status=403)
    assert_envelope(response, 403, "partner_not_verified")
    assert stored(app, integration).status == "draft"

    update_rows(app, sa.update(Partner).where(Partner.id == member.partner_id)
                .values(status="active"))
    client.web.post_json(url(integration, "/submit"), {}, headers=member.headers, status=200)


def test_submit_needs_description_and_support(client, app, owner):
    integration = create(client, owner, description=None, support_email=None).json

    response = client.web.post_json(url(integration, "/submit"), {},
                                    headers=owner.headers, status=409)
    body = assert_envelope(response, 409, "integration_incomplete")
    assert {error["name"] for error in body["errors"]} == {"description", "support_email"}
    assert stored(app, integration).status == "draft"

    client.web.put_json(url(integration), {"description": "Syncs courses.",
                                           "support_url": "https://acme.example/help"},
                        headers=owner.headers)
    client.web.post_json(url(integration, "/submit"), {}, headers=owner.headers, status=200)


def test_unpublish_clears_featured_rank(client, app, owner):
    integration = create(client, owner).json
    set_status(app, integration, "published", featured_rank=3)

    body = client.web.post_json(url(integration, "/unpublish"), {}, headers=owner.headers).json

    assert body["status"] == "unpublished"
    assert body["featured_rank"] is None
    assert "integration.unpublished" in audit_actions(app, integration)


def test_actions_take_no_body(client, owner):
    integration = create(client, owner).json
    response = client.web.post_json(url(integration, "/submit"), {"status": "published"},
                                    headers=owner.headers, status=400)
    body = assert_envelope(response, 400, "validation_failed")
    assert body["errors"][0]["name"] == "status"
    client.web.post_json(url(integration, "/submit"), {}, headers=owner.headers, status=200)


# Editing ------------------------------------------------------------------------


def test_update_changes_given_fields(client, app, owner):
    integration = create(client, owner, scopes=["courses:read"]).json

    body = client.web.put_json(url(integration), {
        "name": "Course Sync Plus", "description": None, "scopes": ["users:read"],
        "event_types": ["course.created"], "config_schema": {"type": "object"},
    }, headers=owner.headers).json

    assert body["name"] == "Course Sync Plus"
    assert body["description"] is None
    assert body["scopes"] == ["users:read"]
    assert body["event_types"] == ["course.created"]
    assert body["config_schema"] == {"type": "object"}
    assert body["slug"] == integration["slug"]
    assert body["support_email"] == integration["support_email"]
    assert body["updated_at"] >= integration["updated_at"]

    events = events_about(app, integration)
    assert [event["type"] for event in events] == ["integration.created",
                                                   "integration.updated"]
    assert events[1]["data"]["changed_fields"] == ["config_schema", "description",
                                                   "event_types", "name", "scopes"]
    entries = audit_actions(app, integration)
    assert entries == ["integration.created", "integration.updated"]


def test_update_without_change_emits_nothing(client, app, owner):
    integration = create(client, owner).json

    client.web.put_json(url(integration), {"name": integration["name"],
                                           "category": integration["category"]},
                        headers=owner.headers)

    assert len(events_about(app, integration)) == 1
    assert audit_actions(app, integration) == ["integration.created"]


def test_update_rejects_bad_bodies(client, app, owner):
    integration = create(client, owner).json
    for body, name in (({}, ""), ({"name": None}, "name"), ({"status": "published"}, "status"),
                       ({"scopes": ["admin:write"]}, "scopes"),
                       ({"event_types": ["no.such"]}, "event_types"),
                       ({"config_schema": {"type": "array"}}, "config_schema"),
                       ({"price_cents": 100}, "price_cents"),
                       ({"pricing_model": "paid"}, "price_cents"),
                       ({"rejection_reason": "x"}, "rejection_reason")):
        response = client.web.put_json(url(integration), body, headers=owner.headers,
                                       status=400)
        errors = assert_envelope(response, 400)["errors"]
        assert errors[0]["name"] == name, body
    assert len(events_about(app, integration)) == 1


def test_update_pricing(client, app, owner):
    integration = create(client, owner).json

    paid = client.web.put_json(url(integration), {"pricing_model": "paid", "price_cents": 500},
                               headers=owner.headers).json
    assert paid["price"] == "5.00"
    repriced = client.web.put_json(url(integration), {"price_cents": 750},
                                   headers=owner.headers).json
    assert repriced["price_cents"] == 750
    response = client.web.put_json(url(integration), {"price_cents": None},
                                   headers=owner.headers, status=400)
    assert_envelope(response, 400)
    freemium = client.web.put_json(url(integration), {"pricing_model": "freemium"},
                                   headers=owner.headers).json
    assert freemium["pricing_model"] == "freemium"
    assert freemium["price_cents"] is None


def test_new_version_keeps_history(client, app, owner):
    integration = create(client, owner, release_notes="First.").json

    body = client.web.put_json(url(integration), {"version": "1.1.0",
                                                  "release_notes": "Adds course sync."},
                               headers=owner.headers).json
    assert body["version"] == "1.1.0"
    assert body["release_notes"] == "Adds course sync."
    assert [(item["version"], item["release_notes"]) for item in body["versions"]] == [
        ("1.1.0", "Adds course sync."), ("1.0.0", "First.")]

    notes = client.web.put_json(url(integration), {"release_notes": "Adds course sync, fast."},
                                headers=owner.headers).json
    assert notes["versions"][0]["release_notes"] == "Adds course sync, fast."
    assert len(notes["versions"]) == 2

    response = client.web.put_json(url(integration), {"version": "1.0.0"},
                                   headers=owner.headers, status=409)
    body = assert_envelope(response, 409, "version_exists")
    assert body["errors"][0]["name"] == "version"
    # Giving the current version is no change of version, so only the notes change.
    same = client.web.put_json(url(integration), {"version": "1.1.0", "release_notes": "Again."},
                               headers=owner.headers).json
    assert same["release_notes"] == "Again."
    assert count_rows(app, IntegrationVersion,
                      integration_id=parse_id("int", integration["id"])) == 2
    assert stored(app, integration).version == "1.1.0"

    page = client.web.get(url(integration, "/versions?limit=1"), headers=owner.headers).json
    assert [item["version"] for item in page["data"]] == ["1.1.0"]
    assert page["has_more"] is True
    rest = client.web.get(url(integration, f"/versions?cursor={page['next_cursor']}"),
                          headers=owner.headers).json
    assert [item["version"] for item in rest["data"]] == ["1.0.0"]
    assert rest["has_more"] is False
    response = client.web.get(url(integration, "/versions?limit=500"), headers=owner.headers,
                              status=400)
    assert_envelope(response, 400, "validation_failed")


def test_in_review_refuses_edits(client, app, owner):
    integration = create(client, owner).json
    client.web.post_json(url(integration, "/submit"), {}, headers=owner.headers, status=200)

    response = client.web.put_json(url(integration), {"description": "Typo fixed."},
                                   headers=owner.headers, status=409)
    body = assert_envelope(response, 409, "integration_in_review")
    assert body["errors"][0]["name"] == "description"
    assert stored(app, integration).description == integration["description"]


def test_published_takes_listing_edits_only(client, app, owner):
    integration = create(client, owner, scopes=["courses:read"]).json
    set_status(app, integration, "published")

    listing = {"name": "Course Sync 2", "description": "Now faster.", "category": "productivity",
               "logo_url": "https://acme.example/new.png",
               "documentation_url": "https://acme.example/docs2",
               "support_url": "https://acme.example/help2", "support_email": "s@acme.example",
               "release_notes": "Clarified notes."}
    body = client.web.put_json(url(integration), listing, headers=owner.headers).json
    assert body["status"] == "published"
    assert body["name"] == "Course Sync 2"

    reviewed = [{"scopes": ["users:read"]}, {"event_types": ["course.*"]},
                {"config_schema": {"type": "object"}}, {"version": "2.0.0"},
                {"pricing_model": "paid", "price_cents": 100}, {"slug": "renamed"},
                {"name": "Sneaky", "scopes": ["users:write"]}]
    for change in reviewed:
        response = client.web.put_json(url(integration), change, headers=owner.headers,
                                        status=409)
        errors = assert_envelope(response, 409, "integration_published")["errors"]
        assert {error["name"] for error in errors} <= set(change) - {"name"}, change
    row = stored(app, integration)
    assert row.scopes == ["courses:read"]
    assert row.name == "Course Sync 2"
    assert row.version == "1.0.0"

    # Sending a reviewed field unchanged is no change.
    client.web.put_json(url(integration), {"scopes": ["courses:read"]}, headers=owner.headers,
                        status=200)
    client.web.post_json(url(integration, "/unpublish"), {}, headers=owner.headers, status=200)
    changed = client.web.put_json(url(integration), {"scopes": ["users:read"],
                                                     "version": "2.0.0"},
                                  headers=owner.headers).json
    assert changed["scopes"] == ["users:read"]
    assert changed["status"] == "unpublished"
    resubmitted = client.web.post_json(url(integration, "/submit"), {}, headers=owner.headers).json
    assert resubmitted["status"] == "in_review"
    assert resubmitted["versions"][0] == {**resubmitted["versions"][0], "version": "2.0.0",
                                          "status": "in_review"}


def test_rejected_integration_takes_any_edit(client, app, owner):
    integration = create(client, owner).json
    set_status(app, integration, "rejected", rejection_reason="Needs docs.")

    body = client.web.put_json(url(integration), {"scopes": ["users:read"],
                                                  "documentation_url": "https://a.example/d"},
                               headers=owner.headers).json
    assert body["status"] == "rejected"
    assert body["rejection_reason"] == "Needs docs."
    assert body["scopes"] == ["users:read"]


# Deleting -----------------------------------------------------------------------


def add_install(app, integration: dict, user_id: str, status: str = "active") -> None:
    with Session(app.registry["db.engine"]) as session, session.begin():
        session.add(IntegrationInstall(integration_id=parse_id("int", integration["id"]),
                                       user_id=parse_id("user", user_id), status=status,
                                       granted_scopes=[]))


@pytest.mark.shared_app(False)
def test_delete_draft(client, app, owner):
    integration = create(client, owner).json

    response = client.web.delete(url(integration), headers=owner.headers, status=204)

    assert response.body == b""
    client.web.get(url(integration), headers=owner.headers, status=404)
    assert count_rows(app, IntegrationVersion) == 0
    assert audit_actions(app, integration) == ["integration.created", "integration.deleted"]


def test_delete_refused_with_active_installs(client, app, owner):
    integration = create(client, owner).json
    set_status(app, integration, "published")
    add_install(app, integration, owner.user_id)

    response = client.web.delete(url(integration), headers=owner.headers, status=409)
    body = assert_envelope(response, 409, "integration_has_installs")
    assert "Unpublish" in body["message"]
    assert stored(app, integration) is not None

    update_rows(app, sa.update(IntegrationInstall).values(status="uninstalled"))
    with Session(app.registry["db.engine"]) as session, session.begin():
        user_id = session.scalar(sa.select(User.id).where(User.email == owner.email))
        session.add(IntegrationReview(integration_id=parse_id("int", integration["id"]),
                                      user_id=user_id, rating=4, title="Good"))
    client.web.delete(url(integration), headers=owner.headers, status=204)
    assert count_rows(app, IntegrationInstall) == 0
    assert count_rows(app, IntegrationReview) == 0


def test_delete_takes_no_body(client, app, owner):
    integration = create(client, owner).json
    response = client.web.delete_json(url(integration), {"force": True}, headers=owner.headers,
                                      status=400)
    assert_envelope(response, 400, "validation_failed")
    assert stored(app, integration) is not None


# Events ---------------------------------------------------------------------------


def subscribe(client: TestClient, member: Member, receiver_url: str) -> dict:
    body = {"url": receiver_url, "event_types": ["integration.*"], "mode": "live",
            "retry_count": 0, "retry_delay": 0}
    return client.web.post_json("/api/partners/webhooks", body, headers=member.headers,
                                status=201).json


def test_events_go_to_owner_only(client, app, owner, make_receiver):
    other = register(client)
    receiver = make_receiver()
    own_webhook = subscribe(client, owner, receiver.url)
    subscribe(client, other, receiver.url)

    integration = create(client, owner).json
    client.web.put_json(url(integration), {"name": "Renamed"}, headers=owner.headers)

    events = events_about(app, integration)
    assert [event["type"] for event in events] == ["integration.created",
                                                   "integration.updated"]
    with Session(app.registry["db.engine"]) as session:
        deliveries = session.scalars(sa.select(WebhookEvent)).all()
        assert {delivery.webhook_id for delivery in deliveries} == {
            parse_id("whk", own_webhook["id"])}
        assert sorted(delivery.event_type for delivery in deliveries) == [
            "integration.created", "integration.updated"]
        assert all(event.livemode for event in session.scalars(sa.select(Event)))
    receiver.wait_for(2, 30)


def test_event_data_matches_catalog(client, app, owner):
    catalog = {item["name"]: item for item in client.web.get(EVENTS_PATH).json["data"]}
    integration = create(client, owner, scopes=["courses:read"], event_types=["course.*"]).json
    client.web.put_json(url(integration), {"description": "New text."}, headers=owner.headers)

    events = events_about(app, integration)
    created, updated = events
    assert created["data"]["status"] == "draft"
    assert created["data"]["partner_id"] == f"partner_{owner.partner_id}"
    assert created["data"]["scopes"] == ["courses:read"]
    assert updated["data"]["changed_fields"] == ["description"]
    for event in events:
        schema = catalog[event["type"]]["schema"]
        validator_class = jsonschema.validators.validator_for(schema)
        validator = validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)
        assert [error.message for error in validator.iter_errors(event["data"])] == []
