"""Two gunicorn servers and two ``fkod worker`` processes sharing PostgreSQL and Redis.

This is the smallest copy of a multi-host deployment that one machine can
run: two gunicorn masters (two workers each, deploy/gunicorn.conf.py) on two
loopback ports stand for two app hosts, and two worker processes consume the
dramatiq Redis broker. They share a fresh PostgreSQL database copied from the
migrated template and a random ``fkod.redis.key_prefix``. The test checks that
a key's rate limit is shared by both servers, and that a webhook event created
through one server is delivered exactly once, by one of the workers.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis
import sqlalchemy as sa
from joserfc.jwk import ECKey

from fkod.core.testing import TEST_PASSWORD, make_settings, wait_until_healthy
from tests.receivers import Receiver

REPO_ROOT = Path(__file__).resolve().parents[2]
GUNICORN = Path(sys.executable).parent / "gunicorn"
# Upper bounds, generous because CI runs this beside three other test
# processes on two cores; a passing run takes a fraction of them.
START_SECONDS = 120
STOP_SECONDS = 20
DELIVERY_SECONDS = 60
KEY_RATE_LIMIT = 12

LOGGING_SECTIONS = """
[loggers]
keys = root

[handlers]
keys = console

[formatters]
keys = plain

[logger_root]
level = INFO
handlers = console

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = plain

[formatter_plain]
format = %%(asctime)s %%(levelname)s [%%(name)s] %%(message)s
"""


@pytest.fixture
def production_ini(tmp_path, make_postgres_database, migrated_postgres_template, redis_url):
    """A production-like .ini on a fresh database and Redis key prefix, deleted afterwards."""
    db_url = make_postgres_database(template=migrated_postgres_template)
    key_prefix = f"fkod-test:{os.urandom(6).hex()}:"
    signing_key = tmp_path / "jwt-signing-key.pem"
    signing_key.write_bytes(ECKey.generate_key("P-256").as_pem(private=True))
    settings = make_settings(tmp_path, db_url=db_url, extra={
        "fkod.environment": "production",
        "fkod.redis.url": redis_url,
        "fkod.redis.key_prefix": key_prefix,
        "fkod.tasks.broker": "redis",
        "fkod.ratelimit.backend": "redis",
        "fkod.metering.backend": "redis",
        "fkod.mail.backend": "log",
        "fkod.secrets.jwt_private_key_file": str(signing_key),
        "fkod.webhooks.sweep_interval_seconds": "1",
    })
    lines = ["[app:main]", "use = egg:fkod-partner-platform"]
    # PasteDeploy interpolates %(name)s in values, so a literal % is doubled.
    lines += [f"{name} = {value.replace('%', '%%')}" for name, value in settings.items()]
    path = tmp_path / "production-test.ini"
    path.write_text("\n".join(lines) + "\n" + LOGGING_SECTIONS)
    try:
        yield path, db_url
    finally:
        client = redis.Redis.from_url(redis_url)
        try:
            keys = list(client.scan_iter(match=key_prefix + "*", count=500))
            if keys:
                client.delete(*keys)
        finally:
            client.close()


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Processes:
    """Child processes, each with its output in a log file, stopped with SIGTERM."""

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.started: list[tuple[str, subprocess.Popen, Path]] = []

    def start(self, name: str, command: list[str], env: dict) -> subprocess.Popen:
        log_path = self.tmp_path / f"{name}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log,
                                       stderr=subprocess.STDOUT)
        self.started.append((name, process, log_path))
        return process

    def logs(self) -> str:
        parts = []
        for name, _, log_path in self.started:
            tail = log_path.read_text(errors="replace").splitlines()[-15:]
            parts.append(f"--- {name} ---\n" + "\n".join(tail))
        return "\n".join(parts)

    def stop_all(self) -> dict[str, int]:
        """Send SIGTERM to every process, wait for each, and return the exit statuses."""
        for _, process, _ in self.started:
            if process.poll() is None:
                process.terminate()
        statuses = {}
        for name, process, _ in self.started:
            try:
                statuses[name] = process.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                statuses[name] = process.wait(timeout=STOP_SECONDS)
        return statuses


@pytest.fixture
def processes(tmp_path):
    started = Processes(tmp_path)
    try:
        yield started
    finally:
        started.stop_all()


def expect(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, (
        f"{response.request.method} {response.request.url.path}: expected {status}, got "
        f"{response.status_code}: {response.text[:300]}")
    return response.json()


def test_two_servers_two_workers(production_ini, processes, tmp_path):
    ini, db_url = production_ini
    env = {**os.environ, "FKOD_INI": str(ini), "FKOD_GUNICORN_WORKERS": "2",
           "FKOD_GUNICORN_THREADS": "2"}
    for variable in [name for name in env if name.startswith("FKOD_") and name not in
                     {"FKOD_INI", "FKOD_GUNICORN_WORKERS", "FKOD_GUNICORN_THREADS"}]:
        del env[variable]  # an override from the caller's shell would change the stack

    urls = []
    for number in (1, 2):
        port = free_port()
        urls.append(f"http://127.0.0.1:{port}")
        processes.start(f"gunicorn-{number}", [
            str(GUNICORN), "-c", str(REPO_ROOT / "deploy" / "gunicorn.conf.py")],
            {**env, "FKOD_GUNICORN_BIND": f"127.0.0.1:{port}"})
    workers = [processes.start(f"worker-{number}",
                               [sys.executable, "-m", "fkod.cli", "worker", str(ini)], env)
               for number in (1, 2)]
    for url, (_, server, _) in zip(urls, processes.started[:2], strict=True):
        try:
            wait_until_healthy(url, server, timeout=START_SECONDS)
        except RuntimeError as error:
            pytest.fail(f"{error}\n{processes.logs()}")

    first = httpx.Client(base_url=urls[0], timeout=15)
    second = httpx.Client(base_url=urls[1], timeout=15)
    try:
        email = f"multi-{os.urandom(4).hex()}@acme.example"
        expect(first.post("/api/partners/register", json={
            "company_name": "Acme Multi", "email": email, "password": TEST_PASSWORD}), 201)
        token = expect(second.post("/api/auth/login", json={
            "email": email, "password": TEST_PASSWORD}), 200)["access_token"]
        member = {"Authorization": f"Bearer {token}"}
        limited_key = expect(first.post("/api/partners/api-keys", headers=member, json={
            "key_name": "limited", "scopes": ["users:read"], "mode": "test",
            "rate_limit": KEY_RATE_LIMIT, "rate_limit_window": 3600}), 201)["key"]
        writer_key = expect(second.post("/api/partners/api-keys", headers=member, json={
            "key_name": "writer", "scopes": ["users:write"], "mode": "test"}), 201)["key"]

        # Shared rate limit: twice the key's limit, alternating between the servers.
        admitted = {urls[0]: 0, urls[1]: 0}
        rejected = 0
        for index in range(2 * KEY_RATE_LIMIT):
            client = (first, second)[index % 2]
            response = client.get("/api/v1/users",
                                  headers={"Authorization": f"Bearer {limited_key}"})
            assert response.status_code in (200, 429), response.text[:300]
            if response.status_code == 200:
                admitted[str(client.base_url).rstrip("/")] += 1
            else:
                rejected += 1
                assert response.headers["Retry-After"]
        assert sum(admitted.values()) == KEY_RATE_LIMIT
        assert rejected == KEY_RATE_LIMIT
        assert all(count > 0 for count in admitted.values()), admitted

        # A webhook subscribed through one server, its event created through the other.
        with Receiver(200) as receiver:
            webhook = expect(first.post("/api/partners/webhooks", headers=member, json={
                "url": receiver.url, "event_types": ["user.created"], "mode": "test",
                "retry_count": 3, "retry_delay": 0}), 201)
            expect(second.post("/api/v1/users", headers={
                "Authorization": f"Bearer {writer_key}"}, json={
                "email": f"learner-{os.urandom(3).hex()}@example.com",
                "name": "Ada Learner"}), 201)
            try:
                (delivered,) = receiver.wait_for(1, timeout=DELIVERY_SECONDS)
            except AssertionError as error:
                pytest.fail(f"{error}\n{processes.logs()}")
            webhook_id = int(webhook["id"].rsplit("_", 1)[1])
            status = wait_for_delivery_status(db_url, webhook_id, "succeeded")
            # Another worker's sweep (every second) would re-deliver a duplicate here.
            time.sleep(2.5)
            received = receiver.requests
    finally:
        first.close()
        second.close()

    assert status == ("succeeded", 1)
    assert len(received) == 1
    assert delivered.header("webhook-id")
    assert delivered.header("x-fkod-signature")
    assert all(worker.poll() is None for worker in workers), processes.logs()

    statuses = processes.stop_all()
    assert statuses == {"gunicorn-1": 0, "gunicorn-2": 0, "worker-1": 0, "worker-2": 0}, (
        processes.logs())


def wait_for_delivery_status(db_url: str, webhook_id: int, expected_status: str,
                             timeout: float = DELIVERY_SECONDS) -> tuple[str, int]:
    """Poll until the webhook's one delivery has ``expected_status``.

    Returns its status and number of attempts, at the latest after ``timeout`` seconds.
    """
    engine = sa.create_engine(db_url, poolclass=sa.pool.NullPool)
    deadline = time.monotonic() + timeout
    try:
        while True:
            with engine.connect() as connection:
                row = connection.execute(sa.text(
                    "SELECT e.status, (SELECT count(*) FROM webhook_attempts a "
                    "WHERE a.delivery_id = e.id) FROM webhook_events e "
                    "WHERE e.webhook_id = :id"), {"id": webhook_id}).one()
            if row[0] == expected_status or time.monotonic() > deadline:
                return row[0], row[1]
            time.sleep(0.1)
    finally:
        engine.dispose()
