"""The figures of a partner's dashboard, and its usage, installs and revenue over time.

Calls are read through :mod:`fkod.core.metering.report`, so they come from the
hourly roll-ups and, for the hours not rolled up yet, from the raw usage rows.
They are counted in one mode, live unless the caller asks for test. Money
comes from ``partner_revenue``, the ledger and payouts, which hold live money
only, so the mode never changes a money figure. Every day, month and bucket
is a UTC calendar day or month.
"""

from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal

import sqlalchemy as sa

from fkod.core.auth.models import Partner
from fkod.core.billing.ledger import partner_balance
from fkod.core.billing.models import PartnerRevenue, Payout
from fkod.core.billing.money import CURRENCY, ZERO
from fkod.core.billing.periods import Period
from fkod.core.db import utcnow
from fkod.core.errors import ServiceUnavailable
from fkod.core.metering.report import partner_usage_summary
from fkod.core.metering.rollup import hour_bucket, parse_hour
from fkod.core.webhooks.models import Webhook
from fkod.marketplace.models import Integration, IntegrationInstall
from fkod.partners.limits import current_limits, partner_plan
from fkod.partners.models import SupportTicket

log = logging.getLogger(__name__)

MODES = ("live", "test")
METRICS = ("calls", "errors", "installs", "uninstalls", "revenue")
GRANULARITIES = ("day", "month")
MAX_DAYS = 366
MAX_MONTHS = 36
DEFAULT_DAYS = 30
DEFAULT_MONTHS = 12
FAILING_WEBHOOKS_SHOWN = 5
# Tickets in these statuses need nothing more from anyone, so they are not counted as open.
SETTLED_TICKET_STATUSES = ("resolved", "closed")
# Payouts not yet paid or failed.
OPEN_PAYOUT_STATUSES = ("pending", "on_hold", "processing")
ONE_DAY = dt.timedelta(days=1)


def payout_minimum(settings) -> Decimal:
    return Decimal(str(settings["fkod.billing.payout_minimum"]))


def error_rate(calls: int, errors: int) -> float | None:
    """Return errors / calls rounded to four places, or None without calls."""
    return round(errors / calls, 4) if calls else None


# The dashboard -----------------------------------------------------------------------


def dashboard(request, partner: Partner, mode: str) -> dict:
    """Return the dashboard figures of ``partner``. Calls and webhooks are those of ``mode``."""
    session = request.dbsession
    now = utcnow()
    period = Period.containing(now)
    # Both modes come from the same queries, and the live calls also measure the quota.
    usage = partner_usage_summary(session, partner.id, period.start_at, period.end_at)
    calls = usage[mode]
    balance = partner_balance(session, partner.id)
    return {
        "mode": mode,
        "generated_at": now,
        "period": {"start": period.start, "end": period.end},
        "calls": {
            "count": calls.request_count,
            "error_count": calls.error_count,
            "error_rate": error_rate(calls.request_count, calls.error_count),
        },
        "quota": _quota(request, partner, usage["live"].request_count, mode),
        "revenue": _revenue(session, partner.id, period),
        "balance": {"amount": balance, "currency": CURRENCY},
        "next_payout": _next_payout(session, partner.id, period, balance,
                                    payout_minimum(request.registry.settings)),
        "support": {"open_tickets": _open_tickets(session, partner.id)},
        "webhooks": _failing_webhooks(session, partner.id, mode == "live"),
        "installs": {"active": _active_installs(session, partner.id)},
    }


def _quota(request, partner: Partner, live_calls: int, mode: str) -> dict:
    """Return the monthly volume left and the plan's rate-limit windows in ``mode``.

    Only live calls are billed, so only they use up the monthly volume,
    whatever mode the dashboard shows.
    """
    plan = partner_plan(request, partner)
    included = plan.included_requests_monthly if plan is not None else None
    try:
        limits = current_limits(request, partner)
    except ServiceUnavailable as exc:
        log.warning("rate limiter unavailable, so the dashboard lists no windows",
                    extra={"partner_id": partner.id, "error": str(exc)[:200]})
        windows = None
    else:
        mode_limits = next(item for item in limits["modes"] if item["mode"] == mode)
        windows = [window for window in mode_limits["windows"] if window["kind"] == "plan"]
    return {
        "plan": plan.code if plan is not None else None,
        "included_requests": included,
        "used": live_calls,
        "remaining": None if included is None else max(included - live_calls, 0),
        "overage_requests": None if included is None else max(live_calls - included, 0),
        "windows": windows,
    }


def _revenue(session, partner_id: int, period: Period) -> dict:
    """Return this month's partner_revenue row and the latest one of an earlier month."""
    rows = session.scalars(
        sa.select(PartnerRevenue)
        .where(PartnerRevenue.partner_id == partner_id,
               PartnerRevenue.period_start <= period.start)
        .order_by(PartnerRevenue.period_start.desc())
        .limit(2)
    ).all()
    current = next((row for row in rows if row.period_start == period.start), None)
    closed = next((row for row in rows if row.period_start < period.start), None)
    return {"currency": CURRENCY, "current_period": current, "last_closed_period": closed}


def _next_payout(session, partner_id: int, period: Period, balance: Decimal,
                 minimum: Decimal) -> dict:
    """Return the oldest payout not yet paid or failed, and the next monthly run."""
    payout = session.scalars(
        sa.select(Payout)
        .where(Payout.partner_id == partner_id, Payout.status.in_(OPEN_PAYOUT_STATUSES))
        .order_by(Payout.id)
        .limit(1)
    ).first()
    return {
        "payout": payout,
        "next_run_on": period.next().start,
        "minimum": minimum,
        "balance_reaches_minimum": balance >= minimum,
        "currency": CURRENCY,
    }


def _open_tickets(session, partner_id: int) -> int:
    return session.scalar(
        sa.select(sa.func.count()).select_from(SupportTicket)
        .where(SupportTicket.partner_id == partner_id,
               SupportTicket.status.not_in(SETTLED_TICKET_STATUSES)))


def _failing_webhooks(session, partner_id: int, livemode: bool) -> dict:
    """Count the endpoints whose last attempts failed or that the platform disabled.

    The list contains the first few, the longest failing first.
    """
    failing = (
        Webhook.partner_id == partner_id,
        Webhook.livemode.is_(livemode),
        Webhook.status != "deleted",
        sa.or_(Webhook.failing_since.is_not(None), Webhook.status == "disabled"),
    )
    count = session.scalar(sa.select(sa.func.count()).select_from(Webhook).where(*failing))
    listed = session.scalars(
        sa.select(Webhook).where(*failing)
        .order_by(sa.func.coalesce(Webhook.failing_since, Webhook.disabled_at,
                                   Webhook.created_at), Webhook.id)
        .limit(FAILING_WEBHOOKS_SHOWN)
    ).all()
    return {"failing_count": count, "failing": listed}


def _active_installs(session, partner_id: int) -> int:
    return session.scalar(
        sa.select(sa.func.count()).select_from(IntegrationInstall)
        .join(Integration, Integration.id == IntegrationInstall.integration_id)
        .where(Integration.partner_id == partner_id, IntegrationInstall.status == "active"))


# Analytics ---------------------------------------------------------------------------


def month_start(day: dt.date) -> dt.date:
    return day.replace(day=1)


def months_between(first: dt.date, last: dt.date) -> int:
    """Return how many calendar months the days ``first`` to ``last`` touch."""
    return (last.year - first.year) * 12 + last.month - first.month + 1


def resolve_range(granularity: str, start: dt.date | None, end: dt.date | None,
                  today: dt.date) -> tuple[dt.date, dt.date]:
    """Fill in a missing ``from`` or ``to`` and widen a month range to whole months.

    Without ``to`` the range ends today. Without ``from`` it covers the last
    30 days by day, or the last 12 months by month.
    """
    end = end or today
    if start is None:
        if granularity == "day":
            start = end - (DEFAULT_DAYS - 1) * ONE_DAY
        else:
            first = Period.containing(end)
            for _ in range(DEFAULT_MONTHS - 1):
                first = first.previous()
            start = first.start
    if granularity == "month":
        start, end = month_start(start), Period.containing(end).end
    return start, end


def range_problem(granularity: str, start: dt.date, end: dt.date) -> str | None:
    """Return the rule a resolved range breaks, or None."""
    if start > end:
        return "must be on or before to"
    if granularity == "day" and (end - start).days + 1 > MAX_DAYS:
        return f"the range can span at most {MAX_DAYS} days by day"
    if granularity == "month" and months_between(start, end) > MAX_MONTHS:
        return f"the range can span at most {MAX_MONTHS} months by month"
    return None


def _buckets(granularity: str, start: dt.date, end: dt.date) -> list[dt.date]:
    if granularity == "day":
        return [start + number * ONE_DAY for number in range((end - start).days + 1)]
    months = [Period.containing(start)]
    while len(months) < months_between(start, end):
        months.append(months[-1].next())
    return [month.start for month in months]


def analytics(session, partner_id: int, *, mode: str, granularity: str, start: dt.date,
              end: dt.date, metrics: tuple[str, ...]) -> dict:
    """Return the series of ``metrics`` over the days ``start`` to ``end``, one entry per bucket.

    A bucket is a day or a month, named by its first day. Revenue is kept per
    month, so with days it shows on the first day of each month that lies in
    the range, or on ``start`` for the month ``start`` falls in.
    """
    buckets = _buckets(granularity, start, end)
    bucket_of = (lambda day: day) if granularity == "day" else month_start
    since = dt.datetime.combine(start, dt.time())
    until = dt.datetime.combine(end + ONE_DAY, dt.time())
    series = {}

    if "calls" in metrics or "errors" in metrics:
        # NOTE: The summary also aggregates endpoints and latency, which are not used here.
        # Over 36 months that is extra work; a report function of daily counts would avoid it.
        calls = dict.fromkeys(buckets, 0)
        errors = dict.fromkeys(buckets, 0)
        usage = partner_usage_summary(session, partner_id, since, until)[mode]
        for day in usage.by_day:
            calls[bucket_of(day.day)] += day.request_count
            errors[bucket_of(day.day)] += day.error_count
        if "calls" in metrics:
            series["calls"] = _counts(calls)
        if "errors" in metrics:
            series["errors"] = _counts(errors)

    for metric, column in (("installs", IntegrationInstall.installed_at),
                           ("uninstalls", IntegrationInstall.uninstalled_at)):
        if metric in metrics:
            counts = dict.fromkeys(buckets, 0)
            for hour, count in _installs_per_hour(session, partner_id, column, since, until):
                counts[bucket_of(hour.date())] += count
            series[metric] = _counts(counts)

    if "revenue" in metrics:
        series["revenue"] = _revenue_series(session, partner_id, buckets, bucket_of, start, end)

    return {"mode": mode, "granularity": granularity, "from": start, "to": end,
            "currency": CURRENCY, "series": series}


def _counts(values: dict[dt.date, int]) -> list[dict]:
    return [{"period": bucket, "value": value} for bucket, value in values.items()]


def _installs_per_hour(session, partner_id: int, column, since: dt.datetime,
                       until: dt.datetime) -> list[tuple[dt.datetime, int]]:
    """Count the partner's installs whose ``column`` falls in each hour of [since, until)."""
    hour = hour_bucket(column, session.get_bind().dialect.name).label("hour")
    rows = session.execute(
        sa.select(hour, sa.func.count())
        .select_from(IntegrationInstall)
        .join(Integration, Integration.id == IntegrationInstall.integration_id)
        .where(Integration.partner_id == partner_id, column >= since, column < until)
        .group_by(hour)
    )
    return [(parse_hour(value), int(count)) for value, count in rows]


def _revenue_series(session, partner_id: int, buckets: list[dt.date], bucket_of,
                    start: dt.date, end: dt.date) -> list[dict]:
    totals = {bucket: [ZERO, ZERO] for bucket in buckets}
    rows = session.execute(
        sa.select(PartnerRevenue.period_start, PartnerRevenue.revenue,
                  PartnerRevenue.partner_share)
        .where(PartnerRevenue.partner_id == partner_id,
               PartnerRevenue.period_start >= month_start(start),
               PartnerRevenue.period_start <= end)
    )
    for period_start, gross, share in rows:
        bucket = totals[bucket_of(max(period_start, start))]
        bucket[0] += gross
        bucket[1] += share
    return [{"period": bucket, "gross": gross, "partner_share": share}
            for bucket, (gross, share) in totals.items()]
