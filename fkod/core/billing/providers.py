"""The payment-provider interface of the core, and the registry of providers from plugins.

The core charges customers, refunds them, pays partners out and receives the
providers' inbound webhooks only through :class:`PaymentProvider`. Plugins
return instances from the ``fkod_register_payment_providers`` hook, and the
core imports no concrete provider. Amounts are :class:`~decimal.Decimal` in major
units (``Decimal("12.50")`` USD) with an ISO 4217 currency code in upper
case; a provider converts to its own minor units.
"""

from __future__ import annotations

import abc
import dataclasses
import datetime as dt
import logging
import re
from collections.abc import Mapping
from decimal import Decimal

log = logging.getLogger(__name__)

PROVIDER_NAME = re.compile(r"^[a-z][a-z0-9_]{0,49}$")
CURRENCY = re.compile(r"^[A-Z]{3}$")
COLLECTION_METHODS = ("charge_automatically", "send_invoice")


class PaymentProviderError(Exception):
    """The provider refused an operation or could not be reached.

    ``retryable`` is true when the same call, with the same idempotency key,
    may succeed later (a timeout, a 5xx, a rate limit).
    """

    def __init__(self, message: str, *, retryable: bool = False):
        super().__init__(message)
        self.retryable = retryable


class WebhookSignatureError(Exception):
    """An inbound provider webhook has a missing, invalid or expired signature.

    The inbound webhook route returns 400 for it, as providers expect.
    """


@dataclasses.dataclass(frozen=True)
class CustomerDetails:
    """The billed party: a partner (for its plan and usage) or a customer (for paid integrations).

    ``reference`` is the platform's public id (``partner_42``, ``user_7``);
    providers store it in their own metadata so a record can be traced back.
    """

    reference: str
    email: str
    name: str
    livemode: bool = False


@dataclasses.dataclass(frozen=True)
class ProviderCustomer:
    """A customer record at the provider; ``provider_customer_id`` is the provider's id."""

    provider_customer_id: str
    livemode: bool


@dataclasses.dataclass(frozen=True)
class PaymentMethodSetup:
    """The data the portal needs to let a customer add a payment method.

    ``client_secret`` is for an embedded form of the provider (Stripe's
    SetupIntent, for example); ``redirect_url`` is for a page hosted by the
    provider. A provider fills in at least one of them.
    """

    setup_id: str
    client_secret: str | None = None
    redirect_url: str | None = None


@dataclasses.dataclass(frozen=True)
class ChargeRequest:
    """A charge of one amount to one customer.

    ``collection`` is ``charge_automatically`` (take the money from the saved
    payment method now) or ``send_invoice`` (send the customer an invoice due
    in ``days_until_due`` days). ``idempotency_key`` is stable across retries
    of the same charge. A provider passes it to its API so that a retry does not
    charge twice.
    """

    provider_customer_id: str
    amount: Decimal
    currency: str
    description: str
    idempotency_key: str
    collection: str = "charge_automatically"
    days_until_due: int | None = None
    metadata: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class PaymentResult:
    """The provider's record of a charge, an invoice, a refund or a payout.

    ``status`` is one of ``pending``, ``succeeded`` and ``failed``;
    ``failure_reason`` is the provider's message when it failed.
    """

    provider_id: str
    status: str
    amount: Decimal
    currency: str
    failure_reason: str | None = None


@dataclasses.dataclass(frozen=True)
class PayoutRequest:
    """A transfer of a partner's earnings to the partner's account at the provider.

    ``destination`` is the partner's payout destination as the provider's
    :meth:`PaymentProvider.check_payout_destination` accepted it: bank
    details for a bank transfer, an email address for PayPal, a connected
    account id (``acct_…``) for Stripe.
    """

    destination: str
    amount: Decimal
    currency: str
    idempotency_key: str
    description: str = ""


@dataclasses.dataclass(frozen=True)
class ProviderEvent:
    """An inbound webhook event after its signature was verified.

    ``type`` is the provider's own event name (``invoice.paid``); ``data`` is
    the provider's object as it sent it. ``created`` is in UTC.
    """

    id: str
    type: str
    created: dt.datetime
    livemode: bool
    data: dict


UPDATE_KINDS = (
    "payment_succeeded", "payment_failed", "refund_succeeded", "chargeback",
    "payout_paid", "payout_failed", "payment_method_ready",
)


@dataclasses.dataclass(frozen=True)
class BillingUpdate:
    """What an inbound provider event means for the platform's records.

    ``kind`` is one of :data:`UPDATE_KINDS`. ``provider_id`` names the record
    the platform stored when it made the call: the ``provider_id`` of the
    :class:`PaymentResult` of a charge (for payment, refund and chargeback
    updates) or of a payout (for payout updates), or the provider's customer
    id (for ``payment_method_ready``). ``amount`` is the refunded or disputed
    amount for refunds and chargebacks, and None otherwise. ``occurred_at`` is
    when the provider says it happened, so that updates arriving out of order
    can be ordered.
    """

    kind: str
    provider_id: str
    occurred_at: dt.datetime
    amount: Decimal | None = None
    currency: str = "USD"
    reason: str | None = None


class PaymentProvider(abc.ABC):
    """A payment provider: customers, payment methods, charges, refunds, payouts, webhooks.

    Subclasses set ``name`` (lowercase letters, digits and underscores; it is
    the ``{provider}`` of ``/api/billing/providers/{provider}/webhook``),
    ``display_name`` and ``currencies``. Every operation that moves money takes
    an idempotency key and is safe to retry with it. Operations raise
    :class:`PaymentProviderError` when the provider refuses or fails.
    """

    name: str
    display_name: str
    currencies: tuple[str, ...]
    #: The partner payout method the provider serves (``bank_transfer``,
    #: ``paypal``, ``stripe``), or None when it does not pay partners out.
    payout_method: str | None = None

    @abc.abstractmethod
    def create_customer(self, customer: CustomerDetails) -> ProviderCustomer:
        """Create the customer at the provider and return the provider's id for it."""

    @abc.abstractmethod
    def set_up_payment_method(self, provider_customer_id: str, *,
                              return_url: str) -> PaymentMethodSetup:
        """Start adding a payment method to a customer.

        ``return_url`` is the portal page a hosted flow sends the customer back
        to. The method becomes usable when the provider's webhook confirms it.
        """

    @abc.abstractmethod
    def charge(self, request: ChargeRequest) -> PaymentResult:
        """Charge a customer now or invoice them, as ``request.collection`` selects.

        Returns the charge or invoice with its status; a declined card is a
        result with status ``failed``, not an exception.
        """

    @abc.abstractmethod
    def refund(self, provider_payment_id: str, *, amount: Decimal | None,
               idempotency_key: str, reason: str = "") -> PaymentResult:
        """Refund a charge in whole (``amount`` None) or in part, and return the refund."""

    @abc.abstractmethod
    def payout(self, request: PayoutRequest) -> PaymentResult:
        """Send a partner's earnings to ``request.destination`` and return the transfer."""

    @abc.abstractmethod
    def verify_webhook(self, body: bytes, headers: Mapping[str, str]) -> ProviderEvent:
        """Check an inbound webhook's signature over the exact ``body`` bytes and parse it.

        ``headers`` are the request headers; a provider looks its signature
        header up without regard to case. Raises
        :class:`WebhookSignatureError` when the signature is missing, does not
        match or is too old, and for a body that is not the provider's event.
        """

    def handle_webhook(self, event: ProviderEvent) -> None:  # noqa: B027 (optional hook)
        """React to a verified inbound event in the provider's own terms.

        The default does nothing: the billing engine reads ``event`` itself.
        A provider overrides it for bookkeeping of its own, such as noting
        that a payment method became usable. It must be idempotent on
        ``event.id``, because providers deliver at least once.
        """

    def check_payout_destination(self, destination: str) -> str | None:
        """Return why ``destination`` cannot receive payouts, or None when it can.

        The default accepts any non-empty value; providers with a fixed format
        (an email address, an account id) override it.
        """
        return None if destination.strip() else "must not be empty"

    def interpret(self, event: ProviderEvent) -> list[BillingUpdate]:
        """Translate a verified inbound event into the updates the billing engine applies.

        The default knows no event and returns an empty list, which the
        engine records and otherwise ignores. The engine applies each event
        id once; the updates of one event must not depend on what the
        provider was told earlier, because events arrive out of order.
        """
        return []

    def describe(self) -> dict:
        """Return the provider's public description for admins and the portal."""
        return {"name": self.name, "display_name": self.display_name,
                "currencies": list(self.currencies)}


def check_provider(provider: object) -> list[str]:
    """Return the problems that keep ``provider`` from being registered; empty when none."""
    if not isinstance(provider, PaymentProvider):
        return [f"{type(provider).__name__} is not a PaymentProvider"]
    problems = []
    name = getattr(provider, "name", None)
    if not isinstance(name, str) or not PROVIDER_NAME.match(name):
        problems.append(f"name {name!r} is not lowercase letters, digits and underscores")
    display_name = getattr(provider, "display_name", None)
    if not isinstance(display_name, str) or not display_name.strip():
        problems.append("display_name is missing")
    currencies = getattr(provider, "currencies", None)
    if (not isinstance(currencies, tuple | list) or not currencies
            or not all(isinstance(code, str) and CURRENCY.match(code) for code in currencies)):
        problems.append(f"currencies {currencies!r} is not a non-empty list of ISO 4217 codes")
    return problems


@dataclasses.dataclass(frozen=True)
class RegisteredProvider:
    """A provider and the plugin that contributed it."""

    provider: PaymentProvider
    plugin: str


class PaymentProviderRegistry:
    """The payment providers contributed by plugins, by name.

    Lookups go through the plugin host, so the providers of a plugin that an
    admin disables disappear until it is re-enabled.
    """

    def __init__(self, host):
        self._host = host
        self._providers: dict[str, RegisteredProvider] = {}
        self.rejected: list[tuple[str, str]] = []

    def add(self, provider: PaymentProvider, plugin: str) -> None:
        """Register ``provider`` for ``plugin``; raise ValueError for an invalid or taken name."""
        problems = check_provider(provider)
        if problems:
            raise ValueError(f"payment provider of plugin {plugin!r}: " + "; ".join(problems))
        taken = self._providers.get(provider.name)
        if taken is not None:
            raise ValueError(f"payment provider {provider.name!r} is already registered by "
                             f"plugin {taken.plugin!r}")
        self._providers[provider.name] = RegisteredProvider(provider, plugin)

    def get(self, name: str) -> PaymentProvider | None:
        """Return the enabled provider called ``name``, or None."""
        registered = self._providers.get(name)
        if registered is None or not self._host.is_enabled(registered.plugin):
            return None
        return registered.provider

    def list(self) -> list[RegisteredProvider]:
        """Return the providers of enabled plugins, by name."""
        return [registered for name, registered in sorted(self._providers.items())
                if self._host.is_enabled(registered.plugin)]


def collect_payment_providers(host) -> PaymentProviderRegistry:
    """Call ``fkod_register_payment_providers`` on every plugin and return the registry.

    A plugin whose hook raises is marked failed by the host. A provider that is
    invalid or whose name another plugin took is logged and recorded in
    ``registry.rejected``; the plugin's other providers still register.
    """
    registry = PaymentProviderRegistry(host)
    for plugin_name, providers in host.call_each("fkod_register_payment_providers"):
        for provider in providers or ():
            try:
                registry.add(provider, plugin_name)
            except ValueError as exc:
                registry.rejected.append((plugin_name, str(exc)))
                log.error("payment provider rejected",
                          extra={"plugin": plugin_name, "error": str(exc)})
    return registry


def payment_providers(registry) -> PaymentProviderRegistry:
    """Return the application's payment providers, collecting them on first use.

    ``registry`` is the Pyramid registry of an application whose plugins are
    loaded. The result is kept in ``registry["payment_providers"]``.
    """
    # NOTE: the app factory does not collect providers at start-up yet, so the
    # first caller in each process collects them here.
    found = registry.get("payment_providers")
    if found is None:
        found = collect_payment_providers(registry["plugins"])
        registry["payment_providers"] = found
    return found
