"""Cornice services of a partner's dashboard figures and its analytics over time."""

from __future__ import annotations

import datetime as dt
import re

import marshmallow
from cornice import Service
from marshmallow import fields, validate

from fkod.core.api import AUTH_MEMBER, operation
from fkod.core.db import utcnow
from fkod.core.schemas import PublicId, QuerySchema, ResponseSchema, Text, Timestamp
from fkod.partners import dashboard as services

partner_dashboard = Service(name="partner_dashboard", path="/api/partners/dashboard",
                            description="The figures a partner checks first")
partner_analytics = Service(name="partner_analytics", path="/api/partners/analytics",
                            description="A partner's usage, installs and revenue over time")

_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
FIRST_DAY = dt.date(2000, 1, 1)
LAST_DAY = dt.date(2999, 12, 31)


def _mode_field() -> Text:
    return Text(validate=validate.OneOf(services.MODES), load_default="live", metadata={
        "description": "live or test: the mode whose calls are counted (live by default)"})


class Day(fields.Field):
    """A UTC calendar day written YYYY-MM-DD, from 2000-01-01 to 2999-12-31."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str) or not _DAY.match(value):
            raise marshmallow.ValidationError("Must be a date written YYYY-MM-DD.")
        try:
            day = dt.date.fromisoformat(value)
        except ValueError:
            raise marshmallow.ValidationError("Must be a date that exists, such as "
                                              "2026-11-30.") from None
        if not FIRST_DAY <= day <= LAST_DAY:
            raise marshmallow.ValidationError("Must be a date from 2000-01-01 to 2999-12-31.")
        return day


class MetricList(fields.Field):
    """Metric names separated by commas, such as ``calls,revenue``."""

    def _deserialize(self, value, attr, data, **kwargs):
        names = [name.strip() for name in value.split(",")] if isinstance(value, str) else []
        if not names or "" in names:
            raise marshmallow.ValidationError(
                "Must be metric names separated by commas, from: "
                + ", ".join(services.METRICS) + ".")
        unknown = [name for name in names if name not in services.METRICS]
        if unknown:
            raise marshmallow.ValidationError(
                f"Invalid metric {unknown[0]!r}. Use one or more of: "
                + ", ".join(services.METRICS) + ".")
        return tuple(name for name in services.METRICS if name in names)


class DashboardQuery(QuerySchema):
    mode = _mode_field()


class AnalyticsQuery(QuerySchema):
    start = Day(data_key="from", load_default=None, metadata={
        "description": "first day, YYYY-MM-DD; by default 29 days before to by day, or the "
                       "first day of the month 11 months before to by month"})
    end = Day(data_key="to", load_default=None, metadata={
        "description": "last day, included, YYYY-MM-DD; today (UTC) by default"})
    granularity = Text(validate=validate.OneOf(services.GRANULARITIES), load_default="day",
                       metadata={"description": "day (at most 366 days) or month (at most 36 "
                                                "months, widened to whole months)"})
    metric = MetricList(load_default=services.METRICS, metadata={
        "description": "the series to return, separated by commas: "
                       + ", ".join(services.METRICS) + "; all by default"})
    mode = _mode_field()

    @marshmallow.post_load
    def _resolve_range(self, data, **kwargs):
        start, end = services.resolve_range(data["granularity"], data["start"], data["end"],
                                            utcnow().date())
        problem = services.range_problem(data["granularity"], start, end)
        if problem is not None:
            raise marshmallow.ValidationError({"from": [problem]})
        return {**data, "start": start, "end": end}


# Responses ---------------------------------------------------------------------------


def _money(**kwargs) -> fields.Decimal:
    return fields.Decimal(places=2, as_string=True, **kwargs)


class PeriodSchema(ResponseSchema):
    start = fields.Date()
    end = fields.Date(metadata={"description": "last day of the month, included"})


class CallsSchema(ResponseSchema):
    count = fields.Integer()
    error_count = fields.Integer(metadata={"description": "calls with a status of 400 or more"})
    error_rate = fields.Float(allow_none=True, metadata={
        "description": "error_count / count, to four places; null without calls"})


class WindowSchema(ResponseSchema):
    name = fields.String(metadata={"description": "hour or day"})
    window_seconds = fields.Integer()
    limit = fields.Integer(metadata={"description": "requests per window, boost included"})
    remaining = fields.Integer()
    reset_at = Timestamp()


class QuotaSchema(ResponseSchema):
    plan = fields.String(allow_none=True, metadata={"description": "the plan's code"})
    included_requests = fields.Integer(allow_none=True, metadata={
        "description": "live calls the plan includes per month; null when unlimited"})
    used = fields.Integer(metadata={"description": "live calls this month; only live calls "
                                                   "are billed, whatever the mode"})
    remaining = fields.Integer(allow_none=True, metadata={
        "description": "included calls left this month; null when unlimited"})
    overage_requests = fields.Integer(allow_none=True, metadata={
        "description": "calls beyond the included volume, billed per call"})
    windows = fields.List(fields.Nested(WindowSchema), allow_none=True, metadata={
        "description": "the plan's rate-limit windows in the mode; null while the rate "
                       "limiter cannot be reached"})


class RevenuePeriodSchema(ResponseSchema):
    period_start = fields.Date()
    period_end = fields.Date()
    gross = _money(attribute="revenue")
    commission = _money(attribute="commission_amount")
    partner_share = _money()
    status = fields.String(metadata={"description": "pending or paid"})


class RevenueSchema(ResponseSchema):
    currency = fields.String()
    current_period = fields.Nested(RevenuePeriodSchema, allow_none=True, metadata={
        "description": "this month's revenue once it is recorded"})
    last_closed_period = fields.Nested(RevenuePeriodSchema, allow_none=True, metadata={
        "description": "the latest revenue of an earlier month"})


class BalanceSchema(ResponseSchema):
    amount = _money()
    currency = fields.String()


class PayoutSchema(ResponseSchema):
    id = PublicId("po")
    amount = _money()
    currency = fields.String()
    status = fields.String(metadata={"description": "pending, on_hold or processing"})
    source = fields.String(metadata={"description": "request or run"})
    created_at = Timestamp()


class NextPayoutSchema(ResponseSchema):
    payout = fields.Nested(PayoutSchema, allow_none=True, metadata={
        "description": "the oldest payout not yet paid or failed"})
    next_run_on = fields.Date(metadata={"description": "day of the next monthly payout run"})
    minimum = _money(metadata={"description": "smallest balance the run pays out"})
    balance_reaches_minimum = fields.Boolean()
    currency = fields.String()


class SupportSchema(ResponseSchema):
    open_tickets = fields.Integer(metadata={"description": "tickets not resolved or closed"})


class FailingWebhookSchema(ResponseSchema):
    id = PublicId("whk")
    url = fields.String()
    status = fields.String()
    failing_since = Timestamp(metadata={"description": "start of the current run of failed "
                                                       "attempts"})
    last_success_at = Timestamp()
    disabled_reason = fields.String()


class WebhooksSchema(ResponseSchema):
    failing_count = fields.Integer(metadata={
        "description": "endpoints in the mode that are failing or disabled by the platform"})
    failing = fields.List(fields.Nested(FailingWebhookSchema), metadata={
        "description": f"up to {services.FAILING_WEBHOOKS_SHOWN}, the longest failing first"})


class InstallsSchema(ResponseSchema):
    active = fields.Integer(metadata={"description": "active installs of the partner's "
                                                     "integrations"})


class DashboardSchema(ResponseSchema):
    mode = fields.String()
    generated_at = Timestamp()
    period = fields.Nested(PeriodSchema, metadata={"description": "this UTC calendar month"})
    calls = fields.Nested(CallsSchema)
    quota = fields.Nested(QuotaSchema)
    revenue = fields.Nested(RevenueSchema)
    balance = fields.Nested(BalanceSchema)
    next_payout = fields.Nested(NextPayoutSchema)
    support = fields.Nested(SupportSchema)
    webhooks = fields.Nested(WebhooksSchema)
    installs = fields.Nested(InstallsSchema)


class CountPointSchema(ResponseSchema):
    period = fields.Date(metadata={"description": "first day of the bucket"})
    value = fields.Integer()


class RevenuePointSchema(ResponseSchema):
    period = fields.Date(metadata={"description": "first day of the bucket"})
    gross = _money()
    partner_share = _money()


class SeriesSchema(ResponseSchema):
    calls = fields.List(fields.Nested(CountPointSchema))
    errors = fields.List(fields.Nested(CountPointSchema))
    installs = fields.List(fields.Nested(CountPointSchema), metadata={
        "description": "new installs of the partner's integrations"})
    uninstalls = fields.List(fields.Nested(CountPointSchema))
    revenue = fields.List(fields.Nested(RevenuePointSchema), metadata={
        "description": "per month from partner_revenue; by day, on the first day of each "
                       "month in the range, or on from for the month it falls in"})


class AnalyticsSchema(ResponseSchema):
    mode = fields.String()
    granularity = fields.String()
    start = fields.Date(attribute="from", data_key="from", metadata={"description": "first day"})
    end = fields.Date(attribute="to", data_key="to", metadata={"description": "last day, "
                                                                             "included"})
    currency = fields.String()
    series = fields.Nested(SeriesSchema, metadata={
        "description": "the requested metrics, one entry per bucket, oldest first"})


@operation(partner_dashboard, "GET", summary="Get this month's calls, quota, revenue, balance, "
           "next payout, open tickets, failing webhooks and active installs", auth=AUTH_MEMBER,
           permission="billing:read", query=DashboardQuery, response=DashboardSchema)
def get_dashboard(request):
    return services.dashboard(request, request.partner, request.query["mode"])


@operation(partner_analytics, "GET", summary="Get calls, errors, installs, uninstalls and "
           "revenue per day or month", auth=AUTH_MEMBER, permission="billing:read",
           query=AnalyticsQuery, response=AnalyticsSchema)
def get_analytics(request):
    query = request.query
    return services.analytics(request.dbsession, request.partner.id, mode=query["mode"],
                              granularity=query["granularity"], start=query["start"],
                              end=query["end"], metrics=query["metric"])


def includeme(config):
    config.add_cornice_service(partner_dashboard)
    config.add_cornice_service(partner_analytics)
