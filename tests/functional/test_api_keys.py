"""Creating and listing API keys (``/api/partners/api-keys``)."""

from __future__ import annotations

import base64
import datetime as dt
import re

import pytest
import sqlalchemy as sa

from fkod.core.auth.models import ApiKey
from fkod.core.auth.scopes import SCOPES
from fkod.core.db import read_only, run_in_transaction
from fkod.core.testing import auth_header, verify_partner
from tests.envelope import assert_envelope

pytestmark = pytest.mark.shared_app

KEYS_PATH = "/api/partners/api-keys"
TEST_KEY = re.compile(r"^sk_test_[A-Za-z0-9_-]{43}$")
PARTNER_SCOPES = [scope.name for scope in SCOPES if not scope.admin_only]



def error_names(body: dict) -> list[str]:
    return [error["name"] for error in body["errors"]]


def names_field(body: dict, field: str) -> bool:
    """Whether an error names ``field`` or one of its items, such as ``scopes.0``."""
    return any(name == field or name.startswith(field + ".") for name in error_names(body))


def count_keys(app) -> int:
    return read_only(app.registry["db.engine"], lambda connection: connection.scalar(
        sa.select(sa.func.count()).select_from(ApiKey.__table__)))


def key_body(**fields) -> dict:
    body = {"key_name": "backend", "scopes": ["users:read", "users:write"]}
    body.update(fields)
    return body


@pytest.fixture
def owner(client):
    """The login headers of a fresh partner's owner."""
    _partner, token = client.partner_with_token()
    return auth_header(token)


def create(client, headers, status=201, **fields):
    return client.web.post_json(KEYS_PATH, key_body(**fields), headers=headers, status=status)


# Creating a key -----------------------------------------------------------------


def test_create_key_returns_secret(client, owner):
    response = create(client, owner)

    body = response.json
    assert response.headers["Cache-Control"] == "no-store"
    assert TEST_KEY.match(body["key"]), body["key"]
    assert body["key_prefix"] == body["key"][:16]
    assert body["key_prefix"].startswith("sk_test_")
    assert body["id"].startswith("key_")
    assert body["mode"] == "test"
    assert body["status"] == "active"
    assert body["scopes"] == ["users:read", "users:write"]


def test_key_secret_has_256_bits(client, owner):
    secret = create(client, owner).json["key"].removeprefix("sk_test_")

    decoded = base64.urlsafe_b64decode(secret + "=")

    assert len(secret) == 43
    assert len(decoded) == 32


def test_keys_are_distinct(client, owner):
    keys = {create(client, owner).json["key"] for _ in range(5)}

    assert len(keys) == 5


def test_key_stored_as_hmac(client, app, owner):
    created = create(client, owner).json
    number = int(created["id"].removeprefix("key_"))

    stored = run_in_transaction(app.registry["db.session_factory"],
                                lambda session: session.get(ApiKey, number))

    assert stored.key_hash == app.registry["key_hasher"].hash(created["key"])
    assert created["key"] not in stored.key_hash
    assert stored.key_prefix == created["key_prefix"]


def test_secret_never_shown_again(client, app, owner):
    created = create(client, owner).json
    secret = created["key"]
    secret_tail = secret.removeprefix("sk_test_")
    secret_hmac = app.registry["key_hasher"].hash(secret)
    later = [
        client.web.get(KEYS_PATH, headers=owner),
        client.web.get(f"{KEYS_PATH}?limit=1", headers=owner),
        create(client, owner, key_name="second"),
        client.web.get("/api/partners/me", headers=owner),
        client.web.get("/api/partners/webhooks", headers=owner),
        client.web.get("/api/v1/users", headers=auth_header(secret)),
        client.web.get("/api/v1/users/user_424242", headers=auth_header(secret), status=404),
        client.web.get("/api/v1/courses", headers=auth_header(secret), status=403),
    ]

    for response in later:
        assert secret.encode() not in response.body, response.request.path
        assert secret_tail.encode() not in response.body, response.request.path
        assert secret_hmac.encode() not in response.body, response.request.path
        for value in response.headers.values():
            assert secret_tail not in value


def test_list_omits_secret_field(client, owner):
    created = create(client, owner).json

    listed = client.web.get(KEYS_PATH, headers=owner).json["data"]

    assert [item["id"] for item in listed] == [created["id"]]
    assert "key" not in listed[0]
    assert "key_hash" not in listed[0]
    assert listed[0]["key_prefix"] == created["key_prefix"]


def test_create_key_with_expiry_and_limit(client, owner):
    expires_at = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=7)

    body = create(client, owner, expires_at=expires_at.isoformat(), rate_limit=100,
                  rate_limit_window=60).json

    assert body["expires_at"] == expires_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert body["rate_limit"] == 100
    assert body["rate_limit_window"] == 60


def test_expiry_offset_converted_to_utc(client, owner):
    body = create(client, owner, expires_at="2099-01-01T02:00:00+02:00").json

    assert body["expires_at"] == "2099-01-01T00:00:00Z"


# Rejected keys ------------------------------------------------------------------


@pytest.mark.shared_app(False)
@pytest.mark.parametrize("scopes", [["users:read", "users:delete"], ["everything"], ["*"]])
def test_unknown_scope_rejected(client, app, owner, scopes):
    response = create(client, owner, status=400, scopes=scopes)

    body = assert_envelope(response, 400, "invalid_scope")
    unknown = scopes[-1]
    assert unknown in body["message"]
    assert "scopes" in error_names(body)
    assert count_keys(app) == 0


@pytest.mark.shared_app(False)
def test_admin_scope_rejected(client, app, owner):
    response = create(client, owner, status=400, scopes=["users:read", "admin:write"])

    body = assert_envelope(response, 400, "invalid_scope")
    assert "admin:write" in body["message"]
    assert count_keys(app) == 0


@pytest.mark.shared_app(False)
@pytest.mark.parametrize("field,value", [
    ("scopes", []),
    ("scopes", "users:read"),
    ("scopes", [1]),
    ("scopes", None),
    ("key_name", ""),
    ("key_name", 7),
    ("key_name", "x" * 256),
    ("mode", "production"),
    ("rate_limit", 0),
    ("rate_limit", "100"),
    ("rate_limit", 1.5),
    ("rate_limit_window", 86400 * 32),
    ("expires_at", "tomorrow"),
    ("expires_at", 1893456000),
])
def test_invalid_key_field_rejected(client, app, owner, field, value):
    response = create(client, owner, status=400, **{field: value})

    assert names_field(assert_envelope(response, 400), field)
    assert count_keys(app) == 0


def test_all_partner_scopes_granted(client, owner):
    body = create(client, owner, scopes=PARTNER_SCOPES).json

    assert body["scopes"] == sorted(PARTNER_SCOPES)


@pytest.mark.shared_app(False)
def test_live_key_requires_verification(client, app, owner):
    response = create(client, owner, status=403, mode="live")

    body = assert_envelope(response, 403, "partner_not_verified")
    assert "mode" in error_names(body)
    assert count_keys(app) == 0


def test_verified_partner_gets_live_key(client, app):
    partner, token = client.partner_with_token()
    verify_partner(app, partner["id"])

    body = create(client, auth_header(token), mode="live").json

    assert re.match(r"^sk_live_[A-Za-z0-9_-]{43}$", body["key"])
    assert body["mode"] == "live"


@pytest.mark.shared_app(False)
def test_past_expiry_rejected(client, app, owner):
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)).isoformat()

    response = create(client, owner, status=400, expires_at=past)

    assert "expires_at" in error_names(assert_envelope(response, 400))
    assert count_keys(app) == 0


@pytest.mark.shared_app(False)
@pytest.mark.parametrize("expires_at", ["2099-01-01T00:00:00", "2099-01-01"])
def test_naive_expiry_rejected(client, app, owner, expires_at):
    response = create(client, owner, status=400, expires_at=expires_at)

    assert "expires_at" in error_names(assert_envelope(response, 400))
    assert count_keys(app) == 0


@pytest.mark.parametrize("expires_at", ["9999-12-31T23:59:59-14:00",
                                        "0001-01-01T00:00:00+14:00"])
def test_out_of_range_expiry_rejected(client, app, owner, expires_at):
    response = create(client, owner, status="*", expires_at=expires_at)

    assert "expires_at" in error_names(assert_envelope(response, 400))


# Listing ------------------------------------------------------------------------


def create_many(client, headers, count: int) -> list[str]:
    return [create(client, headers, key_name=f"key {index}").json["id"] for index in range(count)]


def test_pages_visit_each_key_once(client, owner):
    created = create_many(client, owner, 25)
    seen = []
    pages = []
    url = f"{KEYS_PATH}?limit=10"

    while url is not None:
        page = client.web.get(url, headers=owner).json
        pages.append(page)
        seen.extend(item["id"] for item in page["data"])
        url = f"{KEYS_PATH}?limit=10&cursor={page['next_cursor']}" if page["has_more"] else None
        assert len(pages) <= 3

    assert [len(page["data"]) for page in pages] == [10, 10, 5]
    assert [page["has_more"] for page in pages] == [True, True, False]
    assert pages[-1]["next_cursor"] is None
    assert len(seen) == len(set(seen))
    assert sorted(seen) == sorted(created)
    assert seen == list(reversed(created))


def test_default_page_size_twenty(client, owner):
    create_many(client, owner, 25)

    page = client.web.get(KEYS_PATH, headers=owner).json

    assert len(page["data"]) == 20
    assert page["has_more"] is True
    assert isinstance(page["next_cursor"], str)


def test_limit_bounds_accepted(client, owner):
    create_many(client, owner, 2)

    smallest = client.web.get(f"{KEYS_PATH}?limit=1", headers=owner).json
    largest = client.web.get(f"{KEYS_PATH}?limit=100", headers=owner).json

    assert len(smallest["data"]) == 1
    assert smallest["has_more"] is True
    assert len(largest["data"]) == 2
    assert largest["has_more"] is False
    assert largest["next_cursor"] is None


@pytest.mark.parametrize("query", [
    "limit=-1", "limit=0", "limit=101", "limit=1000000", "limit=9223372036854775808",
    "limit=1.5", "limit=1e3", "limit=abc", "limit=", "limit=5&limit=50", "limit=%2B5",
    "limit=%205", "limit=%00",
])
def test_invalid_limit_rejected(client, owner, query):
    response = client.web.get(f"{KEYS_PATH}?{query}", headers=owner, status=400)

    body = assert_envelope(response, 400, "validation_failed")
    assert set(error_names(body)) == {"limit"}
    assert {error["location"] for error in body["errors"]} == {"querystring"}


@pytest.mark.parametrize("cursor", ["%00", "garbage", "", "aWQ6LTE", "%C3%A9", "x" * 300])
def test_invalid_cursor_rejected(client, owner, cursor):
    response = client.web.get(f"{KEYS_PATH}?cursor={cursor}", headers=owner, status=400)

    assert error_names(assert_envelope(response, 400, "validation_failed")) == ["cursor"]


@pytest.mark.parametrize("query", ["sort=asc", "page=2", "offset=10"])
def test_unknown_query_parameter_rejected(client, owner, query):
    name = query.split("=")[0]

    response = client.web.get(f"{KEYS_PATH}?{query}", headers=owner, status=400)

    assert name in error_names(assert_envelope(response, 400, "validation_failed"))


def test_other_partner_sees_no_keys(client, owner):
    created = create_many(client, owner, 3)
    _other, other_token = client.partner_with_token()
    other_headers = auth_header(other_token)
    own = create(client, other_headers, key_name="other partner key").json["id"]
    first_page = client.web.get(f"{KEYS_PATH}?limit=1", headers=owner).json

    listed = client.web.get(KEYS_PATH, headers=other_headers).json
    with_cursor = client.web.get(f"{KEYS_PATH}?cursor={first_page['next_cursor']}",
                                 headers=other_headers).json

    assert [item["id"] for item in listed["data"]] == [own]
    assert not set(created) & {item["id"] for item in with_cursor["data"]}


def test_listing_requires_login(client):
    response = client.web.get(KEYS_PATH, status=401)

    assert_envelope(response, 401, "missing_credentials")


def test_api_key_cannot_manage_keys(client, owner):
    secret = create(client, owner, scopes=PARTNER_SCOPES).json["key"]

    response = client.web.post_json(KEYS_PATH, key_body(), headers=auth_header(secret),
                                    status=401)

    assert_envelope(response, 401, "invalid_token")
