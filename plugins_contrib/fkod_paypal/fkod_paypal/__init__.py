"""F-KOD plugin: PayPal as the payment provider for partner payouts.

Settings, read from the platform's .ini when the app is built. Each can also
come from the environment variable named after it (``FKOD_PAYPAL_CLIENT_ID``
for ``fkod_paypal.client_id``), or from a variable the .ini names as
``env:VARIABLE``. Production keeps the credentials out of files this way.

``fkod_paypal.client_id`` and ``fkod_paypal.client_secret``
    The REST API credentials of the PayPal app that sends the payouts.
``fkod_paypal.webhook_id``
    The id PayPal gave the webhook that points at
    ``/api/billing/providers/paypal/webhook``; inbound events are verified against it.
``fkod_paypal.api_base``
    The PayPal API address: ``https://api-m.sandbox.paypal.com`` by default,
    ``https://api-m.paypal.com`` for live payouts. Tests point it at
    :class:`fkod_paypal.testing.FakePayPal`.
"""

from __future__ import annotations

import dataclasses

from fkod.core.hookspecs import hookimpl
from fkod.core.settings import plugin_setting
from fkod_paypal.provider import DEFAULT_API_BASE, LIVE_API_BASE, PayPalProvider

__all__ = ["DEFAULT_API_BASE", "LIVE_API_BASE", "PayPalProvider", "PayPalSettings",
           "configure", "parse_settings"]

SETTING_NAMES = ("client_id", "client_secret", "webhook_id", "api_base")


@dataclasses.dataclass(frozen=True)
class PayPalSettings:
    """The plugin's settings; empty until an application is built."""

    client_id: str = ""
    client_secret: str = dataclasses.field(default="", repr=False)
    webhook_id: str = ""
    api_base: str = DEFAULT_API_BASE


# NOTE: providers are built from the settings of the last application built in
# the process, because the provider hook receives no registry.
_settings = PayPalSettings()


def parse_settings(settings: dict, environ=None) -> PayPalSettings:
    """Read the ``fkod_paypal.*`` settings, each overridable from the environment."""
    values = {name: plugin_setting(settings, f"fkod_paypal.{name}", environ)
              for name in SETTING_NAMES}
    values["api_base"] = values["api_base"] or DEFAULT_API_BASE
    return PayPalSettings(**values)


def configure(settings: dict, environ=None) -> None:
    """Apply the application's settings to the plugin; ``fkod_include`` calls it."""
    global _settings
    _settings = parse_settings(settings, environ)


@hookimpl
def fkod_include(config):
    configure(config.get_settings())


@hookimpl
def fkod_register_payment_providers():
    return [PayPalProvider(client_id=_settings.client_id,
                           client_secret=_settings.client_secret,
                           webhook_id=_settings.webhook_id, api_base=_settings.api_base)]
