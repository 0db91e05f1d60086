"""A partner's OAuth applications (``/api/developers/applications``)."""

from __future__ import annotations

import re
import time

import pytest
import sqlalchemy as sa

from fkod.core.audit import AuditEntry
from fkod.core.auth.models import User
from fkod.core.auth.oauth_models import OAuthClient, OAuthConsent, OAuthToken, digest
from fkod.core.db import run_in_transaction, utcnow
from fkod.core.ids import parse_id
from fkod.core.testing import TEST_PASSWORD, auth_header, verify_partner
from tests.envelope import assert_envelope
from tests.functional.test_members import add_member

pytestmark = pytest.mark.shared_app

APPS = "/api/developers/applications"
INTEGRATIONS = "/api/partners/integrations"
CLIENT_ID = re.compile(r"^fkod_app_[A-Za-z0-9_-]{24}$")
SECRET = re.compile(r"^fkod_secret_[A-Za-z0-9_-]{43}$")
REDIRECT = "https://app.example.com/callback"


# Helpers ------------------------------------------------------------------------------


def in_db(app, work):
    return run_in_transaction(app.registry["db.session_factory"], work)


def app_body(**fields) -> dict:
    body = {"name": "Study Buddy", "redirect_uris": [REDIRECT], "scopes": ["users:read"]}
    body.update(fields)
    return body


def create(client, headers, status=201, **fields):
    return client.web.post_json(APPS, app_body(**fields), headers=headers, status=status)


def stored(app, application: dict) -> OAuthClient:
    number = parse_id("app", application["id"])
    return in_db(app, lambda session: session.get(OAuthClient, number))


def error_names(body: dict) -> list[str]:
    return [error["name"] for error in body["errors"]]


def audit_actions(app, partner_id: str) -> list[str]:
    number = parse_id("partner", partner_id)
    return in_db(app, lambda session: list(session.scalars(
        sa.select(AuditEntry.action).where(AuditEntry.partner_id == number)
        .order_by(AuditEntry.id))))


def new_user(app, email: str) -> int:
    def work(session):
        user = User(email=email, status="active")
        session.add(user)
        session.flush()
        return user.id

    return in_db(app, work)


def seed_token(app, client_id: str, user_id: int | None, name: str) -> int:
    def work(session):
        token = OAuthToken(client_id=client_id, user_id=user_id, token_type="Bearer",
                           access_token=f"jti-{name}", refresh_token=digest(f"refresh-{name}"),
                           scope="users:read", family_id=f"family-{name}", expires_in=3600)
        session.add(token)
        session.flush()
        return token.id

    return in_db(app, work)


def token_revocation(app, token_id: int) -> tuple[int, int]:
    def work(session):
        token = session.get(OAuthToken, token_id)
        return token.access_token_revoked_at, token.refresh_token_revoked_at

    return in_db(app, work)


def seed_consent(app, application_id: int, user_id: int, *, revoked: bool = False) -> int:
    def work(session):
        consent = OAuthConsent(user_id=user_id, oauth_client_id=application_id,
                               scopes=["users:read"], revoked_at=utcnow() if revoked else None)
        session.add(consent)
        session.flush()
        return consent.id

    return in_db(app, work)


class Owner:
    def __init__(self, client):
        self.partner, self.token = client.partner_with_token()
        self.headers = auth_header(self.token)


@pytest.fixture
def owner(client) -> Owner:
    return Owner(client)


# Creating -----------------------------------------------------------------------------


def test_create_confidential_application(client, app, owner):
    response = create(client, owner.headers, logo_uri="https://app.example.com/logo.png")

    body = response.json
    assert response.headers["Cache-Control"] == "no-store"
    assert body["id"].startswith("app_")
    assert CLIENT_ID.match(body["client_id"]), body["client_id"]
    assert SECRET.match(body["client_secret"]), body["client_secret"]
    assert body["client_type"] == "confidential"
    assert body["mode"] == "test"
    assert body["grant_types"] == ["authorization_code", "refresh_token"]
    assert body["token_endpoint_auth_method"] == "client_secret_basic"
    assert body["redirect_uris"] == [REDIRECT]
    assert body["scopes"] == ["users:read"]
    assert body["allowed_origins"] == []
    assert body["links"] == {"logo_uri": "https://app.example.com/logo.png", "client_uri": None,
                             "policy_uri": None, "tos_uri": None}
    assert body["authorized_users"] == 0
    assert body["integration_id"] is None

    row = stored(app, body)
    assert row.client_id == body["client_id"]
    assert row.client_secret == digest(body["client_secret"])
    assert body["client_secret"] not in row.client_secret
    assert row.check_client_secret(body["client_secret"])
    assert row.client_metadata["response_types"] == ["code"]
    assert row.client_metadata["token_endpoint_auth_method"] == "client_secret_basic"
    assert row.client_metadata["scope"] == "users:read"
    assert row.created_by_user_id is not None
    assert audit_actions(app, owner.partner["id"])[-1] == "oauth_app.created"


def test_create_public_application(client, app, owner):
    body = create(client, owner.headers, client_type="public",
                  redirect_uris=["http://127.0.0.1:8765/cb", "http://[::1]/cb",
                                 "http://localhost:3000/cb"],
                  allowed_origins=["https://SPA.example.com:443", "http://localhost:3000"]).json

    assert body["client_type"] == "public"
    assert body["client_secret"] is None
    assert body["token_endpoint_auth_method"] == "none"
    assert body["allowed_origins"] == ["https://spa.example.com", "http://localhost:3000"]
    row = stored(app, body)
    assert row.client_secret == ""
    assert row.is_public
    assert not row.check_client_secret("")
    assert row.allowed_origins == body["allowed_origins"]


def test_client_credentials_for_confidential_application(client, app, owner):
    body = create(client, owner.headers, redirect_uris=[],
                  grant_types=["client_credentials"]).json

    assert body["grant_types"] == ["client_credentials"]
    assert stored(app, body).client_metadata["response_types"] == []


def test_secret_shown_once(client, owner):
    created = create(client, owner.headers).json
    secret = created["client_secret"]

    later = [
        client.web.get(APPS, headers=owner.headers),
        client.web.get(f"{APPS}/{created['id']}", headers=owner.headers),
        client.web.put_json(f"{APPS}/{created['id']}", {"name": "Renamed"},
                            headers=owner.headers),
        client.web.get("/api/partners/audit-log", headers=owner.headers),
    ]

    for response in later:
        assert secret.encode() not in response.body, response.request.path
        assert digest(secret).encode() not in response.body, response.request.path
        assert b"client_secret\"" not in response.body, response.request.path


@pytest.mark.shared_app(False)
def test_live_application_needs_verified_partner(client, app, owner):
    response = create(client, owner.headers, status=403, mode="live")

    body = assert_envelope(response, 403, "partner_not_verified")
    assert error_names(body) == ["mode"]
    count = in_db(app, lambda session: session.scalar(
        sa.select(sa.func.count()).select_from(OAuthClient)))
    assert count == 0


def test_live_application_needs_verified_email(client, app, owner):
    verify_partner(app, owner.partner["id"], emails=False)

    response = create(client, owner.headers, status=403, mode="live")

    assert_envelope(response, 403, "email_not_verified")


def test_verified_partner_creates_live_application(client, app, owner):
    verify_partner(app, owner.partner["id"])

    body = create(client, owner.headers, mode="live").json

    assert body["mode"] == "live"
    assert stored(app, body).livemode is True


def test_application_linked_to_own_integration(client, owner):
    integration = client.web.post_json(
        INTEGRATIONS, {"name": "Course Sync", "category": "content"},
        headers=owner.headers, status=201).json["id"]

    body = create(client, owner.headers, integration_id=integration).json

    assert body["integration_id"] == integration


def test_other_partners_integration_refused(client, owner):
    other = Owner(client)
    integration = client.web.post_json(
        INTEGRATIONS, {"name": "Their Sync", "category": "content"},
        headers=other.headers, status=201).json["id"]

    body = assert_envelope(create(client, owner.headers, status=400,
                                  integration_id=integration), 400)

    assert error_names(body) == ["integration_id"]
    assert integration in body["message"]


# Validation ---------------------------------------------------------------------------


INVALID_BODIES = {
    "http_non_loopback_redirect": ({"redirect_uris": ["http://app.example.com/cb"]},
                                   "redirect_uris.0"),
    "redirect_fragment": ({"redirect_uris": ["https://app.example.com/cb#frag"]},
                          "redirect_uris.0"),
    "redirect_empty_fragment": ({"redirect_uris": ["https://app.example.com/cb#"]},
                                "redirect_uris.0"),
    "redirect_wildcard": ({"redirect_uris": ["https://*.example.com/cb"]}, "redirect_uris.0"),
    "redirect_wildcard_path": ({"redirect_uris": ["https://app.example.com/*"]},
                               "redirect_uris.0"),
    "redirect_relative": ({"redirect_uris": ["/callback"]}, "redirect_uris.0"),
    "redirect_custom_scheme": ({"redirect_uris": ["javascript:alert(1)"]}, "redirect_uris.0"),
    "redirect_userinfo": ({"redirect_uris": ["https://user:pw@app.example.com/cb"]},
                          "redirect_uris.0"),
    "redirect_space": ({"redirect_uris": ["https://app.example.com/c b"]}, "redirect_uris.0"),
    "redirect_too_long": ({"redirect_uris": ["https://app.example.com/" + "a" * 2000]},
                          "redirect_uris.0"),
    "redirect_bad_port": ({"redirect_uris": ["https://app.example.com:99999/cb"]},
                          "redirect_uris.0"),
    "redirect_duplicate": ({"redirect_uris": [REDIRECT, REDIRECT]}, "redirect_uris"),
    "too_many_redirects": ({"redirect_uris": [f"{REDIRECT}/{n}" for n in range(11)]},
                           "redirect_uris"),
    "no_redirect_for_code": ({"redirect_uris": []}, "redirect_uris"),
    "bad_scope": ({"scopes": ["users:read", "users:fly"]}, "scopes"),
    "admin_scope": ({"scopes": ["admin:write"]}, "scopes"),
    "no_scopes": ({"scopes": []}, "scopes"),
    "unknown_grant": ({"grant_types": ["password"]}, "grant_types.0"),
    "refresh_without_code": ({"grant_types": ["refresh_token", "client_credentials"]},
                             "grant_types"),
    "client_credentials_public": ({"client_type": "public",
                                   "grant_types": ["authorization_code",
                                                   "client_credentials"]}, "grant_types"),
    "empty_name": ({"name": "   "}, "name"),
    "long_name": ({"name": "n" * 101}, "name"),
    "name_not_string": ({"name": 7}, "name"),
    "extra_field": ({"client_secret": "mine"}, "client_secret"),
    "bad_client_type": ({"client_type": "trusted"}, "client_type"),
    "bad_mode": ({"mode": "prod"}, "mode"),
    "origin_with_path": ({"client_type": "public",
                          "allowed_origins": ["https://spa.example.com/app"]},
                         "allowed_origins.0"),
    "origin_http_remote": ({"client_type": "public",
                            "allowed_origins": ["http://spa.example.com"]}, "allowed_origins.0"),
    "origin_wildcard": ({"client_type": "public", "allowed_origins": ["https://*.example.com"]},
                        "allowed_origins.0"),
    "origins_on_confidential": ({"allowed_origins": ["https://spa.example.com"]},
                                "allowed_origins"),
    "logo_http": ({"logo_uri": "http://app.example.com/logo.png"}, "logo_uri"),
    "tos_not_url": ({"tos_uri": "terms"}, "tos_uri"),
    "integration_bad_id": ({"integration_id": "app_1"}, "integration_id"),
}


@pytest.mark.shared_app(False)
@pytest.mark.parametrize(("fields", "field"), list(INVALID_BODIES.values()),
                         ids=list(INVALID_BODIES))
def test_invalid_application_refused(client, app, owner, fields, field):
    response = create(client, owner.headers, status=400, **fields)

    body = assert_envelope(response, 400)
    assert field in error_names(body), body
    count = in_db(app, lambda session: session.scalar(
        sa.select(sa.func.count()).select_from(OAuthClient)))
    assert count == 0


DANGEROUS_URLS = ["javascript:alert(1)", "JaVaScRiPt:alert(1)", " javascript:alert(1)",
                  "java\tscript:alert(1)", "data:text/html,<script>alert(1)</script>",
                  "vbscript:x", "file:///etc/passwd", "//evil.test/x"]


@pytest.mark.shared_app(False)
@pytest.mark.parametrize("field", ["logo_uri", "client_uri", "policy_uri", "tos_uri",
                                   "redirect_uris"])
@pytest.mark.parametrize("url", DANGEROUS_URLS)
def test_dangerous_url_schemes_refused(client, app, owner, field, url):
    value = [url] if field == "redirect_uris" else url
    response = create(client, owner.headers, status=400, **{field: value})

    body = assert_envelope(response, 400)
    expected = "redirect_uris.0" if field == "redirect_uris" else field
    assert error_names(body) == [expected], body
    count = in_db(app, lambda session: session.scalar(
        sa.select(sa.func.count()).select_from(OAuthClient)))
    assert count == 0


def test_missing_required_fields(client, owner):
    response = client.web.post_json(APPS, {}, headers=owner.headers, status=400)

    body = assert_envelope(response, 400, "validation_failed")
    assert {"name", "scopes"} <= set(error_names(body))


def test_read_only_member_cannot_create(client, owner):
    member = add_member(client, owner.token, "read_only")
    headers = auth_header(member["token"])

    response = create(client, headers, status=403)

    assert_envelope(response, 403, "missing_permission")
    client.web.get(APPS, headers=headers, status=200)


def test_customer_without_partner_refused(client):
    client.web.post_json("/api/auth/register", {"email": "learner@example.org",
                                                "password": TEST_PASSWORD}, status=201)
    token = client.login("learner@example.org")

    response = client.web.get(APPS, headers=auth_header(token), status=403)

    assert_envelope(response, 403, "not_a_partner_member")


# Reading and listing ------------------------------------------------------------------


def test_list_and_filter_by_mode(client, app, owner):
    verify_partner(app, owner.partner["id"])
    test_app = create(client, owner.headers, name="Sandbox").json
    live_app = create(client, owner.headers, name="Production", mode="live").json

    everything = client.web.get(APPS, headers=owner.headers).json
    live = client.web.get(f"{APPS}?mode=live", headers=owner.headers).json
    test = client.web.get(f"{APPS}?mode=test", headers=owner.headers).json
    first = client.web.get(f"{APPS}?limit=1", headers=owner.headers).json

    assert [item["id"] for item in everything["data"]] == [live_app["id"], test_app["id"]]
    assert [item["id"] for item in live["data"]] == [live_app["id"]]
    assert [item["id"] for item in test["data"]] == [test_app["id"]]
    assert first["has_more"] is True
    second = client.web.get(f"{APPS}?limit=1&cursor={first['next_cursor']}",
                            headers=owner.headers).json
    assert [item["id"] for item in second["data"]] == [test_app["id"]]
    client.web.get(f"{APPS}?mode=prod", headers=owner.headers, status=400)


def test_list_shows_only_own_applications(client, owner):
    create(client, owner.headers)
    other = Owner(client)

    assert client.web.get(APPS, headers=other.headers).json["data"] == []


@pytest.mark.parametrize(("method", "suffix"), [
    ("get", ""), ("put_json", ""), ("delete", ""), ("post_json", "/rotate-secret"),
])
def test_other_partners_application_not_found(client, app, owner, method, suffix):
    created = create(client, owner.headers).json
    other = Owner(client)
    path = f"{APPS}/{created['id']}{suffix}"
    kwargs = {"headers": other.headers, "status": 404}
    if method == "put_json":
        response = client.web.put_json(path, {"name": "Stolen"}, **kwargs)
    elif method == "post_json":
        response = client.web.post_json(path, {}, **kwargs)
    else:
        response = getattr(client.web, method)(path, **kwargs)

    assert_envelope(response, 404, "not_found")
    row = stored(app, created)
    assert row.status == "active"
    assert row.client_name == "Study Buddy"
    assert row.check_client_secret(created["client_secret"])


@pytest.mark.parametrize("bad_id", ["app_999999", "app_abc", "key_1", "app_01"])
def test_unknown_application_not_found(client, owner, bad_id):
    response = client.web.get(f"{APPS}/{bad_id}", headers=owner.headers, status=404)

    assert_envelope(response, 404, "not_found")


def test_authorized_users_counts_unrevoked_consents(client, app, owner):
    created = create(client, owner.headers).json
    number = parse_id("app", created["id"])
    for index in range(3):
        seed_consent(app, number, new_user(app, f"user{index}@example.org"))
    seed_consent(app, number, new_user(app, "gone@example.org"), revoked=True)

    single = client.web.get(f"{APPS}/{created['id']}", headers=owner.headers).json
    listed = client.web.get(APPS, headers=owner.headers).json["data"]

    assert single["authorized_users"] == 3
    assert listed[0]["authorized_users"] == 3


# Updating -----------------------------------------------------------------------------


def test_update_changes_only_given_fields(client, app, owner):
    created = create(client, owner.headers, client_uri="https://app.example.com").json

    body = client.web.put_json(f"{APPS}/{created['id']}", {
        "name": "Study Buddy Pro", "scopes": ["courses:read", "users:read"],
        "redirect_uris": [REDIRECT, "https://app.example.com/other"],
        "tos_uri": "https://app.example.com/terms"}, headers=owner.headers).json

    assert body["name"] == "Study Buddy Pro"
    assert body["scopes"] == ["courses:read", "users:read"]
    assert body["redirect_uris"] == [REDIRECT, "https://app.example.com/other"]
    assert body["links"]["client_uri"] == "https://app.example.com"
    assert body["links"]["tos_uri"] == "https://app.example.com/terms"
    assert body["grant_types"] == created["grant_types"]
    assert body["client_id"] == created["client_id"]
    assert "client_secret" not in body
    row = stored(app, created)
    assert row.client_metadata["scope"] == "courses:read users:read"
    assert row.check_client_secret(created["client_secret"])
    assert audit_actions(app, owner.partner["id"])[-1] == "oauth_app.updated"


def test_update_clears_link_with_null(client, owner):
    created = create(client, owner.headers, policy_uri="https://app.example.com/privacy").json

    body = client.web.put_json(f"{APPS}/{created['id']}", {"policy_uri": None},
                               headers=owner.headers).json

    assert body["links"]["policy_uri"] is None


@pytest.mark.parametrize(("fields", "field"), [
    ({"client_type": "public"}, "client_type"),
    ({"mode": "live"}, "mode"),
    ({"client_id": "fkod_app_mine"}, "client_id"),
    ({"redirect_uris": ["http://example.com/cb"]}, "redirect_uris.0"),
    ({"scopes": ["nope:read"]}, "scopes"),
    ({"redirect_uris": []}, "redirect_uris"),
    ({}, ""),
])
def test_update_refuses_invalid_fields(client, app, owner, fields, field):
    created = create(client, owner.headers).json

    response = client.web.put_json(f"{APPS}/{created['id']}", fields, headers=owner.headers,
                                   status=400)

    body = assert_envelope(response, 400)
    assert field in error_names(body)
    assert stored(app, created).redirect_uris == [REDIRECT]


def test_update_refuses_client_credentials_on_public(client, owner):
    created = create(client, owner.headers, client_type="public").json

    response = client.web.put_json(f"{APPS}/{created['id']}",
                                   {"grant_types": ["client_credentials"]},
                                   headers=owner.headers, status=400)

    assert error_names(assert_envelope(response, 400)) == ["grant_types"]


def test_update_without_changes_is_not_audited(client, app, owner):
    created = create(client, owner.headers).json
    before = audit_actions(app, owner.partner["id"])

    client.web.put_json(f"{APPS}/{created['id']}", {"name": "Study Buddy"},
                        headers=owner.headers)

    assert audit_actions(app, owner.partner["id"]) == before


# Rotating the secret ------------------------------------------------------------------


def test_rotate_secret(client, app, owner):
    created = create(client, owner.headers).json
    old_digest = stored(app, created).client_secret

    response = client.web.post_json(f"{APPS}/{created['id']}/rotate-secret", {},
                                    headers=owner.headers)

    body = response.json
    assert response.headers["Cache-Control"] == "no-store"
    assert SECRET.match(body["client_secret"])
    assert body["client_secret"] != created["client_secret"]
    assert body["secret_rotated_at"] is not None
    row = stored(app, created)
    assert row.client_secret != old_digest
    assert row.check_client_secret(body["client_secret"])
    assert not row.check_client_secret(created["client_secret"])
    assert audit_actions(app, owner.partner["id"])[-1] == "oauth_app.secret_rotated"
    shown = client.web.get(f"{APPS}/{created['id']}", headers=owner.headers)
    assert body["client_secret"].encode() not in shown.body


def test_rotate_secret_of_public_application_conflicts(client, app, owner):
    created = create(client, owner.headers, client_type="public").json

    response = client.web.post_json(f"{APPS}/{created['id']}/rotate-secret", {},
                                    headers=owner.headers, status=409)

    assert_envelope(response, 409, "public_application")
    assert stored(app, created).client_secret == ""


def test_read_only_member_cannot_rotate(client, app, owner):
    created = create(client, owner.headers).json
    member = add_member(client, owner.token, "read_only")

    response = client.web.post_json(f"{APPS}/{created['id']}/rotate-secret", {},
                                    headers=auth_header(member["token"]), status=403)

    assert_envelope(response, 403, "missing_permission")
    assert stored(app, created).check_client_secret(created["client_secret"])


# Deleting -----------------------------------------------------------------------------


@pytest.mark.shared_app(False)
def test_delete_revokes_tokens_and_authorizations(client, app, owner):
    created = create(client, owner.headers).json
    number = parse_id("app", created["id"])
    user_id = new_user(app, "learner@example.org")
    seed_consent(app, number, user_id)
    tokens = [seed_token(app, created["client_id"], user_id, "one"),
              seed_token(app, created["client_id"], None, "two")]
    other = create(client, owner.headers, name="Other").json
    untouched = seed_token(app, other["client_id"], user_id, "three")
    before = int(time.time())

    client.web.delete(f"{APPS}/{created['id']}", headers=owner.headers, status=204)

    for token_id in tokens:
        access, refresh = token_revocation(app, token_id)
        assert access >= before
        assert refresh >= before
    assert token_revocation(app, untouched) == (0, 0)
    row = stored(app, created)
    assert row.status == "deleted"
    assert row.deleted_at is not None
    revoked = in_db(app, lambda session: session.scalar(
        sa.select(OAuthConsent.revoked_at).where(OAuthConsent.oauth_client_id == number)))
    assert revoked is not None
    assert audit_actions(app, owner.partner["id"])[-1] == "oauth_app.deleted"


def test_deleted_application_is_gone(client, owner):
    created = create(client, owner.headers).json
    path = f"{APPS}/{created['id']}"
    client.web.delete(path, headers=owner.headers, status=204)

    assert_envelope(client.web.get(path, headers=owner.headers, status=404), 404)
    assert_envelope(client.web.put_json(path, {"name": "Back"}, headers=owner.headers,
                                         status=404), 404)
    assert_envelope(client.web.delete(path, headers=owner.headers, status=404), 404)
    assert_envelope(client.web.post_json(f"{path}/rotate-secret", {}, headers=owner.headers,
                                         status=404), 404)
    assert client.web.get(APPS, headers=owner.headers).json["data"] == []


def test_delete_keeps_earlier_revocation_time(client, app, owner):
    created = create(client, owner.headers).json
    token_id = seed_token(app, created["client_id"], None, "old")

    def revoke_access(session):
        session.get(OAuthToken, token_id).access_token_revoked_at = 1000

    in_db(app, revoke_access)

    client.web.delete(f"{APPS}/{created['id']}", headers=owner.headers, status=204)

    access, refresh = token_revocation(app, token_id)
    assert access == 1000
    assert refresh > 1000


@pytest.mark.parametrize("client_type", ["confidential", "public"])
def test_create_retried_with_idempotency_key(client, client_type):
    _partner, token = client.partner_with_token()
    headers = {**auth_header(token), "Idempotency-Key": f"create-{client_type}"}
    body = {"name": "Retry", "client_type": client_type,
            "redirect_uris": ["https://app.example/callback"], "scopes": ["users:read"]}
    first = client.web.post_json("/api/developers/applications", body, headers=headers,
                                 status=201).json
    again = client.web.post_json("/api/developers/applications", body, headers=headers,
                                 status=201).json

    assert again["id"] == first["id"]
    listed = client.web.get("/api/developers/applications", headers=auth_header(token)).json
    assert len(listed["data"]) == 1
    if client_type == "confidential":
        # The secret is shown once; the replay masks it.
        assert first["client_secret"].startswith("fkod_secret_")
        assert again["client_secret"] == "fkod_secret_…"
    else:
        assert first["client_secret"] is None
        assert again["client_secret"] is None
