"""Hostile input: SSRF webhook URLs, oversized and deep bodies, bad bytes, header injection.

Every request goes to the real application through WebTest. The webhook URL
checks only verify that the platform rejects a URL when it is stored. Nothing
here makes the platform or the test connect to any of these addresses.
"""

from __future__ import annotations

import json
import shutil

import pytest
import sqlalchemy as sa
import webtest

from fkod import shutdown
from fkod.core.api import MAX_JSON_DEPTH
from fkod.core.testing import TestClient, auth_header, make_app, make_settings, verify_partner
from fkod.core.webhooks.models import Webhook
from fkod.core.webhooks.urls import RESOLVER_KEY
from tests.security.world import in_db

WEBHOOKS = "/api/partners/webhooks"
# A valid target in the loopback-allowing security_client app: an IP literal,
# so storing it needs no DNS lookup, and no test here triggers a delivery.
LOOPBACK_RECEIVER = "http://127.0.0.1:9/hook"

# Spellings of non-public targets that tests/unit/test_webhook_urls.py does not
# already send; all are IP literals or loopback names, so none needs a lookup.
SSRF_URLS = (
    "http://0/",
    "http://0x7f.1/",
    "http://0177.1/",
    "http://017700000001/",
    "http://0x7f.0x0.0x0.0x1/",
    "http://127.000.000.001/",
    "http://127.0.0.1./",
    "http://2852039166/",
    "http://0xa9fea9fe/",
    "http://0251.0376.0251.0376/",
    "http://169.254.169.254./latest/meta-data/",
    "http://[0:0:0:0:0:0:0:1]/",
    "http://[0000::1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://[::ffff:0.0.0.0]/",
    "http://[::127.0.0.1]/",
    "http://[fd00:ec2::254]/",
    "http://[::]:80/",
    "http://0.0.0.0:443/",
    "http://localhost./",
    "HTTP://LOCALHOST/",
    "http://LocalHost.:8080/",
    "http://hooks.localhost./",
    "http://a@127.0.0.1/",
    "http://a:b@[::1]/",
    "http://127.0.0.1#@hooks.example.com/",
    "http://127.0.0.1:80\\@hooks.example.com/",
    "http://[::1]#@hooks.example.com/",
    "http://%31%32%37.0.0.1/",
)

# Host names whose safety is only known after a DNS lookup; the suite makes no
# lookups, and tests/unit/test_webhook_urls.py covers them with a stub resolver.
DNS_ONLY_URLS = (
    "http://localtest.me/",
    "http://metadata.google.internal/",
    "http://instance-data/",
)


@pytest.fixture(scope="module")
def strict_client(tmp_path_factory, migrated_sqlite_template):
    """An application with production's webhook rules: no loopback, private or link-local."""
    tmp_path = tmp_path_factory.mktemp("strict")
    shutil.copy(migrated_sqlite_template, tmp_path / "fkod.sqlite")
    settings = make_settings(tmp_path, extra={
        "fkod.webhooks.allow_loopback": "false",
        "fkod.webhooks.require_https": "false",
        "fkod.ratelimit.per_address_per_minute": "0",
        "fkod.ratelimit.per_address_per_hour": "0",
    })
    app = make_app(settings)
    yield TestClient(app)
    shutdown(app.registry)


@pytest.fixture(scope="module")
def owner(strict_client) -> dict:
    registered = strict_client.register_partner()
    verify_partner(strict_client.app, registered["partner"]["id"])
    return auth_header(strict_client.login(registered["user"]["email"]))


@pytest.fixture(scope="module")
def loopback_owner(security_client) -> dict:
    """An owner's headers in the app that accepts LOOPBACK_RECEIVER as a webhook URL."""
    return auth_header(security_client.partner_with_token()[1])


def count_webhooks(app) -> int:
    return in_db(app, lambda session: session.scalar(
        sa.select(sa.func.count()).select_from(Webhook)))


@pytest.mark.parametrize("url", SSRF_URLS)
def test_webhook_url_rejected(strict_client, owner, url):
    before = count_webhooks(strict_client.app)

    response = strict_client.web.post_json(WEBHOOKS, {
        "url": url, "event_types": ["partner.verified"]}, headers=owner, expect_errors=True)

    assert response.status_int == 400, response.text
    assert response.json["code"] == "invalid_webhook_url", response.json
    assert [error["name"] for error in response.json["errors"]] == ["url"]
    assert count_webhooks(strict_client.app) == before


@pytest.mark.parametrize("url", DNS_ONLY_URLS)
def test_webhook_dns_names(strict_client, owner, url, monkeypatch):
    # A fixed answer table in place of DNS: each name resolves to an address
    # that only the lookup reveals as internal.
    answers = {"localtest.me": ["127.0.0.1"], "metadata.google.internal": ["169.254.169.254"],
               "instance-data": ["10.0.0.1"]}
    monkeypatch.setitem(strict_client.app.registry, RESOLVER_KEY,
                        lambda host, _port: answers[host])
    before = count_webhooks(strict_client.app)

    response = strict_client.web.post_json(WEBHOOKS, {
        "url": url, "event_types": ["partner.verified"]}, headers=owner, expect_errors=True)

    assert response.status_int == 400, response.text
    assert response.json["code"] == "invalid_webhook_url", response.json
    [error] = response.json["errors"]
    assert error["name"] == "url"
    # Refused for the address the lookup gave, not because the lookup failed.
    assert f"resolves to {answers[url.split('/')[2]][0]}" in error["description"]
    assert count_webhooks(strict_client.app) == before


def test_webhook_update_rejects_private_url(security_client, loopback_owner):
    client, owner = security_client, loopback_owner
    created = client.web.post_json(WEBHOOKS, {
        "url": LOOPBACK_RECEIVER, "event_types": ["partner.verified"]}, headers=owner,
        status=201).json
    path = f"{WEBHOOKS}/{created['id']}"

    response = client.web.put_json(path, {"url": "http://[::ffff:169.254.169.254]/"},
                                   headers=owner, expect_errors=True)

    assert response.status_int == 400
    assert response.json["code"] == "invalid_webhook_url"
    assert client.web.get(path, headers=owner).json["url"] == created["url"]


# Bodies ------------------------------------------------------------------------------


def nested(depth: int) -> bytes:
    """Return a JSON object ``depth`` levels deep under the key ``email``."""
    return ('{"email": ' + "[" * (depth - 1) + "1" + "]" * (depth - 1) + "}").encode()


def test_deeply_nested_body_rejected(strict_client, owner):
    for depth in (MAX_JSON_DEPTH + 1, 10_000):
        response = strict_client.web.post(WEBHOOKS, nested(depth), headers=owner,
                                          content_type="application/json", expect_errors=True)

        assert response.status_int == 400, depth
        assert response.json["code"] == "invalid_json", depth


def test_oversized_body_rejected(strict_client, owner):
    limit = strict_client.registry.settings["fkod.api.max_body_bytes"]
    body = json.dumps({"url": "http://127.0.0.1:9/hook", "description": "x" * limit}).encode()

    response = strict_client.web.post(WEBHOOKS, body, headers=owner,
                                      content_type="application/json", expect_errors=True)

    assert response.status_int == 413
    assert response.json["code"] == "payload_too_large"


# Bytes that are not text -------------------------------------------------------------


def raw_app(client) -> webtest.TestApp:
    """WebTest without its WSGI lint, which refuses the malformed requests sent here."""
    return webtest.TestApp(client.app, lint=False)


@pytest.mark.parametrize("path", [
    "/api/partners/webhooks/%ff%fe",
    "/api/partners/webhooks/%00",
    "/api/partners/webhooks/key%00_1",
    "/portal/keys/%c3%28",
    "/api/v1/users/%ed%a0%80",
])
def test_bad_bytes_in_path(strict_client, owner, path):
    response = raw_app(strict_client).get(path, headers=owner, expect_errors=True)

    assert response.status_int in (400, 404), (path, response.status_int)


@pytest.mark.parametrize("query", ["limit=%ff", "limit=1%00", "cursor=%c3%28", "%ff=1"])
def test_bad_bytes_in_query(strict_client, owner, query):
    response = raw_app(strict_client).get(f"{WEBHOOKS}?{query}", headers=owner,
                                          expect_errors=True)

    assert response.status_int == 400, (query, response.status_int)


@pytest.mark.parametrize("body", [
    b'{"url": "http://127.0.0.1:9/hook\xff"}',
    b'{"url": "http://127.0.0.1:9/hook\x00"}',
    b'{"url": "http://127.0.0.1:9/hook\\u0000"}',
    b'{"description": "\\ud800"}',
    b"\x00",
    b'\xef\xbb\xbf{"url": "http://127.0.0.1:9/hook"}',
])
def test_bad_bytes_in_body(security_client, loopback_owner, body):
    before = count_webhooks(security_client.app)

    response = raw_app(security_client).post(WEBHOOKS, body, headers=loopback_owner,
                                             content_type="application/json",
                                             expect_errors=True)

    assert response.status_int == 400, (body, response.status_int, response.text)
    assert count_webhooks(security_client.app) == before


@pytest.mark.parametrize("value", ["Bearer \udcff", "Bearer sk_test_\x00abc", "Bearer \x7f"])
def test_bad_bytes_in_authorization(strict_client, value):
    environ = {"HTTP_AUTHORIZATION": value.encode("utf-8", "surrogateescape").decode("latin-1")}

    response = raw_app(strict_client).get("/api/v1/users", extra_environ=environ,
                                          expect_errors=True)

    assert response.status_int == 401, (value, response.status_int)


# Header injection --------------------------------------------------------------------


@pytest.mark.parametrize(("name", "value"), [
    ("X-Trace", "a\r\nSet-Cookie: stolen=1"),
    ("X-Trace", "a\nX-Injected: 1"),
    ("X-Trace\r\nX-Injected", "1"),
    ("X-Trace", "a\x00b"),
])
def test_webhook_custom_header_injection_rejected(security_client, loopback_owner, name, value):
    before = count_webhooks(security_client.app)

    response = security_client.web.post_json(WEBHOOKS, {
        "url": LOOPBACK_RECEIVER, "event_types": ["partner.verified"],
        "headers": {name: value}}, headers=loopback_owner, expect_errors=True)

    assert response.status_int == 400, response.text
    assert count_webhooks(security_client.app) == before


def test_webhook_custom_header_accepted(security_client, loopback_owner):
    response = security_client.web.post_json(WEBHOOKS, {
        "url": LOOPBACK_RECEIVER, "event_types": ["partner.verified"],
        "headers": {"X-Trace": "abc"}}, headers=loopback_owner, expect_errors=True)

    assert response.status_int == 201, response.text


@pytest.mark.parametrize("header", ["X-Request-Id", "Idempotency-Key"])
def test_echoed_header_injection(security_client, loopback_owner, header):
    environ = {f"HTTP_{header.upper().replace('-', '_')}": "abc\r\nSet-Cookie: stolen=1"}
    body = json.dumps({"url": LOOPBACK_RECEIVER, "event_types": ["partner.verified"]})

    response = raw_app(security_client).post(WEBHOOKS, body, headers=loopback_owner,
                                           content_type="application/json",
                                           extra_environ=environ, expect_errors=True)

    assert response.status_int < 500
    assert "stolen" not in response.headers.get("Set-Cookie", "")
    for name, value in response.headerlist:
        assert "\r" not in value, (name, value)
        assert "\n" not in value, (name, value)
