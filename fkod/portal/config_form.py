"""The install form built from an integration's ``config_schema`` (JSON Schema draft 2020-12).

Each top-level property becomes one field. A string with ``enum`` is a select,
a string with ``format`` the matching input type, a number or integer a number
input with its bounds, and a boolean a checkbox. An array of enum items is a
group of checkboxes, and any other property (an object, an array of free values)
is typed as JSON text. The install service validates the converted values
against the schema, so this module only turns typed text into JSON values.
"""

from __future__ import annotations

import dataclasses
import json
import math

from fkod.portal import forms

# The prefix of every configuration input's name, so a property cannot clash
# with csrf_token or confirm.
PREFIX = "config."
# JSON Schema formats with an HTML input type of their own.
FORMAT_INPUTS = {"email": "email", "uri": "url", "iri": "url", "date": "date", "time": "time"}
# The maximum length of a field typed as JSON, in characters.
MAX_JSON_LENGTH = 16 * 1024


@dataclasses.dataclass(frozen=True)
class ConfigField:
    """One input of the install form."""

    name: str
    label: str
    description: str
    required: bool
    kind: str  # text, select, number, checkbox, choices or json
    input_type: str = "text"
    choices: tuple = ()
    attributes: dict = dataclasses.field(default_factory=dict)
    secret: bool = False
    default: object = None

    @property
    def input_name(self) -> str:
        return PREFIX + self.name

    @property
    def input_id(self) -> str:
        return "config-" + "".join(char if char.isalnum() or char in "_-" else "-"
                                   for char in self.name)


def _enum_of(schema: dict) -> list | None:
    if isinstance(schema.get("enum"), list):
        return schema["enum"]
    if "const" in schema:
        return [schema["const"]]
    return None


def _schema_type(schema: dict) -> str | None:
    kind = schema.get("type")
    if isinstance(kind, list):
        # ["string", "null"] and the like: the first non-null type decides the input.
        kind = next((item for item in kind if item != "null"), None)
    return kind if isinstance(kind, str) else None


def _bounds(schema: dict) -> dict:
    attributes = {}
    for keyword, attribute in (("minimum", "min"), ("maximum", "max")):
        if isinstance(schema.get(keyword), int | float) and not isinstance(schema[keyword], bool):
            attributes[attribute] = schema[keyword]
    return attributes


def _field(name: str, schema, required: bool) -> ConfigField:
    schema = schema if isinstance(schema, dict) else {}
    common = {"name": name, "label": str(schema.get("title") or name),
              "description": str(schema.get("description") or ""), "required": required,
              "default": schema.get("default")}
    kind = _schema_type(schema)
    enum = _enum_of(schema)

    if enum is not None and kind in (None, "string", "integer", "number"):
        return ConfigField(kind="select", choices=tuple(enum), **common)
    if kind == "string":
        attributes = {}
        for keyword, attribute in (("minLength", "minlength"), ("maxLength", "maxlength")):
            if isinstance(schema.get(keyword), int):
                attributes[attribute] = schema[keyword]
        secret = schema.get("writeOnly") is True
        input_type = "password" if secret else FORMAT_INPUTS.get(schema.get("format"), "text")
        return ConfigField(kind="text", input_type=input_type, attributes=attributes,
                           secret=secret, **common)
    if kind in ("integer", "number"):
        attributes = _bounds(schema)
        attributes["step"] = 1 if kind == "integer" else "any"
        return ConfigField(kind="number", input_type="number", attributes=attributes, **common)
    if kind == "boolean":
        return ConfigField(kind="checkbox", **common)
    items = schema.get("items") if isinstance(schema.get("items"), dict) else {}
    if kind == "array" and _enum_of(items) is not None:
        return ConfigField(kind="choices", choices=tuple(_enum_of(items)), **common)
    return ConfigField(kind="json", **common)


def config_fields(schema) -> list[ConfigField]:
    """Return the form's fields for ``schema``, in the order of its ``properties``."""
    if not isinstance(schema, dict):
        return []
    required = set(schema.get("required") or [])
    properties = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
    return [_field(name, child, name in required) for name, child in properties.items()]


def initial_values(fields: list[ConfigField]) -> dict:
    """Return the form's first values: each field's ``default``, as the inputs show it."""
    values = {}
    for field in fields:
        if field.default is None or field.secret:
            continue
        if field.kind == "checkbox":
            values[field.input_name] = field.default is True
        elif field.kind == "choices":
            defaults = field.default if isinstance(field.default, list) else []
            values[field.input_name] = [choice_value(item) for item in defaults]
        elif field.kind == "json":
            values[field.input_name] = json.dumps(field.default)
        else:
            values[field.input_name] = choice_value(field.default)
    return values


def json_text(value) -> str:
    """Return ``value`` as JSON text for a page, which escapes it like any other text."""
    return json.dumps(value, ensure_ascii=False)


def choice_value(choice) -> str:
    """Return how an enum member is written in an option's value attribute."""
    return choice if isinstance(choice, str) else json.dumps(choice)


def _parse_number(text: str, integer: bool) -> int | float | None:
    """Return the typed number, or None when it is not one (or not whole for an integer)."""
    try:
        return int(text)
    except ValueError:
        if integer:
            return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def read_config(fields: list[ConfigField], post, form: forms.Form) -> dict:
    """Convert the posted inputs into a configuration, keeping what was typed in ``form``.

    A value that cannot be converted gets an error next to its field. Secrets
    are converted but never kept in ``form.values``.
    """
    config = {}
    for field in fields:
        if field.kind == "choices":
            picked = post.getall(field.input_name)
            by_value = {choice_value(choice): choice for choice in field.choices}
            form.values[field.input_name] = picked
            unknown = [item for item in picked if item not in by_value]
            if unknown:
                form.add_error(field.input_name, "Choose only from the listed options.")
            config[field.name] = [by_value[item] for item in picked if item in by_value]
            continue
        if field.kind == "checkbox":
            checked = post.get(field.input_name) == "true"
            form.values[field.input_name] = checked
            config[field.name] = checked
            continue

        text = post.get(field.input_name, "")
        text = text if isinstance(text, str) else ""
        if not field.secret:
            form.values[field.input_name] = text
        if field.kind != "text":
            text = text.strip()
        if text == "":
            continue
        if field.kind == "select":
            by_value = {choice_value(choice): choice for choice in field.choices}
            if text not in by_value:
                form.add_error(field.input_name, "Choose one of the listed options.")
            else:
                config[field.name] = by_value[text]
        elif field.kind == "number":
            integer = field.attributes.get("step") == 1
            number = _parse_number(text, integer) if len(text) <= 40 else None
            if number is None:
                form.add_error(field.input_name,
                               "Must be a whole number." if integer else "Must be a number.")
            else:
                config[field.name] = number
        elif field.kind == "json":
            try:
                if len(text) > MAX_JSON_LENGTH:
                    raise ValueError
                config[field.name] = json.loads(text)
            except ValueError:
                form.add_error(field.input_name, "Must be valid JSON, for example "
                                                 '{"name": "value"} or ["a", "b"].')
        else:
            config[field.name] = text
    return config


def add_config_errors(form: forms.Form, fields: list[ConfigField], errors: list[dict]) -> None:
    """Put the install service's ``config.<name>`` errors next to their fields.

    An error on a nested value or an unknown name goes to the form as a whole.
    """
    names = {field.name for field in fields}
    for item in errors:
        parts = (item.get("name") or "").split(".")
        description = item.get("description") or "Invalid value."
        rule, _, message = description.partition(": ")
        text = message or description
        text = text[:1].upper() + text[1:]
        if len(parts) >= 2 and parts[0] == "config" and parts[1] in names:
            if rule == "required":
                text = "This field is required."
            form.add_error(PREFIX + parts[1], text)
        else:
            form.add_error(forms.FORM, f"{'.'.join(parts)}: {text}")
