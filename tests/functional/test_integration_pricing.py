"""The per-call price of an integration: set, changed, checked and shown in the marketplace."""

from __future__ import annotations

from decimal import Decimal

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from fkod.core.audit import AuditEntry
from fkod.core.auth.models import Partner
from fkod.core.ids import parse_id
from fkod.core.testing import auth_header
from fkod.core.webhooks.models import Event
from fkod.marketplace.models import Integration
from tests.envelope import assert_envelope

pytestmark = pytest.mark.shared_app

INTEGRATIONS = "/api/partners/integrations"
MARKETPLACE = "/api/marketplace/integrations"


@pytest.fixture
def owner(client) -> dict:
    """The login headers of a fresh partner's owner."""
    _partner, token = client.partner_with_token()
    return auth_header(token)


def create(client, headers, status=201, **fields):
    body = {"name": "Course Sync", "category": "content", **fields}
    return client.web.post_json(INTEGRATIONS, body, headers=headers, status=status)


def update(client, headers, integration, status=200, **fields):
    return client.web.put_json(f"{INTEGRATIONS}/{integration['id']}", fields, headers=headers,
                               status=status)


def stored_price(app, integration) -> Decimal | None:
    with Session(app.registry["db.engine"]) as session:
        return session.get(Integration, parse_id("int", integration["id"])).price_per_call


def error_names(response) -> list[str]:
    return [error["name"] for error in assert_envelope(response, 400)["errors"]]


# Valid prices ---------------------------------------------------------------------


@pytest.mark.parametrize(("given", "shown"), [
    ("0.001", "0.001000"),
    ("0.000001", "0.000001"),
    ("1.00", "1.000000"),
    ("1", "1.000000"),
    (1, "1.000000"),
    (" 0.25 ", "0.250000"),
])
def test_create_paid_per_call_only(client, app, owner, given, shown):
    body = create(client, owner, pricing_model="paid", price_per_call=given).json

    assert body["pricing_model"] == "paid"
    assert body["price_cents"] is None
    assert body["price"] is None
    assert body["price_per_call"] == shown
    assert stored_price(app, body) == Decimal(shown)
    fetched = client.web.get(f"{INTEGRATIONS}/{body['id']}", headers=owner).json
    assert fetched["price_per_call"] == shown


def test_create_paid_with_both_prices(client, app, owner):
    body = create(client, owner, pricing_model="paid", price_cents=1999,
                  price_per_call="0.0025").json

    assert body["price"] == "19.99"
    assert body["price_per_call"] == "0.002500"


def test_free_has_no_price(client, owner):
    body = create(client, owner).json

    assert body["pricing_model"] == "free"
    assert body["price_per_call"] is None


# Invalid prices -------------------------------------------------------------------


@pytest.mark.parametrize("value", [
    "0", "0.000000", 0, "-0.01", -1, "1.0000001", "1.000001", "2", 2, "0.0000001",
    "0.1234567", 0.001, 1.0, True, "abc", "", "0.5.1", "1e-3", "0x1", "NaN", "Infinity",
    "9" * 500, [], {},
])
def test_create_rejects_bad_price(client, app, owner, value):
    count = sa.select(sa.func.count()).select_from(Integration)
    with Session(app.registry["db.engine"]) as session:
        before = session.scalar(count)

    response = create(client, owner, status=400, pricing_model="paid", price_per_call=value)

    assert error_names(response) == ["price_per_call"], value
    with Session(app.registry["db.engine"]) as session:
        assert session.scalar(count) == before


def test_float_price_rejected_with_hint(client, owner):
    response = create(client, owner, status=400, pricing_model="paid", price_per_call=0.5)

    description = assert_envelope(response, 400)["errors"][0]["description"]
    assert "decimal string" in description


def test_paid_needs_a_price(client, app, owner):
    response = create(client, owner, status=400, pricing_model="paid")

    assert error_names(response) == ["price_cents", "price_per_call"]


@pytest.mark.parametrize("model", ["free", "freemium"])
def test_unpaid_models_reject_price(client, owner, model):
    response = create(client, owner, status=400, pricing_model=model, price_per_call="0.01")

    assert error_names(response) == ["price_per_call"]
    assert create(client, owner, pricing_model=model).json["price_per_call"] is None


# Updates --------------------------------------------------------------------------


def test_update_price_is_audited(client, app, owner):
    integration = create(client, owner).json

    paid = update(client, owner, integration, pricing_model="paid",
                  price_per_call="0.002").json
    assert paid["price_per_call"] == "0.002000"
    repriced = update(client, owner, integration, price_per_call="0.0035").json
    assert repriced["price_per_call"] == "0.003500"
    assert stored_price(app, integration) == Decimal("0.0035")
    # The same price again changes nothing.
    update(client, owner, integration, price_per_call="0.003500")

    with Session(app.registry["db.engine"]) as session:
        audited = [entry.details["fields"] for entry in session.scalars(
            sa.select(AuditEntry).where(AuditEntry.target_id == integration["id"],
                                        AuditEntry.action == "integration.updated")
            .order_by(AuditEntry.id))]
        changed = [payload["data"]["changed_fields"] for payload in session.scalars(
            sa.select(Event.payload).where(Event.type == "integration.updated")
            .order_by(Event.id))]
    assert audited == [["price_per_call", "pricing_model"], ["price_per_call"]]
    assert changed == audited


def test_update_rejects_bad_price(client, app, owner):
    integration = create(client, owner, pricing_model="paid", price_per_call="0.01").json
    for value in ("0", "-0.5", "1.0000001", "0.0000001", 0.01, "ten"):
        response = update(client, owner, integration, status=400, price_per_call=value)
        assert error_names(response) == ["price_per_call"], value
    assert stored_price(app, integration) == Decimal("0.01")


def test_paid_update_needs_a_price(client, app, owner):
    integration = create(client, owner, pricing_model="paid", price_per_call="0.01").json

    response = update(client, owner, integration, status=400, price_per_call=None)
    assert error_names(response) == ["price_cents", "price_per_call"]
    # With a monthly price, the per-call price can go.
    body = update(client, owner, integration, price_cents=500, price_per_call=None).json
    assert body["price"] == "5.00"
    assert body["price_per_call"] is None
    assert stored_price(app, integration) is None


def test_leaving_paid_drops_both_prices(client, app, owner):
    integration = create(client, owner, pricing_model="paid", price_cents=900,
                         price_per_call="0.01").json

    body = update(client, owner, integration, pricing_model="freemium").json

    assert body["price_cents"] is None
    assert body["price_per_call"] is None
    assert stored_price(app, integration) is None


def test_published_price_change_needs_review(client, app, owner):
    integration = create(client, owner, pricing_model="paid", price_per_call="0.01").json
    with Session(app.registry["db.engine"]) as session, session.begin():
        session.execute(sa.update(Integration)
                        .where(Integration.id == parse_id("int", integration["id"]))
                        .values(status="published"))

    response = update(client, owner, integration, status=409, price_per_call="0.02")

    assert assert_envelope(response, 409, "integration_published")["errors"][0]["name"] \
        == "price_per_call"
    assert stored_price(app, integration) == Decimal("0.01")


# The marketplace --------------------------------------------------------------------


def test_marketplace_shows_price_per_call(client, app, owner):
    priced = create(client, owner, name="Per Call Sync", pricing_model="paid",
                    price_cents=250, price_per_call="0.0004").json
    free = create(client, owner, name="Free Sync").json
    with Session(app.registry["db.engine"]) as session, session.begin():
        session.execute(sa.update(Integration).values(status="published"))
        session.execute(sa.update(Partner).values(status="active"))

    listed = {item["id"]: item["pricing"] for item in
              client.web.get(MARKETPLACE, params={"limit": 100}).json["data"]}
    detail = client.web.get(f"{MARKETPLACE}/{priced['id']}").json

    assert listed[priced["id"]] == {"model": "paid", "price_cents": 250,
                                    "price_per_call": "0.000400", "currency": "USD"}
    assert listed[free["id"]] == {"model": "free", "price_cents": None, "price_per_call": None,
                                  "currency": "USD"}
    assert detail["pricing"]["price_per_call"] == "0.000400"
