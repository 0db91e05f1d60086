"""The meaning of PayPal's payout webhook events for the platform's payout records.

One payout of the platform is one PayPal batch with one item, so the batch id
(``payout_batch_id``) names the payout in batch and item events alike.

Events that lead to an update:

``PAYMENT.PAYOUTSBATCH.SUCCESS``, ``PAYMENT.PAYOUTS-ITEM.SUCCEEDED``
    payout_paid: PayPal sent the money to the recipient's account.
``PAYMENT.PAYOUTSBATCH.DENIED``
    payout_failed: PayPal rejected the whole batch, so no money moved.
``PAYMENT.PAYOUTS-ITEM.FAILED``, ``…BLOCKED``, ``…DENIED``
    payout_failed: the item was not paid.
``PAYMENT.PAYOUTS-ITEM.RETURNED``, ``…REFUNDED``, ``…CANCELED``
    payout_failed: the money came back to the platform's PayPal account, so
    the partner's earnings are unpaid again.

Events that lead to no update, on purpose:

``PAYMENT.PAYOUTS-ITEM.UNCLAIMED``
    The recipient has no PayPal account yet. The payout is still open: it
    ends as SUCCEEDED if the partner claims it, or as RETURNED after PayPal's
    claim period. Reporting it as failed could lead the platform to pay the
    earnings a second time while the first payment can still be claimed.
``PAYMENT.PAYOUTSBATCH.PROCESSING``, ``PAYMENT.PAYOUTS-ITEM.HELD``
    The payout is still in progress.
"""

from __future__ import annotations

import logging

from fkod.core.billing.providers import BillingUpdate, ProviderEvent

log = logging.getLogger(__name__)

BATCH_PREFIX = "PAYMENT.PAYOUTSBATCH."
PAID = frozenset({"PAYMENT.PAYOUTSBATCH.SUCCESS", "PAYMENT.PAYOUTS-ITEM.SUCCEEDED"})
# Each failing event type with the reason used when the event carries no error message.
FAILED = {
    "PAYMENT.PAYOUTSBATCH.DENIED": "PayPal denied the payout batch.",
    "PAYMENT.PAYOUTS-ITEM.FAILED": "The PayPal payout failed.",
    "PAYMENT.PAYOUTS-ITEM.BLOCKED": "PayPal blocked the payout.",
    "PAYMENT.PAYOUTS-ITEM.DENIED": "PayPal denied the payout.",
    "PAYMENT.PAYOUTS-ITEM.RETURNED": (
        "The recipient did not claim the PayPal payout in time, so PayPal returned it."),
    "PAYMENT.PAYOUTS-ITEM.REFUNDED": "The PayPal payout was refunded to the platform.",
    "PAYMENT.PAYOUTS-ITEM.CANCELED": "The unclaimed PayPal payout was canceled.",
}
# The event types a webhook subscription needs: the mapped ones and UNCLAIMED, which is logged.
SUBSCRIBED_EVENT_TYPES = (*sorted(PAID), *sorted(FAILED), "PAYMENT.PAYOUTS-ITEM.UNCLAIMED")


def interpret_event(event: ProviderEvent) -> list[BillingUpdate]:
    """Return the payout update that ``event`` stands for; empty for other or broken events."""
    if event.type not in PAID and event.type not in FAILED:
        if event.type == "PAYMENT.PAYOUTS-ITEM.UNCLAIMED":
            log.info("paypal payout unclaimed, still open",
                     extra={"event_id": event.id, "batch_id": _batch_id(event)})
        return []

    batch_id = _batch_id(event)
    if not batch_id:
        log.warning("paypal payout event without payout_batch_id, ignored",
                    extra={"event_id": event.id, "event_type": event.type})
        return []

    currency = _currency(event) or "USD"
    if event.type in PAID:
        return [BillingUpdate(kind="payout_paid", provider_id=batch_id,
                              occurred_at=event.created, currency=currency)]
    reason = _error_message(event) or FAILED[event.type]
    return [BillingUpdate(kind="payout_failed", provider_id=batch_id,
                          occurred_at=event.created, currency=currency, reason=reason)]


def _batch_id(event: ProviderEvent) -> str | None:
    resource = event.data if isinstance(event.data, dict) else {}
    if event.type.startswith(BATCH_PREFIX):
        header = resource.get("batch_header")
        value = header.get("payout_batch_id") if isinstance(header, dict) else None
    else:
        value = resource.get("payout_batch_id")
    return value if isinstance(value, str) and value else None


def _currency(event: ProviderEvent) -> str | None:
    resource = event.data if isinstance(event.data, dict) else {}
    holder = resource.get("batch_header" if event.type.startswith(BATCH_PREFIX)
                          else "payout_item")
    amount = holder.get("amount") if isinstance(holder, dict) else None
    currency = amount.get("currency") if isinstance(amount, dict) else None
    return currency if isinstance(currency, str) and len(currency) == 3 else None


def _error_message(event: ProviderEvent) -> str | None:
    """Return PayPal's error text of a failed item, such as "Receiver is unregistered"."""
    errors = event.data.get("errors") if isinstance(event.data, dict) else None
    if not isinstance(errors, dict):
        return None
    message = errors.get("message") or errors.get("name")
    return str(message) if message else None
