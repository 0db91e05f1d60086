"""A partner's team: members with roles, and invitations to join.

Rules that apply to every caller:

* a partner always keeps at least one owner, so the last owner can be neither
  removed nor given another role (409 ``last_owner``);
* only an owner can grant the owner role, take it away or remove an owner;
  other changes need ``members:write`` (owner and admin);
* any member can leave, that is remove themself, unless they are the last owner.

Every change locks the partner's row first, so two concurrent changes cannot
both see a second owner and remove the two owners. A change takes effect on
the next request: the member check reads the membership on every request.

An invitation mails a link with a 256-bit random token; only its SHA-256 is
stored. Inviting an email with a pending invitation replaces that invitation.
Accepting needs no membership: the caller sends either a login token of the
invited email's account, or a name and password that create the account.
Creating the account this way marks its email verified, because the token
arrived in that mailbox.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import secrets

import sqlalchemy as sa
from sqlalchemy import orm

from fkod.core import audit
from fkod.core.auth.accounts import find_platform_user, issue_login_token
from fkod.core.auth.models import PLATFORM_NAMESPACE, Partner, PartnerMember, User
from fkod.core.auth.roles import role_permits
from fkod.core.auth.security import BLOCKED_PARTNER_STATUSES, check_user
from fkod.core.db import utcnow
from fkod.core.errors import Conflict, Forbidden, NotFound, ValidationFailed, field_error
from fkod.core.ids import public_id
from fkod.core.mail import send_after_commit
from fkod.partners.models import PartnerInvitation

log = logging.getLogger(__name__)

OWNER = "owner"
# Pending invitations one partner may have at once, which bounds the mail it can send.
MAX_PENDING_INVITATIONS = 100
_TOKEN = re.compile(r"[A-Za-z0-9_-]{32,128}")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def lock_partner(request) -> Partner:
    """Lock the caller's partner row until the transaction ends, and return it fresh."""
    return request.dbsession.scalar(
        sa.select(Partner).where(Partner.id == request.partner.id).with_for_update()
        .execution_options(populate_existing=True))


def _owner_count(session, partner_id: int) -> int:
    return session.scalar(sa.select(sa.func.count()).select_from(PartnerMember).where(
        PartnerMember.partner_id == partner_id, PartnerMember.role == OWNER))


def require_owner(request, message: str) -> None:
    if request.principal.role != OWNER:
        raise Forbidden(message, code="owner_required")


def _last_owner() -> Conflict:
    return Conflict("The partner must keep at least one owner; make another member owner "
                    "first.", code="last_owner")


# Members --------------------------------------------------------------------------------


def members_query(partner: Partner):
    return (sa.select(PartnerMember).options(orm.joinedload(PartnerMember.user))
            .where(PartnerMember.partner_id == partner.id))


def get_member(request, user_id: int) -> PartnerMember:
    """Return the membership of ``user_id`` in the caller's partner; any other id is a 404."""
    member = request.dbsession.scalar(
        members_query(request.partner).where(PartnerMember.user_id == user_id))
    if member is None:
        raise NotFound(f"No member with id user_{user_id}.")
    return member


def _replace_primary_owner(session, partner: Partner, leaving_user_id: int) -> None:
    """Point ``Partner.user_id`` at the longest-standing owner other than the one leaving."""
    if partner.user_id != leaving_user_id:
        return
    partner.user_id = session.scalar(
        sa.select(PartnerMember.user_id)
        .where(PartnerMember.partner_id == partner.id, PartnerMember.role == OWNER,
               PartnerMember.user_id != leaving_user_id)
        .order_by(PartnerMember.id).limit(1))


def change_role(request, user_id: int, role: str) -> PartnerMember:
    partner = lock_partner(request)
    member = get_member(request, user_id)
    if member.role == role:
        return member
    if OWNER in (member.role, role):
        require_owner(request, "Only an owner can grant or take away the owner role.")
    if member.role == OWNER and _owner_count(request.dbsession, partner.id) <= 1:
        raise _last_owner()

    previous = member.role
    member.role = role
    if previous == OWNER:
        request.dbsession.flush()
        _replace_primary_owner(request.dbsession, partner, member.user_id)
    audit.record(request, "member.role_changed", partner_id=partner.id, target_type="user",
                 target_id=public_id("user", member.user_id),
                 details={"from": previous, "to": role})
    log.info("member role changed", extra={"partner_id": partner.id, "user_id": member.user_id,
                                           "role": role, "actor_id": request.user.id})
    return member


def remove_member(request, user_id: int) -> None:
    """Remove a member; their login tokens stop working for this partner at once."""
    partner = lock_partner(request)
    member = get_member(request, user_id)
    leaving = member.user_id == request.user.id
    if not leaving and not role_permits(request.principal.role, "members:write"):
        raise Forbidden(f"The {request.principal.role} role does not grant the permission "
                        "members:write, which removing another member needs.",
                        code="missing_permission")
    if member.role == OWNER and not leaving:
        require_owner(request, "Only an owner can remove an owner.")
    if member.role == OWNER and _owner_count(request.dbsession, partner.id) <= 1:
        raise _last_owner()

    removed_user_id, removed_role = member.user_id, member.role
    request.dbsession.delete(member)
    request.dbsession.flush()
    _replace_primary_owner(request.dbsession, partner, removed_user_id)
    audit.record(request, "member.left" if leaving else "member.removed", partner_id=partner.id,
                 target_type="user", target_id=public_id("user", removed_user_id),
                 details={"role": removed_role})
    log.info("member removed", extra={"partner_id": partner.id, "user_id": removed_user_id,
                                      "actor_id": request.user.id, "left": leaving})


# Invitations ------------------------------------------------------------------------------


def invitation_status(invitation: PartnerInvitation, now: dt.datetime | None = None) -> str:
    if invitation.accepted_at is not None:
        return "accepted"
    if invitation.revoked_at is not None:
        return "revoked"
    if invitation.expires_at <= (now or utcnow()):
        return "expired"
    return "pending"


def _pending(now: dt.datetime):
    return sa.and_(PartnerInvitation.accepted_at.is_(None), PartnerInvitation.revoked_at.is_(None),
                   PartnerInvitation.expires_at > now)


def invitations_query(partner: Partner, status: str | None):
    select = sa.select(PartnerInvitation).where(PartnerInvitation.partner_id == partner.id)
    now = utcnow()
    conditions = {
        "pending": _pending(now),
        "accepted": PartnerInvitation.accepted_at.is_not(None),
        "revoked": PartnerInvitation.revoked_at.is_not(None),
        "expired": sa.and_(PartnerInvitation.accepted_at.is_(None),
                           PartnerInvitation.revoked_at.is_(None),
                           PartnerInvitation.expires_at <= now),
    }
    if status is not None:
        select = select.where(conditions[status])
    return select


def get_invitation(request, invitation_id: int) -> PartnerInvitation:
    invitation = request.dbsession.scalar(
        invitations_query(request.partner, None).where(PartnerInvitation.id == invitation_id))
    if invitation is None:
        raise NotFound(f"No invitation with id inv_{invitation_id}.")
    return invitation


def _accept_link(request, token: str) -> str:
    base = request.registry.settings["fkod.auth.account_link_base_url"].rstrip("/")
    return f"{base}/invitations/accept?token={token}"


def _mail_invitation(request, partner: Partner, invitation: PartnerInvitation,
                     token: str) -> None:
    inviter = request.user.name or request.user.email
    days = max(1, round((invitation.expires_at - utcnow()).total_seconds() / 86400))
    send_after_commit(
        request, to=invitation.email,
        subject=f"Join {partner.company_name} on F-KOD",
        body=(f"{inviter} invited you to join {partner.company_name} on the F-KOD Partner "
              f"Platform as {invitation.role.replace('_', ' ')}.\n\n"
              f"Accept the invitation here within {days} days:\n{_accept_link(request, token)}"
              "\n\nIf you did not expect this invitation, ignore this message."),
    )


def invite(request, email: str, role: str) -> PartnerInvitation:
    """Create an invitation and mail its link; a pending one for the same email is replaced."""
    if role == OWNER:
        require_owner(request, "Only an owner can invite another owner.")
    partner = lock_partner(request)
    session = request.dbsession
    now = utcnow()

    already_member = session.scalar(
        sa.select(PartnerMember.id).join(User, User.id == PartnerMember.user_id)
        .where(PartnerMember.partner_id == partner.id,
               User.email_namespace == PLATFORM_NAMESPACE, User.email == email))
    if already_member is not None:
        raise Conflict(f"{email} is already a member of this partner.", code="already_member",
                       errors=[field_error("body", "email", "already a member")])

    replaced = session.scalars(
        invitations_query(partner, "pending").where(PartnerInvitation.email == email)).all()
    for old in replaced:
        old.revoked_at = now
    pending = session.scalar(
        sa.select(sa.func.count()).select_from(PartnerInvitation)
        .where(PartnerInvitation.partner_id == partner.id, _pending(now)))
    if pending - len(replaced) >= MAX_PENDING_INVITATIONS:
        raise Conflict(f"The partner has {MAX_PENDING_INVITATIONS} pending invitations; revoke "
                       "some before inviting more.", code="too_many_invitations")

    token = secrets.token_urlsafe(32)
    ttl = request.registry.settings["fkod.partners.invitation_ttl_seconds"]
    invitation = PartnerInvitation(
        partner_id=partner.id, email=email, role=role, token_hash=hash_token(token),
        invited_by_user_id=request.user.id, expires_at=now + dt.timedelta(seconds=ttl))
    session.add(invitation)
    session.flush()

    _mail_invitation(request, partner, invitation, token)
    audit.record(request, "member.invited", partner_id=partner.id, target_type="invitation",
                 target_id=public_id("inv", invitation.id),
                 details={"email": email, "role": role,
                          "replaced": [public_id("inv", old.id) for old in replaced]})
    log.info("member invited", extra={"partner_id": partner.id, "invitation_id": invitation.id,
                                      "actor_id": request.user.id})
    return invitation


def revoke_invitation(request, invitation_id: int) -> PartnerInvitation:
    """Revoke a pending or expired invitation; revoking it again changes nothing."""
    partner = lock_partner(request)
    invitation = get_invitation(request, invitation_id)
    if invitation.accepted_at is not None:
        raise Conflict("The invitation was already accepted; remove the member instead.",
                       code="invitation_accepted")
    if invitation.revoked_at is None:
        invitation.revoked_at = utcnow()
        audit.record(request, "member.invitation_revoked", partner_id=partner.id,
                     target_type="invitation", target_id=public_id("inv", invitation.id),
                     details={"email": invitation.email, "role": invitation.role})
        log.info("invitation revoked", extra={"partner_id": partner.id,
                                              "invitation_id": invitation.id})
    return invitation


# Accepting ---------------------------------------------------------------------------------


def _unusable(code: str, message: str) -> ValidationFailed:
    return ValidationFailed(message, code=code,
                            errors=[field_error("path", "token", message)])


def _find_invitation(session, token: str) -> PartnerInvitation:
    """Return the invitation a token names, locked; 404 or 400 when it cannot be used."""
    not_found = NotFound("No invitation matches this token; ask for a new invitation.",
                         code="invitation_not_found")
    if _TOKEN.fullmatch(token) is None:
        raise not_found
    invitation = session.scalar(
        sa.select(PartnerInvitation).where(PartnerInvitation.token_hash == hash_token(token))
        .with_for_update())
    if invitation is None:
        raise not_found
    if invitation.accepted_at is not None:
        raise _unusable("invitation_used", "The invitation was already accepted; log in "
                                           "instead.")
    if invitation.revoked_at is not None:
        raise _unusable("invitation_revoked", "The invitation was revoked; ask the partner "
                                              "for a new one.")
    if invitation.expires_at <= utcnow():
        raise _unusable("invitation_expired", "The invitation has expired; ask the partner "
                                              "for a new one.")
    return invitation


def _user_from_login_token(request, invitation: PartnerInvitation) -> User:
    check_user(request, request.operation)
    return _require_invited_user(request.user, invitation)


def _require_invited_user(user: User, invitation: PartnerInvitation) -> User:
    if user.email_namespace != PLATFORM_NAMESPACE or user.email != invitation.email:
        raise Forbidden("The invitation was sent to another email address than this account's; "
                        "log in as the invited account.", code="invitation_email_mismatch")
    return user


def _create_invited_user(request, invitation: PartnerInvitation, name: str,
                         password: str) -> User:
    session = request.dbsession
    if find_platform_user(session, invitation.email) is not None:
        raise Conflict("An account with the invited email already exists; log in and accept "
                       "with its login token.", code="account_exists")
    user = User(email=invitation.email, name=name, email_namespace=PLATFORM_NAMESPACE,
                password_hash=request.registry["password_hasher"].hash(password),
                email_verified_at=utcnow(), livemode=True)
    session.add(user)
    session.flush()
    return user


def accept_invitation(request, token: str, data: dict, *,
                      signed_in_user: User | None = None) -> dict:
    """Add the caller (or a new account) to the invitation's partner; return a login token.

    ``signed_in_user`` is the portal session's user, who accepts as the login
    token's user does.
    """
    session = request.dbsession
    invitation = _find_invitation(session, token)
    partner = session.get(Partner, invitation.partner_id)
    if partner.deleted_at is not None:
        raise _unusable("invitation_revoked", "The partner no longer exists.")
    if partner.status in BLOCKED_PARTNER_STATUSES:
        raise Forbidden(f"The partner account is {partner.status}.", code="partner_suspended")

    if signed_in_user is not None:
        user = _require_invited_user(signed_in_user, invitation)
        if user.email_verified_at is None:
            user.email_verified_at = utcnow()
    elif "Authorization" in request.headers:
        if data:
            raise ValidationFailed(
                "Send either a login token or a name and password, not both.",
                errors=[field_error("body", name, "not allowed with a login token")
                        for name in data])
        user = _user_from_login_token(request, invitation)
        if user.email_verified_at is None:
            user.email_verified_at = utcnow()
    elif not data:
        raise ValidationFailed(
            "Send a login token of the invited account, or name and password to create it.",
            errors=[field_error("body", "name", "required without a login token"),
                    field_error("body", "password", "required without a login token")])
    else:
        user = _create_invited_user(request, invitation, data["name"], data["password"])

    exists = session.scalar(sa.select(PartnerMember.id).where(
        PartnerMember.partner_id == partner.id, PartnerMember.user_id == user.id))
    if exists is not None:
        raise Conflict("The account is already a member of this partner.",
                       code="already_member")
    member = PartnerMember(partner_id=partner.id, user_id=user.id, role=invitation.role)
    session.add(member)
    invitation.accepted_at = utcnow()
    invitation.accepted_by_user_id = user.id
    try:
        session.flush()
    except sa.exc.IntegrityError:
        # The same account accepted two invitations to this partner at once.
        raise Conflict("The account is already a member of this partner.",
                       code="already_member") from None

    request.user = user
    audit.record(request, "member.joined", partner_id=partner.id, target_type="user",
                 target_id=public_id("user", user.id),
                 details={"invitation_id": public_id("inv", invitation.id),
                          "role": invitation.role})
    log.info("invitation accepted", extra={"partner_id": partner.id, "user_id": user.id,
                                           "invitation_id": invitation.id})
    result = issue_login_token(request, user, (member, partner))
    result["company_name"] = partner.company_name
    return result
