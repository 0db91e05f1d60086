"""Admin credentials: admin access tokens, admin roles and the check behind ``AUTH_ADMIN``.

Admin access tokens come from ``POST /api/admin/auth/login`` and carry their
own audience, so the partner API rejects them and the admin API rejects
partner login tokens. The check loads the admin on every request: a disabled
admin's tokens stop working at once, and a role change applies to the next
request.
"""

from __future__ import annotations

import dataclasses

from fkod.core.api import AUTH_ADMIN, Operation, register_auth_check
from fkod.core.auth.models import AdminUser
from fkod.core.auth.security import bearer_token
from fkod.core.auth.tokens import InvalidToken
from fkod.core.errors import Forbidden, Unauthorized
from fkod.core.ids import try_parse_id

# The aud claim of admin access tokens; login tokens use LOGIN_AUDIENCE.
ADMIN_AUDIENCE = "fkod-admin-api"

ADMIN_ROLES = ("superadmin", "support", "finance", "readonly")
ADMIN_STATUSES = ("active", "disabled")

# Every permission an admin operation can declare.
ALL_PERMISSIONS = frozenset({
    "partners:read", "partners:verify", "partners:suspend", "partners:overrides",
    "tickets:read", "tickets:write", "plans:read", "plans:write",
    "payouts:read", "payouts:write", "audit:read", "admins:read", "admins:write",
    "integrations:read", "integrations:review", "plugins:read", "plugins:write",
})

ADMIN_ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    # Everything, including suspension and managing admins.
    "superadmin": ALL_PERMISSIONS,
    "support": frozenset({
        "partners:read", "partners:verify", "tickets:read", "tickets:write", "audit:read",
        "integrations:read", "integrations:review", "plugins:read", "plugins:write",
    }),
    "finance": frozenset({
        "partners:read", "partners:overrides", "plans:read", "plans:write",
        "payouts:read", "payouts:write", "audit:read", "integrations:read", "plugins:read",
        "plugins:write",
    }),
    "readonly": frozenset({
        "partners:read", "tickets:read", "plans:read", "payouts:read", "audit:read",
        "integrations:read", "plugins:read",
    }),
}


def admin_role_permits(role: str | None, permission: str) -> bool:
    return permission in ADMIN_ROLE_PERMISSIONS.get(role or "", frozenset())


def issue_admin_token(request, admin: AdminUser) -> tuple[str, int]:
    """Return a signed admin access token for ``admin`` and its lifetime in seconds."""
    claims = {"sub": f"admin_{admin.id}", "email": admin.email, "role": admin.role}
    return request.registry["token_signer"].issue(claims, audience=ADMIN_AUDIENCE)


def _invalid_token() -> Unauthorized:
    return Unauthorized("The admin access token is invalid or expired; log in again at "
                        "POST /api/admin/auth/login.", code="invalid_token")


@dataclasses.dataclass(frozen=True)
class AdminPrincipal:
    """The admin behind a request, for Idempotency-Key ownership and the request log."""

    admin_id: int


def check_admin(request, op: Operation) -> None:
    """Authenticate an active admin, set ``request.admin`` and check the operation's permission."""
    token = bearer_token(request)
    if token is None:
        raise Unauthorized(
            "This operation needs an admin access token: send 'Authorization: Bearer <token>' "
            "with a token from POST /api/admin/auth/login.",
            code="missing_credentials",
        )
    try:
        claims = request.registry["token_signer"].verify(token, audience=ADMIN_AUDIENCE)
    except InvalidToken:
        raise _invalid_token() from None

    admin_id = try_parse_id("admin", claims.get("sub"))
    admin = request.dbsession.get(AdminUser, admin_id) if admin_id is not None else None
    if admin is None or admin.status != "active":
        raise _invalid_token()

    # fkod.core.audit records actions of a request with an ``admin`` as the admin's.
    request.admin = admin
    request.environ["fkod.principal"] = AdminPrincipal(admin_id=admin.id)
    if op.permission and not admin_role_permits(admin.role, op.permission):
        raise Forbidden(
            f"The admin role {admin.role} does not grant the permission {op.permission}.",
            code="missing_permission",
            errors=[{"location": "header", "name": "Authorization",
                     "description": f"requires permission {op.permission}"}],
        )


def includeme(config):
    register_auth_check(AUTH_ADMIN, check_admin)
