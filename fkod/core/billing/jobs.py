"""The billing actors and periodic sweeps, and the monthly jobs the scheduler fires.

``billing.close_period`` closes every month that ended since the last one
it closed, oldest first, so one message after days of downtime catches up
each missed month exactly once. ``billing.payout_run`` pays the balances
that reached the minimum. Both run on the first of the month (UTC), the
payout run after the close; operators run them on demand with
``fkod jobs run INI billing.close_period``.
"""

from __future__ import annotations

import datetime as dt
import logging

from fkod.core.billing.invoicing import (
    COLLECT_ACTOR,
    PeriodNotReady,
    close_period,
    collect_invoice,
    sweep_payments,
)
from fkod.core.billing.payouts import SEND_ACTOR, payout_run, send_payout, sweep_payouts
from fkod.core.billing.periods import Period
from fkod.core.db import run_in_transaction, utcnow
from fkod.core.metering.models import JobState
from fkod.core.scheduler import ScheduledJob, schedule_for

log = logging.getLogger(__name__)

CLOSE_JOB = "billing.close_period"
PAYOUT_JOB = "billing.payout_run"
SWEEP_INTERVAL_SECONDS = 300


def _closed_until(registry) -> Period | None:
    def read(session):
        state = session.get(JobState, CLOSE_JOB)
        return state.cursor.get("closed_until") if state is not None else None

    value = run_in_transaction(registry["db.session_factory"], read)
    return Period.parse(value) if value else None


def _save_closed(registry, period: Period) -> None:
    def write(session):
        state = session.get(JobState, CLOSE_JOB, with_for_update=True)
        if state is None:
            state = JobState(name=CLOSE_JOB, cursor={})
            session.add(state)
        current = state.cursor.get("closed_until")
        if current is None or Period.parse(current) < period:
            state.cursor = {"closed_until": str(period)}

    run_in_transaction(registry["db.session_factory"], write)


def close_due_periods(registry, now: dt.datetime | None = None,
                      period: Period | None = None) -> list[str]:
    """Close ``period``, or every ended month after the last one closed; return them.

    A first run, with nothing closed before, closes the month that just ended.
    """
    now = now or utcnow()
    last_ended = Period.containing(now).previous()
    if period is not None:
        periods = [period]
    else:
        closed = _closed_until(registry)
        start = closed.next() if closed is not None else last_ended
        periods = []
        while start <= last_ended:
            periods.append(start)
            start = start.next()
    done = []
    for each in periods:
        close_period(registry, each, now=now)
        _save_closed(registry, each)
        done.append(str(each))
    return done


def includeme(config):
    registry = config.registry
    tasks = registry["tasks"]

    def close_actor(argument: str | None = None):
        # The argument is the scheduler's fire time, or a YYYY-MM from an operator.
        period = None
        if argument and len(argument) == 7:
            period = Period.parse(argument)
        try:
            closed = close_due_periods(registry, period=period)
        except PeriodNotReady as exc:
            log.warning("billing period not ready; the next run closes it",
                        extra={"reason": str(exc)})
            return
        log.info("billing periods closed", extra={"periods": closed})

    def payout_actor(_argument: str | None = None):
        payout_run(registry)

    tasks.actor(close_actor, name=CLOSE_JOB, time_limit_ms=3_600_000)
    tasks.actor(payout_actor, name=PAYOUT_JOB, time_limit_ms=3_600_000)
    schedule = schedule_for(registry)
    # Usage of a month's last hour is rolled up a few minutes after midnight.
    schedule.add(ScheduledJob(CLOSE_JOB, "15 0 1 * *", CLOSE_JOB,
                              "Close every ended month: invoices, revenue share, partner "
                              "revenue. The argument YYYY-MM closes that month only."))
    schedule.add(ScheduledJob(PAYOUT_JOB, "0 6 1 * *", PAYOUT_JOB,
                              "Pay out every partner balance at or above the minimum."))
    def collect_actor(invoice_id: int):
        collect_invoice(registry, invoice_id)

    def send_actor(payout_id: int):
        send_payout(registry, payout_id)

    tasks.actor(collect_actor, name=COLLECT_ACTOR)
    tasks.actor(send_actor, name=SEND_ACTOR)

    def sweep():
        sweep_payments(registry)
        sweep_payouts(registry)

    tasks.every("billing_sweep", SWEEP_INTERVAL_SECONDS,
                registry["leader_lock"].wrap("billing_sweep", sweep))
