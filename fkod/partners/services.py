"""Partner accounts: the logic behind sign-up and the partner profile.

API keys are in :mod:`fkod.partners.api_keys` and webhook endpoints in
:mod:`fkod.partners.webhooks`.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa

from fkod.core import audit, slugs
from fkod.core.auth.account_mail import send_email_verification
from fkod.core.auth.accounts import create_platform_user
from fkod.core.auth.models import Partner, PartnerMember, User
from fkod.core.billing.models import Plan
from fkod.core.db import utcnow
from fkod.core.errors import Conflict, Forbidden, field_error
from fkod.core.webhooks.outbox import publish
from fkod.partners.schemas import PartnerSchema

log = logging.getLogger(__name__)


def partner_event_data(partner: Partner) -> dict:
    return PartnerSchema().dump(partner)


def unique_partner_slug(session, company_name: str) -> str:
    """Return a slug of the company name that no partner uses yet (``acme``, ``acme-2``…)."""
    return slugs.unique_slug(session, Partner.slug, company_name, "partner")


# Partners ---------------------------------------------------------------------


def register_partner(request, data: dict) -> tuple[Partner, User]:
    """Create the owner user, the partner and the owner membership; emit partner.created.

    The sign-up is audited and the owner's email gets a verification link.
    """
    session = request.dbsession
    email = data.pop("email")
    password = data.pop("password")
    name = data.pop("name", None)

    user = create_platform_user(request, email=email, password=password, name=name)
    default_plan = session.scalar(sa.select(Plan).where(Plan.is_default.is_(True)).limit(1))
    partner = Partner(user_id=user.id, status="pending", verification_status="unverified",
                      slug=unique_partner_slug(session, data["company_name"]),
                      plan_id=default_plan.id if default_plan else None, **data)
    session.add(partner)
    try:
        session.flush()
    except sa.exc.IntegrityError:
        # Another sign-up of the same company name took the slug meanwhile.
        raise Conflict("Another partner with this company name signed up at the same moment; "
                       "send the request again.", code="registration_conflict") from None
    session.add(PartnerMember(partner_id=partner.id, user_id=user.id, role="owner"))
    session.flush()

    publish(request, "partner.created", partner_event_data(partner), livemode=True,
            partner_ids=[partner.id])
    # The new owner is the actor of the audit entry.
    request.user = user
    audit.record(request, "partner.registered", partner_id=partner.id, target_type="partner",
                 target_id=f"partner_{partner.id}")
    send_email_verification(request, user, user.email)
    log.info("partner registered", extra={"partner_id": partner.id, "user_id": user.id})
    return partner, user


def update_partner(request, partner: Partner, data: dict) -> Partner:
    changed = sorted(name for name, value in data.items() if getattr(partner, name) != value)
    for name in changed:
        setattr(partner, name, data[name])
    if changed:
        partner.updated_at = utcnow()
        request.dbsession.flush()
        payload = partner_event_data(partner)
        payload["changed_fields"] = changed
        publish(request, "partner.updated", payload, livemode=True, partner_ids=[partner.id])
    return partner


def require_live_mode_allowed(partner: Partner, mode: str, what: str, user: User) -> None:
    """Refuse live mode unless the partner is verified and the acting user's email is."""
    if mode != "live":
        return
    if partner.verification_status != "verified":
        raise Forbidden(
            f"Live-mode {what} need a verified partner; use mode test until verification "
            "is approved.",
            code="partner_not_verified",
            errors=[field_error("body", "mode", "live mode requires a verified partner")],
        )
    if user.email_verified_at is None:
        raise Forbidden(
            f"Live-mode {what} need a verified email address; follow the link we sent, or "
            "ask for a new one with POST /api/auth/email/resend.",
            code="email_not_verified",
            errors=[field_error("body", "mode", "live mode requires a verified email")],
        )
