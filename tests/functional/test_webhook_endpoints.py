"""Creating and listing webhook endpoints, and the catalog of event types.

No test here publishes an event after it creates an endpoint, so nothing is ever
delivered. Every endpoint a test creates points at 127.0.0.1.
"""

from __future__ import annotations

import base64
import re

import pytest
import sqlalchemy as sa

from fkod.core.db import read_only, run_in_transaction
from fkod.core.testing import TestClient, auth_header, verify_partner
from fkod.core.webhooks.models import Webhook
from tests.envelope import assert_envelope

pytestmark = pytest.mark.shared_app

WEBHOOKS_PATH = "/api/partners/webhooks"
EVENTS_PATH = "/api/webhooks/available-events"
SECRET = re.compile(r"^whsec_[A-Za-z0-9+/]{43}=$")
LOOPBACK_URL = "http://127.0.0.1:9/hooks"

BUILT_IN_EVENT_TYPES = {
    "course.completed", "course.created", "integration.created", "integration.installed",
    "integration.published", "integration.updated", "mentor.matched", "partner.created",
    "partner.updated", "partner.verified", "user.created", "user.updated",
    "payment.processed", "support.ticket_created", "support.ticket_replied", "support.ticket_status_changed",
    # Operational events of the delivery engine, which the core contributes.
    "webhook.delivery_exhausted", "webhook.endpoint_disabled", "webhook.endpoint_recovered",
    # Partner alerts, which the core contributes too.
    "key.expiring", "key.quota_exhausted", "key.quota_warning", "usage.anomaly",
}

# Rejected once loopback receivers are not allowed: loopback in every spelling,
# the metadata service, and private, shared and link-local ranges.
NON_PUBLIC_URLS = [
    "http://127.0.0.1/",
    "http://localhost/",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]/",
    "http://[::]/",
    "http://0.0.0.0/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/",
    "http://[::ffff:a9fe:a9fe]/",
    "http://2130706433/",
    "http://0x7f000001/",
    "http://0177.0.0.1/",
    "http://127.1/",
    "http://10.0.0.1/",
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",
    "http://[fd00::1]/",
    "http://[fe80::1]/",
    "http://user@127.0.0.1/",
    # Circled digits and fullwidth dots, which IDNA mapping turns into 127.0.0.1.
    "http://\u2460\u2461\u2466\uff0e\u24ea\uff0e\u24ea\uff0e\u2460/",
]

# Rejected even where loopback receivers are allowed, as in the default test app.
NOT_LOOPBACK_URLS = [
    "http://169.254.169.254/latest/meta-data/",
    "http://[::]/",
    "http://0.0.0.0/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/",
    "http://[::ffff:a9fe:a9fe]/",
    "http://10.0.0.1/",
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",
    "http://[fd00::1]/",
    "http://[fe80::1]/",
    "http://user@127.0.0.1/",
    "http://user:secret@127.0.0.1/",
    "http://127.0.0.1:0/",
    "http://[fe80::1%25eth0]/",
]

MALFORMED_URLS = ["javascript:alert(1)", "ftp://x/", "//127.0.0.1/", "127.0.0.1/hooks",
                  "http://", "http://127.0.0.1\\@10.0.0.1/", "http://127.0.0.1/a\nb",
                  "JaVaScRiPt:alert(1)", " javascript:alert(1)", "java\tscript:alert(1)",
                  "data:text/html,<script>alert(1)</script>", "vbscript:x", "file:///etc/passwd",
                  "//evil.test/x"]



def error_names(body: dict) -> list[str]:
    return [error["name"] for error in body["errors"]]


def names_field(body: dict, field: str) -> bool:
    """Whether an error names ``field`` or one of its items, such as ``headers.X-A``."""
    return any(name == field or name.startswith(field + ".") for name in error_names(body))


def count_webhooks(app) -> int:
    return read_only(app.registry["db.engine"], lambda connection: connection.scalar(
        sa.select(sa.func.count()).select_from(Webhook.__table__)))


def webhook_body(**fields) -> dict:
    # partner.verified is published only by staff approval, which no test here does.
    body = {"url": LOOPBACK_URL, "event_types": ["partner.verified"]}
    body.update(fields)
    return body


def owner_headers(client: TestClient) -> dict:
    _partner, token = client.partner_with_token()
    return auth_header(token)


@pytest.fixture
def owner(client):
    """The login headers of a fresh partner's owner."""
    return owner_headers(client)


def create(client, login_headers, status=201, **fields):
    return client.web.post_json(WEBHOOKS_PATH, webhook_body(**fields), headers=login_headers,
                                status=status)


# Creating an endpoint -----------------------------------------------------------


def test_create_webhook_returns_secret(client, owner):
    response = create(client, owner, description="Partner verification")

    body = response.json
    assert response.headers["Cache-Control"] == "no-store"
    assert SECRET.match(body["secret"]), body["secret"]
    assert len(base64.b64decode(body["secret"].removeprefix("whsec_"))) == 32
    assert body["id"].startswith("whk_")
    assert body["url"] == LOOPBACK_URL
    assert body["event_types"] == ["partner.verified"]
    assert body["mode"] == "test"
    assert body["status"] == "active"
    assert body["retry_count"] == 5
    assert body["retry_delay"] == 300
    assert body["description"] == "Partner verification"


def test_secret_stored_encrypted(client, app, owner):
    created = create(client, owner).json
    number = int(created["id"].removeprefix("whk_"))

    stored = run_in_transaction(app.registry["db.session_factory"],
                                lambda session: session.get(Webhook, number))

    assert created["secret"] not in stored.secret_key
    assert app.registry["webhook_vault"].decrypt(stored.secret_key) == created["secret"]


def test_list_omits_secret(client, owner):
    created = create(client, owner).json
    secret_tail = created["secret"].removeprefix("whsec_")

    response = client.web.get(WEBHOOKS_PATH, headers=owner)

    assert [item["id"] for item in response.json["data"]] == [created["id"]]
    assert "secret" not in response.json["data"][0]
    assert "secret_key" not in response.json["data"][0]
    assert secret_tail.encode() not in response.body


def test_other_partner_sees_no_webhooks(client, owner):
    create(client, owner)
    other = owner_headers(client)

    listed = client.web.get(WEBHOOKS_PATH, headers=other).json

    assert listed["data"] == []
    assert listed["has_more"] is False


def test_event_type_shorthand(client, owner):
    request = {"url": LOOPBACK_URL, "event_type": "course.completed"}

    body = client.web.post_json(WEBHOOKS_PATH, request, headers=owner, status=201).json

    assert body["event_types"] == ["course.completed"]


def test_duplicate_event_types_merged(client, owner):
    body = create(client, owner, event_types=["user.created", "user.created", "course.*"]).json

    assert body["event_types"] == ["user.created", "course.*"]


@pytest.mark.parametrize("pattern", ["course.*", "*", "user.created"])
def test_event_pattern_accepted(client, owner, pattern):
    body = create(client, owner, event_types=[pattern]).json

    assert body["event_types"] == [pattern]


@pytest.mark.shared_app(False)
def test_both_event_fields_rejected(client, app, owner):
    response = create(client, owner, status=400, event_type="course.completed")

    assert "event_type" in error_names(assert_envelope(response, 400))
    assert count_webhooks(app) == 0


@pytest.mark.shared_app(False)
def test_missing_event_types_rejected(client, app, owner):
    body = webhook_body()
    del body["event_types"]

    response = client.web.post_json(WEBHOOKS_PATH, body, headers=owner, status=400)

    assert "event_types" in error_names(assert_envelope(response, 400))
    assert count_webhooks(app) == 0


@pytest.mark.parametrize("pattern", ["course.deleted", "nothing.*", "user.*.x", "Course.Created",
                                     "course..created", "course", "**", "course.created.x"])
def test_unknown_event_type_rejected(client, app, owner, pattern):
    before = count_webhooks(app)
    response = create(client, owner, status=400, event_types=["user.created", pattern])

    body = assert_envelope(response, 400)
    assert names_field(body, "event_types")
    assert count_webhooks(app) == before


@pytest.mark.shared_app(False)
def test_empty_event_types_rejected(client, app, owner):
    response = create(client, owner, status=400, event_types=[])

    assert names_field(assert_envelope(response, 400), "event_types")
    assert count_webhooks(app) == 0


@pytest.mark.shared_app(False)
def test_live_webhook_requires_verification(client, app, owner):
    response = create(client, owner, status=403, mode="live")

    assert_envelope(response, 403, "partner_not_verified")
    assert count_webhooks(app) == 0


def test_verified_partner_gets_live_webhook(client, app):
    partner, token = client.partner_with_token()
    verify_partner(app, partner["id"])

    body = create(client, auth_header(token), mode="live").json

    assert body["mode"] == "live"


# Target URLs --------------------------------------------------------------------


@pytest.fixture
def strict_app(app_factory):
    """Build an application that rejects loopback receivers, the production default."""
    return app_factory(**{"fkod.webhooks.allow_loopback": "false"})


@pytest.mark.parametrize("url", NON_PUBLIC_URLS)
def test_non_public_url_rejected(strict_app, url):
    before = count_webhooks(strict_app)
    client = TestClient(strict_app)

    response = create(client, owner_headers(client), status=400, url=url)

    body = assert_envelope(response, 400, "invalid_webhook_url")
    assert "url" in error_names(body)
    assert count_webhooks(strict_app) == before


@pytest.mark.parametrize("url", NOT_LOOPBACK_URLS)
def test_private_url_rejected_with_loopback(client, app, owner, url):
    before = count_webhooks(app)
    response = create(client, owner, status=400, url=url)

    body = assert_envelope(response, 400)
    assert "url" in error_names(body)
    assert count_webhooks(app) == before


@pytest.mark.parametrize("strict", [False, True], ids=["loopback_allowed", "strict"])
@pytest.mark.parametrize("url", MALFORMED_URLS)
def test_malformed_url_rejected(app_factory, strict, url):
    built = app_factory(**{"fkod.webhooks.allow_loopback": "false" if strict else "true"})
    before = count_webhooks(built)
    client = TestClient(built)

    response = create(client, owner_headers(client), status=400, url=url)

    assert "url" in error_names(assert_envelope(response, 400))
    assert count_webhooks(built) == before


@pytest.mark.parametrize("url,stored", [
    ("http://127.0.0.1:9/hooks", "http://127.0.0.1:9/hooks"),
    ("HTTP://LOCALHOST:9/hooks", "http://localhost:9/hooks"),
    ("http://127.1:9/hooks", "http://127.0.0.1:9/hooks"),
    ("http://[::1]:9/hooks#fragment", "http://[::1]:9/hooks"),
])
def test_loopback_url_allowed_in_tests(client, owner, url, stored):
    body = create(client, owner, url=url).json

    assert body["url"] == stored


@pytest.fixture
def production_app(app_factory):
    """Build an application with production.ini's webhook URL rules."""
    return app_factory(**{"fkod.webhooks.allow_loopback": "false",
                          "fkod.webhooks.require_https": "true"})


# A public address and a name under .example, neither of which is contacted or
# resolved: the https rule is checked before any lookup.
@pytest.mark.shared_app(False)
@pytest.mark.parametrize("url", ["http://hooks.example.com/x", "http://93.184.215.14/x"])
def test_http_url_rejected_in_production(production_app, url):
    client = TestClient(production_app)

    response = create(client, owner_headers(client), status=400, url=url)

    body = assert_envelope(response, 400, "invalid_webhook_url")
    assert [(error["name"], error["description"]) for error in body["errors"]] == [
        ("url", "The URL must use https://.")]
    assert count_webhooks(production_app) == 0


def test_https_url_accepted_in_production(production_app):
    client = TestClient(production_app)

    body = create(client, owner_headers(client), url="https://93.184.215.14/hooks").json

    assert body["url"] == "https://93.184.215.14/hooks"


def test_loopback_http_allowed_for_production_demo(app_factory):
    built = app_factory(**{"fkod.webhooks.allow_loopback": "true",
                           "fkod.webhooks.require_https": "true"})
    client = TestClient(built)

    body = create(client, owner_headers(client), url="http://127.0.0.1:9/hooks").json

    assert body["url"] == "http://127.0.0.1:9/hooks"


# Request bodies -----------------------------------------------------------------


@pytest.mark.shared_app(False)
def test_empty_body_rejected(client, app, owner):
    response = client.web.post(WEBHOOKS_PATH, b"", headers=owner,
                               content_type="application/json", status=400)

    assert_envelope(response, 400)
    assert count_webhooks(app) == 0


@pytest.mark.shared_app(False)
def test_twenty_megabyte_body_rejected(client, app, owner):
    body = b'{"url": "http://127.0.0.1:9/' + b"a" * (20 * 1024 * 1024) + b'"}'

    response = client.web.post(WEBHOOKS_PATH, body, headers=owner,
                               content_type="application/json", status=413)

    assert_envelope(response, 413, "payload_too_large")
    assert count_webhooks(app) == 0
    assert client.web.get("/health").status_int == 200


# Custom headers and retries -----------------------------------------------------


@pytest.mark.parametrize("headers", [
    {"X-FKOD-Signature": "t=1,v1=00"},
    {"webhook-signature": "v1,abc"},
    {"Content-Type": "text/plain"},
    {"content-length": "1"},
    {"Host": "127.0.0.1"},
    {"X-Tenant": "acme\r\nX-Injected: 1"},
    {"X-Tenant": "acme\nX-Injected: 1"},
    {"X-Tenant": "acme\rX-Injected: 1"},
    {"X-Tenant": "acme\u0000"},
    {"Bad Name": "value"},
    {"X-Tenant:": "value"},
    {"X-Tenant": 42},
], ids=["fkod_signature", "standard_signature", "content_type", "content_length", "host",
        "crlf", "lf", "cr", "nul", "space_in_name", "colon_in_name", "number_value"])
def test_invalid_custom_header_rejected(client, app, owner, headers):
    before = count_webhooks(app)
    response = create(client, owner, status=400, headers=headers)

    assert names_field(assert_envelope(response, 400), "headers")
    assert count_webhooks(app) == before


def test_custom_header_stored(client, owner):
    body = create(client, owner, headers={"X-Tenant": "acme"}).json

    assert body["headers"] == {"X-Tenant": "acme"}


@pytest.mark.parametrize("field,value", [
    ("retry_count", 11),
    ("retry_count", -1),
    ("retry_count", "3"),
    ("retry_count", 3.5),
    ("retry_count", True),
    ("retry_count", None),
    ("retry_delay", 86401),
    ("retry_delay", -1),
    ("retry_delay", "300"),
    ("mode", "staging"),
    ("description", "d" * 501),
    ("url", ""),
    ("url", "http://127.0.0.1/" + "p" * 500),
])
def test_invalid_webhook_field_rejected(client, app, owner, field, value):
    before = count_webhooks(app)
    response = create(client, owner, status=400, **{field: value})

    assert field in error_names(assert_envelope(response, 400))
    assert count_webhooks(app) == before


@pytest.mark.parametrize("retry_count,retry_delay", [(0, 0), (10, 86400)])
def test_retry_bounds_accepted(client, owner, retry_count, retry_delay):
    body = create(client, owner, retry_count=retry_count, retry_delay=retry_delay).json

    assert body["retry_count"] == retry_count
    assert body["retry_delay"] == retry_delay


# The event catalog --------------------------------------------------------------


def test_available_events_lists_built_ins(client):
    page = client.web.get(EVENTS_PATH).json

    names = [item["name"] for item in page["data"]]
    assert set(names) == BUILT_IN_EVENT_TYPES
    assert len(names) == len(BUILT_IN_EVENT_TYPES)
    assert names == sorted(names)
    assert page["has_more"] is False
    assert page["next_cursor"] is None


def test_available_events_describe_each(client):
    for item in client.web.get(EVENTS_PATH).json["data"]:
        assert set(item) >= {"name", "description", "schema", "sample"}, item["name"]
        assert item["description"].strip(), item["name"]
        assert item["schema"]["type"] == "object", item["name"]
        assert isinstance(item["sample"], dict), item["name"]


def test_event_samples_have_required_fields(client):
    for item in client.web.get(EVENTS_PATH).json["data"]:
        missing = set(item["schema"].get("required", ())) - set(item["sample"])
        assert not missing, f"{item['name']} sample lacks {sorted(missing)}"


def test_event_samples_match_schemas(client):
    jsonschema = pytest.importorskip("jsonschema")

    for item in client.web.get(EVENTS_PATH).json["data"]:
        validator_class = jsonschema.validators.validator_for(item["schema"])
        validator_class.check_schema(item["schema"])
        validator = validator_class(item["schema"], format_checker=validator_class.FORMAT_CHECKER)
        errors = [error.message for error in validator.iter_errors(item["sample"])]
        assert errors == [], item["name"]


@pytest.mark.parametrize("query", ["limit=0", "limit=abc", "sort=name"])
def test_available_events_validates_query(client, query):
    response = client.web.get(f"{EVENTS_PATH}?{query}", status="*")

    assert_envelope(response, 400, "validation_failed")
