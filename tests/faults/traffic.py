"""Helpers shared by the fault tests: an app on private servers and a traffic loop."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx

from fkod import shutdown
from fkod.core.auth.models import Partner
from fkod.core.billing.models import Plan
from fkod.core.db import run_in_transaction
from fkod.core.ids import parse_id
from fkod.core.testing import make_app


@contextlib.contextmanager
def running_app(settings: dict, *, run_tasks: bool = True) -> Iterator:
    """Build the application and shut it down after.

    With ``run_tasks`` and the Redis broker the application also consumes its
    own messages, as the test fixtures' apps do. Without it, the application
    only sends them, as a web process does next to ``fkod worker`` processes.
    """
    app = make_app(settings)
    try:
        if run_tasks and not app.registry["tasks"].in_process:
            app.registry["tasks"].start()
        yield app
    finally:
        shutdown(app.registry)


def give_large_plan(app, partner_id: str) -> None:
    """Move the partner onto a plan whose windows the tests cannot fill (one million per hour)."""
    code = f"fault-{time.monotonic_ns()}"

    def work(session):
        plan = Plan(code=code, name=code, requests_per_hour=1_000_000,
                    requests_per_day=10_000_000)
        session.add(plan)
        session.flush()
        session.get(Partner, parse_id("partner", partner_id)).plan_id = plan.id

    run_in_transaction(app.registry["db.session_factory"], work)


@dataclass
class Outcome:
    """One request of a traffic loop: when it ended, its status and its response."""

    finished_at: float
    status: int | None
    headers: httpx.Headers | None = None
    body: bytes = b""
    error: str | None = None


@dataclass
class Traffic:
    """Requests sent one after another on a thread until ``stop`` is called."""

    send: Callable[[httpx.Client], httpx.Response]
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> Traffic:
        self._thread = threading.Thread(target=self._run, name="fault-traffic", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), "the traffic thread did not stop within 30 s"

    def _run(self) -> None:
        with httpx.Client(timeout=20) as client:
            while not self._stop.is_set():
                try:
                    response = self.send(client)
                except httpx.HTTPError as error:
                    outcome = Outcome(time.monotonic(), None, error=repr(error))
                else:
                    outcome = Outcome(time.monotonic(), response.status_code, response.headers,
                                      response.content)
                with self._lock:
                    self.outcomes.append(outcome)
                time.sleep(0.01)

    def snapshot(self) -> list[Outcome]:
        with self._lock:
            return list(self.outcomes)

    def since(self, moment: float) -> list[Outcome]:
        return [outcome for outcome in self.snapshot() if outcome.finished_at > moment]
