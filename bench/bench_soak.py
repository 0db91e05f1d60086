"""Soak test: mixed traffic against gunicorn, PostgreSQL, Redis and one fkod worker.

Usage: .venv/bin/python bench/bench_soak.py [--seconds S] [--clients N] [--warm-up S]

Starts production.ini under gunicorn with deploy/gunicorn.conf.py (2 workers,
2 threads each, max_requests off so that worker restarts do not hide memory
growth) and one ``fkod worker``, on a fresh PostgreSQL schema and a random
Redis key prefix. It registers a partner on the unlimited enterprise plan,
creates a test-mode key and subscribes a receiver on 127.0.0.1 to
user.created. N client processes (default 4) then send, for S seconds
(default 600), a fixed mix of requests one after another:

- 60 % gateway calls, ``GET /api/v1/mentors`` with the key;
- 20 % partner API calls, ``GET /api/partners/api-keys`` with the login token;
- 10 % ``POST /api/v1/users``, each publishing a user.created webhook event;
- 10 % ``GET /health``, the baseline that the latency ratio compares against.

It prints figures for the time after the warm-up (default a fifth of S, at
least 10 s): throughput, p50 and p99 latency per kind, and the error rate (any
unexpected status or transport error). It also prints the RSS of each server
process at the end of the warm-up and at the end with its growth, the webhook
lag (from sending the POST that creates the user to the event's arrival at the
receiver) and the load average. The targets are zero errors, every event
delivered within 60 s of the end, and at most 10 % RSS growth per process
after the warm-up. It exits with status 1 when one is missed. The schema and Redis
keys are deleted at the end. Skipped with a message when PostgreSQL or Redis
is unreachable.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import re
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import psycopg
import redis
from cryptography.fernet import Fernet

from fkod.core.testing import wait_until_healthy

REPOSITORY = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"
MAX_RSS_GROWTH = 0.10
DRAIN_SECONDS = 60
# (kind, method, path, expected status, weight)
MIX = [
    ("gateway", "GET", "/api/v1/mentors", 200, 60),
    ("partner_api", "GET", "/api/partners/api-keys", 200, 20),
    ("webhook_event", "POST", "/api/v1/users", 201, 10),
    ("health", "GET", "/health", 200, 10),
]
USER_ID = re.compile(rb'"(user_[0-9]+)"')


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


def make_environment(schema: str, key_prefix: str, port: int) -> dict[str, str]:
    signing_key = subprocess.run(
        [sys.executable, "-c", "from joserfc.jwk import ECKey; "
         "print(ECKey.generate_key('P-256').as_pem(private=True).decode())"],
        capture_output=True, text=True, check=True).stdout
    env = {name: value for name, value in os.environ.items() if not name.startswith("FKOD_")}
    env.update({
        "FKOD_INI": str(REPOSITORY / "production.ini"),
        "FKOD_GUNICORN_BIND": f"127.0.0.1:{port}",
        "FKOD_GUNICORN_WORKERS": "2",
        "FKOD_GUNICORN_THREADS": "2",
        "FKOD_GUNICORN_MAX_REQUESTS": "0",
        "FKOD_GUNICORN_MAX_REQUESTS_JITTER": "0",
        "FKOD_DATABASE_URL": ("postgresql+psycopg://postgres@127.0.0.1:5432/test"
                              f"?options=-csearch_path%3D{schema}"),
        "FKOD_REDIS_URL": REDIS_URL,
        "FKOD_REDIS_KEY_PREFIX": key_prefix,
        "FKOD_API_KEY_PEPPER": secrets.token_urlsafe(32),
        "FKOD_WEBHOOK_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "FKOD_JWT_PRIVATE_KEY": signing_key,
        "FKOD_WEBHOOKS_ALLOW_LOOPBACK": "true",
        # No SMTP server is assumed on this machine; sign-up mail goes to the log.
        "FKOD_MAIL_BACKEND": "log",
    })
    return env


class EventReceiver:
    """A loopback webhook receiver that stores the arrival time of each user id it receives."""

    def __init__(self):
        self.arrivals: dict[str, float] = {}
        self.requests = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                arrived = time.time()
                with receiver.lock:
                    receiver.requests += 1
                    for user_id in USER_ID.findall(body):
                        receiver.arrivals.setdefault(user_id.decode(), arrived)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def expect(response: httpx.Response, status: int, action: str) -> dict:
    if response.status_code != status:
        raise RuntimeError(f"{action} failed: expected HTTP {status}, got "
                           f"{response.status_code}: {response.text[:300]}")
    return response.json()


def set_up_partner(base_url: str, schema: str, receiver_url: str) -> tuple[str, str]:
    """Register an enterprise partner with a key and a user.created webhook.

    Returns the API key and the login access token.
    """
    email = f"soak-{secrets.token_hex(4)}@partner.example"
    password = secrets.token_urlsafe(16)
    with httpx.Client(base_url=base_url, timeout=30) as client:
        registered = expect(client.post("/api/partners/register", json={
            "company_name": "Soak Partner", "email": email, "password": password,
        }), 201, "register a partner")
        token = expect(client.post("/api/auth/login", json={
            "email": email, "password": password}), 200, "log in")["access_token"]
        member = {"Authorization": f"Bearer {token}"}
        key = expect(client.post("/api/partners/api-keys", headers=member, json={
            "key_name": "soak", "scopes": ["mentors:read", "users:read", "users:write"],
            "mode": "test"}), 201, "create an API key")["key"]
        expect(client.post("/api/partners/webhooks", headers=member, json={
            "url": receiver_url, "event_types": ["user.created"], "mode": "test",
        }), 201, "subscribe a webhook")

    partner_id = int(registered["partner"]["id"].removeprefix("partner_"))
    with psycopg.connect(POSTGRES_DSN, options=f"-csearch_path={schema}") as connection:
        connection.execute(
            "UPDATE partners SET plan_id = (SELECT id FROM plans WHERE code = 'enterprise') "
            "WHERE id = %s", (partner_id,))
    # The gateway caches a verified key, with its plan, for at most 1 s.
    time.sleep(1.5)
    return key, token


def send_mix(base_url: str, key: str, token: str, seconds: float, seed: int) -> dict:
    """Send the mix for ``seconds``; return per-request samples and created user ids."""
    rng = random.Random(seed)
    kinds = [entry for entry in MIX for _ in range(entry[4])]
    headers = {"gateway": {"Authorization": f"Bearer {key}"},
               "webhook_event": {"Authorization": f"Bearer {key}"},
               "partner_api": {"Authorization": f"Bearer {token}"}, "health": {}}
    samples: list[tuple[float, str, float, bool]] = []
    created: list[tuple[str, float]] = []
    errors: list[str] = []
    with httpx.Client(base_url=base_url, timeout=30) as client:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            kind, method, path, status, _ = rng.choice(kinds)
            body = None
            if kind == "webhook_event":
                body = {"email": f"soak-{secrets.token_hex(6)}@example.com", "name": "Soak"}
            sent_at = time.time()
            started = time.perf_counter()
            try:
                response = client.request(method, path, headers=headers[kind], json=body)
                ok = response.status_code == status
            except httpx.HTTPError as error:
                response, ok = None, False
                errors.append(f"{kind}: {error!r}")
            elapsed = time.perf_counter() - started
            samples.append((time.time(), kind, elapsed, ok))
            if response is not None and not ok and len(errors) < 20:
                errors.append(f"{kind}: HTTP {response.status_code} {response.text[:200]}")
            if ok and kind == "webhook_event":
                created.append((response.json()["id"], sent_at))
    return {"samples": samples, "created": created, "errors": errors}


def child_pids(pid: int) -> list[int]:
    try:
        return [int(child) for child in
                Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except FileNotFoundError:
        return None
    return None


def server_rss(master: int, worker: int) -> dict[str, int]:
    """Return the RSS in KiB of the gunicorn master, each gunicorn worker and the fkod worker."""
    processes = {"gunicorn master": master, "fkod worker": worker}
    for pid in child_pids(master):
        processes[f"gunicorn worker {pid}"] = pid
    return {name: rss for name, pid in processes.items() if (rss := rss_kib(pid)) is not None}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def report(results: list[dict], warm_up_end: float, run_end: float, receiver: EventReceiver,
           rss_before: dict[str, int], rss_after: dict[str, int]) -> bool:
    measured = [sample for result in results for sample in result["samples"]
                if sample[0] >= warm_up_end]
    duration = run_end - warm_up_end
    errors = sum(1 for sample in measured if not sample[3])
    print(f"measured {len(measured)} requests in {duration:.0f} s after the warm-up: "
          f"{len(measured) / duration:.1f} requests/s")
    latencies: dict[str, list[float]] = {}
    for _, kind, elapsed, ok in measured:
        if ok:
            latencies.setdefault(kind, []).append(elapsed * 1000)
    health_p50 = statistics.median(latencies["health"]) if latencies.get("health") else None
    for kind, *_ in MIX:
        values = latencies.get(kind, [])
        if not values:
            print(f"  {kind:<14} no successful requests")
            continue
        p50 = statistics.median(values)
        ratio = f", p50 {p50 / health_p50:.1f}x /health" if health_p50 else ""
        print(f"  {kind:<14} {len(values) / duration:7.1f}/s  p50 {p50:7.1f} ms  "
              f"p99 {percentile(values, 0.99):7.1f} ms{ratio}")
    error_rate = errors / len(measured) if measured else 1.0
    print(f"errors: {errors} ({error_rate:.4%})")
    for result in results:
        for message in result["errors"][:5]:
            print(f"  {message}")

    created = [item for result in results for item in result["created"]]
    with receiver.lock:
        arrivals = dict(receiver.arrivals)
    lags = [(arrivals[user_id] - sent) * 1000 for user_id, sent in created if user_id in arrivals]
    missing = len(created) - len(lags)
    if lags:
        print(f"webhook lag: {len(lags)} events, p50 {statistics.median(lags):.0f} ms, "
              f"p99 {percentile(lags, 0.99):.0f} ms, max {max(lags):.0f} ms; "
              f"not delivered within {DRAIN_SECONDS} s after the run: {missing}")
    else:
        print(f"webhook lag: no event delivered of {len(created)}")

    growth_ok = True
    print("RSS after the warm-up -> at the end (KiB):")
    for name, before in rss_before.items():
        after = rss_after.get(name)
        if after is None:
            print(f"  {name:<24} {before:>8} -> exited")
            growth_ok = False
            continue
        growth = (after - before) / before
        growth_ok &= growth <= MAX_RSS_GROWTH
        print(f"  {name:<24} {before:>8} -> {after:>8} ({growth:+.1%})")
    load = os.getloadavg()
    print(f"load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    met = errors == 0 and missing == 0 and growth_ok
    print(f"target zero errors, every event delivered and RSS growth <= "
          f"{MAX_RSS_GROWTH:.0%}: {'met' if met else 'NOT met'}")
    return met


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def delete_keys(key_prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=key_prefix + "*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def wait_for_deliveries(receiver: EventReceiver, results: list[dict]) -> None:
    expected_ids = {user_id for result in results for user_id, _ in result["created"]}
    deadline = time.monotonic() + DRAIN_SECONDS
    while time.monotonic() < deadline:
        with receiver.lock:
            if expected_ids <= receiver.arrivals.keys():
                return
        time.sleep(0.2)


def run(options, base_url: str, schema: str, master: subprocess.Popen,
        worker: subprocess.Popen) -> bool:
    receiver = EventReceiver()
    try:
        key, token = set_up_partner(base_url, schema, receiver.url)
        warm_up = options.warm_up
        if warm_up is None:
            warm_up = max(10.0, options.seconds / 5)
        print(f"gunicorn (2 workers x 2 threads) at {base_url}, one fkod worker, "
              f"{options.clients} client processes, {options.seconds:g} s with "
              f"{warm_up:g} s of warm-up")
        with multiprocessing.Pool(options.clients) as pool:
            pending = pool.starmap_async(send_mix, [
                (base_url, key, token, options.seconds, seed) for seed in range(options.clients)])
            warm_up_end = time.time() + warm_up
            time.sleep(warm_up)
            rss_before = server_rss(master.pid, worker.pid)
            results = pending.get(timeout=options.seconds + 120)
        run_end = time.time()
        rss_after = server_rss(master.pid, worker.pid)
        wait_for_deliveries(receiver, results)
        return report(results, warm_up_end, run_end, receiver, rss_before, rss_after)
    finally:
        receiver.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0,
                        help="duration of the traffic in seconds, warm-up included (default 600)")
    parser.add_argument("--clients", type=int, default=4,
                        help="load generator processes, each with one connection (default 4)")
    parser.add_argument("--warm-up", type=float, default=None,
                        help="seconds excluded from the figures (default a fifth of --seconds, "
                             "at least 10)")
    options = parser.parse_args()

    problem = unreachable_service()
    if problem is not None:
        print(f"skipped: {problem}")
        return 0

    schema = f"fkod_soak_{secrets.token_hex(4)}"
    key_prefix = f"fkod-bench-soak:{secrets.token_hex(4)}:"
    port = free_port()
    env = make_environment(schema, key_prefix, port)
    ini = env["FKOD_INI"]
    base_url = f"http://127.0.0.1:{port}"
    logs = tempfile.mkdtemp(prefix="fkod-bench-soak-")
    processes: list[subprocess.Popen] = []
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
    try:
        # Every command below is a fixed argument list of this virtualenv's programs.
        migrated = subprocess.run([str(BIN / "fkod"), "migrate", ini], cwd=REPOSITORY, env=env,  # noqa: S603
                                  capture_output=True, text=True, timeout=120, check=False)
        if migrated.returncode != 0:
            raise RuntimeError(f"fkod migrate failed: {migrated.stderr[-2000:]}")
        with open(os.path.join(logs, "gunicorn.log"), "wb") as log:
            master = subprocess.Popen(  # noqa: S603
                [str(BIN / "gunicorn"), "-c", str(REPOSITORY / "deploy" / "gunicorn.conf.py")],
                cwd=REPOSITORY, env=env, stdout=log, stderr=subprocess.STDOUT)
        processes.append(master)
        with open(os.path.join(logs, "worker.log"), "wb") as log:
            worker = subprocess.Popen([str(BIN / "fkod"), "worker", ini],  # noqa: S603
                                      cwd=REPOSITORY,
                                      env=env, stdout=log, stderr=subprocess.STDOUT)
        processes.append(worker)
        wait_until_healthy(base_url, master)
        met = run(options, base_url, schema, master, worker)
    except RuntimeError as error:
        print(f"FAILED: {error} (logs in {logs})")
        return 1
    finally:
        for process in processes:
            stop(process)
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        delete_keys(key_prefix)
    print(f"process logs: {logs}")
    print(json.dumps({"target_met": met}))
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
