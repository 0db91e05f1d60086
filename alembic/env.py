"""Alembic environment of the F-KOD database, PostgreSQL or SQLite.

Alembic runs this file for every command. The database comes from, in order:

1. ``config.attributes["connection"]``: a SQLAlchemy connection that the caller
   (a test) owns. A transaction open on it stays open for the caller to end.
2. ``config.attributes["db_url"]``, which ``fkod.core.migrations.upgrade_to_head`` sets.
3. The environment variable FKOD_DB_URL, else ``fkod.db.url`` in the
   ``[app:main]`` section of the file given with ``alembic -c FILE``.

The models' metadata is the target of autogenerate. Every generated operation on
an existing table is rendered as batch mode, on PostgreSQL too, because one
history must run on both databases. The render_item and
process_revision_directives hooks from fkod.core.migrations fix the rest of
autogenerate's output that would run on only one of them.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context

import fkod.models
from fkod.core import migrations

config = context.config
target_metadata = fkod.models.metadata

CONTEXT_OPTIONS = {
    "target_metadata": target_metadata,
    "render_as_batch": True,
    "render_item": migrations.render_portable_item,
    "process_revision_directives": migrations.defer_use_alter_foreign_keys,
    **migrations.COMPARE_OPTIONS,
}

if config.config_file_name is not None and config.file_config.has_section("loggers"):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def database_url() -> str:
    url = config.attributes.get("db_url")
    if url is not None:
        return url
    return migrations.resolve_db_url(config.config_file_name)


def run_migrations_offline() -> None:
    """Write the SQL of the migrations to standard output (``alembic upgrade --sql``).

    Batch operations that recreate a SQLite table need a live database, so
    offline mode works for PostgreSQL only.
    """
    context.configure(
        url=database_url(),
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **CONTEXT_OPTIONS,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, **CONTEXT_OPTIONS)
        with context.begin_transaction():
            context.run_migrations()
        return

    engine = migrations.create_migration_engine(database_url())
    try:
        with engine.connect() as connection:
            # The engine makes SQLite's DDL transactional, so the whole run
            # commits or rolls back as one transaction on both databases.
            context.configure(connection=connection, transactional_ddl=True, **CONTEXT_OPTIONS)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
