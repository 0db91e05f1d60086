"""Request and response schemas of the billing API, shared by the partner and admin views.

Money is a decimal string with two places (``"150.00"``) beside a ``currency``
field; commission rates are percent with two places (``"30.00"``).
"""

from __future__ import annotations

import math
import re
from decimal import Decimal

import marshmallow
from marshmallow import ValidationError, fields, validate

from fkod.core.api import PageQuery
from fkod.core.billing.payouts import PAYOUT_METHODS
from fkod.core.schemas import BodySchema, PublicId, ResponseSchema, Text, Timestamp

# The largest amount a NUMERIC(15, 2) column holds.
MAX_AMOUNT = Decimal("9999999999999.99")
_AMOUNT = re.compile(r"^[0-9]{1,13}(\.[0-9]{1,2})?$")

INVOICE_STATUSES = ("open", "paid", "void", "uncollectible")
INVOICE_KINDS = ("plan", "integrations")
PAYOUT_STATUSES = ("pending", "on_hold", "processing", "paid", "failed")


def money(**kwargs) -> fields.Decimal:
    return fields.Decimal(places=2, as_string=True, **kwargs)


def month(value) -> str | None:
    return None if value is None else f"{value:%Y-%m}"


def period_of(row) -> str:
    """Return the YYYY-MM of a row, or of a dict made from one, from its ``period_start``."""
    start = row["period_start"] if isinstance(row, dict) else row.period_start
    return month(start)


class Amount(fields.Field):
    """A positive amount of money: a decimal string or a JSON number, at most two places."""

    # The OpenAPI document describes the field as a decimal string.
    DECIMAL_STRING = True

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValidationError("Must be a decimal string such as \"150.00\" or a number.")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValidationError("Must be a finite amount.")
        text = value.strip() if isinstance(value, str) else str(value)
        if text.startswith("-"):
            raise ValidationError("Must be at least 0.01.")
        if not _AMOUNT.match(text):
            raise ValidationError("Must be an amount with at most 2 decimal places, "
                                  "such as \"150.00\".")
        amount = Decimal(text)
        if amount < Decimal("0.01"):
            raise ValidationError("Must be at least 0.01.")
        if amount > MAX_AMOUNT:
            raise ValidationError(f"Must be at most {MAX_AMOUNT}.")
        return amount


# Request bodies and queries -----------------------------------------------------------


class PayoutRequestBody(BodySchema):
    amount = Amount(allow_none=True, metadata={
        "description": "The amount to pay out; the whole balance when omitted."})


class PayoutMethodBody(BodySchema):
    method = Text(validate=validate.OneOf(sorted(PAYOUT_METHODS)), metadata={
        "description": "bank_transfer, paypal or stripe. A new method needs a destination."})
    destination = Text(min_length=1, max_length=500, metadata={
        "description": "Bank details, a PayPal email address or a Stripe account id."})

    @marshmallow.validates_schema
    def _not_empty(self, data, **kwargs):
        if not data:
            raise ValidationError("Give a method and a destination.", field_name="method")
        if "method" in data and "destination" not in data:
            raise ValidationError("A new payout method needs its destination.",
                                  field_name="destination")


class PaymentMethodBody(BodySchema):
    return_url = Text(required=True, max_length=2000, metadata={
        "description": "The portal page a hosted flow returns to: https, or http on loopback."})


class InvoiceListQuery(PageQuery):
    status = Text(validate=validate.OneOf(INVOICE_STATUSES))


class PayoutListQuery(PageQuery):
    status = Text(validate=validate.OneOf(PAYOUT_STATUSES))


# Responses ----------------------------------------------------------------------------


class RevenueSchema(ResponseSchema):
    period = fields.Function(period_of,
                             metadata={"description": "YYYY-MM"})
    period_start = fields.Date()
    period_end = fields.Date()
    api_calls = fields.Integer()
    currency = fields.Constant("USD")
    revenue = money()
    commission_rate = money(metadata={"description": "Percent, such as \"30.00\"."})
    commission_amount = money()
    partner_share = money()
    status = fields.String(metadata={"enum": ["pending", "paid"]})
    paid_at = Timestamp(allow_none=True)


class RevenueLineSchema(ResponseSchema):
    kind = fields.String(metadata={"enum": ["install_fee", "call_fee", "refund", "chargeback"]})
    integration_id = PublicId("int", allow_none=True)
    description = fields.String()
    api_calls = fields.Integer()
    gross = money()
    commission_rate = money()
    commission = money()
    partner_share = money()
    created_at = Timestamp()


class RevenueDetailSchema(RevenueSchema):
    lines = fields.List(fields.Nested(RevenueLineSchema))


class RevenueTotalsSchema(ResponseSchema):
    api_calls = fields.Integer()
    revenue = money()
    commission_amount = money()
    partner_share = money()


class PaidPeriodSchema(ResponseSchema):
    period = fields.String(metadata={"description": "YYYY-MM"})
    partner_share = money()


class PayoutSchema(ResponseSchema):
    id = PublicId("po")
    amount = money()
    currency = fields.String()
    status = fields.String(metadata={"enum": list(PAYOUT_STATUSES)})
    source = fields.String(metadata={"enum": ["request", "run"]})
    payout_method = fields.String()
    balance_after = money(allow_none=True)
    failure_reason = fields.String(allow_none=True)
    created_at = Timestamp()
    sent_at = Timestamp(allow_none=True)
    paid_at = Timestamp(allow_none=True)
    failed_at = Timestamp(allow_none=True)


class PayoutStatementSchema(PayoutSchema):
    periods = fields.List(fields.Nested(PaidPeriodSchema), metadata={
        "description": "The periods this payout paid."})


class AdminPayoutSchema(PayoutStatementSchema):
    partner_id = PublicId("partner")
    provider = fields.String()
    provider_payout_id = fields.String(allow_none=True)
    hold_reason = fields.String(allow_none=True)
    requested_by = PublicId("user", attribute="requested_by_user_id", allow_none=True)
    approved_by = PublicId("admin", attribute="approved_by_admin_id", allow_none=True)
    updated_at = Timestamp()


class RevenueReportSchema(ResponseSchema):
    data = fields.List(fields.Nested(RevenueSchema))
    has_more = fields.Boolean()
    next_cursor = fields.String(allow_none=True)
    currency = fields.Constant("USD")
    totals = fields.Nested(RevenueTotalsSchema, metadata={"description": "Over all periods."})
    balance = money(metadata={"description": "What F-KOD owes the partner now."})
    payouts = fields.List(fields.Nested(PayoutStatementSchema), metadata={
        "description": "The newest payouts, with the periods each one paid."})


class InvoiceLineSchema(ResponseSchema):
    kind = fields.String(metadata={"enum": ["plan_fee", "proration", "overage", "install_fee"]})
    description = fields.String()
    quantity = fields.Integer()
    unit_price = fields.Decimal(as_string=True, metadata={
        "description": "The price of one unit, with up to six places."})
    amount = money()


class PaymentSchema(ResponseSchema):
    id = PublicId("pay")
    invoice_id = PublicId("inv")
    status = fields.String(metadata={"enum": ["processing", "pending", "succeeded", "failed"]})
    amount = money()
    amount_refunded = money()
    currency = fields.String()
    provider = fields.String()
    failure_reason = fields.String(allow_none=True)
    succeeded_at = Timestamp(allow_none=True)
    created_at = Timestamp()


class InvoiceSchema(ResponseSchema):
    id = PublicId("inv")
    kind = fields.String(metadata={"enum": list(INVOICE_KINDS)})
    period = fields.Function(period_of,
                             metadata={"description": "YYYY-MM"})
    period_start = fields.Date()
    period_end = fields.Date()
    currency = fields.String()
    total = money()
    amount_refunded = money()
    status = fields.String(metadata={"enum": list(INVOICE_STATUSES)})
    provider = fields.String(allow_none=True)
    issued_at = Timestamp()
    paid_at = Timestamp(allow_none=True)


class InvoiceDetailSchema(InvoiceSchema):
    lines = fields.List(fields.Nested(InvoiceLineSchema))
    payments = fields.List(fields.Nested(PaymentSchema))


class AdminInvoiceSchema(InvoiceSchema):
    partner_id = PublicId("partner", allow_none=True)
    user_id = PublicId("user", allow_none=True)


class AdminInvoiceDetailSchema(AdminInvoiceSchema):
    lines = fields.List(fields.Nested(InvoiceLineSchema))
    payments = fields.List(fields.Nested(PaymentSchema))


class PayoutMethodSchema(ResponseSchema):
    method = fields.String(allow_none=True, metadata={"enum": [*sorted(PAYOUT_METHODS), None]})
    destination = fields.String(allow_none=True, metadata={
        "description": "Masked: at most the last 4 characters are shown."})
    provider = fields.String(allow_none=True)
    provider_enabled = fields.Boolean()


class PaymentMethodSetupSchema(ResponseSchema):
    provider = fields.String()
    setup_id = fields.String()
    client_secret = fields.String(allow_none=True)
    redirect_url = fields.String(allow_none=True)
