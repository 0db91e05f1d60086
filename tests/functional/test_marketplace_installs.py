"""Customer installs: configuration checks, reinstall, uninstall, counts and plugin hooks.

Integrations are inserted into the database directly with ``plugin_name`` set,
because the start-up sync of plugin manifests is not under test here. The
test plugin records every hook call in a JSON-lines file.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from fkod.core.audit import AuditEntry
from fkod.core.auth.models import Partner, PartnerUser, User
from fkod.core.db import run_in_transaction, utcnow
from fkod.core.ids import parse_id
from fkod.core.testing import TEST_PASSWORD, TestClient, auth_header
from fkod.core.webhooks.models import Event
from fkod.marketplace.models import Integration, IntegrationInstall
from tests.envelope import assert_envelope

pytestmark = pytest.mark.shared_app

PLUGIN = "hooktest"
CONFIG_SCHEMA = {
    "type": "object",
    "required": ["channel"],
    "additionalProperties": False,
    "properties": {
        "channel": {"type": "string", "minLength": 1},
        "webhook_url": {"type": "string", "writeOnly": True},
        "mode": {"enum": ["ok", "refuse", "crash"]},
        "limits": {"type": "object", "properties": {"daily": {"type": "integer", "minimum": 1}}},
        "fail_times": {"type": "integer", "minimum": 0},
    },
}

PLUGIN_SOURCE = '''
import json

from fkod.core.hookspecs import hookimpl
from fkod.core.integrations import IntegrationError

CALLS = {calls!r}


def _record(**entry):
    with open(CALLS, "a") as calls:
        calls.write(json.dumps(entry) + "\\n")


def _count(**match):
    try:
        with open(CALLS) as calls:
            entries = [json.loads(line) for line in calls if line.strip()]
    except FileNotFoundError:
        return 0
    return sum(all(entry.get(key) == value for key, value in match.items())
               for entry in entries)


@hookimpl
def fkod_integration_installed(install):
    mode = install.config.get("mode")
    if mode == "refuse":
        raise IntegrationError("The Slack workspace rejected the token.")
    if mode == "crash":
        raise RuntimeError("bug in the plugin")
    _record(hook="installed", install_id=install.install_id, user_id=install.user_id,
            slug=install.integration_slug, config=install.config,
            scopes=list(install.granted_scopes))


@hookimpl
def fkod_integration_uninstalled(install):
    _record(hook="uninstalled", install_id=install.install_id, user_id=install.user_id)


@hookimpl
def fkod_integration_event(install, event):
    failed = _count(hook="event_failed", install_id=install.install_id, event_id=event["id"])
    if failed < install.config.get("fail_times", 0):
        _record(hook="event_failed", install_id=install.install_id, event_id=event["id"])
        raise RuntimeError("receiver down")
    _record(hook="event", install_id=install.install_id, user_id=install.user_id,
            event_id=event["id"], event_type=event["type"], livemode=event["livemode"],
            data=event["data"])
'''


# Helpers shared with the review and event hook tests ---------------------------------------


@dataclass
class Customer:
    user_id: str
    email: str
    headers: dict


@dataclass
class Publisher:
    partner_id: int
    user_id: str
    email: str
    headers: dict


def hook_calls(path: Path, hook: str | None = None) -> list[dict]:
    if not path.exists():
        return []
    entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [entry for entry in entries if hook is None or entry["hook"] == hook]


def install_test_plugin(plugin_path, tmp_path: Path) -> Path:
    """Install the recording plugin and return the file its hooks write to."""
    calls = tmp_path / "hook-calls.jsonl"
    plugin_path("fkod-hooktest", PLUGIN, "fkod_test_hooktest",
                PLUGIN_SOURCE.replace("{calls!r}", repr(str(calls))))
    return calls


def make_customer(client: TestClient, name: str | None = "Ada Lovelace") -> Customer:
    """Create a signed-up customer (a platform user) and log it in."""
    email = f"customer-{secrets.token_hex(4)}@learner.example"
    hasher = client.registry["password_hasher"]

    def work(session):
        user = User(email=email, name=name, password_hash=hasher.hash(TEST_PASSWORD),
                    email_verified_at=utcnow(), livemode=True)
        session.add(user)
        session.flush()
        return user.id

    user_id = run_in_transaction(client.registry["db.session_factory"], work)
    return Customer(f"user_{user_id}", email, auth_header(client.login(email)))


def make_publisher(client: TestClient) -> Publisher:
    """Register a partner, make it active and verified, and log its owner in."""
    registered = client.register_partner()
    partner_id = parse_id("partner", registered["partner"]["id"])
    email = registered["user"]["email"]

    def work(session):
        session.execute(sa.update(Partner).where(Partner.id == partner_id)
                        .values(status="active", verification_status="verified"))
        session.execute(sa.update(User).where(User.email == email)
                        .values(email_verified_at=utcnow()))

    run_in_transaction(client.registry["db.session_factory"], work)
    return Publisher(partner_id, registered["user"]["id"], email,
                     auth_header(client.login(email)))


def add_integration(app, partner_id: int, *, plugin_name: str | None = PLUGIN,
                    status: str = "published", config_schema: dict | None = CONFIG_SCHEMA,
                    event_types=("course.completed",), scopes=("users:read",),
                    pricing_model: str = "free") -> str:
    slug = f"test-integration-{secrets.token_hex(3)}"

    def work(session):
        integration = Integration(
            partner_id=partner_id, name="Course Sync", slug=slug, category="content",
            version="1.0.0", status=status, plugin_name=plugin_name,
            config_schema=config_schema,
            event_types=list(event_types), scopes=list(scopes), pricing_model=pricing_model,
            price_cents=900 if pricing_model == "paid" else None, published_at=utcnow())
        session.add(integration)
        session.flush()
        return integration.id

    return f"int_{run_in_transaction(app.registry['db.session_factory'], work)}"


def install_url(integration_id: str) -> str:
    return f"/api/marketplace/integrations/{integration_id}/install"


def install(client: TestClient, customer: Customer, integration_id: str, config=None,
            status: int = 201):
    body = {} if config is None else {"config": config}
    return client.web.post_json(install_url(integration_id), body, headers=customer.headers,
                                status=status)


def stored_integration(app, integration_id: str) -> Integration:
    with Session(app.registry["db.engine"]) as session:
        return session.get(Integration, parse_id("int", integration_id))


def install_rows(app, integration_id: str) -> list[IntegrationInstall]:
    with Session(app.registry["db.engine"]) as session:
        return list(session.scalars(sa.select(IntegrationInstall).where(
            IntegrationInstall.integration_id == parse_id("int", integration_id))))


def count_rows(app, model, *conditions) -> int:
    with Session(app.registry["db.engine"]) as session:
        return session.scalar(sa.select(sa.func.count()).select_from(model).where(*conditions))


# Fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def calls_file(plugin_path, tmp_path) -> Path:
    return install_test_plugin(plugin_path, tmp_path)


@pytest.fixture
def hook_app(calls_file, app_factory):
    return app_factory()


@pytest.fixture
def hook_client(hook_app) -> TestClient:
    return TestClient(hook_app)


@pytest.fixture
def publisher(hook_client) -> Publisher:
    return make_publisher(hook_client)


@pytest.fixture
def integration(hook_app, publisher) -> str:
    return add_integration(hook_app, publisher.partner_id)


@pytest.fixture
def customer(hook_client) -> Customer:
    return make_customer(hook_client)


GOOD_CONFIG = {"channel": "#learning", "webhook_url": "https://hooks.slack.example/T000/B000"}


# Installing ----------------------------------------------------------------------------------


def test_install_returns_masked_config(hook_client, hook_app, customer, integration, calls_file):
    body = install(hook_client, customer, integration, GOOD_CONFIG).json
    assert body["id"].startswith("inst_")
    assert body["status"] == "active"
    assert body["integration"]["id"] == integration
    assert body["config"] == {"channel": "#learning", "webhook_url": "********"}
    assert body["granted_scopes"] == ["users:read"]

    row = install_rows(hook_app, integration)[0]
    assert "hooks.slack.example" not in row.config
    assert stored_integration(hook_app, integration).install_count == 1

    calls = hook_calls(calls_file, "installed")
    assert len(calls) == 1
    assert calls[0]["install_id"] == body["id"]
    assert calls[0]["user_id"] == customer.user_id
    assert calls[0]["config"] == GOOD_CONFIG
    assert calls[0]["scopes"] == ["users:read"]


def test_install_config_errors_name_paths(hook_client, hook_app, customer, integration):
    config = {"webhook_url": 5, "limits": {"daily": 0}, "extra": True}
    response = install(hook_client, customer, integration, config, status=400)
    assert_envelope(response, 400, "validation_failed")
    errors = {error["name"]: error["description"] for error in response.json["errors"]}
    assert errors["config.channel"].startswith("required:")
    assert errors["config.webhook_url"].startswith("type:")
    assert errors["config.limits.daily"].startswith("minimum:")
    assert errors["config"].startswith("additionalProperties:")
    assert all(error["location"] == "body" for error in response.json["errors"])
    assert install_rows(hook_app, integration) == []
    assert stored_integration(hook_app, integration).install_count == 0


def test_install_config_not_object(hook_client, customer, integration):
    response = hook_client.web.post_json(install_url(integration), {"config": [1]},
                                         headers=customer.headers, status=400)
    assert response.json["errors"][0]["name"] == "config"


def test_install_default_config_checked(hook_client, customer, integration):
    response = install(hook_client, customer, integration, status=400)
    assert [error["name"] for error in response.json["errors"]] == ["config.channel"]


def test_install_twice_conflicts(hook_client, hook_app, customer, integration):
    install(hook_client, customer, integration, GOOD_CONFIG)
    response = install(hook_client, customer, integration, GOOD_CONFIG, status=409)
    assert_envelope(response, 409, "already_installed")
    assert stored_integration(hook_app, integration).install_count == 1


@pytest.mark.shared_app(False)
def test_uninstall_and_reinstall(hook_client, hook_app, customer, integration, calls_file):
    first = install(hook_client, customer, integration, GOOD_CONFIG).json
    hook_client.web.delete(install_url(integration), headers=customer.headers, status=204)
    assert stored_integration(hook_app, integration).install_count == 0
    uninstalled = hook_calls(calls_file, "uninstalled")
    assert [call["install_id"] for call in uninstalled] == [first["id"]]

    again = install(hook_client, customer, integration, {"channel": "#new"}).json
    assert again["id"] == first["id"]
    assert again["config"] == {"channel": "#new"}
    assert again["uninstalled_at"] is None
    assert stored_integration(hook_app, integration).install_count == 1
    assert len(install_rows(hook_app, integration)) == 1


def test_uninstall_without_install(hook_client, customer, integration):
    response = hook_client.web.delete(install_url(integration), headers=customer.headers,
                                      status=404)
    assert_envelope(response, 404, "not_installed")


def test_counts_exact_over_customers(hook_client, hook_app, integration):
    customers = [make_customer(hook_client) for _ in range(3)]
    for each in customers:
        install(hook_client, each, integration, GOOD_CONFIG)
    hook_client.web.delete(install_url(integration), headers=customers[0].headers, status=204)
    hook_client.web.delete(install_url(integration), headers=customers[0].headers, status=404)
    assert stored_integration(hook_app, integration).install_count == 2


@pytest.mark.shared_app(False)
def test_hook_refusal_writes_nothing(hook_client, hook_app, customer, integration, calls_file):
    response = install(hook_client, customer, integration, {"channel": "#x", "mode": "refuse"},
                       status=422)
    assert_envelope(response, 422, "integration_refused")
    assert response.json["message"] == "The Slack workspace rejected the token."
    assert install_rows(hook_app, integration) == []
    assert stored_integration(hook_app, integration).install_count == 0
    assert count_rows(hook_app, Event, Event.type == "integration.installed") == 0
    assert count_rows(hook_app, PartnerUser) == 0
    assert count_rows(hook_app, AuditEntry, AuditEntry.action == "integration.installed") == 0


@pytest.mark.shared_app(False)
def test_hook_crash_writes_nothing(hook_client, hook_app, customer, integration):
    response = install(hook_client, customer, integration, {"channel": "#x", "mode": "crash"},
                       status=502)
    assert_envelope(response, 502, "integration_failed")
    assert "bug in the plugin" not in response.json["message"]
    assert install_rows(hook_app, integration) == []
    assert stored_integration(hook_app, integration).install_count == 0
    assert count_rows(hook_app, Event, Event.type == "integration.installed") == 0


def test_refused_reinstall_keeps_uninstalled(hook_client, hook_app, customer, integration):
    install(hook_client, customer, integration, GOOD_CONFIG)
    hook_client.web.delete(install_url(integration), headers=customer.headers, status=204)
    install(hook_client, customer, integration, {"channel": "#x", "mode": "refuse"}, status=422)
    rows = install_rows(hook_app, integration)
    assert [row.status for row in rows] == ["uninstalled"]
    assert stored_integration(hook_app, integration).install_count == 0


@pytest.mark.parametrize("status", ["draft", "in_review", "rejected", "unpublished"])
def test_unlisted_integration_not_found(hook_client, hook_app, customer, publisher, status):
    integration_id = add_integration(hook_app, publisher.partner_id, status=status)
    response = install(hook_client, customer, integration_id, GOOD_CONFIG, status=404)
    assert_envelope(response, 404, "not_found")


def test_unknown_integration_not_found(hook_client, customer):
    for bad in ("int_999999", "int_x", "user_1"):
        install(hook_client, customer, bad, GOOD_CONFIG, status=404)


def test_disabled_plugin_integration_hidden(hook_client, hook_app, customer, integration):
    host = hook_app.registry["plugins"]
    run_in_transaction(hook_app.registry["db.session_factory"],
                       lambda session: host.set_enabled(session, PLUGIN, False))
    install(hook_client, customer, integration, GOOD_CONFIG, status=404)


def test_install_needs_login(hook_client, integration):
    response = hook_client.web.post_json(install_url(integration), {}, status=401)
    assert_envelope(response, 401, "missing_credentials")


@pytest.mark.shared_app(False)
def test_install_joins_tenancy_and_announces(hook_client, hook_app, customer, publisher,
                                             integration):
    install(hook_client, customer, integration, GOOD_CONFIG)
    user_id = parse_id("user", customer.user_id)
    assert count_rows(hook_app, PartnerUser, PartnerUser.partner_id == publisher.partner_id,
                      PartnerUser.user_id == user_id, PartnerUser.source == "installed") == 1
    with Session(hook_app.registry["db.engine"]) as session:
        event = session.scalar(sa.select(Event).where(Event.type == "integration.installed"))
    assert event.payload["data"]["user_id"] == customer.user_id
    assert event.payload["data"]["integration"]["id"] == integration
    assert event.payload["data"]["integration"]["partner_id"] == f"partner_{publisher.partner_id}"

    hook_client.web.delete(install_url(integration), headers=customer.headers, status=204)
    assert count_rows(hook_app, PartnerUser, PartnerUser.user_id == user_id) == 0


def test_integration_without_plugin(hook_client, hook_app, customer, publisher, calls_file):
    integration_id = add_integration(hook_app, publisher.partner_id, plugin_name=None,
                                     config_schema={})
    body = install(hook_client, customer, integration_id, {"anything": 1}).json
    assert body["config"] == {"anything": 1}
    assert hook_calls(calls_file) == []


def test_integration_without_schema_takes_no_config(hook_client, hook_app, customer, publisher):
    integration_id = add_integration(hook_app, publisher.partner_id, plugin_name=None,
                                     config_schema=None)
    response = install(hook_client, customer, integration_id, {"key": "x"}, status=400)
    assert response.json["errors"][0]["name"] == "config.key"
    install(hook_client, customer, integration_id, {})


# Changing and listing ------------------------------------------------------------------------


@pytest.mark.shared_app(False)
def test_update_config_validated(hook_client, hook_app, customer, integration):
    install(hook_client, customer, integration, GOOD_CONFIG)
    response = hook_client.web.put_json(install_url(integration), {"config": {"channel": ""}},
                                        headers=customer.headers, status=400)
    assert response.json["errors"][0]["name"] == "config.channel"

    body = hook_client.web.put_json(
        install_url(integration), {"config": {"channel": "#other", "webhook_url": "********"}},
        headers=customer.headers, status=200).json
    assert body["config"] == {"channel": "#other", "webhook_url": "********"}
    with Session(hook_app.registry["db.engine"]) as session:
        token = session.scalar(sa.select(IntegrationInstall.config))
    stored = json.loads(hook_app.registry["webhook_vault"].decrypt(token))
    assert stored["webhook_url"] == GOOD_CONFIG["webhook_url"]


@pytest.mark.shared_app(False)
def test_update_config_rejected_by_hook(hook_client, hook_app, customer, integration,
                                        calls_file):
    install(hook_client, customer, integration, GOOD_CONFIG)

    response = hook_client.web.put_json(install_url(integration),
                                        {"config": {**GOOD_CONFIG, "mode": "refuse"}},
                                        headers=customer.headers, status=422)

    assert response.json["code"] == "integration_refused"
    listed = hook_client.web.get("/api/marketplace/installs", headers=customer.headers).json
    assert "mode" not in listed["data"][0]["config"]
    assert len(hook_calls(calls_file, "installed")) == 1


def test_backtracking_pattern_times_out(hook_client, hook_app, customer, publisher):
    # Python's re module backtracks exponentially on this pattern with a long
    # run of "a" followed by another character.
    schema = {"type": "object", "properties": {"code": {"type": "string",
                                                        "pattern": "^(a|a)+$"}}}
    integration_id = add_integration(hook_app, publisher.partner_id, plugin_name=None,
                                     config_schema=schema)
    started = time.monotonic()

    response = install(hook_client, customer, integration_id, {"code": "a" * 40 + "!"},
                       status=400)

    assert time.monotonic() - started < 5
    assert response.json["errors"][0]["name"] == "config.code"
    assert "took longer" in response.json["errors"][0]["description"]
    install(hook_client, customer, integration_id, {"code": "aaa"})


def test_uri_format_checked(hook_client, hook_app, customer, publisher):
    schema = {"type": "object", "properties": {"url": {"type": "string", "format": "uri"}}}
    integration_id = add_integration(hook_app, publisher.partner_id, plugin_name=None,
                                     config_schema=schema)

    response = install(hook_client, customer, integration_id, {"url": "not a url"},
                       status=400)

    assert response.json["errors"][0]["name"] == "config.url"
    assert response.json["errors"][0]["description"].startswith("format:")
    install(hook_client, customer, integration_id, {"url": "https://hooks.example/T1"})


def test_update_without_install(hook_client, customer, integration):
    response = hook_client.web.put_json(install_url(integration), {"config": {"channel": "#a"}},
                                        headers=customer.headers, status=404)
    assert_envelope(response, 404, "not_installed")


@pytest.mark.shared_app(False)
def test_list_installs_paginated(hook_client, hook_app, customer, publisher):
    ids = [add_integration(hook_app, publisher.partner_id) for _ in range(3)]
    for integration_id in ids:
        install(hook_client, customer, integration_id, GOOD_CONFIG)
    other = make_customer(hook_client)
    install(hook_client, other, ids[0], GOOD_CONFIG)

    first = hook_client.web.get("/api/marketplace/installs?limit=2",
                                headers=customer.headers).json
    assert len(first["data"]) == 2
    assert first["has_more"] is True
    second = hook_client.web.get(f"/api/marketplace/installs?limit=2&cursor="
                                 f"{first['next_cursor']}", headers=customer.headers).json
    listed = [item["integration"]["id"] for item in first["data"] + second["data"]]
    assert listed == list(reversed(ids))
    assert second["has_more"] is False
    assert all(item["config"]["webhook_url"] == "********" for item in first["data"])
    assert first["data"][0]["integration"]["name"] == "Course Sync"

    hook_client.web.delete(install_url(ids[0]), headers=customer.headers, status=204)
    active = hook_client.web.get("/api/marketplace/installs", headers=customer.headers).json
    assert len(active["data"]) == 2
    gone = hook_client.web.get("/api/marketplace/installs?status=uninstalled",
                               headers=customer.headers).json
    assert [item["integration"]["id"] for item in gone["data"]] == [ids[0]]


def test_list_installs_limit_bounded(hook_client, customer):
    response = hook_client.web.get("/api/marketplace/installs?limit=101",
                                   headers=customer.headers, status=400)
    assert response.json["errors"][0]["name"] == "limit"
