"""Platform events reaching the installs of plugin-shipped integrations.

After the transaction that stored an event commits, the outbox enqueues
REACT_ACTOR with the event's row id. That actor finds the active installs,
by the users the event concerns, of listed integrations that a plugin ships
and whose ``event_types`` match the event, and enqueues CALL_ACTOR once per
install. CALL_ACTOR calls the owning plugin's ``fkod_integration_event`` hook.
A hook that raises is logged and called again after a backoff, up to
MAX_ATTEMPTS calls. The broker has no Retries middleware (see
:mod:`fkod.core.tasks`), so the actor enqueues its own retry with a delay.

Which user an event concerns: ``data.user_id`` (course.completed,
mentor.matched, …), or ``data.id`` for ``user.*`` events, as the learning
plugin names the user its events are about. ``partner.*`` and
``integration.*`` events concern a partner, not a customer, so they reach no
install. integration.installed names the installing customer in ``user_id``,
but the plugin learns of that install through ``fkod_integration_installed``.
An install is reached only by events of the installing user's mode.

NOTE: the outbox stores no row per reaction, so the sweeper cannot resend a
lost REACT_ACTOR message. An event whose enqueue after the commit failed (a
broker outage, or a process killed between commit and enqueue) reaches no
install.
"""

from __future__ import annotations

import logging
import random
import types

import sqlalchemy as sa

from fkod.core.auth.models import User
from fkod.core.db import run_in_transaction
from fkod.core.ids import try_parse_id
from fkod.core.webhooks.catalog import pattern_matches
from fkod.core.webhooks.delivery import backoff_seconds
from fkod.core.webhooks.models import Event
from fkod.core.webhooks.outbox import REACT_ACTOR
from fkod.marketplace.catalog import listed_clause
from fkod.marketplace.installs import call_hook, decrypt_config, install_context, plugin_hook
from fkod.marketplace.models import Integration, IntegrationInstall

log = logging.getLogger(__name__)

CALL_ACTOR = "call_integration_event"
HOOK_NAME = "fkod_integration_event"
# Event families about a partner rather than a customer.
PARTNER_EVENT_PREFIXES = ("partner.", "integration.")
# A failing hook is called at most this many times; the waits between calls
# double from RETRY_DELAY_SECONDS up to MAX_BACKOFF_SECONDS.
MAX_ATTEMPTS = 8
RETRY_DELAY_SECONDS = 30
MAX_BACKOFF_SECONDS = 3600


def concerned_user_ids(event_type: str, data: dict) -> set[int]:
    """Return the ids of the users an event is about; empty for partner events."""
    if event_type.startswith(PARTNER_EVENT_PREFIXES) or not isinstance(data, dict):
        return set()
    found = set()
    user_id = try_parse_id("user", data.get("user_id"))
    if user_id is not None:
        found.add(user_id)
    if event_type.startswith("user."):
        user_id = try_parse_id("user", data.get("id"))
        if user_id is not None:
            found.add(user_id)
    return found


def event_envelope(event: Event) -> dict:
    """The event as the hook receives it: id, type, created, livemode and data."""
    payload = event.payload or {}
    return {"id": event.public_id, "type": event.type, "created": payload.get("created"),
            "livemode": event.livemode, "data": payload.get("data")}


class EventReactor:
    """Runs the two actors against one application's database and plugins."""

    def __init__(self, registry):
        self.registry = registry
        self.retry_delay_seconds = RETRY_DELAY_SECONDS
        self.max_backoff_seconds = MAX_BACKOFF_SECONDS
        self.max_attempts = MAX_ATTEMPTS
        # Jitter of retry times only, so a non-cryptographic generator is enough.
        self.rng = random.Random()  # noqa: S311

    @property
    def _listed(self):
        # listed_clause reads only request.registry, so an object with that attribute is enough.
        return listed_clause(types.SimpleNamespace(registry=self.registry))

    def _run(self, work):
        return run_in_transaction(self.registry["db.session_factory"], work)

    # Fan-out ---------------------------------------------------------------------------

    def react(self, event_id: int) -> None:
        """Enqueue one hook call per install the event reaches."""
        install_ids = self._run(lambda session: self._reached_installs(session, event_id))
        tasks = self.registry["tasks"]
        for install_id in install_ids:
            tasks.send(CALL_ACTOR, event_id, install_id, 1)
        if install_ids:
            log.info("event reaches installs", extra={"event_id": event_id,
                                                      "installs": len(install_ids)})

    def _reached_installs(self, session, event_id: int) -> list[int]:
        event = session.get(Event, event_id)
        if event is None:
            return []
        user_ids = concerned_user_ids(event.type, (event.payload or {}).get("data"))
        if not user_ids:
            return []
        rows = session.execute(
            sa.select(IntegrationInstall.id, Integration.event_types)
            .join(Integration, Integration.id == IntegrationInstall.integration_id)
            .join(User, User.id == IntegrationInstall.user_id)
            .where(IntegrationInstall.user_id.in_(sorted(user_ids)),
                   IntegrationInstall.status == "active",
                   Integration.plugin_name.is_not(None),
                   User.livemode.is_(event.livemode),
                   self._listed)
            .order_by(IntegrationInstall.id)).all()
        return [install_id for install_id, patterns in rows
                if any(pattern_matches(pattern, event.type) for pattern in patterns or ())]

    # One call ------------------------------------------------------------------------------

    def call(self, event_id: int, install_id: int, attempt: int) -> None:
        """Call the plugin's hook for one install; a failure is retried after a backoff."""
        loaded = self._run(lambda session: self._load_call(session, event_id, install_id))
        if loaded is None:
            return
        impl, context, envelope, plugin_name = loaded
        try:
            call_hook(impl, install=context, event=envelope)
        except Exception:
            self._retry_or_give_up(event_id, install_id, attempt, plugin_name)
            return
        log.info("integration event hook ran", extra={
            "event_id": envelope["id"], "install_id": install_id, "plugin": plugin_name,
            "attempt": attempt})

    def _load_call(self, session, event_id: int, install_id: int):
        """Return what one call needs, or None when the install no longer takes events."""
        row = session.execute(
            sa.select(IntegrationInstall, Integration)
            .join(Integration, Integration.id == IntegrationInstall.integration_id)
            .where(IntegrationInstall.id == install_id, IntegrationInstall.status == "active",
                   self._listed)).one_or_none()
        event = session.get(Event, event_id)
        if row is None or event is None:
            return None
        install, integration = row
        impl = plugin_hook(self.registry["plugins"], HOOK_NAME, integration.plugin_name)
        if impl is None:
            return None
        config = decrypt_config(self.registry["webhook_vault"], install.config)
        return (impl, install_context(install, integration, config), event_envelope(event),
                integration.plugin_name)

    def _retry_or_give_up(self, event_id: int, install_id: int, attempt: int,
                          plugin_name: str) -> None:
        where = {"event_id": event_id, "install_id": install_id, "plugin": plugin_name,
                 "attempt": attempt}
        if attempt >= self.max_attempts:
            log.error("integration event hook failed; giving up", exc_info=True, extra=where)
            return
        delay = backoff_seconds(attempt, self.retry_delay_seconds, self.max_backoff_seconds,
                                rng=self.rng)
        log.warning("integration event hook failed; retrying", exc_info=True,
                    extra={**where, "retry_in_seconds": delay})
        self.registry["tasks"].send(CALL_ACTOR, event_id, install_id, attempt + 1,
                                    delay_ms=delay * 1000)


def includeme(config):
    """Declare the two actors on the application's task queue."""
    registry = config.registry
    reactor = EventReactor(registry)
    registry["integration_reactor"] = reactor
    tasks = registry["tasks"]
    tasks.actor(reactor.react, name=REACT_ACTOR)
    tasks.actor(reactor.call, name=CALL_ACTOR)
