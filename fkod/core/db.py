"""Database engine, declarative base and the per-request session.

Every request runs in one ``pyramid_tm`` transaction: ``request.dbsession`` is
joined to it through zope.sqlalchemy, so a view never commits by itself and an
exception rolls everything back.
"""

from __future__ import annotations

import datetime as dt
import logging

import sqlalchemy as sa
import transaction
import zope.sqlalchemy
from sqlalchemy import event, orm

log = logging.getLogger(__name__)

# Stable constraint names, so Alembic can alter them on PostgreSQL and in
# SQLite's batch mode alike.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(orm.DeclarativeBase):
    """Base class of every model, core and plugins alike."""

    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


def utcnow() -> dt.datetime:
    """Return the current time in UTC without tzinfo, as the TIMESTAMP columns store it."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def is_sqlite(engine_or_session) -> bool:
    bind = getattr(engine_or_session, "bind", engine_or_session)
    return bind.dialect.name == "sqlite"


def make_engine(settings: dict) -> sa.Engine:
    """Create the engine for ``fkod.db.url``; SQLite gets WAL mode and a busy timeout."""
    url = sa.engine.make_url(settings["fkod.db.url"])
    if url.get_backend_name() == "sqlite":
        engine = sa.create_engine(url, connect_args={"check_same_thread": False})
        busy_timeout_ms = settings["fkod.db.sqlite_busy_timeout_ms"]

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):
            # pysqlite's own transaction handling would delay BEGIN; let
            # SQLAlchemy emit it so that SELECT ... and writes share one transaction.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(connection):
            # BEGIN IMMEDIATE takes the write lock at the start, so two writers
            # wait for each other (busy_timeout) instead of failing mid-transaction.
            # Read-only work takes no lock: in WAL mode it never waits for a writer.
            if connection.get_execution_options().get("fkod_read_only"):
                connection.exec_driver_sql("BEGIN")
            else:
                connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine

    return sa.create_engine(
        url,
        pool_size=settings["fkod.db.pool_size"],
        pool_pre_ping=True,
    )


def make_session_factory(engine: sa.Engine) -> orm.sessionmaker:
    return orm.sessionmaker(bind=engine, expire_on_commit=False)


def get_tm_session(session_factory, transaction_manager) -> orm.Session:
    """Return a session joined to ``transaction_manager``."""
    session = session_factory()
    zope.sqlalchemy.register(session, transaction_manager=transaction_manager)
    return session


def includeme(config):
    """Set up the engine, pyramid_tm and ``request.dbsession``."""
    settings = config.get_settings()
    settings["tm.manager_hook"] = "pyramid_tm.explicit_manager"
    config.include("pyramid_tm")

    engine = make_engine(settings)
    session_factory = make_session_factory(engine)
    config.registry["db.engine"] = engine
    config.registry["db.session_factory"] = session_factory

    def dbsession(request):
        session = request.environ.get("app.dbsession")
        if session is None:
            session = get_tm_session(session_factory, request.tm)
            request.environ["app.dbsession"] = session
        return session

    config.add_request_method(dbsession, reify=True)


def run_in_transaction(session_factory, work):
    """Run ``work(session)`` in its own transaction; commit on success, roll back on error.

    Workers and scripts use this instead of pyramid_tm.
    """
    manager = transaction.TransactionManager(explicit=True)
    session = get_tm_session(session_factory, manager)
    try:
        with manager:
            return work(session)
    finally:
        session.close()


def read_only(engine: sa.Engine, work):
    """Run ``work(connection)`` in a transaction that only reads (no SQLite write lock)."""
    with engine.connect() as connection:
        connection = connection.execution_options(fkod_read_only=True)
        with connection.begin():
            return work(connection)
