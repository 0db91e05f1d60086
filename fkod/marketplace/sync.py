"""Syncing the integration manifests of plugins into the marketplace catalog.

At start-up :func:`sync_integrations` collects ``fkod_register_integrations``
from every loaded plugin and upserts one ``integrations`` row per manifest,
keyed on the unique slug, with ``plugin_name`` set and the publisher partner
as owner:

- a manifest whose publisher is not a verified partner is left unlinked: it is
  logged and kept out of the catalog, and the admin plugin detail shows it;
- a new integration waits in review (``in_review``), or is published at once
  when the plugin is trusted;
- a changed manifest updates the listing and, unless the plugin is trusted,
  sends the integration back to review, so new scopes or text are never
  listed before an admin approves them. A new version also adds an
  ``integration_versions`` row with its release notes;
- an unchanged manifest writes nothing, so the sync is idempotent.

An invalid manifest, a slug two plugins claim, or a slug that a partner's own
integration or another plugin already uses makes the plugin fail. Two
processes starting at once may both insert a row; the loser's unique-slug
violation is rolled back to a savepoint and the manifest is applied again.
"""

from __future__ import annotations

import dataclasses
import logging

import sqlalchemy as sa

from fkod.core.auth.models import Partner
from fkod.core.db import run_in_transaction, utcnow
from fkod.core.integrations import IntegrationManifest
from fkod.core.plugin_models import PluginState
from fkod.core.plugins import LOADED, IntegrationLink, PluginHost
from fkod.marketplace.models import Integration, IntegrationVersion

log = logging.getLogger(__name__)

HOOK = "fkod_register_integrations"
# Times a manifest is applied again after losing a race on a unique constraint.
MAX_ATTEMPTS = 3

# Manifest fields copied to integrations columns of the same name.
LISTING_FIELDS = ("name", "description", "category", "version", "logo_url", "documentation_url",
                  "support_url", "support_email", "config_schema", "pricing_model",
                  "price_cents")

# Manifest fields that IntegrationManifest does not bound, and their column sizes.
FIELD_MAX_LENGTHS = {"logo_url": 500, "documentation_url": 500, "support_url": 500,
                     "support_email": 255}

CREATED = "created"
UPDATED = "updated"
UNCHANGED = "unchanged"
UNLINKED = "unlinked"


class ManifestConflict(Exception):
    """The manifest's slug belongs to an integration the plugin does not own."""


def sync_integrations(registry) -> None:
    """Collect every loaded plugin's manifests and sync them into the catalog.

    A database not yet migrated is skipped with a warning. Plugins that fail
    here are recorded in ``plugin_states`` again, so admins see the error.
    """
    host: PluginHost = registry["plugins"]
    session_factory = registry["db.session_factory"]
    failed_before = {name for name, info in host.plugins.items() if info.status != LOADED}
    host.manifests = collect_manifests(host)
    slugs = [manifest.slug for items in host.manifests.values() for manifest in items]
    try:
        owners = run_in_transaction(session_factory,
                                    lambda session: _slug_owners(session, slugs))
        trusted = run_in_transaction(session_factory, _trusted_names)
    except sa.exc.SQLAlchemyError as exc:
        log.warning("could not sync plugin integrations", extra={"error": str(exc)[:200]})
        return

    _drop_conflicting(host, owners)
    for name in sorted(host.manifests):
        try:
            run_in_transaction(session_factory, lambda session, name=name: sync_plugin(
                session, host, name, trusted=name in trusted))
        except (sa.exc.DataError, sa.exc.IntegrityError) as exc:
            # A value the columns cannot hold, or a race lost more than MAX_ATTEMPTS times.
            host.mark_failed(name, HOOK, exc)
        except sa.exc.SQLAlchemyError as exc:
            log.warning("could not sync plugin integrations",
                        extra={"plugin": name, "error": str(exc)[:200]})

    failed_now = {name for name, info in host.plugins.items() if info.status != LOADED}
    if failed_now - failed_before:
        host.record_load_state()


def collect_manifests(host: PluginHost) -> dict[str, list[IntegrationManifest]]:
    """Call the integrations hook on every loaded plugin; return valid manifests by plugin.

    A plugin whose hook raises (an :class:`IntegrationManifest` raises
    ValueError when invalid), returns something that is not a manifest, or
    repeats a slug, is marked failed and contributes nothing.
    """
    collected: dict[str, list[IntegrationManifest]] = {}
    for name, returned in host.call_each(HOOK):
        try:
            collected[name] = _checked_manifests(name, returned)
        except ValueError as exc:
            host.mark_failed(name, HOOK, exc)
    return collected


def _checked_manifests(plugin_name: str, returned) -> list[IntegrationManifest]:
    manifests = []
    seen = set()
    for item in returned or ():
        if not isinstance(item, IntegrationManifest):
            raise ValueError(f"returned a {type(item).__name__}; expected IntegrationManifest "
                             f"objects from fkod.core.integrations")
        for field, max_length in FIELD_MAX_LENGTHS.items():
            value = getattr(item, field)
            if value is not None and len(value) > max_length:
                raise ValueError(f"integration manifest {item.slug!r}: {field} is longer than "
                                 f"{max_length} characters")
        if item.slug in seen:
            raise ValueError(f"integration slug {item.slug!r} is returned twice")
        seen.add(item.slug)
        manifests.append(dataclasses.replace(item, plugin=plugin_name))
    return manifests


def _slug_owners(session, slugs: list[str]) -> dict[str, tuple[int, str | None]]:
    """Return, for each slug already in ``integrations``, its row id and owning plugin."""
    if not slugs:
        return {}
    rows = session.execute(sa.select(Integration.slug, Integration.id, Integration.plugin_name)
                           .where(Integration.slug.in_(set(slugs))))
    return {slug: (number, plugin) for slug, number, plugin in rows}


def _trusted_names(session) -> set[str]:
    return set(session.scalars(sa.select(PluginState.name).where(PluginState.trusted.is_(True))))


def _drop_conflicting(host: PluginHost, owners: dict[str, tuple[int, str | None]]) -> None:
    """Fail every plugin whose slug another plugin or a partner's integration uses.

    When several plugins claim one slug, the plugin that already owns the row
    keeps it. For a new slug, the first plugin by name keeps it.
    """
    claimants: dict[str, list[str]] = {}
    for name in sorted(host.manifests):
        for manifest in host.manifests[name]:
            claimants.setdefault(manifest.slug, []).append(name)

    losers: dict[str, str] = {}
    for slug, names in claimants.items():
        number, owner = owners.get(slug, (None, None))
        if number is not None and owner is None:
            for name in names:
                losers.setdefault(name, f"integration slug {slug!r} is already used by "
                                        f"integration int_{number}, which a partner created")
            continue
        if number is not None and owner not in names:
            for name in names:
                losers.setdefault(name, f"integration slug {slug!r} belongs to plugin {owner!r}")
            continue
        keeper = owner if owner in names else names[0]
        for name in names:
            if name != keeper:
                losers.setdefault(name, f"integration slug {slug!r} is also contributed by "
                                        f"plugin {keeper!r}")

    for name, problem in sorted(losers.items()):
        host.mark_failed(name, HOOK, ValueError(problem))
        host.manifests.pop(name, None)


def sync_plugin(session, host: PluginHost, name: str, *, trusted: bool) -> list[IntegrationLink]:
    """Apply plugin ``name``'s collected manifests in ``session``; return what happened to each.

    Admins' trust change calls this in its own transaction, so a plugin
    marked trusted has what waits in review published at once. The result is
    also kept on the plugin's :class:`PluginInfo` for the admin API.
    """
    info = host.plugins[name]
    links = []
    # A conflict on a later manifest undoes what the earlier ones wrote.
    savepoint = session.begin_nested()
    for manifest in host.manifests.get(name, ()):
        try:
            link = _apply_with_retry(session, manifest, trusted=trusted)
        except ManifestConflict as exc:
            savepoint.rollback()
            host.mark_failed(name, HOOK, exc)
            host.manifests.pop(name, None)
            info.integrations = []
            return []
        links.append(link)
    savepoint.commit()
    info.integrations = links
    return links


def _apply_with_retry(session, manifest: IntegrationManifest, *, trusted: bool) -> IntegrationLink:
    for attempt in range(1, MAX_ATTEMPTS + 1):
        savepoint = session.begin_nested()
        try:
            link = apply_manifest(session, manifest, trusted=trusted)
            savepoint.commit()
            return link
        except sa.exc.IntegrityError:
            # Another process inserted the same slug or version first; the
            # next attempt finds its row.
            savepoint.rollback()
            if attempt == MAX_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


def apply_manifest(session, manifest: IntegrationManifest, *, trusted: bool) -> IntegrationLink:
    """Upsert the integration of one manifest; raise :class:`ManifestConflict` for a taken slug."""
    partner = session.scalar(sa.select(Partner).where(Partner.slug == manifest.publisher))
    if partner is None or partner.verification_status != "verified":
        problem = (f"publisher {manifest.publisher!r} is not a partner" if partner is None else
                   f"publisher {manifest.publisher!r} is not a verified partner")
        log.warning("plugin integration not linked", extra={
            "plugin": manifest.plugin, "integration": manifest.slug, "problem": problem})
        return _link(manifest, None, UNLINKED, problem=problem)

    integration = session.scalar(sa.select(Integration).where(Integration.slug == manifest.slug)
                                 .with_for_update())
    if integration is None:
        integration = _create(session, manifest, partner, trusted=trusted)
        return _link(manifest, integration.id, CREATED)
    if integration.plugin_name != manifest.plugin:
        owner = (f"plugin {integration.plugin_name!r}" if integration.plugin_name else
                 f"integration int_{integration.id}, which a partner created")
        raise ManifestConflict(f"integration slug {manifest.slug!r} is already used by {owner}")

    changed = _changed_fields(integration, manifest, partner)
    pending_publish = trusted and integration.status == "in_review"
    if not changed and not pending_publish:
        return _link(manifest, integration.id, UNCHANGED)
    _update(session, integration, manifest, partner, changed, trusted=trusted)
    return _link(manifest, integration.id, UPDATED)


def _link(manifest, integration_id, outcome, *, problem=None) -> IntegrationLink:
    return IntegrationLink(slug=manifest.slug, version=manifest.version,
                           publisher=manifest.publisher, linked=outcome != UNLINKED,
                           integration_id=integration_id, outcome=outcome, problem=problem)


def _listing_values(manifest: IntegrationManifest, partner: Partner) -> dict:
    values = {field: getattr(manifest, field) for field in LISTING_FIELDS}
    values["scopes"] = list(manifest.scopes)
    values["event_types"] = list(manifest.event_types)
    values["partner_id"] = partner.id
    return values


def _changed_fields(integration: Integration, manifest, partner) -> list[str]:
    return sorted(field for field, value in _listing_values(manifest, partner).items()
                  if getattr(integration, field) != value)


def _create(session, manifest, partner, *, trusted: bool) -> Integration:
    now = utcnow()
    status = "published" if trusted else "in_review"
    integration = Integration(slug=manifest.slug, plugin_name=manifest.plugin, status=status,
                              submitted_at=now, published_at=now if trusted else None,
                              **_listing_values(manifest, partner))
    session.add(integration)
    session.flush()
    session.add(IntegrationVersion(integration_id=integration.id, version=manifest.version,
                                   release_notes=manifest.release_notes, status=status))
    session.flush()
    log.info("plugin integration created", extra={
        "plugin": manifest.plugin, "integration": manifest.slug, "status": status})
    return integration


def _update(session, integration, manifest, partner, changed: list[str], *,
            trusted: bool) -> None:
    """Write a changed manifest, or publish what waits in review for a trusted plugin."""
    now = utcnow()
    for field, value in _listing_values(manifest, partner).items():
        setattr(integration, field, value)

    # An unpublished integration stays unlisted: an admin or its partner took it down.
    if integration.status != "unpublished":
        if trusted:
            if integration.status != "published":
                integration.published_at = now
            integration.status = "published"
            integration.rejection_reason = None
        elif changed:
            integration.status = "in_review"
            integration.submitted_at = now

    version_status = "published" if trusted else "in_review"
    version = session.scalar(sa.select(IntegrationVersion).where(
        IntegrationVersion.integration_id == integration.id,
        IntegrationVersion.version == manifest.version))
    if version is None:
        session.add(IntegrationVersion(integration_id=integration.id, version=manifest.version,
                                       release_notes=manifest.release_notes,
                                       status=version_status))
    elif trusted and version.status == "in_review":
        version.status = "published"
    session.flush()
    log.info("plugin integration updated", extra={
        "plugin": manifest.plugin, "integration": manifest.slug, "status": integration.status,
        "changed": changed})
