"""The asynchronous client of the F-KOD API, for asyncio applications."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Callable, TypeVar

import httpx

from fkod_sdk._config import (
    NOT_GIVEN,
    ClientConfig,
    Credential,
    NotGiven,
    ResponseHook,
    RetryPolicy,
    clean_params,
    decode_json,
    delay_after_error_status,
    delay_after_transport_error,
    idempotency_key_for,
    may_retry,
    report_response,
)
from fkod_sdk._version import API_VERSION
from fkod_sdk.client import IdempotencyKey, given, segment
from fkod_sdk.types import Completion, Course, Mentor, MentorMatch, Page, User

T = TypeVar("T")


class AsyncClient:
    """The asyncio counterpart of :class:`fkod_sdk.Client`, with the same options and rules.

    The ``access_token`` function, when given, is called synchronously before each
    request, so it should return a token it already holds.
    """

    def __init__(
        self,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        access_token: Credential | None = None,
        api_version: str | None = API_VERSION,
        timeout: float | httpx.Timeout = 30.0,
        max_retries: int = 2,
        retry: RetryPolicy | None = None,
        auto_idempotency_keys: bool = True,
        response_hook: ResponseHook | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self._config = ClientConfig.build(
            base_url=base_url, api_key=api_key, access_token=access_token,
            api_version=api_version, timeout=timeout, max_retries=max_retries, retry=retry,
            auto_idempotency_keys=auto_idempotency_keys, response_hook=response_hook,
        )
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(follow_redirects=False)
        self.users = AsyncUsers(self)
        self.courses = AsyncCourses(self)
        self.mentors = AsyncMentors(self)

    @property
    def base_url(self) -> str:
        return self._config.base_url

    async def aclose(self) -> None:
        """Close the connection pool, unless the caller passed its own ``http_client``."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: dict[str, Any] | None = None,
        idempotency_key: IdempotencyKey = NOT_GIVEN,
    ) -> Any:
        """Send one logical call, with retries, and return the decoded JSON body.

        Raises the same errors as :meth:`fkod_sdk.Client.request`.
        """
        method = method.upper()
        key = idempotency_key_for(method, idempotency_key, self._config.auto_idempotency_keys)
        retryable = may_retry(method, key)
        url = self._config.base_url + path
        query = clean_params(params or {})

        attempt = 0
        while True:
            headers = self._config.headers()
            if key is not None:
                headers["Idempotency-Key"] = key
            try:
                response = await self._http.request(method, url, params=query, json=json,
                                                    headers=headers,
                                                    timeout=self._config.timeout)
            except httpx.TransportError as exc:
                delay = delay_after_transport_error(self._config, attempt, retryable, method,
                                                    path, exc)
            else:
                body = decode_json(response)
                report_response(self._config, method, path, response, attempt, key)
                if response.is_success:
                    return body
                delay = delay_after_error_status(self._config, attempt, retryable, response,
                                                 body)

            attempt += 1
            await asyncio.sleep(delay)

    async def _page(self, path: str, params: dict[str, Any],
                    parse: Callable[[dict[str, Any]], T]) -> Page[T]:
        return Page.from_dict(await self.request("GET", path, params=params), parse)

    async def _iterate(self, path: str, params: dict[str, Any],
                       parse: Callable[[dict[str, Any]], T]) -> AsyncIterator[T]:
        cursor = params.pop("cursor", None)
        while True:
            page = await self._page(path, {**params, "cursor": cursor}, parse)
            for item in page.data:
                yield item
            if not page.has_more or not page.next_cursor:
                return
            cursor = page.next_cursor


class AsyncUsers:
    """``/api/v1/users``: the users in the partner's tenancy."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def create(self, *, email: str, name: str | None = None,
                     archetype: str | None = None,
                     idempotency_key: IdempotencyKey = NOT_GIVEN) -> User:
        return User.from_dict(await self._client.request(
            "POST", "/api/v1/users", json=given(email=email, name=name, archetype=archetype),
            idempotency_key=idempotency_key))

    async def get(self, user_id: str) -> User:
        return User.from_dict(await self._client.request(
            "GET", f"/api/v1/users/{segment(user_id)}"))

    async def update(self, user_id: str, *, email: str | NotGiven = NOT_GIVEN,
                     name: str | NotGiven | None = NOT_GIVEN,
                     archetype: str | NotGiven | None = NOT_GIVEN) -> User:
        return User.from_dict(await self._client.request(
            "PUT", f"/api/v1/users/{segment(user_id)}",
            json=given(email=email, name=name, archetype=archetype)))

    async def list(self, *, limit: int | None = None, cursor: str | None = None,
                   email: str | None = None) -> Page[User]:
        return await self._client._page("/api/v1/users",
                                        {"limit": limit, "cursor": cursor, "email": email},
                                        User.from_dict)

    def iterate(self, *, limit: int | None = None, email: str | None = None
                ) -> AsyncIterator[User]:
        """Yield every user with ``async for``, one page of ``limit`` at a time."""
        return self._client._iterate("/api/v1/users", {"limit": limit, "email": email},
                                     User.from_dict)


class AsyncCourses:
    """``/api/v1/courses``: the shared catalog and the partner's own courses."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def create(self, *, title: str, description: str | None = None,
                     level: str | None = None,
                     idempotency_key: IdempotencyKey = NOT_GIVEN) -> Course:
        return Course.from_dict(await self._client.request(
            "POST", "/api/v1/courses",
            json=given(title=title, description=description, level=level),
            idempotency_key=idempotency_key))

    async def complete(self, course_id: str, *, user_id: str,
                       idempotency_key: IdempotencyKey = NOT_GIVEN) -> Completion:
        return Completion.from_dict(await self._client.request(
            "POST", f"/api/v1/courses/{segment(course_id)}/complete",
            json={"user_id": user_id}, idempotency_key=idempotency_key))

    async def list(self, *, limit: int | None = None, cursor: str | None = None
                   ) -> Page[Course]:
        return await self._client._page("/api/v1/courses", {"limit": limit, "cursor": cursor},
                                        Course.from_dict)

    def iterate(self, *, limit: int | None = None) -> AsyncIterator[Course]:
        return self._client._iterate("/api/v1/courses", {"limit": limit}, Course.from_dict)


class AsyncMentors:
    """``/api/v1/mentors``: the mentor catalog and matches."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def list(self, *, limit: int | None = None, cursor: str | None = None
                   ) -> Page[Mentor]:
        return await self._client._page("/api/v1/mentors", {"limit": limit, "cursor": cursor},
                                        Mentor.from_dict)

    def iterate(self, *, limit: int | None = None) -> AsyncIterator[Mentor]:
        return self._client._iterate("/api/v1/mentors", {"limit": limit}, Mentor.from_dict)

    async def match(self, mentor_id: str, *, user_id: str, note: str | None = None,
                    idempotency_key: IdempotencyKey = NOT_GIVEN) -> MentorMatch:
        return MentorMatch.from_dict(await self._client.request(
            "POST", f"/api/v1/mentors/{segment(mentor_id)}/match",
            json=given(user_id=user_id, note=note), idempotency_key=idempotency_key))
