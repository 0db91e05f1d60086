"""Resetting a partner's test-mode sandbox to its starting state.

A reset removes, in one transaction, what the partner created in test mode:

- users it created with test-mode credentials (``users.livemode`` false,
  ``created_by_partner_id`` the partner), with their tenancy rows,
  enrollments, mentor matches, mailed tokens and OAuth codes, tokens and
  consents;
- courses it created in test mode, and every enrollment in them;
- its test-mode mentor matches, for any user;
- the deliveries (and their attempts) of its test-mode webhook endpoints, and
  the test-mode events that were delivered only to those endpoints;
- after the commit, its test-mode rate-limit windows (plan, endpoint and the
  own windows of its test-mode keys).

It keeps the partner's API keys, webhook endpoints and OAuth applications,
every live-mode record, the raw usage records (metering history), other
partners' data and the shared synthetic catalog (courses and mentors without
a partner). Test-mode events that were never delivered to an endpoint carry
no partner, so they stay.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa

from fkod.core import audit
from fkod.core.auth.models import ApiKey, PartnerUser, User, UserToken
from fkod.core.auth.oauth_models import OAuthAuthorizationCode, OAuthConsent, OAuthToken
from fkod.core.errors import RateLimited, ServiceUnavailable
from fkod.core.ratelimit import LimitCheck, RateLimiterUnavailable
from fkod.core.ratelimit.policy import endpoint_check, partner_subject, policy_for
from fkod.core.webhooks.models import Event, Webhook, WebhookAttempt, WebhookEvent
from fkod.marketplace.models import IntegrationReaction
from fkod.plugins.learning.models import Course, Enrollment, MentorMatch

log = logging.getLogger(__name__)

RESET_WINDOW_SECONDS = 3600


def _delete(session, statement) -> int:
    return session.execute(statement.execution_options(synchronize_session=False)).rowcount


def _check_reset_limit(request, partner_id: int) -> None:
    """Count this reset; 429 past ``fkod.developers.sandbox_resets_per_hour``."""
    limit = request.registry.settings["fkod.developers.sandbox_resets_per_hour"]
    check = LimitCheck(f"sandbox-reset:partner:{partner_id}", limit, RESET_WINDOW_SECONDS)
    try:
        decision = request.registry["rate_limiter"].hit([check])
    except RateLimiterUnavailable:
        raise ServiceUnavailable("Rate limiting is unavailable, so the sandbox cannot be "
                                 "reset now; retry the request later.",
                                 code="rate_limiter_unavailable") from None
    if not decision.allowed:
        raise RateLimited(f"The sandbox can be reset at most {limit} times per hour; retry in "
                          f"{decision.retry_after} seconds.", retry_after=decision.retry_after)


def _delete_users(session, partner_id: int) -> tuple[int, int, int]:
    """Delete the partner's test users and the rows that refer to them.

    Returns the numbers of users, enrollments and mentor matches deleted.
    """
    users = sa.select(User.id).where(User.created_by_partner_id == partner_id,
                                     User.livemode.is_(False))
    user_ids = list(session.scalars(users))
    if not user_ids:
        return 0, 0, 0
    enrollments = _delete(session, sa.delete(Enrollment).where(Enrollment.user_id.in_(user_ids)))
    matches = _delete(session, sa.delete(MentorMatch).where(MentorMatch.user_id.in_(user_ids)))
    # Users created through the API have no password, so they cannot log in to
    # authorize an application. The OAuth rows are deleted in case one exists.
    for model in (PartnerUser, UserToken, OAuthAuthorizationCode, OAuthToken, OAuthConsent):
        _delete(session, sa.delete(model).where(model.user_id.in_(user_ids)))
    return _delete(session, sa.delete(User).where(User.id.in_(user_ids))), enrollments, matches


def _delete_courses(session, partner_id: int) -> tuple[int, int]:
    course_ids = list(session.scalars(sa.select(Course.id).where(
        Course.created_by_partner_id == partner_id, Course.livemode.is_(False))))
    if not course_ids:
        return 0, 0
    enrollments = _delete(session, sa.delete(Enrollment)
                          .where(Enrollment.course_id.in_(course_ids)))
    courses = _delete(session, sa.delete(Course).where(Course.id.in_(course_ids)))
    return courses, enrollments


def _delete_webhook_traffic(session, partner_id: int) -> tuple[int, int]:
    """Delete the deliveries of the partner's test endpoints and the events only they had."""
    endpoints = sa.select(Webhook.id).where(Webhook.partner_id == partner_id,
                                            Webhook.livemode.is_(False))
    delivery_ids = list(session.scalars(
        sa.select(WebhookEvent.id).where(WebhookEvent.webhook_id.in_(endpoints))))
    if not delivery_ids:
        return 0, 0
    event_ids = list(session.scalars(sa.select(WebhookEvent.event_id).distinct()
                                     .where(WebhookEvent.id.in_(delivery_ids))))
    _delete(session, sa.delete(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(delivery_ids)))
    deliveries = _delete(session, sa.delete(WebhookEvent).where(WebhookEvent.id.in_(delivery_ids)))
    still_used = sa.or_(
        sa.exists().where(WebhookEvent.event_id == Event.id),
        sa.exists().where(IntegrationReaction.event_id == Event.id),
    )
    events = _delete(session, sa.delete(Event).where(
        Event.id.in_(event_ids), Event.livemode.is_(False), sa.not_(still_used)))
    return deliveries, events


def _reset_counters_after_commit(request, partner_id: int) -> None:
    """Forget the test-mode rate-limit windows once the reset has committed."""
    limiter = request.registry["rate_limiter"]
    subject = partner_subject(partner_id, "test")
    subjects = [f"{subject}:hour", f"{subject}:day"]
    subjects += [endpoint_check(partner_id, "test", endpoint).subject
                 for endpoint in policy_for(request.registry).endpoint_limits.values()]
    subjects += [f"key:{key_id}" for key_id in request.dbsession.scalars(
        sa.select(ApiKey.id).where(ApiKey.partner_id == partner_id,
                                   ApiKey.livemode.is_(False)))]

    def reset(committed: bool) -> None:
        if not committed:
            return
        try:
            for name in subjects:
                limiter.reset(name)
        except RateLimiterUnavailable as exc:
            log.warning("sandbox rate-limit windows not reset", extra={
                "partner_id": partner_id, "error": str(exc)[:200]})

    request.tm.get().addAfterCommitHook(reset)


def reset_sandbox(request) -> dict:
    """Remove the partner's test-mode data as the module docstring lists; return the counts."""
    session = request.dbsession
    partner = request.partner
    _check_reset_limit(request, partner.id)

    courses, course_enrollments = _delete_courses(session, partner.id)
    matches = _delete(session, sa.delete(MentorMatch).where(
        MentorMatch.partner_id == partner.id, MentorMatch.livemode.is_(False)))
    users, user_enrollments, user_matches = _delete_users(session, partner.id)
    deliveries, events = _delete_webhook_traffic(session, partner.id)
    _reset_counters_after_commit(request, partner.id)

    removed = {
        "users": users,
        "courses": courses,
        "enrollments": course_enrollments + user_enrollments,
        "mentor_matches": matches + user_matches,
        "webhook_deliveries": deliveries,
        "events": events,
    }
    audit.record(request, "sandbox.reset", partner_id=partner.id, target_type="partner",
                 target_id=f"partner_{partner.id}", details={"removed": removed})
    log.info("sandbox reset", extra={"partner_id": partner.id, "user_id": request.user.id,
                                     **{f"removed_{name}": count
                                        for name, count in removed.items()}})
    return {"removed": removed}
