"""Cornice services of a partner's rate limits: current windows and temporary boosts."""

from __future__ import annotations

from cornice import Service
from marshmallow import fields, validate

from fkod.core.api import AUTH_MEMBER, PageQuery, operation, paginate
from fkod.core.billing.models import RateLimitBoost
from fkod.core.ids import parse_id
from fkod.core.schemas import (
    BodySchema,
    PublicId,
    ResponseSchema,
    StrictInteger,
    Text,
    Timestamp,
    mode_field,
)
from fkod.partners import limits as services

partner_limits = Service(name="partner_limits", path="/api/partners/limits",
                         description="The partner's rate-limit windows")
boosts = Service(name="partner_limit_boosts", path="/api/partners/limits/boosts",
                 description="The partner's temporary rate-limit boosts")
boost = Service(name="partner_limit_boost", path="/api/partners/limits/boosts/{id}",
                description="One rate-limit boost")


class CreateBoostBody(BodySchema):
    extra_requests_per_hour = StrictInteger(required=True,
                                            validate=validate.Range(min=1, max=1_000_000_000))
    extra_requests_per_day = StrictInteger(allow_none=True,
                                           validate=validate.Range(min=1, max=1_000_000_000))
    duration_hours = StrictInteger(required=True,
                                   validate=validate.Range(min=1, max=services.MAX_BOOST_HOURS))
    mode = mode_field()
    reason = Text(max_length=500, allow_none=True)


class BoostSchema(ResponseSchema):
    id = PublicId("boost")
    mode = fields.Method("_mode")
    status = fields.Method("_status")
    extra_requests_per_hour = fields.Integer()
    extra_requests_per_day = fields.Integer()
    starts_at = Timestamp()
    ends_at = Timestamp()
    cancelled_at = Timestamp()
    reason = fields.String()
    created_by = PublicId("user", attribute="created_by_user_id")
    created_at = Timestamp()

    def _mode(self, row):
        return "live" if row.livemode else "test"

    def _status(self, row):
        return services.boost_status(row)


class LimitPlanSchema(ResponseSchema):
    code = fields.String()
    name = fields.String()
    requests_per_hour = fields.Integer()
    requests_per_day = fields.Integer()


class LimitWindowSchema(ResponseSchema):
    kind = fields.String(metadata={"description": "plan or endpoint"})
    name = fields.String(metadata={"description": "hour, day, or the route of an endpoint limit"})
    window_seconds = fields.Integer()
    limit = fields.Integer(metadata={"description": "Requests per window, boost included."})
    remaining = fields.Integer()
    reset_at = Timestamp(metadata={"description": "When the oldest counted requests leave "
                                                  "the window."})


class ModeLimitsSchema(ResponseSchema):
    mode = fields.String()
    boost = fields.Nested(BoostSchema, allow_none=True)
    windows = fields.List(fields.Nested(LimitWindowSchema))


class PartnerLimitsSchema(ResponseSchema):
    plan = fields.Nested(LimitPlanSchema, allow_none=True)
    modes = fields.List(fields.Nested(ModeLimitsSchema))


@operation(partner_limits, "GET", summary="Get the partner's rate-limit windows per mode",
           auth=AUTH_MEMBER, permission="billing:read", response=PartnerLimitsSchema,
           errors=((503, "rate_limiter_unavailable"),))
def get_limits(request):
    return services.current_limits(request, request.partner)


@operation(boosts, "POST", summary="Raise the plan's limits for 1 to 72 hours",
           auth=AUTH_MEMBER, permission="billing:write", body=CreateBoostBody,
           response=BoostSchema, status=201,
           errors=((400, "boost_above_plan_limit"), (403, "partner_not_verified"),
                   (409, "plan_unlimited"), (409, "boost_active")))
def create_boost(request):
    return services.create_boost(request, request.partner, dict(request.validated))


@operation(boosts, "GET", summary="List the partner's boosts, newest first",
           auth=AUTH_MEMBER, permission="billing:read", query=PageQuery,
           response=BoostSchema, paginated=True)
def list_boosts(request):
    return paginate(services.boosts_query(request.partner), RateLimitBoost.id, request.query,
                    request.dbsession)


@operation(boost, "DELETE", summary="Cancel an active boost", auth=AUTH_MEMBER,
           permission="billing:write", response=BoostSchema,
           errors=((404, "not_found"), (409, "boost_not_active")))
def cancel_boost(request):
    boost_id = parse_id("boost", request.matchdict["id"], noun="rate limit boost")
    return services.cancel_boost(request, request.partner, boost_id)


def includeme(config):
    for service in (partner_limits, boosts, boost):
        config.add_cornice_service(service)
