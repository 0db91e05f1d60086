"""Resources of the F-KOD API as dataclasses.

Each ``from_dict`` reads the fields this SDK version defines and ignores the
others, so a newer server adding a field does not break an older SDK. Every
resource keeps the whole decoded object in ``raw``. Timestamps stay ISO 8601
strings in UTC, as the API sends them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class User:
    """A user in the partner's tenancy."""

    id: str
    email: str
    name: str | None
    archetype: str | None
    created_at: str | None
    updated_at: str | None
    raw: dict[str, Any] = dataclasses.field(repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> User:
        return cls(id=data["id"], email=data["email"], name=data.get("name"),
                   archetype=data.get("archetype"), created_at=data.get("created_at"),
                   updated_at=data.get("updated_at"), raw=data)


@dataclasses.dataclass(frozen=True)
class Course:
    """A course of the shared catalog or of the partner.

    ``owner`` is ``fkod`` for the shared catalog and ``partner`` for the partner's own courses.
    """

    id: str
    title: str
    description: str | None
    level: str | None
    owner: str | None
    created_at: str | None
    updated_at: str | None
    raw: dict[str, Any] = dataclasses.field(repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Course:
        return cls(id=data["id"], title=data["title"], description=data.get("description"),
                   level=data.get("level"), owner=data.get("owner"),
                   created_at=data.get("created_at"), updated_at=data.get("updated_at"),
                   raw=data)


@dataclasses.dataclass(frozen=True)
class Completion:
    """A user's completion of a course."""

    id: str
    course_id: str
    user_id: str
    status: str | None
    completed_at: str | None
    raw: dict[str, Any] = dataclasses.field(repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Completion:
        return cls(id=data["id"], course_id=data["course_id"], user_id=data["user_id"],
                   status=data.get("status"), completed_at=data.get("completed_at"), raw=data)


@dataclasses.dataclass(frozen=True)
class Mentor:
    """A mentor of the catalog."""

    id: str
    name: str
    expertise_areas: list[str]
    bio: str | None
    raw: dict[str, Any] = dataclasses.field(repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Mentor:
        return cls(id=data["id"], name=data["name"],
                   expertise_areas=list(data.get("expertise_areas") or []),
                   bio=data.get("bio"), raw=data)


@dataclasses.dataclass(frozen=True)
class MentorMatch:
    """A match between a user and a mentor."""

    id: str
    mentor_id: str
    user_id: str
    note: str | None
    created_at: str | None
    raw: dict[str, Any] = dataclasses.field(repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MentorMatch:
        return cls(id=data["id"], mentor_id=data["mentor_id"], user_id=data["user_id"],
                   note=data.get("note"), created_at=data.get("created_at"), raw=data)


@dataclasses.dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a cursor-paginated list.

    Pass ``next_cursor`` as ``cursor`` to get the next page while ``has_more`` is true.
    """

    data: list[T]
    has_more: bool
    next_cursor: str | None

    def __iter__(self) -> Iterator[T]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    @classmethod
    def from_dict(cls, body: dict[str, Any], parse: Callable[[dict[str, Any]], T]) -> Page[T]:
        return cls(data=[parse(item) for item in body.get("data", [])],
                   has_more=bool(body.get("has_more")), next_cursor=body.get("next_cursor"))


@dataclasses.dataclass(frozen=True)
class WebhookEvent:
    """A verified webhook delivery: the event's id, type, creation time and data."""

    id: str
    type: str
    # Unix seconds.
    created: int | None
    data: dict[str, Any]
    raw: dict[str, Any] = dataclasses.field(repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WebhookEvent:
        return cls(id=str(data.get("id", "")), type=str(data.get("type", "")),
                   created=data.get("created"), data=dict(data.get("data") or {}), raw=data)


@dataclasses.dataclass(frozen=True)
class TokenResponse:
    """Tokens issued by ``/oauth/token``."""

    access_token: str
    token_type: str
    expires_in: int | None
    scope: str | None
    refresh_token: str | None
    raw: dict[str, Any] = dataclasses.field(repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TokenResponse:
        return cls(access_token=data["access_token"], token_type=data.get("token_type", "Bearer"),
                   expires_in=data.get("expires_in"), scope=data.get("scope"),
                   refresh_token=data.get("refresh_token"), raw=data)


@dataclasses.dataclass(frozen=True)
class AuthorizationRequest:
    """An authorization URL to send the user to, with what the callback needs to check.

    Keep ``state`` and ``code_verifier`` on the server side (in the user's session)
    until the redirect comes back: compare ``state`` with the callback's, then pass
    ``code_verifier`` to the code exchange.
    """

    url: str
    state: str
    code_verifier: str
    code_challenge: str
