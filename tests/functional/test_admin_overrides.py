"""Admin overrides of a partner's plan, rate limits and commission, through to the gateway."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from fkod.admin.testing import admin_with_headers
from fkod.core.audit import AuditEntry
from fkod.core.auth.models import Partner
from fkod.core.billing.models import Plan
from fkod.core.db import run_in_transaction
from fkod.core.ids import parse_id
from fkod.core.testing import TestClient, auth_header
from tests.envelope import assert_envelope

pytestmark = pytest.mark.shared_app

PARTNERS = "/api/admin/partners"


@pytest.fixture
def headers(client) -> dict:
    return admin_with_headers(client, "finance")[1]


def put_overrides(client, headers, partner_id: str, body: dict, status: int = 200):
    return client.web.put_json(f"{PARTNERS}/{partner_id}/overrides", body, headers=headers,
                               status=status)


def load_partner(app, partner_id: str) -> Partner:
    number = parse_id("partner", partner_id)
    return run_in_transaction(app.registry["db.session_factory"],
                              lambda session: session.get(Partner, number))


def override_entries(app) -> list[AuditEntry]:
    def work(session):
        return session.scalars(sa.select(AuditEntry).where(
            AuditEntry.action == "partner.overrides_changed").order_by(AuditEntry.id)).all()

    return run_in_transaction(app.registry["db.session_factory"], work)


def add_plan(app, code: str, *, per_hour: int | None, per_day: int | None,
             active: bool = True) -> None:
    def work(session):
        session.add(Plan(code=code, name=code.title(), requests_per_hour=per_hour,
                         requests_per_day=per_day, active=active))

    run_in_transaction(app.registry["db.session_factory"], work)


def mentors(client, key: str, status: int = 200):
    return client.web.get("/api/v1/mentors", headers=auth_header(key), status=status)


# Validation ---------------------------------------------------------------------------


@pytest.mark.parametrize("body,field", [
    ({}, ""),
    ({"commission_rate": 0.25}, "commission_rate"),
    ({"commission_rate": "1.5"}, "commission_rate"),
    ({"commission_rate": "1.0001"}, "commission_rate"),
    ({"commission_rate": "-0.1"}, "commission_rate"),
    ({"commission_rate": "0.12345"}, "commission_rate"),
    ({"commission_rate": "abc"}, "commission_rate"),
    ({"commission_rate": "1e-1"}, "commission_rate"),
    ({"commission_rate": "NaN"}, "commission_rate"),
    ({"commission_rate": " 0.2"}, "commission_rate"),
    ({"commission_rate": ".5"}, "commission_rate"),
    ({"commission_rate": ""}, "commission_rate"),
    ({"rate_limits": {"hourly": 0}}, "rate_limits.hourly"),
    ({"rate_limits": {"hourly": -5}}, "rate_limits.hourly"),
    ({"rate_limits": {"hourly": "5"}}, "rate_limits.hourly"),
    ({"rate_limits": {"hourly": 1.5}}, "rate_limits.hourly"),
    ({"rate_limits": {"hourly": True}}, "rate_limits.hourly"),
    ({"rate_limits": {"daily": 10**10}}, "rate_limits.daily"),
    ({"rate_limits": {"weekly": 5}}, "rate_limits.weekly"),
    ({"rate_limits": "fast"}, "rate_limits"),
    ({"rate_limits": [1, 2]}, "rate_limits"),
    ({"plan": "no-such-plan"}, "plan"),
    ({"plan": 3}, "plan"),
    ({"plan": ""}, "plan"),
    ({"tier": "enterprise"}, "tier"),
    ({"plan_id": 1}, "plan_id"),
])
def test_overrides_reject_bad_body(client, app, headers, body, field):
    partner = client.register_partner()["partner"]

    response = put_overrides(client, headers, partner["id"], body, status=400)

    assert_envelope(response, 400, "validation_failed")
    assert field in [error["name"] for error in response.json["errors"]]
    row = load_partner(app, partner["id"])
    assert row.commission_rate is None
    assert row.rate_limit_overrides is None
    assert override_entries(app) == []


def test_inactive_plan_rejected(client, app, headers):
    add_plan(app, "legacy", per_hour=5, per_day=50, active=False)
    partner = client.register_partner()["partner"]

    response = put_overrides(client, headers, partner["id"], {"plan": "legacy"}, status=400)

    body = assert_envelope(response, 400, "validation_failed")
    assert body["errors"][0]["name"] == "plan"


def test_overrides_of_unknown_partner(client, headers):
    response = put_overrides(client, headers, "partner_999999", {"commission_rate": "0.1"},
                             status=404)

    assert_envelope(response, 404, "not_found")


# Stored values ------------------------------------------------------------------------


def test_overrides_stored_and_shown(client, app, headers):
    partner = client.register_partner()["partner"]

    body = put_overrides(client, headers, partner["id"], {
        "plan": "starter", "rate_limits": {"hourly": 50, "daily": None},
        "commission_rate": "0.25"}).json

    assert body["plan"]["code"] == "starter"
    assert body["rate_limit_overrides"] == {"hourly": 50, "daily": None}
    assert body["effective_rate_limits"] == {"hourly": 50, "daily": 10_000}
    assert body["commission_rate"] == "0.2500"
    row = load_partner(app, partner["id"])
    assert row.rate_limit_overrides == {"hourly": 50}
    assert str(row.commission_rate) == "0.2500"
    [entry] = override_entries(app)
    assert entry.details == {"changes": {
        "plan": {"from": "free", "to": "starter"},
        "rate_limits": {"from": None, "to": {"hourly": 50}},
        "commission_rate": {"from": None, "to": "0.2500"},
    }}
    assert entry.actor_type == "admin"


def test_put_changes_only_given_fields(client, app, headers):
    partner = client.register_partner()["partner"]
    put_overrides(client, headers, partner["id"], {
        "plan": "starter", "rate_limits": {"daily": 7}, "commission_rate": "1"})

    body = put_overrides(client, headers, partner["id"], {"commission_rate": None}).json

    assert body["plan"]["code"] == "starter"
    assert body["rate_limit_overrides"] == {"hourly": None, "daily": 7}
    assert body["commission_rate"] is None


def test_clearing_overrides(client, app, headers):
    partner = client.register_partner()["partner"]
    put_overrides(client, headers, partner["id"], {"plan": "starter",
                                                   "rate_limits": {"hourly": 9}})

    body = put_overrides(client, headers, partner["id"], {"plan": None,
                                                          "rate_limits": None}).json

    row = load_partner(app, partner["id"])
    assert row.plan_id is None
    assert row.rate_limit_overrides is None
    # Without a plan of its own the partner is on the default plan.
    assert body["plan"]["code"] == "free"
    assert body["rate_limit_overrides"] is None


@pytest.mark.shared_app(False)
def test_unchanged_overrides_not_audited(client, app, headers):
    partner = client.register_partner()["partner"]
    put_overrides(client, headers, partner["id"], {"commission_rate": "0.3"})

    put_overrides(client, headers, partner["id"], {"commission_rate": "0.3000"})

    assert len(override_entries(app)) == 1


# The gateway --------------------------------------------------------------------------


def test_hourly_override_reaches_gateway(client, headers):
    partner, token = client.partner_with_token()
    key = client.create_key(token, scopes=("mentors:read",))["key"]
    assert mentors(client, key).headers["X-RateLimit-Limit"] == "100"

    put_overrides(client, headers, partner["id"], {"rate_limits": {"hourly": 3}})
    limits = [mentors(client, key).headers["X-RateLimit-Limit"] for _ in range(2)]
    rejected = mentors(client, key, status=429)

    assert limits == ["3", "3"]
    assert rejected.headers["X-RateLimit-Limit"] == "3"
    assert_envelope(rejected, 429, "rate_limited")


def test_cleared_override_restores_plan_limit(client, headers):
    partner, token = client.partner_with_token()
    key = client.create_key(token, scopes=("mentors:read",))["key"]
    put_overrides(client, headers, partner["id"], {"rate_limits": {"hourly": 1}})
    mentors(client, key)
    mentors(client, key, status=429)

    put_overrides(client, headers, partner["id"], {"rate_limits": None})

    assert mentors(client, key).headers["X-RateLimit-Limit"] == "100"


def test_override_limits_unlimited_plan(client, headers):
    partner, token = client.partner_with_token()
    key = client.create_key(token, scopes=("mentors:read",))["key"]
    put_overrides(client, headers, partner["id"], {"plan": "enterprise"})
    assert "X-RateLimit-Limit" not in mentors(client, key).headers

    put_overrides(client, headers, partner["id"], {"rate_limits": {"daily": 2}})
    mentors(client, key)
    mentors(client, key)
    rejected = mentors(client, key, status=429)

    assert rejected.headers["X-RateLimit-Limit"] == "2"


def test_plan_change_reaches_gateway(client, app, headers):
    add_plan(app, "tiny", per_hour=2, per_day=None)
    partner, token = client.partner_with_token()
    key = client.create_key(token, scopes=("mentors:read",))["key"]
    mentors(client, key)

    put_overrides(client, headers, partner["id"], {"plan": "tiny"})

    assert mentors(client, key).headers["X-RateLimit-Limit"] == "2"


def test_limits_report_shows_override(client, headers):
    partner, token = client.partner_with_token()

    put_overrides(client, headers, partner["id"], {"rate_limits": {"hourly": 40}})
    report = client.web.get("/api/partners/limits", headers=auth_header(token)).json

    for mode in report["modes"]:
        windows = {window["name"]: window["limit"] for window in mode["windows"]}
        assert windows == {"hour": 40, "day": 1000}


def test_override_reaches_other_process(client, app_factory, headers):
    partner, token = client.partner_with_token()
    key = client.create_key(token, scopes=("mentors:read",))["key"]
    other = TestClient(app_factory())
    assert mentors(other, key).headers["X-RateLimit-Limit"] == "100"

    put_overrides(client, headers, partner["id"], {"rate_limits": {"hourly": 5}})
    # Another process trusts its cached overrides and key for at most a second.
    time.sleep(1.1)

    assert mentors(other, key).headers["X-RateLimit-Limit"] == "5"
