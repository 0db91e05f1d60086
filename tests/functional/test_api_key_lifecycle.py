"""API key lifecycle: read, change, revoke, rotate with a grace period, test, scopes, IP ranges."""

from __future__ import annotations

import time

import pytest

from fkod.core.testing import TestClient, auth_header

pytestmark = pytest.mark.shared_app

MENTORS = "/api/v1/mentors"


@pytest.fixture
def owner(client):
    """A partner's owner token and one test key with mentors:read."""
    _partner, token = client.partner_with_token()
    key = client.create_key(token, scopes=("mentors:read", "users:read"))
    return token, key


def key_url(key: dict, suffix: str = "") -> str:
    return f"/api/partners/api-keys/{key['id']}{suffix}"


def call_gateway(client, secret: str, status: int = 200, **kwargs):
    return client.web.get(MENTORS, headers=auth_header(secret), status=status, **kwargs)


def test_get_own_key(client, owner):
    token, key = owner
    body = client.web.get(key_url(key), headers=auth_header(token)).json
    assert body["id"] == key["id"]
    assert body["status"] == "active"
    assert "key" not in body


@pytest.mark.parametrize("bad_id", ["key_999999", "key_abc", "user_1", "key_99999999999"])
def test_unknown_key_id_not_found(client, owner, bad_id):
    token, _key = owner
    response = client.web.get(f"/api/partners/api-keys/{bad_id}", headers=auth_header(token),
                              status=404)
    assert response.json["code"] == "not_found"


@pytest.mark.parametrize(("method", "suffix"), [
    ("get", ""), ("put_json", ""), ("delete", ""), ("post_json", "/rotate"),
    ("post_json", "/test"), ("get", "/scopes"), ("post_json", "/scopes"),
])
def test_other_partner_key_not_found(client, owner, method, suffix):
    _token, key = owner
    _other, other_token = client.partner_with_token()
    kwargs = {"headers": auth_header(other_token), "status": 404}
    if method in ("put_json", "post_json"):
        body = {"scopes": ["users:read"]} if suffix == "/scopes" else (
            {"key_name": "x"} if method == "put_json" else {})
        response = getattr(client.web, method)(key_url(key, suffix), body, **kwargs)
    else:
        response = getattr(client.web, method)(key_url(key, suffix), **kwargs)
    assert response.json["code"] == "not_found"


def test_update_fields(client, owner):
    token, key = owner
    body = client.web.put_json(key_url(key), {
        "key_name": "renamed", "rate_limit": 50, "rate_limit_window": 60,
        "expires_at": "2099-01-01T00:00:00Z", "allowed_ips": ["203.0.113.7", "10.0.0.0/8"],
    }, headers=auth_header(token)).json
    assert body["key_name"] == "renamed"
    assert body["rate_limit"] == 50
    assert body["expires_at"] == "2099-01-01T00:00:00Z"
    assert body["allowed_ips"] == ["10.0.0.0/8", "203.0.113.7/32"]


@pytest.mark.parametrize(("body", "field"), [
    ({"scopes": ["users:fly"]}, "scopes"),
    ({"scopes": ["admin:write"]}, "scopes"),
    ({"scopes": []}, "scopes"),
    ({"rate_limit": -1}, "rate_limit"),
    ({"rate_limit": 0}, "rate_limit"),
    ({"rate_limit": 10**12}, "rate_limit"),
    ({"rate_limit": "100"}, "rate_limit"),
    ({"rate_limit_window": 0}, "rate_limit_window"),
    ({"expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
    ({"expires_at": "2099-01-01T00:00:00"}, "expires_at"),
    ({"allowed_ips": ["10.0.0.0/33"]}, "allowed_ips.0"),
    ({"allowed_ips": ["not-an-ip"]}, "allowed_ips.0"),
    ({"allowed_ips": ["10.0.0.1"] * 51}, "allowed_ips"),
    ({"key_name": ""}, "key_name"),
    ({"mode": "live"}, "mode"),
    ({"key_hash": "x"}, "key_hash"),
    ({}, ""),
])
def test_update_rejects_bad_input(client, owner, body, field):
    token, key = owner
    response = client.web.put_json(key_url(key), body, headers=auth_header(token), status=400)
    assert field in [error["name"] for error in response.json["errors"]]


def test_revoke_stops_key_at_once(client, owner):
    token, key = owner
    call_gateway(client, key["key"])
    revoked = client.web.delete(key_url(key), headers=auth_header(token)).json
    response = call_gateway(client, key["key"], status=401)
    assert revoked["status"] == "revoked"
    assert response.json["code"] == "api_key_revoked"
    assert client.web.get(key_url(key), headers=auth_header(token)).json["status"] == "revoked"


def test_revoke_immediate_in_same_process(client, owner):
    token, key = owner
    for _ in range(3):
        call_gateway(client, key["key"])
    client.web.delete(key_url(key), headers=auth_header(token))
    for _ in range(5):
        call_gateway(client, key["key"], status=401)


def test_revoke_reaches_other_process_within_second(app_factory):
    first = TestClient(app_factory())
    _partner, token = first.partner_with_token()
    key = first.create_key(token, scopes=("mentors:read",))
    second = TestClient(app_factory())
    call_gateway(second, key["key"])
    first.web.delete(key_url(key), headers=auth_header(token))
    # The other process trusts its cached verification for at most
    # fkod.gateway.key_cache_seconds (1 s).
    time.sleep(1.05)
    for _ in range(5):
        call_gateway(second, key["key"], status=401)


def test_cache_off_revokes_everywhere_at_once(app_factory):
    first = TestClient(app_factory(**{"fkod.gateway.key_cache_seconds": "0"}))
    _partner, token = first.partner_with_token()
    key = first.create_key(token, scopes=("mentors:read",))
    second = TestClient(app_factory(**{"fkod.gateway.key_cache_seconds": "0"}))
    call_gateway(second, key["key"])
    first.web.delete(key_url(key), headers=auth_header(token))
    call_gateway(second, key["key"], status=401)


def test_revoke_twice_is_harmless(client, owner):
    token, key = owner
    client.web.delete(key_url(key), headers=auth_header(token))
    assert client.web.delete(key_url(key), headers=auth_header(token)).json["status"] == "revoked"


def test_revoked_key_cannot_change(client, owner):
    token, key = owner
    client.web.delete(key_url(key), headers=auth_header(token))
    response = client.web.put_json(key_url(key), {"key_name": "x"}, headers=auth_header(token),
                                   status=409)
    assert response.json["code"] == "api_key_revoked"
    client.web.post_json(key_url(key, "/rotate"), {}, headers=auth_header(token), status=409)


def test_rotate_without_grace(client, owner):
    token, key = owner
    response = client.web.post_json(key_url(key, "/rotate"), {"grace_period_seconds": 0},
                                    headers=auth_header(token))
    new_secret = response.json["key"]
    assert response.headers["Cache-Control"] == "no-store"
    assert new_secret != key["key"]
    assert call_gateway(client, key["key"], status=401).json["code"] == "api_key_rotated"
    call_gateway(client, new_secret)


def test_rotate_with_grace(client, owner):
    token, key = owner
    rotated = client.web.post_json(key_url(key, "/rotate"), {"grace_period_seconds": 2},
                                   headers=auth_header(token)).json
    call_gateway(client, key["key"])
    call_gateway(client, rotated["key"])
    assert rotated["previous_key_prefix"] == key["key_prefix"]
    time.sleep(2.2)
    call_gateway(client, key["key"], status=401)
    call_gateway(client, rotated["key"])


def test_second_rotation_stops_first_secret(client, owner):
    token, key = owner
    first = client.web.post_json(key_url(key, "/rotate"), {"grace_period_seconds": 3600},
                                 headers=auth_header(token)).json
    second = client.web.post_json(key_url(key, "/rotate"), {"grace_period_seconds": 3600},
                                  headers=auth_header(token)).json
    call_gateway(client, key["key"], status=401)
    call_gateway(client, first["key"])
    call_gateway(client, second["key"])


def test_revoke_ends_grace_period(client, owner):
    token, key = owner
    rotated = client.web.post_json(key_url(key, "/rotate"), {"grace_period_seconds": 3600},
                                   headers=auth_header(token)).json
    client.web.delete(key_url(key), headers=auth_header(token))
    call_gateway(client, key["key"], status=401)
    call_gateway(client, rotated["key"], status=401)


@pytest.mark.parametrize("grace", [-1, 604801, "60", 1.5, None])
def test_rotate_rejects_bad_grace(client, owner, grace):
    token, key = owner
    response = client.web.post_json(key_url(key, "/rotate"), {"grace_period_seconds": grace},
                                    headers=auth_header(token), status=400)
    assert response.json["errors"][0]["name"] == "grace_period_seconds"


def test_secret_never_shown_again(client, owner):
    token, key = owner
    headers = auth_header(token)
    bodies = [
        client.web.get("/api/partners/api-keys", headers=headers).body,
        client.web.get(key_url(key), headers=headers).body,
        client.web.put_json(key_url(key), {"key_name": "again"}, headers=headers).body,
        client.web.post_json(key_url(key, "/test"), {"key": key["key"]}, headers=headers).body,
        client.web.get(key_url(key, "/scopes"), headers=headers).body,
        client.web.get(MENTORS, headers={"Authorization": "Bearer " + key["key"] + "x"},
                       status=401).body,
    ]
    assert not [body for body in bodies if key["key"].encode() in body]


def test_test_reports_key_and_quota(client, owner):
    token, key = owner
    call_gateway(client, key["key"])
    report = client.web.post_json(key_url(key, "/test"), {"key": key["key"]},
                                  headers=auth_header(token)).json
    hour = next(window for window in report["rate_limits"] if window["window"] == "hour")
    assert report["state"] == "active"
    assert report["secret_matches"] is True
    assert report["scopes"] == ["mentors:read", "users:read"]
    assert report["plan"] == "free"
    assert hour["limit"] == 100
    assert hour["remaining"] == 99


def test_test_does_not_spend_quota(client, owner):
    token, key = owner
    for _ in range(3):
        client.web.post_json(key_url(key, "/test"), {}, headers=auth_header(token))
    assert call_gateway(client, key["key"]).headers["X-RateLimit-Remaining"] == "99"


def test_test_detects_wrong_secret(client, owner):
    token, key = owner
    report = client.web.post_json(key_url(key, "/test"), {"key": "sk_test_" + "A" * 43},
                                  headers=auth_header(token)).json
    assert report["secret_matches"] is False


def test_test_reports_revoked(client, owner):
    token, key = owner
    client.web.delete(key_url(key), headers=auth_header(token))
    report = client.web.post_json(key_url(key, "/test"), {}, headers=auth_header(token)).json
    assert report["state"] == "revoked"


def test_scopes_listing_marks_granted(client, owner):
    token, key = owner
    listing = client.web.get(key_url(key, "/scopes"), headers=auth_header(token)).json["data"]
    granted = sorted(item["name"] for item in listing if item["granted"])
    names = [item["name"] for item in listing]
    assert granted == ["mentors:read", "users:read"]
    assert "admin:write" not in names
    assert all(item["description"] for item in listing)


def test_set_scopes_applies_at_once(client, owner):
    token, key = owner
    call_gateway(client, key["key"])
    client.web.post_json(key_url(key, "/scopes"), {"scopes": ["users:read"]},
                         headers=auth_header(token))
    response = call_gateway(client, key["key"], status=403)
    assert "mentors:read" in response.json["message"]


@pytest.mark.parametrize("scopes", [["users:fly"], ["admin:write"], [], "users:read"])
def test_set_scopes_rejects_bad(client, owner, scopes):
    token, key = owner
    client.web.post_json(key_url(key, "/scopes"), {"scopes": scopes}, headers=auth_header(token),
                         status=400)


def test_allowed_ips_enforced(client, owner):
    token, key = owner
    client.web.put_json(key_url(key), {"allowed_ips": ["203.0.113.0/24"]},
                        headers=auth_header(token))
    inside = {"REMOTE_ADDR": "203.0.113.9"}
    outside = {"REMOTE_ADDR": "198.51.100.1"}
    call_gateway(client, key["key"], extra_environ=inside)
    refused = call_gateway(client, key["key"], status=403, extra_environ=outside)
    assert refused.json["code"] == "ip_not_allowed"


def test_allowed_ips_cleared(client, owner):
    token, key = owner
    client.web.put_json(key_url(key), {"allowed_ips": ["203.0.113.0/24"]},
                        headers=auth_header(token))
    client.web.put_json(key_url(key), {"allowed_ips": []}, headers=auth_header(token))
    call_gateway(client, key["key"], extra_environ={"REMOTE_ADDR": "198.51.100.1"})


def test_forwarded_header_not_trusted(client, owner):
    token, key = owner
    client.web.put_json(key_url(key), {"allowed_ips": ["203.0.113.0/24"]},
                        headers=auth_header(token))
    headers = {**auth_header(key["key"]), "X-Forwarded-For": "203.0.113.9"}
    client.web.get(MENTORS, headers=headers, extra_environ={"REMOTE_ADDR": "198.51.100.1"},
                   status=403)


def test_expiry_update_stops_key(client, owner):
    token, key = owner
    soon = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 2))
    client.web.put_json(key_url(key), {"expires_at": soon}, headers=auth_header(token))
    call_gateway(client, key["key"])
    time.sleep(2.5)
    assert call_gateway(client, key["key"], status=401).json["code"] == "api_key_expired"


def test_read_only_member_cannot_revoke(client, owner, app):
    import sqlalchemy as sa

    from fkod.core.auth.models import PartnerMember
    from fkod.core.db import run_in_transaction

    token, key = owner
    run_in_transaction(app.registry["db.session_factory"], lambda session: session.execute(
        sa.update(PartnerMember).values(role="read_only")))
    response = client.web.delete(key_url(key), headers=auth_header(token), status=403)
    assert response.json["code"] == "missing_permission"
    call_gateway(client, key["key"])
