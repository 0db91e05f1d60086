"""Add key rotation and IP ranges, usage roll-ups, idempotency records and limit boosts.

Also adds the synthetic sandbox catalog that test-mode credentials see in place
of F-KOD's real courses and mentors.

Revision: d5a1c7e2b3f4
Parent revision: c4d2e8a1f0b7
Created: 2026-12-04 21:08:26.257279

The same history runs on PostgreSQL and on SQLite. Change existing tables
inside ``op.batch_alter_table`` blocks, because SQLite can alter a table only by
copying it. On PostgreSQL these blocks emit plain ALTER statements.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "d5a1c7e2b3f4"
down_revision: str | Sequence[str] | None = "c4d2e8a1f0b7"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "idempotency_records",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("method", sa.String(length=10), nullable=False),
        sa.Column("path", sa.String(length=500), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("response_body", sa.Text(), nullable=True),
        sa.Column(
            "response_headers",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("created_at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
        sa.Column("completed_at", sa.DateTime(), nullable=True),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_idempotency_records")),
        sa.UniqueConstraint(
            "owner", "idempotency_key", name=op.f("uq_idempotency_records_owner_idempotency_key")
        ),
    )
    with op.batch_alter_table("idempotency_records", schema=None) as batch_op:
        batch_op.create_index("ix_idempotency_records_expires_at", ["expires_at"], unique=False)

    op.create_table(
        "job_states",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column(
            "cursor",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("updated_at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_job_states")),
    )
    op.create_table(
        "rate_limit_boosts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("partner_id", sa.Integer(), nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("extra_requests_per_hour", sa.Integer(), nullable=False),
        sa.Column("extra_requests_per_day", sa.Integer(), nullable=True),
        sa.Column("starts_at", sa.DateTime(), nullable=False),
        sa.Column("ends_at", sa.DateTime(), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.Column("created_by_user_id", sa.Integer(), nullable=True),
        sa.Column("cancelled_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by_user_id"],
            ["users.id"],
            name=op.f("fk_rate_limit_boosts_created_by_user_id_users"),
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partners.id"], name=op.f("fk_rate_limit_boosts_partner_id_partners")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rate_limit_boosts")),
    )
    with op.batch_alter_table("rate_limit_boosts", schema=None) as batch_op:
        batch_op.create_index(
            "ix_rate_limit_boosts_partner_ends", ["partner_id", "ends_at"], unique=False
        )

    op.create_table(
        "api_usage_hourly",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("hour", sa.DateTime(), nullable=False),
        sa.Column("api_key_id", sa.Integer(), nullable=True),
        sa.Column("partner_id", sa.Integer(), nullable=True),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("endpoint", sa.String(length=255), nullable=False),
        sa.Column("method", sa.String(length=10), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("request_count", sa.BigInteger(), nullable=False),
        sa.Column("total_response_time_ms", sa.BigInteger(), nullable=False),
        sa.Column("max_response_time_ms", sa.Integer(), nullable=False),
        sa.Column("request_bytes", sa.BigInteger(), nullable=False),
        sa.Column("response_bytes", sa.BigInteger(), nullable=False),
        sa.Column(
            "latency_histogram",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["api_key_id"], ["api_keys.id"], name=op.f("fk_api_usage_hourly_api_key_id_api_keys")
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partners.id"], name=op.f("fk_api_usage_hourly_partner_id_partners")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_usage_hourly")),
        sa.UniqueConstraint(
            "hour",
            "api_key_id",
            "endpoint",
            "method",
            "status_code",
            name=op.f("uq_api_usage_hourly_hour_api_key_id_endpoint_method_status_code"),
        ),
    )
    with op.batch_alter_table("api_usage_hourly", schema=None) as batch_op:
        batch_op.create_index("ix_api_usage_hourly_key_hour", ["api_key_id", "hour"], unique=False)
        batch_op.create_index(
            "ix_api_usage_hourly_partner_hour", ["partner_id", "hour"], unique=False
        )

    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("previous_key_hash", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("previous_key_prefix", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("previous_key_expires_at", sa.DateTime(), nullable=True))
        batch_op.add_column(
            sa.Column(
                "allowed_ips",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=False,
            )
        )
        batch_op.add_column(sa.Column("api_version", sa.String(length=10), nullable=True))
        batch_op.add_column(
            sa.Column("updated_at", sa.DateTime(), server_default=sa.func.now(), nullable=False)
        )
        batch_op.create_unique_constraint(
            batch_op.f("uq_api_keys_previous_key_hash"), ["previous_key_hash"]
        )

    with op.batch_alter_table("mentors", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("livemode", sa.Boolean(), server_default=sa.true(), nullable=False)
        )


    _insert_sandbox_catalog()


SANDBOX_COURSES = [
    ("Sandbox: Intro to Learning Paths", "Synthetic test-mode course.", "beginner"),
    ("Sandbox: Project-Based Practice", "Synthetic test-mode course.", "intermediate"),
    ("Sandbox: Capstone Review", "Synthetic test-mode course.", "advanced"),
]
SANDBOX_MENTORS = [
    ("Sandbox Mentor One", "Product design", "Synthetic test-mode mentor."),
    ("Sandbox Mentor Two", "Data science", "Synthetic test-mode mentor."),
]


def _insert_sandbox_catalog() -> None:
    courses = sa.table("courses", sa.column("title", sa.String), sa.column("description", sa.Text),
                       sa.column("level", sa.String), sa.column("livemode", sa.Boolean))
    mentors = sa.table("mentors", sa.column("name", sa.String), sa.column("expertise", sa.String),
                       sa.column("bio", sa.Text), sa.column("livemode", sa.Boolean))
    op.bulk_insert(courses, [
        {"title": title, "description": description, "level": level, "livemode": False}
        for title, description, level in SANDBOX_COURSES
    ])
    op.bulk_insert(mentors, [
        {"name": name, "expertise": expertise, "bio": bio, "livemode": False}
        for name, expertise, bio in SANDBOX_MENTORS
    ])


def downgrade() -> None:
    op.execute("DELETE FROM mentors WHERE livemode = false")
    op.execute("DELETE FROM courses WHERE livemode = false AND created_by_partner_id IS NULL")
    with op.batch_alter_table("mentors", schema=None) as batch_op:
        batch_op.drop_column("livemode")

    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_api_keys_previous_key_hash"), type_="unique")
        batch_op.drop_column("updated_at")
        batch_op.drop_column("api_version")
        batch_op.drop_column("allowed_ips")
        batch_op.drop_column("previous_key_expires_at")
        batch_op.drop_column("previous_key_prefix")
        batch_op.drop_column("previous_key_hash")

    with op.batch_alter_table("api_usage_hourly", schema=None) as batch_op:
        batch_op.drop_index("ix_api_usage_hourly_partner_hour")
        batch_op.drop_index("ix_api_usage_hourly_key_hour")

    op.drop_table("api_usage_hourly")
    with op.batch_alter_table("rate_limit_boosts", schema=None) as batch_op:
        batch_op.drop_index("ix_rate_limit_boosts_partner_ends")

    op.drop_table("rate_limit_boosts")
    op.drop_table("job_states")
    with op.batch_alter_table("idempotency_records", schema=None) as batch_op:
        batch_op.drop_index("ix_idempotency_records_expires_at")

    op.drop_table("idempotency_records")
