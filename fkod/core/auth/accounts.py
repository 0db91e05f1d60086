"""Account safety: login with an optional second factor, logout, passwords, email, TOTP.

Views in :mod:`fkod.core.auth.views` and :mod:`fkod.core.auth.account_views`
validate the input and call one function here or in
:mod:`fkod.core.auth.account_mail` (password reset, email verification).
Functions that act on the caller's own account read ``request.user`` and
``request.login_claims``, which the login-token check sets.

A failed login, and a wrong current password given to change the password,
the email or the second factor, count toward one limit per account, so a
password cannot be guessed from many addresses at once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from fkod.core import audit
from fkod.core.auth import totp
from fkod.core.auth.models import (
    PLATFORM_NAMESPACE,
    Partner,
    PartnerMember,
    RevokedToken,
    User,
    UserToken,
)
from fkod.core.auth.roles import ROLE_PERMISSIONS
from fkod.core.auth.security import to_unix_seconds
from fkod.core.db import run_in_transaction, utcnow
from fkod.core.errors import (
    ApiError,
    Conflict,
    RateLimited,
    Unauthorized,
    ValidationFailed,
    field_error,
)
from fkod.core.ids import try_parse_id
from fkod.core.mail import send_after_commit
from fkod.core.ratelimit import LimitCheck, RateLimiterUnavailable

log = logging.getLogger(__name__)


def revocation_moment() -> dt.datetime:
    """Return now rounded up to a whole second, the value ``tokens_valid_after`` takes.

    Token ``iat`` claims are whole seconds, so rounding up refuses every token
    issued before now, including earlier in the current second.
    """
    now = utcnow()
    whole = now.replace(microsecond=0)
    return whole + dt.timedelta(seconds=1) if now.microsecond else whole


def find_platform_user(session, email: str) -> User | None:
    return session.scalar(sa.select(User).where(
        User.email_namespace == PLATFORM_NAMESPACE, User.email == email))


def find_membership(session, user_id: int, partner_id: int | None = None):
    """Return ``(PartnerMember, Partner)`` of the user's first or given live partner, or None."""
    query = (
        sa.select(PartnerMember, Partner)
        .join(Partner, Partner.id == PartnerMember.partner_id)
        .where(PartnerMember.user_id == user_id, Partner.deleted_at.is_(None))
        .order_by(PartnerMember.id)
    )
    if partner_id is not None:
        query = query.where(PartnerMember.partner_id == partner_id)
    return session.execute(query.limit(1)).first()


def _token_partner_id(request) -> int | None:
    claims = getattr(request, "login_claims", None) or {}
    return try_parse_id("partner", claims.get("partner_id"))


def _audit_partner_id(request, user: User) -> int | None:
    """Return the partner an account action is audited under: the token's, else the first."""
    partner_id = _token_partner_id(request)
    if partner_id is not None:
        return partner_id
    row = find_membership(request.dbsession, user.id)
    return row[1].id if row is not None else None


def record_account_action(request, action: str, user: User, details: dict | None = None) -> None:
    """Audit an action on ``user``'s account under the token's partner, else the first one."""
    audit.record(request, action, partner_id=_audit_partner_id(request, user),
                 target_type="user", target_id=f"user_{user.id}", details=details)


# Login ------------------------------------------------------------------------------


def _login_failure_check(request, email: str) -> LimitCheck:
    settings = request.registry.settings
    # Hashed, so the limiter's store contains no email addresses.
    digest = hashlib.sha256(email.encode("utf-8")).hexdigest()[:32]
    return LimitCheck(f"login-failures:{digest}", settings["fkod.auth.login_failures_per_account"],
                      settings["fkod.auth.login_failure_window_seconds"])


def check_login_allowed(request, email: str) -> None:
    """Raise 429 when the account has used up its failed logins in the window."""
    check = _login_failure_check(request, email)
    try:
        decision = request.registry["rate_limiter"].peek([check])
    except RateLimiterUnavailable:
        # NOTE: while the limiter is unavailable, failed logins are neither
        # counted nor limited, and only the cost of argon2 slows guessing.
        return
    if not decision.allowed:
        log.info("login rate limited for an account", extra={"retry_after": decision.retry_after})
        raise RateLimited(
            "Too many failed logins for this account; retry in "
            f"{decision.retry_after} seconds or reset the password.",
            code="too_many_failed_logins", retry_after=decision.retry_after,
        )


def count_login_failure(request, email: str) -> None:
    try:
        request.registry["rate_limiter"].hit([_login_failure_check(request, email)])
    except RateLimiterUnavailable:
        pass


def forget_login_failures(request, email: str) -> None:
    try:
        request.registry["rate_limiter"].reset(_login_failure_check(request, email).subject)
    except RateLimiterUnavailable:
        pass


def _invalid_credentials() -> Unauthorized:
    # The same response whether the email is unknown, the password or the code is wrong.
    return Unauthorized("The email, password or authentication code is incorrect.",
                        code="invalid_credentials")


def log_in(request, *, email: str, password: str, totp_code: str | None,
           partner_id: int | None) -> dict | ApiError:
    """Check the credentials and return the login response, or the error to respond with.

    A failure is returned rather than raised, so the transaction still commits
    its audit entry. A missing code for an account with TOTP is ``totp_required``
    and does not count as a failed login, because the password was right.
    """
    email = email.strip().lower()
    check_login_allowed(request, email)
    user = find_platform_user(request.dbsession, email)
    passwords = request.registry["password_hasher"]
    password_ok = passwords.verify(user.password_hash if user else None, password)
    if user is None or not password_ok or user.status != "active":
        reason = "unknown_email" if user is None else (
            "wrong_password" if not password_ok else f"user_{user.status}")
        return _login_failed(request, email, user, reason, partner_id)

    if user.totp_enabled_at is not None:
        if totp_code is None:
            return Unauthorized("This account has two-factor authentication on: send "
                                "totp_code with the current code from the authenticator app.",
                                code="totp_required",
                                errors=[field_error("body", "totp_code", "required")])
        step = totp.matching_step(_totp_secret(request, user), totp_code,
                                  last_step=user.totp_last_step)
        if step is None:
            return _login_failed(request, email, user, "wrong_totp_code", partner_id)
        user.totp_last_step = step

    if passwords.needs_rehash(user.password_hash):
        user.password_hash = passwords.hash(password)
    membership = find_membership(request.dbsession, user.id, partner_id)
    if partner_id is not None and membership is None:
        return Unauthorized("The user is not a member of that partner.", code="not_a_member")

    forget_login_failures(request, email)
    request.user = user
    response = issue_login_token(request, user, membership)
    audit.record(request, "auth.login", partner_id=try_parse_id("partner", response["partner_id"]),
                 target_type="user", target_id=f"user_{user.id}")
    log.info("login", extra={"user_id": user.id, "partner_id": response["partner_id"]})
    return response


def _login_failed(request, email: str, user: User | None, reason: str,
                  partner_id: int | None) -> ApiError:
    count_login_failure(request, email)
    log.info("login failed", extra={"reason": reason,
                                    "user_id": user.id if user is not None else None})
    if user is not None:
        # Audited under the partner named in the request, else the user's first one.
        membership = find_membership(request.dbsession, user.id, partner_id) \
            or find_membership(request.dbsession, user.id)
        audit.record(request, "auth.login_failed",
                     partner_id=membership[1].id if membership is not None else None,
                     target_type="user", target_id=f"user_{user.id}",
                     details={"reason": reason})
    return _invalid_credentials()


def issue_login_token(request, user: User, membership=None) -> dict:
    """Sign a login token for ``user``, acting for the partner of ``membership`` if given."""
    claims = {"sub": f"user_{user.id}", "email": user.email, "scopes": []}
    if membership is not None:
        member, partner = membership
        claims.update(
            partner_id=f"partner_{partner.id}", role=member.role, company=partner.company_name,
            scopes=sorted(ROLE_PERMISSIONS.get(member.role, ())),
        )
    min_issued_at = None
    if user.tokens_valid_after is not None:
        min_issued_at = to_unix_seconds(user.tokens_valid_after)
    token, ttl = request.registry["token_signer"].issue(claims, min_issued_at=min_issued_at)
    return {
        "access_token": token, "token_type": "Bearer", "expires_in": ttl,
        "user_id": claims["sub"], "partner_id": claims.get("partner_id"),
        "role": claims.get("role"),
    }


# Logout and passwords -------------------------------------------------------------


def log_out(request, *, everywhere: bool) -> None:
    """Revoke the caller's token, or with ``everywhere`` every token issued until now."""
    user = request.user
    claims = request.login_claims
    if everywhere:
        user.tokens_valid_after = revocation_moment()
    else:
        expires_at = dt.datetime.fromtimestamp(int(claims["exp"]), dt.UTC).replace(tzinfo=None)
        _revoke_jti(request.dbsession, claims["jti"], expires_at)
    record_account_action(request, "auth.logout", user, details={"everywhere": everywhere})
    log.info("logout", extra={"user_id": user.id, "everywhere": everywhere})


def _revoke_jti(session, jti: str, expires_at: dt.datetime) -> None:
    # ON CONFLICT DO NOTHING, because two logouts racing with one token would
    # otherwise both insert the row and the later commit would fail.
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(insert(RevokedToken).values(jti=jti, expires_at=expires_at)
                    .on_conflict_do_nothing(index_elements=["jti"]))


def create_platform_user(request, *, email: str, password: str, name: str | None) -> User:
    """Add a user of the platform (a partner member or a customer); 409 if the email is taken."""
    session = request.dbsession
    if find_platform_user(session, email) is not None:
        raise Conflict("An account with this email already exists; log in instead.",
                       code="email_taken",
                       errors=[field_error("body", "email", "already registered")])
    user = User(email=email, name=name, password_hash=request.registry["password_hasher"].hash(
        password), email_namespace=PLATFORM_NAMESPACE, livemode=True)
    session.add(user)
    try:
        session.flush()
    except sa.exc.IntegrityError:
        # Two sign-ups with one email raced past the check above.
        raise Conflict("An account with this email already exists; log in instead.",
                       code="email_taken") from None
    return user


def check_password(request, user: User, password: str, field: str) -> None:
    """Raise 400 naming ``field`` when ``password`` is not the user's; counts as a failed login."""
    check_login_allowed(request, user.email)
    if not request.registry["password_hasher"].verify(user.password_hash, password):
        count_login_failure(request, user.email)
        raise ValidationFailed("The password is incorrect.", code="invalid_password",
                               errors=[field_error("body", field, "incorrect password")])


def set_password(request, user: User, new_password: str) -> None:
    now = utcnow()
    user.password_hash = request.registry["password_hasher"].hash(new_password)
    user.password_changed_at = now
    user.tokens_valid_after = revocation_moment()
    # Reset links mailed before this change must not set another password later.
    request.dbsession.execute(
        sa.update(UserToken)
        .where(UserToken.user_id == user.id, UserToken.purpose == "password_reset",
               UserToken.used_at.is_(None))
        .values(used_at=now)
        .execution_options(synchronize_session=False))
    send_after_commit(
        request, to=user.email, subject="Your F-KOD password was changed",
        body=("The password of your F-KOD account was changed, and every session that "
              "was logged in has been logged out.\n\nIf you did not do this, reset your "
              "password now and contact support."),
    )


def change_password(request, *, current_password: str, new_password: str) -> dict:
    """Set a new password, end every other session and return a fresh login token."""
    user = request.user
    check_password(request, user, current_password, "current_password")
    set_password(request, user, new_password)
    record_account_action(request, "auth.password_changed", user)
    log.info("password changed", extra={"user_id": user.id})
    membership = None
    partner_id = _token_partner_id(request)
    if partner_id is not None:
        membership = find_membership(request.dbsession, user.id, partner_id)
    return issue_login_token(request, user, membership)


# Two-factor authentication ------------------------------------------------------------


def _totp_secret(request, user: User) -> str:
    return request.registry["webhook_vault"].decrypt(user.totp_secret)


def _check_totp(request, user: User, code: str) -> None:
    """Accept ``code`` once for ``user``'s secret, or raise 400 naming the field ``code``."""
    step = totp.matching_step(_totp_secret(request, user), code, last_step=user.totp_last_step)
    if step is None:
        raise ValidationFailed(
            "The authentication code is wrong, expired or already used; wait for the next one.",
            code="invalid_totp_code",
            errors=[field_error("body", "code", "wrong, expired or already used")])
    user.totp_last_step = step


def start_totp_setup(request) -> dict:
    """Store a new, not yet enabled secret and return it with its ``otpauth://`` URI."""
    user = request.user
    if user.totp_enabled_at is not None:
        raise Conflict("Two-factor authentication is already on; disable it first to set up "
                       "a new authenticator.", code="totp_already_enabled")
    secret = totp.new_secret()
    user.totp_secret = request.registry["webhook_vault"].encrypt(secret)
    user.totp_last_step = None
    record_account_action(request, "auth.totp_setup_started", user)
    issuer = request.registry.settings["fkod.auth.totp_issuer"]
    return {"secret": secret,
            "otpauth_uri": totp.provisioning_uri(secret, account=user.email, issuer=issuer)}


def enable_totp(request, *, password: str, code: str) -> User:
    """Turn the second factor on once a code proves the authenticator has the secret.

    The password is asked again, so a stolen session alone cannot lock the
    owner out of the account.
    """
    user = request.user
    if user.totp_enabled_at is not None:
        raise Conflict("Two-factor authentication is already on.", code="totp_already_enabled")
    if user.totp_secret is None:
        raise Conflict("Set up an authenticator first with POST /api/auth/totp/setup.",
                       code="totp_not_set_up")
    check_password(request, user, password, "password")
    _check_totp(request, user, code)
    user.totp_enabled_at = utcnow()
    record_account_action(request, "auth.totp_enabled", user)
    log.info("totp enabled", extra={"user_id": user.id})
    return user


def disable_totp(request, *, password: str, code: str) -> User:
    """Turn the second factor off; needs both the password and a current code."""
    user = request.user
    if user.totp_enabled_at is None:
        raise Conflict("Two-factor authentication is not on.", code="totp_not_enabled")
    check_password(request, user, password, "password")
    try:
        _check_totp(request, user, code)
    except ValidationFailed:
        count_login_failure(request, user.email)
        raise
    user.totp_secret = None
    user.totp_enabled_at = None
    user.totp_last_step = None
    record_account_action(request, "auth.totp_disabled", user)
    log.info("totp disabled", extra={"user_id": user.id})
    return user


# The caller's account ------------------------------------------------------------------


def account_summary(request, user: User | None = None) -> dict:
    """Return the user with verification and second-factor state and its memberships."""
    user = user or request.user
    rows = request.dbsession.execute(
        sa.select(PartnerMember, Partner)
        .join(Partner, Partner.id == PartnerMember.partner_id)
        .where(PartnerMember.user_id == user.id, Partner.deleted_at.is_(None))
        .order_by(PartnerMember.id)
    ).all()
    return {
        "id": user.id, "email": user.email, "name": user.name,
        "email_verified": user.email_verified_at is not None,
        "email_verified_at": user.email_verified_at, "pending_email": user.pending_email,
        "totp_enabled": user.totp_enabled_at is not None,
        "password_changed_at": user.password_changed_at, "created_at": user.created_at,
        "memberships": [
            {"partner_id": partner.id, "company_name": partner.company_name,
             "role": member.role, "partner_status": partner.status}
            for member, partner in rows
        ],
    }


def purge_expired_tokens(session_factory) -> None:
    """Delete revoked-token rows past their token's expiry and mailed tokens past theirs."""
    def work(session):
        now = utcnow()
        revoked = session.execute(sa.delete(RevokedToken).where(RevokedToken.expires_at <= now))
        mailed = session.execute(sa.delete(UserToken).where(UserToken.expires_at <= now))
        return revoked.rowcount, mailed.rowcount

    revoked, mailed = run_in_transaction(session_factory, work)
    if revoked or mailed:
        log.info("expired tokens purged", extra={"revoked_tokens": revoked, "user_tokens": mailed})
