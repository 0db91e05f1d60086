"""The public plan list (``/api/plans``) and the admin plan API (``/api/admin/plans``)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from fkod.admin.testing import admin_with_headers
from fkod.core.audit import AuditEntry
from fkod.core.auth.models import Partner
from fkod.core.billing.models import Plan
from fkod.core.db import run_in_transaction
from fkod.core.ids import parse_id
from fkod.core.testing import auth_header
from tests.envelope import assert_envelope

PUBLIC = "/api/plans"
ADMIN = "/api/admin/plans"


@pytest.fixture
def superadmin(client) -> dict:
    return admin_with_headers(client, "superadmin")[1]


def plan_body(**fields) -> dict:
    body = {"code": "growth", "name": "Growth", "price_monthly": "199.00",
            "requests_per_hour": 5_000, "requests_per_day": 50_000,
            "included_requests_monthly": 1_000_000}
    body.update(fields)
    return body


def in_db(app, work):
    return run_in_transaction(app.registry["db.session_factory"], work)


def set_plan(app, code: str, **values) -> None:
    in_db(app, lambda session: session.execute(
        sa.update(Plan).where(Plan.code == code).values(**values)))


def plan_audit(app) -> list[tuple[str, str, dict]]:
    return in_db(app, lambda session: [
        (entry.action, entry.target_id, entry.details)
        for entry in session.scalars(sa.select(AuditEntry)
                                     .where(AuditEntry.action.like("plan.%"))
                                     .order_by(AuditEntry.id))])


def default_codes(app) -> list[str]:
    return in_db(app, lambda session: list(session.scalars(
        sa.select(Plan.code).where(Plan.is_default.is_(True)))))


def first_error(response) -> dict:
    return assert_envelope(response, 400, "validation_failed")["errors"][0]


# The public list ------------------------------------------------------------------------


def test_public_list_hides_other_plans(client, app):
    set_plan(app, "professional", active=False)

    body = client.web.get(PUBLIC, status=200).json

    assert [plan["code"] for plan in body["data"]] == ["free", "starter", "pay_as_you_go"]
    assert body["has_more"] is False
    starter = body["data"][1]
    assert starter == {
        "code": "starter", "name": "Starter", "price_monthly": "99.00", "currency": "USD",
        "requests_per_hour": 1000, "requests_per_day": 10000,
        "included_requests_monthly": 300000, "overage_price_per_request": "0.001000",
        "is_default": False,
    }
    assert body["data"][0]["is_default"] is True


def test_public_list_pages(client):
    first = client.web.get(f"{PUBLIC}?limit=2", status=200).json
    second = client.web.get(f"{PUBLIC}?limit=2&cursor={first['next_cursor']}", status=200).json

    assert first["has_more"] is True
    assert [plan["code"] for plan in first["data"] + second["data"]] == [
        "free", "starter", "professional", "pay_as_you_go"]
    assert second["has_more"] is False


# Reading as an admin ----------------------------------------------------------------------


def test_admin_list_includes_enterprise_and_inactive(client, app):
    set_plan(app, "pay_as_you_go", active=False)
    headers = admin_with_headers(client, "readonly")[1]

    every = client.web.get(ADMIN, headers=headers, status=200).json["data"]
    inactive = client.web.get(f"{ADMIN}?active=false", headers=headers, status=200).json["data"]
    active = client.web.get(f"{ADMIN}?active=true", headers=headers, status=200).json["data"]

    assert [plan["code"] for plan in every] == [
        "free", "starter", "professional", "enterprise", "pay_as_you_go"]
    enterprise = every[3]
    assert enterprise["self_serve"] is False
    assert enterprise["requests_per_hour"] is None
    assert enterprise["included_requests_monthly"] is None
    assert [plan["code"] for plan in inactive] == ["pay_as_you_go"]
    assert "pay_as_you_go" not in [plan["code"] for plan in active]


def test_admin_list_rejects_bad_filter(client, superadmin):
    response = client.web.get(f"{ADMIN}?active=yes", headers=superadmin, expect_errors=True)

    assert first_error(response)["name"] == "active"


def test_get_plan_by_code(client, superadmin):
    body = client.web.get(f"{ADMIN}/professional", headers=superadmin, status=200).json

    assert body["price_monthly"] == "499.00"
    assert body["active"] is True
    assert body["created_at"].endswith("Z")


def test_unknown_plan_is_404(client, superadmin):
    for response in (
        client.web.get(f"{ADMIN}/nope", headers=superadmin, expect_errors=True),
        client.web.put_json(f"{ADMIN}/nope", {"name": "X"}, headers=superadmin,
                            expect_errors=True),
    ):
        body = assert_envelope(response, 404, "not_found")
        assert body["errors"][0]["name"] == "code"


def test_partner_token_cannot_use_admin_api(client):
    _partner, token = client.partner_with_token()

    response = client.web.get(ADMIN, headers=auth_header(token), expect_errors=True)

    assert_envelope(response, 401)


# Creating --------------------------------------------------------------------------------


def test_create_plan(client, app, superadmin):
    response = client.web.post_json(ADMIN, plan_body(overage_price_per_request="0.0005"),
                                    headers=superadmin, status=201)

    body = response.json
    assert body["code"] == "growth"
    assert body["price_monthly"] == "199.00"
    assert body["currency"] == "USD"
    assert body["overage_price_per_request"] == "0.000500"
    assert body["self_serve"] is True
    assert body["active"] is True
    assert body["is_default"] is False
    assert "growth" in [plan["code"] for plan in client.web.get(PUBLIC).json["data"]]
    [(action, target, details)] = plan_audit(app)
    assert (action, target) == ("plan.created", "growth")
    assert details["price_monthly"] == "199.00"
    assert details["requests_per_hour"] == 5000


def test_create_plan_with_unlimited_windows(client, superadmin):
    body = client.web.post_json(ADMIN, plan_body(requests_per_hour=None, requests_per_day=None,
                                                 included_requests_monthly=None,
                                                 price_monthly=0, self_serve=False),
                                headers=superadmin, status=201).json

    assert body["requests_per_hour"] is None
    assert body["price_monthly"] == "0.00"
    assert "growth" not in [plan["code"] for plan in client.web.get(PUBLIC).json["data"]]


def test_duplicate_code_is_409(client, superadmin):
    client.web.post_json(ADMIN, plan_body(), headers=superadmin, status=201)

    again = client.web.post_json(ADMIN, plan_body(name="Other"), headers=superadmin,
                                 expect_errors=True)
    seeded = client.web.post_json(ADMIN, plan_body(code="starter"), headers=superadmin,
                                  expect_errors=True)

    assert_envelope(again, 409, "plan_code_taken")
    assert assert_envelope(seeded, 409, "plan_code_taken")["errors"][0]["name"] == "code"


@pytest.mark.shared_app
@pytest.mark.parametrize(("fields", "name", "words"), [
    ({"currency": "EUR"}, "currency", "other currencies are rejected"),
    ({"price_monthly": "-1.00"}, "price_monthly", "0 or more"),
    ({"price_monthly": "9.999"}, "price_monthly", "at most 2 decimal places"),
    ({"price_monthly": 9.99}, "price_monthly", "decimal string"),
    ({"price_monthly": "ten"}, "price_monthly", "decimal string"),
    ({"price_monthly": "12345678901234.00"}, "price_monthly", "13 digits"),
    ({"overage_price_per_request": "0.0000001"}, "overage_price_per_request",
     "at most 6 decimal places"),
    ({"overage_price_per_request": "-0.001"}, "overage_price_per_request", "0 or more"),
    ({"code": "Growth"}, "code", "lowercase"),
    ({"code": "9lives"}, "code", "lowercase"),
    ({"code": "g"}, "code", "lowercase"),
    ({"code": "has-dash"}, "code", "lowercase"),
    ({"code": "a" * 51}, "code", "lowercase"),
    ({"requests_per_hour": 0}, "requests_per_hour", ""),
    ({"requests_per_day": "100"}, "requests_per_day", "integer"),
    ({"included_requests_monthly": -1}, "included_requests_monthly", ""),
    ({"name": ""}, "name", ""),
    ({"self_serve": "yes"}, "self_serve", ""),
    ({"is_default": True, "active": False}, "is_default", "inactive"),
    ({"plan_id": 4}, "plan_id", "Unknown field"),
])
def test_create_rejects_invalid_fields(client, app, superadmin, fields, name, words):
    response = client.web.post_json(ADMIN, plan_body(**fields), headers=superadmin,
                                    expect_errors=True)

    error = first_error(response)
    assert error["location"] == "body"
    assert error["name"] == name
    assert words in error["description"]
    assert plan_audit(app) == []


def test_create_needs_the_limits(client, superadmin):
    body = plan_body()
    del body["requests_per_hour"]

    response = client.web.post_json(ADMIN, body, headers=superadmin, expect_errors=True)

    assert first_error(response)["name"] == "requests_per_hour"


@pytest.mark.parametrize("role", ["readonly", "support"])
def test_write_needs_plans_write(client, app, role):
    headers = admin_with_headers(client, role)[1]

    created = client.web.post_json(ADMIN, plan_body(), headers=headers, expect_errors=True)
    updated = client.web.put_json(f"{ADMIN}/starter", {"name": "Changed"}, headers=headers,
                                  expect_errors=True)

    assert_envelope(created, 403, "missing_permission")
    assert_envelope(updated, 403, "missing_permission")
    assert client.web.get(PUBLIC).json["data"][1]["name"] == "Starter"


def test_finance_role_can_change_plans(client):
    headers = admin_with_headers(client, "finance")[1]

    client.web.post_json(ADMIN, plan_body(), headers=headers, status=201)
    client.web.put_json(f"{ADMIN}/growth", {"name": "Growth+"}, headers=headers, status=200)


def test_support_role_cannot_read_plans(client):
    headers = admin_with_headers(client, "support")[1]

    response = client.web.get(ADMIN, headers=headers, expect_errors=True)

    assert_envelope(response, 403, "missing_permission")


# Updating --------------------------------------------------------------------------------


def test_update_changes_given_fields(client, app, superadmin):
    body = client.web.put_json(f"{ADMIN}/starter",
                               {"price_monthly": "89.50", "name": "Starter", "active": True},
                               headers=superadmin, status=200).json

    assert body["price_monthly"] == "89.50"
    assert body["requests_per_hour"] == 1000
    assert client.web.get(f"{ADMIN}/starter", headers=superadmin).json["price_monthly"] == "89.50"
    [(action, target, details)] = plan_audit(app)
    assert (action, target) == ("plan.updated", "starter")
    assert details == {"fields": ["price_monthly"],
                       "changes": {"price_monthly": {"old": "99.00", "new": "89.50"}}}


def test_update_without_change_is_not_audited(client, app, superadmin):
    client.web.put_json(f"{ADMIN}/starter", {"name": "Starter"}, headers=superadmin, status=200)

    assert plan_audit(app) == []


@pytest.mark.parametrize(("body", "name"), [
    ({}, ""),
    ({"code": "renamed"}, "code"),
    ({"currency": "EUR"}, "currency"),
    ({"price_monthly": "1.001"}, "price_monthly"),
    ({"requests_per_hour": -5}, "requests_per_hour"),
])
def test_update_rejects_invalid_fields(client, superadmin, body, name):
    response = client.web.put_json(f"{ADMIN}/starter", body, headers=superadmin,
                                   expect_errors=True)

    assert first_error(response)["name"] == name


def test_limits_can_become_unlimited(client, superadmin):
    body = client.web.put_json(f"{ADMIN}/starter", {"requests_per_day": None},
                               headers=superadmin, status=200).json

    assert body["requests_per_day"] is None
    assert body["requests_per_hour"] == 1000


def test_deactivated_plan_leaves_public_list(client, superadmin):
    client.web.put_json(f"{ADMIN}/starter", {"active": False}, headers=superadmin, status=200)

    assert "starter" not in [plan["code"] for plan in client.web.get(PUBLIC).json["data"]]


# The default plan ----------------------------------------------------------------------


def test_new_default_unsets_previous(client, app, superadmin):
    body = client.web.put_json(f"{ADMIN}/starter", {"is_default": True}, headers=superadmin,
                               status=200).json

    assert body["is_default"] is True
    assert default_codes(app) == ["starter"]
    public = {plan["code"]: plan["is_default"] for plan in client.web.get(PUBLIC).json["data"]}
    assert public["free"] is False
    assert public["starter"] is True
    audited = plan_audit(app)
    assert ("plan.updated", "free") in [(action, target) for action, target, _ in audited]
    assert audited[-1][2]["changes"] == {"is_default": {"old": False, "new": True}}


def test_new_partner_gets_the_new_default(client, app, superadmin):
    client.web.put_json(f"{ADMIN}/starter", {"is_default": True}, headers=superadmin,
                        status=200)

    _partner, token = client.partner_with_token()

    body = client.web.get("/api/partners/limits", headers=auth_header(token)).json
    assert body["plan"]["code"] == "starter"


def test_created_default_unsets_previous(client, app, superadmin):
    client.web.post_json(ADMIN, plan_body(is_default=True), headers=superadmin, status=201)

    assert default_codes(app) == ["growth"]


def test_default_plan_cannot_be_deactivated(client, app, superadmin):
    response = client.web.put_json(f"{ADMIN}/free", {"active": False}, headers=superadmin,
                                   expect_errors=True)

    assert assert_envelope(response, 409, "plan_is_default")["errors"][0]["name"] == "active"
    assert client.web.get(f"{ADMIN}/free", headers=superadmin).json["active"] is True


def test_default_plan_cannot_be_unset_directly(client, app, superadmin):
    response = client.web.put_json(f"{ADMIN}/free", {"is_default": False}, headers=superadmin,
                                   expect_errors=True)

    assert_envelope(response, 409, "plan_is_default")
    assert default_codes(app) == ["free"]


def test_inactive_plan_cannot_become_default(client, app, superadmin):
    set_plan(app, "starter", active=False)

    response = client.web.put_json(f"{ADMIN}/starter", {"is_default": True},
                                   headers=superadmin, expect_errors=True)
    both = client.web.put_json(f"{ADMIN}/starter", {"is_default": True, "active": True},
                               headers=superadmin, status=200)

    assert_envelope(response, 409, "plan_inactive")
    assert both.json["is_default"] is True
    assert default_codes(app) == ["starter"]


def test_former_default_can_be_deactivated(client, superadmin):
    client.web.put_json(f"{ADMIN}/starter", {"is_default": True}, headers=superadmin,
                        status=200)

    body = client.web.put_json(f"{ADMIN}/free", {"active": False}, headers=superadmin,
                               status=200).json

    assert body["active"] is False


# Limits reach the gateway ----------------------------------------------------------------


def gateway_limit(client, key: str) -> str:
    response = client.web.get("/api/v1/mentors", headers=auth_header(key), status=200)
    return response.headers["X-RateLimit-Limit"]


def test_limit_change_reaches_cached_keys(client, app, superadmin):
    _partner, token = client.partner_with_token()
    key = client.create_key(token, scopes=("mentors:read",))["key"]
    assert gateway_limit(client, key) == "100"

    client.web.put_json(f"{ADMIN}/free", {"requests_per_hour": 7}, headers=superadmin,
                        status=200)

    assert gateway_limit(client, key) == "7"
    limits = client.web.get("/api/partners/limits", headers=auth_header(token)).json
    assert limits["modes"][0]["windows"][0]["limit"] == 7


def test_default_change_reaches_planless_partners(client, app, superadmin):
    partner, token = client.partner_with_token()
    in_db(app, lambda session: setattr(
        session.get(Partner, parse_id("partner", partner["id"])), "plan_id", None))
    key = client.create_key(token, scopes=("mentors:read",))["key"]
    assert gateway_limit(client, key) == "100"

    client.web.put_json(f"{ADMIN}/starter", {"is_default": True}, headers=superadmin,
                        status=200)

    assert gateway_limit(client, key) == "1000"
