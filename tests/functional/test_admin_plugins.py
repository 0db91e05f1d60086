"""Admin plugin API: discovery, enable and disable with their effects, pins, trust, roles."""

from __future__ import annotations

import sys
import time
import types

import pytest
import sqlalchemy as sa

from fkod.admin.testing import admin_with_headers
from fkod.core.audit import AuditEntry
from fkod.core.db import run_in_transaction
from fkod.core.ids import parse_id
from fkod.core.integrations import InstallContext
from fkod.core.settings import ConfigurationError
from fkod.core.testing import TestClient, auth_header
from fkod.marketplace.catalog import listed_clause
from fkod.marketplace.models import Integration
from tests.envelope import assert_envelope
from tests.functional.test_plugin_manifests import add_partner, install_manifest_plugin

PLUGINS = "/api/admin/plugins"

# Counts its hook calls in a module attribute the test reads.
COUNTING_PLUGIN = """
    from fkod.core.hookspecs import hookimpl

    calls = []

    @hookimpl
    def fkod_integration_uninstalled(install):
        calls.append(install.install_id)
"""


@pytest.fixture
def superadmin(client) -> dict:
    return admin_with_headers(client, "superadmin")[1]


def put(client, name: str, body: dict, headers: dict, status: int = 200):
    return client.web.put_json(f"{PLUGINS}/{name}", body, headers=headers, status=status)


def plugin_audit(app) -> list[tuple[str, str, str, int | None]]:
    return run_in_transaction(app.registry["db.session_factory"], lambda session: [
        (entry.action, entry.target_id, entry.actor_type, entry.actor_id)
        for entry in session.scalars(sa.select(AuditEntry)
                                     .where(AuditEntry.action.like("plugin.%"))
                                     .order_by(AuditEntry.id))])


def event_names(client) -> list[str]:
    return [item["name"] for item in
            client.web.get("/api/webhooks/available-events").json["data"]]


def wait_for(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


# Discovery ------------------------------------------------------------------------------


def test_list_describes_builtin_plugins(client):
    headers = admin_with_headers(client, "readonly")[1]

    body = client.web.get(f"{PLUGINS}?limit=100", headers=headers).json

    plugins = {item["name"]: item for item in body["data"]}
    learning = plugins["learning"]
    assert learning["status"] == "enabled"
    assert learning["error"] is None
    assert learning["pinned"] is None
    assert learning["trusted"] is False
    assert learning["module"] == "fkod.plugins.learning"
    assert learning["distribution"] == "fkod-partner-platform"
    assert learning["version"]
    assert "user.created" in learning["contributes"]["event_types"]
    assert {"name": "v1_users", "pattern": "/api/v1/users"} in learning["contributes"]["routes"]
    assert learning["contributes"]["payment_providers"] == []
    assert "partner.created" in plugins["platform_events"]["contributes"]["event_types"]
    assert body["has_more"] is False


def test_list_pages_by_name(client, superadmin):
    names, cursor = [], None
    while True:
        query = f"?limit=1&cursor={cursor}" if cursor else "?limit=1"
        body = client.web.get(PLUGINS + query, headers=superadmin).json
        assert len(body["data"]) == 1
        names.append(body["data"][0]["name"])
        cursor = body["next_cursor"]
        assert body["has_more"] is (cursor is not None)
        if cursor is None:
            break

    assert names == sorted(client.app.registry["plugins"].plugins)


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "status=broken", "cursor=nope"])
def test_list_rejects_bad_query(client, superadmin, query):
    response = client.web.get(f"{PLUGINS}?{query}", headers=superadmin, status=400)
    assert_envelope(response, 400, "validation_failed")
    assert response.json["errors"][0]["location"] == "querystring"


def test_installed_plugin_discovered(plugin_path, app_factory):
    plugin_path("fkod_quizzes", "quizzes", "fkod_test_quizzes", """
        from fkod.core.auth.scopes import Scope
        from fkod.core.hookspecs import hookimpl
        from fkod.core.webhooks.catalog import EventType

        @hookimpl
        def fkod_register_event_types():
            return [EventType("quiz.passed", "A user passed a quiz.", {"type": "object"}, {})]

        @hookimpl
        def fkod_register_scopes():
            return [Scope("quizzes:read", "Read quizzes.")]
    """)
    client = TestClient(app_factory())
    headers = admin_with_headers(client, "readonly")[1]

    body = client.web.get(f"{PLUGINS}/quizzes", headers=headers).json

    assert body["status"] == "enabled"
    assert body["module"] == "fkod_test_quizzes"
    assert body["distribution"] == "fkod_quizzes"
    assert body["version"] == "1.0"
    assert body["contributes"]["event_types"] == ["quiz.passed"]
    assert body["contributes"]["scopes"] == ["quizzes:read"]
    assert body["integrations"] == []


def test_broken_plugin_reported_failed(plugin_path, app_factory):
    plugin_path("fkod_broken", "broken", "fkod_test_broken", "raise RuntimeError('boom')\n")
    client = TestClient(app_factory())
    headers = admin_with_headers(client, "readonly")[1]

    body = client.web.get(f"{PLUGINS}/broken", headers=headers).json
    failed = client.web.get(f"{PLUGINS}?status=failed", headers=headers).json["data"]

    assert body["status"] == "failed"
    assert "import: RuntimeError: boom" in body["error"]
    assert [item["name"] for item in failed] == ["broken"]
    assert client.web.get("/health").status_int == 200


def test_unknown_plugin_not_found(client, superadmin):
    for response in (client.web.get(f"{PLUGINS}/nothing", headers=superadmin, status=404),
                     put(client, "nothing", {"enabled": False}, superadmin, status=404)):
        assert_envelope(response, 404, "not_found")
        assert response.json["errors"][0]["name"] == "name"


# Enable and disable ---------------------------------------------------------------------


def test_disable_hides_routes_and_events(client, superadmin):
    _partner, token = client.partner_with_token()
    key = client.create_key(token)["key"]

    body = put(client, "learning", {"enabled": False}, superadmin).json

    assert body["status"] == "disabled"
    client.web.get("/api/v1/users", headers=auth_header(key), status=404)
    assert "user.created" not in event_names(client)
    assert "partner.created" in event_names(client)

    body = put(client, "learning", {"enabled": True}, superadmin).json

    assert body["status"] == "enabled"
    client.web.get("/api/v1/users", headers=auth_header(key), status=200)
    assert "user.created" in event_names(client)


def test_disable_hides_integrations(plugin_path, app_factory):
    install_manifest_plugin(plugin_path)
    add_partner(app_factory(), "quizco")
    app = app_factory()
    client = TestClient(app)
    headers = admin_with_headers(client)[1]
    put(client, "quizsync", {"trusted": True}, headers)
    request = types.SimpleNamespace(registry=app.registry)

    def listed() -> list[str]:
        return run_in_transaction(app.registry["db.session_factory"], lambda session: list(
            session.scalars(sa.select(Integration.slug).where(listed_clause(request)))))

    assert "quiz-sync" in listed()
    put(client, "quizsync", {"enabled": False}, headers)
    assert "quiz-sync" not in listed()
    put(client, "quizsync", {"enabled": True}, headers)
    assert "quiz-sync" in listed()


def test_disabled_plugin_hooks_not_called(plugin_path, app_factory):
    plugin_path("fkod_counting", "counting", "fkod_test_counting", COUNTING_PLUGIN)
    client = TestClient(app_factory())
    headers = admin_with_headers(client)[1]
    host = client.app.registry["plugins"]
    calls = sys.modules["fkod_test_counting"].calls
    install = InstallContext("inst_1", "quiz-sync", "user_1", {}, ())

    put(client, "counting", {"enabled": False}, headers)
    host.call_each("fkod_integration_uninstalled", enabled_only=True, install=install)
    assert calls == []

    put(client, "counting", {"enabled": True}, headers)
    host.call_each("fkod_integration_uninstalled", enabled_only=True, install=install)
    assert calls == ["inst_1"]


def test_unchanged_state_not_audited(client, superadmin):
    put(client, "learning", {"enabled": True, "trusted": False}, superadmin)

    assert plugin_audit(client.app) == []


def test_changes_audited_with_admin(client):
    admin, headers = admin_with_headers(client, "support")
    admin_id = parse_id("admin", admin["id"])

    put(client, "learning", {"enabled": False}, headers)
    put(client, "learning", {"enabled": True, "trusted": True}, headers)
    body = put(client, "learning", {"trusted": False}, headers).json

    assert body["trusted"] is False
    assert plugin_audit(client.app) == [
        ("plugin.disabled", "learning", "admin", admin_id),
        ("plugin.enabled", "learning", "admin", admin_id),
        ("plugin.trusted", "learning", "admin", admin_id),
        ("plugin.untrusted", "learning", "admin", admin_id),
    ]


def test_state_persists_across_restart(app_factory):
    first = app_factory()
    client = TestClient(first)
    headers = admin_with_headers(client)[1]
    put(client, "learning", {"enabled": False, "trusted": True}, headers)

    restarted = TestClient(app_factory())
    body = restarted.web.get(f"{PLUGINS}/learning", headers=headers).json

    assert body["status"] == "disabled"
    assert body["trusted"] is True
    restarted.web.get("/api/v1/users", status=404)


def test_change_reaches_other_instance(app_factory):
    first, second = app_factory(), app_factory()
    client = TestClient(first)
    headers = admin_with_headers(client)[1]
    other_host = second.registry["plugins"]
    assert other_host.is_enabled("learning")
    cache_seconds = first.registry.settings["fkod.plugins.state_cache_seconds"]

    put(client, "learning", {"enabled": False}, headers)
    assert wait_for(lambda: not other_host.is_enabled("learning"), cache_seconds + 1)
    assert "user.created" not in event_names(TestClient(second))

    put(client, "learning", {"enabled": True}, headers)
    assert wait_for(lambda: other_host.is_enabled("learning"), cache_seconds + 1)


def test_change_without_cache_expiry_via_redis(app_factory, stack_settings):
    if not stack_settings.get("fkod.redis.url"):
        pytest.skip("the change announcement needs Redis (FKOD_TEST_STACK=production)")
    # A long cache shows the Redis message, not the cache expiry, brings the change.
    first = app_factory(**{"fkod.plugins.state_cache_seconds": "5"})
    second = app_factory(**{"fkod.plugins.state_cache_seconds": "5"})
    other_host = second.registry["plugins"]
    assert other_host.is_enabled("learning")
    assert wait_for(lambda: other_host._listener._thread is not None, 2)
    time.sleep(0.3)
    client = TestClient(first)
    headers = admin_with_headers(client)[1]

    put(client, "learning", {"enabled": False}, headers)

    assert wait_for(lambda: not other_host.is_enabled("learning"), 2)


# Pins -----------------------------------------------------------------------------------


def test_pinned_on_cannot_be_disabled(app_factory):
    app = app_factory(**{"fkod.plugins.pinned_on": "learning"})
    client = TestClient(app)
    headers = admin_with_headers(client)[1]

    response = put(client, "learning", {"enabled": False}, headers, status=409)

    assert_envelope(response, 409, "plugin_pinned")
    assert "fkod.plugins.pinned_on" in response.json["message"]
    assert response.json["errors"][0]["name"] == "enabled"
    body = client.web.get(f"{PLUGINS}/learning", headers=headers).json
    assert body["pinned"] == "on"
    assert body["status"] == "enabled"
    assert plugin_audit(app) == []


def test_pinned_on_overrides_stored_disable(app_factory):
    first = app_factory()
    client = TestClient(first)
    put(client, "learning", {"enabled": False}, admin_with_headers(client)[1])

    pinned = app_factory(**{"fkod.plugins.pinned_on": "learning"})

    assert pinned.registry["plugins"].is_enabled("learning")


def test_pinned_off_not_loaded_nor_enabled(app_factory):
    app = app_factory(**{"fkod.plugins.pinned_off": "learning"})
    client = TestClient(app)
    headers = admin_with_headers(client)[1]

    body = client.web.get(f"{PLUGINS}/learning", headers=headers).json
    response = put(client, "learning", {"enabled": True}, headers, status=409)

    assert body["status"] == "disabled"
    assert body["pinned"] == "off"
    assert body["contributes"]["routes"] == []
    assert_envelope(response, 409, "plugin_pinned")
    client.web.get("/api/v1/users", status=404)


@pytest.mark.parametrize("settings, message", [
    ({"fkod.plugins.pinned_on": "learn!ng"}, "is not a plugin entry-point name"),
    ({"fkod.plugins.pinned_off": "a/b"}, "is not a plugin entry-point name"),
    ({"fkod.plugins.pinned_on": "learning", "fkod.plugins.pinned_off": "learning"},
     "pin it on or off, not both"),
    ({"fkod.plugins.pinned_on": "learning", "fkod.plugins.disabled": "learning"},
     "pin it on or off, not both"),
    ({"fkod.plugins.state_cache_seconds": "60"}, "expected at most 5"),
])
def test_bad_pin_setting_fails_start(app_factory, settings, message):
    with pytest.raises(ConfigurationError, match=message):
        app_factory(**settings)


def test_failed_plugin_cannot_be_enabled(plugin_path, app_factory):
    plugin_path("fkod_broken", "broken", "fkod_test_broken", "raise RuntimeError('boom')\n")
    client = TestClient(app_factory())
    headers = admin_with_headers(client)[1]

    response = put(client, "broken", {"enabled": True}, headers, status=409)
    assert_envelope(response, 409, "plugin_failed")
    assert "RuntimeError: boom" in response.json["message"]

    body = put(client, "broken", {"enabled": False}, headers).json
    assert body["status"] == "failed"


# Input and roles ------------------------------------------------------------------------


@pytest.mark.parametrize("body, field", [
    ({}, ""),
    ({"enabled": "yes"}, "enabled"),
    ({"trusted": 1}, "trusted"),
    ({"enabled": True, "status": "enabled"}, "status"),
])
def test_update_rejects_bad_body(client, superadmin, body, field):
    response = put(client, "learning", body, superadmin, status=400)
    assert_envelope(response, 400, "validation_failed")
    assert field in [error["name"] for error in response.json["errors"]]


def test_readonly_admin_cannot_change(client):
    headers = admin_with_headers(client, "readonly")[1]

    response = put(client, "learning", {"enabled": False}, headers, status=403)

    assert_envelope(response, 403, "missing_permission")
    assert client.app.registry["plugins"].is_enabled("learning")


@pytest.mark.parametrize("role", ["superadmin", "support", "finance"])
def test_partner_changing_roles_may_change(client, role):
    headers = admin_with_headers(client, role)[1]
    put(client, "learning", {"trusted": True}, headers)


def test_partner_token_rejected(client):
    _partner, token = client.partner_with_token()
    for response in (client.web.get(PLUGINS, headers=auth_header(token), status=401),
                     put(client, "learning", {"enabled": False}, auth_header(token),
                         status=401)):
        assert response.json["status"] == 401
    client.web.get(PLUGINS, status=401)
