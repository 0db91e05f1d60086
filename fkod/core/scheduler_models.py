"""The record of scheduled job runs, shared by every scheduler process."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from fkod.core.db import Base, utcnow


class ScheduledRun(Base):
    """One firing of a scheduled job, claimed by the scheduler that sent its message.

    The unique (job, fire_time) pair lets several scheduler processes run at
    once: the first to insert the row sends the job's message, the others skip it.
    """

    __tablename__ = "scheduled_runs"
    __table_args__ = (sa.UniqueConstraint("job", "fire_time"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job: Mapped[str] = mapped_column(sa.String(100))
    # The time the job was due, UTC; a catch-up run keeps the missed fire time.
    fire_time: Mapped[dt.datetime]
    # "schedule" for a normal firing, "catch_up" after downtime, "manual" from the CLI.
    trigger: Mapped[str] = mapped_column(sa.String(20))
    claimed_by: Mapped[str | None] = mapped_column(sa.String(200))
    sent_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=sa.func.now())
