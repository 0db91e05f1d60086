"""Hook specifications: what a plugin of the ``fkod.plugins`` entry-point group can provide.

A plugin is a module or object registered under the entry-point group
``fkod.plugins``; it implements any of the hooks below with the
:data:`hookimpl` marker. An implementation may accept fewer arguments than the
specification lists, so hooks grow only by new optional arguments.
Every hook is called once per plugin, in isolation: a plugin that raises is
logged and marked failed, and the others still run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from pyramid.config import Configurator

    from fkod.core.auth.scopes import Scope
    from fkod.core.billing.providers import PaymentProvider
    from fkod.core.integrations import InstallContext, IntegrationManifest
    from fkod.core.webhooks.catalog import EventType

PROJECT = "fkod"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def fkod_register_event_types() -> list[EventType]:
    """Contribute webhook event types.

    Results are collected from every enabled plugin.

    :return: a list of :class:`fkod.core.webhooks.catalog.EventType`, each with
        its name (``resource.action``), description, the JSON Schema of its
        ``data`` and a sample ``data`` that validates against the schema.

    Called once at start-up, after the plugin is loaded. The types of a plugin
    that an admin disables disappear from the catalog until it is re-enabled.
    """


@hookspec
def fkod_register_scopes() -> list[Scope]:
    """Contribute API scopes that keys and tokens can be granted.

    Results are collected from every enabled plugin.

    :return: a list of :class:`fkod.core.auth.scopes.Scope`, each named
        ``resource:action`` with a description; ``admin_only=True`` keeps a
        scope away from partners' keys.

    Called once at start-up. A name that is already defined makes the plugin fail.
    """


@hookspec
def fkod_include(config: Configurator) -> None:
    """Add routes, Cornice services and views to the application.

    Results are ignored. Register services with
    ``config.add_cornice_service(service)``; declare each operation with
    :func:`fkod.core.api.operation` so it is validated and documented like the
    core's own.

    :param config: the Pyramid configurator of the application being built.

    Called once in the app factory. Every route the plugin adds sits behind
    the plugin gate: while the plugin is disabled its routes answer 404.
    """


@hookspec
def fkod_register_integrations() -> list[IntegrationManifest]:
    """Contribute marketplace integrations.

    :return: a list of :class:`fkod.core.integrations.IntegrationManifest`.

    Called once at start-up. Each manifest is synced into the catalog and tied
    to the partner whose slug is its ``publisher``. A new integration, or a new
    version, waits for an admin's review unless the plugin is trusted. An
    invalid manifest makes the plugin fail.
    """


@hookspec
def fkod_integration_installed(install: InstallContext) -> None:
    """React to a customer installing one of the plugin's integrations.

    Called only for the plugin that ships the integration, inside the install
    request and before it commits, and again with the new configuration when
    the customer changes it, so the hook must accept an install it has seen. Raise
    :class:`fkod.core.integrations.IntegrationError` to reject the install with
    a message for the customer. Any other exception rejects it too and is
    logged as a fault of the plugin.
    """


@hookspec
def fkod_integration_uninstalled(install: InstallContext) -> None:
    """React to a customer uninstalling one of the plugin's integrations.

    Called only for the plugin that ships the integration, after the
    uninstall commits. Errors are logged, and the uninstall is kept.
    """


@hookspec
def fkod_integration_event(install: InstallContext, event: dict) -> None:
    """React to a platform event that reached an install of the plugin's integration.

    :param event: the event envelope as webhooks carry it (``id``, ``type``,
        ``created``, ``livemode``, ``data``).

    Called by a background worker, at least once per install and event, for
    the event types the integration lists and that concern the installing
    customer. An exception is logged and the call is retried with backoff.
    """


@hookspec
def fkod_register_payment_providers() -> list[PaymentProvider]:
    """Contribute payment providers for charges, refunds, payouts and inbound webhooks.

    Results are collected from every enabled plugin.

    :return: a list of :class:`fkod.core.billing.providers.PaymentProvider`
        instances, each with a unique ``name`` (lowercase letters, digits and
        underscores), a ``display_name`` and the ``currencies`` it accepts.

    Called once per process, when the platform first needs its providers, after
    the plugin is loaded. A provider with an invalid or already registered name
    is logged and left out. The providers of a plugin that an admin disables
    are not offered until it is re-enabled.
    """
