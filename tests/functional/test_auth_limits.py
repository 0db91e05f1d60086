"""Per-address rate limit of the operations without a credential, and trusted proxies."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from fkod.core.audit import AuditEntry
from fkod.core.db import run_in_transaction
from fkod.core.testing import TEST_PASSWORD, TestClient, auth_header
from tests.envelope import assert_envelope

CLIENT = "203.0.113.10"
OTHER_CLIENT = "203.0.113.11"
PROXY = "10.0.0.2"


def limited_client(app_factory, per_minute: int = 3, per_hour: int = 0, proxies: str = ""):
    return TestClient(app_factory(**{
        "fkod.ratelimit.per_address_per_minute": str(per_minute),
        "fkod.ratelimit.per_address_per_hour": str(per_hour),
        "fkod.proxy.trusted_proxies": proxies,
    }))


def anonymous(client, address: str, forwarded_for: str | None = None, status="*"):
    """Send one anonymous request (a failed login) from ``address``."""
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for is not None else {}
    return client.web.post_json(
        "/api/auth/login", {"email": "nobody@acme.example", "password": "wrong password"},
        headers=headers, extra_environ={"REMOTE_ADDR": address}, status=status)


def use_up(client, address: str, count: int = 3, forwarded_for: str | None = None) -> None:
    for _ in range(count):
        assert anonymous(client, address, forwarded_for).status_int == 401


def test_limit_reached_returns_429(app_factory):
    client = limited_client(app_factory)
    use_up(client, CLIENT)

    response = anonymous(client, CLIENT, status=429)

    body = assert_envelope(response, 429, "rate_limited")
    assert "address" in body["message"]
    assert 1 <= int(response.headers["Retry-After"]) <= 60


def test_limit_shared_by_anonymous_operations(app_factory):
    client = limited_client(app_factory)
    environ = {"REMOTE_ADDR": CLIENT}
    client.web.get("/api/webhooks/available-events", extra_environ=environ)
    client.web.post_json("/api/auth/password-reset", {"email": "nobody@acme.example"},
                         extra_environ=environ, status=202)
    client.web.post_json("/api/auth/email/verify", {"token": "unknown"}, extra_environ=environ,
                         status=400)

    for request in (
        lambda: client.web.get("/api/webhooks/available-events", extra_environ=environ,
                               status=429),
        lambda: client.web.post_json("/api/partners/register", {}, extra_environ=environ,
                                     status=429),
        lambda: client.web.post_json("/api/auth/password-reset/confirm", {},
                                     extra_environ=environ, status=429),
    ):
        assert_envelope(request(), 429, "rate_limited")


def test_other_address_not_limited(app_factory):
    client = limited_client(app_factory)
    use_up(client, CLIENT)

    assert anonymous(client, OTHER_CLIENT).status_int == 401
    assert anonymous(client, CLIENT).status_int == 429


def test_forwarded_for_ignored_without_trusted_proxy(app_factory):
    client = limited_client(app_factory)
    use_up(client, CLIENT, forwarded_for="198.51.100.1")

    for forged in ("198.51.100.2", "198.51.100.3, 198.51.100.4"):
        assert anonymous(client, CLIENT, forged).status_int == 429


def test_forwarded_for_ignored_from_untrusted_peer(app_factory):
    client = limited_client(app_factory, proxies="10.0.0.0/8")
    use_up(client, CLIENT, forwarded_for="198.51.100.1")

    assert anonymous(client, CLIENT, "198.51.100.2").status_int == 429


def test_trusted_proxy_limits_each_client(app_factory):
    client = limited_client(app_factory, proxies="10.0.0.0/8")
    use_up(client, PROXY, forwarded_for="198.51.100.1")

    assert anonymous(client, PROXY, "198.51.100.1").status_int == 429
    assert anonymous(client, PROXY, "198.51.100.2").status_int == 401


def test_trusted_proxy_chain_walked_from_right(app_factory):
    client = limited_client(app_factory, proxies="10.0.0.0/8")
    # Each request forges a different leftmost entry; the real client is the
    # rightmost address that is not a trusted proxy.
    for number in range(3):
        chain = f"192.0.2.{number}, 198.51.100.1, 10.0.0.7"
        assert anonymous(client, PROXY, chain).status_int == 401

    assert anonymous(client, PROXY, "192.0.2.99, 198.51.100.1, 10.0.0.8").status_int == 429
    assert anonymous(client, PROXY, "198.51.100.1, 198.51.100.2, 10.0.0.7").status_int == 401


def test_ipv6_clients_counted_per_64(app_factory):
    client = limited_client(app_factory)
    for suffix in ("1", "2", "3"):
        assert anonymous(client, f"2001:db8:1:2::{suffix}").status_int == 401

    assert anonymous(client, "2001:db8:1:2:ffff::9").status_int == 429
    assert anonymous(client, "2001:db8:1:3::1").status_int == 401


def test_hourly_limit(app_factory):
    client = limited_client(app_factory, per_minute=0, per_hour=2)
    use_up(client, CLIENT, count=2)

    response = anonymous(client, CLIENT, status=429)

    assert_envelope(response, 429, "rate_limited")
    assert 1 <= int(response.headers["Retry-After"]) <= 3600


@pytest.mark.parametrize("path", ["/health", "/ready", "/.well-known/jwks.json"])
def test_probes_exempt(app_factory, path):
    client = limited_client(app_factory, per_minute=1)
    use_up(client, CLIENT, count=1)

    for _ in range(3):
        assert client.web.get(path, extra_environ={"REMOTE_ADDR": CLIENT}).status_int == 200


def test_token_operations_not_address_limited(app_factory):
    client = limited_client(app_factory, per_minute=5)
    environ = {"REMOTE_ADDR": CLIENT}
    registered = client.web.post_json("/api/partners/register", {
        "company_name": "Acme", "email": "limits@acme.example", "password": TEST_PASSWORD,
    }, extra_environ=environ, status=201).json
    token = client.web.post_json("/api/auth/login", {"email": registered["user"]["email"],
                                                     "password": TEST_PASSWORD},
                                 extra_environ=environ).json["access_token"]
    use_up(client, CLIENT)

    for _ in range(3):
        response = client.web.get("/api/auth/me", headers=auth_header(token),
                                  extra_environ=environ)
        assert response.status_int == 200


def test_limited_request_skips_body_check(app_factory):
    client = limited_client(app_factory)
    use_up(client, CLIENT)

    response = client.web.post("/api/partners/register", b"[not json",
                               content_type="text/plain",
                               extra_environ={"REMOTE_ADDR": CLIENT}, status=429)

    assert_envelope(response, 429, "rate_limited")


def test_defaults_leave_normal_use_alone(client):
    environ = {"REMOTE_ADDR": CLIENT}
    for _ in range(30):
        client.web.get("/api/webhooks/available-events", extra_environ=environ)


def test_audit_records_forwarded_client(app_factory):
    client = limited_client(app_factory, per_minute=50, proxies="10.0.0.0/8")
    email = client.register_partner()["user"]["email"]

    client.web.post_json("/api/auth/login", {"email": email, "password": TEST_PASSWORD},
                         headers={"X-Forwarded-For": "192.0.2.1, 198.51.100.77"},
                         extra_environ={"REMOTE_ADDR": PROXY})

    addresses = run_in_transaction(
        client.registry["db.session_factory"], lambda session: session.scalars(
            sa.select(AuditEntry.ip_address).where(AuditEntry.action == "auth.login")).all())
    assert addresses == ["198.51.100.77"]


def test_limiter_outage_keeps_signup_and_login(app_factory):
    # Nothing listens on port 1, so every limiter call fails; the per-address
    # and per-account limits fail open even where the gateway fails closed.
    client = TestClient(app_factory(**{
        "fkod.ratelimit.backend": "redis", "fkod.redis.url": "redis://127.0.0.1:1/0",
        "fkod.ratelimit.fail_open": "false", "fkod.ratelimit.per_address_per_minute": "1",
    }))
    environ = {"REMOTE_ADDR": CLIENT}

    for number in range(2):
        email = f"outage{number}@acme.example"
        client.web.post_json("/api/partners/register", {
            "company_name": "Acme", "email": email, "password": TEST_PASSWORD,
        }, extra_environ=environ, status=201)
        response = client.web.post_json("/api/auth/login",
                                        {"email": email, "password": TEST_PASSWORD},
                                        extra_environ=environ)
        assert response.json["access_token"]
