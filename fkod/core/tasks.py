"""Background work: the dramatiq broker, actors, and enqueueing after commit.

``fkod.tasks.broker = inprocess`` runs a dramatiq worker on threads of the
application process (the embedded default); ``redis`` puts messages on a
Redis broker consumed by ``fkod worker`` processes.

Actors are declared per application, with their broker passed explicitly, so
importing a module never creates or touches a global broker. Actors never
rely on dramatiq's own retries (its Retries middleware is not installed): the work they do records
its own attempts in the database, and periodic jobs pick up whatever is due,
so a lost message delays work but never loses it.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import AgeLimit, Callbacks, Pipelines, ShutdownNotifications, TimeLimit

from fkod.core.settings import ConfigurationError

log = logging.getLogger(__name__)

QUEUE = "fkod"


def _middleware():
    # Retries is left out on purpose; see the module docstring.
    return [AgeLimit(), TimeLimit(), ShutdownNotifications(), Callbacks(), Pipelines()]


class TaskQueue:
    """The broker of one application, its actors, and the periodic jobs of a worker."""

    def __init__(self, broker: dramatiq.Broker, *, in_process: bool, worker_threads: int,
                 poll_interval_ms: int = 100):
        self.broker = broker
        self.in_process = in_process
        self.worker_threads = worker_threads
        self.poll_interval_ms = poll_interval_ms
        self.actors: dict[str, dramatiq.Actor] = {}
        self.periodic: list[tuple[str, float, Callable[[], None]]] = []
        self._worker: dramatiq.Worker | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def actor(self, fn: Callable, *, name: str, time_limit_ms: int = 300_000) -> dramatiq.Actor:
        """Declare ``fn`` as an actor of this application's broker."""
        declared = dramatiq.actor(
            fn, broker=self.broker, actor_name=name, queue_name=QUEUE, time_limit=time_limit_ms,
        )
        self.actors[name] = declared
        return declared

    def every(self, name: str, interval_seconds: float, job: Callable[[], None]) -> None:
        """Run ``job`` every ``interval_seconds`` in the process that runs the worker."""
        self.periodic.append((name, interval_seconds, job))

    def send(self, name: str, *args, delay_ms: int | None = None) -> None:
        """Enqueue a message now; a broker failure is logged, and the periodic jobs catch up."""
        try:
            self.actors[name].send_with_options(args=args, delay=delay_ms)
        except Exception as exc:
            log.warning("could not enqueue a task; it will be picked up later",
                        extra={"actor": name, "error": str(exc)[:200]})

    def send_after_commit(self, transaction_manager, name: str, *args) -> None:
        """Enqueue once the current transaction commits; nothing is sent on rollback."""
        def hook(committed: bool) -> None:
            if committed:
                self.send(name, *args)

        transaction_manager.get().addAfterCommitHook(hook)

    # Running -----------------------------------------------------------------

    def start(self) -> None:
        """Start the dramatiq worker threads and the periodic jobs of this process."""
        self._stop.clear()
        self._worker = dramatiq.Worker(self.broker, worker_threads=self.worker_threads,
                                       worker_timeout=self.poll_interval_ms)
        self._worker.start()
        for name, interval, job in self.periodic:
            thread = threading.Thread(target=self._run_periodic, args=(name, interval, job),
                                      name=f"fkod-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("task worker started", extra={"threads": self.worker_threads,
                                                "periodic": [item[0] for item in self.periodic]})

    def _run_periodic(self, name: str, interval: float, job: Callable[[], None]) -> None:
        while not self._stop.wait(interval):
            try:
                job()
            except Exception:
                log.error("periodic job failed", exc_info=True, extra={"job": name})

    def run_periodic_now(self) -> None:
        """Run every periodic job once, now (tests, and the first tick of a worker)."""
        for name, _interval, job in self.periodic:
            try:
                job()
            except Exception:
                log.error("periodic job failed", exc_info=True, extra={"job": name})

    def worker_alive(self) -> bool:
        """Return True when this process runs a dramatiq worker with a live worker thread."""
        worker = self._worker
        return worker is not None and any(thread.is_alive() for thread in worker.workers)

    def join(self, timeout_ms: int = 30_000) -> None:
        """Wait until the in-process queue is empty and the worker is idle (tests)."""
        if isinstance(self.broker, StubBroker):
            self.broker.join(QUEUE, timeout=timeout_ms, fail_fast=False)
            if self._worker is not None:
                self._worker.join()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads.clear()
        if self._worker is not None:
            self._worker.stop(timeout=10_000)
            self._worker = None
        log.info("task worker stopped")


def make_task_queue(settings: dict) -> TaskQueue:
    if settings["fkod.tasks.broker"] == "redis":
        if not settings["fkod.redis.url"]:
            raise ConfigurationError(
                "missing setting fkod.redis.url: fkod.tasks.broker = redis needs a Redis URL"
            )
        broker = RedisBroker(url=settings["fkod.redis.url"], middleware=_middleware(),
                             namespace=settings["fkod.redis.key_prefix"] + "tasks")
        return TaskQueue(broker, in_process=False, worker_threads=8,
                         poll_interval_ms=settings["fkod.tasks.poll_interval_ms"])
    broker = StubBroker(middleware=_middleware())
    broker.emit_after("process_boot")
    return TaskQueue(broker, in_process=True,
                     worker_threads=settings["fkod.tasks.inprocess_worker_threads"],
                     poll_interval_ms=settings["fkod.tasks.poll_interval_ms"])


class LeaderLock:
    """Lets one process at a time run a periodic job, through a Redis lock.

    Without Redis (the embedded default) there is one process, which always
    holds the lock. The lock expires after ``ttl_seconds`` unless its holder
    renews it, so a worker that dies hands the job over to another.
    """

    def __init__(self, redis_client=None, *, ttl_seconds: int = 60, prefix: str):
        self.redis = redis_client
        self.ttl_ms = ttl_seconds * 1000
        self.prefix = prefix
        self.token = uuid.uuid4().hex

    def acquire(self, name: str) -> bool:
        if self.redis is None:
            return True
        key = self.prefix + name
        try:
            if self.redis.set(key, self.token, nx=True, px=self.ttl_ms):
                return True
            if self.redis.get(key) == self.token.encode():
                self.redis.pexpire(key, self.ttl_ms)
                return True
        except Exception as exc:
            log.warning("leader lock unavailable", extra={"lock": name, "error": str(exc)[:200]})
        return False

    def wrap(self, name: str, job: Callable[[], object]) -> Callable[[], None]:
        """Return ``job`` guarded so that it runs only where this lock is held."""
        def guarded() -> None:
            if self.acquire(name):
                job()

        return guarded


# Worker heartbeats --------------------------------------------------------------

HEARTBEAT_KEY_PART = "workers:"


def heartbeat_prefix(key_prefix: str) -> str:
    """Return the prefix of the heartbeat keys under ``fkod.redis.key_prefix``."""
    return key_prefix + HEARTBEAT_KEY_PART


class WorkerHeartbeat:
    """Writes a Redis key with a TTL for one ``fkod worker`` process while it runs.

    The key is ``<key_prefix>workers:<host>-<pid>`` and expires after three
    intervals, so a worker that dies disappears from the list of live
    workers within that time. A failed write is logged and retried on the
    next tick.
    """

    def __init__(self, redis_client, *, key_prefix: str, name: str,
                 interval_seconds: float = 5.0):
        self.redis = redis_client
        self.key = heartbeat_prefix(key_prefix) + name
        self.interval_seconds = interval_seconds
        self.ttl_ms = int(interval_seconds * 3 * 1000)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> None:
        """Write the heartbeat key once: its value is the current Unix time."""
        self.redis.set(self.key, str(int(time.time())), px=self.ttl_ms)

    def _run(self) -> None:
        while True:
            try:
                self.beat()
            except Exception as exc:
                log.warning("worker heartbeat failed", extra={"key": self.key,
                                                              "error": str(exc)[:200]})
            if self._stop.wait(self.interval_seconds):
                return

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="fkod-heartbeat", daemon=True)
        self._thread.start()
        log.info("worker heartbeat started", extra={"key": self.key})

    def stop(self) -> None:
        """Stop the thread and delete the key, so the worker is gone from the list at once."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        try:
            self.redis.delete(self.key)
        except Exception as exc:
            log.warning("could not delete the worker heartbeat", extra={
                "key": self.key, "error": str(exc)[:200]})
