"""F-KOD plugin: Stripe as a payment provider.

The provider (:mod:`fkod_stripe.provider`) creates customers and
SetupIntents, charges through invoices, refunds them, pays partners out by
Connect transfers, and verifies and interprets Stripe's webhooks. Tests run it
against :class:`fkod_stripe.testing.FakeStripe`, a local fake of the Stripe API.

Settings, read from the platform's .ini when the app is built. Each can also
come from the environment variable named after it (``FKOD_STRIPE_API_KEY``
for ``fkod_stripe.api_key``), or from a variable the .ini names as
``env:VARIABLE``. Production keeps the key and the secret out of files this way.

``fkod_stripe.api_key``
    The secret API key (``sk_live_…`` or ``sk_test_…``); its prefix decides
    whether the provider acts in live or test mode.
``fkod_stripe.webhook_secret``
    The signing secret (``whsec_…``) of the Stripe webhook endpoint that
    points at ``/api/billing/providers/stripe/webhook``.
``fkod_stripe.api_base``
    The Stripe API address, ``https://api.stripe.com`` by default; tests
    point it at ``FakeStripe.url``.
"""

from __future__ import annotations

import dataclasses

from fkod.core.hookspecs import hookimpl
from fkod.core.settings import plugin_setting
from fkod_stripe.provider import DEFAULT_API_BASE, StripeProvider

SETTING_NAMES = ("api_key", "webhook_secret", "api_base")


@dataclasses.dataclass(frozen=True)
class StripeSettings:
    """The plugin's settings; empty until an application is built."""

    api_key: str = ""
    webhook_secret: str = ""
    api_base: str = DEFAULT_API_BASE


# NOTE: providers are built from the settings of the last application built in
# the process, because the provider hook receives no registry.
_settings = StripeSettings()


def parse_settings(settings: dict, environ=None) -> StripeSettings:
    """Read the ``fkod_stripe.*`` settings, each overridable from the environment."""
    values = {name: plugin_setting(settings, f"fkod_stripe.{name}", environ)
              for name in SETTING_NAMES}
    values["api_base"] = values["api_base"] or DEFAULT_API_BASE
    return StripeSettings(**values)


def configure(settings: dict, environ=None) -> None:
    """Apply the application's settings to the plugin; ``fkod_include`` calls it."""
    global _settings
    _settings = parse_settings(settings, environ)


@hookimpl
def fkod_include(config):
    configure(config.get_settings())


@hookimpl
def fkod_register_payment_providers():
    return [StripeProvider(api_key=_settings.api_key, webhook_secret=_settings.webhook_secret,
                           api_base=_settings.api_base)]
