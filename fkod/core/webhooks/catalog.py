"""The catalog of webhook event types contributed by plugins."""

from __future__ import annotations

import dataclasses
import fnmatch
import re

from fkod.core.errors import ValidationFailed, field_error

EVENT_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
EVENT_PATTERN = re.compile(r"^(\*|[a-z][a-z0-9_]*(\.([a-z][a-z0-9_]*|\*))*)$")


@dataclasses.dataclass(frozen=True)
class EventType:
    """One event type: its name, what it means, the JSON Schema of ``data`` and a sample."""

    name: str
    description: str
    schema: dict
    sample: dict
    plugin: str | None = None

    def __post_init__(self):
        if not EVENT_NAME.match(self.name):
            raise ValueError(f"invalid event type name {self.name!r}: expected resource.action")


def pattern_matches(pattern: str, event_type: str) -> bool:
    """Check whether a subscription pattern such as ``course.*`` or ``*`` covers ``event_type``."""
    if "*" not in pattern:
        return pattern == event_type
    return fnmatch.fnmatchcase(event_type, pattern)


class EventCatalog:
    """Event types by name, with the plugin that contributed each."""

    def __init__(self):
        self._types: dict[str, EventType] = {}

    def add(self, event_type: EventType) -> None:
        existing = self._types.get(event_type.name)
        if existing is not None and existing.plugin != event_type.plugin:
            raise ValueError(
                f"event type {event_type.name} is contributed by both {existing.plugin} "
                f"and {event_type.plugin}"
            )
        self._types[event_type.name] = event_type

    def get(self, name: str) -> EventType | None:
        return self._types.get(name)

    def available(self, is_enabled) -> list[EventType]:
        """Return the event types of enabled plugins, sorted by name."""
        return sorted(
            (item for item in self._types.values() if item.plugin is None or is_enabled(item.plugin)),
            key=lambda item: item.name,
        )

    def matching(self, pattern: str, is_enabled) -> list[EventType]:
        return [item for item in self.available(is_enabled) if pattern_matches(pattern, item.name)]


def check_event_patterns(host, patterns: list[str]) -> list[str]:
    """Return ``patterns`` without repeats, or raise 400 naming each invalid or unmatched one.

    A pattern must be an event type name or a pattern such as ``course.*`` that
    matches at least one event type of an enabled plugin of ``host``.
    """
    errors = []
    for pattern in patterns:
        if not EVENT_PATTERN.match(pattern):
            errors.append(field_error("body", "event_types",
                                      f"{pattern!r} is not an event type name or pattern"))
        elif not host.event_catalog.matching(pattern, host.is_enabled):
            errors.append(field_error(
                "body", "event_types",
                f"{pattern!r} matches no available event type; "
                "see GET /api/webhooks/available-events",
            ))
    if errors:
        raise ValidationFailed(errors[0]["description"], code="invalid_event_type", errors=errors)
    return list(dict.fromkeys(patterns))
