"""Built-in plugin: the F-KOD learning API (users, courses, mentors) and its events."""

from __future__ import annotations

from fkod.core.hookspecs import hookimpl
from fkod.core.webhooks.catalog import EventType
from fkod.plugins.learning import schemas

_USER_SAMPLE = {"id": "user_123", "email": "user@example.com", "name": "John Doe",
                "archetype": "innovator", "created_at": "2026-06-05T10:00:00Z",
                "updated_at": "2026-06-05T10:00:00Z"}
_COURSE_SAMPLE = {"id": "course_9", "title": "Design Thinking 101",
                  "description": "Frame problems before solving them.", "level": "beginner",
                  "owner": "fkod", "created_at": "2026-06-05T10:00:00Z",
                  "updated_at": "2026-06-05T10:00:00Z"}


@hookimpl
def fkod_register_event_types():
    return [
        EventType("user.created", "A user was created in your tenancy.",
                  schemas.USER_DATA_SCHEMA, _USER_SAMPLE),
        EventType("user.updated", "A user in your tenancy changed; changed_fields lists what.",
                  schemas.USER_DATA_SCHEMA, {**_USER_SAMPLE, "changed_fields": ["name"]}),
        EventType("course.created", "A course was added.", schemas.COURSE_DATA_SCHEMA,
                  _COURSE_SAMPLE),
        EventType("course.completed", "A user in your tenancy completed a course.",
                  schemas.COMPLETION_DATA_SCHEMA,
                  {"course": _COURSE_SAMPLE, "user_id": "user_123",
                   "completed_at": "2026-06-05T10:00:00Z"}),
        EventType("mentor.matched", "A user in your tenancy was matched with a mentor.",
                  schemas.MATCH_DATA_SCHEMA,
                  {"id": "match_5", "mentor": {"id": "mentor_3", "name": "Ada Mentor",
                                               "expertise_areas": ["Product design"],
                                               "bio": None},
                   "user_id": "user_123", "note": None, "created_at": "2026-06-05T10:00:00Z"}),
    ]


@hookimpl
def fkod_include(config):
    from fkod.plugins.learning.views import SERVICES

    for service in SERVICES:
        config.add_cornice_service(service)
