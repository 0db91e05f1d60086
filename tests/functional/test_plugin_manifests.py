"""Syncing plugins' integration manifests into the marketplace catalog at start-up."""

from __future__ import annotations

import logging
import threading
import types

import sqlalchemy as sa

from fkod.admin.testing import admin_with_headers
from fkod.core.auth.models import Partner
from fkod.core.db import run_in_transaction
from fkod.core.ids import parse_id
from fkod.core.plugin_models import PluginState
from fkod.core.testing import TestClient
from fkod.marketplace.catalog import listed_clause
from fkod.marketplace.models import Integration, IntegrationVersion
from fkod.marketplace.sync import sync_integrations

# A plugin whose manifest takes its publisher, version and description from
# the environment, so one installed plugin can ship several releases.
MANIFEST_PLUGIN = """
    import os

    from fkod.core.hookspecs import hookimpl
    from fkod.core.integrations import IntegrationManifest

    @hookimpl
    def fkod_register_integrations():
        prefix = "FKOD_TEST_{key}_"
        return [IntegrationManifest(
            slug=os.environ.get(prefix + "SLUG", "{slug}"),
            name="Quiz Sync",
            publisher=os.environ.get(prefix + "PUBLISHER", "quizco"),
            category="assessment",
            description=os.environ.get(prefix + "DESCRIPTION", "Sends quiz results."),
            version=os.environ.get(prefix + "VERSION", "1.0.0"),
            scopes=("users:read",),
            event_types=("course.completed",),
            release_notes=os.environ.get(prefix + "NOTES", "First release."),
        )]
"""


def install_manifest_plugin(plugin_path, name: str = "quizsync", slug: str = "quiz-sync"):
    # The distribution name has no hyphen: install_plugin names the .dist-info
    # folder after it, and importlib.metadata reads the name up to the first hyphen.
    plugin_path(f"fkod_{name}", name, f"fkod_test_{name}",
                MANIFEST_PLUGIN.replace("{key}", name.upper()).replace("{slug}", slug))


def add_partner(app, slug: str, *, verified: bool = True) -> int:
    """Register a partner through the API, then give it ``slug`` and a verification status."""
    registered = TestClient(app).register_partner(company_name=f"{slug} company")
    number = parse_id("partner", registered["partner"]["id"])

    def work(session):
        partner = session.get(Partner, number)
        partner.slug = slug
        partner.status = "active"
        partner.verification_status = "verified" if verified else "submitted"

    run_in_transaction(app.registry["db.session_factory"], work)
    return number


def integration_rows(app, slug: str = "quiz-sync") -> list[Integration]:
    return run_in_transaction(app.registry["db.session_factory"], lambda session: list(
        session.scalars(sa.select(Integration).where(Integration.slug == slug))))


def version_rows(app, integration_id: int) -> list[tuple[str, str, str | None]]:
    return run_in_transaction(app.registry["db.session_factory"], lambda session: [
        (row.version, row.status, row.release_notes) for row in session.scalars(
            sa.select(IntegrationVersion)
            .where(IntegrationVersion.integration_id == integration_id)
            .order_by(IntegrationVersion.id))])


def listed_slugs(app) -> set[str]:
    request = types.SimpleNamespace(registry=app.registry)
    return run_in_transaction(app.registry["db.session_factory"], lambda session: set(
        session.scalars(sa.select(Integration.slug).where(listed_clause(request)))))


def set_integration(app, slug: str, **values) -> None:
    def work(session):
        row = session.scalar(sa.select(Integration).where(Integration.slug == slug))
        for name, value in values.items():
            setattr(row, name, value)

    run_in_transaction(app.registry["db.session_factory"], work)


def set_trusted(app, name: str, trusted: bool = True) -> None:
    def work(session):
        state = session.get(PluginState, name) or PluginState(name=name)
        state.trusted = trusted
        session.add(state)

    run_in_transaction(app.registry["db.session_factory"], work)


def link_of(app, plugin: str, slug: str = "quiz-sync"):
    links = app.registry["plugins"].plugins[plugin].integrations
    return next(link for link in links if link.slug == slug)


# New, unchanged, new version ------------------------------------------------------------


def test_new_integration_waits_for_review(plugin_path, app_factory):
    install_manifest_plugin(plugin_path)
    first = app_factory()
    partner_id = add_partner(first, "quizco")

    app = app_factory()

    [row] = integration_rows(app)
    assert row.plugin_name == "quizsync"
    assert row.partner_id == partner_id
    assert row.status == "in_review"
    assert row.version == "1.0.0"
    assert row.scopes == ["users:read"]
    assert row.event_types == ["course.completed"]
    assert version_rows(app, row.id) == [("1.0.0", "in_review", "First release.")]
    assert "quiz-sync" not in listed_slugs(app)
    link = link_of(app, "quizsync")
    assert link.linked is True
    assert link.outcome == "created"


def test_unchanged_manifest_writes_nothing(plugin_path, app_factory):
    install_manifest_plugin(plugin_path)
    add_partner(app_factory(), "quizco")
    [before] = integration_rows(app_factory())

    app = app_factory()

    [after] = integration_rows(app)
    assert after.updated_at == before.updated_at
    assert after.submitted_at == before.submitted_at
    assert len(version_rows(app, after.id)) == 1
    assert link_of(app, "quizsync").outcome == "unchanged"


def test_new_version_goes_back_to_review(plugin_path, app_factory, monkeypatch):
    install_manifest_plugin(plugin_path)
    add_partner(app_factory(), "quizco")
    app = app_factory()
    set_integration(app, "quiz-sync", status="published")
    assert "quiz-sync" in listed_slugs(app)

    monkeypatch.setenv("FKOD_TEST_QUIZSYNC_VERSION", "1.1.0")
    monkeypatch.setenv("FKOD_TEST_QUIZSYNC_DESCRIPTION", "Sends quiz results and badges.")
    monkeypatch.setenv("FKOD_TEST_QUIZSYNC_NOTES", "Badges.")
    upgraded = app_factory()

    [row] = integration_rows(upgraded)
    assert row.version == "1.1.0"
    assert row.description == "Sends quiz results and badges."
    assert row.status == "in_review"
    assert version_rows(upgraded, row.id) == [("1.0.0", "in_review", "First release."),
                                              ("1.1.0", "in_review", "Badges.")]
    assert "quiz-sync" not in listed_slugs(upgraded)
    assert link_of(upgraded, "quizsync").outcome == "updated"


def test_trusted_plugin_published_at_once(plugin_path, app_factory, monkeypatch):
    install_manifest_plugin(plugin_path)
    first = app_factory()
    add_partner(first, "quizco")
    set_trusted(first, "quizsync")

    app = app_factory()
    [row] = integration_rows(app)
    assert row.status == "published"
    assert row.published_at is not None
    assert "quiz-sync" in listed_slugs(app)

    monkeypatch.setenv("FKOD_TEST_QUIZSYNC_VERSION", "2.0.0")
    upgraded = app_factory()
    [row] = integration_rows(upgraded)
    assert row.status == "published"
    assert [version[:2] for version in version_rows(upgraded, row.id)] == [
        ("1.0.0", "published"), ("2.0.0", "published")]
    assert "quiz-sync" in listed_slugs(upgraded)


def test_unpublished_integration_stays_unlisted(plugin_path, app_factory, monkeypatch):
    install_manifest_plugin(plugin_path)
    add_partner(app_factory(), "quizco")
    set_integration(app_factory(), "quiz-sync", status="unpublished")

    monkeypatch.setenv("FKOD_TEST_QUIZSYNC_VERSION", "1.0.1")
    app = app_factory()

    [row] = integration_rows(app)
    assert row.status == "unpublished"
    assert row.version == "1.0.1"


# Publishers -----------------------------------------------------------------------------


def test_unknown_publisher_left_unlinked(plugin_path, app_factory, caplog):
    install_manifest_plugin(plugin_path)
    with caplog.at_level(logging.WARNING, logger="fkod.marketplace.sync"):
        app = app_factory()

    assert integration_rows(app) == []
    assert app.registry["plugins"].plugins["quizsync"].status == "loaded"
    link = link_of(app, "quizsync")
    assert link.linked is False
    assert "'quizco' is not a partner" in link.problem
    assert any(record.message == "plugin integration not linked" for record in caplog.records)


def test_unverified_publisher_left_unlinked(plugin_path, app_factory):
    install_manifest_plugin(plugin_path)
    add_partner(app_factory(), "quizco", verified=False)

    app = app_factory()

    assert integration_rows(app) == []
    link = link_of(app, "quizsync")
    assert link.linked is False
    assert "not a verified partner" in link.problem


def test_unlinked_shown_in_admin_detail(plugin_path, app_factory):
    install_manifest_plugin(plugin_path)
    client = TestClient(app_factory())
    _admin, headers = admin_with_headers(client, "readonly")

    body = client.web.get("/api/admin/plugins/quizsync", headers=headers).json

    assert body["contributes"]["integrations"] == ["quiz-sync"]
    [link] = body["integrations"]
    assert link["slug"] == "quiz-sync"
    assert link["linked"] is False
    assert link["integration_id"] is None
    assert "quizco" in link["problem"]


# Failures -------------------------------------------------------------------------------


def test_invalid_manifest_fails_plugin(plugin_path, app_factory, monkeypatch):
    monkeypatch.setenv("FKOD_TEST_QUIZSYNC_VERSION", "not a version")
    install_manifest_plugin(plugin_path)
    app = app_factory()

    info = app.registry["plugins"].plugins["quizsync"]
    assert info.status == "failed"
    assert "fkod_register_integrations: ValueError" in info.error
    assert "'not a version' is not a version" in info.error
    assert integration_rows(app) == []
    states = run_in_transaction(app.registry["db.session_factory"],
                                lambda session: session.get(PluginState, "quizsync").load_status)
    assert states == "failed"


def test_duplicate_slug_across_plugins_fails_second(plugin_path, app_factory):
    install_manifest_plugin(plugin_path, "quizalpha")
    install_manifest_plugin(plugin_path, "quizbeta")
    add_partner(app_factory(), "quizco")

    app = app_factory()

    plugins = app.registry["plugins"].plugins
    assert plugins["quizalpha"].status == "loaded"
    assert plugins["quizbeta"].status == "failed"
    assert "'quiz-sync' is also contributed by plugin 'quizalpha'" in plugins["quizbeta"].error
    [row] = integration_rows(app)
    assert row.plugin_name == "quizalpha"


def test_owner_keeps_slug_against_newcomer(plugin_path, app_factory):
    install_manifest_plugin(plugin_path, "quizbeta")
    add_partner(app_factory(), "quizco")
    app_factory()
    install_manifest_plugin(plugin_path, "quizalpha")

    app = app_factory()

    plugins = app.registry["plugins"].plugins
    assert plugins["quizbeta"].status == "loaded"
    assert plugins["quizalpha"].status == "failed"
    [row] = integration_rows(app)
    assert row.plugin_name == "quizbeta"


def test_slug_of_partner_integration_fails_plugin(plugin_path, app_factory):
    first = app_factory()
    partner_id = add_partner(first, "quizco")

    def work(session):
        session.add(Integration(partner_id=partner_id, name="Hand made", slug="quiz-sync",
                                status="published"))

    run_in_transaction(first.registry["db.session_factory"], work)
    install_manifest_plugin(plugin_path)

    app = app_factory()

    info = app.registry["plugins"].plugins["quizsync"]
    assert info.status == "failed"
    assert "which a partner created" in info.error
    [row] = integration_rows(app)
    assert row.plugin_name is None
    assert row.name == "Hand made"


# Trust, concurrency, unmigrated databases -----------------------------------------------


def test_trust_change_publishes_waiting_integration(plugin_path, app_factory):
    install_manifest_plugin(plugin_path)
    add_partner(app_factory(), "quizco")
    app = app_factory()
    client = TestClient(app)
    _admin, headers = admin_with_headers(client)
    assert integration_rows(app)[0].status == "in_review"

    body = client.web.put_json("/api/admin/plugins/quizsync", {"trusted": True},
                               headers=headers).json

    assert body["trusted"] is True
    [row] = integration_rows(app)
    assert row.status == "published"
    assert "quiz-sync" in listed_slugs(app)
    assert body["integrations"][0]["integration_id"] == f"int_{row.id}"


def test_sync_in_two_processes_at_once(plugin_path, app_factory):
    install_manifest_plugin(plugin_path)
    add_partner(app_factory(), "quizco")
    first, second = app_factory(), app_factory()
    run_in_transaction(first.registry["db.session_factory"], lambda session: session.execute(
        sa.delete(IntegrationVersion)))
    run_in_transaction(first.registry["db.session_factory"], lambda session: session.execute(
        sa.delete(Integration)))

    barrier = threading.Barrier(2)
    errors = []

    def start(app):
        try:
            barrier.wait(timeout=10)
            sync_integrations(app.registry)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(app,)) for app in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    [row] = integration_rows(first)
    assert len(version_rows(first, row.id)) == 1
    for app in (first, second):
        assert app.registry["plugins"].plugins["quizsync"].status == "loaded"
        assert link_of(app, "quizsync").linked is True


def test_unmigrated_database_skipped(plugin_path, tmp_path, request, app_factory,
                                    stack_settings, caplog):
    install_manifest_plugin(plugin_path)
    if stack_settings["fkod.db.url"].startswith("sqlite"):
        empty_url = f"sqlite:///{tmp_path / 'empty.sqlite'}"
    else:
        empty_url = request.getfixturevalue("make_postgres_schema")()
    with caplog.at_level(logging.WARNING, logger="fkod.marketplace.sync"):
        app = app_factory(**{"fkod.db.url": empty_url})

    assert app.registry["plugins"].plugins["quizsync"].status == "loaded"
    assert any(record.message == "could not sync plugin integrations"
               for record in caplog.records)
