"""Scheduled jobs: crontab lines that send dramatiq messages.

A :class:`ScheduledJob` names a dramatiq actor and a crontab line in UTC. The
jobs of an application live in its :class:`Schedule`, ``registry["schedule"]``.
``fkod scheduler INI`` runs a :class:`Scheduler`: an APScheduler
``BackgroundScheduler`` that, at each firing, claims the run in
``scheduled_runs`` and sends the actor one message whose only argument is the
fire time in ISO 8601 (``2026-12-01T02:00:00Z``).

The claim is a row unique on (job, fire time). Several schedulers can run at
once, on several hosts: the first to insert the row sends the message, the
others skip that firing.

Catch-up: at start, and every ``check_interval_seconds`` while running, each
job's latest fire time at or before now is looked up. If no scheduled or
catch-up run of the job has a fire time at or after it, that firing is
claimed with the trigger ``catch_up`` and sent once, however many firings
were missed: a job catches up every missed period by itself. A job that never
ran before is caught up too, on the first start, because jobs are idempotent.

The day-of-week field follows crontab: 0 and 7 are Sunday, 1 is Monday.
(APScheduler 3 counts 0 as Monday, so numbers are turned into day names first.)
A line may restrict the day of month or the day of week, not both, since
crontab and APScheduler combine the two differently.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import re
import socket
import threading
from collections.abc import Iterator

import sqlalchemy as sa
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import orm

from fkod.core.db import run_in_transaction, utcnow
from fkod.core.scheduler_models import ScheduledRun
from fkod.core.settings import ConfigurationError

log = logging.getLogger(__name__)

__all__ = [
    "ManualRun",
    "Schedule",
    "ScheduledJob",
    "Scheduler",
    "UnknownJob",
    "claim",
    "default_claimant",
    "fire_time_argument",
    "last_runs",
    "latest_fire_time",
    "next_fire_time",
    "run_job_now",
    "schedule_for",
]

UTC = dt.UTC
TRIGGER_SCHEDULE = "schedule"
TRIGGER_CATCH_UP = "catch_up"
TRIGGER_MANUAL = "manual"

_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_DAY_PART = re.compile(r"^(\*|[0-7]|[a-z]{3})(?:-([0-7]|[a-z]{3}))?(?:/([1-9][0-9]*))?$")
# Windows searched back from now for the latest fire time, shortest first, so
# that a frequent job needs few steps and a yearly one is still found.
_LOOK_BACK = (dt.timedelta(minutes=2), dt.timedelta(hours=2), dt.timedelta(days=2),
              dt.timedelta(days=63), dt.timedelta(days=367), dt.timedelta(days=8 * 366 + 1))


def _day_number(text: str, expr: str) -> int:
    if text.isdigit():
        return int(text) % 7
    if text in _DAY_NAMES:
        return _DAY_NAMES.index(text)
    raise ValueError(f"invalid cron expression {expr!r}: unknown day of week {text!r}")


def _crontab_days(field: str, expr: str) -> str:
    """Return the crontab day-of-week ``field`` as day names, which APScheduler reads alike."""
    field = field.lower()
    if field in ("*", "?"):
        return "*"
    days: set[int] = set()
    for part in field.split(","):
        match = _DAY_PART.match(part)
        if match is None:
            raise ValueError(f"invalid cron expression {expr!r}: "
                             f"cannot read the day of week {field!r}")
        start, end, step = match.groups()
        if start == "*":
            if end is not None:
                raise ValueError(f"invalid cron expression {expr!r}: "
                                 f"cannot read the day of week {field!r}")
            first, last = 0, 6
        else:
            first = _day_number(start, expr)
            # A range may end on 7, Sunday at the end of the week.
            if end is None:
                last = first
            elif end == "7":
                last = 7
            else:
                last = _day_number(end, expr)
            if step is not None and end is None:
                last = 6
            if last < first:
                raise ValueError(f"invalid cron expression {expr!r}: "
                                 f"the day range {part!r} runs backwards")
        days.update(day % 7 for day in range(first, last + 1, int(step or 1)))
    return ",".join(_DAY_NAMES[day] for day in sorted(days))


def make_trigger(cron: str) -> CronTrigger:
    """Return the UTC trigger of a 5-field crontab line; ValueError if it is not one."""
    fields = cron.split()
    if len(fields) != 5:
        raise ValueError(f"invalid cron expression {cron!r}: expected 5 fields "
                         f"(minute hour day-of-month month day-of-week), got {len(fields)}")
    if fields[2] not in ("*", "?") and fields[4] not in ("*", "?"):
        # crontab runs such a line on either day, APScheduler only on days that are both.
        raise ValueError(f"invalid cron expression {cron!r}: restrict the day of month or "
                         f"the day of week, not both")
    fields[4] = _crontab_days(fields[4], cron)
    try:
        return CronTrigger.from_crontab(" ".join(fields), timezone=UTC)
    except ValueError as exc:
        raise ValueError(f"invalid cron expression {cron!r}: {exc}") from None


@dataclasses.dataclass(frozen=True)
class ScheduledJob:
    """A job that sends one message to the dramatiq actor ``actor`` at each ``cron`` firing.

    ``cron`` is a 5-field crontab line, always read in UTC. The actor gets the
    fire time as an ISO 8601 string, its only argument.
    """

    name: str
    cron: str
    actor: str
    description: str = ""

    def __post_init__(self):
        if not self.name or len(self.name) > 100:
            raise ValueError(f"invalid job name {self.name!r}: expected 1 to 100 characters")
        if not self.actor:
            raise ValueError(f"job {self.name}: the actor name is missing")
        make_trigger(self.cron)

    @property
    def trigger(self) -> CronTrigger:
        return make_trigger(self.cron)


class Schedule:
    """The scheduled jobs of one application, by name."""

    def __init__(self):
        self._jobs: dict[str, ScheduledJob] = {}

    def add(self, job: ScheduledJob) -> ScheduledJob:
        """Add ``job``; ValueError if a job of that name is there already."""
        if job.name in self._jobs:
            raise ValueError(f"a scheduled job named {job.name} exists already")
        self._jobs[job.name] = job
        return job

    def get(self, name: str) -> ScheduledJob:
        """Return the job called ``name``; :class:`UnknownJob` if there is none."""
        try:
            return self._jobs[name]
        except KeyError:
            raise UnknownJob(name, self.names()) from None

    def names(self) -> list[str]:
        return sorted(self._jobs)

    def __iter__(self) -> Iterator[ScheduledJob]:
        return iter([self._jobs[name] for name in self.names()])

    def __len__(self) -> int:
        return len(self._jobs)

    def __contains__(self, name: str) -> bool:
        return name in self._jobs


class UnknownJob(KeyError):
    """No scheduled job has this name."""

    def __init__(self, name: str, known: list[str]):
        super().__init__(name)
        self.name = name
        self.known = known

    def __str__(self) -> str:
        known = ", ".join(self.known) if self.known else "none"
        return f"no scheduled job is called {self.name!r}; the jobs are: {known}"


def schedule_for(registry) -> Schedule:
    """Return ``registry["schedule"]``, created empty on first use."""
    schedule = registry.get("schedule")
    if schedule is None:
        schedule = Schedule()
        registry["schedule"] = schedule
    return schedule


# Fire times --------------------------------------------------------------------


def _aware(moment: dt.datetime | None) -> dt.datetime:
    """Return ``moment`` (naive UTC, aware, or None for now) as aware UTC, whole seconds."""
    if moment is None:
        moment = utcnow()
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).replace(microsecond=0)


def _naive(moment: dt.datetime) -> dt.datetime:
    """Return ``moment`` as the TIMESTAMP columns store it: naive UTC, whole seconds."""
    return _aware(moment).replace(tzinfo=None)


def fire_time_argument(fire_time: dt.datetime) -> str:
    """Return the actor argument for ``fire_time``: ISO 8601 in UTC, ``...T02:00:00Z``."""
    return _naive(fire_time).isoformat(timespec="seconds") + "Z"


def next_fire_time(job: ScheduledJob, now: dt.datetime | None = None) -> dt.datetime | None:
    """Return the first fire time of ``job`` after ``now``, naive UTC; None if there is none."""
    after = _aware(now) + dt.timedelta(seconds=1)
    found = job.trigger.get_next_fire_time(None, after)
    return None if found is None else _naive(found)


def latest_fire_time(job: ScheduledJob, now: dt.datetime | None = None) -> dt.datetime | None:
    """Return the last fire time of ``job`` at or before ``now``, naive UTC.

    None if the job did not fire in the last eight years.
    """
    now = _aware(now)
    trigger = job.trigger
    for window in _LOOK_BACK:
        found = trigger.get_next_fire_time(None, now - window)
        if found is None or found > now:
            continue
        while True:
            following = trigger.get_next_fire_time(None, found + dt.timedelta(seconds=1))
            if following is None or following > now:
                return _naive(found)
            found = following
    return None


# Claims ------------------------------------------------------------------------


def default_claimant() -> str:
    """Name this process in ``scheduled_runs.claimed_by``: host name and process id."""
    return f"{socket.gethostname()}-{os.getpid()}"[:200]


def claim(session_factory_or_dbsession, job: ScheduledJob | str, fire_time: dt.datetime,
          trigger: str, claimed_by: str | None = None) -> bool:
    """Record the run of ``job`` due at ``fire_time``; False if it was claimed already.

    With a session factory the row is committed in a transaction of its own.
    With a session (``request.dbsession``) it is written in a savepoint of the
    session's transaction, which a refused claim leaves intact; the claim then
    holds once that transaction commits.
    """
    name = job.name if isinstance(job, ScheduledJob) else job
    row = dict(job=name, fire_time=_naive(fire_time), trigger=trigger,
               claimed_by=(claimed_by or default_claimant())[:200])
    if isinstance(session_factory_or_dbsession, orm.Session):
        session = session_factory_or_dbsession
        try:
            with session.begin_nested():
                session.add(ScheduledRun(**row))
        except sa.exc.IntegrityError:
            return False
        return True

    def insert(session):
        session.add(ScheduledRun(**row))
        session.flush()

    try:
        run_in_transaction(session_factory_or_dbsession, insert)
    except sa.exc.IntegrityError:
        return False
    return True


def _claimed_since(session_factory, job: ScheduledJob, fire_time: dt.datetime) -> bool:
    """Tell whether a scheduled or catch-up run of ``job`` is due at ``fire_time`` or later."""
    query = (sa.select(ScheduledRun.id)
             .where(ScheduledRun.job == job.name,
                    ScheduledRun.fire_time >= _naive(fire_time),
                    ScheduledRun.trigger.in_((TRIGGER_SCHEDULE, TRIGGER_CATCH_UP)))
             .limit(1))
    return run_in_transaction(session_factory,
                              lambda session: session.scalar(query) is not None)


def last_runs(session_factory) -> dict[str, ScheduledRun]:
    """Return the latest claimed run of each job, manual runs included, by job name."""
    newest = (sa.select(sa.func.max(ScheduledRun.id)).group_by(ScheduledRun.job)
              .scalar_subquery())

    def read(session):
        rows = session.scalars(sa.select(ScheduledRun).where(ScheduledRun.id.in_(newest)))
        return {row.job: row for row in rows}

    return run_in_transaction(session_factory, read)


# The scheduler -----------------------------------------------------------------


def _check_actors(registry, jobs) -> None:
    actors = registry["tasks"].actors
    for job in jobs:
        if job.actor not in actors:
            raise ConfigurationError(
                f"scheduled job {job.name} sends to the actor {job.actor}, "
                f"which is not declared; declared actors: {', '.join(sorted(actors)) or 'none'}"
            )


class Scheduler:
    """Sends the messages of scheduled jobs at their fire times, claimed once for all schedulers.

    ``fire`` and ``catch_up`` take explicit times, so tests drive them without
    waiting for the clock; ``start`` hands the cron triggers to APScheduler.
    """

    def __init__(self, registry, schedule: Schedule | None = None, *,
                 claimed_by: str | None = None, misfire_grace_seconds: int = 300,
                 check_interval_seconds: float = 60):
        self.registry = registry
        self.schedule = schedule if schedule is not None else schedule_for(registry)
        self.session_factory = registry["db.session_factory"]
        self.tasks = registry["tasks"]
        self.claimed_by = claimed_by or default_claimant()
        self.check_interval_seconds = check_interval_seconds
        self._aps = BackgroundScheduler(timezone=UTC, job_defaults={
            "coalesce": True, "misfire_grace_time": misfire_grace_seconds, "max_instances": 1,
        })

    def fire(self, job: ScheduledJob, fire_time: dt.datetime,
             trigger: str = TRIGGER_SCHEDULE) -> bool:
        """Claim the firing of ``job`` at ``fire_time`` and send its message; False if taken."""
        fire_time = _naive(fire_time)
        if not claim(self.session_factory, job, fire_time, trigger, self.claimed_by):
            log.info("scheduled job claimed elsewhere", extra={
                "job": job.name, "fire_time": fire_time_argument(fire_time)})
            return False
        self.tasks.send(job.actor, fire_time_argument(fire_time))
        log.info("scheduled job sent", extra={
            "job": job.name, "actor": job.actor, "trigger": trigger,
            "fire_time": fire_time_argument(fire_time)})
        return True

    def catch_up(self, now: dt.datetime | None = None) -> list[str]:
        """Send each job whose latest firing up to ``now`` is unclaimed; return their names."""
        sent = []
        for job in self.schedule:
            try:
                due = latest_fire_time(job, now)
                if due is None or _claimed_since(self.session_factory, job, due):
                    continue
                if self.fire(job, due, TRIGGER_CATCH_UP):
                    sent.append(job.name)
            except Exception:
                log.error("scheduled job catch-up failed", exc_info=True,
                          extra={"job": job.name})
        return sent

    def _fire_now(self, job: ScheduledJob) -> None:
        # APScheduler calls this at or just after a fire time, so the latest
        # fire time up to now is the one it is running for.
        try:
            due = latest_fire_time(job)
            if due is not None:
                self.fire(job, due)
        except Exception:
            log.error("scheduled job failed to send", exc_info=True, extra={"job": job.name})

    def start(self, now: dt.datetime | None = None) -> None:
        """Catch up, then fire each job at its cron times on a background thread."""
        _check_actors(self.registry, self.schedule)
        self.catch_up(now)
        for job in self.schedule:
            self._aps.add_job(self._fire_now, job.trigger, args=(job,), id=job.name,
                              name=job.name)
        if self.check_interval_seconds:
            self._aps.add_job(self.catch_up, "interval", seconds=self.check_interval_seconds,
                              id="fkod.catch_up", name="catch-up check")
        self._aps.start()
        log.info("scheduler started", extra={"jobs": self.schedule.names(),
                                             "claimed_by": self.claimed_by})

    def next_fire_times(self) -> dict[str, dt.datetime | None]:
        """Return the next fire time of each job that APScheduler holds, naive UTC."""
        times = {}
        for aps_job in self._aps.get_jobs():
            if aps_job.id in self.schedule:
                run_time = aps_job.next_run_time
                times[aps_job.id] = None if run_time is None else _naive(run_time)
        return times

    def stop(self) -> None:
        if self._aps.running:
            self._aps.shutdown(wait=True)
            log.info("scheduler stopped")

    def run_forever(self, stop_event: threading.Event) -> None:
        """Start, run until ``stop_event`` is set, then stop."""
        self.start()
        try:
            stop_event.wait()
        finally:
            self.stop()


# Runs on demand ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ManualRun:
    """The outcome of :func:`run_job_now`; ``claimed`` False means nothing ran or was sent."""

    job: ScheduledJob
    fire_time: dt.datetime
    argument: str
    claimed: bool
    inline: bool
    result: object = None


def run_job_now(registry, name: str, *, argument: str | None = None, inline: bool = False,
                now: dt.datetime | None = None, claimed_by: str | None = None) -> ManualRun:
    """Run the job ``name`` now, recorded as a ``manual`` run with the fire time ``now``.

    The actor gets ``argument``, or the fire time in ISO 8601 when it is None.
    By default its message is sent through the broker. With ``inline`` the
    actor's function runs in this thread instead; its exception, if any,
    propagates (the run stays recorded). Raises :class:`UnknownJob` for an
    unknown name. Only one run of a job is recorded per second: when that
    second is taken already, nothing runs and ``claimed`` is False.
    """
    job = schedule_for(registry).get(name)
    _check_actors(registry, [job])
    fire_time = _naive(now or utcnow())
    if argument is None:
        argument = fire_time_argument(fire_time)
    claimed = claim(registry["db.session_factory"], job, fire_time, TRIGGER_MANUAL,
                    claimed_by or default_claimant())
    run = ManualRun(job, fire_time, argument, claimed, inline)
    if not claimed:
        return run
    tasks = registry["tasks"]
    log.info("scheduled job run on demand", extra={"job": job.name, "actor": job.actor,
                                                    "inline": inline, "argument": argument})
    if inline:
        return dataclasses.replace(run, result=tasks.actors[job.actor].fn(argument))
    tasks.send(job.actor, argument)
    return run
