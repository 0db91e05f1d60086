"""The applications a user authorized (``/api/auth/me/authorizations``)."""

from __future__ import annotations

import secrets
import time

import pytest
import sqlalchemy as sa

from fkod.core.audit import AuditEntry
from fkod.core.auth.oauth_models import OAuthConsent, OAuthToken, digest
from fkod.core.db import run_in_transaction, utcnow
from fkod.core.ids import parse_id
from fkod.core.testing import TEST_PASSWORD, auth_header
from tests.envelope import assert_envelope

pytestmark = pytest.mark.shared_app

AUTHORIZATIONS = "/api/auth/me/authorizations"
APPS = "/api/developers/applications"


def in_db(app, work):
    return run_in_transaction(app.registry["db.session_factory"], work)


class Customer:
    """A registered customer with a login token."""

    def __init__(self, client):
        email = f"learner-{secrets.token_hex(4)}@example.org"
        account = client.web.post_json("/api/auth/register",
                                       {"email": email, "password": TEST_PASSWORD},
                                       status=201).json
        self.user_id = parse_id("user", account["id"])
        self.headers = auth_header(client.login(email))


def new_application(client, company_name: str = "Acme Learning", **fields) -> dict:
    _partner, token = client.partner_with_token(company_name=company_name)
    body = {"name": "Study Buddy", "redirect_uris": ["https://app.example.com/cb"],
            "scopes": ["users:read", "courses:read"],
            "logo_uri": "https://app.example.com/logo.png", **fields}
    created = client.web.post_json(APPS, body, headers=auth_header(token), status=201).json
    created["headers"] = auth_header(token)
    return created


def seed_consent(app, application: dict, user_id: int, scopes=("users:read",)) -> int:
    def work(session):
        consent = OAuthConsent(user_id=user_id, oauth_client_id=parse_id("app", application["id"]),
                               scopes=list(scopes))
        session.add(consent)
        session.flush()
        return consent.id

    return in_db(app, work)


def seed_token(app, client_id: str, user_id: int | None) -> int:
    name = secrets.token_hex(6)

    def work(session):
        token = OAuthToken(client_id=client_id, user_id=user_id, token_type="Bearer",
                           access_token=f"jti-{name}", refresh_token=digest(f"refresh-{name}"),
                           scope="users:read", family_id=f"family-{name}", expires_in=3600)
        session.add(token)
        session.flush()
        return token.id

    return in_db(app, work)


def revocation(app, token_id: int) -> tuple[int, int]:
    def work(session):
        token = session.get(OAuthToken, token_id)
        return token.access_token_revoked_at, token.refresh_token_revoked_at

    return in_db(app, work)


def consent_revoked_at(app, consent_id: int):
    return in_db(app, lambda session: session.get(OAuthConsent, consent_id).revoked_at)


@pytest.fixture
def customer(client) -> Customer:
    return Customer(client)


def test_list_authorizations(client, app, customer):
    first = new_application(client, company_name="Acme Learning")
    second = new_application(client, company_name="Beta Courses", name="Quiz Master")
    seed_consent(app, first, customer.user_id, scopes=["users:read"])
    seed_consent(app, second, customer.user_id, scopes=["users:read", "courses:read"])

    body = client.web.get(AUTHORIZATIONS, headers=customer.headers).json

    assert body["has_more"] is False
    assert [item["client_id"] for item in body["data"]] == [second["client_id"],
                                                            first["client_id"]]
    newest = body["data"][0]
    assert newest["name"] == "Quiz Master"
    assert newest["company_name"] == "Beta Courses"
    assert newest["scopes"] == ["users:read", "courses:read"]
    assert newest["mode"] == "test"
    assert newest["links"]["logo_uri"] == "https://app.example.com/logo.png"
    assert newest["created_at"].endswith("Z")
    assert body["data"][1]["company_name"] == "Acme Learning"


def test_list_skips_revoked_and_deleted(client, app, customer):
    mine = new_application(client)
    revoked = new_application(client)
    deleted = new_application(client)
    seed_consent(app, mine, customer.user_id)
    revoked_id = seed_consent(app, revoked, customer.user_id)
    seed_consent(app, deleted, customer.user_id)
    seed_consent(app, mine, Customer(client).user_id)

    def revoke(session):
        session.get(OAuthConsent, revoked_id).revoked_at = utcnow()

    in_db(app, revoke)
    client.web.delete(f"{APPS}/{deleted['id']}", headers=deleted["headers"], status=204)

    body = client.web.get(AUTHORIZATIONS, headers=customer.headers).json

    assert [item["client_id"] for item in body["data"]] == [mine["client_id"]]


def test_list_pages(client, app, customer):
    for _ in range(3):
        seed_consent(app, new_application(client), customer.user_id)

    first = client.web.get(f"{AUTHORIZATIONS}?limit=2", headers=customer.headers).json
    rest = client.web.get(f"{AUTHORIZATIONS}?limit=2&cursor={first['next_cursor']}",
                          headers=customer.headers).json

    assert len(first["data"]) == 2
    assert first["has_more"] is True
    assert len(rest["data"]) == 1
    assert rest["has_more"] is False


def test_partner_member_lists_own_authorizations(client, app):
    application = new_application(client)

    assert client.web.get(AUTHORIZATIONS, headers=application["headers"]).json["data"] == []


def test_revoke_authorization_revokes_tokens(client, app, customer):
    application = new_application(client)
    consent_id = seed_consent(app, application, customer.user_id)
    mine = [seed_token(app, application["client_id"], customer.user_id) for _ in range(2)]
    someone_else = seed_token(app, application["client_id"], Customer(client).user_id)
    machine = seed_token(app, application["client_id"], None)
    before = int(time.time())

    client.web.delete(f"{AUTHORIZATIONS}/{application['client_id']}",
                      headers=customer.headers, status=204)

    assert consent_revoked_at(app, consent_id) is not None
    for token_id in mine:
        access, refresh = revocation(app, token_id)
        assert access >= before
        assert refresh >= before
    assert revocation(app, someone_else) == (0, 0)
    assert revocation(app, machine) == (0, 0)
    assert client.web.get(AUTHORIZATIONS, headers=customer.headers).json["data"] == []
    shown = client.web.get(f"{APPS}/{application['id']}", headers=application["headers"]).json
    assert shown["authorized_users"] == 0
    actions = in_db(app, lambda session: list(session.scalars(
        sa.select(AuditEntry.action).where(AuditEntry.target_id == application["id"]))))
    assert actions[-1] == "oauth_app.authorization_revoked"


def test_revoke_twice_is_not_found(client, app, customer):
    application = new_application(client)
    seed_consent(app, application, customer.user_id)
    path = f"{AUTHORIZATIONS}/{application['client_id']}"
    client.web.delete(path, headers=customer.headers, status=204)

    response = client.web.delete(path, headers=customer.headers, status=404)

    assert_envelope(response, 404, "not_found")


def test_revoke_other_users_authorization_not_found(client, app, customer):
    application = new_application(client)
    owner = Customer(client)
    consent_id = seed_consent(app, application, owner.user_id)
    token_id = seed_token(app, application["client_id"], owner.user_id)

    response = client.web.delete(f"{AUTHORIZATIONS}/{application['client_id']}",
                                 headers=customer.headers, status=404)

    assert_envelope(response, 404, "not_found")
    assert consent_revoked_at(app, consent_id) is None
    assert revocation(app, token_id) == (0, 0)


@pytest.mark.parametrize("client_id", ["fkod_app_" + "x" * 24, "app_1", "fkod_app_short"])
def test_revoke_unknown_application_not_found(client, customer, client_id):
    response = client.web.delete(f"{AUTHORIZATIONS}/{client_id}", headers=customer.headers,
                                 status=404)

    assert_envelope(response, 404, "not_found")


def test_authorizations_need_login(client):
    response = client.web.get(AUTHORIZATIONS, status=401)

    assert_envelope(response, 401)
