"""The rule for listed integrations, and the public reads of the marketplace.

An integration is listed when it is published, its partner is active, and
the plugin that ships it (if any) is enabled. Every public read and every
install goes through :func:`listed_clause` or :func:`get_listed_integration`.

Lists are paged by keyset: the cursor contains the id of the last item, and
the next page starts after that item's current sort values, looked up again.
An item whose sort values change between two pages can therefore appear twice
or not at all.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import sqlalchemy as sa
from sqlalchemy import orm

from fkod.core.api import Page, encode_cursor
from fkod.core.auth.models import Partner
from fkod.core.db import utcnow
from fkod.core.errors import NotFound, ValidationFailed, field_error
from fkod.core.ids import parse_id, try_parse_id
from fkod.core.integrations import CATEGORIES, SLUG
from fkod.marketplace.models import Integration, IntegrationInstall

# Sort orders of integration lists: (expression, descending) pairs, the id last
# so that the order is total.
INTEGRATION_SORTS = {
    "popular": ((Integration.install_count, True), (Integration.id, True)),
    "newest": ((sa.func.coalesce(Integration.published_at, Integration.created_at), True),
               (Integration.id, True)),
    # Unrated integrations (NULL rating) sort after every rated one.
    "rating": ((sa.func.coalesce(Integration.rating, -1), True),
               (Integration.review_count, True), (Integration.id, True)),
    "name": ((sa.func.lower(Integration.name), False), (Integration.id, False)),
}
DEFAULT_SORT = "popular"

# Trending: an active install made within TRENDING_DAYS weighs
# TRENDING_DECAY ** (its age in whole days), so today's install counts 1,
# yesterday's 0.7 and a six-day-old one about 0.12.
TRENDING_DAYS = 7
TRENDING_DECAY = 0.7

MAX_PROFILE_INTEGRATIONS = 100


def disabled_plugin_names(request) -> list[str]:
    """Plugins whose integrations are hidden: disabled by an admin or failed to load."""
    host = request.registry["plugins"]
    return sorted(name for name in host.plugins if not host.is_enabled(name))


def listed_clause(request):
    """Build the WHERE clause on ``Integration`` (no join) that selects listed integrations."""
    active_partner = sa.exists().where(Partner.id == Integration.partner_id,
                                       Partner.status == "active")
    clause = sa.and_(Integration.status == "published", active_partner)
    hidden = disabled_plugin_names(request)
    if hidden:
        clause = sa.and_(clause, sa.or_(Integration.plugin_name.is_(None),
                                        Integration.plugin_name.not_in(hidden)))
    return clause


def get_listed_integration(request, integration_id: str, *,
                           for_update: bool = False) -> Integration:
    """Return the listed integration with public id ``int_N``; anything else is a 404."""
    number = parse_id("int", integration_id, noun="integration")
    query = sa.select(Integration).where(Integration.id == number, listed_clause(request))
    if for_update:
        query = query.with_for_update()
    integration = request.dbsession.scalar(query)
    if integration is None:
        raise NotFound(f"No integration with id {integration_id!r}.")
    return integration


# Filters and keyset pages ------------------------------------------------------


def find_public_partner(session, reference: str) -> Partner | None:
    """Return the active partner named by ``partner_N`` or by its slug, else None."""
    number = try_parse_id("partner", reference)
    if number is not None:
        condition = Partner.id == number
    elif SLUG.match(reference):
        condition = Partner.slug == reference
    else:
        return None
    return session.scalar(sa.select(Partner).where(condition, Partner.status == "active"))


def filter_integrations(request, select, query: dict):
    """Apply the category, partner, pricing and min_rating filters of ``query``.

    A partner that is unknown or not active is a 400 naming ``partner``, as an
    unknown category is.
    """
    if query.get("category") is not None:
        select = select.where(Integration.category == query["category"])
    if query.get("pricing") is not None:
        select = select.where(Integration.pricing_model == query["pricing"])
    if query.get("min_rating") is not None:
        select = select.where(Integration.rating >= query["min_rating"])
    if query.get("partner") is not None:
        partner = find_public_partner(request.dbsession, query["partner"])
        if partner is None:
            raise ValidationFailed(
                f"No partner {query['partner']!r} in the marketplace.",
                errors=[field_error("querystring", "partner",
                                    "Must be the id (partner_<number>) or the slug of a "
                                    "partner in the marketplace.")])
        select = select.where(Integration.partner_id == partner.id)
    return select


def after_keys(keys, values):
    """Return the clause that selects rows after ``values`` in the order of ``keys``."""
    alternatives = []
    for position, (expression, descending) in enumerate(keys):
        equal = [key == value for (key, _), value
                 in zip(keys[:position], values[:position], strict=True)]
        beyond = expression < values[position] if descending else expression > values[position]
        alternatives.append(sa.and_(*equal, beyond))
    return sa.or_(*alternatives)


def invalid_cursor() -> ValidationFailed:
    return ValidationFailed("The cursor does not belong to this list.", errors=[
        field_error("querystring", "cursor", "Not a cursor this API returned.")])


def keyset_page(session, select, keys, query: dict, last_values_select=None) -> Page:
    """Return one page of ``select`` (whose first column is the item) in the order of ``keys``.

    ``last_values_select`` selects the sort values of the cursor's item from its
    id; by default they are read from the integrations table.
    """
    cursor = query.get("cursor")
    limit = query["limit"]
    if cursor is not None:
        if last_values_select is None:
            last_values_select = sa.select(*(key for key, _ in keys)).where(
                Integration.id == cursor)
        last_values = session.execute(last_values_select).first()
        if last_values is None:
            raise invalid_cursor()
        select = select.where(after_keys(keys, tuple(last_values)))

    order = [key.desc() if descending else key.asc() for key, descending in keys]
    rows = session.execute(select.order_by(*order).limit(limit + 1)).all()
    has_more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(rows[-1][0].id) if has_more and rows else None
    return Page(rows, next_cursor)


def with_partner(select):
    """Load each integration's partner in one more query, for the partner block."""
    return select.options(orm.selectinload(Integration.partner))


# Integrations -------------------------------------------------------------------


def list_integrations(request, query: dict) -> Page:
    """Return one page of listed integrations, filtered and sorted by ``query``."""
    select = with_partner(sa.select(Integration).where(listed_clause(request)))
    select = filter_integrations(request, select, query)
    page = keyset_page(request.dbsession, select, INTEGRATION_SORTS[query["sort"]], query)
    return Page([row[0] for row in page.items], page.next_cursor)


def get_integration(request, integration_id: str) -> Integration:
    """Return the listed integration ``int_N`` with its partner; anything else is a 404."""
    integration = get_listed_integration(request, integration_id)
    # Loaded here so the response does not depend on a lazy load after the view.
    integration.partner  # noqa: B018 - the attribute access loads the relationship
    return integration


def category_counts(request) -> list[dict]:
    """Return every category of CATEGORIES with its number of listed integrations."""
    rows = request.dbsession.execute(
        sa.select(Integration.category, sa.func.count())
        .where(listed_clause(request), Integration.category.in_(CATEGORIES))
        .group_by(Integration.category)
    ).all()
    counts = dict(rows)
    return [{"name": name, "integration_count": counts.get(name, 0)} for name in CATEGORIES]


def featured_integrations(request, limit: int) -> list[Integration]:
    """Return listed integrations with a featured rank, lowest rank first."""
    select = with_partner(
        sa.select(Integration)
        .where(listed_clause(request), Integration.featured_rank.is_not(None))
        .order_by(Integration.featured_rank.asc(), Integration.id.asc())
        .limit(limit)
    )
    return list(request.dbsession.scalars(select))


@dataclasses.dataclass
class TrendingEntry:
    """A listed integration with its decayed count of recent active installs."""

    integration: Integration
    trending_score: float
    recent_installs: int

    def __getattr__(self, name):
        # The response schema reads the integration's own fields through the entry.
        if name == "integration":
            raise AttributeError(name)
        return getattr(self.integration, name)


def trending_weight(now: dt.datetime):
    """Build the weight of one install row: TRENDING_DECAY ** (whole days since it was made).

    The day boundaries are bound parameters, so the same SQL runs on
    PostgreSQL and SQLite without date arithmetic in the database.
    """
    installed_at = IntegrationInstall.installed_at
    whens = [(installed_at >= now - dt.timedelta(days=age + 1), TRENDING_DECAY ** age)
             for age in range(TRENDING_DAYS)]
    return sa.case(*whens, else_=0.0)


def trending_integrations(request, limit: int) -> list[TrendingEntry]:
    """Return the listed integrations with the highest decayed count of recent active installs."""
    now = utcnow()
    score = sa.func.sum(trending_weight(now)).label("trending_score")
    recent = sa.func.count(IntegrationInstall.id).label("recent_installs")
    ranked = (
        sa.select(IntegrationInstall.integration_id, score, recent)
        .where(IntegrationInstall.status == "active",
               IntegrationInstall.installed_at >= now - dt.timedelta(days=TRENDING_DAYS))
        .group_by(IntegrationInstall.integration_id)
        .subquery()
    )
    select = with_partner(
        sa.select(Integration, ranked.c.trending_score, ranked.c.recent_installs)
        .join(ranked, ranked.c.integration_id == Integration.id)
        .where(listed_clause(request))
        .order_by(ranked.c.trending_score.desc(), Integration.install_count.desc(),
                  Integration.id.desc())
        .limit(limit)
    )
    return [TrendingEntry(integration, round(float(value), 4), count)
            for integration, value, count in request.dbsession.execute(select)]


# Partners -----------------------------------------------------------------------


@dataclasses.dataclass
class PublicPartner:
    """An active partner with the counts of its listed integrations and their installs."""

    partner: Partner
    integration_count: int
    install_count: int
    integrations: list[Integration] = dataclasses.field(default_factory=list)

    def __getattr__(self, name):
        # The response schema reads the partner's own fields through the profile.
        if name == "partner":
            raise AttributeError(name)
        return getattr(self.partner, name)


def listed_counts(request):
    """Build a subquery of partner_id, integration_count and install_count over listed ones."""
    return (
        sa.select(Integration.partner_id.label("partner_id"),
                  sa.func.count(Integration.id).label("integration_count"),
                  sa.func.coalesce(sa.func.sum(Integration.install_count), 0)
                  .label("install_count"))
        .where(listed_clause(request))
        .group_by(Integration.partner_id)
        .subquery("listed_counts")
    )


def partner_sorts(counts):
    return {
        "name": ((sa.func.lower(Partner.company_name), False), (Partner.id, False)),
        "popular": ((counts.c.install_count, True), (Partner.id, True)),
    }


def list_partners(request, query: dict) -> Page:
    """Return one page of active partners that have at least one listed integration."""
    counts = listed_counts(request)
    select = (sa.select(Partner, counts.c.integration_count, counts.c.install_count)
              .join(counts, counts.c.partner_id == Partner.id)
              .where(Partner.status == "active"))
    keys = partner_sorts(counts)[query["sort"]]
    last_values = None
    if query.get("cursor") is not None:
        last_values = select.with_only_columns(*(key for key, _ in keys)).where(
            Partner.id == query["cursor"])
    page = keyset_page(request.dbsession, select, keys, query, last_values)
    return Page([PublicPartner(partner, integration_count, install_count)
                 for partner, integration_count, install_count in page.items],
                page.next_cursor)


def get_public_partner(request, reference: str) -> PublicPartner:
    """Return the public profile of an active partner with listed integrations, by id or slug.

    A partner that is not active, or has no listed integration, is a 404.
    """
    partner = find_public_partner(request.dbsession, reference)
    if partner is None:
        raise NotFound(f"No partner {reference!r} in the marketplace.")
    counts = listed_counts(request)
    row = request.dbsession.execute(
        sa.select(counts.c.integration_count, counts.c.install_count)
        .where(counts.c.partner_id == partner.id)
    ).first()
    if row is None:
        raise NotFound(f"No partner {reference!r} in the marketplace.")

    integrations = request.dbsession.scalars(with_partner(
        sa.select(Integration)
        .where(listed_clause(request), Integration.partner_id == partner.id)
        .order_by(Integration.install_count.desc(), Integration.id.desc())
        .limit(MAX_PROFILE_INTEGRATIONS)
    ))
    return PublicPartner(partner, row.integration_count, row.install_count, list(integrations))
