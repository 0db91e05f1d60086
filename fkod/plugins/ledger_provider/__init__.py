"""Built-in plugin: the ledger payment provider, for bank transfers.

The ledger provider moves no money itself. A charge becomes an invoice the
customer pays by bank transfer, and a payout is a transfer F-KOD's finance
team makes from its bank. Both stay pending in the platform's records until
an admin marks them received or paid (``/api/admin/invoices/{id}/mark-paid``,
``/api/admin/payouts/{id}/mark-paid``); that is the ledger's inbound event.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from fkod.core.billing.providers import (
    ChargeRequest,
    CustomerDetails,
    PaymentMethodSetup,
    PaymentProvider,
    PaymentProviderError,
    PaymentResult,
    PayoutRequest,
    ProviderCustomer,
    ProviderEvent,
    WebhookSignatureError,
)
from fkod.core.hookspecs import hookimpl

# IBAN-style or domestic account details: letters, digits, spaces and a few separators.
_ALLOWED = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 -/:.,")


def _whole_cents(amount: Decimal) -> None:
    if amount <= 0 or amount != amount.quantize(Decimal("0.01")):
        raise PaymentProviderError(f"{amount} is not a positive amount in whole cents.")


class LedgerProvider(PaymentProvider):
    """Bank transfers recorded in the ledger and confirmed by an admin."""

    name = "ledger"
    display_name = "Bank transfer"
    currencies = ("USD",)
    payout_method = "bank_transfer"

    def create_customer(self, customer: CustomerDetails) -> ProviderCustomer:
        # The platform's own reference is the customer id: there is no outside record.
        return ProviderCustomer(provider_customer_id=f"ledger_{customer.reference}",
                                livemode=customer.livemode)

    def set_up_payment_method(self, provider_customer_id: str, *,
                              return_url: str) -> PaymentMethodSetup:
        # A bank transfer needs no saved method: the invoice carries the bank details.
        return PaymentMethodSetup(setup_id=f"{provider_customer_id}_transfer",
                                  redirect_url=return_url)

    def charge(self, request: ChargeRequest) -> PaymentResult:
        _whole_cents(request.amount)
        return PaymentResult(provider_id=f"ledger_{request.idempotency_key}", status="pending",
                             amount=request.amount, currency=request.currency)

    def refund(self, provider_payment_id: str, *, amount: Decimal | None,
               idempotency_key: str, reason: str = "") -> PaymentResult:
        if amount is not None:
            _whole_cents(amount)
        # The finance team sends the transfer back; the record is final at once.
        return PaymentResult(provider_id=f"ledger_{idempotency_key}", status="succeeded",
                             amount=amount if amount is not None else Decimal(0),
                             currency="USD")

    def payout(self, request: PayoutRequest) -> PaymentResult:
        _whole_cents(request.amount)
        problem = self.check_payout_destination(request.destination)
        if problem:
            raise PaymentProviderError(f"The bank account {problem}.")
        return PaymentResult(provider_id=f"ledger_{request.idempotency_key}", status="pending",
                             amount=request.amount, currency=request.currency)

    def check_payout_destination(self, destination: str) -> str | None:
        value = destination.strip()
        if not 8 <= len(value) <= 100:
            return "must be 8 to 100 characters of bank details"
        if not set(value) <= _ALLOWED:
            return "may hold only letters, digits, spaces and - / : . ,"
        if sum(char.isdigit() for char in value) < 6:
            return "must contain an account number (6 digits or more)"
        return None

    def verify_webhook(self, body: bytes, headers: Mapping[str, str]) -> ProviderEvent:
        raise WebhookSignatureError(
            "The ledger provider receives no webhooks; an admin records bank transfers.")


@hookimpl
def fkod_register_payment_providers():
    return [LedgerProvider()]
