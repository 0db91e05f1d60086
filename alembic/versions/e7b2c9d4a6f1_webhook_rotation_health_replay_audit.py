"""Add webhook secret rotation, endpoint health and replays, and the audit log.

Revision: e7b2c9d4a6f1
Parent revision: d5a1c7e2b3f4
Created: 2026-12-04 22:47:45.186058

The same history runs on PostgreSQL and on SQLite. Change existing tables
inside ``op.batch_alter_table`` blocks, because SQLite can alter a table only by
copying it. On PostgreSQL these blocks emit plain ALTER statements.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "e7b2c9d4a6f1"
down_revision: str | Sequence[str] | None = "d5a1c7e2b3f4"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_logs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("partner_id", sa.Integer(), nullable=True),
        sa.Column("actor_type", sa.String(length=20), nullable=False),
        sa.Column("actor_id", sa.Integer(), nullable=True),
        sa.Column("action", sa.String(length=100), nullable=False),
        sa.Column("target_type", sa.String(length=50), nullable=True),
        sa.Column("target_id", sa.String(length=64), nullable=True),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("ip_address", sa.String(length=45), nullable=True),
        sa.Column(
            "details",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partners.id"], name=op.f("fk_audit_logs_partner_id_partners")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_logs")),
    )
    with op.batch_alter_table("audit_logs", schema=None) as batch_op:
        batch_op.create_index("ix_audit_logs_action", ["action"], unique=False)
        batch_op.create_index(
            "ix_audit_logs_partner_id_created_at", ["partner_id", "created_at"], unique=False
        )

    with op.batch_alter_table("webhook_attempts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("signed_at", sa.Integer(), nullable=True))

    with op.batch_alter_table("webhook_events", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("attempt_total", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("replay_count", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(sa.Column("replayed_at", sa.DateTime(), nullable=True))
        batch_op.create_index(
            "ix_webhook_events_webhook_id_status", ["webhook_id", "status"], unique=False
        )
    # Deliveries made before replays existed have had one run each.
    op.execute("UPDATE webhook_events SET attempt_total = attempts")

    with op.batch_alter_table("webhooks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("previous_secret_key", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("previous_secret_expires_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("secret_rotated_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("disabled_reason", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("disabled_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("failing_since", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("last_success_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("webhooks", schema=None) as batch_op:
        batch_op.drop_column("last_success_at")
        batch_op.drop_column("failing_since")
        batch_op.drop_column("disabled_at")
        batch_op.drop_column("disabled_reason")
        batch_op.drop_column("secret_rotated_at")
        batch_op.drop_column("previous_secret_expires_at")
        batch_op.drop_column("previous_secret_key")

    with op.batch_alter_table("webhook_events", schema=None) as batch_op:
        batch_op.drop_index("ix_webhook_events_webhook_id_status")
        batch_op.drop_column("replayed_at")
        batch_op.drop_column("replay_count")
        batch_op.drop_column("attempt_total")

    with op.batch_alter_table("webhook_attempts", schema=None) as batch_op:
        batch_op.drop_column("signed_at")

    with op.batch_alter_table("audit_logs", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_logs_partner_id_created_at")
        batch_op.drop_index("ix_audit_logs_action")

    op.drop_table("audit_logs")
