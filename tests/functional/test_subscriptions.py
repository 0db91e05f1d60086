"""The partner's subscription (``/api/partners/subscription``) and the proration rule."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import sqlalchemy as sa

from fkod.core.audit import AuditEntry
from fkod.core.auth.models import PartnerMember
from fkod.core.billing.models import Plan, PlanChange
from fkod.core.billing.periods import Period
from fkod.core.billing.plans import apply_due_changes, proration
from fkod.core.db import run_in_transaction
from fkod.core.ids import parse_id
from fkod.core.testing import auth_header
from tests.envelope import assert_envelope

pytestmark = pytest.mark.shared_app

SUBSCRIPTION = "/api/partners/subscription"
SCHEDULED = "/api/partners/subscription/scheduled-change"
LIMITS = "/api/partners/limits"


@pytest.fixture
def owner(client) -> tuple[dict, dict]:
    """A fresh partner on the default Free plan, with its owner's login headers."""
    partner, token = client.partner_with_token()
    return partner, auth_header(token)


def in_db(app, work):
    return run_in_transaction(app.registry["db.session_factory"], work)


def change_to(client, headers: dict, code: str, status: int = 200):
    return client.web.put_json(SUBSCRIPTION, {"plan": code}, headers=headers, status=status,
                               expect_errors=status >= 400)


def hourly_limit(client, headers: dict) -> int:
    body = client.web.get(LIMITS, headers=headers, status=200).json
    [hour] = [window for window in body["modes"][0]["windows"] if window["name"] == "hour"]
    return hour["limit"]


def subscription_audit(app, partner_id: str) -> list[tuple[str, dict]]:
    number = parse_id("partner", partner_id)
    return in_db(app, lambda session: [
        (entry.action, entry.details)
        for entry in session.scalars(sa.select(AuditEntry)
                                     .where(AuditEntry.partner_id == number,
                                            AuditEntry.action.like("subscription.%"))
                                     .order_by(AuditEntry.id))])


def parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.removesuffix("Z"))


def next_month_start() -> dt.datetime:
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    return Period.containing(now).next().start_at


# Reading ---------------------------------------------------------------------------------


def test_new_partner_is_on_the_default_plan(client, owner):
    _partner, headers = owner

    body = client.web.get(SUBSCRIPTION, headers=headers, status=200).json

    assert body["plan"]["code"] == "free"
    assert body["plan"]["price_monthly"] == "0.00"
    assert body["scheduled_change"] is None
    period = Period.containing(dt.datetime.now(dt.UTC))
    assert body["period"] == {"month": str(period), "start": period.start.isoformat(),
                              "end": period.end.isoformat()}


def test_reading_needs_a_member_token(client):
    response = client.web.get(SUBSCRIPTION, expect_errors=True)

    assert_envelope(response, 401)


# Upgrades ---------------------------------------------------------------------------------


def test_upgrade_applies_at_once_with_proration(client, app, owner):
    partner, headers = owner
    assert hourly_limit(client, headers) == 100

    body = change_to(client, headers, "starter").json

    assert body["plan"]["code"] == "starter"
    assert body["scheduled_change"] is None
    change = body["change"]
    assert change["kind"] == "upgrade"
    assert change["status"] == "applied"
    assert (change["from_plan"], change["to_plan"]) == ("free", "starter")
    assert change["currency"] == "USD"
    assert Decimal("0") < Decimal(change["proration"]) <= Decimal("99.00")
    assert len(change["proration"].split(".")[1]) == 2
    assert client.web.get(SUBSCRIPTION, headers=headers).json["plan"]["code"] == "starter"
    assert hourly_limit(client, headers) == 1000
    [(action, details)] = subscription_audit(app, partner["id"])
    assert action == "subscription.upgrade"
    assert details["from"] == "free"
    assert details["to"] == "starter"
    assert details["proration"] == change["proration"]


def test_upgrade_raises_cached_key_limit(client):
    _partner, token = client.partner_with_token()
    headers = auth_header(token)
    key = client.create_key(token, scopes=("mentors:read",))["key"]
    first = client.web.get("/api/v1/mentors", headers=auth_header(key), status=200)
    assert first.headers["X-RateLimit-Limit"] == "100"

    change_to(client, headers, "professional")

    second = client.web.get("/api/v1/mentors", headers=auth_header(key), status=200)
    assert second.headers["X-RateLimit-Limit"] == "10000"


# Downgrades -------------------------------------------------------------------------------


def test_downgrade_waits_for_next_month(client, app, owner):
    partner, headers = owner
    change_to(client, headers, "starter")

    body = change_to(client, headers, "free").json

    effective_at = next_month_start()
    assert body["plan"]["code"] == "starter"
    assert body["change"]["kind"] == "downgrade"
    assert body["change"]["status"] == "scheduled"
    assert body["change"]["proration"] == "0.00"
    assert parse_time(body["change"]["effective_at"]) == effective_at
    assert body["scheduled_change"]["plan"] == "free"
    assert parse_time(body["scheduled_change"]["effective_at"]) == effective_at
    assert hourly_limit(client, headers) == 1000
    assert [action for action, _ in subscription_audit(app, partner["id"])] == [
        "subscription.upgrade", "subscription.downgrade"]

    assert in_db(app, lambda session: apply_due_changes(
        session, now=effective_at - dt.timedelta(seconds=1))) == 0
    assert client.web.get(SUBSCRIPTION, headers=headers).json["plan"]["code"] == "starter"

    assert in_db(app, lambda session: apply_due_changes(session, now=effective_at)) == 1
    after = client.web.get(SUBSCRIPTION, headers=headers).json
    assert after["plan"]["code"] == "free"
    assert after["scheduled_change"] is None
    assert hourly_limit(client, headers) == 100


def test_second_request_replaces_scheduled_change(client, app, owner):
    partner, headers = owner
    change_to(client, headers, "professional")
    change_to(client, headers, "free")

    body = change_to(client, headers, "starter").json

    assert body["plan"]["code"] == "professional"
    assert body["scheduled_change"]["plan"] == "starter"
    statuses = in_db(app, lambda session: [
        (change.kind, change.status) for change in session.scalars(
            sa.select(PlanChange).where(PlanChange.partner_id == parse_id("partner",
                                                                          partner["id"]))
            .order_by(PlanChange.id))])
    assert statuses == [("upgrade", "applied"), ("downgrade", "cancelled"),
                        ("downgrade", "scheduled")]


def test_upgrade_replaces_a_scheduled_downgrade(client, owner):
    _partner, headers = owner
    change_to(client, headers, "starter")
    change_to(client, headers, "free")

    body = change_to(client, headers, "professional").json

    assert body["plan"]["code"] == "professional"
    assert body["scheduled_change"] is None
    assert Decimal(body["change"]["proration"]) > 0


def test_current_plan_cancels_scheduled_change(client, owner):
    _partner, headers = owner
    change_to(client, headers, "starter")
    change_to(client, headers, "free")

    body = change_to(client, headers, "starter").json

    assert body["plan"]["code"] == "starter"
    assert body["scheduled_change"] is None
    assert body["change"]["status"] == "cancelled"


@pytest.mark.shared_app(False)
def test_delete_cancels_the_scheduled_change(client, app, owner):
    partner, headers = owner
    change_to(client, headers, "starter")
    change_to(client, headers, "free")

    body = client.web.delete(SCHEDULED, headers=headers, status=200).json

    assert body["plan"]["code"] == "starter"
    assert body["scheduled_change"] is None
    assert body["change"]["status"] == "cancelled"
    assert body["change"]["to_plan"] == "free"
    assert subscription_audit(app, partner["id"])[-1][0] == "subscription.change_cancelled"
    assert in_db(app, lambda session: apply_due_changes(session, now=next_month_start())) == 0
    assert client.web.get(SUBSCRIPTION, headers=headers).json["plan"]["code"] == "starter"


def test_delete_without_scheduled_change_is_404(client, owner):
    _partner, headers = owner

    response = client.web.delete(SCHEDULED, headers=headers, expect_errors=True)

    assert_envelope(response, 404, "not_found")


# Refused changes --------------------------------------------------------------------------


def test_same_plan_is_409(client, app, owner):
    partner, headers = owner

    response = change_to(client, headers, "free", status=409)

    assert_envelope(response, 409, "plan_unchanged")
    assert subscription_audit(app, partner["id"]) == []


@pytest.mark.parametrize(("code", "setup"), [
    ("enterprise", {}),
    ("nonexistent", {}),
    ("starter", {"active": False}),
    ("starter", {"currency": "EUR"}),
])
def test_unavailable_plan_is_400(client, app, owner, code, setup):
    partner, headers = owner
    if setup:
        in_db(app, lambda session: session.execute(
            sa.update(Plan).where(Plan.code == code).values(**setup)))

    response = change_to(client, headers, code, status=400)

    body = assert_envelope(response, 400, "validation_failed")
    assert body["errors"][0]["location"] == "body"
    assert body["errors"][0]["name"] == "plan"
    assert client.web.get(SUBSCRIPTION, headers=headers).json["plan"]["code"] == "free"
    assert subscription_audit(app, partner["id"]) == []


@pytest.mark.parametrize("body", [{}, {"plan": 3}, {"plan": "starter", "when": "now"}])
def test_invalid_body_is_400(client, owner, body):
    _partner, headers = owner

    response = client.web.put_json(SUBSCRIPTION, body, headers=headers, expect_errors=True)

    assert_envelope(response, 400, "validation_failed")


def test_read_only_member_cannot_change_plan(client, app, owner):
    partner, headers = owner
    in_db(app, lambda session: session.execute(
        sa.update(PartnerMember)
        .where(PartnerMember.partner_id == parse_id("partner", partner["id"]))
        .values(role="read_only")))

    client.web.get(SUBSCRIPTION, headers=headers, status=200)
    changed = change_to(client, headers, "starter", status=403)
    cancelled = client.web.delete(SCHEDULED, headers=headers, expect_errors=True)

    assert_envelope(changed, 403, "missing_permission")
    assert_envelope(cancelled, 403, "missing_permission")
    assert client.web.get(SUBSCRIPTION, headers=headers).json["plan"]["code"] == "free"


# Proration --------------------------------------------------------------------------------


def priced(amount: str) -> Plan:
    return Plan(code="p", name="p", price_monthly=Decimal(amount))


def test_proration_at_month_start_is_the_full_difference():
    assert proration(priced("0.00"), priced("99.00"), dt.datetime(2026, 11, 1)) == Decimal(
        "99.00")
    assert proration(priced("99.00"), priced("499.00"), dt.datetime(2026, 2, 1)) == Decimal(
        "400.00")


def test_proration_at_mid_month_is_half():
    # November has 30 days, so the 16th at midnight leaves exactly half of it.
    moment = dt.datetime(2026, 11, 16)

    assert proration(priced("0.00"), priced("99.00"), moment) == Decimal("49.50")
    assert proration(None, priced("499.00"), moment) == Decimal("249.50")


def test_proration_rounds_half_up_to_the_cent():
    moment = dt.datetime(2026, 11, 16)

    # Half of 0.05 is 0.025: half up gives 0.03 where banker's rounding gives 0.02.
    assert proration(priced("0.00"), priced("0.05"), moment) == Decimal("0.03")
    # Half of 0.01 is 0.005, which rounds up to a cent.
    assert proration(priced("1.00"), priced("1.01"), moment) == Decimal("0.01")


def test_proration_in_last_second_is_zero():
    last_second = dt.datetime(2026, 11, 30, 23, 59, 59)

    assert proration(priced("0.00"), priced("99.00"), last_second) == Decimal("0.00")


def test_proration_of_cheaper_plan_is_zero():
    assert proration(priced("99.00"), priced("0.00"), dt.datetime(2026, 11, 1)) == Decimal(
        "0.00")
