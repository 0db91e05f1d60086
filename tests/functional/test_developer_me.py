"""The caller's developer profile (``GET /api/developers/me``)."""

from __future__ import annotations

import pytest

from fkod.core.testing import TEST_PASSWORD, auth_header, verify_partner
from tests.envelope import assert_envelope
from tests.functional.test_members import add_member

pytestmark = pytest.mark.shared_app

ME = "/api/developers/me"
WEBHOOKS = "/api/partners/webhooks"


def customer_token(client, email: str) -> str:
    client.web.post_json("/api/auth/register", {"email": email, "password": TEST_PASSWORD},
                         status=201)
    return client.login(email)


def test_me_profile_and_counts(client, app, make_receiver):
    partner, token = client.partner_with_token(company_name="Profile Labs")
    headers = auth_header(token)
    client.create_key(token)
    client.create_key(token)
    revoked = client.create_key(token)
    client.web.delete(f"/api/partners/api-keys/{revoked['id']}", headers=headers)
    receiver = make_receiver()
    client.web.post_json(WEBHOOKS, {"url": receiver.url, "event_types": ["user.created"]},
                         headers=headers, status=201)

    body = client.web.get(ME, headers=headers, status=200).json

    assert body["user_id"].startswith("user_")
    assert body["email"].endswith("@acme.example")
    assert body["partner"]["id"] == partner["id"]
    assert body["partner"]["company_name"] == "Profile Labs"
    assert body["partner"]["verification_status"] == "unverified"
    assert body["role"] == "owner"
    assert "partner:write" in body["permissions"]
    assert body["live_mode"] == {"available": False,
                                 "blocked_by": ["email_not_verified", "partner_not_verified"]}
    assert body["api_keys"] == {"live": 0, "test": 2}
    assert body["webhook_endpoints"] == {"live": 0, "test": 1}
    assert body["oauth_applications"] == {"live": 0, "test": 0}

    verify_partner(app, partner["id"])
    client.create_key(token, mode="live")
    body = client.web.get(ME, headers=headers, status=200).json
    assert body["live_mode"] == {"available": True, "blocked_by": []}
    assert body["partner"]["verification_status"] == "verified"
    assert body["api_keys"] == {"live": 1, "test": 2}


def test_me_role_and_permissions(client):
    _partner, owner_token = client.partner_with_token()
    client.create_key(owner_token)
    member = add_member(client, owner_token, "read_only")

    body = client.web.get(ME, headers=auth_header(member["token"]), status=200).json

    assert body["role"] == "read_only"
    assert "partner:write" not in body["permissions"]
    assert "api_keys:read" in body["permissions"]
    # The counts are the partner's, the same for every member.
    assert body["api_keys"] == {"live": 0, "test": 1}


def test_me_needs_partner_member(client):
    assert_envelope(client.web.get(ME, status=401), 401)
    token = customer_token(client, "learner@example.org")
    assert_envelope(client.web.get(ME, headers=auth_header(token), status=403), 403,
                    "not_a_partner_member")
    response = client.web.get(ME + "?verbose=1", headers=auth_header(
        client.partner_with_token()[1]), status=400)
    body = assert_envelope(response, 400)
    assert [error["name"] for error in body["errors"]] == ["verbose"]
