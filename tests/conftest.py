"""Fixtures shared by every test: a real application on a fresh database.

The database is SQLite by default. With ``FKOD_TEST_STACK=production`` the
functional tests run on PostgreSQL and Redis instead (rate limiter, usage
stream and dramatiq broker on Redis, an ``fkod worker``-style worker in the
test process), the way production.ini configures them.
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
import textwrap

import pytest
import sqlalchemy as sa

from fkod import shutdown
from fkod.core.migrations import upgrade_to_head
from fkod.core.testing import TestClient, make_app, make_settings
from tests.receivers import Receiver, Reply

pytest_plugins = ["tests.services"]

STACK = os.environ.get("FKOD_TEST_STACK", "embedded")


@pytest.fixture(scope="session")
def migrated_sqlite_template(tmp_path_factory):
    """A SQLite file migrated to head once per session; each test copies it."""
    path = tmp_path_factory.mktemp("template") / "fkod.sqlite"
    upgrade_to_head(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def migrated_postgres_template(make_postgres_database) -> str:
    """Name of a PostgreSQL database migrated to head once per test process."""
    url = make_postgres_database()
    upgrade_to_head(url)
    return sa.engine.make_url(url).database


@pytest.fixture
def stack_settings(request, tmp_path, migrated_sqlite_template):
    """Settings for the stack under test: embedded SQLite, or PostgreSQL with Redis."""
    if STACK == "production":
        template = request.getfixturevalue("migrated_postgres_template")
        make_database = request.getfixturevalue("make_postgres_database")
        postgres = make_database(template=template)
        redis_url = request.getfixturevalue("redis_url")
        namespace = os.urandom(4).hex()
        yield make_settings(tmp_path, db_url=postgres, extra={
            "fkod.redis.url": redis_url,
            "fkod.ratelimit.backend": "redis",
            "fkod.metering.backend": "redis",
            "fkod.redis.key_prefix": f"fkod-test:{namespace}:",
            "fkod.tasks.broker": "redis",
        })
        # After app_factory has shut the test's applications down. Dropping
        # now keeps a run of thousands of tests from filling the disk.
        make_database.drop(postgres)
        return
    shutil.copy(migrated_sqlite_template, tmp_path / "fkod.sqlite")
    yield make_settings(tmp_path)


@pytest.fixture
def app_factory(stack_settings):
    """Build applications on the test's database; each is shut down after the test."""
    built = []

    def build(**overrides):
        settings = dict(stack_settings)
        settings.update(overrides)
        app = make_app(settings)
        built.append(app)
        if not app.registry["tasks"].in_process:
            app.registry["tasks"].start()
        return app

    yield build
    for app in built:
        shutdown(app.registry)
    _delete_redis_keys(stack_settings)


def _delete_redis_keys(settings) -> None:
    """Remove what a production-stack test left in the shared Redis under its own prefix."""
    if not settings.get("fkod.redis.url"):
        return
    import redis

    client = redis.Redis.from_url(settings["fkod.redis.url"])
    try:
        keys = list(client.scan_iter(match=settings["fkod.redis.key_prefix"] + "*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def app(app_factory):
    return app_factory()


@pytest.fixture
def client(app):
    return TestClient(app)


@pytest.fixture
def make_receiver():
    """Start receivers on 127.0.0.1 and close each one after the test."""
    started: list[Receiver] = []

    def start(*replies: Reply | int) -> Receiver:
        receiver = Receiver(*replies)
        receiver.start()
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        receiver.close()
    for receiver in started:
        assert receiver.errors == [], f"receiver at {receiver.url} failed to handle a request"


def install_plugin(tmp_path, distribution: str, entry_name: str, module: str, source: str):
    """Install a plugin distribution the way pip does: a module plus a .dist-info folder."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    # A .dist-info folder name spells the distribution with underscores, because
    # importlib.metadata reads the name only up to the first hyphen.
    info = site / f"{distribution.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[fkod.plugins]\n{entry_name} = {module}\n")
    return site


@pytest.fixture
def plugin_path(tmp_path, monkeypatch):
    """Put installed test plugins on sys.path for the test only."""
    added = []

    def add(*args):
        site = install_plugin(tmp_path, *args)
        if str(site) not in sys.path:
            monkeypatch.syspath_prepend(str(site))
        added.append(args[2])
        importlib.invalidate_caches()

    yield add
    for module in added:
        sys.modules.pop(module, None)
