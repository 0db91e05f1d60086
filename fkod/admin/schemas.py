"""Request and response schemas of the admin API."""

from __future__ import annotations

import re
from decimal import Decimal

import marshmallow
from marshmallow import fields, validate

from fkod.admin.auth import ADMIN_ROLES, ADMIN_STATUSES
from fkod.core.api import PageQuery
from fkod.core.auth.passwords import MAX_LENGTH as PASSWORD_MAX
from fkod.core.schemas import (
    BodySchema,
    PublicId,
    ResponseSchema,
    StrictInteger,
    Text,
    Timestamp,
)
from fkod.partners.audit_views import AuditQuery
from fkod.partners.schemas import Email

PARTNER_STATUSES = ("pending", "active", "suspended")
VERIFICATION_STATUSES = ("unverified", "submitted", "verified", "rejected")
ACTOR_TYPES = ("user", "admin", "api_key", "system")
ADMIN_PASSWORD_MIN = 12
# Overrides stay far below 2**53, so the Redis limiter script's double arithmetic is exact.
MAX_RATE_LIMIT = 1_000_000_000
# Partner list orders; a leading - sorts descending.
PARTNER_SORTS = ("created_at", "company_name", "verification_submitted_at")
# A rate from 0 to 1 with at most four decimal places, as NUMERIC(5, 4) stores it.
_COMMISSION_RATE = re.compile(r"(0(\.[0-9]{1,4})?|1(\.0{1,4})?)")


def _no_empty_update(data: dict) -> None:
    if not data:
        raise marshmallow.ValidationError("Give at least one field to change.")


# Login ------------------------------------------------------------------------


class AdminLoginBody(BodySchema):
    email = Text(required=True, max_length=255)
    password = Text(required=True, strip=False, max_length=PASSWORD_MAX)


class AdminLoginResponse(ResponseSchema):
    access_token = fields.String()
    token_type = fields.String()
    expires_in = fields.Integer()
    admin_id = fields.String()
    role = fields.String()


# Admin users ------------------------------------------------------------------


class CreateAdminBody(BodySchema):
    email = Email(required=True)
    name = Text(required=True, min_length=1, max_length=255)
    role = Text(required=True, validate=validate.OneOf(ADMIN_ROLES))
    password = Text(required=True, strip=False, min_length=ADMIN_PASSWORD_MIN,
                    max_length=PASSWORD_MAX)


class UpdateAdminBody(BodySchema):
    name = Text(min_length=1, max_length=255)
    role = Text(validate=validate.OneOf(ADMIN_ROLES))
    status = Text(validate=validate.OneOf(ADMIN_STATUSES))

    @marshmallow.validates_schema
    def _not_empty(self, data, **kwargs):
        _no_empty_update(data)


class AdminListQuery(PageQuery):
    role = Text(validate=validate.OneOf(ADMIN_ROLES))
    status = Text(validate=validate.OneOf(ADMIN_STATUSES))


class AdminUserSchema(ResponseSchema):
    id = PublicId("admin")
    email = fields.String()
    name = fields.String()
    role = fields.String()
    status = fields.String()
    created_at = Timestamp()


# Partners ---------------------------------------------------------------------


class PartnerListQuery(PageQuery):
    status = Text(validate=validate.OneOf(PARTNER_STATUSES))
    verification_status = Text(validate=validate.OneOf(VERIFICATION_STATUSES))
    q = Text(min_length=1, max_length=200, metadata={
        "description": "text found in the company name or contact email, matched literally "
                       "and ignoring case"})
    sort = Text(load_default="-created_at", validate=validate.OneOf(
        PARTNER_SORTS + tuple(f"-{name}" for name in PARTNER_SORTS)),
        metadata={"description": "created_at, company_name or verification_submitted_at, "
                                 "with a leading - for descending; -created_at by default"})


class PlanSummarySchema(ResponseSchema):
    code = fields.String()
    name = fields.String()
    requests_per_hour = fields.Integer()
    requests_per_day = fields.Integer()


class RateLimitsSchema(ResponseSchema):
    """Hourly and daily request limits; null means no override, or unlimited."""

    hourly = fields.Integer(allow_none=True, dump_default=None)
    daily = fields.Integer(allow_none=True, dump_default=None)


class PartnerSummarySchema(ResponseSchema):
    id = PublicId("partner")
    company_name = fields.String()
    contact_email = fields.String()
    status = fields.String()
    verification_status = fields.String()
    plan = fields.Function(lambda partner: partner.plan.code if partner.plan else None)
    verification_submitted_at = Timestamp()
    suspended_at = Timestamp()
    deleted_at = Timestamp()
    created_at = Timestamp()


class MemberSchema(ResponseSchema):
    id = PublicId("user", attribute="user.id")
    email = fields.String(attribute="user.email")
    name = fields.String(attribute="user.name")
    role = fields.String()
    created_at = Timestamp()


class PartnerDetailSchema(PartnerSummarySchema):
    """A partner with its verification, members, plan and overrides; encrypted data masked."""

    owner_id = PublicId("user", attribute="user_id")
    company_website = fields.String()
    company_logo_url = fields.String()
    description = fields.String()
    category = fields.String()
    contact_phone = fields.String()
    address = fields.Dict()
    legal_name = fields.String()
    verification_data = fields.Dict()
    verified_at = Timestamp()
    verification_rejection_reason = fields.String()
    suspension_reason = fields.String()
    deletion_requested_at = Timestamp()
    updated_at = Timestamp()
    tax_id = fields.String(metadata={"description": "masked: at most the last 4 characters"})
    bank_account = fields.String(metadata={
        "description": "masked: at most the last 4 characters"})
    plan = fields.Nested(PlanSummarySchema, allow_none=True)
    commission_rate = fields.Decimal(places=4, as_string=True, allow_none=True)
    rate_limit_overrides = fields.Nested(RateLimitsSchema, allow_none=True, metadata={
        "description": "limits that replace the plan's; null windows follow the plan"})
    effective_rate_limits = fields.Nested(RateLimitsSchema, metadata={
        "description": "the hourly and daily limits the gateway applies; null is unlimited"})
    members = fields.List(fields.Nested(MemberSchema))


class VerificationDecisionBody(BodySchema):
    decision = Text(required=True, validate=validate.OneOf(("approve", "reject")))
    reason = Text(min_length=1, max_length=500, metadata={
        "description": "required to reject; shown to the partner"})

    @marshmallow.validates_schema
    def _reason_to_reject(self, data, **kwargs):
        if data.get("decision") == "reject" and not data.get("reason"):
            raise marshmallow.ValidationError("Give a reason to reject a verification.",
                                              "reason")


class SuspendBody(BodySchema):
    reason = Text(required=True, min_length=1, max_length=500)


class ReactivateBody(BodySchema):
    reason = Text(min_length=1, max_length=500, metadata={
        "description": "a note kept in the audit log"})


class CommissionRate(fields.Field):
    """A decimal string from 0 to 1 with at most four decimal places, such as ``0.2500``."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str) or _COMMISSION_RATE.fullmatch(value) is None:
            raise marshmallow.ValidationError(
                "Must be a decimal string from 0 to 1 with at most 4 decimal places, "
                "such as \"0.2500\".")
        return Decimal(value)


class RateLimitOverridesBody(BodySchema):
    hourly = StrictInteger(allow_none=True, load_default=None,
                           validate=validate.Range(min=1, max=MAX_RATE_LIMIT))
    daily = StrictInteger(allow_none=True, load_default=None,
                          validate=validate.Range(min=1, max=MAX_RATE_LIMIT))


class OverridesBody(BodySchema):
    plan = Text(allow_none=True, min_length=1, max_length=50, metadata={
        "description": "a plan code; null puts the partner on the default plan"})
    rate_limits = fields.Nested(RateLimitOverridesBody, allow_none=True, metadata={
        "description": "replaces the stored overrides; a window left out or null follows "
                       "the plan, and null clears every override"})
    commission_rate = CommissionRate(allow_none=True, metadata={
        "description": "a decimal string from 0 to 1; null uses the default"})

    @marshmallow.validates_schema
    def _not_empty(self, data, **kwargs):
        _no_empty_update(data)


# Lists of a partner's records ---------------------------------------------------


class PartnerKeysQuery(PageQuery):
    status = Text(validate=validate.OneOf(("active", "revoked")))
    mode = Text(validate=validate.OneOf(("live", "test")))


class PartnerWebhooksQuery(PageQuery):
    status = Text(validate=validate.OneOf(("active", "paused", "disabled", "deleted")))
    mode = Text(validate=validate.OneOf(("live", "test")))


class TicketSummarySchema(ResponseSchema):
    id = PublicId("tkt")
    title = fields.String()
    category = fields.String()
    priority = fields.String()
    status = fields.String()
    assigned_to = PublicId("admin")
    created_at = Timestamp()
    updated_at = Timestamp()
    resolved_at = Timestamp()


# Audit log --------------------------------------------------------------------


class AdminAuditQuery(AuditQuery):
    partner_id = PublicId("partner", metadata={"description": "only entries about this partner"})
    actor_type = Text(validate=validate.OneOf(ACTOR_TYPES))
