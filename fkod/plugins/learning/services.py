"""The F-KOD learning API's logic, with the tenancy rule applied to every read and write.

Tenancy: a partner's credentials see the users in its tenancy (rows of
``partner_users``) of the credential's mode; an OAuth token that acts for a
user sees only that user. Courses are a shared catalog:
F-KOD's live catalog in live mode and a synthetic sandbox catalog in test mode,
plus a partner's own courses of that mode, which only the owner writes.
Mentors likewise: real ones live, synthetic ones in test mode. Another
tenant's id is always a 404.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa

from fkod.core.auth.models import PartnerUser, User, partner_namespace
from fkod.core.db import utcnow
from fkod.core.errors import Conflict, Forbidden, NotFound, field_error
from fkod.core.webhooks.outbox import publish
from fkod.plugins.learning.models import Course, Enrollment, Mentor, MentorMatch
from fkod.plugins.learning.schemas import CourseSchema, MentorSchema, UserSchema

log = logging.getLogger(__name__)


def tenancy_partner_ids(session, user_id: int, livemode: bool) -> list[int]:
    """Return the partners that have a user in their tenancy, who receive events about it."""
    return list(session.scalars(sa.select(PartnerUser.partner_id).where(
        PartnerUser.user_id == user_id, PartnerUser.livemode.is_(livemode))))


def users_in_tenancy(principal):
    """Return a query of the users visible to the credential.

    An OAuth token that acts for a user (``principal.user_id`` set) sees that
    user alone, and only while the user is in the partner's tenancy.
    """
    select = (
        sa.select(User)
        .join(PartnerUser, PartnerUser.user_id == User.id)
        .where(PartnerUser.partner_id == principal.partner_id,
               PartnerUser.livemode.is_(principal.livemode))
    )
    user_id = getattr(principal, "user_id", None)
    if user_id is not None:
        select = select.where(User.id == user_id)
    return select


def get_user(session, principal, user_id: int, *, field: str | None = None) -> User:
    user = session.scalar(users_in_tenancy(principal).where(User.id == user_id))
    if user is None:
        errors = [field_error("body", field, "no such user in your tenancy")] if field else []
        raise NotFound(f"No user with id user_{user_id}.", errors=errors)
    return user


def create_user(request, data: dict) -> User:
    principal = request.principal
    session = request.dbsession
    namespace = partner_namespace(principal.partner_id, principal.livemode)
    if session.scalar(sa.select(User.id).where(User.email_namespace == namespace,
                                               User.email == data["email"])) is not None:
        raise Conflict("You already created a user with this email.", code="user_exists",
                       errors=[field_error("body", "email", "already used by one of your users")])

    user = User(email=data["email"], name=data.get("name"), archetype=data.get("archetype"),
                email_namespace=namespace, livemode=principal.livemode,
                created_by_partner_id=principal.partner_id)
    session.add(user)
    session.flush()
    session.add(PartnerUser(partner_id=principal.partner_id, user_id=user.id,
                            livemode=principal.livemode, source="created"))
    session.flush()
    publish(request, "user.created", UserSchema().dump(user), livemode=principal.livemode,
            partner_ids=tenancy_partner_ids(session, user.id, principal.livemode))
    log.info("user created", extra={"partner_id": principal.partner_id, "user_id": user.id})
    return user


def update_user(request, user_id: int, data: dict) -> User:
    principal = request.principal
    session = request.dbsession
    user = get_user(session, principal, user_id)
    if user.created_by_partner_id != principal.partner_id:
        raise Forbidden("Only the partner that created a user can change it.",
                        code="not_user_owner")
    if "email" in data and data["email"] != user.email:
        taken = session.scalar(sa.select(User.id).where(
            User.email_namespace == user.email_namespace, User.email == data["email"]))
        if taken is not None:
            raise Conflict("You already created a user with this email.", code="user_exists",
                           errors=[field_error("body", "email", "already used by one of your users")])

    changed = sorted(name for name, value in data.items() if getattr(user, name) != value)
    for name in changed:
        setattr(user, name, data[name])
    if changed:
        user.updated_at = utcnow()
        session.flush()
        payload = UserSchema().dump(user)
        payload["changed_fields"] = changed
        publish(request, "user.updated", payload, livemode=principal.livemode,
                partner_ids=tenancy_partner_ids(session, user.id, principal.livemode))
    return user


def visible_courses(principal):
    """F-KOD's catalog of the credential's mode (the sandbox in test mode) and its own courses."""
    catalog = Course.created_by_partner_id.is_(None)
    own = Course.created_by_partner_id == principal.partner_id
    return sa.select(Course).where(sa.or_(catalog, own),
                                   Course.livemode.is_(principal.livemode))


def visible_mentors(principal):
    """Active mentors of the credential's mode: real ones live, the synthetic sandbox in test."""
    return sa.select(Mentor).where(Mentor.status == "active",
                                   Mentor.livemode.is_(principal.livemode))


def get_course(session, principal, course_id: int) -> Course:
    course = session.scalar(visible_courses(principal).where(Course.id == course_id))
    if course is None:
        raise NotFound(f"No course with id course_{course_id}.")
    return course


def create_course(request, data: dict) -> Course:
    principal = request.principal
    course = Course(title=data["title"], description=data.get("description"),
                    level=data.get("level"), created_by_partner_id=principal.partner_id,
                    livemode=principal.livemode)
    request.dbsession.add(course)
    request.dbsession.flush()
    publish(request, "course.created", CourseSchema().dump(course), livemode=principal.livemode,
            partner_ids=[principal.partner_id])
    return course


def complete_course(request, course_id: int, user_id: int) -> Enrollment:
    principal = request.principal
    session = request.dbsession
    course = get_course(session, principal, course_id)
    user = get_user(session, principal, user_id, field="user_id")

    enrollment = session.scalar(sa.select(Enrollment).where(
        Enrollment.user_id == user.id, Enrollment.course_id == course.id))
    if enrollment is not None and enrollment.status == "completed":
        raise Conflict("The user already completed this course.", code="already_completed")
    if enrollment is None:
        enrollment = Enrollment(user_id=user.id, course_id=course.id)
        session.add(enrollment)
    enrollment.status = "completed"
    enrollment.completed_at = utcnow()
    try:
        session.flush()
    except sa.exc.IntegrityError:
        raise Conflict("The user already completed this course.",
                       code="already_completed") from None

    data = {"course": CourseSchema().dump(course), "user_id": f"user_{user.id}",
            "completed_at": enrollment.completed_at}
    publish(request, "course.completed", data, livemode=principal.livemode,
            partner_ids=tenancy_partner_ids(session, user.id, principal.livemode))
    return enrollment


def match_mentor(request, mentor_id: int, user_id: int, note: str | None) -> MentorMatch:
    principal = request.principal
    session = request.dbsession
    mentor = session.scalar(visible_mentors(principal).where(Mentor.id == mentor_id))
    if mentor is None:
        raise NotFound(f"No mentor with id mentor_{mentor_id}.")
    user = get_user(session, principal, user_id, field="user_id")

    match = MentorMatch(mentor_id=mentor.id, user_id=user.id, partner_id=principal.partner_id,
                        livemode=principal.livemode, note=note)
    session.add(match)
    session.flush()
    data = {"id": f"match_{match.id}", "mentor": MentorSchema().dump(mentor),
            "user_id": f"user_{user.id}", "note": note, "created_at": match.created_at}
    publish(request, "mentor.matched", data, livemode=principal.livemode,
            partner_ids=tenancy_partner_ids(session, user.id, principal.livemode))
    return match
