"""Adding users to a partner's tenancy: the users its credentials can see."""

from __future__ import annotations

import sqlalchemy as sa

from fkod.core.auth.models import PartnerUser


def add_to_tenancy(session, partner_id: int, user_id: int, *, livemode: bool,
                   source: str) -> None:
    """Put the user in the partner's tenancy unless it is there already.

    ``source`` records why (``installed``, ``authorized``); a concurrent request
    that adds the same row first is not an error.
    """
    exists = session.scalar(sa.select(PartnerUser.id).where(
        PartnerUser.partner_id == partner_id, PartnerUser.user_id == user_id))
    if exists is not None:
        return
    try:
        with session.begin_nested():
            session.add(PartnerUser(partner_id=partner_id, user_id=user_id, livemode=livemode,
                                    source=source))
    except sa.exc.IntegrityError:
        pass
