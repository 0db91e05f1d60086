"""Webhook endpoints, the event outbox, deliveries and their attempts."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy import orm
from sqlalchemy.orm import Mapped, mapped_column

from fkod.core.db import Base, utcnow
from fkod.core.types import JSONType


class Webhook(Base):
    """A partner's endpoint subscribed to one or more event types or patterns."""

    __tablename__ = "webhooks"
    __table_args__ = (
        sa.Index("idx_webhooks_partner_id", "partner_id"),
        sa.Index("idx_webhooks_event_type", "event_type"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    partner_id: Mapped[int] = mapped_column(sa.ForeignKey("partners.id"))
    # The spec's single event type: the first of ``event_types``, kept for the
    # spec's column and index. Matching uses ``event_types``.
    event_type: Mapped[str] = mapped_column(sa.String(100))
    event_types: Mapped[list] = mapped_column(JSONType, default=list)
    url: Mapped[str] = mapped_column(sa.String(500))
    # Fernet token of the whsec_ secret; never stored in clear.
    secret_key: Mapped[str] = mapped_column(sa.String(255))
    headers: Mapped[dict] = mapped_column(JSONType, default=dict)
    # active, paused (by the partner), disabled (by the platform, see
    # disabled_reason) or deleted. Only active endpoints receive new events and
    # attempts. Deliveries already queued wait while an endpoint is paused or
    # disabled, and resume when it is active again.
    status: Mapped[str] = mapped_column(sa.String(20), default="active", server_default="active")
    retry_count: Mapped[int] = mapped_column(default=5, server_default="5")
    # Seconds before the first retry; later retries grow exponentially with jitter.
    retry_delay: Mapped[int] = mapped_column(default=300, server_default="300")
    # The secret replaced by the last rotation (a Fernet token). Deliveries are
    # signed with it as well until previous_secret_expires_at; it is kept after
    # that so the signature debugger can recognise a retired secret.
    previous_secret_key: Mapped[str | None] = mapped_column(sa.String(255))
    previous_secret_expires_at: Mapped[dt.datetime | None]
    secret_rotated_at: Mapped[dt.datetime | None]
    disabled_reason: Mapped[str | None] = mapped_column(sa.String(255))
    disabled_at: Mapped[dt.datetime | None]
    # Start of the current run of failed attempts; None after a success.
    failing_since: Mapped[dt.datetime | None]
    last_success_at: Mapped[dt.datetime | None]
    livemode: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    description: Mapped[str | None] = mapped_column(sa.String(500))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=sa.func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(
        default=utcnow, onupdate=utcnow, server_default=sa.func.now()
    )


class Event(Base):
    """The outbox: an event written in the transaction that caused it."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(sa.String(40), unique=True)
    type: Mapped[str] = mapped_column(sa.String(100), index=True)
    # The whole payload as delivered: id, type, created, data, request. Plain
    # JSON, not JSONB, so numbers and key order stay as they were written.
    payload: Mapped[dict] = mapped_column(sa.JSON)
    livemode: Mapped[bool]
    request_id: Mapped[str | None] = mapped_column(sa.String(64))
    created_at: Mapped[dt.datetime] = mapped_column(
        default=utcnow, server_default=sa.func.now(), index=True
    )


class WebhookEvent(Base):
    """One delivery of an event to one webhook endpoint."""

    __tablename__ = "webhook_events"
    __table_args__ = (
        sa.Index("idx_webhook_events_webhook_id", "webhook_id"),
        sa.Index("idx_webhook_events_created_at", "created_at"),
        sa.Index("ix_webhook_events_due", "status", "next_retry_at"),
        sa.Index("ix_webhook_events_webhook_id_status", "webhook_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    webhook_id: Mapped[int] = mapped_column(sa.ForeignKey("webhooks.id"))
    event_id: Mapped[int] = mapped_column(sa.ForeignKey("events.id"), index=True)
    event_type: Mapped[str] = mapped_column(sa.String(100))
    event_data: Mapped[dict] = mapped_column(sa.JSON)
    # pending -> delivering -> succeeded, or back to pending with next_retry_at,
    # or failed once the endpoint's retry_count is spent.
    status: Mapped[str] = mapped_column(sa.String(20), default="pending", server_default="pending")
    # Attempts in the current run, which retry_count bounds; a replay starts a
    # new run. attempt_total numbers the attempts across all runs.
    attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    attempt_total: Mapped[int] = mapped_column(default=0, server_default="0")
    replay_count: Mapped[int] = mapped_column(default=0, server_default="0")
    replayed_at: Mapped[dt.datetime | None]
    last_attempt_at: Mapped[dt.datetime | None]
    next_retry_at: Mapped[dt.datetime | None]
    response_code: Mapped[int | None]
    response_body: Mapped[str | None] = mapped_column(sa.Text)
    last_error: Mapped[str | None] = mapped_column(sa.String(255))
    # A worker that claims the delivery holds it until this moment; past it,
    # the sweeper treats the claim as lost.
    locked_until: Mapped[dt.datetime | None]
    completed_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=sa.func.now())

    webhook: Mapped[Webhook] = orm.relationship()
    event: Mapped[Event] = orm.relationship()


class WebhookAttempt(Base):
    """One HTTP attempt of a delivery."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(primary_key=True)
    delivery_id: Mapped[int] = mapped_column(sa.ForeignKey("webhook_events.id"), index=True)
    # The delivery's attempt_total when this attempt ran: 1, 2, ... across replays.
    attempt: Mapped[int]
    # The webhook-timestamp the attempt was signed with.
    signed_at: Mapped[int | None]
    started_at: Mapped[dt.datetime]
    duration_ms: Mapped[int]
    response_code: Mapped[int | None]
    response_body: Mapped[str | None] = mapped_column(sa.Text)
    error: Mapped[str | None] = mapped_column(sa.String(255))
