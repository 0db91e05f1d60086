"""Measure signed webhook deliveries per second of one ``fkod worker`` on PostgreSQL and Redis.

Usage: .venv/bin/python bench/bench_webhook_throughput.py [--events N]
       [--max-concurrency-per-endpoint C] [--baseline-seconds S]
       [--profile cprofile|py-spy] [--profile-output FILE]

The run uses production.ini with its settings from the environment: a fresh
PostgreSQL schema (``FKOD_DATABASE_URL`` with a search_path), a random
``FKOD_REDIS_KEY_PREFIX`` for the dramatiq queues and every other Redis key,
and new secrets. It starts a receiver on 127.0.0.1 in its own process, an
asyncio HTTP/1.1 server that records each request's ``webhook-id``, arrival
time and body and responds with 200 and keep-alive. It also starts ONE
``fkod worker`` subprocess, which runs 8 delivery threads (the fixed thread
count of the Redis broker in ``fkod.core.tasks``).

1. A warm-up of 20 deliveries, so connection pools and imports are ready.
2. N events (default 3,000), each with one delivery to one endpoint, are
   written with ``publish_event`` in transactions of 500 events, then their
   delivery ids are sent to the broker (``deliver_webhook``). The rate is N-1
   over the time from the first arrival to the last. Every delivery must be
   ``succeeded`` afterwards and carry a Standard Webhooks signature that the
   ``standardwebhooks`` library verifies with the endpoint's secret.
3. Baseline, after the worker has stopped: one Python process POSTs the body
   of a received delivery to the same receiver in a plain loop with httpx,
   once opening a new connection per request and once over one keep-alive
   connection, for S seconds each (default 2). The loops alternate twice and
   the faster round of each counts.

During step 2 it samples ``pg_stat_activity`` for the worker's sessions (marked
with ``PGAPPNAME``) and prints how many were, on average, waiting for a lock,
running a query, idle in a transaction or idle. It also prints the CPU time
per delivery of the worker process and of its PostgreSQL server processes,
read from /proc (Linux only). It prints both loops' rates, and last one line
with deliveries/s, both baselines and the ratios (targets: at least 500
deliveries/s, and 0.5 of the keep-alive loop).

Settings in the workers' environment, beyond production.ini and the secrets:

- ``FKOD_WEBHOOKS_ALLOW_LOOPBACK=true``, for the receiver.
- ``FKOD_WEBHOOKS_MAX_CONCURRENCY_PER_ENDPOINT=8``, the worker's thread count,
  so the per-endpoint limit does not hold one endpoint below the thread count.
  ``--max-concurrency-per-endpoint 4`` measures the default.
- ``FKOD_WEBHOOKS_SWEEP_INTERVAL_SECONDS=600``. The sweeper re-enqueues pending
  deliveries that have been due for one interval, so with 600 s it adds no
  messages while the outbox is filled and drained.

``--profile cprofile`` profiles every thread of the worker with cProfile: the
script puts a ``sitecustomize`` module on the worker's PYTHONPATH that acts
only when ``FKOD_BENCH_CPROFILE_OUTPUT`` is set. cProfile times are wall-clock
time per thread, so waits for locks and sockets count as time in the waiting
call. ``--profile py-spy`` samples the worker with ``py-spy record --gil``,
which counts only samples of the thread holding the GIL (py-spy is not a
project dependency and must be on PATH). Either prints the functions with the
most own time. A profiler slows the worker, so a profiled rate is not
comparable with an unprofiled one.

This module also contains the harness that bench_webhook_latency.py and
bench_webhook_no_loss.py import: the private schema and key prefix, the
receiver process, the worker subprocesses and the publishing helpers.
Skipped with a message when PostgreSQL or Redis is unreachable. The schema and
the Redis keys are removed at the end. The worker logs (and the profile) are
kept when the run fails or is profiled.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import json
import multiprocessing
import os
import pstats
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import httpx
import psycopg
import redis
from cryptography.fernet import Fernet
from standardwebhooks.webhooks import Webhook as StandardWebhook

REPOSITORY = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
INI = REPOSITORY / "production.ini"
POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"
EVENT_TYPE = "user.created"
DELIVERY_PATH = "/hook"
BASELINE_PATH = "/baseline"
WORKER_THREADS = 8
WORKER_STOP_SECONDS = 20
TARGET_RATE = 500.0
TARGET_RATIO = 0.5


class BrokenRun(RuntimeError):
    """The benchmark could not run as designed (a process died, a wait timed out)."""


# The receiver process ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Arrival:
    """One webhook request as the receiver got it; ``arrived_at`` is Unix time in seconds."""

    arrived_at: float
    webhook_id: str
    webhook_timestamp: str
    webhook_signature: str
    body: bytes


async def _serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                            arrivals: list, counters: collections.Counter) -> None:
    """Respond with 200 to each HTTP/1.1 request of a connection until the client closes it."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            path = request_line.split(" ", 2)[1]
            headers = {}
            for line in header_lines:
                name, _, value = line.partition(":")
                if value:
                    headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            body = await reader.readexactly(length) if length else b""
            arrived_at = time.time()

            if path == DELIVERY_PATH:
                arrivals.append(Arrival(arrived_at, headers.get("webhook-id", ""),
                                        headers.get("webhook-timestamp", ""),
                                        headers.get("webhook-signature", ""), body))
            else:
                counters[path] += 1
            close = headers.get("connection", "").lower() == "close"
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n"
                         + (b"Connection: close\r\n" if close else b"") + b"\r\nok")
            if close:
                await writer.drain()
                return
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        return
    finally:
        writer.close()


def serve_receiver(control) -> None:
    """Run the receiver in this (child) process, controlled through the pipe ``control``.

    Sends its port first, then handles the commands "count", "arrivals",
    "counters" and "stop".
    """
    arrivals: list[Arrival] = []
    counters: collections.Counter = collections.Counter()

    async def run() -> None:
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        server = await asyncio.start_server(
            lambda reader, writer: _serve_connection(reader, writer, arrivals, counters),
            "127.0.0.1", 0, backlog=1024)
        control.send(server.sockets[0].getsockname()[1])

        def answer_commands() -> None:
            while True:
                command = control.recv()
                if command == "count":
                    control.send(len(arrivals))
                elif command == "arrivals":
                    control.send(list(arrivals))
                elif command == "counters":
                    control.send(dict(counters))
                elif command == "stop":
                    control.send("stopped")
                    loop.call_soon_threadsafe(stopped.set)
                    return

        threading.Thread(target=answer_commands, name="receiver-control", daemon=True).start()
        async with server:
            await stopped.wait()

    asyncio.run(run())


class Receiver:
    """The receiver's child process, seen from the benchmark."""

    def __init__(self):
        context = multiprocessing.get_context("spawn")
        self._control, child_end = context.Pipe()
        self.process = context.Process(target=serve_receiver, args=(child_end,),
                                       name="webhook-receiver", daemon=True)
        self.process.start()
        if not self._control.poll(30):
            raise BrokenRun("the receiver process did not start within 30 s")
        self.port = self._control.recv()
        self.url = f"http://127.0.0.1:{self.port}{DELIVERY_PATH}"

    def _ask(self, command: str):
        if not self.process.is_alive():
            raise BrokenRun(f"the receiver process exited with code {self.process.exitcode}")
        self._control.send(command)
        return self._control.recv()

    def count(self) -> int:
        return self._ask("count")

    def arrivals(self) -> list[Arrival]:
        return self._ask("arrivals")

    def counters(self) -> dict[str, int]:
        return self._ask("counters")

    def close(self) -> None:
        if self.process.is_alive():
            try:
                self._ask("stop")
            except (BrokenRun, EOFError, OSError):
                pass  # the process is gone or going; the join and kill below finish it
            self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


# Worker subprocesses ---------------------------------------------------------------


class Worker:
    """One ``fkod worker production.ini`` subprocess, with its output in a log file."""

    def __init__(self, env: dict[str, str], log_path: Path):
        self.log_path = log_path
        # Set when the benchmark stops or kills the process on purpose.
        self.stopped = False
        with log_path.open("wb") as log:
            # Not untrusted input (S603): this environment's fkod with fixed arguments.
            self.process = subprocess.Popen(  # noqa: S603
                [str(BIN / "fkod"), "worker", str(INI)], cwd=REPOSITORY, env=env, stdout=log,
                stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def ready(self) -> bool:
        """Return True once the worker has logged that its delivery threads started."""
        return b"task worker started" in self.log_path.read_bytes()

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def kill(self) -> None:
        """Stop the process at once (SIGKILL), as a crash or an OOM kill would."""
        self.stopped = True
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=WORKER_STOP_SECONDS)

    def stop(self) -> None:
        """Ask the process to stop (SIGTERM), and kill it if it has not stopped in time."""
        self.stopped = True
        if not self.alive():
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=WORKER_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# Where the workers' database sessions spend their time ------------------------------


def process_cpu_seconds(pid: int) -> float | None:
    """Return the user and system CPU time of a process from /proc, or None where it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    # utime and stime are fields 14 and 15 of proc(5), in clock ticks.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class SessionSampler(threading.Thread):
    """Samples ``pg_stat_activity`` for the sessions of one application name, 50 times a second.

    Each sample puts every session in one state: waiting for a lock (by the
    first words of its query), running a query, idle in a transaction (the
    worker's Python side holds the transaction open) or idle.
    """

    def __init__(self, application_name: str):
        super().__init__(name="session-sampler", daemon=True)
        self.application_name = application_name
        self.states: collections.Counter = collections.Counter()
        self.samples = 0
        # CPU seconds of each server process when it was first seen.
        self.backend_cpu_at_start: dict[int, float] = {}
        self._stopping = threading.Event()

    def run(self) -> None:
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as connection:
            while not self._stopping.wait(0.02):
                rows = connection.execute(
                    "SELECT pid, state, wait_event_type, left(query, 70) FROM pg_stat_activity "
                    "WHERE application_name = %s", (self.application_name,)).fetchall()
                self.samples += 1
                for pid, state, wait_event_type, query in rows:
                    self.states[self._classify(state, wait_event_type, query)] += 1
                    if pid not in self.backend_cpu_at_start:
                        self.backend_cpu_at_start[pid] = process_cpu_seconds(pid) or 0.0

    @staticmethod
    def _classify(state: str | None, wait_event_type: str | None, query: str) -> str:
        if state == "active" and wait_event_type == "Lock":
            return f"waiting for a lock in: {' '.join(query.split())}"
        if state == "active":
            return "running a query"
        return state or "unknown"

    def stop(self) -> tuple[str, float]:
        """Stop sampling; return the mean sessions per state (one per line) and the CPU seconds.

        The CPU seconds are those the sessions' server processes used since
        each was first seen.
        """
        self._stopping.set()
        self.join(5)
        lines = [f"  {count / max(self.samples, 1):5.2f}  {state}"
                 for state, count in self.states.most_common()]
        cpu = sum((process_cpu_seconds(pid) or start) - start
                  for pid, start in self.backend_cpu_at_start.items())
        return "\n".join(lines), cpu


# The stack: schema, key prefix, web side, receiver, workers --------------------------


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


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} ({os.cpu_count()} cores)"


def make_environment(schema: str, key_prefix: str, settings: dict[str, str]) -> dict[str, str]:
    """Return the environment of production.ini for this run; ``settings`` adds FKOD_ variables.

    FKOD_ variables inherited from the shell are dropped, so only this run's
    settings reach the workers.
    """
    from joserfc.jwk import ECKey

    env = {name: value for name, value in os.environ.items() if not name.startswith("FKOD_")}
    env.update({
        "FKOD_DATABASE_URL": ("postgresql+psycopg://postgres@127.0.0.1:5432/test"
                              f"?options=-csearch_path%3D{schema}"),
        "FKOD_REDIS_URL": REDIS_URL,
        "FKOD_REDIS_KEY_PREFIX": key_prefix,
        "FKOD_API_KEY_PEPPER": secrets.token_urlsafe(32),
        "FKOD_WEBHOOK_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "FKOD_JWT_PRIVATE_KEY": ECKey.generate_key("P-256").as_pem(private=True).decode(),
        "FKOD_WEBHOOKS_ALLOW_LOOPBACK": "true",
        **settings,
    })
    return env


def delete_redis_keys(key_prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=key_prefix + "*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@dataclasses.dataclass(frozen=True)
class Published:
    """An event in the outbox: its public id (the webhook-id), delivery row id and commit time."""

    event_id: str
    delivery_id: int
    committed_at: float


def event_data(sequence: int) -> dict:
    """Return the ``data`` of benchmark event number ``sequence``, shaped like a user.created."""
    return {
        "object": {"id": f"user_{sequence}", "email": f"learner{sequence}@example.com",
                   "name": "Benchmark Learner", "archetype": "learner", "livemode": False},
        "benchmark": {"sequence": sequence, "published_at": time.time()},
    }


class WebhookStack:
    """PostgreSQL schema, Redis key prefix, receiver, the platform's web side and its workers.

    The benchmark process plays the web process: it builds the application
    from production.ini (its tasks only enqueue, on the Redis broker) and
    writes events with ``publish_event``. ``fkod worker`` subprocesses do
    the deliveries. Use it as a context manager: leaving it stops every
    process and removes the schema and the Redis keys.
    """

    def __init__(self, label: str, settings: dict[str, str], *, retry_count: int = 5,
                 retry_delay_seconds: int = 60):
        self.schema = f"fkod_bench_{secrets.token_hex(4)}"
        self.key_prefix = f"fkod-bench-{label}:{secrets.token_hex(4)}:"
        self.env = make_environment(self.schema, self.key_prefix, settings)
        self.retry_count = retry_count
        self.retry_delay_seconds = retry_delay_seconds
        self.log_dir = Path(tempfile.mkdtemp(prefix=f"fkod-bench-{label}-"))
        # libpq's PGAPPNAME marks the workers' sessions in pg_stat_activity.
        self.worker_application_name = f"fkod-bench-worker-{secrets.token_hex(4)}"
        self.workers: list[Worker] = []
        self.receiver: Receiver | None = None
        self.app = None
        self.keep_logs = True

    def __enter__(self) -> WebhookStack:
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as connection:
            connection.execute(f'CREATE SCHEMA "{self.schema}"')
        try:
            self._start()
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        return self

    def _start(self) -> None:
        # Not untrusted input (S603): this environment's fkod with fixed arguments.
        migrated = subprocess.run(  # noqa: S603
            [str(BIN / "fkod"), "migrate", str(INI)], cwd=REPOSITORY, env=self.env,
            capture_output=True, text=True, timeout=120, check=False)
        if migrated.returncode != 0:
            raise BrokenRun(f"fkod migrate failed: {migrated.stderr[-2000:]}")
        self.receiver = Receiver()

        from pyramid.paster import get_app

        # The application reads the same FKOD_ variables as the workers.
        for name in [name for name in os.environ if name.startswith("FKOD_")]:
            del os.environ[name]
        os.environ.update(self.env)
        self.app = get_app(str(INI), "main")
        registry = self.app.registry
        self.session_factory = registry["db.session_factory"]
        self.engine = registry["db.engine"]
        self.tasks = registry["tasks"]
        self.partner_id, self.secret = self._create_endpoint(registry["webhook_vault"])

    def __exit__(self, *exc_info) -> None:
        # Each step runs even when an earlier one fails, so the schema and the
        # Redis keys are always removed.
        try:
            for worker in self.workers:
                worker.stop()
            if self.receiver is not None:
                self.receiver.close()
        finally:
            try:
                if self.app is not None:
                    from fkod import shutdown

                    shutdown(self.app.registry)
            finally:
                with psycopg.connect(POSTGRES_DSN, autocommit=True) as connection:
                    connection.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
                delete_redis_keys(self.key_prefix)
        if exc_info[0] is None and not self.keep_logs:
            shutil.rmtree(self.log_dir, ignore_errors=True)
        else:
            print(f"worker logs kept in {self.log_dir}")

    def _create_endpoint(self, vault) -> tuple[int, str]:
        """Create a partner with one active test-mode endpoint; return its id and secret."""
        from fkod.core.auth.models import Partner
        from fkod.core.db import run_in_transaction
        from fkod.core.webhooks.models import Webhook
        from fkod.core.webhooks.signing import generate_secret

        secret = generate_secret()

        def create(session) -> int:
            partner = Partner(company_name="Webhook Benchmark", status="active")
            session.add(partner)
            session.flush()
            session.add(Webhook(
                partner_id=partner.id, event_type=EVENT_TYPE, event_types=[EVENT_TYPE],
                url=self.receiver.url, secret_key=vault.encrypt(secret), headers={},
                retry_count=self.retry_count, retry_delay=self.retry_delay_seconds,
                livemode=False, status="active",
            ))
            return partner.id

        return run_in_transaction(self.session_factory, create), secret

    # Workers -------------------------------------------------------------------------

    def start_worker(self, extra_env: dict[str, str] | None = None) -> Worker:
        worker = Worker({**self.env, "PGAPPNAME": self.worker_application_name,
                         **(extra_env or {})},
                        self.log_dir / f"worker-{len(self.workers) + 1}.log")
        self.workers.append(worker)
        return worker

    def wait_until_ready(self, worker: Worker, timeout: float = 120) -> float:
        """Wait until ``worker`` has started its delivery threads; return the seconds it took."""
        started = time.monotonic()
        while not worker.ready():
            self.check_workers()
            if time.monotonic() - started > timeout:
                raise BrokenRun(f"fkod worker {worker.pid} did not start its delivery threads "
                                f"within {timeout:g} s; last lines of {worker.log_path}:\n"
                                f"{worker.log_tail()}")
            time.sleep(0.05)
        return time.monotonic() - started

    def check_workers(self) -> None:
        """Raise BrokenRun with the log tail of a worker that exited without being stopped."""
        for worker in self.workers:
            if not worker.stopped and not worker.alive():
                raise BrokenRun(f"fkod worker {worker.pid} exited with code "
                                f"{worker.process.returncode}; last lines of "
                                f"{worker.log_path}:\n{worker.log_tail()}")

    # Publishing ------------------------------------------------------------------------

    def publish(self, sequences: Iterable[int]) -> list[Published]:
        """Write one event per sequence number in one transaction; return them after the commit.

        Every event must get exactly one delivery (the benchmark's endpoint).
        Nothing is enqueued; call :meth:`enqueue`.
        """
        from fkod.core.db import run_in_transaction
        from fkod.core.webhooks.outbox import publish_event

        def write(session) -> list[tuple[str, int]]:
            written = []
            for sequence in sequences:
                event, deliveries = publish_event(
                    session, event_type=EVENT_TYPE, data=event_data(sequence), livemode=False,
                    partner_ids=[self.partner_id], request_id=None)
                if len(deliveries) != 1:
                    raise BrokenRun(f"event {event.public_id} got {len(deliveries)} "
                                    "deliveries, expected 1")
                written.append((event.public_id, deliveries[0].id))
            return written

        written = run_in_transaction(self.session_factory, write)
        committed_at = time.time()
        return [Published(event_id, delivery_id, committed_at)
                for event_id, delivery_id in written]

    def enqueue(self, published: Iterable[Published]) -> None:
        """Send ``deliver_webhook`` per delivery, as ``outbox.publish`` does after a commit."""
        from fkod.core.webhooks.outbox import DELIVER_ACTOR

        for item in published:
            self.tasks.send(DELIVER_ACTOR, item.delivery_id)

    def publish_in_batches(self, first: int, count: int, batch_size: int) -> list[Published]:
        published: list[Published] = []
        for start in range(first, first + count, batch_size):
            published += self.publish(range(start, min(start + batch_size, first + count)))
        return published

    # Waiting and checking ----------------------------------------------------------------

    def wait_for_arrivals(self, count: int, timeout: float, interval: float = 0.02) -> None:
        """Wait until the receiver has ``count`` delivery requests; BrokenRun after ``timeout``."""
        deadline = time.monotonic() + timeout
        while (arrived := self.receiver.count()) < count:
            self.check_workers()
            if time.monotonic() > deadline:
                raise BrokenRun(f"the receiver got {arrived} of {count} requests in {timeout:g} s")
            time.sleep(interval)

    def queued_messages(self) -> dict[str, int]:
        """Return the messages waiting in the broker's delivery queue and its delay queue.

        Messages that a worker has fetched (prefetched, in progress, or delayed
        and held until their time) are not in these lists.
        """
        client = redis.Redis.from_url(REDIS_URL)
        namespace = self.key_prefix + "tasks"
        try:
            return {"queue": client.llen(f"{namespace}:fkod"),
                    "delay_queue": client.llen(f"{namespace}:fkod.DQ")}
        finally:
            client.close()

    def status_counts(self) -> dict[str, int]:
        import sqlalchemy as sa

        with self.engine.connect() as connection:
            rows = connection.execute(sa.text(
                "SELECT status, count(*) FROM webhook_events GROUP BY status")).all()
        return dict(rows)

    def wait_until_succeeded(self, total: int, timeout: float,
                             report_every: float | None = None) -> dict[str, int]:
        """Wait until ``total`` deliveries are succeeded; return the status counts at the end.

        With ``report_every`` (seconds), prints the status counts and the queued
        messages at that interval.
        """
        started = time.monotonic()
        reported = started
        while (counts := self.status_counts()).get("succeeded", 0) < total:
            self.check_workers()
            now = time.monotonic()
            if now - started > timeout:
                return counts
            if report_every is not None and now - reported >= report_every:
                reported = now
                print(f"  after {now - started:.0f} s: deliveries by status "
                      f"{json.dumps(counts)}, broker {json.dumps(self.queued_messages())}")
            time.sleep(0.2)
        return counts

    def verify_signatures(self, arrivals: Iterable[Arrival]) -> int:
        """Verify each arrival's Standard Webhooks signature; return how many failed."""
        verifier = StandardWebhook(self.secret)
        failed = 0
        for arrival in arrivals:
            headers = {"webhook-id": arrival.webhook_id,
                       "webhook-timestamp": arrival.webhook_timestamp,
                       "webhook-signature": arrival.webhook_signature}
            try:
                verifier.verify(arrival.body, headers)
            except Exception:  # the library raises its own WebhookVerificationError
                failed += 1
        return failed


# The throughput benchmark ----------------------------------------------------------------


CPROFILE_HOOK = '''\
"""Profile every new thread with cProfile when FKOD_BENCH_CPROFILE_OUTPUT names a file.

Written by bench/bench_webhook_throughput.py into a temporary folder on the
PYTHONPATH of the profiled fkod worker. The stats of all threads are merged
and written at exit.
"""
import atexit
import cProfile
import os
import pstats
import threading

_output = os.environ.get("FKOD_BENCH_CPROFILE_OUTPUT")
if _output:
    _profiles = []
    _lock = threading.Lock()

    def _profile_thread(frame, event, arg):
        profile = cProfile.Profile()
        with _lock:
            _profiles.append(profile)
        profile.enable()

    def _write_stats():
        with _lock:
            profiles = list(_profiles)
        if profiles:
            stats = pstats.Stats(profiles[0])
            for profile in profiles[1:]:
                stats.add(profile)
            stats.dump_stats(_output)

    threading.setprofile(_profile_thread)
    atexit.register(_write_stats)
'''


def post_in_loop(url: str, body: bytes, seconds: float, *, keep_alive: bool) -> float:
    """POST ``body`` one request after another for ``seconds``; return requests per second."""
    limits = httpx.Limits() if keep_alive else httpx.Limits(max_keepalive_connections=0)
    headers = {"Content-Type": "application/json"}
    sent = 0
    with httpx.Client(limits=limits, trust_env=False, timeout=10) as client:
        started = time.perf_counter()
        deadline = started + seconds
        while time.perf_counter() < deadline:
            response = client.post(url, content=body, headers=headers)
            if response.status_code != 200:
                raise BrokenRun(f"the receiver responded {response.status_code} to a "
                                "baseline POST, expected 200")
            sent += 1
        elapsed = time.perf_counter() - started
    return sent / elapsed


def print_cprofile(path: Path, lines: int = 25) -> None:
    stats = pstats.Stats(str(path))
    print(f"cProfile of the worker's threads ({path}), by own time:")
    stats.sort_stats("tottime").print_stats(lines)
    print("by cumulative time:")
    stats.sort_stats("cumulative").print_stats(lines)


def print_py_spy(path: Path, lines: int = 25) -> None:
    """Print the functions with the most own and total samples from py-spy's raw output."""
    own: collections.Counter = collections.Counter()
    total: collections.Counter = collections.Counter()
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        samples += count
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    print(f"py-spy samples of the worker ({path}): {samples} while holding the GIL")
    print("own samples:")
    for frame, count in own.most_common(lines):
        print(f"  {100 * count / samples:5.1f} %  {frame}")
    print("total samples (the function or anything it called):")
    for frame, count in total.most_common(lines):
        print(f"  {100 * count / samples:5.1f} %  {frame}")


def start_worker(stack: WebhookStack, profiler: str | None, output: Path) -> Worker:
    """Start the worker, with the cProfile hook on its PYTHONPATH when ``profiler`` is cprofile."""
    if profiler != "cprofile":
        return stack.start_worker()
    hook_dir = stack.log_dir / "cprofile-hook"
    hook_dir.mkdir()
    (hook_dir / "sitecustomize.py").write_text(CPROFILE_HOOK)
    python_path = os.pathsep.join(filter(None, [str(hook_dir), stack.env.get("PYTHONPATH")]))
    return stack.start_worker({"PYTHONPATH": python_path,
                               "FKOD_BENCH_CPROFILE_OUTPUT": str(output)})


def start_py_spy(worker: Worker, output: Path) -> subprocess.Popen:
    binary = shutil.which("py-spy")
    if binary is None:
        raise BrokenRun("--profile py-spy needs the py-spy program on PATH (pip install py-spy)")
    # Not untrusted input (S603): py-spy with fixed arguments and the worker's pid.
    return subprocess.Popen(  # noqa: S603
        [binary, "record", "--pid", str(worker.pid), "--format", "raw", "--threads", "--gil",
         "--rate", "250", "--output", str(output)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_benchmark(stack: WebhookStack, options) -> None:
    output = Path(options.profile_output or stack.log_dir / f"worker.{options.profile}")
    worker = start_worker(stack, options.profile, output)

    warm_up = stack.publish(range(20))
    stack.enqueue(warm_up)
    stack.wait_for_arrivals(len(warm_up), 60)
    print(f"worker {worker.pid} is delivering ({WORKER_THREADS} threads); {load_average()}")

    started = time.perf_counter()
    published = stack.publish_in_batches(len(warm_up), options.events, 500)
    written = time.perf_counter() - started
    print(f"wrote {len(published)} events with one delivery each in {written:.1f} s "
          f"({len(published) / written:.0f} events/s, transactions of 500)")

    py_spy = start_py_spy(worker, output) if options.profile == "py-spy" else None
    sampler = SessionSampler(stack.worker_application_name)
    sampler.start()
    worker_cpu_at_start = process_cpu_seconds(worker.pid)
    started = time.perf_counter()
    stack.enqueue(published)
    print(f"enqueued {len(published)} deliveries in {time.perf_counter() - started:.1f} s")
    stack.wait_for_arrivals(len(warm_up) + len(published), max(60.0, options.events / 20),
                            interval=0.05)
    worker_cpu = (process_cpu_seconds(worker.pid) or 0.0) - (worker_cpu_at_start or 0.0)
    session_states, database_cpu = sampler.stop()
    if py_spy is not None:
        py_spy.send_signal(signal.SIGINT)
        py_spy.wait(timeout=30)
    counts = stack.wait_until_succeeded(len(warm_up) + len(published), 30)
    load = load_average()
    worker.stop()

    expected = {item.event_id for item in published}
    arrivals = [arrival for arrival in stack.receiver.arrivals() if arrival.webhook_id in expected]
    arrivals.sort(key=lambda arrival: arrival.arrived_at)
    missing = expected - {arrival.webhook_id for arrival in arrivals}
    if missing:
        raise BrokenRun(f"{len(missing)} published events never reached the receiver")
    if counts.get("succeeded", 0) != len(warm_up) + len(published):
        raise BrokenRun(f"not every delivery succeeded within 30 s; by status: {counts}")
    unsigned = stack.verify_signatures(arrivals)
    if unsigned:
        raise BrokenRun(f"{unsigned} deliveries failed Standard Webhooks verification")
    span = arrivals[-1].arrived_at - arrivals[0].arrived_at
    rate = (len(arrivals) - 1) / span
    duplicates = len(arrivals) - len(expected)
    print(f"delivered {len(expected)} events ({duplicates} duplicate requests) in {span:.2f} s "
          f"from the first arrival to the last: {rate:.0f} deliveries/s; all succeeded and "
          f"verified; {load}")

    print(f"the worker's database sessions during the run, mean count per state "
          f"({sampler.samples} samples):\n{session_states}")
    print(f"CPU time per delivery: worker process {1000 * worker_cpu / len(published):.2f} ms, "
          f"its PostgreSQL server processes {1000 * database_cpu / len(published):.2f} ms")

    # The best of two alternating rounds, because one burst of load from other
    # processes can halve a loop of a few seconds.
    body = arrivals[0].body
    url = f"http://127.0.0.1:{stack.receiver.port}{BASELINE_PATH}"
    fresh = kept = 0.0
    for _ in range(2):
        fresh = max(fresh, post_in_loop(url, body, options.baseline_seconds, keep_alive=False))
        kept = max(kept, post_in_loop(url, body, options.baseline_seconds, keep_alive=True))
    print(f"plain httpx loop, {len(body)}-byte body, best of two rounds: new connection per "
          f"request {fresh:.0f}/s, one keep-alive connection {kept:.0f}/s; {load_average()}")

    if options.profile == "cprofile":
        print_cprofile(output)
    elif options.profile == "py-spy":
        print_py_spy(output)

    verdict_rate = "met" if rate >= TARGET_RATE else "NOT met"
    verdict_ratio = "met" if rate / kept >= TARGET_RATIO else "NOT met"
    print(f"target >= {TARGET_RATE:.0f} deliveries/s: {verdict_rate}; target >= "
          f"{TARGET_RATIO} of the keep-alive loop: {verdict_ratio}")
    print(f"throughput {rate:.0f} deliveries/s; plain loop {fresh:.0f}/s new connection, "
          f"{kept:.0f}/s keep-alive; ratio {rate / fresh:.2f} and {rate / kept:.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=3000,
                        help="events in the pre-filled outbox, one delivery each (default 3000)")
    parser.add_argument("--max-concurrency-per-endpoint", type=int, default=WORKER_THREADS,
                        help="fkod.webhooks.max_concurrency_per_endpoint of the worker "
                             f"(default {WORKER_THREADS}, the worker's thread count)")
    parser.add_argument("--baseline-seconds", type=float, default=2.0,
                        help="duration of each plain POST loop in seconds (default 2)")
    parser.add_argument("--profile", choices=("cprofile", "py-spy"),
                        help="profile the worker during the run and print its hottest functions")
    parser.add_argument("--profile-output",
                        help="file for the profile (default: in the folder of the worker logs)")
    options = parser.parse_args()
    # Progress lines appear as they happen, also when the output goes to a file.
    sys.stdout.reconfigure(line_buffering=True)
    if options.events < 2:
        parser.error("--events must be at least 2")

    problem = unreachable_service()
    if problem is not None:
        print(f"skipped: {problem}")
        return 0

    settings = {
        "FKOD_WEBHOOKS_MAX_CONCURRENCY_PER_ENDPOINT": str(options.max_concurrency_per_endpoint),
        "FKOD_WEBHOOKS_SWEEP_INTERVAL_SECONDS": "600",
    }
    print(f"{load_average()}; settings: {json.dumps(settings)}")
    try:
        with WebhookStack("throughput", settings) as stack:
            print(f"schema {stack.schema}, Redis key prefix {stack.key_prefix}, "
                  f"receiver {stack.receiver.url}")
            run_benchmark(stack, options)
            stack.keep_logs = options.profile is not None
    except BrokenRun as error:
        print(f"FAILED: {error}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
