"""The logic behind the admin API: admin login and accounts, partner review and overrides.

Every change an admin makes is written to the audit log in the same
transaction (:func:`fkod.core.audit.record`), so an entry exists exactly when
the change committed.
"""

from __future__ import annotations

import datetime as dt
import logging

import sqlalchemy as sa
from sqlalchemy import orm

from fkod.core import audit
from fkod.core.auth.accounts import (
    check_login_allowed,
    count_login_failure,
    forget_login_failures,
)
from fkod.core.api import Page, encode_cursor
from fkod.core.audit import AuditEntry
from fkod.core.auth.models import AdminUser, Partner, PartnerMember
from fkod.core.billing.plans import plan_by_code, record_admin_change
from fkod.core.db import utcnow
from fkod.core.errors import Conflict, NotFound, ValidationFailed, field_error
from fkod.core.gateway import default_plan
from fkod.core.ratelimit.policy import with_overrides
from fkod.core.webhooks.outbox import publish
from fkod.partners.audit_views import filter_entries
from fkod.partners.limits import forget_partner_keys, refresh_partner_limits
from fkod.partners.services import partner_event_data

log = logging.getLogger(__name__)

# Sorts the verification queue with partners that never submitted last.
_NEVER = dt.datetime(9999, 12, 31)
MASK = "****"


# Admin login and accounts -----------------------------------------------------


def log_in(request, email: str, password: str) -> AdminUser | None:
    """Check an admin's credentials and return the active admin, or None when they fail.

    Both outcomes are audited. A failed attempt records the admin account it
    named, if any, but never the email text of an unknown account, because
    that text may be a password typed into the wrong field.
    """
    # Failed logins count per admin account as they do for partner accounts,
    # in a separate bucket.
    throttle_key = "admin:" + email.strip().lower()
    check_login_allowed(request, throttle_key)
    admin = request.dbsession.scalar(
        sa.select(AdminUser).where(AdminUser.email == email.strip().lower()))
    passwords = request.registry["password_hasher"]
    password_ok = passwords.verify(admin.password_hash if admin else None, password)

    if admin is None or not password_ok or admin.status != "active":
        if admin is None:
            reason, target_id = "unknown_email", None
        else:
            reason = "wrong_password" if not password_ok else f"admin_{admin.status}"
            target_id = f"admin_{admin.id}"
        audit.record(request, "admin.login_failed", partner_id=None,
                     target_type="admin_user" if target_id else None, target_id=target_id,
                     details={"reason": reason})
        log.info("admin login failed", extra={"reason": reason, "target_id": target_id})
        count_login_failure(request, throttle_key)
        return None

    forget_login_failures(request, throttle_key)

    if passwords.needs_rehash(admin.password_hash):
        admin.password_hash = passwords.hash(password)
    request.admin = admin
    audit.record(request, "admin.login", partner_id=None, target_type="admin_user",
                 target_id=f"admin_{admin.id}")
    log.info("admin login", extra={"admin_id": admin.id})
    return admin


def add_admin(session, password_hasher, data: dict) -> AdminUser:
    """Create an admin user from loaded ``CreateAdminBody`` data; raise 409 for a taken email."""
    email = data["email"].lower()
    existing_id = session.scalar(sa.select(AdminUser.id).where(AdminUser.email == email))
    if existing_id is not None:
        raise Conflict(f"An admin with the email {email} already exists.", code="email_taken",
                       errors=[field_error("body", "email", "already registered")])
    admin = AdminUser(email=email, name=data["name"], role=data["role"], status="active",
                      password_hash=password_hasher.hash(data["password"]))
    session.add(admin)
    try:
        session.flush()
    except sa.exc.IntegrityError:
        # A concurrent request created the same email after the check above.
        raise Conflict(f"An admin with the email {email} already exists.",
                       code="email_taken") from None
    return admin


def create_admin(request, data: dict) -> AdminUser:
    admin = add_admin(request.dbsession, request.registry["password_hasher"], data)
    audit.record(request, "admin.created", partner_id=None, target_type="admin_user",
                 target_id=f"admin_{admin.id}",
                 details={"email": admin.email, "role": admin.role})
    return admin


def create_admin_from_command(session, password_hasher, data: dict) -> AdminUser:
    """Create an admin for ``fkod admin create``; audited as a system action."""
    admin = add_admin(session, password_hasher, data)
    session.add(AuditEntry(
        partner_id=None, actor_type="system", actor_id=None, action="admin.created",
        target_type="admin_user", target_id=f"admin_{admin.id}",
        details={"email": admin.email, "role": admin.role, "source": "fkod admin create"}))
    log.info("admin created from the command line", extra={"admin_id": admin.id})
    return admin


def admins_query(query: dict):
    select = sa.select(AdminUser)
    for name in ("role", "status"):
        if query.get(name) is not None:
            select = select.where(getattr(AdminUser, name) == query[name])
    return select


def get_admin(request, admin_id: int, *, for_update: bool = False) -> AdminUser:
    select = sa.select(AdminUser).where(AdminUser.id == admin_id)
    if for_update:
        select = select.with_for_update()
    admin = request.dbsession.scalar(select)
    if admin is None:
        raise NotFound(f"No admin with id admin_{admin_id}.")
    return admin


def _is_active_superadmin(role: str, status: str) -> bool:
    return role == "superadmin" and status == "active"


def update_admin(request, admin_id: int, data: dict) -> AdminUser:
    """Change an admin's name, role or status; the last active superadmin must stay one."""
    session = request.dbsession
    # Locking every active superadmin, in id order, serializes concurrent
    # demotions on PostgreSQL, so two of them cannot both pass the check below.
    # SQLite takes its write lock at BEGIN IMMEDIATE.
    superadmins = session.scalars(
        sa.select(AdminUser.id)
        .where(AdminUser.role == "superadmin", AdminUser.status == "active")
        .order_by(AdminUser.id)
        .with_for_update()
    ).all()
    admin = get_admin(request, admin_id, for_update=True)

    changes = {name: {"from": getattr(admin, name), "to": value}
               for name, value in data.items() if getattr(admin, name) != value}
    new_role = data.get("role", admin.role)
    new_status = data.get("status", admin.status)
    if (_is_active_superadmin(admin.role, admin.status)
            and not _is_active_superadmin(new_role, new_status)
            and [other for other in superadmins if other != admin.id] == []):
        name = "role" if new_role != "superadmin" else "status"
        raise Conflict(
            "This is the last active superadmin. Make another admin superadmin first.",
            code="last_superadmin",
            errors=[field_error("body", name, "the last active superadmin must stay one")])

    for name, change in changes.items():
        setattr(admin, name, change["to"])
    if changes:
        session.flush()
        audit.record(request, "admin.updated", partner_id=None, target_type="admin_user",
                     target_id=f"admin_{admin.id}", details={"changes": changes})
        log.info("admin updated", extra={"admin_id": admin.id, "fields": sorted(changes),
                                         "by_admin_id": request.admin.id})
    return admin


# Partners: lists and details ------------------------------------------------------


def _sort_key(name: str):
    if name == "company_name":
        return sa.func.lower(Partner.company_name)
    if name == "verification_submitted_at":
        return sa.func.coalesce(Partner.verification_submitted_at, _NEVER)
    return None


def partners_query(query: dict):
    """Select the partners that match the list filters (status, verification_status, q)."""
    select = sa.select(Partner).options(orm.selectinload(Partner.plan))
    if query.get("status") is not None:
        select = select.where(Partner.status == query["status"])
    if query.get("verification_status") is not None:
        select = select.where(Partner.verification_status == query["verification_status"])
    text = query.get("q")
    if text:
        # autoescape escapes % and _ (and its own escape character), so they match literally.
        needle = text.lower()
        select = select.where(sa.or_(
            sa.func.lower(Partner.company_name).contains(needle, autoescape=True),
            sa.func.lower(Partner.contact_email).contains(needle, autoescape=True),
        ))
    return select


def list_partners(request, query: dict) -> Page:
    """Return one page of partners in the order of ``query["sort"]``, keyed by id on ties.

    The cursor holds the last partner's id, and the next page starts after
    that partner's current sort value and id. A partner whose sort value does
    not change between two pages appears exactly once.
    """
    sort = query["sort"]
    descending = sort.startswith("-")
    sort_key = _sort_key(sort.lstrip("-"))
    session = request.dbsession
    select = partners_query(query)
    cursor = query.get("cursor")
    limit = query["limit"]

    if sort_key is None:
        # Ids grow with creation time, so created_at sorts by id.
        order = (Partner.id.desc(),) if descending else (Partner.id.asc(),)
        if cursor is not None:
            select = select.where(Partner.id < cursor if descending else Partner.id > cursor)
    else:
        order = ((sort_key.desc(), Partner.id.desc()) if descending
                 else (sort_key.asc(), Partner.id.asc()))
        if cursor is not None:
            last_value = session.scalar(sa.select(sort_key).where(Partner.id == cursor))
            if last_value is None:
                raise ValidationFailed("The cursor does not belong to this list.", errors=[
                    field_error("querystring", "cursor", "Not a cursor this API returned.")])
            if descending:
                after = sa.or_(sort_key < last_value,
                               sa.and_(sort_key == last_value, Partner.id < cursor))
            else:
                after = sa.or_(sort_key > last_value,
                               sa.and_(sort_key == last_value, Partner.id > cursor))
            select = select.where(after)

    rows = session.scalars(select.order_by(*order).limit(limit + 1)).all()
    has_more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, encode_cursor(rows[-1].id) if has_more and rows else None)


def get_partner(request, partner_id: int, *, for_update: bool = False) -> Partner:
    select = sa.select(Partner).where(Partner.id == partner_id)
    if for_update:
        select = select.with_for_update()
    partner = request.dbsession.scalar(select)
    if partner is None:
        raise NotFound(f"No partner with id partner_{partner_id}.")
    return partner


def mask(vault, token: str | None) -> str | None:
    """Decrypt a Fernet token and return it masked, with at most its last 4 characters.

    Values shorter than 8 characters, and tokens the vault cannot decrypt,
    are masked entirely.
    """
    if token is None:
        return None
    try:
        value = vault.decrypt(token)
    except ValueError:
        return MASK
    return MASK + value[-4:] if len(value) >= 8 else MASK


class PartnerDetail:
    """A partner with what the admin detail adds: masked secrets, members and limits."""

    def __init__(self, partner: Partner, **extra):
        self._partner = partner
        self.__dict__.update(extra)

    def __getattr__(self, name):
        return getattr(self._partner, name)


def partner_detail(request, partner: Partner) -> PartnerDetail:
    members = request.dbsession.scalars(
        sa.select(PartnerMember).options(orm.joinedload(PartnerMember.user))
        .where(PartnerMember.partner_id == partner.id)
        .order_by(PartnerMember.id)
    ).all()
    plan = partner.plan or default_plan(request)
    limited = with_overrides(plan, partner.rate_limit_overrides)
    # NOTE: the webhook encryption key is the platform's only Fernet key, so
    # tax_id and bank_account are read with it; a token encrypted with another
    # key shows as fully masked.
    vault = request.registry["webhook_vault"]
    return PartnerDetail(
        partner,
        plan=plan,
        tax_id=mask(vault, partner.tax_id),
        bank_account=mask(vault, partner.bank_account),
        members=members,
        effective_rate_limits={
            "hourly": getattr(limited, "requests_per_hour", None) or None,
            "daily": getattr(limited, "requests_per_day", None) or None,
        },
    )


# Partners: decisions and status -------------------------------------------------


def _require_not_deleted(partner: Partner) -> None:
    if partner.deleted_at is not None:
        raise Conflict(f"Partner partner_{partner.id} is deleted, so it cannot be changed.",
                       code="partner_deleted")


def decide_verification(request, partner_id: int, decision: str, reason: str | None) -> Partner:
    """Approve or reject a partner's verification, which must be submitted (409 otherwise).

    Approval marks the partner verified, activates a pending partner and
    publishes partner.verified. Rejection keeps the reason for the partner.
    """
    partner = get_partner(request, partner_id, for_update=True)
    _require_not_deleted(partner)
    if partner.verification_status != "submitted":
        raise Conflict(
            f"The partner's verification is {partner.verification_status}. Only a submitted "
            "verification can be approved or rejected.",
            code="verification_not_submitted")

    now = utcnow()
    details = {"reason": reason} if reason else {}
    if decision == "approve":
        partner.verification_status = "verified"
        partner.verified_at = now
        partner.verification_rejection_reason = None
        if partner.status == "pending":
            partner.status = "active"
        action = "partner.verification_approved"
    else:
        partner.verification_status = "rejected"
        partner.verification_rejection_reason = reason
        action = "partner.verification_rejected"
    partner.updated_at = now
    request.dbsession.flush()

    if decision == "approve":
        publish(request, "partner.verified", partner_event_data(partner), livemode=True,
                partner_ids=[partner.id])
    audit.record(request, action, partner_id=partner.id, target_type="partner",
                 target_id=f"partner_{partner.id}", details=details)
    log.info("partner verification decided", extra={
        "partner_id": partner.id, "decision": decision, "admin_id": request.admin.id})
    return partner


def suspend_partner(request, partner_id: int, reason: str) -> Partner:
    """Suspend a pending or active partner: its keys and login tokens stop working."""
    partner = get_partner(request, partner_id, for_update=True)
    _require_not_deleted(partner)
    if partner.status == "suspended":
        raise Conflict(f"Partner partner_{partner.id} is already suspended.",
                       code="partner_already_suspended")

    now = utcnow()
    previous = partner.status
    partner.status = "suspended"
    partner.suspended_at = now
    partner.suspension_reason = reason
    partner.updated_at = now
    request.dbsession.flush()
    forget_partner_keys(request, partner.id)
    audit.record(request, "partner.suspended", partner_id=partner.id, target_type="partner",
                 target_id=f"partner_{partner.id}",
                 details={"reason": reason, "previous_status": previous})
    log.info("partner suspended", extra={"partner_id": partner.id, "admin_id": request.admin.id})
    return partner


def reactivate_partner(request, partner_id: int, reason: str | None) -> Partner:
    """Lift a suspension: active when verified, else pending (409 when not suspended)."""
    partner = get_partner(request, partner_id, for_update=True)
    _require_not_deleted(partner)
    if partner.status != "suspended":
        raise Conflict(f"Partner partner_{partner.id} is {partner.status}, not suspended.",
                       code="partner_not_suspended")

    partner.status = "active" if partner.verification_status == "verified" else "pending"
    partner.suspended_at = None
    partner.suspension_reason = None
    partner.updated_at = utcnow()
    request.dbsession.flush()
    forget_partner_keys(request, partner.id)
    details = {"status": partner.status}
    if reason:
        details["reason"] = reason
    audit.record(request, "partner.reactivated", partner_id=partner.id, target_type="partner",
                 target_id=f"partner_{partner.id}", details=details)
    log.info("partner reactivated", extra={"partner_id": partner.id,
                                           "admin_id": request.admin.id})
    return partner


# Partners: overrides ------------------------------------------------------------


def _stored_limits(limits: dict | None) -> dict | None:
    """Return the overrides as stored: only the windows that are set, or None."""
    stored = {name: value for name, value in (limits or {}).items() if value is not None}
    return stored or None


def set_overrides(request, partner_id: int, data: dict) -> Partner:
    """Change the partner's plan, rate-limit overrides or commission rate; audited.

    The gateway applies the change at once in this process and within one
    second in the others.
    """
    partner = get_partner(request, partner_id, for_update=True)
    _require_not_deleted(partner)
    changes = {}

    if "plan" in data:
        plan = plan_by_code(request.dbsession, data["plan"]) if data["plan"] is not None else None
        new_plan_id = plan.id if plan is not None else None
        if new_plan_id != partner.plan_id:
            old_code = partner.plan.code if partner.plan is not None else None
            changes["plan"] = {"from": old_code, "to": data["plan"]}
            record_admin_change(request.dbsession, partner, partner.plan_id, new_plan_id)
            partner.plan_id = new_plan_id
    if "rate_limits" in data:
        limits = _stored_limits(data["rate_limits"])
        if limits != partner.rate_limit_overrides:
            changes["rate_limits"] = {"from": partner.rate_limit_overrides, "to": limits}
            partner.rate_limit_overrides = limits
    if "commission_rate" in data and data["commission_rate"] != partner.commission_rate:
        rate = data["commission_rate"]
        old = partner.commission_rate
        changes["commission_rate"] = {"from": None if old is None else f"{old:.4f}",
                                      "to": None if rate is None else f"{rate:.4f}"}
        partner.commission_rate = rate

    if changes:
        partner.updated_at = utcnow()
        request.dbsession.flush()
        # The plan relationship still points at the old plan until it is loaded again.
        request.dbsession.expire(partner, ["plan"])
        refresh_partner_limits(request, partner.id)
        audit.record(request, "partner.overrides_changed", partner_id=partner.id,
                     target_type="partner", target_id=f"partner_{partner.id}",
                     details={"changes": changes})
        log.info("partner overrides changed", extra={
            "partner_id": partner.id, "fields": sorted(changes), "admin_id": request.admin.id})
    return partner


# A partner's records and the audit log ------------------------------------------


def partner_records_query(model, partner_id: int, query: dict):
    """Select a partner's API keys or webhooks, filtered by ``status`` and ``mode``."""
    select = sa.select(model).where(model.partner_id == partner_id)
    if query.get("status") is not None:
        select = select.where(model.status == query["status"])
    if query.get("mode") is not None:
        select = select.where(model.livemode.is_(query["mode"] == "live"))
    return select


def audit_log_query(query: dict):
    select = filter_entries(sa.select(AuditEntry), query)
    if query.get("partner_id") is not None:
        select = select.where(AuditEntry.partner_id == query["partner_id"])
    if query.get("actor_type") is not None:
        select = select.where(AuditEntry.actor_type == query["actor_type"])
    return select
