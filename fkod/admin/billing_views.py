"""Admin API for billing: revenue per period, payouts, invoices and refunds.

Reading needs ``payouts:read``, every action ``payouts:write``. Actions are
audited. Approving a payout releases it in the request's transaction, and
the worker sends it after the commit. A bank transfer through the ledger
provider stays ``processing`` until an admin marks it paid or failed here.
"""

from __future__ import annotations

import sqlalchemy as sa
from cornice import Service
from marshmallow import ValidationError, fields, validate

from fkod.core import audit
from fkod.core.api import AUTH_ADMIN, PageQuery, operation, paginate
from fkod.core.auth.models import Partner
from fkod.core.billing.invoicing import apply_refund, mark_payment_succeeded
from fkod.core.billing.models import Invoice, PartnerRevenue, Payment, Payout
from fkod.core.billing.money import format_usd
from fkod.core.billing.payouts import (
    SEND_ACTOR,
    hold_payout,
    mark_payout_failed,
    mark_payout_paid,
    release_for_sending,
)
from fkod.core.billing.periods import Period
from fkod.core.billing.providers import PaymentProviderError, payment_providers
from fkod.core.db import utcnow
from fkod.core.errors import ApiError, Conflict, NotFound
from fkod.core.ids import parse_id
from fkod.core.schemas import BodySchema, EmptyBody, PublicId, ResponseSchema, Text
from fkod.partners.billing_schemas import (
    INVOICE_KINDS,
    INVOICE_STATUSES,
    PAYOUT_STATUSES,
    AdminInvoiceDetailSchema,
    AdminInvoiceSchema,
    AdminPayoutSchema,
    Amount,
    PaymentSchema,
    RevenueSchema,
    RevenueTotalsSchema,
    money,
)
from fkod.partners.billing_views import (
    invoice_detail,
    payout_statements,
    provider_failure,
    provider_missing,
    revenue_totals,
    row_dict,
)

revenue = Service(name="admin_revenue", path="/api/admin/revenue",
                  description="Revenue share of every partner in one period")
payouts = Service(name="admin_payouts", path="/api/admin/payouts",
                  description="Payouts of every partner")
payout = Service(name="admin_payout", path="/api/admin/payouts/{id}", description="One payout")
approve = Service(name="admin_payout_approve", path="/api/admin/payouts/{id}/approve",
                  description="Approve a pending or held payout and send it")
hold = Service(name="admin_payout_hold", path="/api/admin/payouts/{id}/hold",
               description="Hold a pending payout")
payout_paid = Service(name="admin_payout_mark_paid", path="/api/admin/payouts/{id}/mark-paid",
                      description="Record a sent payout as paid")
payout_failed = Service(name="admin_payout_mark_failed",
                        path="/api/admin/payouts/{id}/mark-failed",
                        description="Record a sent payout as failed")
invoices = Service(name="admin_invoices", path="/api/admin/invoices",
                   description="Invoices of partners and customers")
invoice = Service(name="admin_invoice", path="/api/admin/invoices/{id}",
                  description="One invoice with its lines and payments")
invoice_paid = Service(name="admin_invoice_mark_paid", path="/api/admin/invoices/{id}/mark-paid",
                       description="Record a bank transfer that paid an invoice")
refund = Service(name="admin_payment_refund", path="/api/admin/payments/{id}/refund",
                 description="Refund a payment in whole or in part")

SERVICES = (revenue, payouts, payout, approve, hold, payout_paid, payout_failed, invoices,
            invoice, invoice_paid, refund)
NOT_FOUND = ((404, "not_found"),)


# Schemas ------------------------------------------------------------------------------


class PeriodField(fields.Field):
    """A month written YYYY-MM, loaded as a Period."""

    def _deserialize(self, value, attr, data, **kwargs):
        try:
            return Period.parse(value if isinstance(value, str) else "")
        except ValueError as exc:
            raise ValidationError(str(exc).capitalize() + ".") from None


class RevenueQuery(PageQuery):
    period = PeriodField(metadata={"description": "YYYY-MM; last month when omitted."})


class PayoutQuery(PageQuery):
    status = Text(validate=validate.OneOf(PAYOUT_STATUSES))
    partner_id = PublicId("partner")


class InvoiceQuery(PageQuery):
    status = Text(validate=validate.OneOf(INVOICE_STATUSES))
    kind = Text(validate=validate.OneOf(INVOICE_KINDS))
    partner_id = PublicId("partner")


class ReasonBody(BodySchema):
    reason = Text(required=True, min_length=1, max_length=500)


class MarkPayoutPaidBody(BodySchema):
    reference = Text(min_length=1, max_length=200, allow_none=True, metadata={
        "description": "The bank transfer's reference, kept in the audit log."})


class MarkInvoicePaidBody(BodySchema):
    reference = Text(required=True, min_length=1, max_length=200, metadata={
        "description": "The bank transfer's reference, kept in the audit log."})


class RefundBody(BodySchema):
    amount = Amount(allow_none=True, metadata={
        "description": "The amount to refund; what is left of the payment when omitted."})
    reason = Text(required=True, min_length=1, max_length=500)


class AdminRevenueSchema(RevenueSchema):
    partner_id = PublicId("partner")
    company_name = fields.String()


class AdminRevenueReportSchema(ResponseSchema):
    period = fields.String(metadata={"description": "YYYY-MM"})
    data = fields.List(fields.Nested(AdminRevenueSchema))
    has_more = fields.Boolean()
    next_cursor = fields.String(allow_none=True)
    currency = fields.Constant("USD")
    totals = fields.Nested(RevenueTotalsSchema, metadata={
        "description": "Over every partner in the period."})


class RefundResultSchema(ResponseSchema):
    provider_refund_id = fields.String()
    status = fields.String(metadata={"enum": ["pending", "succeeded", "failed"]})
    amount = money()
    payment = fields.Nested(PaymentSchema)


# Revenue ------------------------------------------------------------------------------


@operation(revenue, "GET", summary="List every partner's revenue in one period, with totals",
           auth=AUTH_ADMIN, permission="payouts:read", query=RevenueQuery,
           response=AdminRevenueReportSchema)
def get_revenue(request):
    return revenue_report(request, request.query)


def revenue_report(request, query: dict) -> dict:
    """Return one page of every partner's revenue in ``query["period"]`` (last month by
    default), with the totals over every partner in that period."""
    session = request.dbsession
    period = query.get("period") or Period.containing(utcnow()).previous()
    select = sa.select(PartnerRevenue).where(PartnerRevenue.period_start == period.start)
    page = paginate(select, PartnerRevenue.id, query, session)
    names = dict(session.execute(sa.select(Partner.id, Partner.company_name).where(
        Partner.id.in_({row.partner_id for row in page.items}))).all()) if page.items else {}
    rows = []
    for row in page.items:
        item = row_dict(row)
        item["company_name"] = names.get(row.partner_id)
        rows.append(item)
    return {
        "period": str(period), "data": rows, "has_more": page.next_cursor is not None,
        "next_cursor": page.next_cursor,
        "totals": revenue_totals(session, PartnerRevenue.period_start == period.start),
    }


# Payouts ------------------------------------------------------------------------------


def _payout(request, *, lock: bool = False) -> Payout:
    number = parse_id("po", request.matchdict["id"], noun="payout")
    row = request.dbsession.get(Payout, number, with_for_update=lock)
    if row is None:
        raise NotFound(f"No payout with id {request.matchdict['id']!r}.")
    return row


def _statement(request, row: Payout) -> dict:
    request.dbsession.flush()
    return payout_statements(request.dbsession, [row])[0]


def _audit_payout(request, action: str, row: Payout, **details) -> None:
    audit.record(request, action, partner_id=row.partner_id, target_type="payout",
                 target_id=f"po_{row.id}",
                 details={"amount": f"{row.amount:.2f}", "status": row.status, **details})


@operation(payouts, "GET", summary="List payouts, newest first", auth=AUTH_ADMIN,
           permission="payouts:read", query=PayoutQuery, response=AdminPayoutSchema,
           paginated=True)
def list_payouts(request):
    return payouts_page(request, request.query)


def payouts_page(request, query: dict):
    """Return one page of payouts, newest first, as statements, filtered as ``query`` says."""
    select = sa.select(Payout)
    if query.get("status"):
        select = select.where(Payout.status == query["status"])
    if query.get("partner_id") is not None:
        select = select.where(Payout.partner_id == query["partner_id"])
    page = paginate(select, Payout.id, query, request.dbsession)
    page.items = payout_statements(request.dbsession, list(page.items))
    return page


@operation(payout, "GET", summary="Get one payout", auth=AUTH_ADMIN, permission="payouts:read",
           response=AdminPayoutSchema, errors=NOT_FOUND)
def get_payout(request):
    return _statement(request, _payout(request))


@operation(approve, "POST", summary="Approve a pending or held payout and send it",
           auth=AUTH_ADMIN, permission="payouts:write", body=EmptyBody,
           response=AdminPayoutSchema, errors=(*NOT_FOUND, (409, "payout_not_pending")))
def approve_payout(request):
    return _statement(request, approve_payout_row(request, _payout(request, lock=True)))


def approve_payout_row(request, row: Payout) -> Payout:
    """Release a pending or held payout, audited; the worker sends it after the commit."""
    release_for_sending(request.dbsession, row)
    row.approved_by_admin_id = request.admin.id
    _audit_payout(request, "payout.approved", row)
    request.registry["tasks"].send_after_commit(request.tm, SEND_ACTOR, row.id)
    return row


@operation(hold, "POST", summary="Hold a pending payout with a reason", auth=AUTH_ADMIN,
           permission="payouts:write", body=ReasonBody, response=AdminPayoutSchema,
           errors=(*NOT_FOUND, (409, "payout_not_pending")))
def hold_payout_view(request):
    row = _payout(request, lock=True)
    return _statement(request, hold_payout_row(request, row, request.validated["reason"]))


def hold_payout_row(request, row: Payout, reason: str) -> Payout:
    hold_payout(request.dbsession, row, reason)
    _audit_payout(request, "payout.held", row, reason=reason)
    return row


def _processing(row: Payout) -> None:
    if row.status != "processing":
        raise Conflict(f"Payout po_{row.id} is {row.status}; only a processing payout can be "
                       "marked paid or failed.", code="payout_not_processing")


@operation(payout_paid, "POST", summary="Record a processing payout as paid", auth=AUTH_ADMIN,
           permission="payouts:write", body=MarkPayoutPaidBody, response=AdminPayoutSchema,
           errors=(*NOT_FOUND, (409, "payout_not_processing")))
def mark_payout_paid_view(request):
    row = _payout(request, lock=True)
    return _statement(request, mark_payout_paid_row(request, row,
                                                    request.validated.get("reference")))


def mark_payout_paid_row(request, row: Payout, reference: str | None) -> Payout:
    _processing(row)
    mark_payout_paid(request.dbsession, row, utcnow())
    _audit_payout(request, "payout.marked_paid", row, reference=reference)
    return row


@operation(payout_failed, "POST", summary="Record a processing payout as failed; its amount "
           "goes back to the balance", auth=AUTH_ADMIN, permission="payouts:write",
           body=ReasonBody, response=AdminPayoutSchema,
           errors=(*NOT_FOUND, (409, "payout_not_processing")))
def mark_payout_failed_view(request):
    row = _payout(request, lock=True)
    return _statement(request, mark_payout_failed_row(request, row,
                                                      request.validated["reason"]))


def mark_payout_failed_row(request, row: Payout, reason: str) -> Payout:
    _processing(row)
    mark_payout_failed(request.dbsession, row, reason, utcnow())
    _audit_payout(request, "payout.marked_failed", row, reason=reason)
    return row


# Invoices -----------------------------------------------------------------------------


def _invoice(request, *, lock: bool = False) -> Invoice:
    number = parse_id("inv", request.matchdict["id"], noun="invoice")
    row = request.dbsession.get(Invoice, number, with_for_update=lock)
    if row is None:
        raise NotFound(f"No invoice with id {request.matchdict['id']!r}.")
    return row


@operation(invoices, "GET", summary="List invoices, newest first", auth=AUTH_ADMIN,
           permission="payouts:read", query=InvoiceQuery, response=AdminInvoiceSchema,
           paginated=True)
def list_invoices(request):
    select = sa.select(Invoice)
    for name in ("status", "kind"):
        if request.query.get(name):
            select = select.where(getattr(Invoice, name) == request.query[name])
    if request.query.get("partner_id") is not None:
        select = select.where(Invoice.partner_id == request.query["partner_id"])
    return paginate(select, Invoice.id, request.query, request.dbsession)


@operation(invoice, "GET", summary="Get one invoice with its lines and payments",
           auth=AUTH_ADMIN, permission="payouts:read", response=AdminInvoiceDetailSchema,
           errors=NOT_FOUND)
def get_invoice(request):
    return invoice_detail(request.dbsession, _invoice(request))


@operation(invoice_paid, "POST", summary="Record a bank transfer that paid an open invoice",
           auth=AUTH_ADMIN, permission="payouts:write", body=MarkInvoicePaidBody,
           response=AdminInvoiceDetailSchema,
           errors=(*NOT_FOUND, (409, "invoice_not_open"), (409, "payment_in_progress")))
def mark_invoice_paid(request):
    session = request.dbsession
    row = _invoice(request, lock=True)
    if row.status != "open":
        raise Conflict(f"Invoice inv_{row.id} is {row.status}; only an open invoice can be "
                       "marked paid.", code="invoice_not_open")
    payments = session.scalars(sa.select(Payment).where(Payment.invoice_id == row.id)
                               .order_by(Payment.id).with_for_update()).all()
    latest = payments[-1] if payments else None
    if latest is not None and latest.status == "processing":
        raise Conflict(f"Payment pay_{latest.id} of inv_{row.id} is being charged; wait for "
                       "its result.", code="payment_in_progress")
    if latest is not None and latest.status == "pending":
        payment = latest
    else:
        # No charge is waiting, so the transfer is recorded as a payment of its own.
        # NOTE: its provider_payment_id is a local "manual_" id. The ledger provider accepts
        # a refund of it; another provider would reject the refund as an unknown charge.
        attempt = len(payments) + 1
        key = f"fkod-invoice-{row.id}-{attempt}"
        payment = Payment(invoice_id=row.id, provider=row.provider or "ledger",
                          provider_payment_id=f"manual_{key}", idempotency_key=key,
                          amount=row.total - row.amount_refunded, currency=row.currency,
                          status="pending")
        session.add(payment)
        session.flush()
    mark_payment_succeeded(request.registry, session, payment, utcnow())
    audit.record(request, "invoice.marked_paid", partner_id=row.partner_id, target_type="invoice",
                 target_id=f"inv_{row.id}",
                 details={"payment_id": f"pay_{payment.id}", "amount": f"{payment.amount:.2f}",
                          "reference": request.validated["reference"]})
    session.flush()
    return invoice_detail(session, row)


# Refunds ------------------------------------------------------------------------------


@operation(refund, "POST", summary="Refund a succeeded payment in whole or in part",
           auth=AUTH_ADMIN, permission="payouts:write", body=RefundBody,
           response=RefundResultSchema,
           errors=(*NOT_FOUND, (409, "payment_not_succeeded"), (409, "refund_exceeds_payment"),
                   (502, "payment_provider_error"), (502, "refund_failed"),
                   (503, "payment_provider_unavailable")))
def refund_payment(request):
    session = request.dbsession
    number = parse_id("pay", request.matchdict["id"], noun="payment")
    payment = session.get(Payment, number, with_for_update=True)
    if payment is None:
        raise NotFound(f"No payment with id {request.matchdict['id']!r}.")
    if payment.status != "succeeded":
        raise Conflict(f"Payment pay_{payment.id} is {payment.status}; only a succeeded payment "
                       "can be refunded.", code="payment_not_succeeded")
    left = payment.amount - payment.amount_refunded
    if left <= 0:
        raise Conflict(f"Payment pay_{payment.id} is already refunded in full.",
                       code="refund_exceeds_payment")
    amount = request.validated.get("amount")
    amount = left if amount is None else amount
    if amount > left:
        raise Conflict(f"The refund of {format_usd(amount)} is more than the "
                       f"{format_usd(left)} left of payment pay_{payment.id}.",
                       code="refund_exceeds_payment")
    provider = payment_providers(request.registry).get(payment.provider)
    if provider is None:
        raise provider_missing(payment.provider)

    new_total = payment.amount_refunded + amount
    reason = request.validated["reason"]
    try:
        result = provider.refund(payment.provider_payment_id or "", amount=amount,
                                 idempotency_key=f"fkod-refund-{payment.id}-{new_total}",
                                 reason=reason)
    except PaymentProviderError as exc:
        raise provider_failure(exc, payment.provider) from None

    if result.status == "failed":
        raise ApiError(f"The payment provider {payment.provider} rejected the refund: "
                       f"{result.failure_reason or 'no reason given'}.", code="refund_failed",
                       status=502)
    if result.status == "succeeded":
        # A pending refund is applied when the provider's event confirms it.
        apply_refund(request.registry, session, payment, new_total)

    invoice_row = session.get(Invoice, payment.invoice_id)
    audit.record(request, "payment.refunded", partner_id=invoice_row.partner_id,
                 target_type="payment", target_id=f"pay_{payment.id}",
                 details={"amount": f"{amount:.2f}", "status": result.status, "reason": reason,
                          "invoice_id": f"inv_{invoice_row.id}"})
    session.flush()
    return {"provider_refund_id": result.provider_id, "status": result.status, "amount": amount,
            "payment": payment}


def includeme(config):
    for service in SERVICES:
        config.add_cornice_service(service)

