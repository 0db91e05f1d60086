"""The asyncio client against the live server."""

from __future__ import annotations

import asyncio

import pytest
from conftest import unique_email

from fkod_sdk import AsyncClient, BadRequestError, NotFoundError, ResponseInfo


def test_async_create_get_update_and_iterate(env):
    async def scenario() -> tuple:
        seen: list[ResponseInfo] = []
        async with AsyncClient(base_url=env["FKOD_BASE_URL"], api_key=env["FKOD_API_KEY"],
                               response_hook=seen.append) as api:
            created = [await api.users.create(email=unique_email()) for _ in range(3)]
            fetched = await api.users.get(created[0].id)
            updated = await api.users.update(created[0].id, name="Grace")
            listed = [user.id async for user in api.users.iterate(limit=2)]
        return created, fetched, updated, listed, seen

    created, fetched, updated, listed, seen = asyncio.run(scenario())

    assert fetched == created[0]
    assert updated.name == "Grace"
    assert {user.id for user in created} <= set(listed)
    assert sum(1 for info in seen if info.method == "GET" and info.path == "/api/v1/users") >= 2


def test_async_errors(env):
    async def scenario() -> tuple:
        async with AsyncClient(base_url=env["FKOD_BASE_URL"],
                               api_key=env["FKOD_API_KEY"]) as api:
            with pytest.raises(BadRequestError) as invalid:
                await api.users.create(email="nope")
            with pytest.raises(NotFoundError) as missing:
                await api.users.get("user_999999999")
        return invalid.value, missing.value

    invalid, missing = asyncio.run(scenario())

    assert invalid.field_names() == ["email"]
    assert missing.status == 404
