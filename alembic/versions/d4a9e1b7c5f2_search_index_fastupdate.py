"""Turn off the pending list of the PostgreSQL search indexes.

Revision: d4a9e1b7c5f2
Parent revision: c2f6a8d0e4b3
Created: 2026-12-05 03:40:00

A GIN index with fastupdate keeps new rows in a pending list until a vacuum
merges them, and every search reads that list, which can grow to 4 MB between
vacuums. The catalog is written rarely and searched often, so the search
indexes take each write into the index at once. SQLite has nothing to change.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "d4a9e1b7c5f2"
down_revision: str | Sequence[str] | None = "c2f6a8d0e4b3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SEARCH_INDEXES = (
    "idx_integrations_search_document",
    "idx_partners_search_company",
    "idx_integrations_search_name_trgm",
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for index in SEARCH_INDEXES:
        op.execute(f"ALTER INDEX {index} SET (fastupdate = off)")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for index in SEARCH_INDEXES:
        op.execute(f"ALTER INDEX {index} RESET (fastupdate)")
