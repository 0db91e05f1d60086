"""Add the marketplace: partner slugs, integration versions, installs and reviews.

Revision: a3d8f2c6e4b1
Parent revision: f1c3e5a7b9d2
Created: 2026-12-05 02:01:41.552875

The same history runs on PostgreSQL and on SQLite. Change existing tables
inside ``op.batch_alter_table`` blocks, because SQLite can alter a table only by
copying it. On PostgreSQL these blocks emit plain ALTER statements.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "a3d8f2c6e4b1"
down_revision: str | Sequence[str] | None = "f1c3e5a7b9d2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "integration_installs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("integration_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=20), server_default="active", nullable=False),
        sa.Column("config", sa.Text(), nullable=True),
        sa.Column(
            "granted_scopes",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("installed_at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
        sa.Column("uninstalled_at", sa.DateTime(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["integration_id"],
            ["integrations.id"],
            name=op.f("fk_integration_installs_integration_id_integrations"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_integration_installs_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_integration_installs")),
        sa.UniqueConstraint(
            "integration_id",
            "user_id",
            name=op.f("uq_integration_installs_integration_id_user_id"),
        ),
    )
    with op.batch_alter_table("integration_installs", schema=None) as batch_op:
        batch_op.create_index(
            "idx_integration_installs_recent", ["integration_id", "installed_at"], unique=False
        )
        batch_op.create_index("idx_integration_installs_user", ["user_id", "status"], unique=False)

    op.create_table(
        "integration_reviews",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("integration_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("rating", sa.SmallInteger(), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=True),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=20), server_default="visible", nullable=False),
        sa.Column("moderation_reason", sa.String(length=500), nullable=True),
        sa.Column("reply_body", sa.Text(), nullable=True),
        sa.Column("reply_user_id", sa.Integer(), nullable=True),
        sa.Column("replied_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint(
            "rating BETWEEN 1 AND 5",
            name=op.f("ck_integration_reviews_rating"),
        ),
        sa.ForeignKeyConstraint(
            ["integration_id"],
            ["integrations.id"],
            name=op.f("fk_integration_reviews_integration_id_integrations"),
        ),
        sa.ForeignKeyConstraint(
            ["reply_user_id"],
            ["users.id"],
            name=op.f("fk_integration_reviews_reply_user_id_users"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_integration_reviews_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_integration_reviews")),
        sa.UniqueConstraint(
            "integration_id", "user_id", name=op.f("uq_integration_reviews_integration_id_user_id")
        ),
    )
    with op.batch_alter_table("integration_reviews", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_integration_reviews_integration_id"), ["integration_id"], unique=False
        )

    op.create_table(
        "integration_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("integration_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(length=20), nullable=False),
        sa.Column("release_notes", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=20), server_default="draft", nullable=False),
        sa.Column("created_at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["integration_id"],
            ["integrations.id"],
            name=op.f("fk_integration_versions_integration_id_integrations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_integration_versions")),
        sa.UniqueConstraint(
            "integration_id",
            "version",
            name=op.f("uq_integration_versions_integration_id_version"),
        ),
    )
    with op.batch_alter_table("integration_versions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_integration_versions_integration_id"), ["integration_id"], unique=False
        )

    with op.batch_alter_table("integrations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("support_url", sa.String(length=500), nullable=True))
        batch_op.add_column(
            sa.Column(
                "scopes",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                server_default="[]",
                nullable=False,
            )
        )
        batch_op.add_column(
            sa.Column(
                "event_types",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                server_default="[]",
                nullable=False,
            )
        )
        batch_op.add_column(
            sa.Column(
                "config_schema",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )
        batch_op.add_column(
            sa.Column("pricing_model", sa.String(length=20), server_default="free", nullable=False)
        )
        batch_op.add_column(sa.Column("price_cents", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("rejection_reason", sa.String(length=1000), nullable=True))
        batch_op.add_column(sa.Column("submitted_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("published_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("featured_rank", sa.Integer(), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_integrations_plugin_name"), ["plugin_name"], unique=False
        )

    with op.batch_alter_table("partners", schema=None) as batch_op:
        batch_op.add_column(sa.Column("slug", sa.String(length=100), nullable=True))
        batch_op.create_unique_constraint(batch_op.f("uq_partners_slug"), ["slug"])

    with op.batch_alter_table("plugin_states", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("trusted", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("plugin_states", schema=None) as batch_op:
        batch_op.drop_column("trusted")

    with op.batch_alter_table("partners", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_partners_slug"), type_="unique")
        batch_op.drop_column("slug")

    with op.batch_alter_table("integrations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_integrations_plugin_name"))
        batch_op.drop_column("featured_rank")
        batch_op.drop_column("published_at")
        batch_op.drop_column("submitted_at")
        batch_op.drop_column("rejection_reason")
        batch_op.drop_column("price_cents")
        batch_op.drop_column("pricing_model")
        batch_op.drop_column("config_schema")
        batch_op.drop_column("event_types")
        batch_op.drop_column("scopes")
        batch_op.drop_column("support_url")

    with op.batch_alter_table("integration_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_integration_versions_integration_id"))

    op.drop_table("integration_versions")
    with op.batch_alter_table("integration_reviews", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_integration_reviews_integration_id"))

    op.drop_table("integration_reviews")
    with op.batch_alter_table("integration_installs", schema=None) as batch_op:
        batch_op.drop_index("idx_integration_installs_user")
        batch_op.drop_index("idx_integration_installs_recent")

    op.drop_table("integration_installs")
