"""The F-KOD learning tables: courses, enrollments, mentors and matches."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from fkod.core.db import Base, utcnow


class Course(Base):
    """A course. F-KOD's own catalog has no partner; partner courses belong to one mode."""

    __tablename__ = "courses"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(sa.String(255))
    description: Mapped[str | None] = mapped_column(sa.Text)
    level: Mapped[str | None] = mapped_column(sa.String(20))
    created_by_partner_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("partners.id"), index=True
    )
    livemode: Mapped[bool] = mapped_column(default=True, server_default=sa.true())
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=sa.func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(
        default=utcnow, onupdate=utcnow, server_default=sa.func.now()
    )


class Enrollment(Base):
    """A user's enrollment in a course, completed or not."""

    __tablename__ = "enrollments"
    __table_args__ = (sa.UniqueConstraint("user_id", "course_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), index=True)
    course_id: Mapped[int] = mapped_column(sa.ForeignKey("courses.id"), index=True)
    status: Mapped[str] = mapped_column(sa.String(20), default="enrolled")
    completed_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=sa.func.now())


class Mentor(Base):
    """A mentor of F-KOD's shared catalog."""

    __tablename__ = "mentors"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(255))
    expertise: Mapped[str | None] = mapped_column(sa.String(255))
    bio: Mapped[str | None] = mapped_column(sa.Text)
    status: Mapped[str] = mapped_column(sa.String(20), default="active", server_default="active")
    # Test-mode credentials see only the synthetic sandbox mentors (livemode false).
    livemode: Mapped[bool] = mapped_column(default=True, server_default=sa.true())
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=sa.func.now())


class MentorMatch(Base):
    """A user matched with a mentor by a partner."""

    __tablename__ = "mentor_matches"

    id: Mapped[int] = mapped_column(primary_key=True)
    mentor_id: Mapped[int] = mapped_column(sa.ForeignKey("mentors.id"), index=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), index=True)
    partner_id: Mapped[int] = mapped_column(sa.ForeignKey("partners.id"), index=True)
    livemode: Mapped[bool]
    note: Mapped[str | None] = mapped_column(sa.String(500))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=sa.func.now())
