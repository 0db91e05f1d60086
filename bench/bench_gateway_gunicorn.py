"""Measure the API gateway's throughput cost on gunicorn with PostgreSQL and Redis.

Usage: .venv/bin/python bench/bench_gateway_gunicorn.py [--seconds S] [--clients N]

Starts production.ini under gunicorn (2 workers, 127.0.0.1, a free port) on a
fresh PostgreSQL schema and a random Redis key prefix, creates a partner on
the unlimited enterprise plan with a test-mode key, and compares two cases:

- pipeline: ``GET /api/v1/mentors`` with the key, so every request goes through
  key verification, the Redis rate limiter and metering.
- bare (baseline): ``GET /bench/mentors`` from the plugin in
  bench/fkod_bench_plugin, which runs the same query, pagination and response
  schema with no credential. The folder is on PYTHONPATH of gunicorn only.
- unmetered: ``GET /bench/unmetered/mentors`` from the same plugin, through the
  whole gateway but without its metering callback, the baseline of the
  metering on/off ratio.

N client processes (default 4), each with one keep-alive httpx.Client, send
requests one after another for S seconds per run (default 8) after a warm-up.
The cases alternate twice. It prints the requests per second of each run, the
ratio metering on/off against a target of 0.95, and last the ratio
pipeline/bare against a target of 0.80. The load generator shares the machine with the server, so the
figures depend on the core count.
NOTE: on a 2-core machine with other load, single runs varied by up to 40 %
and the ratio between 0.87 and 1.43; idle, two runs gave 0.974 and 0.992. Skipped with a
message when PostgreSQL or Redis is unreachable. The schema and the Redis keys
are deleted at the end.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psycopg
import redis
from cryptography.fernet import Fernet

from fkod.core.testing import wait_until_healthy

REPOSITORY = Path(__file__).resolve().parents[1]
PLUGIN_PATH = Path(__file__).resolve().parent / "fkod_bench_plugin"
BIN = Path(sys.executable).parent
POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"
TARGET_RATIO = 0.80
WARM_UP_SECONDS = 2.0
ROUNDS = 2


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def unreachable_service() -> str | None:
    """Return a message naming PostgreSQL or Redis when either does not respond, else None."""
    try:
        with psycopg.connect(POSTGRES_DSN, connect_timeout=2) as connection:
            connection.execute("SELECT 1")
    except psycopg.Error as error:
        return f"PostgreSQL at {POSTGRES_DSN} is unreachable ({error})"
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
    try:
        client.ping()
    except redis.exceptions.RedisError as error:
        return f"Redis at {REDIS_URL} is unreachable ({error})"
    finally:
        client.close()
    return None


def make_environment(schema: str, key_prefix: str) -> dict[str, str]:
    signing_key = subprocess.run(
        [sys.executable, "-c", "from joserfc.jwk import ECKey; "
         "print(ECKey.generate_key('P-256').as_pem(private=True).decode())"],
        capture_output=True, text=True, check=True).stdout
    env = {
        **os.environ,
        "FKOD_DATABASE_URL": ("postgresql+psycopg://postgres@127.0.0.1:5432/test"
                              f"?options=-csearch_path%3D{schema}"),
        "FKOD_REDIS_URL": REDIS_URL,
        "FKOD_REDIS_KEY_PREFIX": key_prefix,
        "FKOD_API_KEY_PEPPER": secrets.token_urlsafe(32),
        "FKOD_WEBHOOK_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "FKOD_JWT_PRIVATE_KEY": signing_key,
    }
    env.pop("FKOD_DB_URL", None)
    return env



def expect(response: httpx.Response, status: int, action: str) -> dict:
    if response.status_code != status:
        raise RuntimeError(f"{action} failed: expected HTTP {status}, got "
                           f"{response.status_code}: {response.text[:300]}")
    return response.json()


def create_enterprise_key(base_url: str, schema: str) -> str:
    """Register a partner, move it onto the enterprise plan and return a test-mode key."""
    email = f"bench-{secrets.token_hex(4)}@partner.example"
    password = secrets.token_urlsafe(16)
    with httpx.Client(base_url=base_url, timeout=30) as client:
        registered = expect(client.post("/api/partners/register", json={
            "company_name": "Benchmark Partner", "email": email, "password": password,
        }), 201, "register a partner")
        token = expect(client.post("/api/auth/login", json={
            "email": email, "password": password}), 200, "log in")["access_token"]
        key = expect(client.post("/api/partners/api-keys",
                                 headers={"Authorization": f"Bearer {token}"}, json={
            "key_name": "bench", "scopes": ["mentors:read"], "mode": "test",
        }), 201, "create an API key")["key"]

    partner_id = int(registered["partner"]["id"].removeprefix("partner_"))
    with psycopg.connect(POSTGRES_DSN, options=f"-csearch_path={schema}") as connection:
        updated = connection.execute(
            "UPDATE partners SET plan_id = (SELECT id FROM plans WHERE code = 'enterprise') "
            "WHERE id = %s", (partner_id,)).rowcount
    if updated != 1:
        raise RuntimeError(f"moving partner_{partner_id} to the enterprise plan updated "
                           f"{updated} rows, expected 1")
    # The gateway caches a verified key, with its plan, for at most 1 s.
    time.sleep(1.5)
    return key


def send_for(base_url: str, path: str, headers: dict, seconds: float) -> tuple[int, int]:
    """Send requests one after another for ``seconds`` and return the HTTP 200 and other counts."""
    ok = failed = 0
    with httpx.Client(base_url=base_url, headers=headers, timeout=10) as client:
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            if client.get(path).status_code == 200:
                ok += 1
            else:
                failed += 1
    return ok, failed


def measure(pool, clients: int, base_url: str, path: str, headers: dict,
            seconds: float) -> tuple[float, int]:
    """Return the HTTP 200 responses per second of ``clients`` processes, and the non-200 count."""
    started = time.perf_counter()
    counts = pool.starmap(send_for, [(base_url, path, headers, seconds)] * clients)
    elapsed = time.perf_counter() - started
    return sum(ok for ok, _ in counts) / elapsed, sum(failed for _, failed in counts)


def check_same_listing(base_url: str, api_headers: dict) -> int:
    """Return the mentors on the first page after checking that both endpoints list the same."""
    gateway = expect(httpx.get(base_url + "/api/v1/mentors", headers=api_headers, timeout=10),
                     200, "GET /api/v1/mentors")
    bare = expect(httpx.get(base_url + "/bench/mentors", timeout=10), 200,
                  "GET /bench/mentors (is the benchmark plugin loaded?)")
    if gateway["data"] != bare["data"]:
        raise RuntimeError("GET /bench/mentors lists other mentors than GET /api/v1/mentors")
    return len(gateway["data"])


def run_benchmark(base_url: str, api_key: str, seconds: float, clients: int) -> None:
    api_headers = {"Authorization": f"Bearer {api_key}"}
    mentors = check_same_listing(base_url, api_headers)
    print(f"both endpoints return the same first page of {mentors} sandbox mentors")

    cases = {"pipeline": ("/api/v1/mentors", api_headers), "bare": ("/bench/mentors", {}),
             "unmetered": ("/bench/unmetered/mentors", api_headers)}
    rates: dict[str, list[float]] = {name: [] for name in cases}
    with multiprocessing.Pool(clients) as pool:
        for path, headers in cases.values():
            measure(pool, clients, base_url, path, headers, WARM_UP_SECONDS)
        for round_number in range(1, ROUNDS + 1):
            for name, (path, headers) in cases.items():
                rate, failed = measure(pool, clients, base_url, path, headers, seconds)
                rates[name].append(rate)
                print(f"round {round_number} {name:<9} {path:<25} {rate:8.0f} requests/s"
                      + (f" ({failed} non-200 responses)" if failed else ""))

    pipeline = sum(rates["pipeline"]) / ROUNDS
    bare = sum(rates["bare"]) / ROUNDS
    print(f"mean pipeline {pipeline:.0f} requests/s, mean bare (baseline) {bare:.0f} requests/s")
    unmetered = sum(rates["unmetered"]) / ROUNDS
    metering_ratio = pipeline / unmetered
    print(f"mean pipeline without metering {unmetered:.0f} requests/s")
    print(f"throughput ratio metering on/off: {metering_ratio:.3f} (target >= 0.95: "
          f"{'met' if metering_ratio >= 0.95 else 'NOT met'})")
    ratio = pipeline / bare
    verdict = "met" if ratio >= TARGET_RATIO else "NOT met"
    print(f"target pipeline/bare >= {TARGET_RATIO:.2f}: {verdict}")
    print(f"throughput ratio pipeline/bare: {ratio:.3f}")


def stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def delete_keys(key_prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=key_prefix + "*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0,
                        help="duration of each measured run in seconds (default 8)")
    parser.add_argument("--clients", type=int, default=4,
                        help="load generator processes, each with one connection (default 4)")
    options = parser.parse_args()

    problem = unreachable_service()
    if problem is not None:
        print(f"skipped: {problem}")
        return 0

    schema = f"fkod_bench_{secrets.token_hex(4)}"
    key_prefix = f"fkod-bench-gw:{secrets.token_hex(4)}:"
    env = make_environment(schema, key_prefix)
    ini = str(REPOSITORY / "production.ini")
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    server = None
    log = tempfile.NamedTemporaryFile(prefix="fkod-bench-gunicorn-", suffix=".log", delete=False)
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
    try:
        migrated = subprocess.run([str(BIN / "fkod"), "migrate", ini], cwd=REPOSITORY, env=env,
                                  capture_output=True, text=True, timeout=120, check=False)
        if migrated.returncode != 0:
            raise RuntimeError(f"fkod migrate failed: {migrated.stderr[-2000:]}")

        server_env = {**env, "PYTHONPATH": os.pathsep.join(
            filter(None, [str(PLUGIN_PATH), env.get("PYTHONPATH")]))}
        server = subprocess.Popen(
            [str(BIN / "gunicorn"), "--paste", ini, "--bind", f"127.0.0.1:{port}",
             "--workers", "2"], cwd=REPOSITORY, env=server_env, stdout=log,
            stderr=subprocess.STDOUT)
        wait_until_healthy(base_url, server)
        print(f"gunicorn with 2 workers at {base_url}, schema {schema}, "
              f"Redis key prefix {key_prefix}, {options.clients} client processes, "
              f"{options.seconds:g} s per run")
        api_key = create_enterprise_key(base_url, schema)
        run_benchmark(base_url, api_key, options.seconds, options.clients)
    except RuntimeError as error:
        print(f"FAILED: {error} (gunicorn log: {log.name})")
        return 1
    finally:
        if server is not None:
            stop(server)
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        delete_keys(key_prefix)
    os.unlink(log.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
