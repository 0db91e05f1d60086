"""Scheduled jobs: cron validation, claims, catch-up and runs on demand, on a real app."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
import sqlalchemy as sa

from fkod.core.db import run_in_transaction
from fkod.core.scheduler import (
    Schedule,
    ScheduledJob,
    Scheduler,
    UnknownJob,
    claim,
    fire_time_argument,
    latest_fire_time,
    next_fire_time,
    run_job_now,
    schedule_for,
)
from fkod.core.scheduler_models import ScheduledRun
from fkod.core.settings import ConfigurationError

ACTOR = "test.record_close"
# 02:00 UTC on the first of each month.
MONTHLY = ScheduledJob("reports.monthly", "0 2 1 * *", ACTOR, "Close last month.")


class Recorder:
    """The arguments a test actor received, in order."""

    def __init__(self):
        self.calls: list[str] = []
        self._changed = threading.Condition()

    def __call__(self, argument: str) -> str:
        with self._changed:
            self.calls.append(argument)
            self._changed.notify_all()
        return f"done {argument}"

    def received(self, tasks, count: int) -> list[str]:
        """Return the calls once the queue is drained and at least ``count`` calls arrived.

        With the in-process broker, join() drains the queue, so the list holds
        every call sent so far, more than ``count`` included.
        """
        tasks.join()
        with self._changed:
            # join() does not wait for a Redis worker, which may still be busy.
            self._changed.wait_for(lambda: len(self.calls) >= count, timeout=30)
            return list(self.calls)


@pytest.fixture
def recorder():
    return Recorder()


def with_job(app, recorder, job: ScheduledJob = MONTHLY):
    """Declare the recording actor on the app's broker and add ``job`` to its schedule."""
    tasks = app.registry["tasks"]
    if ACTOR not in tasks.actors:
        tasks.actor(recorder, name=ACTOR)
    # The app's own jobs (billing) are left out, so only the test's job fires.
    app.registry["schedule"] = Schedule()
    schedule_for(app.registry).add(job)
    return app


def stored_runs(app) -> list[tuple]:
    def read(session):
        rows = session.scalars(sa.select(ScheduledRun).order_by(ScheduledRun.id))
        return [(row.job, row.fire_time, row.trigger, row.claimed_by) for row in rows]

    return run_in_transaction(app.registry["db.session_factory"], read)


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


# Jobs and schedules ------------------------------------------------------------


@pytest.mark.parametrize("cron", [
    "0 2 1 *",              # four fields
    "0 2 1 * * *",          # six fields
    "61 * * * *",           # minute out of range
    "0 25 * * *",           # hour out of range
    "0 0 * * 8",            # no day 8
    "0 0 1 * 1",            # day of month and day of week together
    "every day",
])
def test_invalid_cron_refused(cron):
    with pytest.raises(ValueError, match="invalid cron expression"):
        ScheduledJob("reports.monthly", cron, ACTOR)


def test_crontab_weekday_numbers():
    # 2026-12-05 is a Saturday; crontab's 0 and 7 are Sunday, 1 is Monday.
    saturday = at("2026-12-05T10:00:00")
    for cron in ("0 0 * * 0", "0 0 * * 7", "0 0 * * sun"):
        assert next_fire_time(ScheduledJob("weekly", cron, ACTOR), saturday) == at(
            "2026-12-06T00:00:00")
    weekdays = ScheduledJob("weekdays", "30 6 * * 1-5", ACTOR)
    assert next_fire_time(weekdays, saturday) == at("2026-12-07T06:30:00")
    assert latest_fire_time(weekdays, saturday) == at("2026-12-04T06:30:00")


def test_fire_times():
    now = at("2026-12-05T10:30:15")
    assert latest_fire_time(MONTHLY, now) == at("2026-12-01T02:00:00")
    assert next_fire_time(MONTHLY, now) == at("2027-01-01T02:00:00")
    assert latest_fire_time(MONTHLY, at("2026-12-01T02:00:00")) == at("2026-12-01T02:00:00")
    assert next_fire_time(MONTHLY, at("2026-12-01T02:00:00")) == at("2027-01-01T02:00:00")
    leap_day = ScheduledJob("leap", "0 0 29 2 *", ACTOR)
    assert latest_fire_time(leap_day, now) == at("2024-02-29T00:00:00")
    every_minute = ScheduledJob("often", "* * * * *", ACTOR)
    assert latest_fire_time(every_minute, now) == at("2026-12-05T10:30:00")
    assert fire_time_argument(at("2026-12-01T02:00:00.250000")) == "2026-12-01T02:00:00Z"


def test_duplicate_job_name_refused():
    schedule = Schedule()
    schedule.add(MONTHLY)

    with pytest.raises(ValueError, match=r"reports\.monthly exists already"):
        schedule.add(ScheduledJob("reports.monthly", "0 3 * * *", "other.actor"))

    assert [job.cron for job in schedule] == ["0 2 1 * *"]


def test_schedule_for_creates_one_schedule(app):
    schedule = schedule_for(app.registry)
    assert app.registry["schedule"] is schedule
    assert schedule_for(app.registry) is schedule


def test_unknown_actor_refused_at_start(app):
    schedule_for(app.registry).add(ScheduledJob("orphan", "0 2 1 * *", "nobody.declared"))

    with pytest.raises(ConfigurationError, match=r"nobody\.declared"):
        Scheduler(app.registry).start()


# Claims ------------------------------------------------------------------------


def test_claim_once_per_fire_time(app):
    factory = app.registry["db.session_factory"]
    fire_time = at("2026-12-01T02:00:00.400000")

    assert claim(factory, MONTHLY, fire_time, "schedule", "host-a-1") is True
    assert claim(factory, MONTHLY, at("2026-12-01T02:00:00"), "schedule", "host-b-2") is False
    assert claim(factory, "other.job", fire_time, "schedule", "host-b-2") is True

    assert stored_runs(app) == [
        ("reports.monthly", at("2026-12-01T02:00:00"), "schedule", "host-a-1"),
        ("other.job", at("2026-12-01T02:00:00"), "schedule", "host-b-2"),
    ]


def test_claim_in_a_session_keeps_its_transaction(app):
    def work(session):
        first = claim(session, MONTHLY, at("2026-12-01T02:00:00"), "schedule", "host-a")
        second = claim(session, MONTHLY, at("2026-12-01T02:00:00"), "schedule", "host-b")
        third = claim(session, MONTHLY, at("2027-01-01T02:00:00"), "schedule", "host-b")
        return first, second, third

    assert run_in_transaction(app.registry["db.session_factory"], work) == (True, False, True)
    assert [(run[1], run[3]) for run in stored_runs(app)] == [
        (at("2026-12-01T02:00:00"), "host-a"), (at("2027-01-01T02:00:00"), "host-b")]


# Firing and catch-up -----------------------------------------------------------


def test_two_schedulers_send_a_firing_once(app_factory, recorder):
    # Two applications on one database stand for two scheduler hosts.
    first = with_job(app_factory(), recorder)
    second = with_job(app_factory(), recorder)
    schedulers = [Scheduler(first.registry, claimed_by="host-a"),
                  Scheduler(second.registry, claimed_by="host-b")]
    fire_time = at("2026-12-01T02:00:00")
    ready = threading.Barrier(2)
    results = {}

    def fire(scheduler):
        ready.wait()
        results[scheduler.claimed_by] = scheduler.fire(MONTHLY, fire_time)

    threads = [threading.Thread(target=fire, args=(scheduler,)) for scheduler in schedulers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(results.values()) == [False, True]
    second.registry["tasks"].join()
    assert recorder.received(first.registry["tasks"], 1) == ["2026-12-01T02:00:00Z"]
    [run] = stored_runs(first)
    winner = next(name for name, sent in results.items() if sent)
    assert run == ("reports.monthly", fire_time, "schedule", winner)


def test_catch_up_sends_once_after_downtime(app, recorder):
    with_job(app, recorder)
    scheduler = Scheduler(app.registry, claimed_by="host-a")
    # The last firing sent was in September; October to December were missed.
    assert scheduler.fire(MONTHLY, at("2026-09-01T02:00:00"))

    sent = scheduler.catch_up(now=at("2026-12-05T10:00:00"))

    assert sent == ["reports.monthly"]
    tasks = app.registry["tasks"]
    assert recorder.received(tasks, 2) == ["2026-09-01T02:00:00Z", "2026-12-01T02:00:00Z"]
    assert [run[1:3] for run in stored_runs(app)] == [
        (at("2026-09-01T02:00:00"), "schedule"), (at("2026-12-01T02:00:00"), "catch_up")]

    # Starting again, later in the same month, sends nothing.
    restarted = Scheduler(app.registry, claimed_by="host-b")
    assert restarted.catch_up(now=at("2026-12-20T08:00:00")) == []
    assert recorder.received(tasks, 2) == ["2026-09-01T02:00:00Z", "2026-12-01T02:00:00Z"]
    assert len(stored_runs(app)) == 2


def test_first_start_catches_up_once(app, recorder):
    with_job(app, recorder)
    scheduler = Scheduler(app.registry)

    assert scheduler.catch_up(now=at("2026-12-05T10:00:00")) == ["reports.monthly"]
    assert scheduler.catch_up(now=at("2026-12-05T10:01:00")) == []

    assert recorder.received(app.registry["tasks"], 1) == ["2026-12-01T02:00:00Z"]


def test_catch_up_skips_a_firing_sent_on_time(app, recorder):
    with_job(app, recorder)
    scheduler = Scheduler(app.registry)
    scheduler.fire(MONTHLY, at("2026-12-01T02:00:00"))

    assert scheduler.catch_up(now=at("2026-12-01T02:00:30")) == []
    assert scheduler.fire(MONTHLY, at("2026-12-01T02:00:00")) is False

    assert recorder.received(app.registry["tasks"], 1) == ["2026-12-01T02:00:00Z"]


def test_manual_run_does_not_replace_a_catch_up(app, recorder):
    with_job(app, recorder)
    run_job_now(app.registry, "reports.monthly", argument="2026-10",
                now=at("2026-12-03T09:00:00"))

    sent = Scheduler(app.registry).catch_up(now=at("2026-12-05T10:00:00"))

    assert sent == ["reports.monthly"]
    assert recorder.received(app.registry["tasks"], 2) == ["2026-10", "2026-12-01T02:00:00Z"]


def test_start_runs_catch_up_and_schedules_each_job(app, recorder):
    with_job(app, recorder)
    scheduler = Scheduler(app.registry, check_interval_seconds=0)

    scheduler.start(now=at("2026-12-05T10:00:00"))
    try:
        upcoming = scheduler.next_fire_times()
    finally:
        scheduler.stop()

    assert list(upcoming) == ["reports.monthly"]
    assert upcoming["reports.monthly"] == next_fire_time(MONTHLY)
    assert recorder.received(app.registry["tasks"], 1) == ["2026-12-01T02:00:00Z"]


def test_run_forever_returns_when_stopped(app, recorder):
    with_job(app, recorder)
    stop = threading.Event()
    stop.set()

    Scheduler(app.registry).run_forever(stop)

    assert [run[2] for run in stored_runs(app)] == ["catch_up"]


# Runs on demand ----------------------------------------------------------------


def test_run_now_sends_the_current_time(app, recorder):
    with_job(app, recorder)

    run = run_job_now(app.registry, "reports.monthly", now=at("2026-12-05T10:00:07.5"),
                      claimed_by="operator")

    assert run.claimed and not run.inline
    assert recorder.received(app.registry["tasks"], 1) == ["2026-12-05T10:00:07Z"]
    assert stored_runs(app) == [
        ("reports.monthly", at("2026-12-05T10:00:07"), "manual", "operator")]


def test_run_now_inline_calls_the_function(app, recorder):
    with_job(app, recorder)

    run = run_job_now(app.registry, "reports.monthly", argument="2026-11", inline=True)

    assert run.result == "done 2026-11"
    assert recorder.calls == ["2026-11"]
    assert [row[2] for row in stored_runs(app)] == ["manual"]


def test_run_now_once_per_second(app, recorder):
    with_job(app, recorder)
    now = at("2026-12-05T10:00:00")

    assert run_job_now(app.registry, "reports.monthly", inline=True, now=now).claimed
    again = run_job_now(app.registry, "reports.monthly", inline=True, now=now)

    assert not again.claimed
    assert recorder.calls == ["2026-12-05T10:00:00Z"]


def test_run_now_unknown_job(app, recorder):
    with_job(app, recorder)

    with pytest.raises(UnknownJob) as raised:
        run_job_now(app.registry, "reports.month")

    assert str(raised.value) == (
        "no scheduled job is called 'reports.month'; the jobs are: reports.monthly")
    assert stored_runs(app) == []
