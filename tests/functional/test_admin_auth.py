"""Admin login, admin tokens against partner credentials, and the role by endpoint matrix."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
import webtest
from cornice.service import get_services
from joserfc import jwt

from fkod.admin import views
from fkod.admin.auth import ADMIN_AUDIENCE, ALL_PERMISSIONS
from fkod.admin.testing import (
    ADMIN_TEST_PASSWORD,
    admin_login,
    admin_with_headers,
    create_admin,
    set_admin_status,
)
from fkod.core.api import AUTH_ADMIN
from fkod.core.audit import AuditEntry
from fkod.core.auth.tokens import LOGIN_AUDIENCE
from fkod.core.db import run_in_transaction
from fkod.core.ids import parse_id
from fkod.core.testing import TestClient, auth_header
from tests.envelope import assert_envelope

pytestmark = pytest.mark.shared_app

LOGIN = "/api/admin/auth/login"
PARTNER = "/api/admin/partners/{id}"
ADMIN = "/api/admin/admins/{id}"
EVERY_ROLE = {"superadmin", "support", "finance", "readonly"}

# Each admin operation, a request the permission check lets through to a known
# status, and the roles allowed to call it. Item requests name unknown ids, so
# an allowed role gets 404 and changes nothing.
MATRIX = [
    ("GET", "/api/admin/partners", None, 200, EVERY_ROLE),
    ("GET", PARTNER, None, 404, EVERY_ROLE),
    ("POST", f"{PARTNER}/verification", {"decision": "approve"}, 404, {"superadmin", "support"}),
    ("POST", f"{PARTNER}/suspend", {"reason": "fraud"}, 404, {"superadmin"}),
    ("POST", f"{PARTNER}/reactivate", {}, 404, {"superadmin"}),
    ("PUT", f"{PARTNER}/overrides", {"commission_rate": "0.1"}, 404, {"superadmin", "finance"}),
    ("GET", f"{PARTNER}/api-keys", None, 404, EVERY_ROLE),
    ("GET", f"{PARTNER}/webhooks", None, 404, EVERY_ROLE),
    ("GET", f"{PARTNER}/tickets", None, 404, {"superadmin", "support", "readonly"}),
    ("GET", "/api/admin/admins", None, 200, {"superadmin"}),
    # An invalid body: an allowed role passes the permission check and gets 400.
    ("POST", "/api/admin/admins", {"email": "not an email"}, 400, {"superadmin"}),
    ("GET", ADMIN, None, 404, {"superadmin"}),
    ("PUT", ADMIN, {"role": "support"}, 404, {"superadmin"}),
    ("GET", "/api/admin/audit-log", None, 200, EVERY_ROLE),
]


def fill(template: str) -> str:
    """Put an unknown id of the right kind in place of {id}."""
    unknown = "admin_999999" if template.startswith("/api/admin/admins") else "partner_999999"
    return template.replace("{id}", unknown)


def send(client, method: str, template: str, body, headers: dict, status):
    path = fill(template)
    if method == "GET":
        return client.web.get(path, headers=headers, status=status)
    send_json = getattr(client.web, f"{method.lower()}_json")
    return send_json(path, body if body is not None else {}, headers=headers, status=status)


def audit_entries(app, action: str) -> list[AuditEntry]:
    def work(session):
        return session.scalars(
            sa.select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)
        ).all()

    return run_in_transaction(app.registry["db.session_factory"], work)


def admin_operations():
    """Return (method, path, operation) of every operation of the admin views."""
    names = {service.name for service in views.SERVICES}
    found = []
    for service in get_services():
        if service.name not in names:
            continue
        for method, view, _arguments in service.definitions:
            if method != "HEAD":
                found.append((method, service.path, getattr(view, "operation", None)))
    return found


# Login ------------------------------------------------------------------------------


def test_login_returns_admin_token(client, app):
    admin = create_admin(app, role="support")

    response = client.web.post_json(LOGIN, {"email": admin["email"].upper(),
                                            "password": ADMIN_TEST_PASSWORD})

    body = response.json
    assert response.headers["Cache-Control"] == "no-store"
    assert body["admin_id"] == admin["id"]
    assert body["role"] == "support"
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] > 0
    claims = jwt.decode(body["access_token"], app.registry["token_signer"].key).claims
    assert claims["aud"] == ADMIN_AUDIENCE
    assert claims["sub"] == admin["id"]
    assert claims["role"] == "support"


@pytest.mark.shared_app(False)
def test_login_audited(client, app):
    admin = create_admin(app)

    client.web.post_json(LOGIN, {"email": admin["email"], "password": ADMIN_TEST_PASSWORD},
                         extra_environ={"REMOTE_ADDR": "127.0.0.7"})

    [entry] = audit_entries(app, "admin.login")
    assert entry.actor_type == "admin"
    assert entry.actor_id == parse_id("admin", admin["id"])
    assert entry.target_id == admin["id"]
    assert entry.partner_id is None
    assert entry.ip_address == "127.0.0.7"


@pytest.mark.shared_app(False)
def test_wrong_password_rejected_and_audited(client, app):
    admin = create_admin(app)

    response = client.web.post_json(LOGIN, {"email": admin["email"], "password": "wrong guess"},
                                    status=401)

    assert_envelope(response, 401, "invalid_credentials")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "access_token" not in response.json
    [entry] = audit_entries(app, "admin.login_failed")
    assert entry.target_id == admin["id"]
    assert entry.details == {"reason": "wrong_password"}
    assert entry.actor_type == "system"
    assert audit_entries(app, "admin.login") == []


def test_repeated_failures_lock_admin_login(app_factory):
    client = TestClient(app_factory(**{"fkod.auth.login_failures_per_account": "3"}))
    admin = create_admin(client.app)
    for _ in range(3):
        client.web.post_json(LOGIN, {"email": admin["email"], "password": "wrong guess"},
                             status=401)

    response = client.web.post_json(
        LOGIN, {"email": admin["email"], "password": ADMIN_TEST_PASSWORD}, status=429)

    assert_envelope(response, 429, "too_many_failed_logins")
    assert int(response.headers["Retry-After"]) > 0


def test_admin_success_clears_failures(app_factory):
    client = TestClient(app_factory(**{"fkod.auth.login_failures_per_account": "3"}))
    admin = create_admin(client.app)
    for _ in range(2):
        client.web.post_json(LOGIN, {"email": admin["email"], "password": "wrong guess"},
                             status=401)
    admin_login(client, admin["email"])

    for _ in range(2):
        client.web.post_json(LOGIN, {"email": admin["email"], "password": "wrong guess"},
                             status=401)

    assert admin_login(client, admin["email"])


@pytest.mark.shared_app(False)
def test_unknown_email_audited_without_email(client, app):
    typed = "typed-password-by-mistake@nowhere.example"

    response = client.web.post_json(LOGIN, {"email": typed, "password": "whatever it is"},
                                    status=401)

    assert_envelope(response, 401, "invalid_credentials")
    [entry] = audit_entries(app, "admin.login_failed")
    assert entry.details == {"reason": "unknown_email"}
    assert entry.target_id is None
    assert typed not in str(entry.details)


@pytest.mark.shared_app(False)
def test_disabled_admin_cannot_log_in(client, app):
    admin = create_admin(app, status="disabled")

    response = client.web.post_json(LOGIN, {"email": admin["email"],
                                            "password": ADMIN_TEST_PASSWORD}, status=401)

    assert_envelope(response, 401, "invalid_credentials")
    [entry] = audit_entries(app, "admin.login_failed")
    assert entry.details == {"reason": "admin_disabled"}


def test_partner_member_cannot_log_in_as_admin(client):
    registered = client.register_partner()

    response = client.web.post_json(LOGIN, {"email": registered["user"]["email"],
                                            "password": "correct horse battery staple"},
                                    status=401)

    assert_envelope(response, 401, "invalid_credentials")


def test_login_rejects_bad_bodies(client):
    cases = [
        ({}, "email"),
        ({"email": "a@b.example"}, "password"),
        ({"email": 5, "password": "x"}, "email"),
        ({"email": "a@b.example", "password": "x", "role": "superadmin"}, "role"),
    ]
    for body, field in cases:
        response = client.web.post_json(LOGIN, body, status=400)

        envelope = assert_envelope(response, 400, "validation_failed")
        assert field in [error["name"] for error in envelope["errors"]], body


# Tokens and credentials ---------------------------------------------------------------


def test_disabled_admin_token_stops_working(client, app):
    admin, headers = admin_with_headers(client, "readonly")
    client.web.get("/api/admin/partners", headers=headers, status=200)

    set_admin_status(app, parse_id("admin", admin["id"]), "disabled")
    response = client.web.get("/api/admin/partners", headers=headers, status=401)

    assert_envelope(response, 401, "invalid_token")


def test_partner_token_rejected_on_admin_endpoints(client):
    _partner, token = client.partner_with_token()

    for method, path, body, _status, _roles in MATRIX:
        response = send(client, method, path, body, auth_header(token), 401)

        assert_envelope(response, 401, "invalid_token")


def test_admin_token_rejected_on_partner_endpoints(client):
    _admin, headers = admin_with_headers(client)

    for path in ("/api/partners/me", "/api/partners/api-keys", "/api/partners/audit-log"):
        response = client.web.get(path, headers=headers, status=401)

        assert_envelope(response, 401, "invalid_token")


def test_admin_token_rejected_by_gateway(client):
    _admin, headers = admin_with_headers(client)

    response = client.web.get("/api/v1/mentors", headers=headers, status=401)

    assert_envelope(response, 401, "invalid_api_key")


def test_login_token_with_admin_subject_rejected(client, app):
    admin = create_admin(app)
    # Signed with the platform's key, but for the partner audience.
    token, _ttl = app.registry["token_signer"].issue(
        {"sub": admin["id"], "role": "superadmin"}, audience=LOGIN_AUDIENCE)

    response = client.web.get("/api/admin/partners", headers=auth_header(token), status=401)

    assert_envelope(response, 401, "invalid_token")


def test_missing_and_garbage_credentials(client):
    missing = client.web.get("/api/admin/partners", status=401)
    garbage = client.web.get("/api/admin/partners", headers=auth_header("garbage"), status=401)
    basic = client.web.get("/api/admin/partners", headers={"Authorization": "Basic YTpi"},
                           status=401)

    assert_envelope(missing, 401, "missing_credentials")
    assert_envelope(garbage, 401, "invalid_token")
    assert_envelope(basic, 401, "invalid_authorization")


def test_role_change_applies_to_existing_token(client, app):
    admin, headers = admin_with_headers(client, "readonly")
    _superadmin, super_headers = admin_with_headers(client)
    client.web.get("/api/admin/admins", headers=headers, status=403)

    client.web.put_json(f"/api/admin/admins/{admin['id']}", {"role": "superadmin"},
                        headers=super_headers, status=200)

    client.web.get("/api/admin/admins", headers=headers, status=200)


# Roles --------------------------------------------------------------------------------


def test_matrix_covers_every_admin_operation(app):
    operations = {(method, path) for method, path, _op in admin_operations()}
    covered = {(method, template) for method, template, _body, _status, _roles in MATRIX}

    assert operations - {("POST", LOGIN)} == covered


def test_admin_operations_declare_known_permissions(app):
    for method, path, op in admin_operations():
        if path == LOGIN:
            continue
        assert op.auth == AUTH_ADMIN, f"{method} {path}"
        assert op.permission in ALL_PERMISSIONS, f"{method} {path}"


def check_role(client, role: str, subtests) -> None:
    _admin, headers = admin_with_headers(client, role)
    for method, path, body, allowed_status, roles in MATRIX:
        with subtests.test(msg=f"{role} {method} {path}"):
            if role in roles:
                response = send(client, method, path, body, headers, allowed_status)
                assert response.status_int == allowed_status
            else:
                response = send(client, method, path, body, headers, 403)
                envelope = assert_envelope(response, 403, "missing_permission")
                assert role in envelope["message"]


def test_superadmin_matrix(client, subtests):
    check_role(client, "superadmin", subtests)


def test_support_matrix(client, subtests):
    check_role(client, "support", subtests)


def test_finance_matrix(client, subtests):
    check_role(client, "finance", subtests)


def test_readonly_matrix(client, subtests):
    check_role(client, "readonly", subtests)


# Bodies that are not a JSON object the schemas can load.
MALFORMED_BODIES = [b'{"reason":', b"[]", b'"text"', b"null", b"42", b'{"zz_unknown_field": 1}',
                    b'{"reason": "\xff\xfe"}', b'{"reason": "\\ud800"}']


def send_raw(client, method: str, path: str, raw: bytes, headers: dict, content_type: str):
    request = webtest.TestRequest.blank(path, method=method, body=raw, headers=headers)
    request.environ["CONTENT_TYPE"] = content_type
    return client.web.do_request(request, status="*", expect_errors=True)


def test_admin_bodies_checked(client, subtests):
    _admin, headers = admin_with_headers(client)
    operations = [(method, template) for method, template, _body, _status, _roles in MATRIX
                  if method in ("POST", "PUT")] + [("POST", LOGIN)]

    for method, template in operations:
        for raw in MALFORMED_BODIES:
            with subtests.test(msg=f"{method} {template} {raw[:20]!r}"):
                response = send_raw(client, method, fill(template), raw, headers,
                                    "application/json")

                assert_envelope(response, 400)
        with subtests.test(msg=f"{method} {template} text/plain"):
            response = send_raw(client, method, fill(template), b"{}", headers, "text/plain")

            assert_envelope(response, 415, "unsupported_media_type")


def test_login_needs_no_token(client, app):
    admin = create_admin(app)

    token = admin_login(client, admin["email"])

    assert client.web.get("/api/admin/partners", headers=auth_header(token)).status_int == 200
