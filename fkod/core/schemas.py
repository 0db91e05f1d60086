"""Strict marshmallow fields and base schemas shared by every JSON endpoint.

JSON bodies are typed: a string field refuses numbers, an integer field refuses
strings and floats, a boolean refuses "yes". Unknown fields are an error, so a
client can never set a server-owned field by naming it.
"""

from __future__ import annotations

import marshmallow
from marshmallow import ValidationError, fields, validate

from fkod.core.ids import try_parse_id


class BodySchema(marshmallow.Schema):
    """Base of request body schemas: unknown fields are rejected."""

    class Meta:
        unknown = marshmallow.RAISE


class EmptyBody(BodySchema):
    """An empty body: send ``{}``. Declared by actions whose path names everything they need."""


class QuerySchema(marshmallow.Schema):
    """Base of query-string schemas: unknown parameters are rejected."""

    class Meta:
        unknown = marshmallow.RAISE


class ResponseSchema(marshmallow.Schema):
    """Base of response schemas; only declared fields are ever sent.

    Dumping writes null for a value that is None, so each field is nullable,
    and the OpenAPI document declares it so, unless it is ``required=True``.
    """

    def on_bind_field(self, field_name: str, field_obj: fields.Field) -> None:
        if not field_obj.required:
            field_obj.allow_none = True


class Text(fields.String):
    """A string without NUL characters, with an optional maximum length and trimming."""

    def __init__(self, *, max_length: int | None = None, min_length: int | None = None,
                 strip: bool = True, **kwargs):
        given = kwargs.pop("validate", None)
        validators = [given] if callable(given) else list(given or [])
        if max_length is not None or min_length is not None:
            validators.append(validate.Length(min=min_length, max=max_length))
        super().__init__(validate=validators, **kwargs)
        self.strip = strip

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        if "\x00" in text:
            raise ValidationError("Must not contain NUL characters.")
        return text.strip() if self.strip else text


class StrictInteger(fields.Integer):
    """An integer given as a JSON number, never as a string, a float or a boolean."""

    def __init__(self, **kwargs):
        super().__init__(strict=True, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool):
            raise ValidationError("Not a valid integer.")
        return super()._deserialize(value, attr, data, **kwargs)


class StrictBoolean(fields.Boolean):
    """A JSON true or false; strings and numbers are rejected."""

    truthy = {True}
    falsy = {False}

    def _deserialize(self, value, attr, data, **kwargs):
        # 1 == True in Python, so the sets above alone would let 1 and 0 through.
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


class PublicId(fields.Field):
    """An id such as ``user_123``: dumped from the row number, loaded back to it."""

    def __init__(self, kind: str, **kwargs):
        super().__init__(**kwargs)
        self.kind = kind

    def _serialize(self, value, attr, obj, **kwargs):
        return None if value is None else f"{self.kind}_{value}"

    def _deserialize(self, value, attr, data, **kwargs):
        number = try_parse_id(self.kind, value) if isinstance(value, str) else None
        if number is None:
            raise ValidationError(f"Must be an id of the form {self.kind}_<number>.")
        return number


class Timestamp(fields.DateTime):
    """An ISO 8601 timestamp in UTC with a ``Z`` suffix; naive values are read as UTC."""

    def _serialize(self, value, attr, obj, **kwargs):
        if value is None:
            return None
        return value.replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def mode_field(**kwargs) -> Text:
    """Build the field for the live or test mode of a key, webhook or record (test when omitted)."""
    return Text(validate=validate.OneOf(["live", "test"]), load_default="test", **kwargs)
