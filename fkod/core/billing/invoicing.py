"""Closing a billing period: usage to invoices, revenue share, and collecting payments.

:func:`close_period` turns one calendar month into:

- a ``plan`` invoice per partner. It holds the fee of the plan in effect
  when the month began and the proration of upgrades made during it. Its
  overage line bills the live calls beyond the included volume of the plan
  in effect at the month's end, at that plan's per-request price;
- an ``integrations`` invoice per customer for the paid integrations
  installed at any time in the month, at their monthly price;
- revenue lines crediting each integration's partner with its share of
  those install fees and of its per-call price times the live calls made
  with keys linked to the integration;
- one ``partner_revenue`` row per partner and period, the sums of its lines.

Closing the same period again creates nothing: invoices are unique per
party and period, revenue lines and ledger transactions per reference.
Billable calls are live calls that the gateway answered with a status
below 500 other than 429: refused and failed calls cost nothing.

Collecting an invoice charges it through its payment provider in three
steps, each safe to repeat: a payment row with a stable idempotency key is
committed, the provider is called with that key, and the result is stored.
A worker killed between the steps leaves a ``processing`` payment that the
sweeper charges again with the same key, so a retry never bills twice.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections import defaultdict
from decimal import Decimal

import sqlalchemy as sa

from fkod.core.auth.models import ApiKey, Partner, User
from fkod.core.auth.oauth_models import OAuthClient
from fkod.core.billing import ledger
from fkod.core.billing.ledger import credit, debit
from fkod.core.billing.models import (
    BillingAccount,
    Invoice,
    InvoiceLine,
    PartnerRevenue,
    Payment,
    PlanChange,
    RevenueLine,
)
from fkod.core.billing.money import (
    CURRENCY,
    ZERO,
    allocate,
    format_usd,
    percent_from_fraction,
    round_cents,
    split,
)
from fkod.core.billing.periods import Period
from fkod.core.billing.plans import apply_due_changes, plan_at
from fkod.core.billing.providers import (
    ChargeRequest,
    CustomerDetails,
    PaymentProviderError,
    payment_providers,
)
from fkod.core.db import read_only, run_in_transaction, utcnow
from fkod.core.metering.models import ApiUsageHourly
from fkod.core.metering.rollup import read_rolled_until, rollup_usage
from fkod.core.webhooks.outbox import publish_event

log = logging.getLogger(__name__)

# A customer invoice whose payment failed this many times is uncollectible.
MAX_COLLECTION_ATTEMPTS = 3
COLLECTION_RETRY_DELAY = dt.timedelta(days=1)
PAYMENT_EVENT = "payment.processed"


class PeriodNotReady(Exception):
    """The period has not ended, or its usage is not rolled up yet; try again later."""


@dataclasses.dataclass
class CloseSummary:
    period: str
    plan_invoices: int = 0
    customer_invoices: int = 0
    revenue_lines: int = 0
    invoices_to_collect: list[int] = dataclasses.field(default_factory=list)


def billable_status():
    """Return the condition for calls that count toward quotas and bills."""
    return sa.and_(ApiUsageHourly.status_code < 500, ApiUsageHourly.status_code != 429)


def commission_percent(partner: Partner, settings: dict) -> Decimal:
    """Return the partner's commission rate in percent: its override, else the platform's."""
    if partner.commission_rate is not None:
        return percent_from_fraction(partner.commission_rate)
    return Decimal(settings["fkod.billing.commission_rate_percent"])


# Closing a period ---------------------------------------------------------------


def close_period(registry, period: Period, *, now: dt.datetime | None = None) -> CloseSummary:
    """Close ``period``: invoices, revenue lines and partner_revenue rows; idempotent.

    Raises :class:`PeriodNotReady` before the month has ended or while its
    last hours are not rolled up. After the commit, the open invoices are
    queued for collection.
    """
    now = now or utcnow()
    if period.end_at > now:
        raise PeriodNotReady(f"{period} has not ended yet.")
    engine = registry["db.engine"]
    rollup_usage(engine, now=now)
    rolled_until = read_only(engine, read_rolled_until)
    # With no usage ever recorded (rolled_until None) there is nothing to wait for.
    if rolled_until is not None and rolled_until < period.end_at:
        raise PeriodNotReady(f"Usage of {period} is rolled up only until {rolled_until}.")

    settings = registry.settings

    def work(session):
        apply_due_changes(session, now)
        summary = CloseSummary(period=str(period))
        _close_plan_invoices(session, settings, period, summary)
        _close_customer_invoices(session, settings, period, summary)
        _credit_call_revenue(session, settings, period, summary)
        for partner_id in _partners_with_lines(session, period):
            refresh_partner_revenue(session, settings, partner_id, period)
        summary.invoices_to_collect = list(session.scalars(
            sa.select(Invoice.id).where(Invoice.status == "open",
                                        Invoice.period_start == period.start)))
        return summary

    summary = run_in_transaction(registry["db.session_factory"], work)
    for invoice_id in summary.invoices_to_collect:
        registry["tasks"].send(COLLECT_ACTOR, invoice_id)
    log.info("billing period closed", extra={
        "period": summary.period, "plan_invoices": summary.plan_invoices,
        "customer_invoices": summary.customer_invoices,
        "revenue_lines": summary.revenue_lines})
    return summary


def _existing_invoice(session, kind: str, period: Period, *, partner_id=None, user_id=None):
    select = sa.select(Invoice.id).where(Invoice.kind == kind,
                                         Invoice.period_start == period.start)
    if partner_id is not None:
        select = select.where(Invoice.partner_id == partner_id)
    else:
        select = select.where(Invoice.user_id == user_id)
    return session.scalar(select)


def billable_calls(session, period: Period, *, partner_id: int | None = None,
                   by_integration: bool = False):
    """Count live billable calls in ``period`` per partner, or per integration."""
    window = (ApiUsageHourly.livemode.is_(True), billable_status(),
              ApiUsageHourly.hour >= period.start_at, ApiUsageHourly.hour < period.end_at)
    if by_integration:
        # A call earns for the integration its key or its OAuth application is linked to.
        totals: dict[int, int] = defaultdict(int)
        for credential, column in ((ApiKey, ApiUsageHourly.api_key_id),
                                   (OAuthClient, ApiUsageHourly.oauth_client_id)):
            rows = session.execute(
                sa.select(credential.integration_id, sa.func.sum(ApiUsageHourly.request_count))
                .join(credential, credential.id == column)
                .where(*window, credential.integration_id.is_not(None))
                .group_by(credential.integration_id)).all()
            for integration_id, count in rows:
                totals[integration_id] += int(count)
        return sorted(totals.items())
    select = sa.select(ApiUsageHourly.partner_id, sa.func.sum(ApiUsageHourly.request_count)) \
        .where(*window, ApiUsageHourly.partner_id.is_not(None)) \
        .group_by(ApiUsageHourly.partner_id)
    if partner_id is not None:
        select = select.where(ApiUsageHourly.partner_id == partner_id)
    return session.execute(select).all()


def _close_plan_invoices(session, settings, period: Period, summary: CloseSummary) -> None:
    calls = {partner_id: int(count) for partner_id, count in billable_calls(session, period)}
    prorations = defaultdict(list)
    for change in session.scalars(
            sa.select(PlanChange).where(PlanChange.status == "applied",
                                        PlanChange.effective_at >= period.start_at,
                                        PlanChange.effective_at < period.end_at,
                                        PlanChange.proration > 0)
            .order_by(PlanChange.effective_at, PlanChange.id)):
        prorations[change.partner_id].append(change)

    partners = session.scalars(
        sa.select(Partner).where(Partner.created_at < period.end_at).order_by(Partner.id))
    for partner in partners:
        if _existing_invoice(session, "plan", period, partner_id=partner.id):
            continue
        lines = _plan_lines(session, partner, period, calls.get(partner.id, 0),
                            prorations.get(partner.id, []))
        if not lines:
            continue
        invoice = _issue(session, settings, period, lines, kind="plan", partner_id=partner.id,
                         provider=partner.billing_provider)
        if invoice.total:
            ledger.post(session, kind="invoice", reference=f"invoice:{invoice.id}",
                        description=f"Plan invoice inv_{invoice.id} for {period}",
                        lines=[debit(ledger.RECEIVABLE, invoice.total),
                               credit(ledger.PLAN_REVENUE, invoice.total)])
        summary.plan_invoices += 1


def _plan_lines(session, partner, period: Period, calls: int, prorations) -> list[InvoiceLine]:
    start_plan = plan_at(session, partner, period.start_at)
    end_plan = plan_at(session, partner, period.end_at - dt.timedelta(microseconds=1))
    lines = []
    if start_plan is not None and start_plan.price_monthly > 0:
        lines.append(InvoiceLine(kind="plan_fee", description=f"{start_plan.name} plan, {period}",
                                 quantity=1, unit_price=start_plan.price_monthly,
                                 amount=round_cents(start_plan.price_monthly)))
    for change in prorations:
        lines.append(InvoiceLine(
            kind="proration", quantity=1, unit_price=change.proration, amount=change.proration,
            description=f"Upgrade on {change.effective_at:%Y-%m-%d %H:%M} UTC, rest of {period}",
            details={"plan_change_id": change.id}))
    if calls and end_plan is not None:
        included = end_plan.included_requests_monthly
        over = 0 if included is None else max(0, calls - included)
        price = end_plan.overage_price_per_request
        # Overage is rounded once, half up to the cent, over the whole quantity.
        lines.append(InvoiceLine(
            kind="overage", quantity=over, unit_price=price, amount=round_cents(over * price),
            description=f"{over:,} calls beyond the {end_plan.name} plan's included volume",
            details={"billable_calls": calls, "included": included, "plan": end_plan.code}))
    return lines


def _issue(session, settings, period: Period, lines: list[InvoiceLine], *, kind: str,
           provider: str | None, partner_id: int | None = None,
           user_id: int | None = None) -> Invoice:
    total = sum((line.amount for line in lines), ZERO)
    now = utcnow()
    invoice = Invoice(kind=kind, partner_id=partner_id, user_id=user_id,
                      period_start=period.start, period_end=period.end, currency=CURRENCY,
                      total=total, status="open" if total > 0 else "paid",
                      provider=provider or settings["fkod.billing.default_provider"],
                      issued_at=now, paid_at=None if total > 0 else now)
    session.add(invoice)
    session.flush()
    for line in lines:
        line.invoice_id = invoice.id
        session.add(line)
    session.flush()
    return invoice


def _close_customer_invoices(session, settings, period: Period, summary: CloseSummary) -> None:
    from fkod.marketplace.models import Integration, IntegrationInstall

    installs = session.execute(
        sa.select(IntegrationInstall, Integration)
        .join(Integration, Integration.id == IntegrationInstall.integration_id)
        .where(Integration.pricing_model == "paid", Integration.price_cents > 0,
               IntegrationInstall.installed_at < period.end_at,
               sa.or_(IntegrationInstall.uninstalled_at.is_(None),
                      IntegrationInstall.uninstalled_at >= period.start_at))
        .order_by(IntegrationInstall.user_id, IntegrationInstall.id)).all()
    by_user = defaultdict(list)
    for install, integration in installs:
        # An install's uninstalled_at is reset on reinstall, so an uninstalled row
        # without a date counts from installed_at.
        if install.status != "active" and install.uninstalled_at is None:
            continue
        by_user[install.user_id].append((install, integration))

    for user_id, items in by_user.items():
        if _existing_invoice(session, "integrations", period, user_id=user_id):
            continue
        lines = []
        for install, integration in items:
            price = Decimal(integration.price_cents) / 100
            lines.append(InvoiceLine(
                kind="install_fee", quantity=1, unit_price=price, amount=round_cents(price),
                description=f"{integration.name}, {period}", integration_id=integration.id,
                install_id=install.id))
        invoice = _issue(session, settings, period, lines, kind="integrations", user_id=user_id,
                         provider=None)
        summary.customer_invoices += 1
        entries = [debit(ledger.RECEIVABLE, invoice.total)]
        owners = {integration.id: integration.partner_id for _install, integration in items}
        for line in lines:
            partner = session.get(Partner, owners[line.integration_id])
            revenue = _revenue_line(
                session, settings, partner, period, kind="install_fee",
                reference=f"install_fee:{line.id}", gross=line.amount,
                integration_id=line.integration_id, description=line.description)
            entries += [credit(ledger.PARTNER_PAYABLE, revenue.partner_share, partner.id),
                        credit(ledger.COMMISSION, revenue.commission)]
            summary.revenue_lines += 1
        transaction, _new = ledger.post(
            session, kind="invoice", reference=f"invoice:{invoice.id}",
            description=f"Customer invoice inv_{invoice.id} for {period}", lines=entries)
        _link_revenue(session, invoice, transaction.id)


def _link_revenue(session, invoice: Invoice, transaction_id: int) -> None:
    line_ids = session.scalars(sa.select(InvoiceLine.id)
                               .where(InvoiceLine.invoice_id == invoice.id)).all()
    references = [f"install_fee:{line_id}" for line_id in line_ids]
    session.execute(sa.update(RevenueLine).where(RevenueLine.reference.in_(references))
                    .values(ledger_transaction_id=transaction_id))


def _revenue_line(session, settings, partner: Partner, period: Period, *, kind: str,
                  reference: str, gross: Decimal, description: str,
                  integration_id: int | None, api_calls: int = 0,
                  rate: Decimal | None = None) -> RevenueLine:
    rate = commission_percent(partner, settings) if rate is None else rate
    commission, share = split(gross, rate)
    line = RevenueLine(partner_id=partner.id, period_start=period.start,
                       integration_id=integration_id, kind=kind, reference=reference,
                       description=description[:255], api_calls=api_calls,
                       gross=round_cents(gross),
                       commission_rate=rate, commission=commission, partner_share=share)
    session.add(line)
    session.flush()
    return line


def _credit_call_revenue(session, settings, period: Period, summary: CloseSummary) -> None:
    from fkod.marketplace.models import Integration

    for integration_id, count in billable_calls(session, period, by_integration=True):
        integration = session.get(Integration, integration_id)
        if integration is None or not integration.price_per_call or not count:
            continue
        reference = f"call_fee:{period}:{integration.id}"
        if session.scalar(sa.select(RevenueLine.id).where(RevenueLine.reference == reference)):
            continue
        partner = session.get(Partner, integration.partner_id)
        count = int(count)
        # The per-call gross is rounded once per integration and period, half up.
        gross = round_cents(count * integration.price_per_call)
        revenue = _revenue_line(
            session, settings, partner, period, kind="call_fee", reference=reference,
            gross=gross, integration_id=integration.id, api_calls=count,
            description=f"{count:,} calls of {integration.name} at "
                        f"${integration.price_per_call.normalize():f}")
        transaction, _new = ledger.post(
            session, kind="revenue", reference=reference,
            description=f"Per-call revenue of int_{integration.id} for {period}",
            lines=[debit(ledger.MARKETPLACE_FUNDING, gross),
                   credit(ledger.PARTNER_PAYABLE, revenue.partner_share, partner.id),
                   credit(ledger.COMMISSION, revenue.commission)])
        revenue.ledger_transaction_id = transaction.id
        summary.revenue_lines += 1


def _partners_with_lines(session, period: Period) -> list[int]:
    return list(session.scalars(
        sa.select(RevenueLine.partner_id).where(RevenueLine.period_start == period.start)
        .distinct()))


def refresh_partner_revenue(session, settings, partner_id: int, period: Period) -> PartnerRevenue:
    """Set the partner's partner_revenue row of ``period`` to the sums of its lines."""
    totals = session.execute(
        sa.select(sa.func.coalesce(sa.func.sum(RevenueLine.api_calls), 0),
                  sa.func.coalesce(sa.func.sum(RevenueLine.gross), 0),
                  sa.func.coalesce(sa.func.sum(RevenueLine.commission), 0),
                  sa.func.coalesce(sa.func.sum(RevenueLine.partner_share), 0))
        .where(RevenueLine.partner_id == partner_id, RevenueLine.period_start == period.start)
    ).one()
    row = session.scalar(sa.select(PartnerRevenue).where(
        PartnerRevenue.partner_id == partner_id, PartnerRevenue.period_start == period.start))
    if row is None:
        row = PartnerRevenue(partner_id=partner_id, period_start=period.start,
                             period_end=period.end, status="pending")
        session.add(row)
    partner = session.get(Partner, partner_id)
    row.api_calls = int(totals[0])
    row.revenue = round_cents(Decimal(totals[1]))
    row.commission_amount = round_cents(Decimal(totals[2]))
    row.partner_share = round_cents(Decimal(totals[3]))
    row.commission_rate = commission_percent(partner, settings)
    session.flush()
    return row


# Collecting ----------------------------------------------------------------------


COLLECT_ACTOR = "billing.collect_invoice"


def _partner_details(session, partner: Partner, livemode: bool) -> CustomerDetails:
    owner = session.get(User, partner.user_id) if partner.user_id else None
    email = partner.contact_email or (owner.email if owner else "")
    return CustomerDetails(reference=f"partner_{partner.id}", email=email,
                           name=partner.company_name, livemode=livemode)


def _livemode(registry) -> bool:
    # Only production moves real money; elsewhere providers run with test keys.
    return registry.settings["fkod.environment"] == "production"


def customer_account(registry, session, provider, *, partner: Partner | None = None,
                     user: User | None = None) -> BillingAccount:
    """Return the partner's or user's customer at ``provider``, creating it when missing."""
    livemode = _livemode(registry)
    if partner is not None:
        owner_type, owner_id = "partner", partner.id
    else:
        owner_type, owner_id = "user", user.id
    account = session.scalar(sa.select(BillingAccount).where(
        BillingAccount.owner_type == owner_type, BillingAccount.owner_id == owner_id,
        BillingAccount.provider == provider.name, BillingAccount.livemode.is_(livemode)))
    if account is not None:
        return account
    if partner is not None:
        details = _partner_details(session, partner, livemode)
    else:
        details = CustomerDetails(reference=f"user_{user.id}", email=user.email,
                                  name=user.name or user.email, livemode=livemode)
    created = provider.create_customer(details)
    account = BillingAccount(owner_type=owner_type, owner_id=owner_id, provider=provider.name,
                             livemode=livemode,
                             provider_customer_id=created.provider_customer_id)
    session.add(account)
    session.flush()
    return account


def billing_account(registry, session, provider, invoice: Invoice) -> BillingAccount:
    """Return the invoice owner's customer at ``provider``, creating it when missing."""
    if invoice.partner_id is not None:
        return customer_account(registry, session, provider,
                                partner=session.get(Partner, invoice.partner_id))
    return customer_account(registry, session, provider, user=session.get(User, invoice.user_id))


def collect_invoice(registry, invoice_id: int) -> Payment | None:
    """Charge an open invoice through its provider; safe to run again at any step."""
    providers = payment_providers(registry)
    session_factory = registry["db.session_factory"]
    stuck_after = dt.timedelta(seconds=registry.settings["fkod.billing.stuck_after_seconds"])

    def prepare(session):
        invoice = session.get(Invoice, invoice_id, with_for_update=True)
        if invoice is None or invoice.status != "open":
            return None
        provider = providers.get(invoice.provider)
        if provider is None:
            log.warning("invoice provider unavailable", extra={
                "invoice_id": invoice_id, "provider": invoice.provider})
            return None
        payments = session.scalars(sa.select(Payment).where(Payment.invoice_id == invoice_id)
                                   .order_by(Payment.id)).all()
        live = [p for p in payments if p.status in ("processing", "pending", "succeeded")]
        if live:
            payment = live[-1]
            # A processing payment older than the limit lost its worker: charge again
            # with the same key, which the provider treats as the same charge.
            if payment.status != "processing" or payment.updated_at > utcnow() - stuck_after:
                return None
            payment.updated_at = utcnow()
        else:
            attempt = len(payments) + 1
            payment = Payment(invoice_id=invoice.id, provider=provider.name,
                              idempotency_key=f"fkod-invoice-{invoice.id}-{attempt}",
                              amount=invoice.total - invoice.amount_refunded,
                              currency=invoice.currency, status="processing")
            session.add(payment)
        account = billing_account(registry, session, provider, invoice)
        session.flush()
        collection = "charge_automatically" if account.payment_method_ready else "send_invoice"
        request = ChargeRequest(
            provider_customer_id=account.provider_customer_id, amount=payment.amount,
            currency=payment.currency, idempotency_key=payment.idempotency_key,
            description=f"F-KOD invoice inv_{invoice.id} ({invoice.period_start:%Y-%m})",
            collection=collection,
            days_until_due=(registry.settings["fkod.billing.invoice_days_until_due"]
                            if collection == "send_invoice" else None),
            metadata={"fkod_invoice": f"inv_{invoice.id}", "fkod_payment": f"pay_{payment.id}"})
        return payment.id, provider, request

    try:
        prepared = run_in_transaction(session_factory, prepare)
    except PaymentProviderError as exc:
        log.warning("could not create the billing customer",
                    extra={"invoice_id": invoice_id, "error": str(exc)[:300]})
        return None
    if prepared is None:
        return None
    payment_id, provider, charge = prepared
    try:
        result = provider.charge(charge)
    except PaymentProviderError as exc:
        log.warning("charge failed", extra={"invoice_id": invoice_id, "retryable": exc.retryable,
                                            "error": str(exc)[:300]})
        if exc.retryable:
            # The payment stays processing; the sweeper charges again with the same key.
            return None
        reason = str(exc)
        return run_in_transaction(session_factory, lambda session: _record_failure(
            registry, session, payment_id, None, reason))

    def store(session):
        payment = session.get(Payment, payment_id, with_for_update=True)
        payment.provider_payment_id = result.provider_id
        if result.status == "succeeded":
            mark_payment_succeeded(registry, session, payment, utcnow())
        elif result.status == "failed":
            _record_failure(registry, session, payment_id, result.provider_id,
                            result.failure_reason or "declined")
        elif payment.status == "processing":
            payment.status = "pending"
        return payment

    return run_in_transaction(session_factory, store)


def _record_failure(registry, session, payment_id: int, provider_id: str | None,
                    reason: str) -> Payment:
    payment = session.get(Payment, payment_id, with_for_update=True)
    if payment.status == "succeeded":
        return payment
    payment.status = "failed"
    payment.failure_reason = reason[:500]
    if provider_id:
        payment.provider_payment_id = provider_id
    invoice = session.get(Invoice, payment.invoice_id, with_for_update=True)
    failures = session.scalar(sa.select(sa.func.count()).select_from(Payment).where(
        Payment.invoice_id == invoice.id, Payment.status == "failed"))
    if invoice.status == "open" and failures >= MAX_COLLECTION_ATTEMPTS:
        invoice.status = "uncollectible"
        # Partners are not paid for sales the customer never paid for.
        reverse_revenue(registry.settings, session, invoice, invoice.total, kind="uncollectible",
                        reference=f"uncollectible:{invoice.id}", payment=None)
    log.info("payment failed", extra={"payment_id": payment.id, "invoice_id": invoice.id})
    return payment


def mark_payment_succeeded(registry, session, payment: Payment, when: dt.datetime) -> bool:
    """Record a succeeded payment: the invoice is paid and payment.processed is published.

    Returns False when it was recorded before.
    """
    if payment.status == "succeeded":
        return False
    payment.status = "succeeded"
    payment.succeeded_at = when
    payment.failure_reason = None
    invoice = session.get(Invoice, payment.invoice_id, with_for_update=True)
    invoice.status = "paid"
    invoice.paid_at = when
    ledger.post(session, kind="payment", reference=f"payment:{payment.id}",
                description=f"Payment pay_{payment.id} of inv_{invoice.id}",
                lines=[debit(ledger.CASH, payment.amount),
                       credit(ledger.RECEIVABLE, payment.amount)])
    session.flush()
    _publish_payment(registry, session, payment, invoice)
    log.info("payment succeeded", extra={"payment_id": payment.id, "invoice_id": invoice.id,
                                         "amount": str(payment.amount)})
    return True


def payment_data(payment: Payment, invoice: Invoice) -> dict:
    return {
        "id": f"pay_{payment.id}", "invoice_id": f"inv_{invoice.id}",
        "amount": f"{payment.amount:.2f}", "currency": payment.currency,
        "status": payment.status, "provider": payment.provider,
        "period": f"{invoice.period_start:%Y-%m}",
        "succeeded_at": payment.succeeded_at.isoformat() + "Z" if payment.succeeded_at else None,
    }


def _publish_payment(registry, session, payment: Payment, invoice: Invoice) -> None:
    if invoice.partner_id is not None:
        partner_ids = [invoice.partner_id]
    else:
        from fkod.marketplace.models import Integration
        partner_ids = list(session.scalars(
            sa.select(Integration.partner_id).join(
                InvoiceLine, InvoiceLine.integration_id == Integration.id)
            .where(InvoiceLine.invoice_id == invoice.id).distinct()))
    publish_event(session, event_type=PAYMENT_EVENT, data=payment_data(payment, invoice),
                  livemode=True, partner_ids=partner_ids, request_id=None,
                  catalog=registry["plugins"].event_catalog)


def reverse_revenue(settings, session, invoice: Invoice, amount: Decimal, *, kind: str,
                    reference: str, payment: Payment | None) -> None:
    """Take ``amount`` of a customer invoice back from its partners and post it.

    The amount is spread over the invoice's lines in proportion to their
    amounts (in whole cents, the last line taking the remainder), and each
    part is split with the commission rate of the sale it reverses. A plan
    invoice's refund reduces plan revenue only.
    """
    amount = round_cents(amount)
    if amount <= 0:
        return
    settle = ledger.CASH if payment is not None else ledger.RECEIVABLE
    if invoice.kind == "plan":
        ledger.post(session, kind=kind, reference=reference,
                    description=f"{kind.capitalize()} of {format_usd(amount)} on inv_{invoice.id}",
                    lines=[debit(ledger.PLAN_REVENUE, amount), credit(settle, amount)])
        return
    lines = session.scalars(sa.select(InvoiceLine).where(InvoiceLine.invoice_id == invoice.id)
                            .order_by(InvoiceLine.id)).all()
    parts = allocate(amount, [line.amount for line in lines])
    period = Period.containing(utcnow())
    entries = [credit(settle, amount)]
    touched = set()
    for line, part in zip(lines, parts, strict=True):
        if not part:
            continue
        sale = session.scalar(sa.select(RevenueLine)
                              .where(RevenueLine.reference == f"install_fee:{line.id}"))
        if sale is None:
            continue
        partner = session.get(Partner, sale.partner_id)
        revenue = _revenue_line(
            session, settings, partner, period, kind=kind if kind != "uncollectible" else "refund",
            reference=f"{reference}:{line.id}", gross=-part, rate=sale.commission_rate,
            integration_id=line.integration_id,
            description=f"{kind.capitalize()} of {line.description}")
        entries += [debit(ledger.PARTNER_PAYABLE, -revenue.partner_share, partner.id),
                    debit(ledger.COMMISSION, -revenue.commission)]
        touched.add(partner.id)
    transaction, _new = ledger.post(
        session, kind=kind, reference=reference,
        description=f"{kind.capitalize()} of {format_usd(amount)} on inv_{invoice.id}",
        lines=entries)
    session.execute(sa.update(RevenueLine).where(RevenueLine.reference.like(f"{reference}:%"))
                    .values(ledger_transaction_id=transaction.id))
    for partner_id in touched:
        refresh_partner_revenue(session, settings, partner_id, period)


def apply_refund(registry, session, payment: Payment, refunded_total: Decimal, *,
                 kind: str = "refund") -> Decimal:
    """Bring the payment's refunded amount up to ``refunded_total``; return the increase.

    Providers report the cumulative refunded amount, so applying the same or
    an older report again changes nothing.
    """
    refunded_total = min(round_cents(refunded_total), payment.amount)
    delta = refunded_total - payment.amount_refunded
    if delta <= 0:
        return ZERO
    invoice = session.get(Invoice, payment.invoice_id, with_for_update=True)
    reverse_revenue(registry.settings, session, invoice, delta, kind=kind,
                    reference=f"{kind}:{payment.id}:{refunded_total}", payment=payment)
    payment.amount_refunded = refunded_total
    invoice.amount_refunded = min(invoice.total, invoice.amount_refunded + delta)
    session.flush()
    log.info("payment refunded", extra={"payment_id": payment.id, "kind": kind,
                                        "amount": str(delta)})
    return delta


def sweep_payments(registry) -> int:
    """Queue collection of open invoices without a live payment and of stuck payments."""
    stuck_before = utcnow() - dt.timedelta(
        seconds=registry.settings["fkod.billing.stuck_after_seconds"])
    retry_before = utcnow() - COLLECTION_RETRY_DELAY

    def find(session):
        live = sa.select(Payment.invoice_id).where(
            Payment.status.in_(("pending", "succeeded")))
        fresh = sa.select(Payment.invoice_id).where(Payment.status == "processing",
                                                    Payment.updated_at > stuck_before)
        # A declined charge is tried again a day later, not at every sweep.
        declined = sa.select(Payment.invoice_id).where(Payment.status == "failed",
                                                       Payment.updated_at > retry_before)
        return list(session.scalars(
            sa.select(Invoice.id).where(Invoice.status == "open", Invoice.id.not_in(live),
                                        Invoice.id.not_in(fresh), Invoice.id.not_in(declined))
            .order_by(Invoice.id).limit(500)))

    invoice_ids = run_in_transaction(registry["db.session_factory"], find)
    for invoice_id in invoice_ids:
        registry["tasks"].send(COLLECT_ACTOR, invoice_id)
    return len(invoice_ids)
