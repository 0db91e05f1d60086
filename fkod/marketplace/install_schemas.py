"""Request and response schemas of customer installs and reviews of integrations."""

from __future__ import annotations

import marshmallow
from marshmallow import fields, validate

from fkod.core.api import PageQuery
from fkod.core.schemas import (
    BodySchema,
    PublicId,
    ResponseSchema,
    StrictInteger,
    Text,
    Timestamp,
)

INSTALL_STATUSES = ("active", "uninstalled")
REVIEW_STATUSES = ("visible", "hidden")
MAX_REVIEW_TITLE_LENGTH = 200
MAX_REVIEW_BODY_LENGTH = 5000
MAX_REPLY_LENGTH = 5000
MAX_MODERATION_REASON_LENGTH = 500

# Review list orders; a leading - sorts descending, so -rating lists the best first.
REVIEW_SORTS = ("created_at", "rating")
REVIEW_SORT_CHOICES = REVIEW_SORTS + tuple(f"-{name}" for name in REVIEW_SORTS)


def _choice(names: tuple[str, ...], **kwargs) -> Text:
    return Text(validate=validate.OneOf(names, error="Must be one of: {choices}."), **kwargs)


class ConfigObject(fields.Dict):
    """A JSON object; anything else is rejected with the type it was."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, dict):
            raise marshmallow.ValidationError(
                f"Must be a JSON object, not {type(value).__name__}.")
        return super()._deserialize(value, attr, data, **kwargs)


# Installs ---------------------------------------------------------------------------


class InstallBody(BodySchema):
    config = ConfigObject(load_default=dict, metadata={
        "description": "the install configuration, valid against the integration's "
                       "config_schema; {} by default"})


class UpdateInstallBody(BodySchema):
    config = ConfigObject(required=True, metadata={
        "description": "the new install configuration, replacing the stored one; a "
                       "write-only field sent back as its mask keeps its stored value"})


class InstallListQuery(PageQuery):
    status = _choice(INSTALL_STATUSES, load_default="active", metadata={
        "description": "active (the default) or uninstalled"})


class IntegrationSummarySchema(ResponseSchema):
    id = PublicId("int")
    name = fields.String()
    slug = fields.String(allow_none=True)
    category = fields.String(allow_none=True)
    logo_url = fields.String(allow_none=True)
    pricing_model = fields.String()


class InstallSchema(ResponseSchema):
    id = PublicId("inst")
    integration = fields.Nested(IntegrationSummarySchema)
    status = fields.String()
    config = fields.Dict(metadata={
        "description": "the install configuration; write-only fields are masked"})
    granted_scopes = fields.List(fields.String())
    installed_at = Timestamp()
    uninstalled_at = Timestamp(allow_none=True)
    updated_at = Timestamp()


# Reviews ----------------------------------------------------------------------------


def _rating(**kwargs) -> StrictInteger:
    return StrictInteger(validate=validate.Range(min=1, max=5, error="Must be from 1 to 5."),
                         **kwargs)


class ReviewBody(BodySchema):
    rating = _rating(required=True)
    title = Text(max_length=MAX_REVIEW_TITLE_LENGTH, allow_none=True, load_default=None)
    body = Text(max_length=MAX_REVIEW_BODY_LENGTH, allow_none=True, load_default=None)


class UpdateReviewBody(BodySchema):
    rating = _rating()
    title = Text(max_length=MAX_REVIEW_TITLE_LENGTH, allow_none=True)
    body = Text(max_length=MAX_REVIEW_BODY_LENGTH, allow_none=True)


class ReviewListQuery(PageQuery):
    sort = _choice(REVIEW_SORT_CHOICES, load_default="-created_at", metadata={
        "description": "created_at or rating, with a leading - for descending; "
                       "-created_at (newest first) by default"})


class ReplyBody(BodySchema):
    text = Text(required=True, min_length=1, max_length=MAX_REPLY_LENGTH)


class ModerateReviewBody(BodySchema):
    status = _choice(REVIEW_STATUSES, required=True)
    reason = Text(required=True, min_length=1, max_length=MAX_MODERATION_REASON_LENGTH)


class ReviewAuthorSchema(ResponseSchema):
    display_name = fields.String()


class ReviewReplySchema(ResponseSchema):
    text = fields.String()
    replied_at = Timestamp()


class ReviewSchema(ResponseSchema):
    id = PublicId("rev")
    integration_id = PublicId("int")
    rating = fields.Integer()
    title = fields.String(allow_none=True)
    body = fields.String(allow_none=True)
    author = fields.Nested(ReviewAuthorSchema)
    still_installed = fields.Boolean()
    reply = fields.Nested(ReviewReplySchema, allow_none=True)
    created_at = Timestamp()
    updated_at = Timestamp()


class AdminReviewSchema(ReviewSchema):
    status = fields.String()
    moderation_reason = fields.String(allow_none=True)
    user_id = PublicId("user")
