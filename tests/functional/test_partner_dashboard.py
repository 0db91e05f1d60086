"""The partner dashboard (``GET /api/partners/dashboard``) and analytics
(``GET /api/partners/analytics``).

Most tests freeze the clock of the dashboard module at NOW, seed usage roll-ups,
installs, revenue, ledger postings, payouts, tickets and webhooks around it,
and check every figure. Another partner gets the same kinds of data, which
must never show.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import sqlalchemy as sa

from fkod.core.auth.models import Partner, PartnerMember, User
from fkod.core.billing.ledger import credit, debit, post
from fkod.core.billing.models import PartnerRevenue, Payout, Plan
from fkod.core.db import run_in_transaction, utcnow
from fkod.core.ids import parse_id
from fkod.core.metering.models import ApiUsage, ApiUsageHourly
from fkod.core.metering.rollup import (
    ensure_rollup_state,
    lock_rollup_state,
    save_rollup_state,
)
from fkod.core.testing import auth_header
from fkod.core.webhooks.models import Webhook
from fkod.marketplace.models import Integration, IntegrationInstall
from fkod.partners.models import SupportTicket
from tests.envelope import assert_envelope

pytestmark = pytest.mark.shared_app

DASHBOARD = "/api/partners/dashboard"
ANALYTICS = "/api/partners/analytics"
NOW = dt.datetime(2026, 11, 20, 12, 30)
# The roll-up job has rolled up every hour before this one.
ROLLED_UNTIL = dt.datetime(2026, 11, 20, 12)


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


@pytest.fixture
def frozen(monkeypatch):
    """Set the clock of the dashboard and analytics modules to NOW."""
    monkeypatch.setattr("fkod.partners.dashboard.utcnow", lambda: NOW)
    monkeypatch.setattr("fkod.partners.dashboard_views.utcnow", lambda: NOW)


def run(app, work):
    return run_in_transaction(app.registry["db.session_factory"], work)


def hourly_row(partner_id: int, hour: str, count: int, *, status: int = 200,
               livemode: bool = True) -> dict:
    return {
        "hour": at(hour), "api_key_id": None, "partner_id": partner_id, "livemode": livemode,
        "endpoint": "/api/v1/mentors", "method": "GET", "status_code": status,
        "request_count": count, "total_response_time_ms": 20 * count,
        "max_response_time_ms": 20, "request_bytes": 0, "response_bytes": 300 * count,
        "latency_histogram": {"50": count},
    }


def raw_row(partner_id: int, created_at: str, *, livemode: bool = True) -> dict:
    return {
        "api_key_id": None, "partner_id": partner_id, "endpoint": "/api/v1/mentors",
        "method": "GET", "status_code": 200, "response_time": 20, "request_size": 0,
        "response_size": 300, "error_message": None, "livemode": livemode,
        "request_id": None, "created_at": at(created_at),
    }


def seed_usage(app, hourly: list[dict], raw: list[dict] = ()) -> None:
    engine = app.registry["db.engine"]
    ensure_rollup_state(engine)
    with engine.begin() as connection:
        connection.execute(ApiUsageHourly.__table__.insert(), hourly)
        if raw:
            connection.execute(ApiUsage.__table__.insert(), list(raw))
        state = lock_rollup_state(connection)
        save_rollup_state(connection, type(state)(rolled_until=ROLLED_UNTIL))


def revenue_row(partner_id: int, month: str, gross: str, commission: str, share: str,
                status: str = "pending") -> PartnerRevenue:
    start = dt.date.fromisoformat(f"{month}-01")
    end = (start + dt.timedelta(days=32)).replace(day=1) - dt.timedelta(days=1)
    return PartnerRevenue(partner_id=partner_id, period_start=start, period_end=end,
                          revenue=Decimal(gross), commission_amount=Decimal(commission),
                          partner_share=Decimal(share), status=status)


def webhook(partner_id: int, url: str, *, livemode: bool = True, status: str = "active",
            failing_since: str | None = None, disabled_at: str | None = None,
            disabled_reason: str | None = None) -> Webhook:
    return Webhook(partner_id=partner_id, event_type="partner.verified",
                   event_types=["partner.verified"], url=url, secret_key="not-a-real-token",
                   livemode=livemode, status=status,
                   failing_since=at(failing_since) if failing_since else None,
                   disabled_at=at(disabled_at) if disabled_at else None,
                   disabled_reason=disabled_reason, created_at=at("2026-09-01T00:00:00"))


def payout(partner_id: int, amount: str, status: str, source: str = "run") -> Payout:
    return Payout(partner_id=partner_id, amount=Decimal(amount), source=source,
                  payout_method="bank_transfer", provider="ledger", status=status,
                  idempotency_key=f"payout-{partner_id}-{status}-{amount}",
                  created_at=at("2026-11-18T09:00:00"))


def seed_marketplace(app, partner_id: int, installs: list[tuple[str, str | None]]) -> None:
    """Give the partner an integration with one install per (installed_at, uninstalled_at)."""
    def work(session):
        integration = Integration(partner_id=partner_id, name=f"Sync {partner_id}",
                                  slug=f"sync-{partner_id}", status="published")
        session.add(integration)
        session.flush()
        for number, (installed, uninstalled) in enumerate(installs):
            user = User(email=f"customer{number}-{partner_id}@example.com")
            session.add(user)
            session.flush()
            session.add(IntegrationInstall(
                integration_id=integration.id, user_id=user.id,
                status="uninstalled" if uninstalled else "active",
                installed_at=at(installed),
                uninstalled_at=at(uninstalled) if uninstalled else None))

    run(app, work)


def seed_partner(app, partner_id: int) -> dict:
    """Seed the full set of data for the main partner; return the ids the tests check."""
    seed_usage(app, [
        # The last hour of October belongs to October.
        hourly_row(partner_id, "2026-10-31T23:00:00", 4),
        hourly_row(partner_id, "2026-11-01T00:00:00", 10),
        hourly_row(partner_id, "2026-11-05T10:00:00", 2, status=500),
        hourly_row(partner_id, "2026-11-05T10:00:00", 3, status=404),
        hourly_row(partner_id, "2026-11-06T08:00:00", 7, livemode=False),
    ], [
        # The current hour is not rolled up yet, so it is read from the raw rows.
        raw_row(partner_id, "2026-11-20T12:10:00"),
    ])
    seed_marketplace(app, partner_id, [
        ("2026-10-15T08:00:00", "2026-11-04T09:00:00"),
        ("2026-10-31T23:30:00", None),
        ("2026-11-03T10:00:00", None),
    ])

    def work(session):
        session.add_all([
            revenue_row(partner_id, "2026-09", "50.00", "15.00", "35.00", status="paid"),
            revenue_row(partner_id, "2026-10", "1000.00", "300.00", "700.00"),
            revenue_row(partner_id, "2026-11", "200.00", "60.00", "140.00"),
            SupportTicket(partner_id=partner_id, title="Keys", description="A question",
                          status="open"),
            SupportTicket(partner_id=partner_id, title="Limits", description="Answered",
                          status="waiting_on_partner"),
            SupportTicket(partner_id=partner_id, title="Old", description="Done",
                          status="closed"),
            payout(partner_id, "35.00", "paid"),
        ])
        post(session, kind="revenue", reference=f"test-revenue-{partner_id}",
             description="October revenue share",
             lines=[debit("marketplace_funding", Decimal("700")),
                    credit("partner_payable", Decimal("700"), partner_id)])
        hooks = [
            webhook(partner_id, "https://slow.example/hook", failing_since="2026-11-19T08:00:00"),
            webhook(partner_id, "https://gone.example/hook", status="disabled",
                    disabled_at="2026-11-10T00:00:00",
                    disabled_reason="the receiver answered 410 Gone"),
            webhook(partner_id, "https://fine.example/hook"),
            webhook(partner_id, "https://sandbox.example/hook", livemode=False,
                    failing_since="2026-11-01T00:00:00"),
            webhook(partner_id, "https://removed.example/hook", status="deleted",
                    failing_since="2026-11-01T00:00:00"),
        ]
        session.add_all(hooks)
        session.flush()
        return {"slow": hooks[0].id, "gone": hooks[1].id, "sandbox": hooks[3].id}

    return run(app, work)


def seed_other_partner(app, partner_id: int) -> None:
    """Data of another partner, in every table the dashboard reads."""
    seed_usage(app, [hourly_row(partner_id, "2026-11-02T00:00:00", 100),
                     hourly_row(partner_id, "2026-11-02T00:00:00", 9, status=503)])
    seed_marketplace(app, partner_id, [("2026-11-02T00:00:00", None)])

    def work(session):
        session.add_all([
            revenue_row(partner_id, "2026-11", "999.00", "299.70", "699.30"),
            revenue_row(partner_id, "2026-10", "10.00", "3.00", "7.00"),
            SupportTicket(partner_id=partner_id, title="Other", description="x", status="open"),
            payout(partner_id, "500.00", "pending"),
            webhook(partner_id, "https://other.example/hook",
                    failing_since="2026-10-01T00:00:00"),
        ])
        post(session, kind="revenue", reference=f"test-revenue-{partner_id}",
             description="Revenue share",
             lines=[debit("marketplace_funding", Decimal("5000")),
                    credit("partner_payable", Decimal("5000"), partner_id)])

    run(app, work)


@pytest.fixture
def seeded(client, app, frozen):
    partner, token = client.partner_with_token()
    other, _other_token = client.partner_with_token()
    partner_id = parse_id("partner", partner["id"])
    ids = seed_partner(app, partner_id)
    seed_other_partner(app, parse_id("partner", other["id"]))
    return {"partner": partner, "partner_id": partner_id, "headers": auth_header(token), **ids}


# The dashboard -------------------------------------------------------------------------


def test_dashboard_figures(client, seeded):
    body = client.web.get(DASHBOARD, headers=seeded["headers"], status=200).json

    assert body["mode"] == "live"
    assert body["generated_at"] == "2026-11-20T12:30:00Z"
    assert body["period"] == {"start": "2026-11-01", "end": "2026-11-30"}
    # November has 10 + 2 + 3 rolled-up calls and 1 raw call of the current hour.
    # The October calls and the 7 test-mode calls are not counted.
    assert body["calls"] == {"count": 16, "error_count": 5, "error_rate": 0.3125}
    quota = body["quota"]
    assert {name: quota[name] for name in ("plan", "included_requests", "used", "remaining",
                                           "overage_requests")} == {
        "plan": "free", "included_requests": 30000, "used": 16, "remaining": 29984,
        "overage_requests": 0}
    windows = {window["name"]: window for window in quota["windows"]}
    assert set(windows) == {"hour", "day"}
    assert windows["hour"]["limit"] == 100
    assert windows["hour"]["remaining"] == 100
    assert windows["day"]["limit"] == 1000
    assert windows["day"]["remaining"] == 1000
    assert windows["hour"]["window_seconds"] == 3600
    assert body["revenue"] == {
        "currency": "USD",
        "current_period": {"period_start": "2026-11-01", "period_end": "2026-11-30",
                           "gross": "200.00", "commission": "60.00", "partner_share": "140.00",
                           "status": "pending"},
        "last_closed_period": {"period_start": "2026-10-01", "period_end": "2026-10-31",
                               "gross": "1000.00", "commission": "300.00",
                               "partner_share": "700.00", "status": "pending"},
    }
    assert body["balance"] == {"amount": "700.00", "currency": "USD"}
    assert body["next_payout"] == {"payout": None, "next_run_on": "2026-12-01",
                                   "minimum": "100.00", "balance_reaches_minimum": True,
                                   "currency": "USD"}
    assert body["support"] == {"open_tickets": 2}
    assert body["installs"] == {"active": 2}
    webhooks = body["webhooks"]
    assert webhooks["failing_count"] == 2
    assert webhooks["failing"] == [
        {"id": f"whk_{seeded['gone']}", "url": "https://gone.example/hook",
         "status": "disabled", "failing_since": None, "last_success_at": None,
         "disabled_reason": "the receiver answered 410 Gone"},
        {"id": f"whk_{seeded['slow']}", "url": "https://slow.example/hook",
         "status": "active", "failing_since": "2026-11-19T08:00:00Z", "last_success_at": None,
         "disabled_reason": None},
    ]


def test_dashboard_test_mode_calls(client, seeded):
    body = client.web.get(DASHBOARD + "?mode=test", headers=seeded["headers"], status=200).json

    assert body["mode"] == "test"
    assert body["calls"] == {"count": 7, "error_count": 0, "error_rate": 0.0}
    # Only live calls use up the monthly volume, and money is live whatever the mode.
    assert body["quota"]["used"] == 16
    assert body["balance"]["amount"] == "700.00"
    assert body["revenue"]["current_period"]["gross"] == "200.00"
    assert body["webhooks"]["failing_count"] == 1
    assert [item["id"] for item in body["webhooks"]["failing"]] == [f"whk_{seeded['sandbox']}"]


def test_dashboard_open_payout(client, app, seeded):
    def work(session):
        session.add(payout(seeded["partner_id"], "700.00", "on_hold", source="request"))
        session.flush()
        return session.scalars(sa.select(Payout.id).where(
            Payout.partner_id == seeded["partner_id"], Payout.status == "on_hold")).one()

    payout_id = run(app, work)

    body = client.web.get(DASHBOARD, headers=seeded["headers"], status=200).json

    assert body["next_payout"]["payout"] == {
        "id": f"po_{payout_id}", "amount": "700.00", "currency": "USD", "status": "on_hold",
        "source": "request", "created_at": "2026-11-18T09:00:00Z"}
    assert body["next_payout"]["next_run_on"] == "2026-12-01"


def test_dashboard_balance_below_minimum(client, app, seeded):
    run(app, lambda session: post(
        session, kind="payout", reference="test-payout-sent", description="Payout",
        lines=[debit("partner_payable", Decimal("650"), seeded["partner_id"]),
               credit("payouts_in_transit", Decimal("650"))]))

    body = client.web.get(DASHBOARD, headers=seeded["headers"], status=200).json

    assert body["balance"]["amount"] == "50.00"
    assert body["next_payout"]["balance_reaches_minimum"] is False
    assert body["next_payout"]["minimum"] == "100.00"


def test_dashboard_new_partner(client, frozen):
    _partner, token = client.partner_with_token()

    body = client.web.get(DASHBOARD, headers=auth_header(token), status=200).json

    assert body["calls"] == {"count": 0, "error_count": 0, "error_rate": None}
    assert body["quota"]["remaining"] == 30000
    assert body["revenue"]["current_period"] is None
    assert body["revenue"]["last_closed_period"] is None
    assert body["balance"] == {"amount": "0.00", "currency": "USD"}
    assert body["next_payout"]["balance_reaches_minimum"] is False
    assert body["support"] == {"open_tickets": 0}
    assert body["webhooks"] == {"failing_count": 0, "failing": []}
    assert body["installs"] == {"active": 0}


def test_dashboard_quota_unlimited_and_overage(client, app, seeded):
    def put_on_plan(code):
        def work(session):
            plan = session.scalars(sa.select(Plan).where(Plan.code == code)).one()
            session.get(Partner, seeded["partner_id"]).plan_id = plan.id
        run(app, work)

    put_on_plan("enterprise")
    unlimited = client.web.get(DASHBOARD, headers=seeded["headers"], status=200).json["quota"]
    put_on_plan("pay_as_you_go")
    metered = client.web.get(DASHBOARD, headers=seeded["headers"], status=200).json["quota"]

    assert unlimited == {"plan": "enterprise", "included_requests": None, "used": 16,
                         "remaining": None, "overage_requests": None, "windows": []}
    assert metered["included_requests"] == 0
    assert metered["remaining"] == 0
    assert metered["overage_requests"] == 16


def test_dashboard_payout_minimum_setting(app_factory, frozen):
    from fkod.core.testing import TestClient

    client = TestClient(app_factory(**{"fkod.billing.payout_minimum": "700.00"}))
    partner, token = client.partner_with_token()
    run(client.app, lambda session: post(
        session, kind="revenue", reference="test-minimum", description="Revenue share",
        lines=[debit("marketplace_funding", Decimal("700")),
               credit("partner_payable", Decimal("700"), parse_id("partner", partner["id"]))]))

    body = client.web.get(DASHBOARD, headers=auth_header(token), status=200).json

    assert body["next_payout"]["minimum"] == "700.00"
    assert body["next_payout"]["balance_reaches_minimum"] is True


def test_dashboard_gateway_calls_and_windows(client, app):
    """Count real gateway calls, without a frozen clock, in the mode they were made in."""
    _partner, token = client.partner_with_token()
    key = client.create_key(token, scopes=("mentors:read",))
    for _ in range(2):
        client.web.get("/api/v1/mentors", headers=auth_header(key["key"]), status=200)
    client.web.get("/api/v1/users/user_2147483647", headers=auth_header(key["key"]),
                   status="*")
    app.registry["usage_recorder"].flush()
    if app.registry.settings["fkod.metering.backend"] == "redis":
        app.registry["tasks"].run_periodic_now()

    test = client.web.get(DASHBOARD + "?mode=test", headers=auth_header(token), status=200).json
    live = client.web.get(DASHBOARD, headers=auth_header(token), status=200).json

    assert test["calls"]["count"] == 3
    assert test["calls"]["error_count"] == 1
    assert test["calls"]["error_rate"] == round(1 / 3, 4)
    # The call refused for a missing scope is metered but uses up no rate limit.
    windows = {window["name"]: window["remaining"] for window in test["quota"]["windows"]}
    assert windows == {"hour": 98, "day": 998}
    assert live["calls"]["count"] == 0
    assert live["quota"]["used"] == 0
    assert {window["name"]: window["remaining"]
            for window in live["quota"]["windows"]} == {"hour": 100, "day": 1000}
    assert test["period"]["start"] == utcnow().date().replace(day=1).isoformat()


# Analytics -----------------------------------------------------------------------------


def days_from(first: str, count: int) -> list[str]:
    start = dt.date.fromisoformat(first)
    return [(start + dt.timedelta(days=number)).isoformat() for number in range(count)]


def values(series: list[dict]) -> dict[str, int]:
    """Return the buckets that are not zero."""
    return {point["period"]: point["value"] for point in series if point["value"]}


def test_analytics_default_range(client, seeded):
    body = client.web.get(ANALYTICS, headers=seeded["headers"], status=200).json

    assert body["mode"] == "live"
    assert body["granularity"] == "day"
    assert body["from"] == "2026-10-22"
    assert body["to"] == "2026-11-20"
    assert body["currency"] == "USD"
    assert set(body["series"]) == {"calls", "errors", "installs", "uninstalls", "revenue"}
    every_day = days_from("2026-10-22", 30)
    for name, series in body["series"].items():
        assert [point["period"] for point in series] == every_day, name
    assert values(body["series"]["calls"]) == {"2026-10-31": 4, "2026-11-01": 10,
                                               "2026-11-05": 5, "2026-11-20": 1}
    assert values(body["series"]["errors"]) == {"2026-11-05": 5}
    # The install of 2026-10-15 is before the range, but its uninstall is in it.
    assert values(body["series"]["installs"]) == {"2026-10-31": 1, "2026-11-03": 1}
    assert values(body["series"]["uninstalls"]) == {"2026-11-04": 1}
    revenue = {point["period"]: (point["gross"], point["partner_share"])
               for point in body["series"]["revenue"]}
    # October's revenue shows on the first day of the range, November's on its first day.
    assert revenue["2026-10-22"] == ("1000.00", "700.00")
    assert revenue["2026-11-01"] == ("200.00", "140.00")
    assert {period for period, amounts in revenue.items()
            if amounts != ("0.00", "0.00")} == {"2026-10-22", "2026-11-01"}


def test_analytics_by_month(client, seeded):
    body = client.web.get(ANALYTICS + "?granularity=month&from=2026-09-15&to=2026-11-20",
                          headers=seeded["headers"], status=200).json

    assert body["granularity"] == "month"
    assert body["from"] == "2026-09-01"
    assert body["to"] == "2026-11-30"
    months = ["2026-09-01", "2026-10-01", "2026-11-01"]
    series = body["series"]
    assert [point["period"] for point in series["calls"]] == months
    assert [point["value"] for point in series["calls"]] == [0, 4, 16]
    assert [point["value"] for point in series["errors"]] == [0, 0, 5]
    assert [point["value"] for point in series["installs"]] == [0, 2, 1]
    assert [point["value"] for point in series["uninstalls"]] == [0, 0, 1]
    assert series["revenue"] == [
        {"period": "2026-09-01", "gross": "50.00", "partner_share": "35.00"},
        {"period": "2026-10-01", "gross": "1000.00", "partner_share": "700.00"},
        {"period": "2026-11-01", "gross": "200.00", "partner_share": "140.00"},
    ]


def test_analytics_month_boundary(client, seeded):
    """A call in the hour 23:00 of a month's last day belongs to that day and month."""
    by_day = client.web.get(ANALYTICS + "?from=2026-10-31&to=2026-11-01&metric=calls",
                            headers=seeded["headers"], status=200).json
    by_month = client.web.get(ANALYTICS + "?granularity=month&from=2026-10-01&to=2026-10-31"
                              "&metric=calls,installs", headers=seeded["headers"],
                              status=200).json

    assert by_day["series"] == {"calls": [{"period": "2026-10-31", "value": 4},
                                          {"period": "2026-11-01", "value": 10}]}
    assert by_month["series"] == {"calls": [{"period": "2026-10-01", "value": 4}],
                                  "installs": [{"period": "2026-10-01", "value": 2}]}


def test_analytics_test_mode_metric_filter(client, seeded):
    body = client.web.get(ANALYTICS + "?mode=test&metric=revenue,calls&from=2026-11-01"
                          "&to=2026-11-07", headers=seeded["headers"], status=200).json

    assert body["mode"] == "test"
    assert set(body["series"]) == {"calls", "revenue"}
    assert values(body["series"]["calls"]) == {"2026-11-06": 7}
    # Revenue is live money whatever the mode.
    assert body["series"]["revenue"][0] == {"period": "2026-11-01", "gross": "200.00",
                                            "partner_share": "140.00"}


def test_analytics_longest_ranges(client, seeded):
    by_day = client.web.get(ANALYTICS + "?from=2025-11-20&to=2026-11-20&metric=calls",
                            headers=seeded["headers"], status=200).json
    by_month = client.web.get(ANALYTICS + "?granularity=month&from=2023-12-01&to=2026-11-20"
                              "&metric=revenue", headers=seeded["headers"], status=200).json
    default_months = client.web.get(ANALYTICS + "?granularity=month&metric=calls",
                                    headers=seeded["headers"], status=200).json

    assert len(by_day["series"]["calls"]) == 366
    assert sum(point["value"] for point in by_day["series"]["calls"]) == 20
    assert len(by_month["series"]["revenue"]) == 36
    assert by_month["series"]["revenue"][-1]["period"] == "2026-11-01"
    assert default_months["from"] == "2025-12-01"
    assert default_months["to"] == "2026-11-30"
    assert len(default_months["series"]["calls"]) == 12


@pytest.mark.parametrize("query, field, description", [
    ("from=2026-13-01", "from", "Must be a date that exists, such as 2026-11-30."),
    ("from=2026-1-5", "from", "Must be a date written YYYY-MM-DD."),
    ("to=yesterday", "to", "Must be a date written YYYY-MM-DD."),
    ("to=2026-02-30", "to", "Must be a date that exists, such as 2026-11-30."),
    ("from=1999-12-31", "from", "Must be a date from 2000-01-01 to 2999-12-31."),
    ("from=2026-11-10&to=2026-11-09", "from", "must be on or before to"),
    ("from=2025-11-19&to=2026-11-20", "from", "the range can span at most 366 days by day"),
    ("granularity=month&from=2023-11-30&to=2026-11-01", "from",
     "the range can span at most 36 months by month"),
    ("granularity=week", "granularity", None),
    ("metric=calls,profit", "metric",
     "Invalid metric 'profit'. Use one or more of: calls, errors, installs, uninstalls, "
     "revenue."),
    ("metric=", "metric", None),
    ("metric=calls,,errors", "metric", None),
    ("mode=sandbox", "mode", None),
    ("days=7", "days", None),
    ("from=2026-11-01&from=2026-11-02", "from", None),
])
def test_analytics_bad_query_is_400(client, seeded, query, field, description):
    response = client.web.get(f"{ANALYTICS}?{query}", headers=seeded["headers"], status=400)

    body = assert_envelope(response, 400, "validation_failed")
    assert [(error["location"], error["name"]) for error in body["errors"]] == [
        ("querystring", field)]
    if description is not None:
        assert body["errors"][0]["description"] == description


@pytest.mark.parametrize("query, field", [("mode=both", "mode"), ("limit=5", "limit")])
def test_dashboard_bad_query_is_400(client, seeded, query, field):
    response = client.web.get(f"{DASHBOARD}?{query}", headers=seeded["headers"], status=400)

    body = assert_envelope(response, 400, "validation_failed")
    assert [error["name"] for error in body["errors"]] == [field]


# Who may read ----------------------------------------------------------------------


@pytest.mark.parametrize("path", [DASHBOARD, ANALYTICS])
def test_read_only_member_can_read(client, app, seeded, path):
    run(app, lambda session: session.execute(
        sa.update(PartnerMember).where(PartnerMember.partner_id == seeded["partner_id"])
        .values(role="read_only")))

    response = client.web.get(path, headers=seeded["headers"], status=200)

    assert response.json["mode"] == "live"


@pytest.mark.parametrize("path", [DASHBOARD, ANALYTICS])
def test_api_key_cannot_read(client, seeded, path):
    owner_token = seeded["headers"]["Authorization"].removeprefix("Bearer ")
    key = client.create_key(owner_token, scopes=("users:read",))

    response = client.web.get(path, headers=auth_header(key["key"]), status=401)

    assert_envelope(response, 401)


@pytest.mark.parametrize("path", [DASHBOARD, ANALYTICS])
def test_no_credential_is_401(client, path):
    assert_envelope(client.web.get(path, status=401), 401)
