"""Plans and subscriptions: choosing a plan, upgrades, downgrades, and the plan at a time.

An upgrade (a plan with a higher monthly price) applies at once: the
partner's plan switches, the gateway applies its limits within a second, and
the rest of the month is charged as a proration line. A downgrade waits for
the start of the next calendar month (UTC). Every switch is a
:class:`PlanChange` row, so the period close can tell which plan was in
effect at any moment of a past month.
"""

from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal

import sqlalchemy as sa

from fkod.core import audit
from fkod.core.auth.models import Partner
from fkod.core.billing.models import Plan, PlanChange
from fkod.core.billing.money import CURRENCY, ZERO, round_cents
from fkod.core.billing.periods import Period
from fkod.core.db import utcnow
from fkod.core.errors import Conflict, NotFound, ValidationFailed, field_error

log = logging.getLogger(__name__)


def default_plan(session) -> Plan | None:
    return session.scalar(
        sa.select(Plan).where(Plan.is_default.is_(True), Plan.active.is_(True)).limit(1))


def current_plan(session, partner: Partner) -> Plan | None:
    """Return the partner's plan, or the default plan when it has none."""
    plan = session.get(Plan, partner.plan_id) if partner.plan_id else None
    return plan if plan is not None else default_plan(session)


def plan_by_code(session, code: str, *, field: str = "plan") -> Plan:
    """Return the active plan with ``code``; 400 naming ``field`` otherwise."""
    plan = session.scalar(sa.select(Plan).where(Plan.code == code))
    if plan is None or not plan.active:
        problem = "no plan has this code" if plan is None else "the plan is not active"
        raise ValidationFailed(f"Invalid body field {field}: {problem} ({code!r}).",
                               errors=[field_error("body", field, problem)])
    return plan


def plan_at(session, partner: Partner, moment: dt.datetime) -> Plan | None:
    """Return the plan that was in effect for the partner at ``moment`` (naive UTC)."""
    before = session.scalar(
        sa.select(PlanChange)
        .where(PlanChange.partner_id == partner.id, PlanChange.status == "applied",
               PlanChange.effective_at <= moment)
        .order_by(PlanChange.effective_at.desc(), PlanChange.id.desc()).limit(1))
    if before is not None:
        return session.get(Plan, before.to_plan_id)
    after = session.scalar(
        sa.select(PlanChange)
        .where(PlanChange.partner_id == partner.id, PlanChange.status == "applied",
               PlanChange.effective_at > moment)
        .order_by(PlanChange.effective_at, PlanChange.id).limit(1))
    if after is not None:
        if after.from_plan_id is not None:
            return session.get(Plan, after.from_plan_id)
        return default_plan(session)
    return current_plan(session, partner)


def scheduled_change(session, partner_id: int) -> PlanChange | None:
    return session.scalar(
        sa.select(PlanChange)
        .where(PlanChange.partner_id == partner_id, PlanChange.status == "scheduled")
        .order_by(PlanChange.id.desc()).limit(1))


def proration(old: Plan | None, new: Plan, moment: dt.datetime) -> Decimal:
    """Return the charge for the rest of the month after an upgrade at ``moment``.

    It is the difference of the monthly prices times the share of the
    month's seconds still to come, rounded half up to the cent.
    """
    period = Period.containing(moment)
    remaining = (period.end_at - moment).total_seconds()
    length = (period.end_at - period.start_at).total_seconds()
    difference = new.price_monthly - (old.price_monthly if old is not None else ZERO)
    if difference <= 0:
        return ZERO
    return round_cents(difference * Decimal(int(remaining)) / Decimal(int(length)))


def is_upgrade(old: Plan | None, new: Plan) -> bool:
    """Return whether moving from ``old`` to ``new`` is an upgrade: a dearer or a first plan."""
    return old is None or new.price_monthly > old.price_monthly


def change_plan(request, partner: Partner, code: str) -> PlanChange:
    """Move the partner to the self-serve plan ``code``: at once when dearer, else next month.

    409 ``plan_unchanged`` when it is the current plan and nothing is
    scheduled; 400 when the plan does not exist, is inactive, is not in USD
    or is not self-serve. A new request replaces a scheduled downgrade.
    """
    session = request.dbsession
    session.refresh(partner, with_for_update=True)
    new = plan_by_code(session, code)
    if not new.self_serve:
        raise ValidationFailed(
            f"Invalid body field plan: {code!r} is assigned by F-KOD; contact sales to move "
            "to it.", errors=[field_error("body", "plan", "the plan is not self-serve")])
    if new.currency != CURRENCY:
        raise ValidationFailed(
            f"Invalid body field plan: {code!r} is priced in {new.currency}; only USD plans "
            "are billed.", errors=[field_error("body", "plan", "the plan is not in USD")])
    old = current_plan(session, partner)
    pending = scheduled_change(session, partner.id)
    now = utcnow()

    if old is not None and old.id == new.id:
        if pending is None:
            raise Conflict(f"The partner is already on the {new.name} plan.",
                           code="plan_unchanged")
        _cancel(pending, now)
        _record(request, partner, "subscription.change_cancelled", pending, old, new)
        return pending
    if pending is not None:
        _cancel(pending, now)

    upgrade = is_upgrade(old, new)
    change = PlanChange(
        partner_id=partner.id, from_plan_id=old.id if old else None, to_plan_id=new.id,
        kind="upgrade" if upgrade else "downgrade",
        status="applied" if upgrade else "scheduled",
        effective_at=now if upgrade else Period.containing(now).next().start_at,
        applied_at=now if upgrade else None,
        proration=proration(old, new, now) if upgrade else ZERO,
        requested_by_user_id=getattr(getattr(request, "user", None), "id", None),
    )
    session.add(change)
    if upgrade:
        partner.plan_id = new.id
        partner.updated_at = now
    session.flush()
    if upgrade:
        # Imported here: the partner limits module imports this one's callers.
        from fkod.partners.limits import refresh_partner_limits
        refresh_partner_limits(request, partner.id)
    _record(request, partner, f"subscription.{change.kind}", change, old, new)
    return change


def _cancel(change: PlanChange, now: dt.datetime) -> None:
    change.status = "cancelled"
    change.applied_at = None


def _record(request, partner, action, change, old, new) -> None:
    details = {"from": old.code if old else None, "to": new.code,
               "effective_at": change.effective_at.isoformat() + "Z"}
    if change.proration:
        details["proration"] = str(change.proration)
    audit.record(request, action, partner_id=partner.id, target_type="partner",
                 target_id=f"partner_{partner.id}", details=details)
    log.info("subscription changed", extra={"partner_id": partner.id, "action": action,
                                             "plan": new.code})


def cancel_scheduled_change(request, partner: Partner) -> PlanChange:
    """Drop the partner's scheduled downgrade; 404 when there is none."""
    pending = scheduled_change(request.dbsession, partner.id)
    if pending is None:
        raise NotFound("The partner has no scheduled plan change.")
    _cancel(pending, utcnow())
    old = current_plan(request.dbsession, partner)
    new = request.dbsession.get(Plan, pending.to_plan_id)
    _record(request, partner, "subscription.change_cancelled", pending, old, new)
    return pending


def record_admin_change(session, partner: Partner, old_plan_id: int | None,
                        new_plan_id: int | None) -> None:
    """Record a plan an admin assigned, effective now and without proration."""
    target = new_plan_id or getattr(default_plan(session), "id", None)
    if target is None:
        return
    now = utcnow()
    session.add(PlanChange(partner_id=partner.id, from_plan_id=old_plan_id, to_plan_id=target,
                           kind="admin", status="applied", effective_at=now, applied_at=now,
                           proration=ZERO))


def apply_due_changes(session, now: dt.datetime | None = None) -> int:
    """Switch every partner whose scheduled downgrade is due; return how many switched."""
    now = now or utcnow()
    due = session.scalars(
        sa.select(PlanChange)
        .where(PlanChange.status == "scheduled", PlanChange.effective_at <= now)
        .order_by(PlanChange.effective_at, PlanChange.id)
        .with_for_update()).all()
    for change in due:
        partner = session.get(Partner, change.partner_id)
        partner.plan_id = change.to_plan_id
        change.status = "applied"
        change.applied_at = now
        log.info("scheduled plan change applied",
                 extra={"partner_id": partner.id, "plan_id": change.to_plan_id})
    session.flush()
    return len(due)
