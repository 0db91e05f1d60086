"""The README's commands, run for real: migrate, load demo data, serve, and ``fkod demo``.

The embedded test serves development.ini's application with waitress; the
production test runs production.ini under gunicorn with a separate
``fkod worker`` process, on PostgreSQL and Redis.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
from pathlib import Path

import httpx
from cryptography.fernet import Fernet

from fkod.core.testing import wait_until_healthy

REPOSITORY = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]



def run(command: list[str], env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=REPOSITORY, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def start(command: list[str], env: dict, log_path: Path) -> subprocess.Popen:
    """Start a long-running process whose output goes to ``log_path``."""
    with log_path.open("wb") as log:
        return subprocess.Popen(command, cwd=REPOSITORY, env=env, stdout=log,
                                stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_demo_on_embedded_default(tmp_path):
    port = free_port()
    ini = tmp_path / "development.ini"
    source = (REPOSITORY / "development.ini").read_text()
    ini.write_text(source.replace("listen = 127.0.0.1:6543", f"listen = 127.0.0.1:{port}")
                   .replace("script_location = %(here)s/alembic",
                            f"script_location = {REPOSITORY / 'alembic'}"))
    env = {**os.environ}
    env.pop("FKOD_DB_URL", None)

    migrated = run([str(BIN / "fkod"), "migrate", str(ini)], env)
    assert migrated.returncode == 0, migrated.stderr
    loaded = run([str(BIN / "fkod"), "demo-data", str(ini)], env)
    assert loaded.returncode == 0, loaded.stderr
    assert "test API key: sk_test_" in loaded.stdout

    server = start([str(BIN / "pserve"), str(ini)], env, tmp_path / "server.log")
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}", server)
        demo = run([str(BIN / "fkod"), "demo", "--url", f"http://127.0.0.1:{port}"], env)
        listed = httpx.get(f"http://127.0.0.1:{port}/api/marketplace/integrations").json()
    finally:
        stop(server)
    assert demo.returncode == 0, demo.stdout + (tmp_path / "server.log").read_text()
    assert "signature verified with the standardwebhooks library" in demo.stdout
    slugs = {item["slug"]: item["partner"]["slug"] for item in listed["data"]}
    assert slugs == {"slack-notifications": "fkod-labs", "csv-export": "fkod-labs"}


def test_demo_on_production_stack(tmp_path, make_postgres_schema, redis_url):
    database_url = make_postgres_schema()
    port = free_port()
    signing_key = subprocess.run(
        [sys.executable, "-c", "from joserfc.jwk import ECKey; "
         "print(ECKey.generate_key('P-256').as_pem(private=True).decode())"],
        capture_output=True, text=True, check=True).stdout
    prefix = f"fkod-demo-test:{secrets.token_hex(4)}:"
    env = {
        **os.environ,
        "FKOD_DATABASE_URL": database_url,
        "FKOD_REDIS_URL": redis_url,
        "FKOD_REDIS_KEY_PREFIX": prefix,
        "FKOD_API_KEY_PEPPER": secrets.token_urlsafe(32),
        "FKOD_WEBHOOK_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "FKOD_JWT_PRIVATE_KEY": signing_key,
        "FKOD_WEBHOOKS_ALLOW_LOOPBACK": "true",
    }
    env.pop("FKOD_DB_URL", None)
    ini = str(REPOSITORY / "production.ini")

    migrated = run([str(BIN / "fkod"), "migrate", ini], env)
    assert migrated.returncode == 0, migrated.stderr
    server = start([str(BIN / "gunicorn"), "--paste", ini, "--bind", f"127.0.0.1:{port}",
                    "--workers", "2"], env, tmp_path / "server.log")
    worker = start([str(BIN / "fkod"), "worker", ini], env, tmp_path / "worker.log")
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}", server)
        demo = run([str(BIN / "fkod"), "demo", "--url", f"http://127.0.0.1:{port}"], env)
    finally:
        stop(server)
        stop(worker)
        _delete_keys(redis_url, prefix)
    logs = (tmp_path / "server.log").read_text() + (tmp_path / "worker.log").read_text()
    assert demo.returncode == 0, demo.stdout + logs
    assert "signature verified with the standardwebhooks library" in demo.stdout
    assert worker.returncode == 0, logs


def _delete_keys(redis_url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
