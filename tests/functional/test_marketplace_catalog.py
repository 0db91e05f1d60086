"""Public marketplace reads: lists, filters, sorts, pages, details, partners, trending, featured.

One application and one data set serve the whole module; tests that change
the data use their own application. Rows are written through the database
session, because the marketplace reads are what is under test here.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from decimal import Decimal
from types import SimpleNamespace

import pytest
import sqlalchemy as sa

from fkod import shutdown
from fkod.core.auth.models import Partner, User
from fkod.core.db import run_in_transaction, utcnow
from fkod.core.integrations import CATEGORIES
from fkod.core.migrations import upgrade_to_head
from fkod.core.testing import TestClient, make_app, make_settings
from fkod.marketplace.models import Integration, IntegrationInstall
from tests.conftest import STACK
from tests.envelope import assert_envelope

pytestmark = pytest.mark.shared_app

BASE = "/api/marketplace"
# The module's requests all come from one address; the per-address limit has its own tests.
UNLIMITED = {"fkod.ratelimit.per_address_per_minute": "1000000",
             "fkod.ratelimit.per_address_per_hour": "1000000"}


# Data set ------------------------------------------------------------------------


def days_ago(days: float) -> dt.datetime:
    return utcnow() - dt.timedelta(days=days)


def add_partner(session, slug: str, company_name: str, *, status: str = "active",
                verified: bool = True, **fields) -> Partner:
    partner = Partner(slug=slug, company_name=company_name, status=status,
                      verification_status="verified" if verified else "unverified",
                      company_website=f"https://{slug}.example", **fields)
    session.add(partner)
    session.flush()
    return partner


def add_integration(session, partner: Partner, name: str, *, status: str = "published",
                    **fields) -> Integration:
    slug = fields.pop("slug", name.lower().replace(" ", "-").replace("%", "").replace("_", "-"))
    values = {"category": "other", "version": "1.0.0", "pricing_model": "free",
              "description": f"{name} for F-KOD.", "published_at": days_ago(5)}
    values.update(fields)
    integration = Integration(partner_id=partner.id, name=name, slug=slug, status=status,
                              **values)
    session.add(integration)
    session.flush()
    return integration


def build_catalog(session) -> dict[str, int]:
    """Create partners and integrations, listed and not; return integration ids by name."""
    acme = add_partner(session, "acme-learning", "Acme Learning",
                       description="Tools for course teams.",
                       company_logo_url="https://acme-learning.example/logo.png")
    globex = add_partner(session, "globex", "Globex Tools", verified=False)
    shady = add_partner(session, "shady", "Shady Corp", status="suspended")
    add_partner(session, "quiet", "Quiet Partner")

    made = [
        add_integration(session, acme, "Course Sync", category="content", install_count=50,
                        rating=Decimal("4.50"), review_count=10, published_at=days_ago(3),
                        featured_rank=2, scopes=["courses:read"],
                        event_types=["course.created"],
                        config_schema={"type": "object", "properties": {
                            "folder": {"type": "string"}}},
                        description="Keeps course catalogs in step with your LMS."),
        add_integration(session, acme, "Slack Notifications", category="communication",
                        pricing_model="freemium", install_count=120, rating=Decimal("4.50"),
                        review_count=30, published_at=days_ago(10), featured_rank=1,
                        description="Posts learner milestones to a Slack channel."),
        add_integration(session, acme, "Grade Export", category="analytics",
                        pricing_model="paid", price_cents=999, install_count=5,
                        published_at=days_ago(1),
                        description="Exports grades to spreadsheets every night."),
        add_integration(session, acme, "Draft Thing", status="draft", install_count=500),
        add_integration(session, acme, "Old Tool", status="unpublished", install_count=400),
        add_integration(session, globex, "Zoom Scheduler", category="scheduling",
                        pricing_model="paid", price_cents=1500, install_count=80,
                        rating=Decimal("3.20"), review_count=4, published_at=days_ago(20),
                        description="Books mentor sessions as Zoom meetings."),
        add_integration(session, globex, "Learning Companion", category="content",
                        plugin_name="learning", install_count=10, published_at=days_ago(2)),
        add_integration(session, globex, "100% Uptime_Monitor", category="analytics",
                        install_count=1, published_at=days_ago(7),
                        description="Watches status pages."),
        add_integration(session, shady, "Shady Analytics", category="analytics",
                        install_count=1000),
    ]
    return {integration.name: integration.id for integration in made}


LISTED = {"Course Sync", "Slack Notifications", "Grade Export", "Zoom Scheduler",
          "Learning Companion", "100% Uptime_Monitor"}


def module_settings_fixture():
    """Build the module-scoped ``module_settings`` fixture; the search tests share it."""

    @pytest.fixture(scope="module")
    def module_settings(request, tmp_path_factory, migrated_sqlite_template):
        """Settings of an application on its own database, for one module's shared data."""
        folder = tmp_path_factory.mktemp("marketplace")
        if STACK == "production":
            postgres = request.getfixturevalue("make_postgres_schema")()
            upgrade_to_head(postgres)
            return make_settings(folder, db_url=postgres, extra={
                **UNLIMITED, "fkod.redis.url": request.getfixturevalue("redis_url"),
                "fkod.ratelimit.backend": "redis",
                "fkod.redis.key_prefix": f"fkod-test:{os.urandom(4).hex()}:"})
        shutil.copy(migrated_sqlite_template, folder / "fkod.sqlite")
        return make_settings(folder, extra=UNLIMITED)

    return module_settings


def world_fixture():
    """Build the module-scoped ``world`` fixture: an application with build_catalog's data."""

    @pytest.fixture(scope="module")
    def world(module_settings):
        app = make_app(module_settings)
        ids = run_in_transaction(app.registry["db.session_factory"], build_catalog)
        yield SimpleNamespace(app=app, client=TestClient(app), ids=ids)
        shutdown(app.registry)

    return world


module_settings = module_settings_fixture()
world = world_fixture()


def get(world, path: str, status: int = 200, **params):
    return world.client.web.get(f"{BASE}{path}", params=params, status=status)


def names(response) -> list[str]:
    return [item["name"] for item in response.json["data"]]


def assert_field_error(response, name: str) -> dict:
    body = assert_envelope(response, 400)
    assert name in [error["name"] for error in body["errors"]], body
    return body


# Lists ---------------------------------------------------------------------------


def test_list_shows_only_listed(world):
    response = get(world, "/integrations", limit=100)
    assert set(names(response)) == LISTED
    assert response.json["has_more"] is False
    assert response.json["next_cursor"] is None


def test_list_default_sort_popular(world):
    assert names(get(world, "/integrations")) == [
        "Slack Notifications", "Zoom Scheduler", "Course Sync", "Learning Companion",
        "Grade Export", "100% Uptime_Monitor"]


def test_list_sort_newest(world):
    assert names(get(world, "/integrations", sort="newest")) == [
        "Grade Export", "Learning Companion", "Course Sync", "100% Uptime_Monitor",
        "Slack Notifications", "Zoom Scheduler"]


def test_list_sort_rating_nulls_last(world):
    found = names(get(world, "/integrations", sort="rating"))
    # Equal ratings: more reviews first. Unrated ones come after every rated one.
    assert found[:3] == ["Slack Notifications", "Course Sync", "Zoom Scheduler"]
    assert set(found[3:]) == {"Grade Export", "Learning Companion", "100% Uptime_Monitor"}


def test_list_sort_name(world):
    found = names(get(world, "/integrations", sort="name"))
    assert found == sorted(found, key=str.lower)


@pytest.mark.parametrize(("params", "expected"), [
    ({"category": "content"}, {"Course Sync", "Learning Companion"}),
    ({"category": "crm"}, set()),
    ({"pricing": "paid"}, {"Grade Export", "Zoom Scheduler"}),
    ({"pricing": "freemium"}, {"Slack Notifications"}),
    ({"min_rating": "4"}, {"Course Sync", "Slack Notifications"}),
    ({"min_rating": "3.2"}, {"Course Sync", "Slack Notifications", "Zoom Scheduler"}),
    ({"min_rating": "5"}, set()),
    ({"partner": "globex"}, {"Zoom Scheduler", "Learning Companion", "100% Uptime_Monitor"}),
    ({"partner": "acme-learning", "pricing": "paid"}, {"Grade Export"}),
], ids=lambda value: str(value) if isinstance(value, dict) else "")
def test_list_filters(world, params, expected):
    assert set(names(get(world, "/integrations", limit=100, **params))) == expected


def test_list_filter_partner_by_id(world):
    partner_id = get(world, "/integrations", sort="name", limit=1).json["data"][0]["partner"]["id"]
    found = names(get(world, "/integrations", partner=partner_id, limit=100))
    assert "100% Uptime_Monitor" in found
    assert "Course Sync" not in found


@pytest.mark.parametrize(("params", "field"), [
    ({"category": "games"}, "category"),
    ({"category": ""}, "category"),
    ({"pricing": "cheap"}, "pricing"),
    ({"min_rating": "0"}, "min_rating"),
    ({"min_rating": "6"}, "min_rating"),
    ({"min_rating": "abc"}, "min_rating"),
    ({"min_rating": "NaN"}, "min_rating"),
    ({"min_rating": "9" * 50}, "min_rating"),
    ({"partner": "shady"}, "partner"),
    ({"partner": "nobody"}, "partner"),
    ({"partner": "partner_999999"}, "partner"),
    ({"partner": "Not A Slug!"}, "partner"),
    ({"sort": "price"}, "sort"),
    ({"sort": "-rating"}, "sort"),
    ({"limit": "0"}, "limit"),
    ({"limit": "101"}, "limit"),
    ({"limit": "1.5"}, "limit"),
    ({"cursor": "not-a-cursor"}, "cursor"),
    ({"colour": "red"}, "colour"),
], ids=lambda value: str(value)[:40])
def test_list_invalid_query(world, params, field):
    assert_field_error(get(world, "/integrations", status=400, **params), field)


@pytest.mark.parametrize("sort", ["popular", "newest", "rating", "name"])
def test_list_pages_cover_all(world, sort):
    seen, cursor = [], None
    for _ in range(10):
        params = {"limit": 2, "sort": sort, **({"cursor": cursor} if cursor else {})}
        body = get(world, "/integrations", **params).json
        assert len(body["data"]) <= 2
        seen.extend(item["name"] for item in body["data"])
        cursor = body["next_cursor"]
        assert body["has_more"] is (cursor is not None)
        if cursor is None:
            break
    assert seen == names(get(world, "/integrations", sort=sort, limit=100))


def test_list_cursor_of_unknown_item(world):
    from fkod.core.api import encode_cursor

    response = get(world, "/integrations", status=400, cursor=encode_cursor(999999))
    assert_field_error(response, "cursor")


def test_list_item_shape(world):
    item = next(entry for entry in get(world, "/integrations", limit=100).json["data"]
                if entry["name"] == "Grade Export")
    assert item["id"] == f"int_{world.ids['Grade Export']}"
    assert item["pricing"] == {"model": "paid", "price_cents": 999, "price_per_call": None,
                               "currency": "USD"}
    assert item["rating"] is None
    assert item["featured"] is False
    assert item["partner"] == {"id": item["partner"]["id"], "slug": "acme-learning",
                               "company_name": "Acme Learning", "verified": True}
    assert item["published_at"].endswith("Z")
    assert "config_schema" not in item
    assert "status" not in item
    assert "plugin_name" not in item


# Details -------------------------------------------------------------------------


def test_detail_has_config_schema(world):
    body = get(world, f"/integrations/int_{world.ids['Course Sync']}").json
    assert body["name"] == "Course Sync"
    assert body["config_schema"]["properties"]["folder"] == {"type": "string"}
    assert body["scopes"] == ["courses:read"]
    assert body["event_types"] == ["course.created"]
    assert body["rating"] == 4.5
    assert body["featured"] is True
    assert body["partner"]["slug"] == "acme-learning"


@pytest.mark.parametrize("name", ["Draft Thing", "Old Tool", "Shady Analytics"])
def test_detail_unlisted_is_404(world, name):
    response = get(world, f"/integrations/int_{world.ids[name]}", status=404)
    assert_envelope(response, 404, "not_found")


@pytest.mark.parametrize("reference", ["int_0", "int_99999999999", "course-sync", "int_x"])
def test_detail_unknown_is_404(world, reference):
    assert_envelope(get(world, f"/integrations/{reference}", status=404), 404, "not_found")


# Categories, featured, partners --------------------------------------------------


def test_categories_counts(world):
    body = get(world, "/categories").json
    counts = {entry["name"]: entry["integration_count"] for entry in body["data"]}
    assert list(counts) == list(CATEGORIES)
    assert counts["content"] == 2
    assert counts["analytics"] == 2
    assert counts["communication"] == 1
    assert counts["crm"] == 0


def test_featured_by_rank(world):
    assert names(get(world, "/featured")) == ["Slack Notifications", "Course Sync"]
    assert names(get(world, "/featured", limit=1)) == ["Slack Notifications"]
    assert_field_error(get(world, "/featured", status=400, limit=0), "limit")
    assert_field_error(get(world, "/featured", status=400, cursor="abc"), "cursor")


def test_partner_list(world):
    body = get(world, "/partners").json
    partners = {entry["slug"]: entry for entry in body["data"]}
    # Suspended partners and partners without a listed integration are left out.
    assert list(partners) == ["acme-learning", "globex"]
    assert partners["acme-learning"]["integration_count"] == 3
    assert partners["acme-learning"]["install_count"] == 175
    assert partners["acme-learning"]["verified"] is True
    assert partners["globex"]["verified"] is False
    assert partners["globex"]["company_website"] == "https://globex.example"


def test_partner_list_pages_and_sort(world):
    first = get(world, "/partners", limit=1, sort="popular").json
    assert [entry["slug"] for entry in first["data"]] == ["acme-learning"]
    second = get(world, "/partners", limit=1, sort="popular", cursor=first["next_cursor"]).json
    assert [entry["slug"] for entry in second["data"]] == ["globex"]
    assert second["has_more"] is False
    assert_field_error(get(world, "/partners", status=400, sort="rating"), "sort")
    assert_field_error(get(world, "/partners", status=400, limit=1000), "limit")


def test_partner_profile(world):
    by_slug = get(world, "/partners/acme-learning").json
    assert by_slug["company_name"] == "Acme Learning"
    assert by_slug["description"] == "Tools for course teams."
    assert by_slug["company_logo_url"] == "https://acme-learning.example/logo.png"
    assert [item["name"] for item in by_slug["integrations"]] == [
        "Slack Notifications", "Course Sync", "Grade Export"]
    by_id = get(world, f"/partners/{by_slug['id']}").json
    assert by_id == by_slug
    for secret in ("tax_id", "bank_account", "contact_email", "status"):
        assert secret not in by_slug


@pytest.mark.parametrize("reference", ["shady", "quiet", "nobody", "partner_0", "%ff"])
def test_partner_profile_hidden(world, reference):
    response = world.client.web.get(f"{BASE}/partners/{reference}", expect_errors=True)
    assert response.status_int in (400, 404)
    assert_envelope(response, response.status_int)


# Trending ------------------------------------------------------------------------


def test_trending_weighs_recent_installs(client, app):
    def build(session):
        ids = build_catalog(session)
        users = [User(email=f"learner{index}@example.com") for index in range(8)]
        session.add_all(users)
        session.flush()
        installs = [
            # Course Sync: two installs today.
            ("Course Sync", 0.1, "active"), ("Course Sync", 0.2, "active"),
            # Zoom Scheduler: three installs, five to six days old, weigh less.
            ("Zoom Scheduler", 5.5, "active"), ("Zoom Scheduler", 5.6, "active"),
            ("Zoom Scheduler", 5.7, "active"),
            # Uninstalled, too old, or unlisted: none counts.
            ("Grade Export", 0.1, "uninstalled"), ("Grade Export", 8, "active"),
            ("Draft Thing", 0.1, "active"),
        ]
        for user, (name, age, status) in zip(users, installs, strict=True):
            session.add(IntegrationInstall(integration_id=ids[name], user_id=user.id,
                                           status=status, installed_at=days_ago(age),
                                           granted_scopes=[]))

    run_in_transaction(app.registry["db.session_factory"], build)
    body = client.web.get(f"{BASE}/trending", params={"limit": 5}).json
    assert [item["name"] for item in body["data"]] == ["Course Sync", "Zoom Scheduler"]
    course, zoom = body["data"]
    assert course["recent_installs"] == 2
    assert course["trending_score"] == pytest.approx(2.0)
    assert zoom["recent_installs"] == 3
    assert zoom["trending_score"] == pytest.approx(3 * 0.7 ** 5, abs=1e-3)
    assert body["has_more"] is False
    assert [item["name"] for item in client.web.get(
        f"{BASE}/trending", params={"limit": 1}).json["data"]] == ["Course Sync"]
    assert_field_error(client.web.get(f"{BASE}/trending", params={"limit": 101},
                                      status=400), "limit")


# The listed rule -------------------------------------------------------------------


@pytest.mark.shared_app(False)
def test_disabled_plugin_hides_integration(client, app):
    ids = run_in_transaction(app.registry["db.session_factory"], build_catalog)
    host = app.registry["plugins"]
    companion = f"{BASE}/integrations/int_{ids['Learning Companion']}"
    client.web.get(companion, status=200)

    run_in_transaction(app.registry["db.session_factory"],
                       lambda session: host.set_enabled(session, "learning", False))
    assert_envelope(client.web.get(companion, status=404), 404, "not_found")
    listed = [item["name"] for item in client.web.get(
        f"{BASE}/integrations", params={"limit": 100}).json["data"]]
    assert "Learning Companion" not in listed
    assert "Course Sync" in listed
    found = client.web.get(f"{BASE}/search", params={"q": "Learning Companion"}).json["data"]
    assert found == []
    categories = {entry["name"]: entry["integration_count"]
                  for entry in client.web.get(f"{BASE}/categories").json["data"]}
    assert categories["content"] == 1

    run_in_transaction(app.registry["db.session_factory"],
                       lambda session: host.set_enabled(session, "learning", True))
    client.web.get(companion, status=200)


@pytest.mark.shared_app(False)
def test_suspending_partner_hides_everything(client, app):
    ids = run_in_transaction(app.registry["db.session_factory"], build_catalog)
    run_in_transaction(app.registry["db.session_factory"], lambda session: session.execute(
        sa.update(Partner).where(Partner.slug == "acme-learning").values(status="suspended")))

    listed = {item["name"] for item in client.web.get(
        f"{BASE}/integrations", params={"limit": 100}).json["data"]}
    assert listed == {"Zoom Scheduler", "Learning Companion", "100% Uptime_Monitor"}
    client.web.get(f"{BASE}/integrations/int_{ids['Course Sync']}", status=404)
    client.web.get(f"{BASE}/partners/acme-learning", status=404)
    assert client.web.get(f"{BASE}/featured").json["data"] == []
    assert client.web.get(f"{BASE}/search", params={"q": "slack"}).json["data"] == []
