"""Session fixtures that locate the real services used by integration tests.

Each fixture checks that its service responds and returns its URL. When the
service is unreachable the dependent tests are skipped, unless the environment
variable CI is ``true``, ``1`` or ``yes``, in which case they fail so that a
broken CI service is not mistaken for a passing run.
"""

from __future__ import annotations

import os
import queue
import secrets
import threading
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def ci_requires_services() -> bool:
    """Return True when the CI environment variable is set to a true value."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def report_unreachable(service: str, url: str, error: Exception, how_to_enable: str) -> None:
    """Skip the requesting test, or fail it under CI, because ``service`` did not respond."""
    message = f"{service} at {url} is unreachable ({error}). To run these tests, {how_to_enable}."
    if ci_requires_services():
        pytest.fail(f"{message} CI is set, so the test fails instead of being skipped.")
    pytest.skip(message)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of a Redis server that responded to PING, from FKOD_TEST_REDIS_URL."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    url = os.environ.get("FKOD_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    client = redis.Redis.from_url(
        url,
        socket_connect_timeout=2,
        socket_timeout=2,
        retry=Retry(NoBackoff(), 0),
    )
    failure: redis.exceptions.RedisError | None = None
    try:
        client.ping()
    except redis.exceptions.RedisError as error:
        failure = error
    finally:
        client.close()

    # Reported outside the except block so that the skip or failure does not
    # carry redis-py's whole traceback as its context.
    if failure is not None:
        report_unreachable(
            "Redis", url, failure, "start Redis on 127.0.0.1:6379 or set FKOD_TEST_REDIS_URL"
        )
    return url


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[tuple[str, sa.Engine]]:
    """The URL from FKOD_TEST_POSTGRES_URL and an autocommit engine on it, once it answers."""
    url = os.environ.get("FKOD_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    shown_url = sa.engine.make_url(url).render_as_string(hide_password=True)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool, connect_args={"connect_timeout": 2})
    failure: Exception | None = None
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as error:
        failure = error.orig or error
    finally:
        engine.dispose()

    if failure is not None:
        report_unreachable(
            "PostgreSQL",
            shown_url,
            failure,
            "start PostgreSQL on 127.0.0.1:5432 or set FKOD_TEST_POSTGRES_URL",
        )

    # The probe above fails fast; later connections wait longer, because a
    # loaded machine running several test processes can be slow to accept one.
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT",
                              connect_args={"connect_timeout": 30})
    _create_shared_extensions(engine)
    yield url, engine
    engine.dispose()


def _create_shared_extensions(engine: sa.Engine) -> None:
    """Create pg_trgm in the public schema before test processes race to create it.

    Migrations run ``CREATE EXTENSION IF NOT EXISTS``, which fails with a
    unique violation when two sessions run it at the same moment.
    """
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public"))
    except sa.exc.IntegrityError:
        pass  # another test process created it first


@pytest.fixture(scope="session")
def make_postgres_schema(postgres_server) -> Iterator[Callable[[], str]]:
    """Function that creates an empty schema with a random name and returns a URL that uses it.

    The database is the one at FKOD_TEST_POSTGRES_URL. Connections made from a
    returned URL have ``search_path`` set to their schema alone, so tables
    created through it land there. Every schema created is dropped, with its
    contents, at the end of the session.
    """
    url, engine = postgres_server
    created: list[str] = []

    def create_schema() -> str:
        schema = f"fkod_test_{secrets.token_hex(6)}"
        with engine.connect() as connection:
            connection.execute(sa.schema.CreateSchema(schema))
        created.append(schema)
        schema_url = sa.engine.make_url(url).update_query_dict(
            {"options": f"-csearch_path={schema}"}
        )
        return schema_url.render_as_string(hide_password=False)

    yield create_schema

    # One transaction per schema: dropping dozens at once needs more locks
    # than max_locks_per_transaction allows.
    for schema in created:
        with engine.begin() as connection:
            # A connection that a test left open would block DROP SCHEMA, and
            # the timeout turns that into an error instead of a hang.
            connection.execute(sa.text("SET LOCAL lock_timeout = '10s'"))
            connection.execute(sa.schema.DropSchema(schema, cascade=True))


@pytest.fixture(scope="session")
def make_postgres_database(postgres_server) -> Iterator[Callable[..., str]]:
    """Function that creates a database with a random name and returns its URL.

    With ``template``, the name of a database from an earlier call, the new
    database is a copy of it, which takes a few milliseconds where running
    migrations again takes seconds. A template must have no open connections
    while it is copied. ``drop(url)`` hands a finished database to a
    background thread that drops it. A drop waits for a checkpoint (about a
    second on a busy server, measured here), so a test does not wait for it.
    Every database left is dropped at the end of the session, along with
    any connection a test left open to it.
    """
    url, engine = postgres_server
    created: list[str] = []
    unused: queue.Queue[str | None] = queue.Queue()

    def drop(name: str) -> None:
        with engine.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def drop_unused() -> None:
        while (name := unused.get()) is not None:
            try:
                drop(name)
            except sa.exc.SQLAlchemyError:
                created.append(name)  # tried again at the end of the session

    dropper = threading.Thread(target=drop_unused, name="fkod-test-dropdb", daemon=True)
    dropper.start()

    def create_database(template: str | None = None) -> str:
        name = f"fkod_test_{secrets.token_hex(6)}"
        statement = f'CREATE DATABASE "{name}"'
        if template is not None:
            statement += f' TEMPLATE "{template}"'
        with engine.connect() as connection:
            connection.execute(sa.text(statement))
        created.append(name)
        return sa.engine.make_url(url).set(database=name).render_as_string(hide_password=False)

    def drop_database(database_url: str) -> None:
        name = sa.engine.make_url(database_url).database
        created.remove(name)
        unused.put(name)

    create_database.drop = drop_database
    yield create_database

    unused.put(None)
    dropper.join()
    for name in reversed(created):
        drop(name)


@pytest.fixture(scope="session")
def postgres_url(make_postgres_schema) -> str:
    """URL of an empty PostgreSQL schema that this test session owns, from make_postgres_schema."""
    return make_postgres_schema()
