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


def pytest_configure(config):
    # A module whose tests each start from a partner of their own, and count
    # nothing that other tests write, sets pytestmark = pytest.mark.shared_app.
    config.addinivalue_line(
        "markers", "shared_app(shared=True): run on the module's application instead of "
        "building one; shared_app(False) on a test overrides the mark of its module")


def uses_shared_app(request) -> bool:
    """Return True when the nearest ``shared_app`` mark of the test selects the module's app."""
    marker = request.node.get_closest_marker("shared_app")
    return marker is not None and marker.args[:1] != (False,)


def _settings_for_stack(request, directory):
    """Yield settings for the stack under test on a new database, then drop the database."""
    if STACK == "production":
        template = request.getfixturevalue("migrated_postgres_template")
        make_database = request.getfixturevalue("make_postgres_database")
        postgres = make_database(template=template)
        redis_url = request.getfixturevalue("redis_url")
        namespace = os.urandom(4).hex()
        yield make_settings(directory, db_url=postgres, extra={
            "fkod.redis.url": redis_url,
            "fkod.ratelimit.backend": "redis",
            "fkod.metering.backend": "redis",
            "fkod.redis.key_prefix": f"fkod-test:{namespace}:",
            "fkod.tasks.broker": "redis",
        })
        # After the applications are shut down. Dropping now keeps a run of
        # thousands of tests from filling the disk.
        make_database.drop(postgres)
        return
    shutil.copy(request.getfixturevalue("migrated_sqlite_template"), directory / "fkod.sqlite")
    yield make_settings(directory)


def _application_builder(settings):
    """Return a function that builds applications on these settings, and the list it fills."""
    built = []

    def build(**overrides):
        app = make_app({**settings, **overrides})
        built.append(app)
        if not app.registry["tasks"].in_process:
            app.registry["tasks"].start()
        return app

    return build, built


def _shut_down(built, settings) -> None:
    for app in built:
        shutdown(app.registry)
    _delete_redis_keys(settings)


@pytest.fixture
def stack_settings(request, tmp_path):
    """Settings for the stack under test: embedded SQLite, or PostgreSQL with Redis."""
    yield from _settings_for_stack(request, tmp_path)


@pytest.fixture
def app_factory(request):
    """Build applications on the test's database; each is shut down after the test.

    In a test marked ``shared_app``, a call without overrides returns the
    module's application, and other calls build applications on the module's
    database that stop after the test.
    """
    if uses_shared_app(request):
        settings, module_app = request.getfixturevalue("module_stack")
        # A Redis namespace of their own keeps the workers of these applications
        # from taking tasks, such as mails, that the module's application queued.
        namespace = settings.get("fkod.redis.key_prefix", "fkod-test:") + os.urandom(4).hex() + ":"
        settings = {**settings, "fkod.redis.key_prefix": namespace}
        build, built = _application_builder(settings)

        def shared_or_new(**overrides):
            if not overrides:
                return module_app
            return build(**overrides)

        yield shared_or_new
    else:
        settings = request.getfixturevalue("stack_settings")
        build, built = _application_builder(settings)
        yield build
    _shut_down(built, settings)


@pytest.fixture(scope="module")
def module_stack(request, tmp_path_factory):
    """Settings on one database for the shared tests of a module, and their application.

    Building an application costs about a third of a second of CPU, so tests
    that start from a partner of their own share one per module and test process.
    """
    settings_source = _settings_for_stack(request, tmp_path_factory.mktemp("module"))
    # Every test of the module signs up from 127.0.0.1, so the per-address
    # limits of the operations that need no credentials are off.
    settings = {**next(settings_source), "fkod.ratelimit.per_address_per_minute": "0",
                "fkod.ratelimit.per_address_per_hour": "0"}
    build, built = _application_builder(settings)
    yield settings, build()
    _shut_down(built, settings)
    next(settings_source, None)


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
    """The application under test, built for this test or shared by the module.

    A test marked ``shared_app`` gets one built for the whole module, so it
    must not count rows, mails or usage that other tests may have written.
    """
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
