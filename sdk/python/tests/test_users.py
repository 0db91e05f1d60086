"""Users through the SDK against the live server: create, get, update, list, errors."""

from __future__ import annotations

import httpx
import pytest
from conftest import unique_email

from fkod_sdk import (
    API_VERSION,
    AuthenticationError,
    BadRequestError,
    Client,
    NotFoundError,
    ResponseInfo,
    User,
)


def test_create_get_and_update_user(client):
    email = unique_email()

    created = client.users.create(email=email, name="Ada", archetype="builder")
    fetched = client.users.get(created.id)
    updated = client.users.update(created.id, name="Ada Lovelace", archetype=None)

    assert isinstance(created, User)
    assert created.id.startswith("user_")
    assert created.email == email
    assert created.name == "Ada"
    assert created.archetype == "builder"
    assert fetched == created
    assert updated.id == created.id
    assert updated.name == "Ada Lovelace"
    assert updated.archetype is None
    assert client.users.get(created.id).name == "Ada Lovelace"


def test_iterate_follows_cursor_across_pages(client, env):
    created = {client.users.create(email=unique_email()).id for _ in range(5)}
    requests: list[ResponseInfo] = []
    with Client(base_url=env["FKOD_BASE_URL"], api_key=env["FKOD_API_KEY"],
                response_hook=requests.append) as counting:
        listed = [user.id for user in counting.users.iterate(limit=2)]

    assert created <= set(listed)
    assert len(listed) == len(set(listed))
    assert len(requests) >= 3
    assert all(info.path == "/api/v1/users" for info in requests)


def test_list_returns_one_page_and_cursor(client):
    for _ in range(3):
        client.users.create(email=unique_email())

    first = client.users.list(limit=2)
    second = client.users.list(limit=2, cursor=first.next_cursor)

    assert len(first) == 2
    assert first.has_more is True
    assert first.next_cursor
    assert {user.id for user in first}.isdisjoint(user.id for user in second)


def test_list_filters_by_email(client):
    email = unique_email()
    user = client.users.create(email=email)

    page = client.users.list(email=email)

    assert [found.id for found in page] == [user.id]


def test_validation_error_names_the_field(client):
    with pytest.raises(BadRequestError) as caught:
        client.users.create(email="not-an-email")

    error = caught.value
    assert error.status == 400
    assert error.code == "validation_failed"
    assert "email" in error.field_names()
    assert error.errors[0].location == "body"
    assert error.request_id
    assert error.message


def test_unknown_user_is_not_found(client):
    with pytest.raises(NotFoundError) as caught:
        client.users.get("user_999999999")

    assert caught.value.status == 404
    assert caught.value.code == "not_found"
    assert caught.value.request_id


def test_invalid_key_is_unauthorized(env):
    with Client(base_url=env["FKOD_BASE_URL"], api_key="sk_test_" + "x" * 40) as bad:
        with pytest.raises(AuthenticationError) as caught:
            bad.users.list()

    assert caught.value.status == 401
    assert caught.value.code
    assert caught.value.request_id


def test_same_idempotency_key_returns_same_user(env):
    email = unique_email()
    replays: list[ResponseInfo] = []
    with Client(base_url=env["FKOD_BASE_URL"], api_key=env["FKOD_API_KEY"],
                response_hook=replays.append) as hooked:
        first = hooked.users.create(email=email, idempotency_key="sdk-test-" + email)
        second = hooked.users.create(email=email, idempotency_key="sdk-test-" + email)

    assert second.id == first.id
    assert [info.replayed for info in replays] == [False, True]


def test_each_post_gets_its_own_generated_key(env):
    seen: list[ResponseInfo] = []
    with Client(base_url=env["FKOD_BASE_URL"], api_key=env["FKOD_API_KEY"],
                response_hook=seen.append) as hooked:
        hooked.users.create(email=unique_email())
        hooked.users.create(email=unique_email())

    keys = [info.idempotency_key for info in seen]
    assert all(keys)
    assert keys[0] != keys[1]


def test_requests_pin_api_version_and_name_sdk(env):
    sent: list[httpx.Request] = []
    versions: list[ResponseInfo] = []
    http = httpx.Client(event_hooks={"request": [sent.append]})
    with Client(base_url=env["FKOD_BASE_URL"], api_key=env["FKOD_API_KEY"], http_client=http,
                response_hook=versions.append) as hooked:
        hooked.mentors.list(limit=1)
    http.close()

    assert sent[0].headers["FKOD-Version"] == API_VERSION
    assert sent[0].headers["User-Agent"].startswith("fkod-sdk-python/0.1.0")
    assert versions[0].api_version == API_VERSION


def test_missing_base_url_is_an_error(monkeypatch):
    monkeypatch.delenv("FKOD_BASE_URL", raising=False)

    with pytest.raises(ValueError, match="FKOD_BASE_URL"):
        Client(api_key="sk_test_x")


def test_base_url_read_from_environment(env, monkeypatch):
    monkeypatch.setenv("FKOD_BASE_URL", env["FKOD_BASE_URL"])
    monkeypatch.setenv("FKOD_API_KEY", env["FKOD_API_KEY"])

    with Client() as from_env:
        assert from_env.users.list(limit=1).data is not None
