"""Customers installing, reconfiguring and uninstalling marketplace integrations.

An install is one row per user and integration: uninstalling keeps the row
with status ``uninstalled`` and installing again reactivates it. The
configuration is validated against the integration's ``config_schema``
(JSON Schema draft 2020-12), stored encrypted with the field vault, and
returned with every ``writeOnly`` property masked. ``install_count`` changes
by an SQL increment in the install's transaction, so concurrent installs keep
it exact.

Installing puts the customer in the owning partner's tenancy (a
``partner_users`` row with source ``installed``), because a partner's
credentials see the users who installed one of its integrations.
"""

from __future__ import annotations

import json
import logging

import jsonschema
import regex
import sqlalchemy as sa

from fkod.core import audit, jsonutil
from fkod.core.api import Page, paginate
from fkod.core.auth.models import PartnerUser, User
from fkod.core.auth.tenancy import add_to_tenancy
from fkod.core.db import utcnow
from fkod.core.errors import ApiError, Conflict, NotFound, ValidationFailed, field_error
from fkod.core.ids import parse_id
from fkod.core.integrations import InstallContext, IntegrationError
from fkod.core.webhooks.outbox import publish
from fkod.marketplace.catalog import get_listed_integration
from fkod.marketplace.models import Integration, IntegrationInstall

log = logging.getLogger(__name__)

# The value that replaces a write-only configuration value in responses.
MASK = "********"
# The tenancy source of a user who installed one of the partner's integrations.
TENANCY_SOURCE = "installed"
MAX_CONFIG_ERRORS = 50
MAX_ERROR_DESCRIPTION = 300
# The longest one value may take to match a partner's ``pattern``.
PATTERN_TIMEOUT_SECONDS = 0.05


# Plugin hooks -------------------------------------------------------------------------


def plugin_hook(host, hook_name: str, plugin_name: str | None):
    """Return the implementation of ``hook_name`` by ``plugin_name``, or None.

    None when the integration ships with no plugin, the plugin is disabled or
    failed, or it does not implement the hook.
    """
    if plugin_name is None or not host.is_enabled(plugin_name):
        return None
    hook = getattr(host.manager.hook, hook_name)
    for impl in hook.get_hookimpls():
        if impl.plugin_name == plugin_name:
            return impl
    return None


def call_hook(impl, **kwargs):
    """Call one hook implementation with the arguments it accepts."""
    return impl.function(**{name: kwargs[name] for name in impl.argnames})


def install_context(install: IntegrationInstall, integration: Integration,
                    config: dict) -> InstallContext:
    return InstallContext(
        install_id=f"inst_{install.id}", integration_slug=integration.slug or "",
        user_id=f"user_{install.user_id}", config=config,
        granted_scopes=tuple(install.granted_scopes or ()),
    )


# Configuration ------------------------------------------------------------------------


def _rule_error(error: jsonschema.ValidationError) -> dict:
    path = ["config", *(str(part) for part in error.absolute_path)]
    if error.validator == "required" and isinstance(error.instance, dict):
        # Name the missing property itself rather than the object that lacks it.
        missing = [name for name in error.validator_value if name not in error.instance]
        if missing:
            path.append(str(missing[0]))
    description = f"{error.validator}: {error.message}"[:MAX_ERROR_DESCRIPTION]
    return field_error("body", ".".join(path), description)


def _pattern_with_timeout(validator, pattern, instance, schema):
    """Check the ``pattern`` keyword with a time limit on each match.

    A partner writes the pattern and a customer the value, so a pattern with
    nested repetition such as ``^(a|a)+$`` could otherwise take minutes of CPU.
    """
    if not validator.is_type(instance, "string"):
        return
    try:
        found = regex.search(pattern, instance, timeout=PATTERN_TIMEOUT_SECONDS)
    except TimeoutError:
        yield jsonschema.ValidationError(
            f"checking the value against the pattern {pattern!r} took longer than "
            f"{PATTERN_TIMEOUT_SECONDS} s; send a shorter value")
        return
    except regex.error:
        yield jsonschema.ValidationError(f"the pattern {pattern!r} is not a valid regular "
                                         "expression; ask the integration's partner to fix it")
        return
    if found is None:
        yield jsonschema.ValidationError(f"does not match {pattern!r}")


ConfigValidator = jsonschema.validators.extend(jsonschema.Draft202012Validator,
                                               {"pattern": _pattern_with_timeout})


def validate_config(integration: Integration, config: dict) -> None:
    """Raise a 400 naming each invalid field as ``config.<path>`` with the rule it breaks.

    An integration without a config_schema takes no configuration.
    """
    schema = integration.config_schema
    if schema is None:
        errors = [field_error("body", f"config.{name}",
                              "additionalProperties: this integration takes no configuration")
                  for name in sorted(config)]
    else:
        validator = ConfigValidator(
            schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
        found = sorted(validator.iter_errors(config),
                       key=lambda error: [str(part) for part in error.absolute_path])
        errors = [_rule_error(error) for error in found[:MAX_CONFIG_ERRORS]]
    if errors:
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ValidationFailed(f"Invalid configuration field {first['name']}: "
                               f"{first['description']}{more}", errors=errors)


def _write_only_names(schema) -> set[str]:
    if not isinstance(schema, dict):
        return set()
    return {name for name, child in (schema.get("properties") or {}).items()
            if isinstance(child, dict) and child.get("writeOnly") is True}


def mask_config(schema, config):
    """Return ``config`` with the value of every ``writeOnly`` property replaced by MASK.

    Nested objects (``properties``) and arrays (``items``) are followed;
    ``$ref`` and conditional subschemas are not.
    """
    if not isinstance(schema, dict):
        return config
    if isinstance(config, dict):
        hidden = _write_only_names(schema)
        properties = schema.get("properties") or {}
        masked = {}
        for name, value in config.items():
            if name in hidden:
                masked[name] = MASK
            else:
                masked[name] = mask_config(properties.get(name), value)
        return masked
    if isinstance(config, list) and isinstance(schema.get("items"), dict):
        return [mask_config(schema["items"], value) for value in config]
    return config


def keep_masked_values(schema, new: dict, stored: dict) -> dict:
    """Replace top-level write-only values sent back as MASK with their stored values."""
    merged = dict(new)
    for name in _write_only_names(schema):
        if merged.get(name) == MASK and name in stored:
            merged[name] = stored[name]
    return merged


def encrypt_config(request, config: dict) -> str:
    return request.registry["webhook_vault"].encrypt(jsonutil.dumps(config).decode())


def decrypt_config(vault, token: str | None) -> dict:
    return json.loads(vault.decrypt(token)) if token else {}


def install_view(request, install: IntegrationInstall) -> dict:
    """Shape an install for InstallSchema, with its configuration masked."""
    integration = install.integration
    config = decrypt_config(request.registry["webhook_vault"], install.config)
    return {
        "id": install.id, "integration": integration, "status": install.status,
        "config": mask_config(integration.config_schema, config),
        "granted_scopes": install.granted_scopes or [],
        "installed_at": install.installed_at, "uninstalled_at": install.uninstalled_at,
        "updated_at": install.updated_at,
    }


# Events and tenancy ---------------------------------------------------------------------


def integration_event_data(integration: Integration) -> dict:
    """Return the integration as integration.* events carry it."""
    return {
        "id": f"int_{integration.id}", "partner_id": f"partner_{integration.partner_id}",
        "name": integration.name, "slug": integration.slug,
        "description": integration.description, "category": integration.category,
        "version": integration.version, "status": integration.status,
        "created_at": integration.created_at, "updated_at": integration.updated_at,
    }


def _add_to_tenancy(session, partner_id: int, user: User) -> None:
    add_to_tenancy(session, partner_id, user.id, livemode=user.livemode, source=TENANCY_SOURCE)


def _remove_from_tenancy(session, partner_id: int, user_id: int) -> None:
    """Drop an install-sourced tenancy row once no integration of the partner stays installed."""
    still_installed = session.scalar(
        sa.select(IntegrationInstall.id)
        .join(Integration, Integration.id == IntegrationInstall.integration_id)
        .where(Integration.partner_id == partner_id, IntegrationInstall.user_id == user_id,
               IntegrationInstall.status == "active").limit(1))
    if still_installed is None:
        session.execute(sa.delete(PartnerUser).where(
            PartnerUser.partner_id == partner_id, PartnerUser.user_id == user_id,
            PartnerUser.source == TENANCY_SOURCE))


def _change_install_count(session, integration_id: int, delta: int) -> None:
    statement = sa.update(Integration).where(Integration.id == integration_id)
    if delta < 0:
        statement = statement.where(Integration.install_count >= -delta)
    session.execute(statement.values(install_count=Integration.install_count + delta)
                    .execution_options(synchronize_session=False))


def _publish_installed(request, integration: Integration, install: IntegrationInstall) -> None:
    catalog = request.registry["plugins"].event_catalog
    if catalog.get("integration.installed") is None:
        # The platform_events plugin was left out by configuration.
        return
    data = {"integration": integration_event_data(integration),
            "user_id": f"user_{install.user_id}", "installed_at": install.installed_at}
    publish(request, "integration.installed", data, livemode=request.user.livemode,
            partner_ids=[integration.partner_id])


def _run_installed_hook(request, integration: Integration, install: IntegrationInstall,
                        config: dict) -> None:
    impl = plugin_hook(request.registry["plugins"], "fkod_integration_installed",
                       integration.plugin_name)
    if impl is None:
        return
    context = install_context(install, integration, config)
    try:
        call_hook(impl, install=context)
    except IntegrationError as exc:
        log.info("install rejected by its plugin", extra={
            "plugin": integration.plugin_name, "integration_id": integration.id,
            "user_id": install.user_id})
        raise ApiError(str(exc) or "The integration rejected the install.",
                       code="integration_refused", status=422) from None
    except Exception:
        log.error("install hook failed", exc_info=True, extra={
            "plugin": integration.plugin_name, "integration_id": integration.id,
            "user_id": install.user_id})
        raise ApiError("The integration failed to set up the install; try again later.",
                       code="integration_failed", status=502) from None


# Services -----------------------------------------------------------------------------


def find_install(session, integration_id: int, user_id: int, *,
                 for_update: bool = False) -> IntegrationInstall | None:
    query = sa.select(IntegrationInstall).where(
        IntegrationInstall.integration_id == integration_id,
        IntegrationInstall.user_id == user_id)
    if for_update:
        query = query.with_for_update()
    return session.scalar(query)


def _already_installed(integration: Integration) -> Conflict:
    return Conflict(f"You already installed int_{integration.id}; change its configuration "
                    f"with PUT or remove it with DELETE on the same path.",
                    code="already_installed")


def install(request, integration_public_id: str, config: dict) -> IntegrationInstall:
    """Install a listed integration for the caller, run its plugin's hook, announce it.

    The plugin's fkod_integration_installed hook runs before the commit, so a
    refusal (422 integration_refused) or a crash (502 integration_failed)
    leaves nothing written.
    """
    session = request.dbsession
    user = request.user
    integration = get_listed_integration(request, integration_public_id)
    validate_config(integration, config)

    now = utcnow()
    values = {"status": "active", "config": encrypt_config(request, config),
              "granted_scopes": list(integration.scopes or []), "installed_at": now,
              "uninstalled_at": None, "updated_at": now}
    existing = find_install(session, integration.id, user.id)
    if existing is not None:
        if existing.status == "active":
            raise _already_installed(integration)
        # Conditional, so two concurrent reinstalls cannot both count.
        reactivated = session.execute(
            sa.update(IntegrationInstall)
            .where(IntegrationInstall.id == existing.id,
                   IntegrationInstall.status == "uninstalled")
            .values(**values).execution_options(synchronize_session=False))
        if reactivated.rowcount != 1:
            raise _already_installed(integration)
        session.refresh(existing)
        row = existing
    else:
        row = IntegrationInstall(integration_id=integration.id, user_id=user.id, **values)
        try:
            with session.begin_nested():
                session.add(row)
        except sa.exc.IntegrityError:
            raise _already_installed(integration) from None

    _change_install_count(session, integration.id, +1)
    _add_to_tenancy(session, integration.partner_id, user)
    # A paid integration is charged at the close of each month in which it was
    # installed (fkod.core.billing.invoicing), not here.
    _publish_installed(request, integration, row)
    audit.record(request, "integration.installed", partner_id=integration.partner_id,
                 target_type="install", target_id=f"inst_{row.id}",
                 details={"integration_id": f"int_{integration.id}",
                          "granted_scopes": row.granted_scopes})
    _run_installed_hook(request, integration, row, config)
    session.refresh(integration)
    log.info("integration installed", extra={"integration_id": integration.id,
                                              "user_id": user.id, "install_id": row.id})
    return row


def _caller_install(request, integration_public_id: str) -> IntegrationInstall:
    """Return the caller's active install of an integration, listed or not; else a 404."""
    number = parse_id("int", integration_public_id, noun="integration")
    row = find_install(request.dbsession, number, request.user.id)
    if row is None or row.status != "active":
        raise NotFound(f"You have not installed {integration_public_id}.", code="not_installed")
    return row


def update_config(request, integration_public_id: str, config: dict) -> IntegrationInstall:
    """Replace the configuration of the caller's install after validating it.

    The plugin's install hook checks the new configuration as it checked the
    first one, and a rejection leaves the stored configuration as it was.
    """
    row = _caller_install(request, integration_public_id)
    integration = row.integration
    stored = decrypt_config(request.registry["webhook_vault"], row.config)
    config = keep_masked_values(integration.config_schema, config, stored)
    validate_config(integration, config)
    row.config = encrypt_config(request, config)
    row.updated_at = utcnow()
    request.dbsession.flush()
    _run_installed_hook(request, integration, row, config)
    log.info("install configuration changed", extra={"install_id": row.id,
                                                     "user_id": row.user_id})
    return row


def uninstall(request, integration_public_id: str) -> None:
    """Uninstall the caller's install; the plugin's uninstall hook runs after the commit."""
    session = request.dbsession
    row = _caller_install(request, integration_public_id)
    integration = row.integration
    now = utcnow()
    removed = session.execute(
        sa.update(IntegrationInstall)
        .where(IntegrationInstall.id == row.id, IntegrationInstall.status == "active")
        .values(status="uninstalled", uninstalled_at=now, updated_at=now)
        .execution_options(synchronize_session=False))
    if removed.rowcount != 1:
        raise NotFound(f"You have not installed {integration_public_id}.", code="not_installed")
    _change_install_count(session, integration.id, -1)
    _remove_from_tenancy(session, integration.partner_id, row.user_id)
    audit.record(request, "integration.uninstalled", partner_id=integration.partner_id,
                 target_type="install", target_id=f"inst_{row.id}",
                 details={"integration_id": f"int_{integration.id}"})

    config = decrypt_config(request.registry["webhook_vault"], row.config)
    session.refresh(row)
    context = install_context(row, integration, config)
    host = request.registry["plugins"]
    plugin_name = integration.plugin_name

    def after_commit(committed: bool) -> None:
        if committed:
            run_uninstalled_hook(host, plugin_name, context)

    request.tm.get().addAfterCommitHook(after_commit)
    log.info("integration uninstalled", extra={"integration_id": integration.id,
                                                "user_id": row.user_id, "install_id": row.id})


def run_uninstalled_hook(host, plugin_name: str | None, context: InstallContext) -> None:
    """Call the plugin's fkod_integration_uninstalled hook; its errors are logged, not raised."""
    impl = plugin_hook(host, "fkod_integration_uninstalled", plugin_name)
    if impl is None:
        return
    try:
        call_hook(impl, install=context)
    except Exception:
        log.error("uninstall hook failed", exc_info=True,
                  extra={"plugin": plugin_name, "install_id": context.install_id})


def integration_installs_query(integration: Integration):
    """Select the installs of one integration, for the pages of the partner that owns it."""
    return sa.select(IntegrationInstall).where(
        IntegrationInstall.integration_id == integration.id)


def list_installs(request, query: dict) -> Page:
    select = sa.select(IntegrationInstall).where(
        IntegrationInstall.user_id == request.user.id,
        IntegrationInstall.status == query["status"])
    return paginate(select, IntegrationInstall.id, query, request.dbsession)
