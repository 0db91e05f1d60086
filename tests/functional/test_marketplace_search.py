"""Marketplace search: ranking, prefix and typo matches, hostile input, and the index triggers.

The module shares the application and data set of test_marketplace_catalog;
tests that change integrations or partners build their own.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from fkod.core.auth.models import Partner
from fkod.core.db import run_in_transaction
from fkod.marketplace.models import Integration
from tests.envelope import assert_envelope
from tests.functional.test_marketplace_catalog import (
    BASE,
    add_integration,
    add_partner,
    assert_field_error,
    build_catalog,
    module_settings_fixture,
    world_fixture,
)

pytestmark = pytest.mark.shared_app

SEARCH = f"{BASE}/search"
module_settings = module_settings_fixture()
world = world_fixture()


def search(world, status: int = 200, **params):
    return world.client.web.get(SEARCH, params=params, status=status)


def found(world, q: str, **params) -> list[str]:
    return [item["name"] for item in search(world, q=q, limit=100, **params).json["data"]]


# Ranking ---------------------------------------------------------------------------


def test_exact_name_first(world):
    body = search(world, q="slack notifications").json
    assert body["data"][0]["name"] == "Slack Notifications"
    assert body["data"][0]["match"] == "exact"


def test_prefix_of_word(world):
    assert found(world, "cour")[0] == "Course Sync"
    assert found(world, "Course Sy") == ["Course Sync"]


def test_typo_tolerated(world):
    body = search(world, q="slak").json
    assert [item["name"] for item in body["data"]] == ["Slack Notifications"]
    assert body["data"][0]["match"] == "similar"
    assert found(world, "zom schedular")[0] == "Zoom Scheduler"


def test_description_and_category_match(world):
    assert found(world, "spreadsheets") == ["Grade Export"]
    assert set(found(world, "scheduling")) == {"Zoom Scheduler"}


def test_partner_company_matches(world):
    assert set(found(world, "acme")) == {"Course Sync", "Slack Notifications", "Grade Export"}
    assert set(found(world, "globex zoom")) == {"Zoom Scheduler"}


def test_name_match_outranks_description(world):
    # "slack" is in Slack Notifications' name and description; nothing else has it.
    results = found(world, "milestones")
    assert results == ["Slack Notifications"]
    ranked = found(world, "course")
    assert ranked[0] == "Course Sync"


def test_tiers_come_in_order(client, app):
    # The most installed integration is a text match only, so popularity cannot explain the order.
    def build(session):
        partner = add_partner(session, "tiers", "Tier Labs")
        add_integration(session, partner, "Backup Sync", install_count=900)
        add_integration(session, partner, "Sync Pro", install_count=5)
        add_integration(session, partner, "Sync", install_count=1)

    run_in_transaction(app.registry["db.session_factory"], build)
    data = client.web.get(SEARCH, params={"q": "sync"}).json["data"]
    assert [item["name"] for item in data] == ["Sync", "Sync Pro", "Backup Sync"]
    assert [item["match"] for item in data] == ["exact", "prefix", "text"]
    assert all(item["partner"]["company_name"] == "Tier Labs" for item in data)


def test_unlisted_never_found(world):
    for q in ("draft thing", "old tool", "shady", "shady analytics"):
        assert found(world, q) == [], q


def test_no_match_is_empty(world):
    body = search(world, q="qwxz vbnm").json
    assert body == {"data": [], "has_more": False, "next_cursor": None}


# Filters, sorts and pages ------------------------------------------------------------


def test_search_filters(world):
    assert set(found(world, "acme", pricing="paid")) == {"Grade Export"}
    assert set(found(world, "acme", category="content")) == {"Course Sync"}
    assert set(found(world, "acme", min_rating="4")) == {"Course Sync", "Slack Notifications"}
    assert found(world, "zoom", partner="acme-learning") == []


def test_search_sort_popular(world):
    assert found(world, "acme", sort="popular") == [
        "Slack Notifications", "Course Sync", "Grade Export"]


def names_page_by_page(world, **params) -> list[str]:
    """Search one result per page, following next_cursor, and return the names in order."""
    seen, cursor = [], None
    for _ in range(5):
        page_params = {"limit": 1, **params}
        if cursor:
            page_params["cursor"] = cursor
        body = search(world, **page_params).json
        seen.extend(item["name"] for item in body["data"])
        cursor = body["next_cursor"]
        if cursor is None:
            break
    return seen


def test_search_pages(world):
    everything = found(world, "acme")

    assert names_page_by_page(world, q="acme") == everything


def test_search_sort_name_pages(world):
    everything = found(world, "acme", sort="name")

    assert everything == ["Course Sync", "Grade Export", "Slack Notifications"]
    assert names_page_by_page(world, q="acme", sort="name") == everything


@pytest.mark.parametrize(("params", "field"), [
    ({}, "q"),
    ({"q": ""}, "q"),
    ({"q": "   "}, "q"),
    ({"q": "x" * 201}, "q"),
    ({"q": "x" * 10_000}, "q"),
    ({"q": "a\x00b"}, "q"),
    ({"q": "slack", "sort": "price"}, "sort"),
    ({"q": "slack", "category": "games"}, "category"),
    ({"q": "slack", "limit": "500"}, "limit"),
    ({"q": "slack", "cursor": "bm90LWEtY3Vyc29y"}, "cursor"),
], ids=lambda value: repr(value)[:40])
def test_search_invalid_query(world, params, field):
    assert_field_error(search(world, status=400, **params), field)


# Hostile input -----------------------------------------------------------------------

HOSTILE = ["%", "_", "'", '"', "*", "NEAR(", "a OR b", "-x", "^", ":", "\\", "\\\\",
           "slack AND", "NOT slack", "(slack", "slack)", "name:slack", "sl*", "'; DROP TABLE",
           '"slack', "slack\"'", "🚀", "slack 🚀", "e\u0301", "ǅ", "１００%", "%%", "_%_",
           "a" * 200, "ab", "x", "c:\\path", "NEAR(slack zoom, 2)", "{slack}", "[a]", "$1",
           "\t\n"]


@pytest.mark.parametrize("q", HOSTILE, ids=lambda value: repr(value)[:30])
def test_hostile_input(world, q):
    response = world.client.web.get(SEARCH, params={"q": q}, expect_errors=True)
    assert response.status_int in (200, 400), response.body[:300]
    if response.status_int == 400:
        assert_field_error(response, "q")
        return
    body = response.json
    assert set(body) == {"data", "has_more", "next_cursor"}
    # Every result matches something: the input is never a wildcard.
    assert len(body["data"]) < 6 or q in ("ab", "x")


def test_percent_and_underscore_are_literal(world):
    assert found(world, "%") == ["100% Uptime_Monitor"]
    assert found(world, "_") == ["100% Uptime_Monitor"]
    assert found(world, "100%") == ["100% Uptime_Monitor"]
    assert found(world, "uptime_m") == ["100% Uptime_Monitor"]
    assert found(world, "%%") == []
    assert found(world, "_%_") == []


def test_invalid_utf8_is_400(world):
    response = world.client.web.get(f"{SEARCH}?q=%ff", expect_errors=True)
    assert_envelope(response, 400)


# The index follows writes ----------------------------------------------------------------


def test_index_follows_updates_and_deletes(client, app):
    factory = app.registry["db.session_factory"]
    ids = run_in_transaction(factory, build_catalog)

    def names(q: str) -> list[str]:
        response = client.web.get(SEARCH, params={"q": q})
        return [item["name"] for item in response.json["data"]]

    assert names("zoom") == ["Zoom Scheduler"]
    run_in_transaction(factory, lambda session: session.execute(
        sa.update(Integration).where(Integration.id == ids["Zoom Scheduler"])
        .values(name="Meet Planner", description="Plans video calls.")))
    assert names("zoom") == []
    assert names("meet planner") == ["Meet Planner"]
    assert names("video") == ["Meet Planner"]

    run_in_transaction(factory, lambda session: session.execute(
        sa.update(Partner).where(Partner.slug == "globex").values(company_name="Initech")))
    assert set(names("initech")) == {"Meet Planner", "100% Uptime_Monitor",
                                     "Learning Companion"}
    assert names("globex") == []

    def add(session):
        initech = session.scalar(sa.select(Partner).where(Partner.slug == "globex"))
        return add_integration(session, initech, "Quiz Builder", category="assessment").id

    quiz_id = run_in_transaction(factory, add)
    assert names("quiz") == ["Quiz Builder"]
    assert "Quiz Builder" in names("initech")

    run_in_transaction(factory, lambda session: session.execute(
        sa.delete(Integration).where(Integration.id.in_([quiz_id, ids["Zoom Scheduler"]]))))
    assert names("quiz") == []
    assert names("meet planner") == []
    if app.registry["db.engine"].dialect.name == "sqlite":
        with app.registry["db.engine"].connect() as connection:
            for table in ("integration_search", "integration_search_trigram"):
                left = connection.scalar(sa.text(
                    # The table names are the constants above.
                    f"SELECT count(*) FROM {table} WHERE rowid IN (:a, :b)"),  # noqa: S608
                    {"a": quiz_id, "b": ids["Zoom Scheduler"]})
                assert left == 0, table


def test_partner_added_later_is_searchable(client, app):
    def build(session):
        partner = add_partner(session, "late", "Latecomer Labs")
        add_integration(session, partner, "Attendance Tracker", category="productivity")

    run_in_transaction(app.registry["db.session_factory"], build)
    response = client.web.get(SEARCH, params={"q": "latecomer"})
    assert [item["name"] for item in response.json["data"]] == ["Attendance Tracker"]
