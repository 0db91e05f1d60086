"""The partner's failed API calls (``/api/developers/errors``)."""

from __future__ import annotations

import datetime as dt

import pytest

from fkod.core.db import utcnow
from fkod.core.testing import auth_header
from tests.envelope import assert_envelope
from tests.functional.test_developer_me import customer_token
from tests.functional.test_key_usage import flush_usage, insert_raw_usage, raw_row

pytestmark = pytest.mark.shared_app

ERRORS = "/api/developers/errors"
USERS = "/api/v1/users"


def error_names(response) -> list[str]:
    return [error["name"] for error in assert_envelope(response, 400)["errors"]]


def test_errors_list_filters_and_pages(client, app):
    partner, token = client.partner_with_token()
    headers = auth_header(token)
    key = client.create_key(token)
    other_key = client.create_key(token)
    failed = client.web.get(USERS + "/user_999999", headers=auth_header(key["key"]), status=404)
    client.web.get(USERS, headers=auth_header(key["key"]), status=200)
    flush_usage(app)
    now = utcnow()
    insert_raw_usage(app, [
        raw_row(other_key, partner, now - dt.timedelta(hours=2), status_code=503,
                error_message="upstream_unavailable", request_id="req-old-503"),
        raw_row(other_key, partner, now - dt.timedelta(hours=1), status_code=429,
                error_message="rate_limited", request_id="req-429"),
        raw_row(other_key, partner, now - dt.timedelta(minutes=30), status_code=200,
                request_id="req-ok"),
    ])

    listed = client.web.get(ERRORS, headers=headers, status=200).json
    assert [item["status"] for item in listed["data"]] == [404, 429, 503]
    newest = listed["data"][0]
    assert newest["request_id"] == failed.headers["X-Request-Id"]
    assert newest["key_prefix"] == key["key_prefix"]
    assert newest["mode"] == "test"
    assert newest["method"] == "GET"
    assert newest["endpoint"].startswith(USERS)
    assert newest["error_message"]
    assert newest["created_at"].endswith("Z")

    page = client.web.get(ERRORS + "?limit=2", headers=headers, status=200).json
    assert [item["status"] for item in page["data"]] == [404, 429]
    assert page["has_more"] is True
    rest = client.web.get(f"{ERRORS}?limit=2&cursor={page['next_cursor']}", headers=headers,
                          status=200).json
    assert [item["status"] for item in rest["data"]] == [503]
    assert rest["has_more"] is False

    def statuses(query: str) -> list[int]:
        body = client.web.get(f"{ERRORS}?{query}", headers=headers, status=200).json
        return [item["status"] for item in body["data"]]

    assert statuses("status=5xx") == [503]
    assert statuses("status=4xx") == [404, 429]
    assert statuses("status=429") == [429]
    assert statuses(f"key_prefix={other_key['key_prefix']}") == [429, 503]
    assert statuses(f"endpoint={newest['endpoint']}") == [404]
    since = (now - dt.timedelta(minutes=90)).strftime("%Y-%m-%dT%H:%M:%S+00:00")
    until = (now - dt.timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%S+00:00")
    assert statuses(f"since={since.replace('+', '%2B')}") == [404, 429]
    assert statuses(f"until={until.replace('+', '%2B')}") == [429, 503]

    one = client.web.get(f"{ERRORS}/req-429", headers=headers, status=200).json
    assert one["status"] == 429
    assert one["key_prefix"] == other_key["key_prefix"]
    assert one["error_message"] == "rate_limited"
    assert_envelope(client.web.get(f"{ERRORS}/req-ok", headers=headers, status=404), 404,
                    "not_found")
    assert_envelope(client.web.get(f"{ERRORS}/{'x' * 300}", headers=headers, status=404), 404,
                    "not_found")


def test_errors_bad_filters_are_400(client):
    _partner, token = client.partner_with_token()
    headers = auth_header(token)
    cases = {
        "status=200": "status",
        "status=6xx": "status",
        "status=abc": "status",
        "since=yesterday": "since",
        "until=2026-01-01T00:00:00": "until",
        "since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z": "until",
        "key_prefix=" + "k" * 17: "key_prefix",
        "limit=0": "limit",
        "cursor=nonsense": "cursor",
        "sort=status": "sort",
    }
    for query, field in cases.items():
        response = client.web.get(f"{ERRORS}?{query}", headers=headers, status=400)
        assert error_names(response) == [field], query


def test_errors_of_other_partners_invisible(client, app):
    partner, token = client.partner_with_token()
    other, other_token = client.partner_with_token()
    other_key = client.create_key(other_token)
    insert_raw_usage(app, [raw_row(other_key, other, utcnow(), status_code=500,
                                   error_message="internal_error", request_id="req-theirs")])

    headers = auth_header(token)
    assert client.web.get(ERRORS, headers=headers, status=200).json["data"] == []
    assert_envelope(client.web.get(f"{ERRORS}/req-theirs", headers=headers, status=404), 404,
                    "not_found")
    theirs = client.web.get(f"{ERRORS}/req-theirs", headers=auth_header(other_token), status=200)
    assert theirs.json["status"] == 500

    assert_envelope(client.web.get(ERRORS, status=401), 401)
    learner = customer_token(client, "errors-learner@example.org")
    assert_envelope(client.web.get(ERRORS, headers=auth_header(learner), status=403), 403)
    assert partner["id"] != other["id"]
