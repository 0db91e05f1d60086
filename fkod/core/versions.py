"""Dated API versions of the F-KOD API (``/api/v1/…``) and the adapters between them.

The code always speaks the newest version. A call pinned to an older one, by
its ``FKOD-Version`` header or by its key's ``api_version``, has its request
body adapted up to the newest version before validation and its response body
adapted back down, one change at a time. Envelopes, ids, timestamps and error
bodies are the same in every version; only what a change names differs.
Webhook event payloads always use the newest version.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable

from fkod.core import jsonutil
from fkod.core.errors import ValidationFailed, field_error

VERSION_HEADER = "FKOD-Version"

Adapter = Callable[[str, str, dict], dict]


def _identity(route: str, method: str, body: dict) -> dict:
    return body


@dataclasses.dataclass(frozen=True)
class VersionChange:
    """A breaking change introduced by ``version``, with adapters to the version before it."""

    version: str
    description: str
    # Turn a request body of the previous version into this version's.
    upgrade_request: Adapter = _identity
    # Turn a response body of this version into the previous version's.
    downgrade_response: Adapter = _identity


def _expertise_as_string(mentor: dict) -> dict:
    areas = mentor.pop("expertise_areas", None)
    mentor["expertise"] = ", ".join(areas) if areas else None
    return mentor


def _mentors_with_expertise_string(route: str, method: str, body: dict) -> dict:
    if route == "/api/v1/mentors" and method == "GET":
        body["data"] = [_expertise_as_string(dict(item)) for item in body.get("data", [])]
    return body


FIRST_VERSION = "2026-06-05"

# Oldest first. Each change's adapters step between it and the one before.
CHANGES: tuple[VersionChange, ...] = (
    VersionChange(
        "2026-12-01",
        "Mentors list their expertise as expertise_areas, an array of strings, in place of "
        "the comma-separated expertise string.",
        downgrade_response=_mentors_with_expertise_string,
    ),
)

VERSIONS: tuple[str, ...] = (FIRST_VERSION, *(change.version for change in CHANGES))
LATEST = VERSIONS[-1]


def check_version(value: str, *, location: str = "header", name: str = VERSION_HEADER) -> str:
    """Return ``value`` if it names a version; otherwise a 400 listing the known ones."""
    if value not in VERSIONS:
        known = ", ".join(VERSIONS)
        raise ValidationFailed(
            f"Unknown API version {value!r}; known versions are {known}.",
            code="unknown_api_version",
            errors=[field_error(location, name, f"must be one of {known}")],
        )
    return value


def _newer_than(version: str) -> list[VersionChange]:
    return [change for change in CHANGES if change.version > version]


def upgrade_request(version: str, route: str, method: str, body: dict) -> dict:
    for change in _newer_than(version):
        body = change.upgrade_request(route, method, body)
    return body


def downgrade_response_body(version: str, route: str, method: str, raw: bytes) -> bytes | None:
    """Return the response body for ``version``, or None when nothing changes."""
    changes = _newer_than(version)
    if not changes:
        return None
    body = json.loads(raw)
    for change in reversed(changes):
        body = change.downgrade_response(route, method, body)
    return jsonutil.dumps(body)
