"""Payouts: partners request their balance, the monthly run pays every balance over the minimum.

A payout moves its amount out of the partner's balance when it is created
(``partner_payable`` to ``payouts_in_transit``), so the balance a partner
sees is what is still free. Sending calls the provider of the partner's
payout method with the payout's idempotency key; a paid payout leaves
``payouts_in_transit`` for ``cash``, a failed one goes back to the balance.

Statuses: ``pending`` (created, not sent), ``on_hold`` (an admin held it),
``processing`` (sent, the provider has not confirmed), ``paid``, ``failed``.
A partner has at most one open payout (pending, on hold or processing).
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from decimal import Decimal

import sqlalchemy as sa

from fkod.core import audit
from fkod.core.auth.models import Partner
from fkod.core.billing import ledger
from fkod.core.billing.ledger import credit, debit
from fkod.core.billing.models import LedgerEntry, PartnerRevenue, Payout
from fkod.core.billing.money import CURRENCY, format_usd, round_cents
from fkod.core.billing.providers import PaymentProviderError, PayoutRequest, payment_providers
from fkod.core.db import run_in_transaction, utcnow
from fkod.core.errors import Conflict

log = logging.getLogger(__name__)

OPEN_STATUSES = ("pending", "on_hold", "processing")
SEND_ACTOR = "billing.send_payout"
# Payout methods and the provider that serves each.
PAYOUT_METHODS = {"bank_transfer": "ledger", "paypal": "paypal", "stripe": "stripe"}


def open_payout(session, partner_id: int) -> Payout | None:
    return session.scalar(sa.select(Payout).where(Payout.partner_id == partner_id,
                                                  Payout.status.in_(OPEN_STATUSES)).limit(1))


def _create(session, partner: Partner, amount: Decimal, *, source: str,
            user_id: int | None) -> Payout:
    balance = ledger.partner_balance(session, partner.id)
    payout = Payout(partner_id=partner.id, amount=amount, currency=CURRENCY, source=source,
                    payout_method=partner.payout_method,
                    provider=PAYOUT_METHODS[partner.payout_method],
                    idempotency_key=f"fkod-payout-{uuid.uuid4().hex}", status="pending",
                    requested_by_user_id=user_id, balance_after=balance - amount)
    session.add(payout)
    session.flush()
    ledger.post(session, kind="payout", reference=f"payout:{payout.id}:reserve",
                description=f"Payout po_{payout.id} of {format_usd(amount)}",
                lines=[debit(ledger.PARTNER_PAYABLE, amount, partner.id),
                       credit(ledger.PAYOUTS_IN_TRANSIT, amount)])
    return payout


def request_payout(request, partner: Partner, amount: Decimal | None) -> Payout:
    """Create a pending payout of ``amount`` or of the whole balance; 409 when not allowed."""
    session = request.dbsession
    # The partner row lock makes one open payout per partner hold under concurrency.
    session.refresh(partner, with_for_update=True)
    minimum = request.registry.settings["fkod.billing.payout_minimum"]
    if partner.verification_status != "verified":
        raise Conflict("Payouts need a verified partner; submit the company's verification "
                       "(POST /api/partners/verify) and wait for its approval.",
                       code="partner_not_verified")
    if partner.payout_method not in PAYOUT_METHODS:
        raise Conflict("Set a payout method before requesting a payout "
                       "(PUT /api/partners/payout-method).", code="payout_method_missing")
    existing = open_payout(session, partner.id)
    if existing is not None:
        raise Conflict(f"Payout po_{existing.id} is still {existing.status}; a partner has one "
                       "open payout at a time.", code="payout_already_open")
    balance = ledger.partner_balance(session, partner.id)
    amount = balance if amount is None else round_cents(amount)
    if amount > balance:
        raise Conflict(f"The amount {format_usd(amount)} is more than the available balance "
                       f"of {format_usd(balance)}.", code="amount_exceeds_balance")
    if amount < minimum:
        raise Conflict(f"The minimum payout is {format_usd(minimum)}; the amount is "
                       f"{format_usd(amount)}.", code="payout_below_minimum")
    payout = _create(session, partner, amount, source="request",
                     user_id=getattr(getattr(request, "user", None), "id", None))
    audit.record(request, "payout.requested", partner_id=partner.id, target_type="payout",
                 target_id=f"po_{payout.id}", details={"amount": f"{amount:.2f}"})
    log.info("payout requested", extra={"partner_id": partner.id, "payout_id": payout.id,
                                        "amount": str(amount)})
    return payout


def payout_run(registry, *, now: dt.datetime | None = None) -> dict:
    """Create a payout for every balance at or above the minimum, then send the pending ones.

    Smaller balances stay where they are and roll over to the next run.
    Partners without a payout method, with an open payout or no longer
    verified are skipped, and their balances wait for a later run.
    """
    minimum = registry.settings["fkod.billing.payout_minimum"]
    result = {"created": 0, "rolled_over": 0, "skipped_no_method": 0, "skipped_unverified": 0,
              "sent": 0}

    def create(session):
        partner_ids = session.scalars(
            sa.select(LedgerEntry.partner_id).distinct()
            .where(LedgerEntry.account == ledger.PARTNER_PAYABLE)
            .order_by(LedgerEntry.partner_id)).all()
        for partner_id in partner_ids:
            partner = session.get(Partner, partner_id, with_for_update=True)
            if partner is None or partner.deleted_at is not None or partner.status == "suspended":
                continue
            if open_payout(session, partner.id) is not None:
                continue
            balance = ledger.partner_balance(session, partner.id)
            if balance < minimum:
                result["rolled_over"] += balance > 0
                continue
            if partner.verification_status != "verified":
                result["skipped_unverified"] += 1
                continue
            if partner.payout_method not in PAYOUT_METHODS:
                result["skipped_no_method"] += 1
                continue
            payout = _create(session, partner, balance, source="run", user_id=None)
            audit.record_system(session, "payout.created", partner_id=partner.id,
                                target_type="payout", target_id=f"po_{payout.id}",
                                details={"amount": f"{balance:.2f}", "source": "run"})
            result["created"] += 1
        audit.record_system(session, "payout_run.started", partner_id=None,
                            details={name: result[name]
                                     for name in ("created", "rolled_over", "skipped_no_method",
                                                  "skipped_unverified")})
        return list(session.scalars(sa.select(Payout.id).where(Payout.status == "pending")
                                    .order_by(Payout.id)))

    pending = run_in_transaction(registry["db.session_factory"], create)
    for payout_id in pending:
        send_payout(registry, payout_id)
        result["sent"] += 1
    # LogRecord reserves "created", so the counts go under their own prefix.
    log.info("payout run finished", extra={f"payouts_{name}": count
                                           for name, count in result.items()})
    return result


def send_payout(registry, payout_id: int, *, approved_by: int | None = None) -> Payout | None:
    """Send a pending (or stuck processing) payout through its provider; safe to repeat."""
    session_factory = registry["db.session_factory"]
    vault = registry["webhook_vault"]
    stuck_after = dt.timedelta(seconds=registry.settings["fkod.billing.stuck_after_seconds"])

    def prepare(session):
        payout = session.get(Payout, payout_id, with_for_update=True)
        if payout is None:
            return None
        stuck = payout.status == "processing" and (
            payout.sent_at is None or payout.sent_at < utcnow() - stuck_after)
        if payout.status != "pending" and not stuck:
            return None
        if payout.status == "processing" and payout.provider_payout_id:
            return None
        partner = session.get(Partner, payout.partner_id)
        destination = partner.payout_destination or partner.bank_account
        payout.status = "processing"
        payout.sent_at = utcnow()
        if approved_by is not None:
            payout.approved_by_admin_id = approved_by
        return payout.provider, PayoutRequest(
            destination=vault.decrypt(destination) if destination else "",
            amount=payout.amount, currency=payout.currency,
            idempotency_key=payout.idempotency_key,
            description=f"F-KOD payout po_{payout.id}")

    prepared = run_in_transaction(session_factory, prepare)
    if prepared is None:
        return None
    provider_name, request = prepared
    provider = payment_providers(registry).get(provider_name)
    try:
        if provider is None:
            raise PaymentProviderError(f"The payment provider {provider_name!r} is not enabled.",
                                       retryable=True)
        result = provider.payout(request)
    except PaymentProviderError as exc:
        log.warning("payout failed", extra={"payout_id": payout_id, "retryable": exc.retryable,
                                            "error": str(exc)[:300]})
        reason, retryable = str(exc), exc.retryable

        def after_error(session):
            payout = session.get(Payout, payout_id, with_for_update=True)
            if retryable:
                # Back to pending: the next run or an admin sends it again, same key.
                payout.status = "pending"
                return payout
            mark_payout_failed(session, payout, reason, utcnow())
            _audit_sent(session, payout, provider_name)
            return payout

        return run_in_transaction(session_factory, after_error)

    def store(session):
        payout = session.get(Payout, payout_id, with_for_update=True)
        payout.provider_payout_id = result.provider_id
        if result.status == "succeeded":
            mark_payout_paid(session, payout, utcnow())
        elif result.status == "failed":
            mark_payout_failed(session, payout, result.failure_reason or "refused", utcnow())
        _audit_sent(session, payout, provider_name)
        return payout

    return run_in_transaction(session_factory, store)


def _audit_sent(session, payout: Payout, provider_name: str) -> None:
    details = {"amount": f"{payout.amount:.2f}", "provider": provider_name,
               "status": payout.status}
    if payout.failure_reason:
        details["failure_reason"] = payout.failure_reason[:200]
    audit.record_system(session, "payout.sent", partner_id=payout.partner_id,
                        target_type="payout", target_id=f"po_{payout.id}", details=details)


def mark_payout_paid(session, payout: Payout, when: dt.datetime) -> bool:
    """Record the payout as paid; False when it was already final."""
    if payout.status in ("paid", "failed"):
        return False
    payout.status = "paid"
    payout.paid_at = when
    ledger.post(session, kind="payout", reference=f"payout:{payout.id}:paid",
                description=f"Payout po_{payout.id} paid",
                lines=[debit(ledger.PAYOUTS_IN_TRANSIT, payout.amount),
                       credit(ledger.CASH, payout.amount)])
    # The periods earned before the payout was created are now paid out.
    session.execute(
        sa.update(PartnerRevenue)
        .where(PartnerRevenue.partner_id == payout.partner_id,
               PartnerRevenue.status == "pending",
               PartnerRevenue.period_end < payout.created_at.date())
        .values(status="paid", paid_at=when))
    session.flush()
    log.info("payout paid", extra={"payout_id": payout.id, "partner_id": payout.partner_id})
    return True


def mark_payout_failed(session, payout: Payout, reason: str, when: dt.datetime) -> bool:
    """Record the payout as failed and give its amount back to the balance.

    A payout reported failed after it was paid (a reversed transfer) gives
    the money back too. False when it had already failed.
    """
    if payout.status == "failed":
        return False
    was_paid = payout.status == "paid"
    payout.status = "failed"
    payout.failure_reason = reason[:500]
    payout.failed_at = when
    source = ledger.CASH if was_paid else ledger.PAYOUTS_IN_TRANSIT
    ledger.post(session, kind="payout", reference=f"payout:{payout.id}:returned",
                description=f"Payout po_{payout.id} failed: {reason}"[:255],
                lines=[debit(source, payout.amount),
                       credit(ledger.PARTNER_PAYABLE, payout.amount, payout.partner_id)])
    session.flush()
    log.info("payout failed", extra={"payout_id": payout.id, "partner_id": payout.partner_id})
    return True


def hold_payout(session, payout: Payout, reason: str) -> None:
    if payout.status != "pending":
        raise Conflict(f"Payout po_{payout.id} is {payout.status}; only a pending payout can be "
                       "held.", code="payout_not_pending")
    payout.status = "on_hold"
    payout.hold_reason = reason


def release_for_sending(session, payout: Payout) -> None:
    """Make a pending or held payout ready to send; 409 otherwise."""
    if payout.status not in ("pending", "on_hold"):
        raise Conflict(f"Payout po_{payout.id} is {payout.status}; only a pending or held "
                       "payout can be approved.", code="payout_not_pending")
    payout.status = "pending"
    payout.hold_reason = None


def sweep_payouts(registry) -> int:
    """Send again the payouts whose provider call never finished."""
    stuck_before = utcnow() - dt.timedelta(
        seconds=registry.settings["fkod.billing.stuck_after_seconds"])
    payout_ids = run_in_transaction(registry["db.session_factory"], lambda session: list(
        session.scalars(sa.select(Payout.id).where(
            Payout.status == "processing", Payout.provider_payout_id.is_(None),
            Payout.sent_at < stuck_before))))
    for payout_id in payout_ids:
        send_payout(registry, payout_id)
    return len(payout_ids)
