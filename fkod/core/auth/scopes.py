"""The catalog of API scopes (``resource:action``) a key or token can be granted."""

from __future__ import annotations

import dataclasses
import re

SCOPE_NAME = re.compile(r"^[a-z][a-z0-9_]*:[a-z][a-z0-9_]*$")


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


class ScopeCatalog:
    """The core's scopes plus those plugins contribute."""

    def __init__(self, scopes=SCOPES):
        self._scopes: dict[str, Scope] = {scope.name: scope for scope in scopes}

    def add(self, scope: Scope) -> None:
        if scope.name in self._scopes:
            raise ValueError(f"scope {scope.name} is already defined")
        if not SCOPE_NAME.match(scope.name):
            raise ValueError(f"invalid scope name {scope.name!r}: expected resource:action")
        self._scopes[scope.name] = scope

    def grantable(self) -> list[Scope]:
        """Scopes a partner's key may hold, sorted by name."""
        return sorted((scope for scope in self._scopes.values() if not scope.admin_only),
                      key=lambda scope: scope.name)

    def invalid(self, names) -> list[tuple[str, str]]:
        """Return ``(scope, reason)`` for each name a partner's key cannot be granted."""
        problems = []
        for name in names:
            scope = self._scopes.get(name)
            if scope is None:
                problems.append((name, "unknown scope"))
            elif scope.admin_only:
                problems.append((name, "admin-only scope; it cannot be granted to a partner"))
        return problems
