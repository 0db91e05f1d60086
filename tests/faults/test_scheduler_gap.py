"""Two schedulers start after a day without any, on PostgreSQL: each missed job runs once.

The jobs run in a month other than the current one, so APScheduler's real
clock cannot fire them while the test runs. The simulated times are passed to
``Scheduler.start(now=...)``, which catches up as of that moment.
"""

from __future__ import annotations

import datetime as dt
import threading

import sqlalchemy as sa

from fkod.core.db import run_in_transaction
from fkod.core.scheduler import Schedule, ScheduledJob, Scheduler, schedule_for
from fkod.core.scheduler_models import ScheduledRun
from fkod.core.testing import make_settings
from tests.faults.traffic import running_app

ACTOR = "faults.record_run"
START_SECONDS = 30


def simulated_month() -> int:
    """Return a month that is not the current one, so the real clock never fires the jobs."""
    return dt.datetime.now(dt.UTC).month % 12 + 1


def make_jobs(month: int) -> list[ScheduledJob]:
    return [
        ScheduledJob("faults.hourly", f"0 * * {month} *", ACTOR, "Every hour."),
        ScheduledJob("faults.every_6_hours", f"15 */6 * {month} *", ACTOR, "Every six hours."),
        ScheduledJob("faults.daily", f"30 2 * {month} *", ACTOR, "Every day at 02:30."),
    ]


class Recorder:
    """The fire-time arguments the actor received, from every application."""

    def __init__(self):
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, fire_time: str) -> None:
        with self._lock:
            self.calls.append(fire_time)


def add_jobs(app, recorder: Recorder, jobs: list[ScheduledJob]) -> None:
    app.registry["tasks"].actor(recorder, name=ACTOR)
    app.registry["schedule"] = Schedule()
    for job in jobs:
        schedule_for(app.registry).add(job)


def stored_runs(app) -> list[tuple]:
    def read(session):
        rows = session.scalars(sa.select(ScheduledRun).order_by(ScheduledRun.id))
        return [(row.job, row.fire_time, row.trigger, row.claimed_by) for row in rows]

    return run_in_transaction(app.registry["db.session_factory"], read)


def test_two_schedulers_catch_up_once(tmp_path, private_database):
    settings = make_settings(tmp_path, db_url=private_database)
    year = dt.datetime.now(dt.UTC).year - 1
    month = simulated_month()
    jobs = make_jobs(month)
    last_seen = dt.datetime(year, month, 10, 9, 0, 0)
    back_at = last_seen + dt.timedelta(days=1, minutes=40)
    recorder = Recorder()

    with running_app(settings) as first, running_app(settings) as second:
        add_jobs(first, recorder, jobs)
        add_jobs(second, recorder, jobs)

        # Normal operation up to 09:00 on the 10th: every job sent its latest firing.
        before = Scheduler(first.registry, claimed_by="host-before", check_interval_seconds=0)
        before.start(now=last_seen)
        before.stop()
        first.registry["tasks"].join()
        runs_before = stored_runs(first)
        calls_before = list(recorder.calls)

        # A day later two schedulers start at the same moment.
        schedulers = [
            Scheduler(first.registry, claimed_by="host-a", check_interval_seconds=0),
            Scheduler(second.registry, claimed_by="host-b", check_interval_seconds=0),
        ]
        ready = threading.Barrier(len(schedulers), timeout=START_SECONDS)
        failures: list[BaseException] = []

        def start(scheduler: Scheduler) -> None:
            try:
                ready.wait()
                scheduler.start(now=back_at)
            except BaseException as error:  # reported by the assertion below
                failures.append(error)

        threads = [threading.Thread(target=start, args=(scheduler,)) for scheduler in schedulers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=START_SECONDS)
        for scheduler in schedulers:
            scheduler.stop()
        first.registry["tasks"].join()
        second.registry["tasks"].join()
        runs_after = stored_runs(first)[len(runs_before):]
        calls_after = recorder.calls[len(calls_before):]

    assert failures == []
    assert not any(thread.is_alive() for thread in threads)
    assert [(job, fire_time, trigger) for job, fire_time, trigger, _ in runs_before] == [
        ("faults.daily", dt.datetime(year, month, 10, 2, 30), "catch_up"),
        ("faults.every_6_hours", dt.datetime(year, month, 10, 6, 15), "catch_up"),
        ("faults.hourly", dt.datetime(year, month, 10, 9, 0), "catch_up"),
    ]
    assert len(calls_before) == 3

    # 24 hourly, 4 six-hourly and 1 daily firing were missed: one run of each job.
    expected = {
        "faults.daily": dt.datetime(year, month, 11, 2, 30),
        "faults.every_6_hours": dt.datetime(year, month, 11, 6, 15),
        "faults.hourly": dt.datetime(year, month, 11, 9, 0),
    }
    assert sorted((job, fire_time, trigger) for job, fire_time, trigger, _ in runs_after) == [
        (job, fire_time, "catch_up") for job, fire_time in sorted(expected.items())
    ]
    assert {claimant for *_, claimant in runs_after} <= {"host-a", "host-b"}
    assert sorted(calls_after) == sorted(
        fire_time.isoformat(timespec="seconds") + "Z" for fire_time in expected.values())
