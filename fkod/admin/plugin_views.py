"""Admin API for plugins (``/api/admin/plugins``): what is installed, enable, disable, trust.

Any admin can read. Changing a plugin needs a role that may change partners
(verify them, suspend them or set their overrides), which includes superadmin.
A change is stored in ``plugin_states`` and reaches every process within
``fkod.plugins.state_cache_seconds`` (at once through Redis when configured).
"""

from __future__ import annotations

import marshmallow
import sqlalchemy as sa
from cornice import Service
from marshmallow import fields, validate

from fkod.core import audit
from fkod.core.api import AUTH_ADMIN, Dumped, Page, PageQuery, encode_cursor, operation
from fkod.core.errors import Conflict, NotFound, field_error
from fkod.core.plugin_models import PluginState
from fkod.core.plugins import FAILED, NOT_LOADED, PluginHost, PluginNotLoaded, PluginPinned
from fkod.core.schemas import BodySchema, ResponseSchema, StrictBoolean, Text, Timestamp
from fkod.marketplace.sync import sync_plugin

plugins = Service(name="admin_plugins", path="/api/admin/plugins",
                  description="Installed plugins, their state and contributions")
plugin = Service(name="admin_plugin", path="/api/admin/plugins/{name}",
                 description="One plugin: enable, disable or trust it")

SERVICES = (plugins, plugin)
PLUGIN_STATES = ("enabled", "disabled", "failed")
NOT_FOUND = ((404, "not_found"),)


# Schemas ------------------------------------------------------------------------------


class PluginListQuery(PageQuery):
    status = Text(validate=validate.OneOf(PLUGIN_STATES))


class UpdatePluginBody(BodySchema):
    enabled = StrictBoolean()
    trusted = StrictBoolean()

    @marshmallow.validates_schema
    def _not_empty(self, data, **kwargs):
        if not data:
            raise marshmallow.ValidationError("Give enabled, trusted or both.")


class RouteSchema(ResponseSchema):
    name = fields.String()
    pattern = fields.String()


class ContributionsSchema(ResponseSchema):
    event_types = fields.List(fields.String())
    scopes = fields.List(fields.String())
    routes = fields.List(fields.Nested(RouteSchema))
    integrations = fields.List(fields.String())
    payment_providers = fields.List(fields.String())


class IntegrationLinkSchema(ResponseSchema):
    slug = fields.String()
    version = fields.String()
    publisher = fields.String()
    linked = fields.Boolean()
    integration_id = fields.String(allow_none=True)
    outcome = fields.String(allow_none=True)
    problem = fields.String(allow_none=True)


class PluginSchema(ResponseSchema):
    name = fields.String()
    version = fields.String(allow_none=True)
    distribution = fields.String(allow_none=True)
    module = fields.String()
    status = fields.String(metadata={"enum": list(PLUGIN_STATES)})
    error = fields.String(allow_none=True)
    pinned = fields.String(allow_none=True, metadata={"enum": ["on", "off", None]})
    trusted = fields.Boolean()
    contributes = fields.Nested(ContributionsSchema)
    updated_at = Timestamp(allow_none=True)


class PluginDetailSchema(PluginSchema):
    integrations = fields.List(fields.Nested(IntegrationLinkSchema))


# Shaping ------------------------------------------------------------------------------


def _host(request) -> PluginHost:
    return request.registry["plugins"]


def _states(request) -> dict[str, PluginState]:
    return {state.name: state for state in request.dbsession.scalars(sa.select(PluginState))}


def _status(host: PluginHost, name: str, state: PluginState | None) -> str:
    """Return enabled, disabled or failed from the stored state, not this process's cache.

    A change made in the current request is then reported before it commits.
    """
    info = host.plugins[name]
    if info.status == FAILED:
        return "failed"
    if info.status == NOT_LOADED:
        return "disabled"
    if name in host.pinned_on:
        return "enabled"
    return "disabled" if state is not None and state.enabled is False else "enabled"


def _describe(host: PluginHost, name: str, state: PluginState | None) -> dict:
    info = host.plugins[name]
    return {
        "name": name,
        "version": info.version,
        "distribution": info.distribution,
        "module": info.module,
        "status": _status(host, name, state),
        "error": info.error,
        "pinned": info.pinned,
        "trusted": bool(state and state.trusted),
        "updated_at": state.updated_at if state else None,
        "contributes": {
            "event_types": host.event_type_names(name),
            "scopes": sorted(info.scopes),
            "routes": [{"name": route, "pattern": info.route_patterns.get(route, "")}
                       for route in sorted(info.routes)],
            "integrations": sorted(link.slug for link in info.integrations),
            "payment_providers": host.payment_provider_names(name),
        },
    }


def _detail(host: PluginHost, name: str, state: PluginState | None) -> dict:
    described = _describe(host, name, state)
    described["integrations"] = [
        {"slug": link.slug, "version": link.version, "publisher": link.publisher,
         "linked": link.linked, "outcome": link.outcome, "problem": link.problem,
         "integration_id": f"int_{link.integration_id}" if link.integration_id else None}
        for link in host.plugins[name].integrations
    ]
    return described


def _plugin_name(request) -> str:
    name = request.matchdict["name"]
    if name not in _host(request).plugins:
        raise NotFound(f"No plugin named {name!r} is installed.",
                       errors=[field_error("path", "name", "not an installed plugin")])
    return name


# Operations ---------------------------------------------------------------------------


@operation(plugins, "GET", summary="List installed plugins, by name, with state and contributions",
           auth=AUTH_ADMIN, permission="plugins:read", query=PluginListQuery,
           response=PluginSchema, paginated=True)
def list_plugins(request):
    host = _host(request)
    states = _states(request)
    names = sorted(host.plugins)
    if request.query.get("status"):
        names = [name for name in names
                 if _status(host, name, states.get(name)) == request.query["status"]]

    # The list is small and held in memory, so the opaque cursor is an offset into it.
    start = request.query.get("cursor") or 0
    limit = request.query["limit"]
    page = names[start:start + limit]
    items = [_describe(host, name, states.get(name)) for name in page]
    more = start + limit < len(names)
    return Page(items, encode_cursor(start + limit) if more else None)


@operation(plugin, "GET", summary="Get one plugin with the outcome of its integration sync",
           auth=AUTH_ADMIN, permission="plugins:read", response=PluginDetailSchema,
           errors=NOT_FOUND)
def get_plugin(request):
    name = _plugin_name(request)
    return Dumped(PluginDetailSchema().dump(
        _detail(_host(request), name, request.dbsession.get(PluginState, name))))


@operation(plugin, "PUT", summary="Enable, disable, trust or untrust a plugin", auth=AUTH_ADMIN,
           permission="plugins:write", body=UpdatePluginBody, response=PluginDetailSchema,
           errors=(*NOT_FOUND, (409, "plugin_pinned"), (409, "plugin_failed")))
def update_plugin(request):
    name = _plugin_name(request)
    host = _host(request)
    data = request.validated

    if "enabled" in data:
        _change_enabled(request, host, name, data["enabled"])
    if "trusted" in data:
        _change_trusted(request, host, name, data["trusted"])

    request.dbsession.flush()
    return Dumped(PluginDetailSchema().dump(
        _detail(host, name, request.dbsession.get(PluginState, name))))


def _change_enabled(request, host: PluginHost, name: str, enabled: bool) -> None:
    try:
        changed = host.set_enabled(request.dbsession, name, enabled)
    except PluginPinned:
        setting = f"fkod.plugins.pinned_{host.plugins[name].pinned}"
        raise Conflict(f"Plugin {name!r} is pinned by the setting {setting}; change the "
                       f"setting and restart to change it.", code="plugin_pinned",
                       errors=[field_error("body", "enabled", f"fixed by {setting}")]) from None
    except PluginNotLoaded:
        raise Conflict(f"Plugin {name!r} failed to load ({host.plugins[name].error}); fix it "
                       f"and restart before enabling it.", code="plugin_failed",
                       errors=[field_error("body", "enabled",
                                           "the plugin failed to load")]) from None
    if changed:
        audit.record(request, "plugin.enabled" if enabled else "plugin.disabled",
                     partner_id=None, target_type="plugin", target_id=name,
                     details={"version": host.plugins[name].version})


def _change_trusted(request, host: PluginHost, name: str, trusted: bool) -> None:
    session = request.dbsession
    state = session.get(PluginState, name) or PluginState(name=name, trusted=False)
    if bool(state.trusted) is trusted:
        return
    state.trusted = trusted
    session.add(state)
    audit.record(request, "plugin.trusted" if trusted else "plugin.untrusted", partner_id=None,
                 target_type="plugin", target_id=name,
                 details={"version": host.plugins[name].version})
    if trusted and name in host.manifests:
        # What waits in review from this plugin is published now, as it would
        # have been had the plugin been trusted when it was synced.
        session.flush()
        sync_plugin(session, host, name, trusted=True)


def includeme(config):
    for service in SERVICES:
        config.add_cornice_service(service)
