"""Mailed tokens: password reset and email verification, and the email change they confirm.

Tokens are 256-bit random strings. Only their SHA-256 is stored, each works
once and expires after a setting (``fkod.auth.password_reset_ttl_seconds``,
``fkod.auth.email_verification_ttl_seconds``). One account gets at most
``fkod.auth.account_mails_per_hour`` of these mails, and a request beyond
that is accepted but sends nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import secrets

import sqlalchemy as sa

from fkod.core.auth.accounts import (
    check_password,
    find_platform_user,
    record_account_action,
    set_password,
)
from fkod.core.auth.models import PLATFORM_NAMESPACE, User, UserToken
from fkod.core.auth.security import hit_limits
from fkod.core.db import utcnow
from fkod.core.errors import Conflict, ValidationFailed, field_error
from fkod.core.mail import send_after_commit
from fkod.core.ratelimit import LimitCheck

log = logging.getLogger(__name__)

PASSWORD_RESET = "password_reset"  # noqa: S105 - a token purpose, not a password
EMAIL_VERIFICATION = "email_verification"


def hash_token(token: str) -> str:
    """Return the SHA-256 hex digest under which a mailed token is stored."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _account_mail_allowed(request, user: User) -> bool:
    """Count one account mail; False when the account has had its hourly share."""
    limit = request.registry.settings["fkod.auth.account_mails_per_hour"]
    decision = hit_limits(request, [LimitCheck(f"account-mail:user:{user.id}", limit, 3600)])
    if decision is not None and not decision.allowed:
        log.info("account mail not sent: hourly limit reached", extra={"user_id": user.id})
        return False
    return True


def _issue_user_token(request, user: User, purpose: str, email: str, ttl_seconds: int) -> str:
    token = secrets.token_urlsafe(32)
    request.dbsession.add(UserToken(
        user_id=user.id, purpose=purpose, token_hash=hash_token(token), email=email,
        expires_at=utcnow() + dt.timedelta(seconds=ttl_seconds)))
    return token


def _duration_text(seconds: int) -> str:
    if seconds < 2 * 3600:
        return f"{seconds // 60} minutes"
    return f"{seconds // 3600} hours"


def _link(request, path: str, token: str) -> str:
    base = request.registry.settings["fkod.auth.account_link_base_url"].rstrip("/")
    return f"{base}{path}?token={token}"


def _invalid_token() -> ValidationFailed:
    return ValidationFailed(
        "The token is invalid, expired or already used; ask for a new one.",
        code="invalid_token",
        errors=[field_error("body", "token", "invalid, expired or already used")],
    )


def _use_token(request, token: str, purpose: str) -> tuple[UserToken, User]:
    """Mark a mailed token used and return it with its user; 400 ``invalid_token`` otherwise."""
    session = request.dbsession
    row = session.execute(
        sa.select(UserToken, User).join(User, User.id == UserToken.user_id)
        .where(UserToken.token_hash == hash_token(token), UserToken.purpose == purpose)
    ).one_or_none()
    now = utcnow()
    if row is None or row.UserToken.used_at is not None or row.UserToken.expires_at <= now \
            or row.User.status != "active":
        raise _invalid_token()

    # A conditional update, so two requests racing with one token cannot both use it.
    used = session.execute(
        sa.update(UserToken)
        .where(UserToken.id == row.UserToken.id, UserToken.used_at.is_(None))
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    if used.rowcount != 1:
        raise _invalid_token()
    return row.UserToken, row.User


def request_password_reset(request, email: str) -> None:
    """Mail a reset link when an active account has this email; do nothing visible otherwise."""
    # NOTE: the response is the same either way, but a known address costs one
    # insert and one limiter call more, a difference of a few milliseconds.
    user = find_platform_user(request.dbsession, email.strip().lower())
    if user is None or user.status != "active":
        log.info("password reset requested for no account")
        return
    if not _account_mail_allowed(request, user):
        return
    ttl = request.registry.settings["fkod.auth.password_reset_ttl_seconds"]
    token = _issue_user_token(request, user, PASSWORD_RESET, user.email, ttl)
    send_after_commit(
        request, to=user.email, subject="Reset your F-KOD password",
        body=(f"Someone asked to reset the password of your F-KOD account.\n\n"
              f"Choose a new password here: {_link(request, '/password-reset', token)}\n\n"
              f"Or send the token to POST /api/auth/password-reset/confirm: {token}\n\n"
              f"The link works once, for {_duration_text(ttl)}. If you did not ask for it, "
              f"ignore this message and your password stays as it is."),
    )
    record_account_action(request, "auth.password_reset_requested", user)
    log.info("password reset mailed", extra={"user_id": user.id})


def confirm_password_reset(request, *, token: str, new_password: str) -> None:
    """Set the password from a reset token and end every session of the account."""
    user_token, user = _use_token(request, token, PASSWORD_RESET)
    if user_token.email != user.email:
        # The account's email changed after the link was mailed to the old one.
        raise _invalid_token()
    request.user = user
    set_password(request, user, new_password)
    if user.email_verified_at is None:
        # Following the mailed link proves the address is the user's.
        user.email_verified_at = utcnow()
    record_account_action(request, "auth.password_reset", user)
    log.info("password reset", extra={"user_id": user.id})


def send_email_verification(request, user: User, email: str) -> bool:
    """Mail a verification link for ``email`` (the current or a pending address).

    Returns False when the account's hourly mail limit held it back.
    """
    if not _account_mail_allowed(request, user):
        return False
    ttl = request.registry.settings["fkod.auth.email_verification_ttl_seconds"]
    token = _issue_user_token(request, user, EMAIL_VERIFICATION, email, ttl)
    send_after_commit(
        request, to=email, subject="Verify your email address for F-KOD",
        body=(f"Confirm that this address belongs to your F-KOD account: "
              f"{_link(request, '/verify-email', token)}\n\n"
              f"Or send the token to POST /api/auth/email/verify: {token}\n\n"
              f"The link works once, for {_duration_text(ttl)}. If you did not sign up or "
              f"change your email, ignore this message."),
    )
    return True


def _email_taken(session, email: str, user_id: int) -> bool:
    owner = session.scalar(sa.select(User.id).where(
        User.email_namespace == PLATFORM_NAMESPACE, User.email == email))
    return owner is not None and owner != user_id


def _email_taken_error() -> Conflict:
    return Conflict("Another account uses this email.", code="email_taken",
                    errors=[field_error("body", "email", "already registered")])


def verify_email(request, token: str) -> User:
    """Mark the mailed address verified, and make a pending address the account's email."""
    user_token, user = _use_token(request, token, EMAIL_VERIFICATION)
    request.user = user
    now = utcnow()
    if user_token.email == user.email:
        user.email_verified_at = user.email_verified_at or now
        record_account_action(request, "auth.email_verified", user)
        log.info("email verified", extra={"user_id": user.id})
        return user
    if user_token.email != user.pending_email:
        # A newer change replaced the address this link was mailed to.
        raise _invalid_token()
    if _email_taken(request.dbsession, user.pending_email, user.id):
        raise _email_taken_error()

    old_email = user.email
    user.email = user.pending_email
    user.pending_email = None
    user.email_verified_at = now
    try:
        request.dbsession.flush()
    except sa.exc.IntegrityError:
        # Another account took the address between the check and the update.
        raise _email_taken_error() from None
    send_after_commit(
        request, to=old_email, subject="Your F-KOD email address was changed",
        body=(f"The email address of your F-KOD account is now {user.email}. If you did not "
              f"make this change, contact support."),
    )
    record_account_action(request, "auth.email_changed", user)
    log.info("email changed", extra={"user_id": user.id})
    return user


def resend_email_verification(request) -> str:
    """Mail a new verification link to the pending or unverified address; return that address."""
    user = request.user
    if user.pending_email is not None:
        target = user.pending_email
    elif user.email_verified_at is None:
        target = user.email
    else:
        raise Conflict("The email address is already verified.", code="email_already_verified")
    send_email_verification(request, user, target)
    return target


def request_email_change(request, *, email: str, password: str) -> User:
    """Keep ``email`` as the pending address and mail it a verification link."""
    user = request.user
    check_password(request, user, password, "password")
    email = email.strip().lower()
    if email == user.email:
        raise ValidationFailed("This is already the account's email.",
                               errors=[field_error("body", "email", "same as the current email")])
    if _email_taken(request.dbsession, email, user.id):
        raise _email_taken_error()
    user.pending_email = email
    send_email_verification(request, user, email)
    record_account_action(request, "auth.email_change_requested", user)
    log.info("email change requested", extra={"user_id": user.id})
    return user
