"""Request and response schemas of the partner API."""

from __future__ import annotations

import datetime as dt
import re

import marshmallow
from marshmallow import fields, validate

from fkod.core import versions
from fkod.core.api import PageQuery
from fkod.core.auth.passwords import MAX_LENGTH as PASSWORD_MAX
from fkod.core.auth.passwords import MIN_LENGTH as PASSWORD_MIN
from fkod.core.schemas import (
    BodySchema,
    PublicId,
    ResponseSchema,
    StrictInteger,
    Text,
    Timestamp,
    mode_field,
)
from fkod.core.webhooks.catalog import EVENT_PATTERN
from fkod.core.webhooks.urls import UnsafeUrl, validate_link_url

PARTNER_CATEGORIES = (
    "education", "content", "assessment", "analytics", "hr", "communication",
    "productivity", "other",
)


class Email(Text):
    """An email address, stored lower-cased."""

    def __init__(self, **kwargs):
        super().__init__(max_length=255, validate=[validate.Email(error="Not a valid email address.")],
                         **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        return super()._deserialize(value, attr, data, **kwargs).lower()


class LinkUrl(Text):
    """An http(s) link shown to people: logo, website, documentation."""

    def __init__(self, **kwargs):
        super().__init__(max_length=kwargs.pop("max_length", 500), **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            return validate_link_url(text)
        except UnsafeUrl as exc:
            raise marshmallow.ValidationError(exc.message) from None


class AddressSchema(BodySchema):
    line1 = Text(required=True, max_length=200)
    line2 = Text(max_length=200)
    city = Text(required=True, max_length=100)
    region = Text(max_length=100)
    postal_code = Text(max_length=20)
    country = Text(required=True, validate=validate.Regexp(
        r"^[A-Z]{2}$", error="Must be an ISO 3166-1 alpha-2 country code such as US."))


class PartnerProfileFields(BodySchema):
    """The partner columns a partner may set."""

    company_name = Text(min_length=1, max_length=255)
    company_website = LinkUrl(max_length=255, allow_none=True)
    company_logo_url = LinkUrl(max_length=500, allow_none=True)
    description = Text(max_length=5000, allow_none=True)
    category = Text(validate=validate.OneOf(PARTNER_CATEGORIES), allow_none=True)
    contact_email = Email(allow_none=True)
    contact_phone = Text(max_length=20, allow_none=True, validate=validate.Regexp(
        r"^\+?[0-9 ()\-.]{4,20}$", error="Must be a phone number of digits, spaces and + ( ) - ."))
    address = fields.Nested(AddressSchema, allow_none=True)


class RegisterPartnerBody(PartnerProfileFields):
    company_name = Text(required=True, min_length=1, max_length=255)
    email = Email(required=True)
    password = Text(required=True, strip=False, min_length=PASSWORD_MIN, max_length=PASSWORD_MAX)
    name = Text(max_length=255)


class UpdatePartnerBody(PartnerProfileFields):
    @marshmallow.validates_schema
    def _not_empty(self, data, **kwargs):
        if not data:
            raise marshmallow.ValidationError("Give at least one field to change.")


class PlanRefSchema(ResponseSchema):
    code = fields.String()
    name = fields.String()


class PartnerSchema(ResponseSchema):
    id = PublicId("partner")
    slug = fields.String()
    company_name = fields.String()
    company_website = fields.String()
    company_logo_url = fields.String()
    description = fields.String()
    category = fields.String()
    status = fields.String()
    verification_status = fields.String()
    contact_email = fields.String()
    contact_phone = fields.String()
    address = fields.Dict()
    plan = fields.Nested(PlanRefSchema, allow_none=True)
    created_at = Timestamp()
    updated_at = Timestamp()


class UserRefSchema(ResponseSchema):
    id = PublicId("user")
    email = fields.String()
    name = fields.String()


class MembershipSchema(ResponseSchema):
    role = fields.String()
    user = fields.Nested(UserRefSchema)


class RegisteredSchema(ResponseSchema):
    partner = fields.Nested(PartnerSchema)
    user = fields.Nested(UserRefSchema)


class PartnerMeSchema(PartnerSchema):
    membership = fields.Nested(MembershipSchema)


# API keys ---------------------------------------------------------------------


def _scope_list(**kwargs):
    return fields.List(Text(max_length=64), validate=validate.Length(min=1, max=50), **kwargs)


class ApiKeyFields(BodySchema):
    """Fields a partner may set on a key, on creation or later."""

    key_name = Text(min_length=1, max_length=255)
    scopes = _scope_list()
    expires_at = fields.AwareDateTime(default_timezone=None, allow_none=True, format="iso",
                                      metadata={"description": "ISO 8601 with a time zone"})
    rate_limit = StrictInteger(allow_none=True, validate=validate.Range(min=1, max=10_000_000),
                               metadata={"description": "requests per rate_limit_window; "
                                                        "null leaves the plan's limits alone"})
    rate_limit_window = StrictInteger(allow_none=True,
                                      validate=validate.Range(min=1, max=86400 * 31),
                                      metadata={"description": "seconds"})
    allowed_ips = fields.List(Text(max_length=64), allow_none=True,
                              metadata={"description": "CIDR ranges; empty allows any address"})
    api_version = Text(validate=validate.OneOf(versions.VERSIONS), metadata={
        "description": "the dated API version the key's calls use without an FKOD-Version "
                       "header; the newest when the key is created"})
    integration_id = PublicId("int", allow_none=True, metadata={
        "description": "one of the partner's integrations; the key's live calls earn that "
                       "integration's price_per_call. null unlinks the key"})


class CreateApiKeyBody(ApiKeyFields):
    key_name = Text(required=True, min_length=1, max_length=255)
    scopes = _scope_list(required=True)
    mode = mode_field()


class UpdateApiKeyBody(ApiKeyFields):
    @marshmallow.validates_schema
    def _not_empty(self, data, **kwargs):
        if not data:
            raise marshmallow.ValidationError("Give at least one field to change.")


class RotateApiKeyBody(BodySchema):
    grace_period_seconds = StrictInteger(
        load_default=86400, validate=validate.Range(min=0, max=7 * 86400),
        metadata={"description": "how long the current secret keeps working, 0 to 604800"})


class TestApiKeyBody(BodySchema):
    key = Text(max_length=200, strip=False,
               metadata={"description": "a secret to check against this key"})


class SetScopesBody(BodySchema):
    scopes = _scope_list(required=True)


class ApiKeySchema(ResponseSchema):
    id = PublicId("key")
    key_name = fields.String()
    key_prefix = fields.String()
    scopes = fields.List(fields.String())
    mode = fields.String()
    status = fields.String()
    rate_limit = fields.Integer()
    rate_limit_window = fields.Integer()
    allowed_ips = fields.List(fields.String())
    api_version = fields.String()
    integration_id = PublicId("int", metadata={
        "description": "the integration the key's calls are made for; null when none"})
    previous_key_prefix = fields.String(metadata={
        "description": "prefix of the secret replaced by the last rotation"})
    previous_key_expires_at = Timestamp(metadata={
        "description": "until when the replaced secret keeps working"})
    last_used = Timestamp()
    revoked_at = Timestamp()
    created_at = Timestamp()
    updated_at = Timestamp()
    expires_at = Timestamp()


class RateLimitWindowSchema(ResponseSchema):
    window = fields.String()
    limit = fields.Integer()
    window_seconds = fields.Integer()
    remaining = fields.Integer(allow_none=True)
    reset_at = fields.Integer(allow_none=True)


class ApiKeyTestSchema(ResponseSchema):
    id = PublicId("key")
    state = fields.String(metadata={"description": "active, revoked or expired"})
    mode = fields.String()
    scopes = fields.List(fields.String())
    secret_matches = fields.Boolean(allow_none=True)
    plan = fields.String(allow_none=True)
    rate_limits = fields.List(fields.Nested(RateLimitWindowSchema))


class ScopeGrantSchema(ResponseSchema):
    name = fields.String()
    description = fields.String()
    granted = fields.Boolean()


class CreatedApiKeySchema(ApiKeySchema):
    key = fields.String(metadata={"description": "The whole key; shown only in this response."})


# Webhooks ---------------------------------------------------------------------


# Path and query ids of webhook endpoints and events. Row ids start at 1 and fit
# an INTEGER column, and the API never writes an id with leading zeros.
_WEBHOOK_ID = re.compile(r"whk_([1-9][0-9]{0,9})")
_EVENT_ID = re.compile(r"evt_[0-9A-Za-z]{1,36}")
_MAX_ROW_ID = 2**31 - 1

DELIVERY_STATUSES = ("pending", "delivering", "succeeded", "failed")
PARTNER_SETTABLE_STATUSES = ("active", "paused")
MAX_OVERLAP_SECONDS = 7 * 86400
# Shown in place of each custom header value to members who may not see it.
HEADER_VALUE_MASK = "****"


def parse_webhook_id(value) -> int | None:
    """Return the row id of a ``whk_<number>`` id, or None when ``value`` is not one."""
    match = _WEBHOOK_ID.fullmatch(value) if isinstance(value, str) else None
    if match is None or int(match.group(1)) > _MAX_ROW_ID:
        return None
    return int(match.group(1))


def is_event_id(value) -> bool:
    """Check whether ``value`` has the form of an event id (``evt_`` and letters or digits)."""
    return isinstance(value, str) and _EVENT_ID.fullmatch(value) is not None


class WebhookId(fields.Field):
    """A ``whk_<number>`` id, loaded to its row id."""

    def _deserialize(self, value, attr, data, **kwargs):
        number = parse_webhook_id(value)
        if number is None:
            raise marshmallow.ValidationError("Must be a webhook id of the form whk_<number>.")
        return number


class UtcTime(fields.AwareDateTime):
    """An ISO 8601 time with a time zone, loaded as naive UTC like the TIMESTAMP columns."""

    def __init__(self, **kwargs):
        kwargs.setdefault("metadata", {"description": "ISO 8601 with a time zone, such as "
                                                      "2026-01-31T12:00:00Z"})
        kwargs.setdefault("error_messages", {
            "invalid": "Not a valid time. Use ISO 8601 with a time zone, such as "
                       "2026-01-31T12:00:00Z.",
            "invalid_awareness": "Give a time zone, such as Z or +02:00, after the time.",
        })
        super().__init__(format="iso", default_timezone=None, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        aware = super()._deserialize(value, attr, data, **kwargs)
        try:
            return aware.astimezone(dt.UTC).replace(tzinfo=None)
        except OverflowError:
            raise marshmallow.ValidationError("The time is out of range.") from None


def _event_type_list(**kwargs):
    return fields.List(Text(max_length=100), validate=validate.Length(min=1, max=50), **kwargs)


def _custom_headers(**kwargs):
    return fields.Dict(keys=Text(max_length=100), values=Text(max_length=1000, strip=False),
                       validate=validate.Length(max=20), **kwargs)


def _retry_count(**kwargs):
    return StrictInteger(validate=validate.Range(min=0, max=10), metadata={
        "description": "retries after the first attempt, 0 to 10"}, **kwargs)


def _retry_delay(**kwargs):
    return StrictInteger(validate=validate.Range(min=0, max=86400), metadata={
        "description": "seconds before the first retry, 0 to 86400; later retries back off "
                       "exponentially"}, **kwargs)


class CreateWebhookBody(BodySchema):
    url = Text(required=True, min_length=1, max_length=500)
    event_types = _event_type_list()
    event_type = Text(max_length=100)
    mode = mode_field()
    description = Text(max_length=500, allow_none=True)
    headers = _custom_headers()
    retry_count = _retry_count(load_default=5)
    retry_delay = _retry_delay(load_default=300)

    @marshmallow.validates_schema
    def _one_way_of_naming_event_types(self, data, **kwargs):
        if "event_types" in data and "event_type" in data:
            raise marshmallow.ValidationError(
                "Give either event_types or event_type, not both.", "event_type")
        if "event_types" not in data and "event_type" not in data:
            raise marshmallow.ValidationError(
                "Give event_types (a list) or event_type (one name or pattern).", "event_types")


class UpdateWebhookBody(BodySchema):
    """The fields of an endpoint a partner may change; each is optional."""

    url = Text(min_length=1, max_length=500)
    event_types = _event_type_list()
    event_type = Text(max_length=100)
    description = Text(max_length=500, allow_none=True)
    headers = _custom_headers()
    status = Text(validate=validate.OneOf(
        PARTNER_SETTABLE_STATUSES,
        error="Must be active or paused; the platform sets disabled, and DELETE sets deleted."))
    retry_count = _retry_count()
    retry_delay = _retry_delay()
    # Declared only to explain the error: an endpoint keeps the mode it was created with.
    mode = Text(metadata={"description": "cannot be changed"})

    @marshmallow.validates_schema
    def _check_fields(self, data, **kwargs):
        if "mode" in data:
            raise marshmallow.ValidationError(
                "The mode of an endpoint cannot change; create another endpoint instead.", "mode")
        if "event_types" in data and "event_type" in data:
            raise marshmallow.ValidationError(
                "Give either event_types or event_type, not both.", "event_type")
        if not data:
            raise marshmallow.ValidationError("Give at least one field to change.")


class SendTestEventBody(BodySchema):
    event_type = Text(max_length=100, metadata={
        "description": "an event type the endpoint subscribes to; by default the first one, "
                       "by name, that its event_types cover"})


class ReplayDeliveryBody(BodySchema):
    """No fields: the delivery is named by the path."""


class RotateWebhookSecretBody(BodySchema):
    overlap_seconds = StrictInteger(validate=validate.Range(min=0, max=MAX_OVERLAP_SECONDS),
                                    metadata={
        "description": "how long deliveries also carry a signature with the old secret, "
                       "0 to 604800 seconds; fkod.webhooks.secret_overlap_seconds by default"})


class RecoverDeliveriesBody(BodySchema):
    since = UtcTime(required=True)
    until = UtcTime(metadata={"description": "ISO 8601 with a time zone; now by default"})


class DeliveryQuery(PageQuery):
    """Filters of a list of deliveries, besides ``limit`` and ``cursor``."""

    status = Text(validate=validate.OneOf(DELIVERY_STATUSES))
    event_type = Text(max_length=100, validate=validate.Regexp(
        EVENT_PATTERN, error="Must be an event type name or a pattern such as course.*."),
        metadata={"description": "an event type name, or a pattern such as course.*"})
    created_after = UtcTime(metadata={"description": "deliveries created at or after this "
                                                     "time, ISO 8601 with a time zone"})
    created_before = UtcTime(metadata={"description": "deliveries created before this time, "
                                                      "ISO 8601 with a time zone"})

    @marshmallow.validates_schema
    def _check_range(self, data, **kwargs):
        after, before = data.get("created_after"), data.get("created_before")
        if after is not None and before is not None and after >= before:
            raise marshmallow.ValidationError("Must be later than created_after.",
                                              "created_before")


class AllDeliveriesQuery(DeliveryQuery):
    webhook_id = WebhookId(metadata={"description": "only the deliveries to this endpoint"})


class WebhookSchema(ResponseSchema):
    id = PublicId("whk")
    url = fields.String()
    event_types = fields.List(fields.String())
    mode = fields.Method("_mode")
    status = fields.String(metadata={"description": "active, paused or disabled"})
    description = fields.String()
    headers = fields.Dict(keys=fields.String(), values=fields.String(), metadata={
        "description": "custom headers sent with every delivery; their values often carry the "
                       "receiver's credentials, so members whose role may not reveal the "
                       f"signing secret see each value as {HEADER_VALUE_MASK}"})
    retry_count = fields.Integer()
    retry_delay = fields.Integer()
    disabled_reason = fields.String(metadata={
        "description": "why the platform disabled the endpoint"})
    disabled_at = Timestamp()
    secret_rotated_at = Timestamp()
    previous_secret_expires_at = Timestamp(metadata={
        "description": "until when deliveries also carry a signature with the replaced secret"})
    created_at = Timestamp()
    updated_at = Timestamp()

    # Subclasses for members allowed to see the values set this to True.
    shows_header_values = False

    def _mode(self, webhook):
        return "live" if webhook.livemode else "test"

    @marshmallow.post_dump
    def _mask_header_values(self, data, **kwargs):
        if not self.shows_header_values and data.get("headers"):
            data["headers"] = {name: HEADER_VALUE_MASK for name in data["headers"]}
        return data


class WebhookWithHeaderValuesSchema(WebhookSchema):
    """An endpoint with its custom header values, for members who may reveal its secret."""

    shows_header_values = True


class CreatedWebhookSchema(WebhookSchema):
    secret = fields.String(metadata={"description": "The whsec_ signing secret."})


class WebhookTestResultSchema(ResponseSchema):
    event_id = fields.String()
    event_type = fields.String()
    success = fields.Boolean(metadata={"description": "whether the receiver answered 2xx"})
    status_code = fields.Integer(allow_none=True)
    latency_ms = fields.Integer()
    response_body = fields.String(metadata={"description": "at most the first 1024 characters"})
    error = fields.String(allow_none=True)


class DeliverySchema(ResponseSchema):
    """One delivery of an event to one endpoint."""

    id = fields.Function(lambda delivery: delivery.event.public_id,
                         metadata={"description": "the event id, evt_…"})
    event_type = fields.String()
    webhook_id = PublicId("whk")
    status = fields.String(metadata={"description": "pending, delivering, succeeded or failed"})
    attempts = fields.Integer(metadata={"description": "attempts in the current run; a replay "
                                                       "starts a new run"})
    attempt_total = fields.Integer(metadata={"description": "attempts across all runs"})
    replay_count = fields.Integer()
    replayed_at = Timestamp()
    last_attempt_at = Timestamp()
    next_retry_at = Timestamp()
    response_code = fields.Integer()
    last_error = fields.String()
    created_at = Timestamp()
    completed_at = Timestamp()


class AttemptSchema(ResponseSchema):
    attempt = fields.Integer()
    started_at = Timestamp()
    duration_ms = fields.Integer()
    response_code = fields.Integer()
    response_body = fields.String()
    error = fields.String()
    signed_at = fields.Integer(metadata={"description": "the webhook-timestamp, Unix seconds"})


class DeliveryDetailSchema(DeliverySchema):
    payload = fields.Dict(attribute="event_data", metadata={"description": "the body sent"})
    response_body = fields.String()
    attempt_log = fields.List(fields.Nested(AttemptSchema), metadata={
        "description": "every attempt, oldest first"})


class RotatedSecretSchema(ResponseSchema):
    id = PublicId("whk")
    secret = fields.String(metadata={"description": "the new whsec_ signing secret"})
    secret_rotated_at = Timestamp()
    previous_secret_expires_at = Timestamp()


class RevealedSecretSchema(ResponseSchema):
    id = PublicId("whk")
    secret = fields.String()
    previous_secret = fields.String(allow_none=True, metadata={
        "description": "the replaced secret while deliveries are still signed with it"})
    previous_secret_expires_at = Timestamp()


class RecoveredSchema(ResponseSchema):
    recovered = fields.Integer(metadata={"description": "failed deliveries sent again"})


class WebhookHealthSchema(ResponseSchema):
    webhook_id = PublicId("whk")
    status = fields.String()
    disabled_reason = fields.String()
    failing_since = Timestamp(metadata={"description": "start of the current run of failed "
                                                       "attempts"})
    last_success_at = Timestamp()
    window_seconds = fields.Integer(metadata={"description": "the span of the attempt counts"})
    attempts = fields.Integer()
    successes = fields.Integer()
    failures = fields.Integer()
    success_rate = fields.Float(allow_none=True, metadata={
        "description": "successes / attempts, null without attempts"})
    pending = fields.Integer(metadata={"description": "deliveries pending or being delivered"})
    oldest_pending_at = Timestamp()
    oldest_pending_age_seconds = fields.Integer(allow_none=True)
    failed = fields.Integer(metadata={"description": "deliveries that spent every retry"})


class EventTypeSchema(ResponseSchema):
    name = fields.String()
    description = fields.String()
    schema = fields.Dict()
    sample = fields.Dict()
