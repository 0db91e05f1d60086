"""Alembic migrations run from Python: upgrade a database and check that it is current.

The ``alembic`` folder next to the ``fkod`` package contains one migration history
for PostgreSQL and SQLite. ``alembic/env.py`` uses the helpers here to find the
database URL and to configure Alembic, so the ``alembic`` command line,
:func:`upgrade_to_head` and :func:`schema_differences` behave the same.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import plaster
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.autogenerate.api import AutogenContext
from alembic.config import Config
from alembic.operations import ops
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import event
from sqlalchemy.dialects import postgresql

import fkod
import fkod.models
from fkod.core.settings import ConfigurationError

# The repository's alembic folder is a sibling of the fkod package. Setuptools
# does not install it, so only a source checkout (or an editable install) has it.
ALEMBIC_DIR = Path(fkod.__file__).resolve().parent.parent / "alembic"

DB_URL_ENV = "FKOD_DB_URL"
DB_URL_SETTING = "fkod.db.url"
APP_SECTION = "app:main"

# Database objects of the marketplace search index (migration b7e4d1a9c3f5)
# that the models do not declare: the SQLite FTS5 tables with their shadow
# tables, and PostgreSQL's generated column and indexes. Autogenerate and
# schema_differences leave them out, so neither proposes to drop them.
SEARCH_INDEX_NAMES = frozenset({
    "search_document",
    "idx_integrations_search_document",
    "idx_integrations_search_name_trgm",
    "idx_partners_search_company",
})
SEARCH_INDEX_TABLE_PREFIXES = ("integration_search",)


def include_modeled_name(name: str | None, type_: str, _parent_names) -> bool:
    """Return False for the search index objects above, True for everything else."""
    if name is None:
        return True
    if type_ == "table" and name.startswith(SEARCH_INDEX_TABLE_PREFIXES):
        return False
    return name not in SEARCH_INDEX_NAMES


# Options of Alembic's MigrationContext that autogenerate (env.py) and
# schema_differences share, so both report the same differences.
COMPARE_OPTIONS = {
    "compare_type": True,
    "compare_server_default": True,
    "include_name": include_modeled_name,
}


def render_portable_item(
    item_type: str, obj: object, context: AutogenContext
) -> str | Literal[False]:
    """Render a column type or server default so that autogenerate's output runs on both databases.

    Alembic would render the server defaults ``func.now()``, ``true()`` and
    ``false()`` as SQL compiled for the database that autogenerate compares
    with. That is ``now()`` from PostgreSQL, which SQLite rejects in a DEFAULT
    clause, or ``1`` from SQLite, which PostgreSQL rejects for a boolean column.
    This function renders the SQLAlchemy construct instead, which compiles right
    on both. Alembic calls it as its ``render_item`` hook, and False means
    "render as usual".
    """
    if item_type == "type" and _is_plain_jsonb(obj):
        # Alembic 1.20 renders JSONB's astext_type as a bare Text() when
        # autogenerate compares with SQLite, which leaves the migration with a
        # NameError.
        context.imports.add("from sqlalchemy.dialects import postgresql")
        return "postgresql.JSONB(astext_type=sa.Text())"
    if item_type != "server_default" or not isinstance(obj, sa.DefaultClause):
        return False
    if isinstance(obj.arg, sa.sql.elements.True_):
        return "sa.true()"
    if isinstance(obj.arg, sa.sql.elements.False_):
        return "sa.false()"
    if isinstance(obj.arg, sa.sql.functions.now):
        return "sa.func.now()"
    return False


def defer_use_alter_foreign_keys(_context, _revision, directives: list) -> None:
    """Move foreign keys marked ``use_alter`` out of new tables, to a step after every new table.

    Such a key closes a cycle between tables (users and partners reference each
    other). PostgreSQL's CREATE TABLE leaves it out, because SQLAlchemy expects
    an ALTER TABLE to add it, and Alembic 1.20's ``op.create_table`` never emits
    that ALTER TABLE. The step
    is rendered in batch mode, which runs on both databases. Alembic calls this
    function as its ``process_revision_directives`` hook. The downgrade is rebuilt
    from the changed upgrade, so it drops those keys before the tables.
    """
    script = directives[0]
    if script.upgrade_ops is None:
        return
    deferred = []
    for operation in script.upgrade_ops.ops:
        if not isinstance(operation, ops.CreateTableOp):
            continue
        keys = [
            item
            for item in operation.columns
            if isinstance(item, sa.ForeignKeyConstraint) and item.use_alter
        ]
        if not keys:
            continue
        # Compare by identity, because == on a Column builds a SQL expression.
        operation.columns = [
            item for item in operation.columns if not any(item is key for key in keys)
        ]
        add_keys = [ops.CreateForeignKeyOp.from_constraint(key) for key in keys]
        deferred.append(
            ops.ModifyTableOps(operation.table_name, add_keys, schema=operation.schema)
        )
    if deferred:
        script.upgrade_ops.ops.extend(deferred)
        script.downgrade_ops = script.upgrade_ops.reverse()


def _is_plain_jsonb(type_: object) -> bool:
    return (
        isinstance(type_, postgresql.JSONB)
        and type(type_.astext_type) is sa.Text
        and type_.astext_type.length is None
        and not type_.none_as_null
    )


def resolve_db_url(config_file: str | None, environ: Mapping[str, str] | None = None) -> str:
    """Return the database URL to migrate, read the way the application reads it.

    The environment variable FKOD_DB_URL wins. Otherwise the URL is ``fkod.db.url``
    in the ``[app:main]`` section of ``config_file``, with ``%(here)s`` replaced
    by the folder of that file. A value of the form ``env:NAME`` is read from the
    environment variable NAME. Raises ConfigurationError when no URL is set.
    """
    environ = os.environ if environ is None else environ
    if DB_URL_ENV in environ:
        value, source = environ[DB_URL_ENV], f"environment variable {DB_URL_ENV}"
    elif config_file is None:
        raise ConfigurationError(
            f"missing setting {DB_URL_SETTING}: set the environment variable {DB_URL_ENV} "
            f"or pass an .ini file whose [{APP_SECTION}] section sets {DB_URL_SETTING} "
            "(alembic -c FILE)"
        )
    else:
        settings = plaster.get_settings(config_file, APP_SECTION)
        value = settings.get(DB_URL_SETTING)
        source = f"[{APP_SECTION}] of {config_file}"
        if value is None:
            raise ConfigurationError(
                f"missing setting {DB_URL_SETTING} in [{APP_SECTION}] of {config_file}: "
                f"set it there or in the environment variable {DB_URL_ENV}"
            )

    value = value.strip()
    if value.startswith("env:"):
        variable = value.removeprefix("env:")
        if not environ.get(variable):
            raise ConfigurationError(
                f"missing setting {DB_URL_SETTING}: the environment variable {variable} "
                f"that {source} names is not set"
            )
        value = environ[variable].strip()
    if not value:
        raise ConfigurationError(f"invalid setting {DB_URL_SETTING}: {source} is empty")
    return value


def create_migration_engine(db_url: str) -> sa.Engine:
    """Create an engine without a connection pool for one migration run.

    On SQLite, this function creates the folder of the database file if it is
    missing. The engine emits BEGIN IMMEDIATE itself, so a whole upgrade runs in
    one transaction that a failure rolls back. pysqlite alone would run each DDL
    statement in autocommit mode. Foreign key enforcement stays off, because
    batch mode drops and recreates tables, and with enforcement on, dropping a
    table that other rows reference fails.
    """
    url = sa.engine.make_url(db_url)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    if url.get_backend_name() != "sqlite":
        return engine

    # The first upgrade creates the database file, so its folder (var/ in
    # development.ini) must exist.
    if url.database and url.database != ":memory:" and not url.database.startswith("file:"):
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)

    @event.listens_for(engine, "connect")
    def _sqlite_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=OFF")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _sqlite_begin(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def alembic_config(db_url: str | None = None, connection: sa.Connection | None = None) -> Config:
    """Build an Alembic Config for the repository's migrations, without an .ini file.

    env.py migrates ``connection`` when it is given, inside the caller's
    transaction if one is open. Otherwise env.py connects to ``db_url``.
    """
    if not (ALEMBIC_DIR / "env.py").is_file():
        raise ConfigurationError(
            f"Alembic folder not found at {ALEMBIC_DIR}: migrations run only from a "
            "source checkout of the repository (pip install -e .)"
        )
    config = Config()
    # Config values go through configparser interpolation, where % is special.
    config.set_main_option("script_location", str(ALEMBIC_DIR).replace("%", "%%"))
    if db_url is not None:
        config.attributes["db_url"] = db_url
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade_to_head(db_url: str) -> None:
    """Apply every migration that the database at ``db_url`` lacks."""
    command.upgrade(alembic_config(db_url=db_url), "head")


def check_schema_current(engine: sa.Engine) -> str | None:
    """Return None when the database is at the newest revision, else a message saying why not."""
    script = ScriptDirectory.from_config(alembic_config())
    expected = set(script.get_heads())
    with engine.connect() as connection:
        current = set(MigrationContext.configure(connection).get_current_heads())
    if current == expected:
        return None

    expected_text = ", ".join(sorted(expected))
    unknown = sorted(revision for revision in current if not _is_known_revision(script, revision))
    if unknown:
        return (
            f"database schema is at revision {', '.join(unknown)}, which this code does not "
            f"know (it expects {expected_text}): the database was probably migrated by a "
            "newer version of the code"
        )
    current_text = ", ".join(sorted(current)) or "none"
    return (
        f"database schema is at revision {current_text}, expected {expected_text}: "
        "run 'alembic -c <the .ini file> upgrade head' from the repository root"
    )


def _is_known_revision(script: ScriptDirectory, revision: str) -> bool:
    try:
        return script.get_revision(revision) is not None
    except CommandError:
        return False


def schema_differences(connection: sa.Connection, metadata: sa.MetaData | None = None) -> list:
    """Return Alembic's list of differences between the database on ``connection`` and the models.

    ``metadata`` defaults to the tables of every model. An empty list means that the
    database has exactly the tables, columns, types, server defaults,
    constraints and indexes of the metadata.
    """
    metadata = fkod.models.metadata if metadata is None else metadata
    context = MigrationContext.configure(
        connection, opts={"target_metadata": metadata, **COMPARE_OPTIONS}
    )
    return compare_metadata(context, metadata)
