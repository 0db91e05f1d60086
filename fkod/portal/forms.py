"""Form handling: load a POST through the API's marshmallow schema, and keep errors by field.

A page shows each message next to the field it names and fills every field
with what was typed, except passwords and secrets.
"""

from __future__ import annotations

import dataclasses

import marshmallow
from pyramid.httpexceptions import HTTPBadRequest

from fkod.core.api import PageQuery
from fkod.core.errors import ApiError

# The key of messages about the form as a whole.
FORM = "_form"


@dataclasses.dataclass
class Form:
    """A submitted form: the typed values and the error messages, keyed by field name."""

    values: dict = dataclasses.field(default_factory=dict)
    errors: dict[str, list[str]] = dataclasses.field(default_factory=dict)

    def add_error(self, field: str, message: str) -> None:
        self.errors.setdefault(field or FORM, []).append(message)

    @property
    def valid(self) -> bool:
        return not self.errors

    def value(self, name: str, default=""):
        return self.values.get(name, default)

    def field_errors(self, name: str) -> list[str]:
        return self.errors.get(name, [])

    def form_errors(self) -> list[str]:
        return self.errors.get(FORM, [])


def posted_values(request, *, lists: tuple[str, ...] = ()) -> dict:
    """Return the POST fields as a dict of strings, with ``lists`` as lists of strings.

    The CSRF token is left out, and empty text fields are left out too, so an
    optional field left blank is absent for the schema rather than an empty string.
    """
    values = {}
    for name in request.POST:
        if name == "csrf_token" or name in values:
            continue
        if name in lists:
            values[name] = [item for item in request.POST.getall(name) if item]
        else:
            text = request.POST.get(name)
            if isinstance(text, str) and text.strip():
                values[name] = text
    for name in lists:
        values.setdefault(name, [])
    return values


def _flatten(messages, prefix: str = "") -> list[tuple[str, str]]:
    """Turn marshmallow's nested messages into (dotted field, message) pairs."""
    pairs = []
    if isinstance(messages, dict):
        for name, value in messages.items():
            key = FORM if name == "_schema" else f"{prefix}{name}"
            pairs.extend(_flatten(value, "" if key == FORM else f"{key}."))
    elif isinstance(messages, list):
        for item in messages:
            pairs.extend(_flatten(item, prefix))
    else:
        pairs.append((prefix.rstrip(".") or FORM, str(messages)))
    return pairs


def load(schema: marshmallow.Schema, data: dict, form: Form) -> dict | None:
    """Load ``data`` with ``schema``; return the loaded dict, or None with ``form`` filled in."""
    try:
        return schema.load(data)
    except marshmallow.ValidationError as error:
        for field, message in _flatten(error.messages):
            form.add_error(field, message)
        return None


def add_api_error(form: Form, error: ApiError, fields: dict[str, str] | None = None) -> None:
    """Attach a service error's message to the form, and its field errors to their fields.

    ``fields`` renames the API's field names to the page's where they differ.
    """
    fields = fields or {}
    form.add_error(FORM, error.message)
    for item in error.errors:
        name = item.get("name") or ""
        target = fields.get(name.split(".")[0], name.split(".")[0])
        if item.get("location") == "body" and name and target != FORM:
            form.add_error(target, _sentence(item.get("description", "")))


def _sentence(text: str) -> str:
    text = text.strip()
    if not text:
        return "Invalid value."
    return text[0].upper() + text[1:] + ("" if text.endswith(".") else ".")


def page_query(request) -> dict:
    """Load ``limit`` and ``cursor`` from the query string with the API's rules; 400 if invalid."""
    data = {name: request.GET[name] for name in ("limit", "cursor") if name in request.GET}
    try:
        return PageQuery().load(data)
    except marshmallow.ValidationError as error:
        described = "; ".join(f"{name}: {message}" for name, message in _flatten(error.messages))
        raise HTTPBadRequest(f"Invalid page link ({described}). Go back to the first page.") \
            from None


def integer_field(values: dict, name: str) -> None:
    """Turn a typed whole number into an int, as the JSON schemas expect one.

    Anything else is left as typed, so the schema reports it next to the field.
    """
    text = values.get(name)
    if isinstance(text, str) and text.strip().isascii() and text.strip().isdigit() \
            and len(text.strip()) <= 12:
        values[name] = int(text.strip())
