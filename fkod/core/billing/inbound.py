"""Inbound payment-provider webhooks: verified, stored once per event id, then applied.

``POST /api/billing/providers/{provider}/webhook`` hands the raw body and
headers to the provider, which checks the signature and translates the
event into :class:`~fkod.core.billing.providers.BillingUpdate` items. The
event row (unique per provider and event id) and every change it causes
are written in one transaction, so a duplicate delivery finds the row and
changes nothing, and a crash changes nothing either.

Updates are applied so that order does not matter. A payment that
succeeded stays succeeded when an older failure arrives later. A refund
report carries the cumulative refunded amount. A refund that arrives before
the payment's own success records the success first.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from cornice import Service

from fkod.core.api import AUTH_NONE, Dumped, operation, read_body
from fkod.core.billing.invoicing import _record_failure, apply_refund, mark_payment_succeeded
from fkod.core.billing.models import BillingAccount, Payment, Payout, ProviderEventRecord
from fkod.core.billing.payouts import mark_payout_failed, mark_payout_paid
from fkod.core.billing.providers import (
    BillingUpdate,
    PaymentProviderError,
    ProviderEvent,
    WebhookSignatureError,
    payment_providers,
)
from fkod.core.errors import NotFound, ServiceUnavailable, ValidationFailed

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 512 * 1024

inbound = Service(name="billing_provider_webhook",
                  path="/api/billing/providers/{provider}/webhook",
                  description="Inbound events from payment providers")


def _naive(moment):
    return moment.replace(tzinfo=None) if moment.tzinfo else moment


def apply_update(registry, session, provider_name: str, update: BillingUpdate) -> str:
    """Apply one update; return what happened, for the event's outcome."""
    when = _naive(update.occurred_at)
    if update.kind == "payment_method_ready":
        account = session.scalar(sa.select(BillingAccount).where(
            BillingAccount.provider == provider_name,
            BillingAccount.provider_customer_id == update.provider_id))
        if account is None:
            return "unknown customer"
        account.payment_method_ready = True
        return "applied"

    if update.kind.startswith("payout_"):
        payout = session.scalar(sa.select(Payout).where(
            Payout.provider == provider_name, Payout.provider_payout_id == update.provider_id)
            .with_for_update())
        if payout is None:
            return "unknown payout"
        if update.kind == "payout_paid":
            return "applied" if mark_payout_paid(session, payout, when) else "already final"
        # Providers date events to the second, so the comparison drops microseconds.
        if payout.status == "paid" and payout.paid_at and \
                when < payout.paid_at.replace(microsecond=0):
            return "older than the payout's success"
        changed = mark_payout_failed(session, payout, update.reason or "failed at the provider",
                                     when)
        return "applied" if changed else "already failed"

    payment = session.scalar(sa.select(Payment).where(
        Payment.provider == provider_name, Payment.provider_payment_id == update.provider_id)
        .with_for_update())
    if payment is None:
        return "unknown payment"
    if update.kind == "payment_succeeded":
        return "applied" if mark_payment_succeeded(registry, session, payment, when) \
            else "already succeeded"
    if update.kind == "payment_failed":
        if payment.status == "succeeded":
            return "older than the payment's success"
        _record_failure(registry, session, payment.id, update.provider_id,
                        update.reason or "failed at the provider")
        return "applied"
    # refund_succeeded and chargeback: the money was paid before it came back.
    mark_payment_succeeded(registry, session, payment, when)
    if update.amount is None:
        return "no amount"
    if update.kind == "chargeback":
        # A dispute reports its own amount; it adds to what was refunded before.
        total = payment.amount_refunded + update.amount
        changed = apply_refund(registry, session, payment, total, kind="chargeback")
    else:
        changed = apply_refund(registry, session, payment, update.amount)
    return "applied" if changed else "already applied"


def receive(registry, session, provider_name: str, event: ProviderEvent,
            updates: list[BillingUpdate]) -> tuple[bool, list]:
    """Store ``event`` and apply its updates; return (is new, outcome).

    The event row is inserted first, in a savepoint: a concurrent delivery of
    the same event waits on the unique key and then finds it taken.
    """
    def stored():
        return session.scalar(sa.select(ProviderEventRecord).where(
            ProviderEventRecord.provider == provider_name,
            ProviderEventRecord.event_id == event.id))

    existing = stored()
    if existing is not None:
        return False, existing.outcome
    record = ProviderEventRecord(provider=provider_name, event_id=event.id,
                                 event_type=event.type[:100],
                                 occurred_at=_naive(event.created), outcome=[])
    try:
        with session.begin_nested():
            session.add(record)
            session.flush()
    except sa.exc.IntegrityError:
        existing = stored()
        return False, existing.outcome if existing is not None else []
    outcome = [{"kind": update.kind, "provider_id": update.provider_id,
                "result": apply_update(registry, session, provider_name, update)}
               for update in updates]
    record.outcome = outcome
    session.flush()
    log.info("provider event applied", extra={"provider": provider_name, "event_id": event.id,
                                               "event_type": event.type, "outcome": outcome})
    return True, outcome


@operation(inbound, "POST", summary="Receive a signed event from a payment provider",
           auth=AUTH_NONE, raw_body=True,
           errors=((400, "invalid_signature"), (404, "not_found"), (413, "payload_too_large"),
                   (503, "provider_unavailable")))
def provider_webhook(request):
    name = request.matchdict["provider"]
    provider = payment_providers(request.registry).get(name)
    if provider is None:
        raise NotFound(f"No enabled payment provider is called {name!r}.")
    # read_body refuses a larger body with 413 and keeps the bytes in memory.
    body = read_body(request, MAX_BODY_BYTES)
    try:
        event = provider.verify_webhook(body, dict(request.headers))
        updates = provider.interpret(event)
    except WebhookSignatureError as exc:
        log.warning("inbound provider event refused", extra={"provider": name,
                                                              "reason": str(exc)[:200]})
        raise ValidationFailed(str(exc), code="invalid_signature") from None
    except PaymentProviderError as exc:
        # The provider could not be asked (to verify, or to look an object up):
        # a 503 makes the provider deliver the event again later.
        log.warning("inbound provider event deferred", extra={"provider": name,
                                                               "reason": str(exc)[:200]})
        raise ServiceUnavailable(f"The event cannot be processed now: {exc}",
                                 code="provider_unavailable") from None
    new, outcome = receive(request.registry, request.dbsession, name, event, updates)
    return Dumped({"received": True, "duplicate": not new, "outcome": outcome})


def includeme(config):
    config.add_cornice_service(inbound)
