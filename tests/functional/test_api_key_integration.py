"""Linking API keys to the partner's integrations, and the per-call revenue a linked key earns."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from fkod.core.audit import AuditEntry
from fkod.core.auth.models import ApiKey, Partner
from fkod.core.billing.invoicing import close_period
from fkod.core.billing.models import PartnerRevenue, Plan, RevenueLine
from fkod.core.billing.periods import Period
from fkod.core.ids import parse_id
from fkod.core.metering.models import ApiUsageHourly
from fkod.core.testing import auth_header, verify_partner
from tests.envelope import assert_envelope

pytestmark = pytest.mark.shared_app

KEYS = "/api/partners/api-keys"
INTEGRATIONS = "/api/partners/integrations"
NOT_THEIRS = "not one of the partner's integrations"


class Owner:
    """A partner's id and its owner's login headers."""

    def __init__(self, client, *, live: bool = False):
        partner, token = client.partner_with_token()
        self.partner_id = parse_id("partner", partner["id"])
        self.headers = auth_header(token)
        if live:
            verify_partner(client.app, partner["id"])
            with Session(client.app.registry["db.engine"]) as session, session.begin():
                session.execute(sa.update(Partner).where(Partner.id == self.partner_id)
                                .values(status="active"))


@pytest.fixture
def owner(client) -> Owner:
    return Owner(client)


def new_integration(client, owner: Owner, **fields) -> str:
    body = {"name": "Course Sync", "category": "content", "pricing_model": "paid",
            "price_per_call": "0.0025", **fields}
    return client.web.post_json(INTEGRATIONS, body, headers=owner.headers,
                                status=201).json["id"]


def create_key(client, owner: Owner, status=201, **fields):
    body = {"key_name": "backend", "scopes": ["users:read"], **fields}
    return client.web.post_json(KEYS, body, headers=owner.headers, status=status)


def update_key(client, owner: Owner, key: dict, status=200, **fields):
    return client.web.put_json(f"{KEYS}/{key['id']}", fields, headers=owner.headers,
                               status=status)


def stored_link(app, key: dict) -> int | None:
    with Session(app.registry["db.engine"]) as session:
        return session.get(ApiKey, parse_id("key", key["id"])).integration_id


def assert_not_theirs(response, value: str) -> None:
    body = assert_envelope(response, 400)
    assert [error["name"] for error in body["errors"]] == ["integration_id"]
    assert body["errors"][0]["description"] == NOT_THEIRS
    assert f"{value} is not one of the partner's integrations" in body["message"]


# Creating -------------------------------------------------------------------------


def test_key_without_integration_shows_null(client, owner):
    key = create_key(client, owner).json

    assert key["integration_id"] is None
    fetched = client.web.get(f"{KEYS}/{key['id']}", headers=owner.headers).json
    assert fetched["integration_id"] is None


def test_create_key_with_own_integration(client, app, owner):
    integration_id = new_integration(client, owner)

    key = create_key(client, owner, integration_id=integration_id).json

    assert key["integration_id"] == integration_id
    assert stored_link(app, key) == parse_id("int", integration_id)
    listed = client.web.get(KEYS, headers=owner.headers).json["data"]
    assert [item["integration_id"] for item in listed] == [integration_id]
    with Session(app.registry["db.engine"]) as session:
        details = session.scalar(sa.select(AuditEntry.details).where(
            AuditEntry.action == "api_key.created", AuditEntry.target_id == key["id"]))
    assert details["integration_id"] == integration_id


@pytest.mark.shared_app(False)
def test_create_rejects_foreign_integration(client, app, owner):
    other = Owner(client)
    theirs = new_integration(client, other, name="Their Sync")
    unknown = f"int_{parse_id('int', theirs) + 1000}"

    assert_not_theirs(create_key(client, owner, status=400, integration_id=theirs), theirs)
    assert_not_theirs(create_key(client, owner, status=400, integration_id=unknown), unknown)
    with Session(app.registry["db.engine"]) as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(ApiKey)) == 0


@pytest.mark.parametrize("value", ["42", "key_1", "int_", "int_x", 42, True, ""])
def test_create_rejects_malformed_integration_id(client, owner, value):
    response = create_key(client, owner, status=400, integration_id=value)

    assert [error["name"] for error in assert_envelope(response, 400)["errors"]] \
        == ["integration_id"]


# Updating -------------------------------------------------------------------------


def test_update_links_relinks_and_unlinks(client, app, owner):
    first = new_integration(client, owner, name="First Sync")
    second = new_integration(client, owner, name="Second Sync")
    key = create_key(client, owner).json

    assert update_key(client, owner, key, integration_id=first).json["integration_id"] == first
    assert update_key(client, owner, key, integration_id=second).json["integration_id"] \
        == second
    # The same link again changes nothing.
    update_key(client, owner, key, integration_id=second)
    unlinked = update_key(client, owner, key, integration_id=None).json

    assert unlinked["integration_id"] is None
    assert stored_link(app, key) is None
    with Session(app.registry["db.engine"]) as session:
        updates = list(session.scalars(sa.select(AuditEntry.details).where(
            AuditEntry.action == "api_key.updated", AuditEntry.target_id == key["id"])
            .order_by(AuditEntry.id)))
    assert [entry["fields"] for entry in updates] == [["integration_id"]] * 3
    assert [entry["integration_id"] for entry in updates] == [
        {"old": None, "new": first}, {"old": first, "new": second},
        {"old": second, "new": None}]


def test_update_rejects_foreign_integration(client, app, owner):
    mine = new_integration(client, owner)
    theirs = new_integration(client, Owner(client), name="Their Sync")
    key = create_key(client, owner, integration_id=mine).json

    assert_not_theirs(update_key(client, owner, key, status=400, integration_id=theirs), theirs)
    assert_not_theirs(update_key(client, owner, key, status=400, integration_id="int_999999"),
                      "int_999999")
    assert stored_link(app, key) == parse_id("int", mine)


def test_deleted_integration_unlinks_its_keys(client, app, owner):
    integration_id = new_integration(client, owner)
    key = create_key(client, owner, integration_id=integration_id).json

    client.web.delete(f"{INTEGRATIONS}/{integration_id}", headers=owner.headers, status=204)

    fetched = client.web.get(f"{KEYS}/{key['id']}", headers=owner.headers).json
    assert fetched["integration_id"] is None
    assert fetched["status"] == "active"
    assert_not_theirs(update_key(client, owner, key, status=400, integration_id=integration_id),
                      integration_id)
    with Session(app.registry["db.engine"]) as session:
        details = session.scalar(sa.select(AuditEntry.details).where(
            AuditEntry.action == "integration.deleted", AuditEntry.target_id == integration_id))
    assert details["unlinked_api_keys"] == [key["id"]]


# Billing --------------------------------------------------------------------------


def add_usage(app, *, partner_id: int, key_id: int, hour: dt.datetime, count: int,
              livemode: bool = True, status: int = 200) -> None:
    with Session(app.registry["db.engine"]) as session, session.begin():
        session.add(ApiUsageHourly(
            hour=hour, api_key_id=key_id, partner_id=partner_id, livemode=livemode,
            endpoint="/api/users", method="GET", status_code=status, request_count=count,
            total_response_time_ms=count, max_response_time_ms=1, request_bytes=0,
            response_bytes=0, latency_histogram={}))


def test_linked_key_earns_call_revenue(client, app):
    owner = Owner(client, live=True)
    with Session(app.registry["db.engine"]) as session, session.begin():
        partner = session.get(Partner, owner.partner_id)
        partner.plan_id = session.scalar(sa.select(Plan.id).where(Plan.code == "free"))
        # Signed up before the billed month.
        partner.created_at = dt.datetime(2026, 8, 1)
    integration_id = new_integration(client, owner, price_per_call="0.0025")
    linked = create_key(client, owner, mode="live", integration_id=integration_id).json
    unlinked = create_key(client, owner, mode="live", key_name="other").json
    linked_id, unlinked_id = parse_id("key", linked["id"]), parse_id("key", unlinked["id"])

    add_usage(app, partner_id=owner.partner_id, key_id=linked_id,
              hour=dt.datetime(2026, 11, 4, 9), count=100_000)
    add_usage(app, partner_id=owner.partner_id, key_id=linked_id,
              hour=dt.datetime(2026, 11, 30, 23), count=23_457)
    # Neither test-mode calls, nor calls with an unlinked key, nor October's calls earn.
    add_usage(app, partner_id=owner.partner_id, key_id=linked_id,
              hour=dt.datetime(2026, 11, 5, 9), count=5_000, livemode=False)
    add_usage(app, partner_id=owner.partner_id, key_id=unlinked_id,
              hour=dt.datetime(2026, 11, 6, 9), count=7_000)
    add_usage(app, partner_id=owner.partner_id, key_id=linked_id,
              hour=dt.datetime(2026, 10, 31, 23), count=9_000)

    close_period(app.registry, Period(2026, 11), now=dt.datetime(2026, 12, 2))

    with Session(app.registry["db.engine"]) as session:
        revenue = session.scalar(sa.select(PartnerRevenue).where(
            PartnerRevenue.partner_id == owner.partner_id,
            PartnerRevenue.period_start == dt.date(2026, 11, 1)))
        lines = list(session.scalars(sa.select(RevenueLine).where(
            RevenueLine.partner_id == owner.partner_id)))
    # 123,457 calls at 0.0025 USD are 308.6425 USD, rounded to cents once.
    line, = lines
    assert line.kind == "call_fee"
    assert line.integration_id == parse_id("int", integration_id)
    assert line.api_calls == 123_457
    assert line.gross == Decimal("308.64")
    assert line.commission + line.partner_share == Decimal("308.64")
    assert revenue is not None
    assert revenue.period_end == dt.date(2026, 11, 30)
    assert revenue.api_calls == 123_457
    assert revenue.revenue == Decimal("308.64")
    assert revenue.partner_share == line.partner_share
