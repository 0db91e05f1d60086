"""Integrations owned by partners: drafts, edits, versions, review and publication.

An integration moves between statuses only through :data:`TRANSITIONS`::

    draft, rejected, unpublished --submit--> in_review
    in_review --approve--> published        in_review --reject--> rejected
    published --unpublish--> unpublished

Any other move is a 409 ``invalid_transition``. Partner members submit and
unpublish; admins approve and reject.

Editing follows the status, so what an install grants or costs changes only through a review:

- draft, rejected and unpublished integrations take any change;
- an integration in review takes none, because the reviewer approves what they read;
- a published integration takes changes to its listing text and links
  (:data:`LISTING_FIELDS`) at once. A change of what an install grants or costs
  (slug, version, scopes, event types, config_schema, pricing) is a 409: the
  partner unpublishes it, edits it and submits it again. Installs keep working
  while it is unpublished.

Integrations that a plugin ships (``plugin_name`` set) are synced from the
plugin's manifest, so the partner API only reads them.
"""

from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal

import sqlalchemy as sa

from fkod.core import audit, slugs
from fkod.core.api import Page, encode_cursor
from fkod.core.auth.models import ApiKey, Partner
from fkod.core.db import utcnow
from fkod.core.errors import Conflict, Forbidden, NotFound, ValidationFailed, field_error
from fkod.core.ids import public_id
from fkod.core.webhooks.catalog import check_event_patterns
from fkod.core.webhooks.outbox import publish
from fkod.marketplace.integration_schemas import (
    DETAIL_VERSIONS,
    QUEUE_SORT,
    EventIntegrationSchema,
)
from fkod.marketplace.models import (
    Integration,
    IntegrationInstall,
    IntegrationReview,
    IntegrationVersion,
)
from fkod.partners.api_keys import check_scopes

log = logging.getLogger(__name__)

# action: (statuses it starts from, status it leads to)
TRANSITIONS: dict[str, tuple[frozenset[str], str]] = {
    "submit": (frozenset({"draft", "rejected", "unpublished"}), "in_review"),
    "approve": (frozenset({"in_review"}), "published"),
    "reject": (frozenset({"in_review"}), "rejected"),
    "unpublish": (frozenset({"published"}), "unpublished"),
}

# Fields a partner may change on a published integration. The listing shows the change at once.
LISTING_FIELDS = frozenset({
    "name", "description", "category", "logo_url", "documentation_url", "support_url",
    "support_email", "release_notes",
})

# The columns a partner sets directly. A new version and release_notes also change the
# IntegrationVersion rows.
_COLUMNS = (
    "name", "slug", "description", "category", "logo_url", "documentation_url", "support_url",
    "support_email", "scopes", "event_types", "config_schema", "pricing_model", "price_cents",
    "price_per_call",
)

# Sorts never-submitted integrations before every submitted one in submitted_at order.
_NEVER = dt.datetime(1970, 1, 1)


def integration_public_id(integration: Integration) -> str:
    return public_id("int", integration.id)


# Status changes -------------------------------------------------------------------


def check_transition(integration: Integration, action: str) -> str:
    """Return the status ``action`` leads to, or raise 409 invalid_transition if not allowed."""
    sources, target = TRANSITIONS[action]
    if integration.status in sources:
        return target
    allowed = ", ".join(sorted(sources))
    raise Conflict(
        f"Integration {integration_public_id(integration)} is {integration.status}, so it "
        f"cannot {action}, because {action} needs status {allowed}.",
        code="invalid_transition",
        errors=[field_error("path", "id", f"status {integration.status} does not allow "
                                          f"{action}")],
    )


def _current_version(session, integration: Integration) -> IntegrationVersion | None:
    return session.scalar(sa.select(IntegrationVersion).where(
        IntegrationVersion.integration_id == integration.id,
        IntegrationVersion.version == integration.version))


def _set_status(request, integration: Integration, action: str) -> str:
    """Move the integration (and its current version) as ``action`` does; return the old status."""
    target = check_transition(integration, action)
    previous = integration.status
    integration.status = target
    integration.updated_at = utcnow()
    version_status = {"in_review": "in_review", "published": "published",
                      "rejected": "rejected"}.get(target)
    current = _current_version(request.dbsession, integration)
    if current is not None and version_status is not None:
        current.status = version_status
    return previous


# Events and audit -----------------------------------------------------------------


def integration_event_data(integration: Integration, **extra) -> dict:
    data = EventIntegrationSchema().dump(integration)
    data.update(extra)
    return data


def _publish(request, event_type: str, integration: Integration, **extra) -> None:
    publish(request, event_type, integration_event_data(integration, **extra), livemode=True,
            partner_ids=[integration.partner_id] if integration.partner_id else [])


def _audit(request, action: str, integration: Integration, details: dict | None = None) -> None:
    audit.record(request, action, partner_id=integration.partner_id, target_type="integration",
                 target_id=integration_public_id(integration), details=details)


# Checks -------------------------------------------------------------------------


def _check_pricing(pricing_model: str, price_cents: int | None,
                   price_per_call: Decimal | None) -> None:
    """Raise a 400 unless a paid integration has a monthly price, a per-call price or both.

    Free and freemium integrations have neither price.
    """
    if pricing_model == "paid":
        if price_cents is None and price_per_call is None:
            raise ValidationFailed(
                "A paid integration needs price_cents (its monthly price in US cents), "
                "price_per_call (its USD price per API call) or both.", errors=[
                    field_error("body", name, "price_cents or price_per_call is required when "
                                              "pricing_model is paid")
                    for name in ("price_cents", "price_per_call")])
        return
    priced = [name for name, value in (("price_cents", price_cents),
                                       ("price_per_call", price_per_call)) if value is not None]
    if priced:
        raise ValidationFailed(
            f"A {pricing_model} integration has no price, so leave out {' and '.join(priced)}.",
            errors=[field_error("body", name, f"only for paid integrations, not {pricing_model}")
                    for name in priced])


def _slug_taken(slug: str) -> Conflict:
    return Conflict(f"The slug {slug!r} is taken by another integration. Choose another.",
                    code="slug_taken", errors=[field_error("body", "slug", "already taken")])


def unique_slug(session, name: str) -> str:
    """Return a slug of ``name`` that no integration uses yet (``acme-sync``, ``acme-sync-2``…)."""
    return slugs.unique_slug(session, Integration.slug, name, "integration")


def _require_slug_free(session, slug: str, integration_id: int | None = None) -> None:
    select = sa.select(Integration.id).where(Integration.slug == slug)
    if integration_id is not None:
        select = select.where(Integration.id != integration_id)
    if session.scalar(select) is not None:
        raise _slug_taken(slug)


def _flush(session, slug: str) -> None:
    try:
        session.flush()
    except sa.exc.IntegrityError:
        # Another request took the slug after the check above.
        raise _slug_taken(slug) from None


def _require_not_plugin(integration: Integration) -> None:
    if integration.plugin_name is not None:
        raise Conflict(
            f"Integration {integration_public_id(integration)} is shipped by the plugin "
            f"{integration.plugin_name}. Change it in the plugin's manifest and release a new "
            "version of the plugin.", code="managed_by_plugin")


# Partner side -----------------------------------------------------------------------


def partner_integrations_query(partner: Partner, query: dict | None = None):
    select = sa.select(Integration).where(Integration.partner_id == partner.id)
    status = (query or {}).get("status")
    if status is not None:
        select = select.where(Integration.status == status)
    return select


def list_partner_integrations(request, partner: Partner, query: dict) -> Page:
    return page_of_integrations(request.dbsession,
                                partner_integrations_query(partner, query), query)


def get_partner_integration(request, partner: Partner, integration_id: int, *,
                            for_update: bool = False) -> Integration:
    """Return an integration of ``partner``. Another partner's or an unknown id is a 404."""
    select = partner_integrations_query(partner).where(Integration.id == integration_id)
    if for_update:
        select = select.with_for_update()
    integration = request.dbsession.scalar(select)
    if integration is None:
        raise NotFound(f"No integration with id int_{integration_id}.")
    return integration


def versions_of(session, integration: Integration) -> list[IntegrationVersion]:
    """Return the integration's DETAIL_VERSIONS newest versions, newest first."""
    return list(session.scalars(sa.select(IntegrationVersion)
                                .where(IntegrationVersion.integration_id == integration.id)
                                .order_by(IntegrationVersion.id.desc())
                                .limit(DETAIL_VERSIONS)))


def versions_query(integration: Integration):
    return sa.select(IntegrationVersion).where(
        IntegrationVersion.integration_id == integration.id)


def create_integration(request, partner: Partner, data: dict) -> Integration:
    """Create a draft with its first version and publish integration.created."""
    session = request.dbsession
    data["scopes"] = check_scopes(request, data["scopes"])
    data["event_types"] = check_event_patterns(request.registry["plugins"], data["event_types"])
    _check_pricing(data["pricing_model"], data.get("price_cents"), data.get("price_per_call"))
    if data.get("slug"):
        _require_slug_free(session, data["slug"])
    else:
        data["slug"] = unique_slug(session, data["name"])

    now = utcnow()
    integration = Integration(partner_id=partner.id, status="draft", version=data["version"],
                              created_at=now, updated_at=now,
                              **{name: data.get(name) for name in _COLUMNS})
    session.add(integration)
    _flush(session, integration.slug)
    session.add(IntegrationVersion(integration_id=integration.id, version=data["version"],
                                   release_notes=data.get("release_notes"), status="draft",
                                   created_at=now))
    session.flush()

    _publish(request, "integration.created", integration)
    _audit(request, "integration.created", integration,
           {"name": integration.name, "slug": integration.slug})
    log.info("integration created", extra={"integration_id": integration.id,
                                           "partner_id": partner.id})
    return integration


def _changed_fields(session, integration: Integration, data: dict) -> list[str]:
    changed = [name for name in _COLUMNS if name in data and getattr(integration, name)
               != data[name]]
    if "version" in data and data["version"] != integration.version:
        changed.append("version")
    if "release_notes" in data:
        current = _current_version(session, integration)
        notes = current.release_notes if current is not None else None
        if "version" in changed or notes != data["release_notes"]:
            changed.append("release_notes")
    return sorted(changed)


def _check_edit_allowed(integration: Integration, changed: list[str]) -> None:
    public = integration_public_id(integration)
    if integration.status == "in_review":
        raise Conflict(f"Integration {public} is in review and cannot change until the review "
                       "decides.", code="integration_in_review",
                       errors=[field_error("body", name, "cannot change while in review")
                               for name in changed])
    if integration.status == "published":
        reviewed = [name for name in changed if name not in LISTING_FIELDS]
        if reviewed:
            raise Conflict(
                f"Integration {public} is published, and {', '.join(reviewed)} can change "
                "only after a new review: unpublish it, make the change and submit it again.",
                code="integration_published",
                errors=[field_error("body", name, "needs a new review on a published "
                                                  "integration") for name in reviewed])


def _set_version(session, integration: Integration, data: dict, now) -> None:
    """Add the new version with its release notes, or change the current version's notes."""
    if data.get("version", integration.version) != integration.version:
        version = data["version"]
        exists = session.scalar(sa.select(IntegrationVersion.id).where(
            IntegrationVersion.integration_id == integration.id,
            IntegrationVersion.version == version))
        if exists is not None:
            raise Conflict(f"Version {version} of this integration already exists. Give a new "
                           "version number.", code="version_exists",
                           errors=[field_error("body", "version", "already exists")])
        session.add(IntegrationVersion(integration_id=integration.id, version=version,
                                       release_notes=data.get("release_notes"),
                                       status="draft", created_at=now))
        integration.version = version
        return

    current = _current_version(session, integration)
    if current is None:
        session.add(IntegrationVersion(integration_id=integration.id,
                                       version=integration.version,
                                       release_notes=data.get("release_notes"),
                                       status="draft", created_at=now))
    else:
        current.release_notes = data.get("release_notes")


def update_integration(request, partner: Partner, integration_id: int,
                       data: dict) -> Integration:
    """Change the given fields under the editing rules of the module docstring.

    A new version number adds a version (409 version_exists if it exists).
    Publishes integration.updated with changed_fields when anything changed.
    """
    session = request.dbsession
    integration = get_partner_integration(request, partner, integration_id, for_update=True)
    _require_not_plugin(integration)
    if "scopes" in data:
        data["scopes"] = check_scopes(request, data["scopes"])
    if "event_types" in data:
        data["event_types"] = check_event_patterns(request.registry["plugins"],
                                                   data["event_types"])
    pricing_model = data.get("pricing_model", integration.pricing_model)
    if "pricing_model" in data and pricing_model != "paid":
        # Leaving the paid model drops the prices the body does not give.
        data.setdefault("price_cents", None)
        data.setdefault("price_per_call", None)
    _check_pricing(pricing_model, data.get("price_cents", integration.price_cents),
                   data.get("price_per_call", integration.price_per_call))
    if "slug" in data:
        _require_slug_free(session, data["slug"], integration.id)

    changed = _changed_fields(session, integration, data)
    if not changed:
        return integration
    _check_edit_allowed(integration, changed)

    now = utcnow()
    if "version" in changed or "release_notes" in changed:
        _set_version(session, integration, data, now)
    for name in changed:
        if name in _COLUMNS:
            setattr(integration, name, data[name])
    integration.updated_at = now
    _flush(session, integration.slug)

    _publish(request, "integration.updated", integration, changed_fields=changed)
    _audit(request, "integration.updated", integration, {"fields": changed})
    log.info("integration updated", extra={"integration_id": integration.id,
                                           "partner_id": partner.id, "fields": changed})
    return integration


def delete_integration(request, partner: Partner, integration_id: int) -> None:
    """Delete an integration without active installs, with its versions and reviews.

    Rows of uninstalled installs go too, because they only describe this
    integration. API keys linked to it are unlinked. An integration with
    active installs is a 409.
    """
    session = request.dbsession
    integration = get_partner_integration(request, partner, integration_id, for_update=True)
    _require_not_plugin(integration)
    active = session.scalar(sa.select(sa.func.count()).select_from(IntegrationInstall).where(
        IntegrationInstall.integration_id == integration.id,
        IntegrationInstall.status == "active"))
    if active:
        raise Conflict(
            f"Integration {integration_public_id(integration)} has {active} active "
            f"install{'s' if active != 1 else ''} and cannot be deleted. Unpublish it instead, "
            "so no new customer can install it.", code="integration_has_installs")

    details = {"name": integration.name, "slug": integration.slug,
               "status": integration.status}
    # Keys linked to the integration keep working; their calls no longer earn per-call revenue.
    linked = session.scalars(sa.select(ApiKey.id).where(
        ApiKey.integration_id == integration.id).order_by(ApiKey.id)).all()
    if linked:
        details["unlinked_api_keys"] = [public_id("key", key_id) for key_id in linked]
        session.execute(sa.update(ApiKey).where(ApiKey.id.in_(linked))
                        .values(integration_id=None, updated_at=utcnow())
                        .execution_options(synchronize_session=False))
    _audit(request, "integration.deleted", integration, details)
    for model in (IntegrationReview, IntegrationInstall, IntegrationVersion):
        session.execute(sa.delete(model).where(model.integration_id == integration.id))
    session.delete(integration)
    session.flush()
    log.info("integration deleted", extra={"integration_id": integration_id,
                                           "partner_id": partner.id})


def _missing_for_review(integration: Integration) -> list[dict]:
    errors = []
    if not integration.description:
        errors.append(field_error("body", "description", "required for review"))
    if not (integration.support_email or integration.support_url):
        errors.append(field_error("body", "support_email",
                                  "a support_email or support_url is required for review"))
    return errors


def submit_integration(request, partner: Partner, integration_id: int) -> Integration:
    """Send an integration to review; a partner that is not verified and active gets a 403."""
    integration = get_partner_integration(request, partner, integration_id, for_update=True)
    _require_not_plugin(integration)
    if partner.verification_status != "verified" or partner.status != "active":
        raise Forbidden(
            "Only a verified, active partner can submit integrations for review. The partner "
            f"is {partner.status} with verification {partner.verification_status}. Submit the "
            "partner's verification first.", code="partner_not_verified")
    check_transition(integration, "submit")
    missing = _missing_for_review(integration)
    if missing:
        raise Conflict("The integration is not ready for review: set "
                       f"{' and '.join(error['name'] for error in missing)} first.",
                       code="integration_incomplete", errors=missing)

    previous = _set_status(request, integration, "submit")
    integration.submitted_at = integration.updated_at
    integration.rejection_reason = None
    request.dbsession.flush()

    _audit(request, "integration.submitted", integration,
           {"from": previous, "version": integration.version})
    log.info("integration submitted", extra={"integration_id": integration.id,
                                             "partner_id": partner.id})
    return integration


def unpublish_integration(request, partner: Partner, integration_id: int) -> Integration:
    """Take a published integration out of the marketplace. Existing installs keep working."""
    integration = get_partner_integration(request, partner, integration_id, for_update=True)
    _require_not_plugin(integration)
    _set_status(request, integration, "unpublish")
    integration.featured_rank = None
    request.dbsession.flush()

    _audit(request, "integration.unpublished", integration)
    log.info("integration unpublished", extra={"integration_id": integration.id,
                                               "partner_id": partner.id})
    return integration


# Admin side -------------------------------------------------------------------------


def admin_integrations_query(query: dict):
    select = sa.select(Integration)
    if query.get("status") is not None:
        select = select.where(Integration.status == query["status"])
    if query.get("partner_id") is not None:
        select = select.where(Integration.partner_id == query["partner_id"])
    text = query.get("q")
    if text:
        # autoescape escapes % and _ (and its own escape character), so they match literally.
        select = select.where(sa.func.lower(Integration.name).contains(text.lower(),
                                                                       autoescape=True))
    return select


def list_admin_integrations(request, query: dict) -> Page:
    return page_of_integrations(request.dbsession, admin_integrations_query(query), query)


def get_integration(request, integration_id: int, *, for_update: bool = False) -> Integration:
    select = sa.select(Integration).where(Integration.id == integration_id)
    if for_update:
        select = select.with_for_update()
    integration = request.dbsession.scalar(select)
    if integration is None:
        raise NotFound(f"No integration with id int_{integration_id}.")
    return integration


def review_integration(request, integration_id: int, decision: str,
                       reason: str | None) -> Integration:
    """Approve (publish, and publish integration.published) or reject an integration in review."""
    integration = get_integration(request, integration_id, for_update=True)
    now = utcnow()
    if decision == "approve":
        _set_status(request, integration, "approve")
        integration.published_at = now
        integration.rejection_reason = None
    else:
        _set_status(request, integration, "reject")
        integration.rejection_reason = reason
    request.dbsession.flush()

    if decision == "approve":
        _publish(request, "integration.published", integration)
    details = {"version": integration.version}
    if reason:
        details["reason"] = reason
    _audit(request, "integration.approved" if decision == "approve" else "integration.rejected",
           integration, details)
    log.info("integration reviewed", extra={"integration_id": integration.id,
                                            "decision": decision, "admin_id": request.admin.id})
    return integration


def set_featured(request, integration_id: int, featured: bool, rank: int | None) -> Integration:
    """Feature a published integration at ``rank`` (after the last one by default), or stop."""
    integration = get_integration(request, integration_id, for_update=True)
    session = request.dbsession
    if featured and integration.status != "published":
        raise Conflict(f"Integration {integration_public_id(integration)} is "
                       f"{integration.status}; only a published integration can be featured.",
                       code="integration_not_published")
    if featured and rank is None:
        if integration.featured_rank is not None:
            rank = integration.featured_rank
        else:
            last = session.scalar(sa.select(sa.func.max(Integration.featured_rank)))
            rank = (last or 0) + 1
    previous = integration.featured_rank
    integration.featured_rank = rank if featured else None
    integration.updated_at = utcnow()
    session.flush()

    _audit(request, "integration.featured", integration,
           {"featured": featured, "rank": integration.featured_rank, "previous_rank": previous})
    return integration


# Lists ------------------------------------------------------------------------------


def _sort_keys(sort: str) -> list[tuple]:
    """Return ``(expression, descending)`` pairs for ``sort``, ending with the id for ties."""
    if sort == QUEUE_SORT:
        in_review_first = sa.case((Integration.status == "in_review", 0), else_=1)
        submitted = sa.func.coalesce(Integration.submitted_at,
                                     sa.literal(_NEVER, sa.DateTime()))
        return [(in_review_first, False), (submitted, False), (Integration.id, False)]
    descending = sort.startswith("-")
    name = sort.lstrip("-")
    if name == "created_at":
        # Ids grow with creation time, so created_at sorts by id.
        return [(Integration.id, descending)]
    column = {"updated_at": Integration.updated_at, "name": Integration.name,
              "submitted_at": sa.func.coalesce(Integration.submitted_at,
                                               sa.literal(_NEVER, sa.DateTime()))}[name]
    return [(column, descending), (Integration.id, descending)]


def page_of_integrations(session, select, query: dict) -> Page:
    """Return one page of ``select`` in the order of ``query["sort"]``.

    The cursor contains the last integration's id. The next page starts after
    that integration's current sort values. An integration whose sort values
    change between two pages can appear twice or not at all.
    """
    keys = _sort_keys(query["sort"])
    cursor = query.get("cursor")
    limit = query["limit"]
    if cursor is not None:
        # Looked up within the same filters, so another partner's id is not a valid cursor.
        last = session.execute(select.with_only_columns(*(key for key, _ in keys))
                               .where(Integration.id == cursor)).one_or_none()
        if last is None:
            raise ValidationFailed("The cursor does not belong to this list.", errors=[
                field_error("querystring", "cursor", "Not a cursor this API returned.")])
        after = []
        for position, (key, descending) in enumerate(keys):
            equal = [keys[index][0] == last[index] for index in range(position)]
            beyond = key < last[position] if descending else key > last[position]
            after.append(sa.and_(*equal, beyond))
        select = select.where(sa.or_(*after))

    order = [key.desc() if descending else key.asc() for key, descending in keys]
    rows = session.scalars(select.order_by(*order).limit(limit + 1)).all()
    has_more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, encode_cursor(rows[-1].id) if has_more and rows else None)
