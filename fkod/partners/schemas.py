"""Request and response schemas of the partner API."""

from __future__ import annotations

import marshmallow
from marshmallow import fields, validate

from fkod.core import versions
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


class CreateWebhookBody(BodySchema):
    url = Text(required=True, min_length=1, max_length=500)
    event_types = fields.List(Text(max_length=100), validate=validate.Length(min=1, max=50))
    event_type = Text(max_length=100)
    mode = mode_field()
    description = Text(max_length=500, allow_none=True)
    headers = fields.Dict(keys=Text(max_length=100), values=Text(max_length=1000, strip=False),
                          validate=validate.Length(max=20))
    retry_count = StrictInteger(validate=validate.Range(min=0, max=10), load_default=5)
    retry_delay = StrictInteger(validate=validate.Range(min=0, max=86400), load_default=300)

    @marshmallow.validates_schema
    def _one_way_of_naming_event_types(self, data, **kwargs):
        if "event_types" in data and "event_type" in data:
            raise marshmallow.ValidationError(
                "Give either event_types or event_type, not both.", "event_type")
        if "event_types" not in data and "event_type" not in data:
            raise marshmallow.ValidationError(
                "Give event_types (a list) or event_type (one name or pattern).", "event_types")


class WebhookSchema(ResponseSchema):
    id = PublicId("whk")
    url = fields.String()
    event_types = fields.List(fields.String())
    mode = fields.Method("_mode")
    status = fields.String()
    description = fields.String()
    headers = fields.Dict()
    retry_count = fields.Integer()
    retry_delay = fields.Integer()
    created_at = Timestamp()
    updated_at = Timestamp()

    def _mode(self, webhook):
        return "live" if webhook.livemode else "test"


class CreatedWebhookSchema(WebhookSchema):
    secret = fields.String(metadata={"description": "The whsec_ signing secret."})


class EventTypeSchema(ResponseSchema):
    name = fields.String()
    description = fields.String()
    schema = fields.Dict()
    sample = fields.Dict()
