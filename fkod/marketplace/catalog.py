"""Which integrations the marketplace lists, and queries over them.

An integration is listed when it is published, its partner is active, and
the plugin that ships it (if any) is enabled. Every public read and every
install goes through :func:`listed_clause` or :func:`get_listed_integration`.
"""

from __future__ import annotations

import sqlalchemy as sa

from fkod.core.auth.models import Partner
from fkod.core.errors import NotFound
from fkod.core.ids import parse_id
from fkod.marketplace.models import Integration


def disabled_plugin_names(request) -> list[str]:
    """Plugins whose integrations are hidden: disabled by an admin or failed to load."""
    host = request.registry["plugins"]
    return sorted(name for name in host.plugins if not host.is_enabled(name))


def listed_clause(request):
    """A WHERE clause on ``Integration`` (joined with nothing) selecting listed integrations."""
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
