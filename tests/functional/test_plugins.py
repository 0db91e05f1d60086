"""The plugin host: discovery through entry points, failures, and the run-time gate."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from fkod.core.db import run_in_transaction
from fkod.core.plugin_models import PluginState
from fkod.core.testing import TestClient, auth_header


def test_builtin_plugins_loaded(app):
    plugins = app.registry["plugins"].plugins
    assert plugins["learning"].status == "loaded"
    assert plugins["platform_events"].status == "loaded"


def test_load_state_recorded(app):
    states = run_in_transaction(app.registry["db.session_factory"], lambda session: {
        state.name: state.load_status for state in session.scalars(sa.select(PluginState))})
    assert states["learning"] == "loaded"


def test_broken_import_does_not_stop_app(plugin_path, app_factory):
    plugin_path("fkod_broken", "broken", "fkod_test_broken", "raise RuntimeError('boom')\n")
    app = app_factory()
    info = app.registry["plugins"].plugins["broken"]
    assert info.status == "failed"
    assert "RuntimeError: boom" in info.error
    assert TestClient(app).web.get("/health").status_int == 200


def test_failing_hook_isolated(plugin_path, app_factory):
    plugin_path("fkod-bad-events", "bad_events", "fkod_test_bad_events", """
        from fkod.core.hookspecs import hookimpl

        @hookimpl
        def fkod_register_event_types():
            raise ValueError("no catalog today")
    """)
    app = app_factory()
    host = app.registry["plugins"]
    assert host.plugins["bad_events"].status == "failed"
    assert host.event_catalog.get("user.created") is not None


def test_third_party_event_types_listed(plugin_path, app_factory):
    plugin_path("fkod-quiz", "quiz", "fkod_test_quiz", """
        from fkod.core.hookspecs import hookimpl
        from fkod.core.webhooks.catalog import EventType

        @hookimpl
        def fkod_register_event_types():
            return [EventType("quiz.passed", "A user passed a quiz.",
                              {"type": "object"}, {"score": 9})]
    """)
    client = TestClient(app_factory())
    names = [item["name"] for item in client.web.get("/api/webhooks/available-events").json["data"]]
    assert "quiz.passed" in names


def test_duplicate_event_type_fails_plugin(plugin_path, app_factory):
    plugin_path("fkod-copycat", "copycat", "fkod_test_copycat", """
        from fkod.core.hookspecs import hookimpl
        from fkod.core.webhooks.catalog import EventType

        @hookimpl
        def fkod_register_event_types():
            return [EventType("user.created", "Taken.", {"type": "object"}, {})]
    """)
    host = app_factory().registry["plugins"]
    assert host.plugins["copycat"].status == "failed"
    assert host.event_catalog.get("user.created").plugin == "learning"


@pytest.mark.parametrize("setting", ["fkod.plugins.disabled", "fkod.plugins.pinned_off"])
def test_pinned_off_not_loaded(app_factory, setting):
    app = app_factory(**{setting: "learning"})
    client = TestClient(app)
    info = app.registry["plugins"].plugins["learning"]
    assert info.status == "not_loaded"
    assert info.pinned == "off"
    assert not app.registry["plugins"].is_enabled("learning")
    assert client.web.get("/api/v1/users", status=404).json["code"] == "not_found"
    assert app.registry["plugins"].event_catalog.get("user.created") is None


def _set_enabled(app, name: str, enabled: bool) -> None:
    host = app.registry["plugins"]
    run_in_transaction(app.registry["db.session_factory"],
                       lambda session: host.set_enabled(session, name, enabled))


def test_gate_hides_disabled_plugin(client, app):
    _partner, token = client.partner_with_token()
    key = client.create_key(token)["key"]
    client.web.get("/api/v1/users", headers=auth_header(key), status=200)

    _set_enabled(app, "learning", False)
    response = client.web.get("/api/v1/users", headers=auth_header(key), status=404)
    assert response.json["code"] == "not_found"
    names = [item["name"] for item in client.web.get("/api/webhooks/available-events").json["data"]]
    assert "user.created" not in names
    assert "partner.created" in names

    _set_enabled(app, "learning", True)
    client.web.get("/api/v1/users", headers=auth_header(key), status=200)


def test_gate_reaches_other_processes(app_factory):
    first, second = app_factory(), app_factory()
    _set_enabled(first, "learning", False)
    # The second application instance caches the state for at most
    # fkod.plugins.state_cache_seconds; expiring its cache stands in for that wait.
    second.registry["plugins"].forget_cached_state()
    assert not second.registry["plugins"].is_enabled("learning")


def test_hook_implementations_checked(plugin_path, app_factory):
    plugin_path("fkod-typo", "typo", "fkod_test_typo", """
        from fkod.core.hookspecs import hookimpl

        @hookimpl
        def fkod_register_event_typos():
            return []
    """)
    app = app_factory()
    info = app.registry["plugins"].plugins["typo"]
    assert info.status == "failed"
    assert "fkod_register_event_typos" in info.error


def test_gate_owns_only_plugin_routes(app):
    routes = app.registry["plugins"].plugins["learning"].routes
    assert routes == {"v1_users", "v1_user", "v1_courses", "v1_course_complete", "v1_mentors",
                      "v1_mentor_match"}
