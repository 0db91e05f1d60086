"""Add account safety, invitations, verification, ticket threads and evidence.

Revision: f1c3e5a7b9d2
Parent revision: e7b2c9d4a6f1
Created: 2026-12-04 23:02:09.251085

The same history runs on PostgreSQL and on SQLite. Change existing tables
inside ``op.batch_alter_table`` blocks, because SQLite can alter a table only by
copying it. On PostgreSQL these blocks emit plain ALTER statements.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "f1c3e5a7b9d2"
down_revision: str | Sequence[str] | None = "e7b2c9d4a6f1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "revoked_tokens",
        sa.Column("jti", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("jti", name=op.f("pk_revoked_tokens")),
    )
    with op.batch_alter_table("revoked_tokens", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_revoked_tokens_expires_at"), ["expires_at"], unique=False
        )

    op.create_table(
        "user_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("purpose", sa.String(length=30), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("email", sa.String(length=255), nullable=True),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("used_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_user_tokens_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_user_tokens_token_hash")),
    )
    with op.batch_alter_table("user_tokens", schema=None) as batch_op:
        batch_op.create_index(
            "ix_user_tokens_user_id_purpose", ["user_id", "purpose"], unique=False
        )

    op.create_table(
        "partner_invitations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("partner_id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=255), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("invited_by_user_id", sa.Integer(), nullable=True),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("accepted_at", sa.DateTime(), nullable=True),
        sa.Column("accepted_by_user_id", sa.Integer(), nullable=True),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["accepted_by_user_id"],
            ["users.id"],
            name=op.f("fk_partner_invitations_accepted_by_user_id_users"),
        ),
        sa.ForeignKeyConstraint(
            ["invited_by_user_id"],
            ["users.id"],
            name=op.f("fk_partner_invitations_invited_by_user_id_users"),
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partners.id"],
            name=op.f("fk_partner_invitations_partner_id_partners"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_partner_invitations")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_partner_invitations_token_hash")),
    )
    with op.batch_alter_table("partner_invitations", schema=None) as batch_op:
        batch_op.create_index("ix_partner_invitations_partner_id", ["partner_id"], unique=False)

    op.create_table(
        "verification_documents",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("partner_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=30), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("content_type", sa.String(length=100), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("storage_key", sa.String(length=255), nullable=False),
        sa.Column("uploaded_by_user_id", sa.Integer(), nullable=True),
        sa.Column("deleted_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partners.id"],
            name=op.f("fk_verification_documents_partner_id_partners"),
        ),
        sa.ForeignKeyConstraint(
            ["uploaded_by_user_id"],
            ["users.id"],
            name=op.f("fk_verification_documents_uploaded_by_user_id_users"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_verification_documents")),
        sa.UniqueConstraint("storage_key", name=op.f("uq_verification_documents_storage_key")),
    )
    with op.batch_alter_table("verification_documents", schema=None) as batch_op:
        batch_op.create_index("ix_verification_documents_partner_id", ["partner_id"], unique=False)

    op.create_table(
        "support_ticket_evidence",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=30), nullable=False),
        sa.Column("reference", sa.String(length=100), nullable=False),
        sa.Column(
            "snapshot",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("attached_by_user_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["attached_by_user_id"],
            ["users.id"],
            name=op.f("fk_support_ticket_evidence_attached_by_user_id_users"),
        ),
        sa.ForeignKeyConstraint(
            ["ticket_id"],
            ["support_tickets.id"],
            name=op.f("fk_support_ticket_evidence_ticket_id_support_tickets"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_support_ticket_evidence")),
    )
    with op.batch_alter_table("support_ticket_evidence", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_support_ticket_evidence_ticket_id"), ["ticket_id"], unique=False
        )

    op.create_table(
        "support_ticket_messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("author_type", sa.String(length=20), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("admin_user_id", sa.Integer(), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["admin_user_id"],
            ["admin_users.id"],
            name=op.f("fk_support_ticket_messages_admin_user_id_admin_users"),
        ),
        sa.ForeignKeyConstraint(
            ["ticket_id"],
            ["support_tickets.id"],
            name=op.f("fk_support_ticket_messages_ticket_id_support_tickets"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_support_ticket_messages_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_support_ticket_messages")),
    )
    with op.batch_alter_table("support_ticket_messages", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_support_ticket_messages_ticket_id"), ["ticket_id"], unique=False
        )

    with op.batch_alter_table("partners", schema=None) as batch_op:
        batch_op.add_column(sa.Column("legal_name", sa.String(length=255), nullable=True))
        batch_op.add_column(
            sa.Column(
                "verification_data",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )
        batch_op.add_column(sa.Column("verification_submitted_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("verified_at", sa.DateTime(), nullable=True))
        batch_op.add_column(
            sa.Column("verification_rejection_reason", sa.String(length=500), nullable=True)
        )
        batch_op.add_column(sa.Column("suspended_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("suspension_reason", sa.String(length=500), nullable=True))
        batch_op.add_column(
            sa.Column("commission_rate", sa.Numeric(precision=5, scale=4), nullable=True)
        )
        batch_op.add_column(
            sa.Column(
                "rate_limit_overrides",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )
        batch_op.add_column(sa.Column("deletion_requested_at", sa.DateTime(), nullable=True))
        batch_op.alter_column(
            "tax_id",
            existing_type=sa.VARCHAR(length=50),
            type_=sa.String(length=500),
            existing_nullable=True,
        )
        # No release stored bank details yet; any value is kept as its JSON text.
        batch_op.alter_column(
            "bank_account",
            existing_type=sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            type_=sa.Text(),
            existing_nullable=True,
            postgresql_using="bank_account::text",
        )

    with op.batch_alter_table("support_tickets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("created_by_user_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_support_tickets_created_by_user_id_users"),
            "users",
            ["created_by_user_id"],
            ["id"],
        )

    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pending_email", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("totp_secret", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("totp_enabled_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("totp_last_step", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("tokens_valid_after", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("password_changed_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("password_changed_at")
        batch_op.drop_column("tokens_valid_after")
        batch_op.drop_column("totp_last_step")
        batch_op.drop_column("totp_enabled_at")
        batch_op.drop_column("totp_secret")
        batch_op.drop_column("pending_email")

    with op.batch_alter_table("support_tickets", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_support_tickets_created_by_user_id_users"), type_="foreignkey"
        )
        batch_op.drop_column("created_by_user_id")

    with op.batch_alter_table("partners", schema=None) as batch_op:
        batch_op.alter_column(
            "bank_account",
            existing_type=sa.Text(),
            type_=sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            existing_nullable=True,
            postgresql_using="bank_account::jsonb",
        )
        batch_op.alter_column(
            "tax_id",
            existing_type=sa.String(length=500),
            type_=sa.VARCHAR(length=50),
            existing_nullable=True,
        )
        batch_op.drop_column("deletion_requested_at")
        batch_op.drop_column("rate_limit_overrides")
        batch_op.drop_column("commission_rate")
        batch_op.drop_column("suspension_reason")
        batch_op.drop_column("suspended_at")
        batch_op.drop_column("verification_rejection_reason")
        batch_op.drop_column("verified_at")
        batch_op.drop_column("verification_submitted_at")
        batch_op.drop_column("verification_data")
        batch_op.drop_column("legal_name")

    with op.batch_alter_table("support_ticket_messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_support_ticket_messages_ticket_id"))

    op.drop_table("support_ticket_messages")
    with op.batch_alter_table("support_ticket_evidence", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_support_ticket_evidence_ticket_id"))

    op.drop_table("support_ticket_evidence")
    with op.batch_alter_table("verification_documents", schema=None) as batch_op:
        batch_op.drop_index("ix_verification_documents_partner_id")

    op.drop_table("verification_documents")
    with op.batch_alter_table("partner_invitations", schema=None) as batch_op:
        batch_op.drop_index("ix_partner_invitations_partner_id")

    op.drop_table("partner_invitations")
    with op.batch_alter_table("user_tokens", schema=None) as batch_op:
        batch_op.drop_index("ix_user_tokens_user_id_purpose")

    op.drop_table("user_tokens")
    with op.batch_alter_table("revoked_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_revoked_tokens_expires_at"))

    op.drop_table("revoked_tokens")
