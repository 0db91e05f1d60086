"""Add integration reactions: one stored hook call per event and install.

Revision: c2f6a8d0e4b3
Parent revision: b7e4d1a9c3f5
Created: 2026-12-05 03:14:56.212913

The same history runs on PostgreSQL and on SQLite. Change existing tables
inside ``op.batch_alter_table`` blocks, because SQLite can alter a table only by
copying it. On PostgreSQL these blocks emit plain ALTER statements.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c2f6a8d0e4b3"
down_revision: str | Sequence[str] | None = "b7e4d1a9c3f5"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "integration_reactions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("install_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=20), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=True),
        sa.Column("locked_until", sa.DateTime(), nullable=True),
        sa.Column("last_error", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
        sa.Column("completed_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["event_id"], ["events.id"], name=op.f("fk_integration_reactions_event_id_events")
        ),
        sa.ForeignKeyConstraint(
            ["install_id"],
            ["integration_installs.id"],
            name=op.f("fk_integration_reactions_install_id_integration_installs"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_integration_reactions")),
        sa.UniqueConstraint(
            "event_id",
            "install_id",
            name=op.f("uq_integration_reactions_event_id_install_id"),
        ),
    )
    with op.batch_alter_table("integration_reactions", schema=None) as batch_op:
        batch_op.create_index(
            "idx_integration_reactions_due", ["status", "next_attempt_at"], unique=False
        )
        batch_op.create_index(
            "idx_integration_reactions_install_id", ["install_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("integration_reactions", schema=None) as batch_op:
        batch_op.drop_index("idx_integration_reactions_install_id")
        batch_op.drop_index("idx_integration_reactions_due")

    op.drop_table("integration_reactions")
