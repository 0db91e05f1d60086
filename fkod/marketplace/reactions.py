"""Platform events reaching the installs of plugin-shipped integrations.

Each call of a plugin's ``fkod_integration_event`` hook for one event and one
install is stored as an :class:`IntegrationReaction` row, the way webhook
deliveries are stored. :func:`fkod.core.webhooks.outbox.publish` calls
:meth:`EventReactor.record_reactions` in the transaction that writes the
event, so the event and its reactions commit or roll back together. The
reactions are enqueued on RUN_ACTOR after the commit. Writing the rows in the
event's transaction needs no fan-out message that could itself be lost, which
is simpler than sweeping events whose fan-out was never recorded. The install
query adds only reads to the publishing transaction.

A reaction moves ``pending`` → ``running`` (claimed by one worker with a
conditional update, ``locked_until`` set) → ``succeeded``, back to
``pending`` with a backoff after the hook raised, or ``failed`` once
MAX_ATTEMPTS calls are spent. No database transaction is open while the hook
runs. A reaction whose install no longer takes events (uninstalled, its
integration unlisted, its plugin disabled or without the hook) is marked
``failed`` without a call, as events published meanwhile get no reaction
either. The sweeper enqueues pending reactions that are due. It returns
running ones whose lock expired (the worker died mid-call) to ``pending``,
and the lost call counts as an attempt. A lost message or a killed worker
therefore delays a reaction but never loses it, and a hook may be called more
than once for the same event and install (at least once).

Which user an event concerns: ``data.user_id`` (course.completed,
mentor.matched, …), or ``data.id`` for ``user.*`` events, as the learning
plugin names the user its events are about. ``partner.*`` and
``integration.*`` events concern a partner, not a customer, so they reach no
install. integration.installed names the installing customer in ``user_id``,
but the plugin learns of that install through ``fkod_integration_installed``.
An install is reached only by events of the installing user's mode.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import random
import types

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from fkod.core.auth.models import User
from fkod.core.db import is_sqlite, run_in_transaction, utcnow
from fkod.core.ids import try_parse_id
from fkod.core.integrations import InstallContext
from fkod.core.webhooks.catalog import pattern_matches
from fkod.core.webhooks.delivery import backoff_seconds
from fkod.core.webhooks.models import Event
from fkod.marketplace.catalog import listed_clause
from fkod.marketplace.installs import call_hook, decrypt_config, install_context, plugin_hook
from fkod.marketplace.models import Integration, IntegrationInstall, IntegrationReaction

log = logging.getLogger(__name__)

RUN_ACTOR = "run_integration_reaction"
SWEEP_ACTOR = "sweep_integration_reactions"
# Messages of the design without stored reactions: an event's fan-out, and one
# call per install with its attempt number. Both are still consumed, so the
# messages in flight during an upgrade store their reactions instead of failing.
REACT_ACTOR = "react_to_event"
LEGACY_CALL_ACTOR = "call_integration_event"
HOOK_NAME = "fkod_integration_event"
# Event families about a partner rather than a customer.
PARTNER_EVENT_PREFIXES = ("partner.", "integration.")
# A failing hook is called at most this many times; the waits between calls
# double from RETRY_DELAY_SECONDS up to MAX_BACKOFF_SECONDS.
MAX_ATTEMPTS = 8
RETRY_DELAY_SECONDS = 30
MAX_BACKOFF_SECONDS = 3600
MAX_ERROR_CHARS = 255
SWEEP_BATCH_SIZE = 500
LOST_CALL_ERROR = "the worker stopped during the hook call"
NOT_TAKING_EVENTS_ERROR = "the install no longer takes events"


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


def error_text(exc: BaseException) -> str:
    """Describe a hook's exception in at most MAX_ERROR_CHARS characters."""
    return f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]


@dataclasses.dataclass(frozen=True)
class ClaimedReaction:
    reaction_id: int
    attempt: int
    plugin_name: str
    impl: object
    context: InstallContext
    envelope: dict


class EventReactor:
    """Stores, runs and sweeps the reactions of one application's database and plugins."""

    def __init__(self, registry, settings: dict):
        self.registry = registry
        self.retry_delay_seconds = RETRY_DELAY_SECONDS
        self.max_backoff_seconds = MAX_BACKOFF_SECONDS
        self.max_attempts = MAX_ATTEMPTS
        self.hook_timeout_seconds = settings["fkod.marketplace.event_hook_timeout_seconds"]
        self.sweep_grace_seconds = settings["fkod.webhooks.sweep_interval_seconds"]
        # The actor's time limit stops a call after hook_timeout_seconds, so a
        # claim held one sweep interval longer expires only when its worker died.
        self.lock_seconds = self.hook_timeout_seconds + self.sweep_grace_seconds
        # Jitter of retry times only, so a non-cryptographic generator is enough.
        self.rng = random.Random()  # noqa: S311

    @property
    def _listed(self):
        # listed_clause reads only request.registry, so an object with that attribute is enough.
        return listed_clause(types.SimpleNamespace(registry=self.registry))

    def _run(self, work):
        return run_in_transaction(self.registry["db.session_factory"], work)

    # Fan-out ---------------------------------------------------------------------------

    def record_reactions(self, session, transaction_manager, event: Event) -> list[int]:
        """Store one pending reaction per install ``event`` reaches; enqueue them after commit.

        Runs in the caller's transaction. Returns the ids of the reactions it
        stored. An install that already has a reaction to the event gets no
        second one.
        """
        reaction_ids = self.store_reactions(session, event)
        tasks = self.registry["tasks"]
        for reaction_id in reaction_ids:
            tasks.send_after_commit(transaction_manager, RUN_ACTOR, reaction_id)
        return reaction_ids

    def react(self, event_id: int, install_id: int | None = None) -> None:
        """Store the reactions to a stored event that are missing, and enqueue them.

        With ``install_id``, only that install's reaction is considered.
        """
        def work(session):
            event = session.get(Event, event_id)
            if event is None:
                return []
            return self.store_reactions(session, event, install_id=install_id)

        reaction_ids = self._run(work)
        tasks = self.registry["tasks"]
        for reaction_id in reaction_ids:
            tasks.send(RUN_ACTOR, reaction_id)

    def call_legacy(self, event_id: int, install_id: int, attempt: int = 1) -> None:
        """Store the reaction of one install to one event, for a message of the former actor."""
        self.react(event_id, install_id)

    def store_reactions(self, session, event: Event, *,
                        install_id: int | None = None) -> list[int]:
        """Store the missing pending reactions to ``event`` in ``session`` and return their ids.

        Nothing is enqueued: the caller enqueues them, or the sweeper finds
        them once they are due. With ``install_id``, only that install's
        reaction is considered.
        """
        install_ids = self._reached_installs(session, event)
        if install_id is not None:
            install_ids = [found for found in install_ids if found == install_id]
        if not install_ids:
            return []

        now = utcnow()
        insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" \
            else sqlite.insert
        # ON CONFLICT DO NOTHING keeps a second fan-out of the same event,
        # even a concurrent one, from storing a second reaction per install.
        statement = (
            insert(IntegrationReaction)
            .values([{"event_id": event.id, "install_id": found, "status": "pending",
                      "attempts": 0, "next_attempt_at": now, "created_at": now}
                     for found in install_ids])
            .on_conflict_do_nothing(index_elements=["event_id", "install_id"])
            .returning(IntegrationReaction.id)
        )
        reaction_ids = sorted(session.scalars(statement))
        if reaction_ids:
            log.info("event reaches installs", extra={
                "event_id": event.public_id, "reactions": len(reaction_ids)})
        return reaction_ids

    def _reached_installs(self, session, event: Event) -> list[int]:
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

    def call(self, reaction_id: int) -> None:
        """Claim a due reaction, call the plugin's hook and record the outcome."""
        claimed = self._run(lambda session: self._claim(session, reaction_id))
        if claimed is None:
            return
        try:
            call_hook(claimed.impl, install=claimed.context, event=claimed.envelope)
        except Exception as exc:
            self._record_failure(claimed, exc)
            return

        recorded = self._run(lambda session: self._finish(
            session, claimed, status="succeeded", next_attempt_at=None, last_error=None))
        log.info("integration event hook ran", extra={
            "event_id": claimed.envelope["id"], "install_id": claimed.context.install_id,
            "plugin": claimed.plugin_name, "attempt": claimed.attempt, "recorded": recorded})

    def _claim(self, session, reaction_id: int) -> ClaimedReaction | None:
        """Mark a due reaction running and return what the call needs.

        Returns None when the reaction is not pending or not yet due, and
        when its install no longer takes events, which marks it failed.
        """
        now = utcnow()
        reaction = session.get(IntegrationReaction, reaction_id)
        if reaction is None or reaction.status != "pending":
            return None
        if reaction.next_attempt_at is not None and reaction.next_attempt_at > now:
            return None

        loaded = self._load_call(session, reaction)
        if loaded is None:
            session.execute(
                sa.update(IntegrationReaction)
                .where(IntegrationReaction.id == reaction_id,
                       IntegrationReaction.status == "pending")
                .values(status="failed", completed_at=now, next_attempt_at=None,
                        last_error=NOT_TAKING_EVENTS_ERROR)
                .execution_options(synchronize_session=False))
            log.info("integration reaction dropped because the install no longer takes events",
                     extra={"reaction_id": reaction_id, "install_id": reaction.install_id})
            return None

        attempt = session.scalar(
            sa.update(IntegrationReaction)
            .where(IntegrationReaction.id == reaction_id,
                   IntegrationReaction.status == "pending",
                   sa.or_(IntegrationReaction.next_attempt_at.is_(None),
                          IntegrationReaction.next_attempt_at <= now))
            .values(status="running", attempts=IntegrationReaction.attempts + 1,
                    locked_until=now + dt.timedelta(seconds=self.lock_seconds))
            .returning(IntegrationReaction.attempts)
            .execution_options(synchronize_session=False))
        if attempt is None:
            return None
        impl, context, envelope, plugin_name = loaded
        return ClaimedReaction(reaction_id=reaction_id, attempt=attempt,
                               plugin_name=plugin_name, impl=impl, context=context,
                               envelope=envelope)

    def _load_call(self, session, reaction: IntegrationReaction):
        """Return what one call needs, or None when the install no longer takes events."""
        row = session.execute(
            sa.select(IntegrationInstall, Integration)
            .join(Integration, Integration.id == IntegrationInstall.integration_id)
            .where(IntegrationInstall.id == reaction.install_id,
                   IntegrationInstall.status == "active",
                   self._listed)).one_or_none()
        event = session.get(Event, reaction.event_id)
        if row is None or event is None:
            return None
        install, integration = row
        impl = plugin_hook(self.registry["plugins"], HOOK_NAME, integration.plugin_name)
        if impl is None:
            return None
        config = decrypt_config(self.registry["webhook_vault"], install.config)
        return (impl, install_context(install, integration, config), event_envelope(event),
                integration.plugin_name)

    def _finish(self, session, claimed: ClaimedReaction, *, status: str,
                next_attempt_at: dt.datetime | None, last_error: str | None) -> bool:
        """Store the outcome of a call. Returns False when the sweeper took the claim back."""
        now = utcnow()
        done = status in ("succeeded", "failed")
        result = session.execute(
            sa.update(IntegrationReaction)
            .where(IntegrationReaction.id == claimed.reaction_id,
                   IntegrationReaction.status == "running",
                   IntegrationReaction.attempts == claimed.attempt)
            .values(status=status, locked_until=None, next_attempt_at=next_attempt_at,
                    last_error=last_error, completed_at=now if done else None)
            .execution_options(synchronize_session=False))
        return result.rowcount == 1

    def _record_failure(self, claimed: ClaimedReaction, exc: Exception) -> None:
        where = {"event_id": claimed.envelope["id"], "install_id": claimed.context.install_id,
                 "plugin": claimed.plugin_name, "attempt": claimed.attempt}
        if claimed.attempt >= self.max_attempts:
            self._run(lambda session: self._finish(
                session, claimed, status="failed", next_attempt_at=None,
                last_error=error_text(exc)))
            log.error("integration event hook failed; giving up", exc_info=True, extra=where)
            return

        delay = backoff_seconds(claimed.attempt, self.retry_delay_seconds,
                                self.max_backoff_seconds, rng=self.rng)
        recorded = self._run(lambda session: self._finish(
            session, claimed, status="pending",
            next_attempt_at=utcnow() + dt.timedelta(seconds=delay),
            last_error=error_text(exc)))
        log.warning("integration event hook failed; retrying", exc_info=True,
                    extra={**where, "retry_in_seconds": delay})
        if recorded:
            self.registry["tasks"].send(RUN_ACTOR, claimed.reaction_id, delay_ms=delay * 1000)

    # The sweeper ---------------------------------------------------------------

    def sweep(self, *, grace_seconds: float | None = None,
              batch_size: int = SWEEP_BATCH_SIZE) -> int:
        """Release lost claims and enqueue reactions that are due; return how many."""
        grace = self.sweep_grace_seconds if grace_seconds is None else grace_seconds
        due_ids = self._run(lambda session: self._find_due(session, grace, batch_size))
        tasks = self.registry["tasks"]
        for reaction_id in due_ids:
            tasks.send(RUN_ACTOR, reaction_id)
        if due_ids:
            log.info("sweeper enqueued integration reactions", extra={"count": len(due_ids)})
        return len(due_ids)

    def _find_due(self, session, grace_seconds: float, batch_size: int) -> list[int]:
        now = utcnow()
        lost = (sa.select(IntegrationReaction.id, IntegrationReaction.attempts)
                .where(IntegrationReaction.status == "running",
                       IntegrationReaction.locked_until < now)
                .limit(batch_size))
        if not is_sqlite(session):
            lost = lost.with_for_update(skip_locked=True)
        released = []
        for reaction_id, attempts in session.execute(lost).all():
            # The claim already counted the lost call as an attempt.
            spent = attempts >= self.max_attempts
            session.execute(
                sa.update(IntegrationReaction)
                .where(IntegrationReaction.id == reaction_id,
                       IntegrationReaction.status == "running")
                .values(status="failed" if spent else "pending", locked_until=None,
                        next_attempt_at=None if spent else now,
                        completed_at=now if spent else None, last_error=LOST_CALL_ERROR)
                .execution_options(synchronize_session=False))
            if spent:
                log.error("integration event hook call lost on its last attempt, giving up",
                          extra={"reaction_id": reaction_id, "attempt": attempts})
            else:
                released.append(reaction_id)
                log.warning("integration event hook call lost, retrying",
                            extra={"reaction_id": reaction_id, "attempt": attempts})

        cutoff = now - dt.timedelta(seconds=grace_seconds)
        due = session.scalars(
            sa.select(IntegrationReaction.id)
            .where(IntegrationReaction.status == "pending",
                   IntegrationReaction.next_attempt_at <= cutoff,
                   IntegrationReaction.id.not_in(released))
            .order_by(IntegrationReaction.next_attempt_at)
            .limit(batch_size))
        return released + list(due)


def includeme(config):
    """Declare the reaction actors and the periodic reaction sweeper."""
    registry = config.registry
    settings = config.get_settings()
    reactor = EventReactor(registry, settings)
    registry["integration_reactor"] = reactor
    tasks = registry["tasks"]
    tasks.actor(reactor.call, name=RUN_ACTOR,
                time_limit_ms=reactor.hook_timeout_seconds * 1000)
    tasks.actor(reactor.react, name=REACT_ACTOR)
    tasks.actor(reactor.call_legacy, name=LEGACY_CALL_ACTOR)
    tasks.every(SWEEP_ACTOR, settings["fkod.webhooks.sweep_interval_seconds"],
                registry["leader_lock"].wrap(SWEEP_ACTOR, reactor.sweep))
