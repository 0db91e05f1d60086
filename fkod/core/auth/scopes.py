"""The catalog of API scopes (``resource:action``) a key or token can be granted."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Scope:
    name: str
    description: str
    # Admin-only scopes can never be granted to a partner's key.
    admin_only: bool = False


SCOPES: tuple[Scope, ...] = (
    Scope("users:read", "Read the users in your tenancy."),
    Scope("users:write", "Create and update users in your tenancy."),
    Scope("courses:read", "Read the course catalog and your own courses."),
    Scope("courses:write", "Create courses and record course completions."),
    Scope("mentors:read", "Read the mentor catalog."),
    Scope("mentors:write", "Match users in your tenancy with mentors."),
    Scope("analytics:read", "Read learning analytics for users in your tenancy."),
    Scope("admin:write", "Act on any partner's data (F-KOD staff only).", admin_only=True),
)

SCOPES_BY_NAME = {scope.name: scope for scope in SCOPES}


def invalid_scopes(names) -> list[tuple[str, str]]:
    """Return ``(scope, reason)`` for each name a partner's key cannot be granted."""
    problems = []
    for name in names:
        scope = SCOPES_BY_NAME.get(name)
        if scope is None:
            problems.append((name, "unknown scope"))
        elif scope.admin_only:
            problems.append((name, "admin-only scope; it cannot be granted to a partner"))
    return problems
