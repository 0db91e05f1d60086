"""Cornice services of a partner's billing: revenue share, invoices, payouts and methods.

Members read with ``billing:read`` and act with ``billing:write``. Money is a
decimal string with two places beside ``currency``. A payout request takes
its amount out of the balance at once (see :mod:`fkod.core.billing.payouts`);
the payout destination is stored encrypted and shown masked.
"""

from __future__ import annotations

import ipaddress
import logging
import urllib.parse
from decimal import Decimal

import sqlalchemy as sa
from cornice import Service

from fkod.core import audit
from fkod.core.api import AUTH_MEMBER, PageQuery, encode_cursor, operation, paginate
from fkod.core.billing import ledger
from fkod.core.billing.models import (
    BillingAccount,
    Invoice,
    InvoiceLine,
    PartnerRevenue,
    Payment,
    Payout,
    RevenueLine,
)
from fkod.core.billing.invoicing import customer_account
from fkod.core.billing.money import round_cents
from fkod.core.billing.payouts import PAYOUT_METHODS, request_payout
from fkod.core.billing.periods import Period
from fkod.core.billing.providers import PaymentProviderError, payment_providers
from fkod.core.errors import ApiError, NotFound, ServiceUnavailable, ValidationFailed, field_error
from fkod.core.ids import parse_id
from fkod.partners.billing_schemas import (
    InvoiceDetailSchema,
    InvoiceListQuery,
    InvoiceSchema,
    PaymentMethodBody,
    PaymentMethodSetupSchema,
    PayoutMethodBody,
    PayoutMethodSchema,
    PayoutRequestBody,
    PayoutSchema,
    PayoutStatementSchema,
    RevenueDetailSchema,
    RevenueReportSchema,
    month,
)
from fkod.partners.verification import mask

log = logging.getLogger(__name__)

revenue = Service(name="partner_revenue", path="/api/partners/revenue",
                  description="The partner's revenue share per period, balance and payouts")
revenue_period = Service(name="partner_revenue_period", path="/api/partners/revenue/{period}",
                         description="One period's revenue and its lines")
invoices = Service(name="partner_invoices", path="/api/partners/invoices",
                   description="The partner's plan invoices")
invoice = Service(name="partner_invoice", path="/api/partners/invoices/{id}",
                  description="One plan invoice with its lines and payments")
payout_request = Service(name="partner_payout_request", path="/api/partners/payout",
                         description="Request a payout of the balance")
payouts = Service(name="partner_payouts", path="/api/partners/payouts",
                  description="The partner's payouts")
payout = Service(name="partner_payout", path="/api/partners/payouts/{id}",
                 description="One payout")
payout_method = Service(name="partner_payout_method", path="/api/partners/payout-method",
                        description="Where the partner's payouts go")
payment_method = Service(name="partner_billing_payment_method",
                         path="/api/partners/billing/payment-method",
                         description="Add a payment method for the partner's plan invoices")

SERVICES = (revenue, revenue_period, invoices, invoice, payout_request, payouts, payout,
            payout_method, payment_method)
NOT_FOUND = ((404, "not_found"),)
# The revenue report lists this many newest payouts. GET /api/partners/payouts lists all.
STATEMENT_PAYOUTS = 24
LOOPBACK_HOSTS = ("localhost",)


# Shared with the admin views ----------------------------------------------------------


def row_dict(row) -> dict:
    """Return a model row's columns as a dict, so a response can add fields to them."""
    return {column.key: getattr(row, column.key)
            for column in sa.inspect(row).mapper.column_attrs}


def payout_statements(session, rows: list[Payout]) -> list[dict]:
    """Return payouts as dicts with ``periods``: the partner_revenue rows each one paid."""
    keys = {(row.partner_id, row.paid_at) for row in rows if row.paid_at is not None}
    paid: dict[tuple, list[dict]] = {}
    if keys:
        found = session.scalars(
            sa.select(PartnerRevenue)
            .where(PartnerRevenue.partner_id.in_({partner_id for partner_id, _ in keys}),
                   PartnerRevenue.paid_at.in_({paid_at for _, paid_at in keys}))
            .order_by(PartnerRevenue.period_start))
        for period in found:
            paid.setdefault((period.partner_id, period.paid_at), []).append(
                {"period": month(period.period_start), "partner_share": period.partner_share})
    statements = []
    for row in rows:
        statement = row_dict(row)
        statement["periods"] = paid.get((row.partner_id, row.paid_at), []) \
            if row.paid_at is not None else []
        statements.append(statement)
    return statements


def revenue_totals(session, condition) -> dict:
    """Return the sums of the partner_revenue rows that match ``condition``."""
    totals = session.execute(
        sa.select(sa.func.coalesce(sa.func.sum(PartnerRevenue.api_calls), 0),
                  sa.func.coalesce(sa.func.sum(PartnerRevenue.revenue), 0),
                  sa.func.coalesce(sa.func.sum(PartnerRevenue.commission_amount), 0),
                  sa.func.coalesce(sa.func.sum(PartnerRevenue.partner_share), 0))
        .where(condition)).one()
    return {"api_calls": int(totals[0]), "revenue": round_cents(Decimal(totals[1])),
            "commission_amount": round_cents(Decimal(totals[2])),
            "partner_share": round_cents(Decimal(totals[3]))}


def invoice_detail(session, row: Invoice) -> dict:
    """Return an invoice as a dict with its lines and payments, oldest first."""
    detail = row_dict(row)
    detail["lines"] = session.scalars(sa.select(InvoiceLine).where(
        InvoiceLine.invoice_id == row.id).order_by(InvoiceLine.id)).all()
    detail["payments"] = session.scalars(sa.select(Payment).where(
        Payment.invoice_id == row.id).order_by(Payment.id)).all()
    return detail


def provider_failure(exc: PaymentProviderError, provider: str) -> ApiError:
    """Turn a provider's refusal into a 502, and a failure worth retrying into a 503."""
    log.warning("payment provider call failed", extra={
        "provider": provider, "retryable": exc.retryable, "error": str(exc)[:300]})
    if exc.retryable:
        return ServiceUnavailable(
            f"The payment provider {provider} is unavailable; retry later. ({str(exc)[:200]})",
            code="payment_provider_unavailable")
    return ApiError(f"The payment provider {provider} rejected the request: {str(exc)[:300]}",
                    code="payment_provider_error", status=502)


def provider_missing(provider: str) -> ServiceUnavailable:
    return ServiceUnavailable(f"The payment provider {provider} is not enabled.",
                              code="payment_provider_unavailable")


# Revenue ------------------------------------------------------------------------------


def _month_number(day) -> int:
    return day.year * 100 + day.month


@operation(revenue, "GET", summary="List the partner's revenue per period, newest first, with "
           "totals, balance and payout statements", auth=AUTH_MEMBER, permission="billing:read",
           query=PageQuery, response=RevenueReportSchema)
def get_revenue(request):
    session = request.dbsession
    partner_id = request.partner.id
    select = sa.select(PartnerRevenue).where(PartnerRevenue.partner_id == partner_id)

    cursor = request.query.get("cursor")
    if cursor is not None:
        # The cursor is the last period shown, as the number YYYYMM.
        year, number = divmod(cursor, 100)
        try:
            before = Period(year, number).start
        except ValueError:
            raise ValidationFailed("Invalid querystring field cursor: not a cursor this API "
                                   "returned.", errors=[field_error(
                                       "querystring", "cursor",
                                       "Not a cursor this API returned.")]) from None
        select = select.where(PartnerRevenue.period_start < before)
    limit = request.query["limit"]
    rows = session.scalars(select.order_by(PartnerRevenue.period_start.desc())
                           .limit(limit + 1)).all()
    has_more = len(rows) > limit
    rows = rows[:limit]

    recent = session.scalars(sa.select(Payout).where(Payout.partner_id == partner_id)
                             .order_by(Payout.id.desc()).limit(STATEMENT_PAYOUTS)).all()
    next_cursor = None
    if has_more and rows:
        next_cursor = encode_cursor(_month_number(rows[-1].period_start))
    return {
        "data": rows,
        "has_more": has_more,
        "next_cursor": next_cursor,
        "totals": revenue_totals(session, PartnerRevenue.partner_id == partner_id),
        "balance": ledger.partner_balance(session, partner_id),
        "payouts": payout_statements(session, recent),
    }


@operation(revenue_period, "GET", summary="Get one period's revenue with its revenue lines",
           auth=AUTH_MEMBER, permission="billing:read", response=RevenueDetailSchema,
           errors=((400, "validation_failed"),) + NOT_FOUND)
def get_revenue_period(request):
    text = request.matchdict["period"]
    try:
        period = Period.parse(text)
    except ValueError as exc:
        raise ValidationFailed(f"Invalid path field period: {exc}.",
                               errors=[field_error("path", "period", str(exc))]) from None
    session = request.dbsession
    row = session.scalar(sa.select(PartnerRevenue).where(
        PartnerRevenue.partner_id == request.partner.id,
        PartnerRevenue.period_start == period.start))
    if row is None:
        raise NotFound(f"No revenue for {period}.",
                       errors=[field_error("path", "period", "no revenue in this period")])
    detail = row_dict(row)
    detail["lines"] = session.scalars(sa.select(RevenueLine).where(
        RevenueLine.partner_id == request.partner.id,
        RevenueLine.period_start == period.start).order_by(RevenueLine.id)).all()
    return detail


# Invoices -----------------------------------------------------------------------------


def _plan_invoices(partner_id: int):
    return sa.select(Invoice).where(Invoice.kind == "plan", Invoice.partner_id == partner_id)


@operation(invoices, "GET", summary="List the partner's plan invoices, newest first",
           auth=AUTH_MEMBER, permission="billing:read", query=InvoiceListQuery,
           response=InvoiceSchema, paginated=True)
def list_invoices(request):
    select = _plan_invoices(request.partner.id)
    if request.query.get("status"):
        select = select.where(Invoice.status == request.query["status"])
    return paginate(select, Invoice.id, request.query, request.dbsession)


@operation(invoice, "GET", summary="Get one plan invoice with its lines and payments",
           auth=AUTH_MEMBER, permission="billing:read", response=InvoiceDetailSchema,
           errors=NOT_FOUND)
def get_invoice(request):
    number = parse_id("inv", request.matchdict["id"], noun="invoice")
    row = request.dbsession.scalar(_plan_invoices(request.partner.id)
                                   .where(Invoice.id == number))
    if row is None:
        raise NotFound(f"No invoice with id {request.matchdict['id']!r}.")
    return invoice_detail(request.dbsession, row)


# Payouts ------------------------------------------------------------------------------


@operation(payout_request, "POST", summary="Request a payout of the balance or of an amount",
           auth=AUTH_MEMBER, permission="billing:write", body=PayoutRequestBody,
           response=PayoutSchema, status=201,
           errors=((409, "payout_below_minimum"), (409, "payout_already_open"),
                   (409, "amount_exceeds_balance"), (409, "payout_method_missing"),
                   (409, "partner_not_verified")))
def create_payout(request):
    return request_payout(request, request.partner, request.validated.get("amount"))


@operation(payouts, "GET", summary="List the partner's payouts, newest first", auth=AUTH_MEMBER,
           permission="billing:read", query=PageQuery, response=PayoutStatementSchema,
           paginated=True)
def list_payouts(request):
    page = paginate(sa.select(Payout).where(Payout.partner_id == request.partner.id), Payout.id,
                    request.query, request.dbsession)
    page.items = payout_statements(request.dbsession, list(page.items))
    return page


@operation(payout, "GET", summary="Get one payout with the periods it paid", auth=AUTH_MEMBER,
           permission="billing:read", response=PayoutStatementSchema, errors=NOT_FOUND)
def get_payout(request):
    number = parse_id("po", request.matchdict["id"], noun="payout")
    row = request.dbsession.scalar(sa.select(Payout).where(
        Payout.id == number, Payout.partner_id == request.partner.id))
    if row is None:
        raise NotFound(f"No payout with id {request.matchdict['id']!r}.")
    return payout_statements(request.dbsession, [row])[0]


# Payout method ------------------------------------------------------------------------


def _describe_method(request, partner) -> dict:
    method = partner.payout_method
    provider = PAYOUT_METHODS.get(method) if method else None
    return {
        "method": method,
        "destination": mask(request.registry["webhook_vault"], partner.payout_destination),
        "provider": provider,
        "provider_enabled": bool(provider and payment_providers(request.registry).get(provider)),
    }


@operation(payout_method, "GET", summary="Get the partner's payout method, destination masked",
           auth=AUTH_MEMBER, permission="billing:read", response=PayoutMethodSchema)
def get_payout_method(request):
    return _describe_method(request, request.partner)


@operation(payout_method, "PUT", summary="Set the payout method and destination",
           auth=AUTH_MEMBER, permission="billing:write", body=PayoutMethodBody,
           response=PayoutMethodSchema)
def put_payout_method(request):
    partner = request.partner
    data = request.validated
    method = data.get("method", partner.payout_method)
    if method not in PAYOUT_METHODS:
        raise ValidationFailed("Invalid body field method: give a payout method first.",
                               errors=[field_error("body", "method", "no payout method is set")])
    provider = payment_providers(request.registry).get(PAYOUT_METHODS[method])
    if provider is None:
        raise ValidationFailed(
            f"Invalid body field method: payouts by {method} are not available.",
            errors=[field_error("body", "method",
                                f"the {PAYOUT_METHODS[method]} provider is not enabled")])
    destination = data["destination"]
    problem = provider.check_payout_destination(destination)
    if problem is not None:
        raise ValidationFailed(f"Invalid body field destination: {problem}.",
                               errors=[field_error("body", "destination", problem)])
    previous = partner.payout_method
    token = request.registry["webhook_vault"].encrypt(destination)
    partner.payout_method = method
    partner.payout_destination = token
    if method == "bank_transfer":
        partner.bank_account = token
    audit.record(request, "payout_method.changed", partner_id=partner.id, target_type="partner",
                 target_id=f"partner_{partner.id}",
                 details={"method": method, "previous_method": previous,
                          "fields": ["payout_method", "payout_destination"]})
    request.dbsession.flush()
    return _describe_method(request, partner)


# Payment method for plan invoices -----------------------------------------------------


def _check_return_url(url: str) -> None:
    parts = urllib.parse.urlsplit(url)
    host = (parts.hostname or "").lower()
    problem = None
    if parts.scheme not in ("https", "http") or not host:
        problem = "must be an absolute https URL"
    elif parts.scheme == "http" and not _is_loopback(host):
        problem = "must use https (plain http only on a loopback address)"
    if problem:
        raise ValidationFailed(f"Invalid body field return_url: {problem}.",
                               errors=[field_error("body", "return_url", problem)])


def _is_loopback(host: str) -> bool:
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def partner_billing_account(request, provider, partner) -> BillingAccount:
    """Return the partner's customer at ``provider``, creating it there when missing."""
    return customer_account(request.registry, request.dbsession, provider, partner=partner)


@operation(payment_method, "POST", summary="Start adding a payment method for plan invoices",
           auth=AUTH_MEMBER, permission="billing:write", body=PaymentMethodBody,
           response=PaymentMethodSetupSchema, no_store=True,
           errors=((502, "payment_provider_error"), (503, "payment_provider_unavailable")))
def set_up_payment_method(request):
    return_url = request.validated["return_url"]
    _check_return_url(return_url)
    partner = request.partner
    name = partner.billing_provider or request.registry.settings["fkod.billing.default_provider"]
    provider = payment_providers(request.registry).get(name)
    if provider is None:
        raise provider_missing(name)
    try:
        account = partner_billing_account(request, provider, partner)
        setup = provider.set_up_payment_method(account.provider_customer_id,
                                               return_url=return_url)
    except PaymentProviderError as exc:
        raise provider_failure(exc, name) from None
    return {"provider": provider.name, "setup_id": setup.setup_id,
            "client_secret": setup.client_secret, "redirect_url": setup.redirect_url}


def includeme(config):
    for service in SERVICES:
        config.add_cornice_service(service)
