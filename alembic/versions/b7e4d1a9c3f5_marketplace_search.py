"""Add the full-text search index of the marketplace.

Revision: b7e4d1a9c3f5
Parent revision: a3d8f2c6e4b1
Created: 2026-12-06 09:00:00

PostgreSQL gets a stored generated tsvector column on integrations (name,
category and description, weighted in that order) with a GIN index, a GIN index
over the partners' company names, and a pg_trgm index over integration names for
typo-tolerant matches. SQLite gets two FTS5 tables keyed by the integration id:
``integration_search`` (words, for ranked and prefix matches) and
``integration_search_trigram`` (trigrams of the name, for typos). Triggers on
integrations and partners keep both in step, because other code writes those
tables directly. fkod.core.migrations leaves all of these objects out of the
schema comparison, because the models do not declare them.

NOTE: on SQLite, ``op.batch_alter_table("integrations")`` or
``op.batch_alter_table("partners")`` copies the table and drops the original,
and the triggers below go with it. A later migration that alters either table
in batch mode must create the triggers of SQLITE_TRIGGERS again after the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "b7e4d1a9c3f5"
down_revision: str | Sequence[str] | None = "a3d8f2c6e4b1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

POSTGRES_DOCUMENT = (
    "setweight(to_tsvector('english', coalesce(name, '')), 'A') || "
    "setweight(to_tsvector('english', coalesce(category, '')), 'B') || "
    "setweight(to_tsvector('english', coalesce(description, '')), 'C')"
)

SQLITE_TRIGGERS = {
    "trg_integrations_search_insert": """
        CREATE TRIGGER trg_integrations_search_insert AFTER INSERT ON integrations
        BEGIN
            INSERT INTO integration_search (rowid, name, description, category, company_name)
            VALUES (new.id, new.name, new.description, new.category,
                    (SELECT company_name FROM partners WHERE id = new.partner_id));
            INSERT INTO integration_search_trigram (rowid, name) VALUES (new.id, new.name);
        END
    """,
    "trg_integrations_search_update": """
        CREATE TRIGGER trg_integrations_search_update
        AFTER UPDATE OF name, description, category, partner_id ON integrations
        BEGIN
            DELETE FROM integration_search WHERE rowid = old.id;
            DELETE FROM integration_search_trigram WHERE rowid = old.id;
            INSERT INTO integration_search (rowid, name, description, category, company_name)
            VALUES (new.id, new.name, new.description, new.category,
                    (SELECT company_name FROM partners WHERE id = new.partner_id));
            INSERT INTO integration_search_trigram (rowid, name) VALUES (new.id, new.name);
        END
    """,
    "trg_integrations_search_delete": """
        CREATE TRIGGER trg_integrations_search_delete AFTER DELETE ON integrations
        BEGIN
            DELETE FROM integration_search WHERE rowid = old.id;
            DELETE FROM integration_search_trigram WHERE rowid = old.id;
        END
    """,
    "trg_partners_search_update": """
        CREATE TRIGGER trg_partners_search_update AFTER UPDATE OF company_name ON partners
        BEGIN
            UPDATE integration_search SET company_name = new.company_name
            WHERE rowid IN (SELECT id FROM integrations WHERE partner_id = new.id);
        END
    """,
    "trg_partners_search_delete": """
        CREATE TRIGGER trg_partners_search_delete AFTER DELETE ON partners
        BEGIN
            UPDATE integration_search SET company_name = NULL
            WHERE rowid IN (SELECT id FROM integrations WHERE partner_id = old.id);
        END
    """,
}


def create_sqlite_triggers() -> None:
    """Create (or re-create) the triggers that keep the SQLite search tables in step."""
    for name, statement in SQLITE_TRIGGERS.items():
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
        op.execute(statement)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _upgrade_postgresql()
    else:
        _upgrade_sqlite()


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS idx_integrations_search_name_trgm")
        op.execute("DROP INDEX IF EXISTS idx_partners_search_company")
        op.execute("DROP INDEX IF EXISTS idx_integrations_search_document")
        op.execute("ALTER TABLE integrations DROP COLUMN IF EXISTS search_document")
        # The pg_trgm extension stays: other schemas of the database may use it.
        return
    for name in SQLITE_TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.execute("DROP TABLE IF EXISTS integration_search_trigram")
    op.execute("DROP TABLE IF EXISTS integration_search")


def _upgrade_postgresql() -> None:
    # pg_trgm goes into the public schema, because it outlives any one
    # application schema. Where it is already installed in another schema, that
    # one is used, and the search code looks the schema up to qualify operators.
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public")
    trgm_schema = op.get_bind().exec_driver_sql(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
        "WHERE e.extname = 'pg_trgm'"
    ).scalar_one()

    op.execute(
        "ALTER TABLE integrations ADD COLUMN search_document tsvector "
        f"GENERATED ALWAYS AS ({POSTGRES_DOCUMENT}) STORED"
    )
    op.execute(
        "CREATE INDEX idx_integrations_search_document ON integrations "
        "USING gin (search_document)"
    )
    op.execute(
        "CREATE INDEX idx_partners_search_company ON partners "
        "USING gin (to_tsvector('english', coalesce(company_name, '')))"
    )
    op.execute(
        "CREATE INDEX idx_integrations_search_name_trgm ON integrations "
        f'USING gin (lower(name) "{trgm_schema}".gin_trgm_ops)'
    )


def _upgrade_sqlite() -> None:
    # unicode61 folds case and diacritics; the prefix indexes make "cour"* cheap.
    op.execute(
        "CREATE VIRTUAL TABLE integration_search USING fts5("
        "name, description, category, company_name, "
        "tokenize = 'unicode61 remove_diacritics 2', prefix = '2 3 4')"
    )
    op.execute(
        "CREATE VIRTUAL TABLE integration_search_trigram USING fts5("
        "name, tokenize = 'trigram')"
    )
    op.execute(
        "INSERT INTO integration_search (rowid, name, description, category, company_name) "
        "SELECT i.id, i.name, i.description, i.category, p.company_name "
        "FROM integrations i LEFT JOIN partners p ON p.id = i.partner_id"
    )
    op.execute(
        "INSERT INTO integration_search_trigram (rowid, name) SELECT id, name FROM integrations"
    )
    create_sqlite_triggers()
