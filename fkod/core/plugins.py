"""Loading plugins from the ``fkod.plugins`` entry points, and the run-time gate.

Plugins are loaded inside the app factory, never as a side effect of an
import. A plugin that fails to import or raises in a hook is logged and
recorded as failed, and the application starts without it.

Pyramid cannot remove a route once the application is built, so each route a
plugin adds is recorded as the plugin's, and a subscriber answers 404 for it
while the plugin is disabled. The enabled state lives in ``plugin_states``;
each process caches it for ``fkod.plugins.state_cache_seconds``.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import threading
import time

import pluggy
import sqlalchemy as sa
from pyramid.events import ContextFound
from pyramid.httpexceptions import HTTPNotFound

from fkod.core import hookspecs
from fkod.core.db import read_only, run_in_transaction, utcnow
from fkod.core.plugin_models import PluginState
from fkod.core.webhooks.catalog import EventCatalog
from fkod.core.webhooks.operational import EVENT_TYPES as OPERATIONAL_EVENT_TYPES

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "fkod.plugins"


@dataclasses.dataclass
class PluginInfo:
    """A plugin found through the entry points and how its loading went."""

    name: str
    module: str
    version: str | None
    status: str = "loaded"
    error: str | None = None
    routes: set[str] = dataclasses.field(default_factory=set)


class PluginHost:
    """The plugin manager, what each plugin contributed, and whether it is enabled."""

    def __init__(self, session_factory, engine, cache_seconds: float):
        self.manager = pluggy.PluginManager(hookspecs.PROJECT)
        self.manager.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self.event_catalog = EventCatalog()
        self._session_factory = session_factory
        self._engine = engine
        self._cache_seconds = cache_seconds
        self._disabled: frozenset[str] = frozenset()
        self._loaded_at = float("-inf")
        self._lock = threading.Lock()

    # Loading ---------------------------------------------------------------

    def load_entry_points(self, skip: set[str]) -> None:
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if entry_point.name in skip:
                log.info("plugin not loaded by configuration", extra={"plugin": entry_point.name})
                continue
            version = entry_point.dist.version if entry_point.dist else None
            info = PluginInfo(entry_point.name, entry_point.value, version)
            self.plugins[entry_point.name] = info
            try:
                plugin = entry_point.load()
                self.manager.register(plugin, name=entry_point.name)
                self._check_hooks_known(plugin)
            except Exception as exc:
                self._mark_failed(info, "import", exc)

    def _check_hooks_known(self, plugin) -> None:
        """Reject a plugin that implements a hook no specification declares (a typo, say)."""
        for caller in self.manager.get_hookcallers(plugin) or ():
            if not caller.has_spec():
                raise pluggy.PluginValidationError(
                    plugin, f"unknown hook {caller.name}: no hook specification has that name")

    def call_each(self, hook_name: str, **kwargs) -> list[tuple[str, object]]:
        """Call a hook plugin by plugin; a plugin that raises is marked failed and skipped."""
        results = []
        hook = getattr(self.manager.hook, hook_name)
        for impl in reversed(hook.get_hookimpls()):
            info = self.plugins.get(impl.plugin_name)
            if info is not None and info.status == "failed":
                continue
            try:
                arguments = {name: kwargs[name] for name in impl.argnames}
                results.append((impl.plugin_name, impl.function(**arguments)))
            except Exception as exc:
                if info is None:
                    raise
                self._mark_failed(info, hook_name, exc)
        return results

    def _mark_failed(self, info: PluginInfo, stage: str, exc: Exception) -> None:
        info.status = "failed"
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
            info.routes = {route.name for route in mapper.get_routes()} - before

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

    # The gate ----------------------------------------------------------------

    def is_enabled(self, name: str) -> bool:
        info = self.plugins.get(name)
        if info is None or info.status != "loaded":
            return False
        return name not in self._disabled_names()

    def _disabled_names(self) -> frozenset[str]:
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

    def set_enabled(self, session, name: str, enabled: bool) -> None:
        state = session.get(PluginState, name) or PluginState(name=name)
        state.enabled = enabled
        session.add(state)
        self._loaded_at = float("-inf")

    def owner_of_route(self, route_name: str) -> str | None:
        for info in self.plugins.values():
            if route_name in info.routes:
                return info.name
        return None


def gate_disabled_plugin_routes(event: ContextFound) -> None:
    request = event.request
    if request.matched_route is None:
        return
    host: PluginHost = request.registry["plugins"]
    owner = host.owner_of_route(request.matched_route.name)
    if owner is not None and not host.is_enabled(owner):
        raise HTTPNotFound()


def includeme(config):
    """Load the plugins, collect their event types and routes, install the gate."""
    settings = config.get_settings()
    host = PluginHost(config.registry["db.session_factory"], config.registry["db.engine"],
                      settings["fkod.plugins.state_cache_seconds"])
    config.registry["plugins"] = host
    for event_type in OPERATIONAL_EVENT_TYPES:
        host.event_catalog.add(event_type)
    host.load_entry_points(skip=set(settings["fkod.plugins.disabled"]))
    host.collect_event_types()
    host.collect_scopes(config.registry["scope_catalog"])
    host.include_routes(config)
    config.add_subscriber(gate_disabled_plugin_routes, ContextFound)
    loaded = sorted(name for name, info in host.plugins.items() if info.status == "loaded")
    failed = sorted(name for name, info in host.plugins.items() if info.status == "failed")
    log.info("plugins loaded", extra={"loaded": loaded, "failed": failed})
