"""Tests that the Alembic history builds the models' exact schema on SQLite and can be undone.

DRIFT_CASES and drifted_metadata are shared with the PostgreSQL tests in
tests/integration/test_migrations.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

import fkod.models
from fkod.core import migrations
from fkod.core.settings import ConfigurationError

REPO_ROOT = migrations.ALEMBIC_DIR.parent


def add_column(metadata: sa.MetaData) -> None:
    metadata.tables["users"].append_column(sa.Column("nickname", sa.String(40)))


def add_index(metadata: sa.MetaData) -> None:
    sa.Index("ix_users_name", metadata.tables["users"].c.name)


def widen_string(metadata: sa.MetaData) -> None:
    metadata.tables["users"].c.email.type = sa.String(300)


def change_server_default(metadata: sa.MetaData) -> None:
    metadata.tables["users"].c.status.server_default = sa.DefaultClause("blocked")


def change_boolean_default(metadata: sa.MetaData) -> None:
    metadata.tables["users"].c.livemode.server_default = sa.DefaultClause(sa.false())


def make_not_null(metadata: sa.MetaData) -> None:
    metadata.tables["users"].c.name.nullable = False


def drop_cycle_foreign_key(metadata: sa.MetaData) -> None:
    users = metadata.tables["users"]
    foreign_key = users.c.created_by_partner_id.foreign_keys.pop()
    users.constraints.discard(foreign_key.constraint)


def change_json_to_text(metadata: sa.MetaData) -> None:
    metadata.tables["partners"].c.address.type = sa.Text()


# Model changes made without a migration, and the kind of difference that
# schema_differences must then report.
DRIFT_CASES = [
    pytest.param(add_column, "add_column", id="new-column"),
    pytest.param(add_index, "add_index", id="new-index"),
    pytest.param(widen_string, "modify_type", id="string-length"),
    pytest.param(change_server_default, "modify_default", id="server-default"),
    pytest.param(change_boolean_default, "modify_default", id="boolean-default"),
    pytest.param(make_not_null, "modify_nullable", id="not-null"),
    pytest.param(drop_cycle_foreign_key, "remove_fk", id="cycle-foreign-key"),
    pytest.param(change_json_to_text, "modify_type", id="json-to-text"),
]


def drifted_metadata(change) -> sa.MetaData:
    """Return a copy of the models' metadata with ``change`` applied to the copy."""
    metadata = sa.MetaData(naming_convention=fkod.models.metadata.naming_convention)
    for table in fkod.models.metadata.tables.values():
        table.to_metadata(metadata)
    change(metadata)
    return metadata


def difference_kinds(differences: list) -> list[str]:
    """Return the kind of each Alembic difference. Alembic wraps modify_* items in a list."""
    return [item[0][0] if isinstance(item, list) else item[0] for item in differences]


def table_names(engine: sa.Engine) -> set[str]:
    """Return the tables of the models; the SQLite search index's FTS5 tables are not models."""
    return {name for name in sa.inspect(engine).get_table_names()
            if not name.startswith(migrations.SEARCH_INDEX_TABLE_PREFIXES)}


def autogenerate_initial_migration(directory: Path, empty_db_url: str) -> Config:
    """Autogenerate a migration from an empty database into a copy of the alembic folder.

    Returns the Config of that copy. The generated file is Alembic's raw output
    shaped only by the hooks in env.py, with none of the hand edits of the
    repository's initial migration.
    """
    script_dir = directory / "alembic"
    (script_dir / "versions").mkdir(parents=True)
    for name in ("env.py", "script.py.mako"):
        shutil.copy(migrations.ALEMBIC_DIR / name, script_dir / name)
    config = Config()
    config.set_main_option("script_location", str(script_dir))
    config.attributes["db_url"] = empty_db_url
    command.revision(config, message="initial schema", autogenerate=True, rev_id="generated")
    return config


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'fkod.sqlite'}"


@pytest.fixture
def engine(sqlite_url) -> sa.Engine:
    engine = sa.create_engine(sqlite_url, poolclass=sa.pool.NullPool)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def migrated_engine(tmp_path_factory) -> sa.Engine:
    path = tmp_path_factory.mktemp("migrated") / "fkod.sqlite"
    migrations.upgrade_to_head(f"sqlite:///{path}")
    engine = sa.create_engine(f"sqlite:///{path}", poolclass=sa.pool.NullPool)
    yield engine
    engine.dispose()


def test_upgrade_head_matches_models(migrated_engine):
    with migrated_engine.connect() as connection:
        differences = migrations.schema_differences(connection)

    assert differences == []
    assert table_names(migrated_engine) == set(fkod.models.metadata.tables) | {"alembic_version"}


def test_migrated_schema_is_current(migrated_engine):
    assert migrations.check_schema_current(migrated_engine) is None


@pytest.mark.parametrize(("change", "expected_kind"), DRIFT_CASES)
def test_model_drift_reported(migrated_engine, change, expected_kind):
    with migrated_engine.connect() as connection:
        baseline = migrations.schema_differences(connection)
        differences = migrations.schema_differences(connection, drifted_metadata(change))

    # Relative to the baseline, so that a real drift fails only the
    # test_upgrade_head_matches_models test.
    expected = sorted([*difference_kinds(baseline), expected_kind])
    assert sorted(difference_kinds(differences)) == expected


def test_cycle_foreign_key_enforced(migrated_engine):
    # Batch mode adds the users -> partners key by copying the table on SQLite,
    # and the copy must keep the constraint.
    with migrated_engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA foreign_keys=ON")
        with pytest.raises(sa.exc.IntegrityError):
            connection.execute(
                sa.text(
                    "INSERT INTO users (email, email_namespace, created_by_partner_id)"
                    " VALUES ('a@example.com', 'platform', 12345)"
                )
            )
        connection.rollback()


def test_downgrade_base_then_upgrade(sqlite_url, engine):
    config = migrations.alembic_config(db_url=sqlite_url)
    command.upgrade(config, "head")

    command.downgrade(config, "base")
    assert table_names(engine) == {"alembic_version"}

    command.upgrade(config, "head")
    with engine.connect() as connection:
        assert migrations.schema_differences(connection) == []


def test_check_schema_current_on_empty_database(engine):
    message = migrations.check_schema_current(engine)

    assert message is not None
    assert "revision none" in message
    assert "upgrade head" in message


def test_check_schema_current_on_unknown_revision(sqlite_url, engine):
    migrations.upgrade_to_head(sqlite_url)
    with engine.begin() as connection:
        connection.execute(sa.text("UPDATE alembic_version SET version_num = 'ffffffffffff'"))

    message = migrations.check_schema_current(engine)

    assert message is not None
    assert "ffffffffffff" in message
    assert "newer version of the code" in message


def test_failed_upgrade_rolls_back(sqlite_url, engine):
    # The last table of the initial migration already exists, so its CREATE
    # TABLE fails after every other table has been created.
    with engine.begin() as connection:
        connection.execute(sa.text("CREATE TABLE webhook_attempts (id INTEGER PRIMARY KEY)"))

    with pytest.raises(sa.exc.OperationalError, match="already exists"):
        migrations.upgrade_to_head(sqlite_url)

    assert table_names(engine) == {"webhook_attempts"}


def test_upgrade_on_caller_connection(engine):
    with engine.connect() as connection:
        command.upgrade(migrations.alembic_config(connection=connection), "head")
        differences = migrations.schema_differences(connection)

    assert differences == []
    assert migrations.check_schema_current(engine) is None


def test_autogenerated_migration_runs(tmp_path, sqlite_url, engine):
    config = autogenerate_initial_migration(tmp_path, f"sqlite:///{tmp_path / 'empty.sqlite'}")
    config.attributes["db_url"] = sqlite_url

    command.upgrade(config, "head")
    with engine.connect() as connection:
        assert migrations.schema_differences(connection) == []

    command.downgrade(config, "base")
    assert table_names(engine) == {"alembic_version"}


def test_resolve_db_url_prefers_environment(tmp_path):
    ini = tmp_path / "app.ini"
    ini.write_text("[app:main]\nfkod.db.url = sqlite:///%(here)s/from-ini.sqlite\n")

    from_ini = migrations.resolve_db_url(str(ini), environ={})
    from_environment = migrations.resolve_db_url(
        str(ini), environ={"FKOD_DB_URL": "sqlite:///override.sqlite"}
    )

    assert from_ini == f"sqlite:///{tmp_path}/from-ini.sqlite"
    assert from_environment == "sqlite:///override.sqlite"


def test_resolve_db_url_reads_env_reference(tmp_path):
    ini = tmp_path / "app.ini"
    ini.write_text("[app:main]\nfkod.db.url = env:FKOD_TEST_DATABASE\n")

    url = migrations.resolve_db_url(str(ini), environ={"FKOD_TEST_DATABASE": "sqlite:///x.sqlite"})

    assert url == "sqlite:///x.sqlite"
    with pytest.raises(ConfigurationError, match="FKOD_TEST_DATABASE"):
        migrations.resolve_db_url(str(ini), environ={})


def test_resolve_db_url_missing_setting(tmp_path):
    ini = tmp_path / "app.ini"
    ini.write_text("[app:main]\nfkod.environment = test\n")

    with pytest.raises(ConfigurationError, match=r"missing setting fkod\.db\.url"):
        migrations.resolve_db_url(str(ini), environ={})
    with pytest.raises(ConfigurationError, match="FKOD_DB_URL"):
        migrations.resolve_db_url(None, environ={})


def write_ini(directory: Path, db_url: str) -> Path:
    ini = directory / "migrate.ini"
    ini.write_text(
        "[app:main]\n"
        f"fkod.db.url = {db_url}\n"
        "\n"
        "[alembic]\n"
        f"script_location = {migrations.ALEMBIC_DIR}\n"
    )
    return ini


def run_alembic(*args: str, environ: dict[str, str]) -> subprocess.CompletedProcess:
    """Run the alembic command of this interpreter's environment from the repository root."""
    executable = Path(sys.executable).parent / "alembic"
    return subprocess.run(
        [str(executable), *args],
        cwd=REPO_ROOT,
        env=environ,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        # A run takes about a second; the margin is for a CI machine whose
        # cores are busy with the other test processes.
        timeout=600,
    )


def test_cli_upgrade_head_from_ini(tmp_path):
    ini = write_ini(tmp_path, "sqlite:///%(here)s/fkod.sqlite")
    environ = {name: value for name, value in os.environ.items() if name != "FKOD_DB_URL"}

    result = run_alembic("-c", str(ini), "upgrade", "head", environ=environ)

    assert result.returncode == 0, result.stderr
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'fkod.sqlite'}", poolclass=sa.pool.NullPool)
    try:
        assert migrations.check_schema_current(engine) is None
        with engine.connect() as connection:
            assert migrations.schema_differences(connection) == []
    finally:
        engine.dispose()


def test_cli_db_url_environment_override(tmp_path):
    ini = write_ini(tmp_path, "sqlite:///%(here)s/from-ini.sqlite")
    environ = dict(os.environ, FKOD_DB_URL=f"sqlite:///{tmp_path / 'override.sqlite'}")

    result = run_alembic("-c", str(ini), "upgrade", "head", environ=environ)

    assert result.returncode == 0, result.stderr
    assert (tmp_path / "override.sqlite").exists()
    assert not (tmp_path / "from-ini.sqlite").exists()


def test_cli_missing_env_reference_fails(tmp_path):
    ini = write_ini(tmp_path, "env:FKOD_TEST_UNSET_DATABASE")
    environ = {
        name: value
        for name, value in os.environ.items()
        if name not in {"FKOD_DB_URL", "FKOD_TEST_UNSET_DATABASE"}
    }

    result = run_alembic("-c", str(ini), "upgrade", "head", environ=environ)

    assert result.returncode != 0
    assert "FKOD_TEST_UNSET_DATABASE" in result.stderr
