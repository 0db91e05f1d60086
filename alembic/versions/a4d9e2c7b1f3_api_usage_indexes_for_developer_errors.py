"""Index api_usage for the developer dashboard's failed calls.

Revision: a4d9e2c7b1f3
Parent revision: f2b8d4c6a0e1
Created: 2026-12-05 08:58:57.610789

``ix_api_usage_partner_id_created_at`` serves a partner's calls newest first and
``ix_api_usage_request_id`` the lookup of one call by its request id. Creating
an index needs no table copy on SQLite, so no batch block is used.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "a4d9e2c7b1f3"
down_revision: str | Sequence[str] | None = "f2b8d4c6a0e1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_api_usage_partner_id_created_at", "api_usage", ["partner_id", "created_at"])
    op.create_index("ix_api_usage_request_id", "api_usage", ["request_id"])


def downgrade() -> None:
    op.drop_index("ix_api_usage_request_id", table_name="api_usage")
    op.drop_index("ix_api_usage_partner_id_created_at", table_name="api_usage")
