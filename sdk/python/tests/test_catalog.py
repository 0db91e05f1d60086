"""Courses and mentors through the SDK against the live server."""

from __future__ import annotations

import pytest
from conftest import unique_email

from fkod_sdk import BadRequestError, ConflictError, Course, Mentor, NotFoundError


def test_create_and_complete_course(client):
    user = client.users.create(email=unique_email())
    course = client.courses.create(title="Graph theory", description="Paths and cuts",
                                   level="advanced")

    completion = client.courses.complete(course.id, user_id=user.id)

    assert isinstance(course, Course)
    assert course.owner == "partner"
    assert course.level == "advanced"
    assert completion.course_id == course.id
    assert completion.user_id == user.id
    assert completion.completed_at


def test_completing_twice_is_a_conflict(client):
    user = client.users.create(email=unique_email())
    course = client.courses.create(title="Once only")
    client.courses.complete(course.id, user_id=user.id)

    with pytest.raises(ConflictError) as caught:
        client.courses.complete(course.id, user_id=user.id)

    assert caught.value.code == "already_completed"


def test_own_course_is_listed(client):
    course = client.courses.create(title="Listed course")

    listed = [found.id for found in client.courses.iterate(limit=50)]

    assert course.id in listed


def test_invalid_course_level_names_the_field(client):
    with pytest.raises(BadRequestError) as caught:
        client.courses.create(title="Bad level", level="expert")

    assert caught.value.field_names() == ["level"]


def test_mentors_list_and_match(client):
    mentors = list(client.mentors.iterate(limit=2))
    if not mentors:
        pytest.fail("The server's test-mode catalog has no mentors to match.")
    user = client.users.create(email=unique_email())

    match = client.mentors.match(mentors[0].id, user_id=user.id, note="Wants help with graphs")

    assert isinstance(mentors[0], Mentor)
    assert isinstance(mentors[0].expertise_areas, list)
    assert match.mentor_id == mentors[0].id
    assert match.user_id == user.id
    assert match.note == "Wants help with graphs"


def test_match_with_unknown_mentor_is_not_found(client):
    user = client.users.create(email=unique_email())

    with pytest.raises(NotFoundError):
        client.mentors.match("mentor_999999999", user_id=user.id)
