"""Cornice service reporting the usage of one of a partner's API keys."""

from __future__ import annotations

import datetime as dt

import marshmallow
import sqlalchemy as sa
from cornice import Service
from marshmallow import fields, validate

from fkod.core.api import AUTH_MEMBER, operation
from fkod.core.auth.models import ApiKey
from fkod.core.db import utcnow
from fkod.core.errors import NotFound
from fkod.core.ids import parse_id
from fkod.core.metering.report import key_usage_summary, recent_errors
from fkod.core.schemas import PublicId, QuerySchema, ResponseSchema, Timestamp

key_usage = Service(name="partner_api_key_usage", path="/api/partners/api-keys/{id}/usage",
                    description="Usage of one API key")

MAX_DAYS = 90
DEFAULT_DAYS = 30
MAX_ERRORS = 100
DEFAULT_ERRORS = 20


def _whole_number(maximum: int, default: int) -> fields.Integer:
    return fields.Integer(
        load_default=default, strict=False, validate=validate.Range(min=1, max=maximum),
        error_messages={"invalid": f"Must be a whole number from 1 to {maximum}."},
    )


class KeyUsageQuery(QuerySchema):
    days = _whole_number(MAX_DAYS, DEFAULT_DAYS)
    limit = _whole_number(MAX_ERRORS, DEFAULT_ERRORS)

    @marshmallow.pre_load
    def _reject_non_digits(self, data, **kwargs):
        # marshmallow reads "1.0", " 5" and "+5" as integers; these parameters take digits only.
        errors = {}
        for name, maximum in (("days", MAX_DAYS), ("limit", MAX_ERRORS)):
            value = data.get(name)
            if isinstance(value, str) and not (value.isascii() and value.isdigit()
                                               and len(value) <= 6):
                errors[name] = [f"Must be a whole number from 1 to {maximum}."]
        if errors:
            raise marshmallow.ValidationError(errors)
        return data


class DailyUsageSchema(ResponseSchema):
    date = fields.Date(attribute="day", metadata={"description": "UTC day, YYYY-MM-DD"})
    request_count = fields.Integer()
    error_count = fields.Integer(metadata={"description": "calls with a status of 400 or more"})


class EndpointUsageSchema(ResponseSchema):
    method = fields.String()
    endpoint = fields.String(metadata={"description": "route pattern, such as /api/v1/users/{id}"})
    request_count = fields.Integer()
    error_count = fields.Integer()
    average_response_time_ms = fields.Float(allow_none=True)
    latency_p50_ms = fields.Float(allow_none=True, metadata={"description": "estimate"})
    latency_p95_ms = fields.Float(allow_none=True, metadata={"description": "estimate"})
    max_response_time_ms = fields.Integer()


class LatencySchema(ResponseSchema):
    average_ms = fields.Float(attribute="average_response_time_ms", allow_none=True)
    p50_ms = fields.Float(attribute="latency_p50_ms", allow_none=True, metadata={
        "description": "estimated from the histogram buckets, off by at most the width of "
                       "the bucket it falls in"})
    p95_ms = fields.Float(attribute="latency_p95_ms", allow_none=True, metadata={
        "description": "estimated like p50_ms"})
    max_ms = fields.Integer(attribute="max_response_time_ms")
    histogram = fields.Dict(attribute="latency_histogram", keys=fields.String(),
                            values=fields.Integer(), metadata={
                                "description": "calls per bucket, keyed by the bucket's upper "
                                               "bound in milliseconds or inf"})


class UsageErrorSchema(ResponseSchema):
    request_id = fields.String(allow_none=True)
    method = fields.String()
    endpoint = fields.String()
    status_code = fields.Integer()
    error_code = fields.String(allow_none=True)
    created_at = Timestamp()


class KeyUsageSchema(ResponseSchema):
    key_id = PublicId("key")
    mode = fields.String(metadata={"description": "the key's mode; only its calls are counted"})
    days = fields.Integer()
    since = Timestamp(metadata={"description": "start of the first day counted"})
    until = Timestamp(metadata={"description": "time of the report"})
    request_count = fields.Integer()
    error_count = fields.Integer()
    request_bytes = fields.Integer()
    response_bytes = fields.Integer()
    latency = fields.Nested(LatencySchema)
    by_day = fields.List(fields.Nested(DailyUsageSchema))
    by_endpoint = fields.List(fields.Nested(EndpointUsageSchema))
    by_status_class = fields.Dict(keys=fields.String(), values=fields.Integer())
    recent_errors = fields.List(fields.Nested(UsageErrorSchema), metadata={
        "description": "newest first, from the raw records of the period"})


@operation(key_usage, "GET", summary="Report an API key's calls: per day, endpoint and status "
           "class, latency, and recent errors", auth=AUTH_MEMBER, permission="api_keys:read",
           query=KeyUsageQuery, response=KeyUsageSchema, errors=((404, "not_found"),))
def get_key_usage(request):
    key_id = parse_id("key", request.matchdict["id"], noun="API key")
    key = request.dbsession.execute(
        sa.select(ApiKey.id, ApiKey.livemode)
        .where(ApiKey.id == key_id, ApiKey.partner_id == request.partner.id)
    ).one_or_none()
    if key is None:
        raise NotFound(f"No API key with id {request.matchdict['id']!r}.")

    days = request.query["days"]
    until = utcnow()
    since = dt.datetime.combine(until.date() - dt.timedelta(days=days - 1), dt.time())
    summary = key_usage_summary(request.dbsession, key.id, key.livemode, since, until)
    errors = recent_errors(request.dbsession, api_key_id=key.id, livemode=key.livemode,
                           since=since, until=until, limit=request.query["limit"])
    return {
        "key_id": key.id,
        "mode": summary.mode,
        "days": days,
        "since": since,
        "until": until,
        "request_count": summary.request_count,
        "error_count": summary.error_count,
        "request_bytes": summary.request_bytes,
        "response_bytes": summary.response_bytes,
        "latency": summary,
        "by_day": summary.by_day,
        "by_endpoint": summary.by_endpoint,
        "by_status_class": summary.by_status_class,
        "recent_errors": errors,
    }


def includeme(config):
    config.add_cornice_service(key_usage)
