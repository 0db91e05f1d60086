"""Private PostgreSQL and Redis servers that fault tests may stop and restart.

The machine's shared servers are never touched: every server here runs from a
temporary directory on a free loopback port and is stopped by the fixture that
started it. PostgreSQL runs as the ``postgres`` OS user when the tests run as
root, because initdb and postgres refuse to run as root. The cluster is
created with initdb once per test session and every test gets a fresh
database copied from a migrated template. Redis starts once per test, which
takes a few milliseconds.

When ``initdb`` or ``redis-server`` is missing the tests are skipped, unless
the environment variable CI is true, in which case they fail.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa

from fkod.core.migrations import upgrade_to_head
from tests.services import ci_requires_services

POSTGRES_BIN = Path(os.environ.get("FKOD_TEST_POSTGRES_BIN", "/usr/lib/postgresql/15/bin"))
POSTGRES_OS_USER = "postgres"
START_SECONDS = 30


def require_program(path: Path | str | None, name: str) -> str:
    """Return the program's path; skip the test, or fail it under CI, when it is missing."""
    if path is not None and Path(path).is_file() and os.access(path, os.X_OK):
        return str(path)
    message = f"{name} is not installed, so the fault tests cannot start a private server."
    if ci_requires_services():
        pytest.fail(f"{message} CI is set, so the test fails instead of being skipped.")
    pytest.skip(message)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(condition, timeout: float, description: str, interval: float = 0.05):
    """Call ``condition`` until it returns a true value and return that value.

    Raises AssertionError naming ``description`` when ``timeout`` seconds pass first.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, (
            f"timed out after {timeout} s waiting for {description}")
        time.sleep(interval)


class PrivatePostgres:
    """A PostgreSQL cluster in a temporary directory, listening on 127.0.0.1:``port``."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.data = directory / "data"
        self.log_path = directory / "postgres.log"
        self.port = free_port()
        self._as_root = os.geteuid() == 0

    def _run(self, *args: str, timeout: float = START_SECONDS) -> subprocess.CompletedProcess:
        command = list(args)
        if self._as_root:
            command = ["runuser", "-u", POSTGRES_OS_USER, "--", *command]
        return subprocess.run(command, check=True, capture_output=True, text=True,
                              timeout=timeout)

    def init(self) -> None:
        self._run(str(POSTGRES_BIN / "initdb"), "-D", str(self.data), "-U", "postgres",
                  "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C.UTF-8")

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} "
                   f"-c unix_socket_directories={self.directory} -c fsync=off "
                   f"-c synchronous_commit=off -c full_page_writes=off")
        self._run(str(POSTGRES_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log_path),
                  "-o", options, "-w", "-t", str(START_SECONDS), "start")

    def stop(self) -> None:
        """Stop the server in fast mode: open sessions are ended, as in a failover."""
        self._run(str(POSTGRES_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w",
                  "stop")

    def is_running(self) -> bool:
        try:
            self._run(str(POSTGRES_BIN / "pg_ctl"), "-D", str(self.data), "status")
        except subprocess.CalledProcessError:
            return False
        return True

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def admin_engine(self) -> sa.Engine:
        return sa.create_engine(self.url(), poolclass=sa.pool.NullPool,
                                isolation_level="AUTOCOMMIT",
                                connect_args={"connect_timeout": 5})


def _private_directory(prefix: str) -> Path:
    """Create a temporary directory that the postgres OS user owns when running as root."""
    directory = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    if os.geteuid() == 0:
        shutil.chown(directory, user=POSTGRES_OS_USER, group=POSTGRES_OS_USER)
    return directory


@pytest.fixture(scope="session")
def private_postgres() -> Iterator[PrivatePostgres]:
    """A private PostgreSQL cluster, created and started once per test session.

    A test may stop or restart it, and must leave it running.
    """
    require_program(POSTGRES_BIN / "initdb", "PostgreSQL's initdb")
    directory = _private_directory("fkod-faults-pg-")
    server = PrivatePostgres(directory)
    try:
        server.init()
        server.start()
        yield server
    finally:
        if server.is_running():
            server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def migrated_private_template(private_postgres) -> str:
    """Name of a database on the private cluster migrated to head once per session."""
    engine = private_postgres.admin_engine()
    with engine.connect() as connection:
        connection.execute(sa.text('CREATE DATABASE "fkod_template"'))
    engine.dispose()
    upgrade_to_head(private_postgres.url("fkod_template"))
    return "fkod_template"


@pytest.fixture
def private_database(private_postgres, migrated_private_template) -> str:
    """URL of a new database on the private cluster, copied from the migrated template."""
    if not private_postgres.is_running():
        private_postgres.start()
    name = f"fkod_fault_{secrets.token_hex(4)}"
    engine = private_postgres.admin_engine()
    with engine.connect() as connection:
        connection.execute(sa.text(
            f'CREATE DATABASE "{name}" TEMPLATE "{migrated_private_template}"'))
    engine.dispose()
    return private_postgres.url(name)


class PrivateRedis:
    """A ``redis-server`` on 127.0.0.1:``port`` with no persistence, stopped by ``stop``."""

    def __init__(self, program: str, directory: Path):
        self.program = program
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server on this object's port and wait until it replies to PING."""
        log = open(self.directory / "redis.log", "ab")
        self.process = subprocess.Popen(
            [self.program, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory)],
            stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        wait_until(self._answers, START_SECONDS, f"redis-server on port {self.port}")

    def _answers(self) -> bool:
        assert self.process.poll() is None, (
            f"redis-server exited with {self.process.returncode}; see {self.directory}/redis.log")
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5)
        try:
            return bool(client.ping())
        except redis.exceptions.ConnectionError:
            return False
        finally:
            client.close()

    def stop(self) -> None:
        """Stop the server at once (SIGKILL), as a crash would, and wait for it to exit."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=START_SECONDS)
        self.process = None


@pytest.fixture
def private_redis(tmp_path) -> Iterator[PrivateRedis]:
    """A private Redis server for one test, stopped afterwards."""
    program = require_program(shutil.which("redis-server"), "redis-server")
    server = PrivateRedis(program, tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
