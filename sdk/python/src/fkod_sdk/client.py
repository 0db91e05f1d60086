"""The synchronous client of the F-KOD API."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, Callable, TypeVar, Union
from urllib.parse import quote

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
from fkod_sdk.types import Completion, Course, Mentor, MentorMatch, Page, User

T = TypeVar("T")
IdempotencyKey = Union[str, None, NotGiven]


def given(**fields: Any) -> dict[str, Any]:
    """Return the fields to send: a field left as NOT_GIVEN is omitted, None is sent as null."""
    return {name: value for name, value in fields.items() if not isinstance(value, NotGiven)}


def segment(value: str) -> str:
    """Quote an id for use as one path segment, so it cannot change the path."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"An id must be a non-empty string, got {value!r}.")
    return quote(value, safe="")


class Client:
    """A client of the F-KOD API for one credential.

    ``base_url`` is the platform's address (or ``FKOD_BASE_URL``). The credential
    is an ``api_key`` (``sk_test_...``, ``sk_live_...``), an OAuth ``access_token``,
    or a function that returns the current access token. Without either, the
    client reads ``FKOD_API_KEY``. Every call pins ``api_version`` with the
    ``FKOD-Version`` header (None sends none, so the key's own version applies).

    GET and PUT are retried on 429, 503, timeouts and connection errors. POST
    is retried only with an Idempotency-Key: each POST method generates one
    unless ``auto_idempotency_keys`` is False, and sends the same key on every
    retry.
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
        http_client: httpx.Client | None = None,
    ) -> None:
        self._config = ClientConfig.build(
            base_url=base_url, api_key=api_key, access_token=access_token,
            api_version=api_version, timeout=timeout, max_retries=max_retries, retry=retry,
            auto_idempotency_keys=auto_idempotency_keys, response_hook=response_hook,
        )
        self._owns_http = http_client is None
        self._http = http_client or httpx.Client(follow_redirects=False)
        self.users = Users(self)
        self.courses = Courses(self)
        self.mentors = Mentors(self)

    @property
    def base_url(self) -> str:
        return self._config.base_url

    def close(self) -> None:
        """Close the connection pool, unless the caller passed its own ``http_client``."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: dict[str, Any] | None = None,
        idempotency_key: IdempotencyKey = NOT_GIVEN,
    ) -> Any:
        """Send one logical call, with retries, and return the decoded JSON body.

        Raises an :class:`~fkod_sdk.errors.ApiError` subclass for an error
        response, :class:`~fkod_sdk.errors.ApiTimeoutError` or
        :class:`~fkod_sdk.errors.ApiConnectionError` when no response came.
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
                response = self._http.request(method, url, params=query, json=json,
                                              headers=headers, timeout=self._config.timeout)
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
            time.sleep(delay)

    def _page(self, path: str, params: dict[str, Any], parse: Callable[[dict[str, Any]], T]
              ) -> Page[T]:
        return Page.from_dict(self.request("GET", path, params=params), parse)

    def _iterate(self, path: str, params: dict[str, Any], parse: Callable[[dict[str, Any]], T]
                 ) -> Iterator[T]:
        cursor = params.pop("cursor", None)
        while True:
            page = self._page(path, {**params, "cursor": cursor}, parse)
            yield from page.data
            if not page.has_more or not page.next_cursor:
                return
            cursor = page.next_cursor


class Users:
    """``/api/v1/users``: the users in the partner's tenancy."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def create(self, *, email: str, name: str | None = None,
               archetype: str | None = None,
               idempotency_key: IdempotencyKey = NOT_GIVEN) -> User:
        """Create a user. ``archetype`` is one of innovator, explorer, builder, mentor,
        achiever, collaborator."""
        return User.from_dict(self._client.request(
            "POST", "/api/v1/users", json=given(email=email, name=name, archetype=archetype),
            idempotency_key=idempotency_key))

    def get(self, user_id: str) -> User:
        return User.from_dict(self._client.request("GET", f"/api/v1/users/{segment(user_id)}"))

    def update(self, user_id: str, *, email: str | NotGiven = NOT_GIVEN,
               name: str | NotGiven | None = NOT_GIVEN,
               archetype: str | NotGiven | None = NOT_GIVEN) -> User:
        """Change the given fields of a user this partner created; None clears a field."""
        return User.from_dict(self._client.request(
            "PUT", f"/api/v1/users/{segment(user_id)}",
            json=given(email=email, name=name, archetype=archetype)))

    def list(self, *, limit: int | None = None, cursor: str | None = None,
             email: str | None = None) -> Page[User]:
        """Return one page of users, newest first; ``limit`` is 1 to 100 (default 20)."""
        return self._client._page("/api/v1/users",
                                  {"limit": limit, "cursor": cursor, "email": email},
                                  User.from_dict)

    def iterate(self, *, limit: int | None = None, email: str | None = None
                ) -> Iterator[User]:
        """Yield every user, requesting one page of ``limit`` at a time."""
        return self._client._iterate("/api/v1/users", {"limit": limit, "email": email},
                                     User.from_dict)


class Courses:
    """``/api/v1/courses``: the shared catalog and the partner's own courses."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def create(self, *, title: str, description: str | None = None,
               level: str | None = None,
               idempotency_key: IdempotencyKey = NOT_GIVEN) -> Course:
        """Create a course of the partner's own. ``level`` is beginner, intermediate or
        advanced."""
        return Course.from_dict(self._client.request(
            "POST", "/api/v1/courses", json=given(title=title, description=description,
                                                  level=level),
            idempotency_key=idempotency_key))

    def complete(self, course_id: str, *, user_id: str,
                 idempotency_key: IdempotencyKey = NOT_GIVEN) -> Completion:
        """Record that a user in the tenancy completed a course."""
        return Completion.from_dict(self._client.request(
            "POST", f"/api/v1/courses/{segment(course_id)}/complete",
            json={"user_id": user_id}, idempotency_key=idempotency_key))

    def list(self, *, limit: int | None = None, cursor: str | None = None
             ) -> Page[Course]:
        return self._client._page("/api/v1/courses", {"limit": limit, "cursor": cursor},
                                  Course.from_dict)

    def iterate(self, *, limit: int | None = None) -> Iterator[Course]:
        return self._client._iterate("/api/v1/courses", {"limit": limit}, Course.from_dict)


class Mentors:
    """``/api/v1/mentors``: the mentor catalog and matches."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def list(self, *, limit: int | None = None, cursor: str | None = None
             ) -> Page[Mentor]:
        return self._client._page("/api/v1/mentors", {"limit": limit, "cursor": cursor},
                                  Mentor.from_dict)

    def iterate(self, *, limit: int | None = None) -> Iterator[Mentor]:
        return self._client._iterate("/api/v1/mentors", {"limit": limit}, Mentor.from_dict)

    def match(self, mentor_id: str, *, user_id: str, note: str | None = None,
              idempotency_key: IdempotencyKey = NOT_GIVEN) -> MentorMatch:
        """Match a user in the tenancy with a mentor."""
        return MentorMatch.from_dict(self._client.request(
            "POST", f"/api/v1/mentors/{segment(mentor_id)}/match",
            json=given(user_id=user_id, note=note), idempotency_key=idempotency_key))
