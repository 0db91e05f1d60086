"""Cornice services of plans and subscriptions: the public plan list and the partner's plan.

``GET /api/plans`` lists the active self-serve plans without a credential.
A partner member reads the partner's subscription with ``billing:read`` and
changes it with ``billing:write``. An upgrade applies at once and a downgrade
at the start of the next calendar month (UTC), as :mod:`fkod.core.billing.plans`
describes.

Monthly prices and prorations are decimal strings with two places
(``"99.00"``); the overage price per request keeps the six places it is
stored with (``"0.001000"``).
"""

from __future__ import annotations

import sqlalchemy as sa
from cornice import Service
from marshmallow import fields

from fkod.core.api import AUTH_MEMBER, AUTH_NONE, Dumped, PageQuery, operation, paginate
from fkod.core.billing import plans as subscriptions
from fkod.core.billing.models import Plan, PlanChange
from fkod.core.billing.money import CURRENCY
from fkod.core.billing.periods import Period
from fkod.core.db import utcnow
from fkod.core.schemas import BodySchema, ResponseSchema, Text, Timestamp

public_plans = Service(name="public_plans", path="/api/plans",
                       description="Plans a partner can choose")
subscription = Service(name="partner_subscription", path="/api/partners/subscription",
                       description="The partner's plan and its scheduled change")
scheduled = Service(name="partner_subscription_scheduled_change",
                    path="/api/partners/subscription/scheduled-change",
                    description="The partner's scheduled plan change")

SERVICES = (public_plans, subscription, scheduled)

# Digits after the decimal point in responses: cents for prices, the column's
# scale for the overage price per request.
PRICE_PLACES = 2
OVERAGE_PLACES = 6


# Schemas ------------------------------------------------------------------------------


class PlanSchema(ResponseSchema):
    code = fields.String()
    name = fields.String()
    price_monthly = fields.Decimal(places=PRICE_PLACES, as_string=True, metadata={
        "description": "The monthly price, a decimal string with two places such as \"99.00\"."})
    currency = fields.String()
    requests_per_hour = fields.Integer(allow_none=True, metadata={
        "description": "null means unlimited"})
    requests_per_day = fields.Integer(allow_none=True, metadata={
        "description": "null means unlimited"})
    included_requests_monthly = fields.Integer(allow_none=True, metadata={
        "description": "Requests the price covers each month; null means unlimited."})
    overage_price_per_request = fields.Decimal(places=OVERAGE_PLACES, as_string=True, metadata={
        "description": "The price of each request beyond the included volume, a decimal "
                       "string with six places such as \"0.001000\"."})
    is_default = fields.Boolean()


class ScheduledChangeSchema(ResponseSchema):
    plan = fields.String(metadata={"description": "The code of the plan the partner moves to."})
    kind = fields.String(metadata={"enum": ["downgrade"]})
    effective_at = Timestamp()


class PeriodSchema(ResponseSchema):
    month = fields.String(metadata={"description": "YYYY-MM"})
    start = fields.Date()
    end = fields.Date(metadata={"description": "The last day of the month."})


class ChangeSchema(ResponseSchema):
    kind = fields.String(metadata={"enum": ["upgrade", "downgrade"]})
    status = fields.String(metadata={"enum": ["applied", "scheduled", "cancelled"]})
    from_plan = fields.String(allow_none=True)
    to_plan = fields.String()
    effective_at = Timestamp()
    proration = fields.Decimal(places=PRICE_PLACES, as_string=True, metadata={
        "description": "What an upgrade adds to this month's invoice; \"0.00\" otherwise."})
    currency = fields.String()


class SubscriptionSchema(ResponseSchema):
    plan = fields.Nested(PlanSchema, allow_none=True)
    scheduled_change = fields.Nested(ScheduledChangeSchema, allow_none=True)
    period = fields.Nested(PeriodSchema)


class SubscriptionChangeSchema(SubscriptionSchema):
    change = fields.Nested(ChangeSchema)


class ChangePlanBody(BodySchema):
    plan = Text(required=True, min_length=1, max_length=50, metadata={
        "description": "The code of an active self-serve plan, such as \"starter\"."})


# Shaping ------------------------------------------------------------------------------


def _plan_code(session, plan_id: int | None) -> str | None:
    return session.scalar(sa.select(Plan.code).where(Plan.id == plan_id)) if plan_id else None


def describe_subscription(request) -> dict:
    """Return the partner's plan, its scheduled change and the current billing period."""
    session = request.dbsession
    partner = request.partner
    pending = subscriptions.scheduled_change(session, partner.id)
    period = Period.containing(utcnow())
    return {
        "plan": subscriptions.current_plan(session, partner),
        "scheduled_change": None if pending is None else {
            "plan": _plan_code(session, pending.to_plan_id), "kind": pending.kind,
            "effective_at": pending.effective_at,
        },
        "period": {"month": str(period), "start": period.start, "end": period.end},
    }


def describe_change(request, change: PlanChange) -> dict:
    session = request.dbsession
    return {
        "kind": change.kind, "status": change.status,
        "from_plan": _plan_code(session, change.from_plan_id),
        "to_plan": _plan_code(session, change.to_plan_id),
        "effective_at": change.effective_at, "proration": change.proration,
        "currency": CURRENCY,
    }


def _with_change(request, change: PlanChange) -> Dumped:
    body = describe_subscription(request)
    body["change"] = describe_change(request, change)
    return Dumped(SubscriptionChangeSchema().dump(body))


# Operations ---------------------------------------------------------------------------


@operation(public_plans, "GET", summary="List the plans a partner can choose",
           auth=AUTH_NONE, query=PageQuery, response=PlanSchema, paginated=True)
def list_public_plans(request):
    select = sa.select(Plan).where(Plan.active.is_(True), Plan.self_serve.is_(True))
    return paginate(select, Plan.id, request.query, request.dbsession, descending=False)


@operation(subscription, "GET", summary="Get the partner's plan, scheduled change and period",
           auth=AUTH_MEMBER, permission="billing:read", response=SubscriptionSchema)
def get_subscription(request):
    return describe_subscription(request)


@operation(subscription, "PUT", summary="Move the partner to another self-serve plan: an "
                                        "upgrade at once, a downgrade next month",
           auth=AUTH_MEMBER, permission="billing:write", body=ChangePlanBody,
           response=SubscriptionChangeSchema, errors=((409, "plan_unchanged"),))
def change_subscription(request):
    change = subscriptions.change_plan(request, request.partner, request.validated["plan"])
    return _with_change(request, change)


@operation(scheduled, "DELETE", summary="Cancel the partner's scheduled plan change",
           auth=AUTH_MEMBER, permission="billing:write", response=SubscriptionChangeSchema,
           errors=((404, "not_found"),))
def cancel_scheduled_change(request):
    change = subscriptions.cancel_scheduled_change(request, request.partner)
    request.dbsession.flush()
    return _with_change(request, change)


def includeme(config):
    for service in SERVICES:
        config.add_cornice_service(service)
