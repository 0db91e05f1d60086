"""Loading plugins from the ``fkod.plugins`` entry points, the ini pins, and the run-time gate.

Plugins are loaded inside the app factory, never as a side effect of an
import. A plugin that fails to import or raises in a hook is logged and
recorded as failed, and the application starts without it. A plugin named in
``fkod.plugins.pinned_off`` is listed but never imported; one named in
``fkod.plugins.pinned_on`` is always enabled, whatever ``plugin_states`` says.

Pyramid cannot remove a route once the application is built, so each route a
plugin adds is recorded as the plugin's, and a subscriber answers 404 for it
while the plugin is disabled. The enabled state lives in ``plugin_states``;
each process caches it for ``fkod.plugins.state_cache_seconds``. When Redis is
configured, a change is also published on a Redis channel and every process
drops its cache when the message arrives.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import threading
import time
from collections.abc import Mapping

import pluggy
import redis
import sqlalchemy as sa
from pyramid.events import ContextFound
from pyramid.httpexceptions import HTTPNotFound

from fkod.core import hookspecs
from fkod.core.alerts import EVENT_TYPES as ALERT_EVENT_TYPES
from fkod.core.db import read_only, run_in_transaction, utcnow
from fkod.core.plugin_models import PluginState
from fkod.core.settings import ConfigurationError
from fkod.core.webhooks.catalog import EventCatalog
from fkod.core.webhooks.operational import EVENT_TYPES as OPERATIONAL_EVENT_TYPES

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "fkod.plugins"

# PluginInfo.status values: imported and registered, failed to load or in a
# hook, or left unimported because fkod.plugins.pinned_off names it.
LOADED = "loaded"
FAILED = "failed"
NOT_LOADED = "not_loaded"

# Seconds the Redis listener waits before subscribing again after an error, at most.
MAX_LISTENER_BACKOFF_SECONDS = 30.0


class PluginPinned(Exception):
    """The plugin's enabled state is fixed by an ``fkod.plugins.pinned_*`` setting."""


class PluginNotLoaded(Exception):
    """The plugin failed to load, so it cannot be enabled."""


@dataclasses.dataclass
class IntegrationLink:
    """The outcome of the last manifest sync for one integration manifest of a plugin.

    ``linked`` is false when the publisher is not a verified partner, so the
    integration was kept out of the catalog, and ``problem`` gives the reason.
    """

    slug: str
    version: str
    publisher: str
    linked: bool
    integration_id: int | None = None
    outcome: str | None = None
    problem: str | None = None


@dataclasses.dataclass
class PluginInfo:
    """A plugin found through the entry points and how its loading went."""

    name: str
    module: str
    version: str | None
    distribution: str | None = None
    status: str = LOADED
    error: str | None = None
    # "on" or "off" when an fkod.plugins.pinned_* setting names the plugin.
    pinned: str | None = None
    routes: set[str] = dataclasses.field(default_factory=set)
    # Route name to URL pattern, for the routes in ``routes``.
    route_patterns: dict[str, str] = dataclasses.field(default_factory=dict)
    scopes: list[str] = dataclasses.field(default_factory=list)
    integrations: list[IntegrationLink] = dataclasses.field(default_factory=list)


class PluginHost:
    """The plugin manager, what each plugin contributed, and whether it is enabled."""

    def __init__(self, session_factory, engine, cache_seconds: float, *,
                 pinned_on: frozenset[str] = frozenset(),
                 pinned_off: frozenset[str] = frozenset(),
                 redis_client=None, channel: str = "fkod:plugins:changed"):
        self.manager = pluggy.PluginManager(hookspecs.PROJECT)
        self.manager.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self.event_catalog = EventCatalog()
        # Integration manifests collected at start-up, by plugin name; filled
        # in by fkod.marketplace.sync.
        self.manifests: dict[str, list] = {}
        self.pinned_on = pinned_on
        self.pinned_off = pinned_off
        self._session_factory = session_factory
        self._engine = engine
        self._cache_seconds = cache_seconds
        self._disabled: frozenset[str] = frozenset()
        self._loaded_at = float("-inf")
        self._lock = threading.Lock()
        self._payment_providers: dict[str, list[str]] | None = None
        self._listener = StateChangeListener(self, redis_client, channel) \
            if redis_client is not None else None

    # Loading ---------------------------------------------------------------

    def load_entry_points(self) -> None:
        """Import and register every plugin of the entry-point group but the pinned-off ones."""
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = entry_point.dist
            info = PluginInfo(entry_point.name, entry_point.value,
                              dist.version if dist else None,
                              distribution=dist.metadata["Name"] if dist else None)
            self.plugins[entry_point.name] = info
            if entry_point.name in self.pinned_off:
                info.status = NOT_LOADED
                info.pinned = "off"
                log.info("plugin not loaded by configuration", extra={"plugin": entry_point.name})
                continue
            if entry_point.name in self.pinned_on:
                info.pinned = "on"
            try:
                plugin = entry_point.load()
                self.manager.register(plugin, name=entry_point.name)
                self._check_hooks_known(plugin)
            except Exception as exc:
                self._mark_failed(info, "import", exc)

        for name in sorted((self.pinned_on | self.pinned_off) - self.plugins.keys()):
            log.warning("pinned plugin not installed", extra={"plugin": name})

    def _check_hooks_known(self, plugin) -> None:
        """Reject a plugin that implements a hook no specification declares (a typo, say)."""
        for caller in self.manager.get_hookcallers(plugin) or ():
            if not caller.has_spec():
                raise pluggy.PluginValidationError(
                    plugin, f"unknown hook {caller.name}: no hook specification has that name")

    def call_each(self, hook_name: str, *, enabled_only: bool = False,
                  **kwargs) -> list[tuple[str, object]]:
        """Call a hook plugin by plugin; a plugin that raises is marked failed and skipped.

        Start-up collection calls every loaded plugin, so a plugin an admin
        re-enables has its contributions ready. Calls made while serving
        requests pass ``enabled_only=True`` so disabled plugins are skipped.
        """
        results = []
        hook = getattr(self.manager.hook, hook_name)
        for impl in reversed(hook.get_hookimpls()):
            info = self.plugins.get(impl.plugin_name)
            if info is not None and info.status == FAILED:
                continue
            if enabled_only and info is not None and not self.is_enabled(info.name):
                continue
            try:
                arguments = {name: kwargs[name] for name in impl.argnames}
                results.append((impl.plugin_name, impl.function(**arguments)))
            except Exception as exc:
                if info is None:
                    raise
                self._mark_failed(info, hook_name, exc)
        return results

    def mark_failed(self, name: str, stage: str, exc: Exception) -> None:
        """Record that plugin ``name`` failed at ``stage`` and unregister its hooks."""
        self._mark_failed(self.plugins[name], stage, exc)

    def _mark_failed(self, info: PluginInfo, stage: str, exc: Exception) -> None:
        info.status = FAILED
        info.error = f"{stage}: {type(exc).__name__}: {exc}"
        log.error("plugin failed", exc_info=exc, extra={"plugin": info.name, "stage": stage})
        if self.manager.has_plugin(info.name):
            self.manager.unregister(name=info.name)

    def collect_event_types(self) -> None:
        for plugin_name, event_types in self.call_each("fkod_register_event_types"):
            for event_type in event_types or ():
                try:
                    self.event_catalog.add(dataclasses.replace(event_type, plugin=plugin_name))
                except ValueError as exc:
                    self._mark_failed(self.plugins[plugin_name], "fkod_register_event_types", exc)

    def collect_scopes(self, catalog) -> None:
        for plugin_name, scopes in self.call_each("fkod_register_scopes"):
            for scope in scopes or ():
                try:
                    catalog.add(scope)
                except ValueError as exc:
                    self._mark_failed(self.plugins[plugin_name], "fkod_register_scopes", exc)
                    continue
                self.plugins[plugin_name].scopes.append(scope.name)

    def include_routes(self, config) -> None:
        """Let each plugin add its routes and record which routes are whose."""
        # Commit what the core registered so far, so its routes are not
        # counted as the first plugin's.
        config.commit()
        mapper = config.get_routes_mapper()
        for impl in reversed(self.manager.hook.fkod_include.get_hookimpls()):
            info = self.plugins[impl.plugin_name]
            before = {route.name for route in mapper.get_routes()}
            try:
                impl.function(config=config)
                config.commit()
            except Exception as exc:
                self._mark_failed(info, "fkod_include", exc)
                continue
            added = [route for route in mapper.get_routes() if route.name not in before]
            info.routes = {route.name for route in added}
            info.route_patterns = {route.name: route.pattern for route in added}

    def record_load_state(self) -> None:
        """Store how loading went, for admins; a database not yet migrated is skipped."""
        def write(session):
            for info in self.plugins.values():
                state = session.get(PluginState, info.name) or PluginState(name=info.name)
                state.load_status = info.status
                state.load_error = info.error
                state.version = info.version
                state.updated_at = utcnow()
                session.add(state)

        try:
            run_in_transaction(self._session_factory, write)
        except sa.exc.SQLAlchemyError as exc:
            log.warning("could not record plugin states", extra={"error": str(exc)[:200]})

    # What a plugin contributes ---------------------------------------------

    def event_type_names(self, name: str) -> list[str]:
        return [item.name for item in self.event_catalog.available(lambda _plugin: True)
                if item.plugin == name]

    def payment_provider_names(self, name: str) -> list[str]:
        """Return the names of the payment providers plugin ``name`` contributes.

        The hook is called once per process for this listing, besides the
        billing code's own collection. An error is only logged here, because
        that collection marks the plugin failed.
        """
        if self._payment_providers is None:
            self._payment_providers = self._describe_payment_providers()
        return self._payment_providers.get(name, [])

    def _describe_payment_providers(self) -> dict[str, list[str]]:
        hook = getattr(self.manager.hook, "fkod_register_payment_providers", None)
        if hook is None:
            return {}
        described: dict[str, list[str]] = {}
        for impl in hook.get_hookimpls():
            try:
                providers = impl.function() or ()
            except Exception as exc:
                log.warning("could not list payment providers",
                            extra={"plugin": impl.plugin_name, "error": str(exc)[:200]})
                continue
            if isinstance(providers, Mapping):
                names = [str(key) for key in providers]
            else:
                names = [str(getattr(provider, "name", None) or type(provider).__name__)
                         for provider in providers]
            described[impl.plugin_name] = sorted(names)
        return described

    # The gate ----------------------------------------------------------------

    def is_enabled(self, name: str) -> bool:
        info = self.plugins.get(name)
        if info is None or info.status != LOADED:
            return False
        if name in self.pinned_on:
            return True
        return name not in self._disabled_names()

    def _disabled_names(self) -> frozenset[str]:
        if self._listener is not None:
            self._listener.start()
        now = time.monotonic()
        if now - self._loaded_at < self._cache_seconds:
            return self._disabled
        with self._lock:
            if now - self._loaded_at >= self._cache_seconds:
                self._disabled = self._read_disabled()
                self._loaded_at = now
        return self._disabled

    def _read_disabled(self) -> frozenset[str]:
        def read(connection):
            return frozenset(connection.scalars(
                sa.select(PluginState.name).where(PluginState.enabled.is_(False))
            ))

        try:
            return read_only(self._engine, read)
        except sa.exc.SQLAlchemyError as exc:
            log.warning("could not read plugin states; keeping the last known",
                        extra={"error": str(exc)[:200]})
            return self._disabled

    def forget_cached_state(self) -> None:
        """Make the next gate check read ``plugin_states`` again."""
        self._loaded_at = float("-inf")

    def set_enabled(self, session, name: str, enabled: bool) -> bool:
        """Store whether plugin ``name`` is enabled, in ``session``'s transaction.

        Returns whether the stored value changed. Raises :class:`PluginPinned`
        when a pin setting names the plugin, and :class:`PluginNotLoaded` when
        enabling a plugin that failed to load. Once the transaction commits,
        this process and (through Redis, when configured) every other one drop
        their cached state.
        """
        info = self.plugins.get(name)
        if info is not None and info.pinned is not None:
            raise PluginPinned(name)
        if enabled and info is not None and info.status != LOADED:
            raise PluginNotLoaded(name)
        state = session.get(PluginState, name) or PluginState(name=name, enabled=True)
        changed = state.enabled is not enabled
        state.enabled = enabled
        session.add(state)
        self.forget_cached_state()
        sa.event.listen(session, "after_commit", self._announce_change, once=True)
        return changed

    def _announce_change(self, _session) -> None:
        self.forget_cached_state()
        if self._listener is not None:
            self._listener.publish()

    def close(self) -> None:
        """Stop the Redis listener thread, if it was started."""
        if self._listener is not None:
            self._listener.stop()

    def owner_of_route(self, route_name: str) -> str | None:
        for info in self.plugins.values():
            if route_name in info.routes:
                return info.name
        return None


class StateChangeListener:
    """Publishes plugin state changes on a Redis channel and drops the cache on each message.

    The listener thread starts on the first gate check and stops with the
    application. While Redis is unreachable it retries with backoff, and the
    time-based cache still brings every process up to date.
    """

    def __init__(self, host: PluginHost, redis_client, channel: str):
        self._host = host
        self._redis = redis_client
        self._channel = channel
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()

    def start(self) -> None:
        if self._thread is not None or self._stopping.is_set():
            return
        with self._lock:
            if self._thread is None and not self._stopping.is_set():
                self._thread = threading.Thread(target=self._run, name="fkod-plugin-states",
                                                daemon=True)
                self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=5)

    def publish(self) -> None:
        try:
            self._redis.publish(self._channel, b"changed")
        except redis.RedisError as exc:
            log.warning("could not announce a plugin state change; other processes see it "
                        "when their cache expires", extra={"error": str(exc)[:200]})

    def _run(self) -> None:
        backoff = 1.0
        while not self._stopping.is_set():
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self._channel)
                # Changes made while this process was not subscribed were missed.
                self._host.forget_cached_state()
                backoff = 1.0
                while not self._stopping.is_set():
                    if pubsub.get_message(timeout=0.5) is not None:
                        self._host.forget_cached_state()
            except redis.RedisError as exc:
                log.warning("plugin state listener lost Redis; retrying",
                            extra={"error": str(exc)[:200], "retry_in_seconds": backoff})
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, MAX_LISTENER_BACKOFF_SECONDS)
            finally:
                try:
                    pubsub.close()
                except redis.RedisError:
                    pass


def gate_disabled_plugin_routes(event: ContextFound) -> None:
    request = event.request
    if request.matched_route is None:
        return
    host: PluginHost = request.registry["plugins"]
    owner = host.owner_of_route(request.matched_route.name)
    if owner is not None and not host.is_enabled(owner):
        raise HTTPNotFound()


def pins_from_settings(settings) -> tuple[frozenset[str], frozenset[str]]:
    """Return the pinned-on and pinned-off plugin names; a name in both is a ConfigurationError.

    ``fkod.plugins.disabled`` is the older name of ``fkod.plugins.pinned_off``;
    the names of both are pinned off.
    """
    pinned_on = frozenset(settings["fkod.plugins.pinned_on"])
    pinned_off = frozenset(settings["fkod.plugins.pinned_off"]) | \
        frozenset(settings["fkod.plugins.disabled"])
    both = sorted(pinned_on & pinned_off)
    if both:
        raise ConfigurationError(
            f"invalid setting fkod.plugins.pinned_on: plugin {both[0]!r} is also in "
            f"fkod.plugins.pinned_off (or fkod.plugins.disabled); pin it on or off, not both"
        )
    return pinned_on, pinned_off


def includeme(config):
    """Load the plugins, collect their event types and routes, install the gate."""
    settings = config.get_settings()
    pinned_on, pinned_off = pins_from_settings(settings)
    host = PluginHost(config.registry["db.session_factory"], config.registry["db.engine"],
                      settings["fkod.plugins.state_cache_seconds"],
                      pinned_on=pinned_on, pinned_off=pinned_off,
                      redis_client=config.registry.get("redis"),
                      channel=settings["fkod.redis.key_prefix"] + "plugins:changed")
    config.registry["plugins"] = host
    for event_type in (*OPERATIONAL_EVENT_TYPES, *ALERT_EVENT_TYPES):
        host.event_catalog.add(event_type)
    host.load_entry_points()
    host.collect_event_types()
    host.collect_scopes(config.registry["scope_catalog"])
    host.include_routes(config)
    config.add_subscriber(gate_disabled_plugin_routes, ContextFound)
    loaded = sorted(name for name, info in host.plugins.items() if info.status == LOADED)
    failed = sorted(name for name, info in host.plugins.items() if info.status == FAILED)
    log.info("plugins loaded", extra={"loaded": loaded, "failed": failed,
                                      "pinned_on": sorted(pinned_on),
                                      "pinned_off": sorted(pinned_off)})
