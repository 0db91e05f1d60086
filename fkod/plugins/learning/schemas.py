"""Request and response schemas of the F-KOD learning API, and its event data schemas."""

from __future__ import annotations

import marshmallow
from marshmallow import fields, validate

from fkod.core.api import PageQuery
from fkod.core.schemas import BodySchema, PublicId, ResponseSchema, Text, Timestamp
from fkod.partners.schemas import Email

ARCHETYPES = ("innovator", "explorer", "builder", "mentor", "achiever", "collaborator")
LEVELS = ("beginner", "intermediate", "advanced")


class UserSchema(ResponseSchema):
    id = PublicId("user")
    email = fields.String()
    name = fields.String()
    archetype = fields.String()
    created_at = Timestamp()
    updated_at = Timestamp()


class CreateUserBody(BodySchema):
    email = Email(required=True)
    name = Text(max_length=255, allow_none=True)
    archetype = Text(validate=validate.OneOf(ARCHETYPES), allow_none=True)


class UpdateUserBody(BodySchema):
    email = Email()
    name = Text(max_length=255, allow_none=True)
    archetype = Text(validate=validate.OneOf(ARCHETYPES), allow_none=True)

    @marshmallow.validates_schema
    def _not_empty(self, data, **kwargs):
        if not data:
            raise marshmallow.ValidationError("Give at least one field to change.")


class UserListQuery(PageQuery):
    email = Text(max_length=255)


class CourseSchema(ResponseSchema):
    id = PublicId("course")
    title = fields.String()
    description = fields.String()
    level = fields.String()
    owner = fields.Method("_owner", metadata={"description": "fkod for the shared catalog, "
                                                             "partner for your own courses"})
    created_at = Timestamp()
    updated_at = Timestamp()

    def _owner(self, course):
        return "fkod" if course.created_by_partner_id is None else "partner"


class CreateCourseBody(BodySchema):
    title = Text(required=True, min_length=1, max_length=255)
    description = Text(max_length=10_000, allow_none=True)
    level = Text(validate=validate.OneOf(LEVELS), allow_none=True)


class CompleteCourseBody(BodySchema):
    user_id = PublicId("user", required=True)


class CompletionSchema(ResponseSchema):
    id = PublicId("enr")
    course_id = PublicId("course")
    user_id = PublicId("user")
    status = fields.String()
    completed_at = Timestamp()


class MentorSchema(ResponseSchema):
    id = PublicId("mentor")
    name = fields.String()
    expertise_areas = fields.Method("_expertise_areas", metadata={
        "description": "since API version 2026-12-01; before it, a comma-separated "
                       "expertise string"})
    bio = fields.String()

    def _expertise_areas(self, mentor) -> list[str]:
        return [area.strip() for area in (mentor.expertise or "").split(",") if area.strip()]


class MatchMentorBody(BodySchema):
    user_id = PublicId("user", required=True)
    note = Text(max_length=500, allow_none=True)


class MatchSchema(ResponseSchema):
    id = PublicId("match")
    mentor_id = PublicId("mentor")
    user_id = PublicId("user")
    note = fields.String()
    created_at = Timestamp()


# JSON Schemas of event data, for the catalog and receivers ------------------------

_ID = {"type": "string"}
_NULLABLE_STRING = {"type": ["string", "null"]}
_TIMESTAMP = {"type": "string", "format": "date-time"}

USER_DATA_SCHEMA = {
    "type": "object",
    "required": ["id", "email"],
    "properties": {
        "id": {"type": "string", "pattern": "^user_[0-9]+$"},
        "email": {"type": "string", "format": "email"},
        "name": _NULLABLE_STRING,
        "archetype": _NULLABLE_STRING,
        "created_at": _TIMESTAMP,
        "updated_at": _TIMESTAMP,
        "changed_fields": {"type": "array", "items": {"type": "string"}},
    },
}

COURSE_DATA_SCHEMA = {
    "type": "object",
    "required": ["id", "title"],
    "properties": {
        "id": {"type": "string", "pattern": "^course_[0-9]+$"},
        "title": {"type": "string"},
        "description": _NULLABLE_STRING,
        "level": _NULLABLE_STRING,
        "owner": {"enum": ["fkod", "partner"]},
        "created_at": _TIMESTAMP,
        "updated_at": _TIMESTAMP,
    },
}

COMPLETION_DATA_SCHEMA = {
    "type": "object",
    "required": ["course", "user_id", "completed_at"],
    "properties": {
        "course": COURSE_DATA_SCHEMA,
        "user_id": {"type": "string", "pattern": "^user_[0-9]+$"},
        "completed_at": _TIMESTAMP,
    },
}

MATCH_DATA_SCHEMA = {
    "type": "object",
    "required": ["id", "mentor", "user_id"],
    "properties": {
        "id": {"type": "string", "pattern": "^match_[0-9]+$"},
        "mentor": {
            "type": "object",
            "properties": {"id": _ID, "name": {"type": "string"},
                           "expertise_areas": {"type": "array", "items": {"type": "string"}},
                           "bio": _NULLABLE_STRING},
        },
        "user_id": {"type": "string", "pattern": "^user_[0-9]+$"},
        "note": _NULLABLE_STRING,
        "created_at": _TIMESTAMP,
    },
}
