"""Portal charts: the data element carries the report's numbers, the library is served here."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest

from fkod.core.auth.models import User
from fkod.core.db import run_in_transaction, utcnow
from fkod.core.ids import parse_id
from fkod.core.testing import auth_header
from fkod.marketplace.models import Integration, IntegrationInstall
from tests.functional.portal_pages import post_form, signed_in_owner

pytestmark = pytest.mark.shared_app

CHART_DATA = re.compile(r'<script type="application/json" id="chart-([\w-]+)-data">(.*?)</script>',
                        re.S)
# Any <script> element that has content and is not a JSON data block.
INLINE_SCRIPT = re.compile(r'<script(?![^>]*type="application/json")[^>]*>\s*[^<\s]')


def chart_data(page) -> dict[str, dict]:
    return {name: json.loads(text) for name, text in CHART_DATA.findall(page.text)}


def assert_no_inline_script(page) -> None:
    assert not INLINE_SCRIPT.search(page.text), page.request.path
    assert not re.search(r'\son[a-z]+="', page.text), page.request.path


def make_calls(client, app, secret: str) -> None:
    """Make two good calls and one that fails with 404, and write their usage rows."""
    for _ in range(2):
        client.web.get("/api/v1/users", headers=auth_header(secret), status=200)
    client.web.get("/api/v1/users/user_2147483647", headers=auth_header(secret), status=404)
    app.registry["usage_recorder"].flush()
    if app.registry.settings["fkod.metering.backend"] == "redis":
        app.registry["tasks"].run_periodic_now()


def test_dashboard_and_key_charts_show_calls(client, app):
    signed_in_owner(client)
    created = post_form(client.web, "/portal/keys", [("key_name", "<i>Charted</i>"),
                                                     ("mode", "test"), ("scopes", "users:read")],
                        form_page="/portal/keys/new", status=200)
    secret = re.search(r'value="(sk_test_[A-Za-z0-9_-]+)"', created.text).group(1)
    key_path = re.search(r'href="(/portal/keys/key_\d+)"', created.text).group(1)
    make_calls(client, app, secret)
    today = utcnow().date().isoformat()

    page = client.web.get("/portal?mode=test")
    charts = chart_data(page)
    assert set(charts) == {"calls", "errors"}
    calls, errors = charts["calls"], charts["errors"]
    assert len(calls["labels"]) == 30
    assert calls["labels"][-1] == today
    assert calls["series"][0]["values"][-1] == 3
    assert sum(calls["series"][0]["values"]) == 3
    assert errors["series"][0]["values"][-1] == 1
    assert f'<tr><th scope="row">{today}</th><td class="number">3</td></tr>' in page.text
    assert 'aria-current="true">test</a>' in page.text
    assert_no_inline_script(page)

    live = chart_data(client.web.get("/portal"))
    assert sum(live["calls"]["series"][0]["values"]) == 0
    assert "Invalid filter" in client.web.get("/portal?mode=both", status=400).text

    key_page = client.web.get(key_path)
    key_chart = chart_data(key_page)["key-usage"]
    assert key_chart["labels"][-1] == today
    assert [series["values"][-1] for series in key_chart["series"]] == [3, 1]
    # The key's name is user data: escaped in the HTML and in the JSON block.
    assert "&lt;i&gt;Charted&lt;/i&gt;" in key_page.text
    assert "<i>Charted" not in key_page.text
    assert key_chart["title"] == "Calls per day with <i>Charted</i>"
    assert_no_inline_script(key_page)


def test_chart_library_served_from_app(client):
    signed_in_owner(client)
    page = client.web.get("/portal")
    scripts = re.findall(r'<script src="([^"]+)" defer></script>', page.text)
    assert "/portal/static/vendor/chartjs/chart.umd.min.js" in scripts
    assert "/portal/static/charts.js" in scripts
    for path in scripts:
        assert path.startswith("/portal/static/")
        response = client.web.get(path, status=200)
        assert "javascript" in response.content_type
    library = client.web.get("/portal/static/vendor/chartjs/chart.umd.min.js")
    assert "Chart.js v4.6.2" in library.text
    assert "MIT License" in client.web.get("/portal/static/vendor/chartjs/LICENSE.md").text
    # The chart data of a new partner is present and all zero, with a text saying so.
    assert all(value == 0 for chart in chart_data(page).values()
               for series in chart["series"] for value in series["values"])
    assert "Nothing to show in this period." in page.text


def test_analytics_page_charts(client, app):
    owner = signed_in_owner(client)
    partner_id = parse_id("partner", owner["partner"]["id"])
    token = client.login(owner["user"]["email"])
    key = client.create_key(token, scopes=("users:read",))
    make_calls(client, app, key["key"])
    today = utcnow().date()
    yesterday = today - dt.timedelta(days=1)

    def seed(session):
        integration = Integration(partner_id=partner_id, name="Sync", slug="sync-charts",
                                  status="published")
        session.add(integration)
        session.flush()
        for number, (installed, uninstalled) in enumerate(
                [(yesterday, None), (yesterday, today), (today, None)]):
            user = User(email=f"customer{number}@charts.example")
            session.add(user)
            session.flush()
            session.add(IntegrationInstall(
                integration_id=integration.id, user_id=user.id,
                status="uninstalled" if uninstalled else "active",
                installed_at=dt.datetime.combine(installed, dt.time(9)),
                uninstalled_at=dt.datetime.combine(uninstalled, dt.time(10))
                if uninstalled else None))

    run_in_transaction(app.registry["db.session_factory"], seed)

    page = client.web.get("/portal/analytics", {"mode": "test", "from": yesterday.isoformat(),
                                                "to": today.isoformat()})
    charts = chart_data(page)
    assert set(charts) == {"calls", "errors", "installs", "revenue", "latency"}
    assert charts["calls"]["labels"] == [yesterday.isoformat(), today.isoformat()]
    assert charts["calls"]["series"][0]["values"] == [0, 3]
    assert charts["errors"]["series"][0]["values"] == [0, 1]
    installs = {series["label"]: series["values"] for series in charts["installs"]["series"]}
    assert installs == {"Installs": [2, 1], "Uninstalls": [0, 1]}
    assert sum(charts["latency"]["series"][0]["values"]) == 3
    assert len(charts["latency"]["labels"]) == 12
    assert "p50" in page.text
    assert_no_inline_script(page)

    by_month = chart_data(client.web.get("/portal/analytics", {"granularity": "month",
                                                               "metric": "revenue"}))
    assert set(by_month) == {"revenue", "latency"}
    assert len(by_month["revenue"]["labels"]) == 12
    wrong = client.web.get("/portal/analytics", {"from": "2026-02-30"}, status=400)
    assert "Must be a date that exists" in wrong.text
