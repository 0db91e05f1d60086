"""What each partner member role may do.

Permissions are ``<area>:<read|write>``; the partner API declares one per
operation and the member's role must grant it.
"""

from __future__ import annotations

READ_PERMISSIONS = frozenset({
    "partner:read", "api_keys:read", "webhooks:read", "integrations:read", "billing:read",
    "members:read", "support:read",
})

ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "owner": READ_PERMISSIONS | {
        "partner:write", "api_keys:write", "webhooks:write", "integrations:write",
        "billing:write", "members:write", "support:write", "webhooks:reveal_secret",
    },
    "admin": READ_PERMISSIONS | {
        "partner:write", "api_keys:write", "webhooks:write", "integrations:write",
        "members:write", "support:write", "webhooks:reveal_secret",
    },
    "developer": READ_PERMISSIONS | {
        "api_keys:write", "webhooks:write", "integrations:write", "support:write",
        "webhooks:reveal_secret",
    },
    "billing": READ_PERMISSIONS | {"billing:write", "support:write"},
    "read_only": READ_PERMISSIONS,
}


def role_permits(role: str | None, permission: str) -> bool:
    return permission in ROLE_PERMISSIONS.get(role or "", frozenset())
