"""Test helpers for the admin API: create admin users and log them in.

They write to the application's database directly, without an audit entry,
so tests of the audit log see only the entries their own requests cause.
"""

from __future__ import annotations

import secrets

from fkod.admin.services import add_admin
from fkod.core.auth.models import AdminUser
from fkod.core.db import run_in_transaction
from fkod.core.testing import TestClient, auth_header

# A fixed password for test admins only; test databases are thrown away.
ADMIN_TEST_PASSWORD = "admin password for tests"  # noqa: S105


def create_admin(app, *, role: str = "superadmin", email: str | None = None,
                 name: str = "Test Admin", password: str = ADMIN_TEST_PASSWORD,
                 status: str = "active") -> dict:
    """Create an admin user and return its ``id`` (admin_…), ``email`` and ``role``."""
    email = email or f"{role}-{secrets.token_hex(4)}@staff.fkod.example"
    hasher = app.registry["password_hasher"]

    def work(session):
        admin = add_admin(session, hasher, {"email": email, "name": name, "role": role,
                                            "password": password})
        admin.status = status
        session.flush()
        return admin.id

    admin_id = run_in_transaction(app.registry["db.session_factory"], work)
    return {"id": f"admin_{admin_id}", "email": email.lower(), "role": role}


def admin_login(client: TestClient, email: str, password: str = ADMIN_TEST_PASSWORD) -> str:
    """Log an admin in through the API and return the admin access token."""
    response = client.web.post_json("/api/admin/auth/login",
                                    {"email": email, "password": password}, status=200)
    return response.json["access_token"]


def admin_with_headers(client: TestClient, role: str = "superadmin") -> tuple[dict, dict]:
    """Create an admin with ``role``, log it in, and return it with its Authorization header."""
    admin = create_admin(client.app, role=role)
    return admin, auth_header(admin_login(client, admin["email"]))


def set_admin_status(app, admin_id: int, status: str) -> None:
    def work(session):
        session.get(AdminUser, admin_id).status = status

    run_in_transaction(app.registry["db.session_factory"], work)
