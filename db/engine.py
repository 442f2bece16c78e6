"""Engines and sessions for SQLite (the laptop default) and PostgreSQL (psycopg 3)."""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

ENV_URL = "EVOFORGE_DATABASE_URL"


def data_dir() -> Path:
    """Where the embedded default keeps its SQLite file. Private (0700): sandboxed candidates
    run under another uid and cannot read it."""
    root = os.environ.get("EVOFORGE_HOME") or os.path.join(
        os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share"), "evoforge")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def default_url() -> str:
    return os.environ.get(ENV_URL) or f"sqlite:///{data_dir() / 'evoforge.db'}"


def normalize_url(url: str) -> str:
    """Accept the common spellings: postgres://, postgresql:// -> psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    _wal(cur)
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _wal(cur, wait_s: float = 30.0) -> None:
    """PRAGMA journal_mode=WAL, retried while the database is locked. On a new, empty file the
    switch writes the database header in a write transaction (the first connection's), and a
    second connection switching while that one, or any other, holds the write lock of the still
    empty file gets SQLITE_BUSY at once: SQLite does not call the busy handler there (it holds a
    read lock and asks for the write lock). Several processes opening one new file at once hit it."""
    import sqlite3
    import time

    deadline = time.monotonic() + wait_s
    delay = 0.001
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(2 * delay, 0.05)


@lru_cache(maxsize=16)
def get_engine(url: str | None = None) -> Engine:
    url = normalize_url(url or default_url())
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not Path(path).exists():  # create it private before SQLite does
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                               pool_size=20, max_overflow=20)
        event.listen(engine, "connect", _sqlite_pragmas)
        # Let SQLAlchemy, not pysqlite, decide when transactions begin (the documented recipe).
        # Write transactions start with a write, so they queue on busy_timeout instead of failing.
        @event.listens_for(engine, "begin")
        def _begin(conn):
            # Migrations read then write: take the write lock up front so two processes
            # upgrading one file queue on busy_timeout instead of failing "database is locked".
            immediate = conn.get_execution_options().get("sqlite_begin_immediate")
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        @event.listens_for(engine, "connect")
        def _no_pysqlite_begin(dbapi_conn, _record):
            dbapi_conn.isolation_level = None
        return engine
    return create_engine(url, pool_size=20, max_overflow=20, pool_pre_ping=True)


@lru_cache(maxsize=16)
def session_factory(url: str | None = None) -> sessionmaker[Session]:
    return sessionmaker(get_engine(url), expire_on_commit=False)


# The read pool's connections: reads run on a few threads at a time (api/read_threads.py), so
# a few connections serve them; more are opened only while more reads overlap.
READ_POOL, READ_OVERFLOW = 8, 12
# A read connection is pinged on checkout only after this long unused (`_ping_when_idle`).
READ_PING_IDLE_S = 1.0


@lru_cache(maxsize=16)
def read_engine(url: str | None = None) -> Engine:
    """The engine of the API's reads (program, lineage, listing and elites reads: they write
    nothing). On SQLite, the plain engine: a transaction gives a read's statements one snapshot
    (WAL) and costs no round trip.

    On PostgreSQL, a pool of its own whose connections run in autocommit: no BEGIN before the
    first statement and no ROLLBACK when the connection goes back to the pool, two round trips
    of three for a one-query read. Nothing else changes: at READ COMMITTED, PostgreSQL's default
    and the only level EvoForge uses, each statement takes its own snapshot inside a transaction
    too. Its own pool, so no writer can ever get a connection a read left in autocommit, and no
    connection changes modes on every checkout. Its connections are pinged only when they come
    back from a second or more of idleness (`_ping_when_idle`), not on every checkout as the
    writers' are (pool_pre_ping): that round trip was a tenth of a hot read's CPU under load.
    A read whose connection died anyway (the server restarted within that second) is retried
    once on a new one (`retry_dropped`)."""
    engine = get_engine(url)
    if engine.dialect.name != "postgresql":
        return engine
    engine = create_engine(normalize_url(url or default_url()), isolation_level="AUTOCOMMIT",
                           pool_size=READ_POOL, max_overflow=READ_OVERFLOW)
    _ping_when_idle(engine, READ_PING_IDLE_S)
    return engine


def _ping_when_idle(engine: Engine, idle_s: float) -> None:
    """Ping a pooled connection on checkout only if it sat unused for `idle_s` or more; one that
    fails is discarded and the pool hands out another (SQLAlchemy's DisconnectionError
    protocol). A connection in steady use answered a moment ago."""
    import time

    from sqlalchemy import exc

    @event.listens_for(engine, "connect")
    @event.listens_for(engine, "checkin")
    def _stamp(_dbapi_conn, record) -> None:
        record.info["used_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _check(dbapi_conn, record, _proxy) -> None:
        if time.monotonic() - record.info.get("used_at", 0.0) < idle_s:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except engine.dialect.loaded_dbapi.Error as error:
            raise exc.DisconnectionError(f"stale pooled connection: {error}") from error


def retry_dropped(fn, *args):
    """`fn(*args)`, once more if its connection turned out to be dead (SQLAlchemy invalidated
    it, and the pool with it): for reads, which are safe to repeat."""
    from sqlalchemy.exc import DBAPIError

    try:
        return fn(*args)
    except DBAPIError as error:
        if not error.connection_invalidated:
            raise
    return fn(*args)


@lru_cache(maxsize=16)
def read_session_factory(url: str | None = None) -> sessionmaker[Session]:
    """Sessions on `read_engine`: the plain sessions on SQLite."""
    return sessionmaker(read_engine(url), expire_on_commit=False)


MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
# The migrations that `_sqlite_at_head` is proven to be equal to (the models' schema plus
# this head stamped), by tests/engine/test_schema_fastpath.py. Any other set of files in
# migrations/versions (a new migration) turns the fast path off, so Alembic runs, until these two
# are updated and that test passes again.
SCHEMA_HEAD = "0009"
SCHEMA_MIGRATIONS = frozenset({"0001_initial_schema.py", "0002_worker_leases.py",
                               "0003_model_stats.py", "0004_campaign_config.py",
                               "0005_problems.py", "0006_compact_storage.py",
                               "0007_listing_indexes.py", "0008_campaign_revision.py",
                               "0009_filtered_listing_indexes.py"})


def _migration_files() -> frozenset[str]:
    try:
        names = os.listdir(MIGRATIONS_DIR / "versions")
    except OSError:
        return frozenset()
    return frozenset(n for n in names if n.endswith(".py") and n != "__init__.py")


def _at_head(conn) -> bool:
    if conn.dialect.name == "sqlite":
        tables = conn.exec_driver_sql("SELECT count(*) FROM sqlite_master WHERE type = 'table' "
                                      "AND name = 'alembic_version'").scalar()
    else:
        from sqlalchemy import inspect

        tables = inspect(conn).has_table("alembic_version")
    return bool(tables) and [tuple(r) for r in conn.exec_driver_sql(
        "SELECT version_num FROM alembic_version")] == [(SCHEMA_HEAD,)]


def _already_at_head(engine: Engine) -> bool:
    """Any database whose Alembic version is the head this code ships (and the migration files
    are the ones SCHEMA_MIGRATIONS names): Alembic would do nothing, so it is not imported
    (0.3-0.4 s of a short command such as `evoforge campaigns` on PostgreSQL)."""
    if _migration_files() != SCHEMA_MIGRATIONS:
        return False
    with engine.connect() as conn:
        return _at_head(conn)


def _sqlite_at_head(engine: Engine) -> bool:
    """SQLite without Alembic when there is nothing to replay: True when the database is at the
    head revision already (Alembic would do nothing), or is brand new (no schema object at all)
    and has just been given the models' tables with Alembic's head stamped, in one transaction:
    the schema the migrations produce (proven by tests/engine/test_schema_fastpath.py), without
    importing Alembic and replaying every revision, which is most of a fresh `evoforge run`'s
    database set-up. False, with nothing done, for any other database (Alembic handles it)."""
    if engine.dialect.name != "sqlite" or _migration_files() != SCHEMA_MIGRATIONS:
        return False
    with engine.connect() as conn:
        if _at_head(conn):
            return True
    from sqlalchemy import Column, MetaData, PrimaryKeyConstraint, String, Table

    from evoforge.db.models import Base

    # Alembic's own version table (alembic.ddl.impl.DefaultImpl.version_table_impl).
    version = Table("alembic_version", MetaData(), Column("version_num", String(32), nullable=False),
                    PrimaryKeyConstraint("version_num", name="alembic_version_pkc"))
    # BEGIN IMMEDIATE, as the migrations: two processes creating one file queue on busy_timeout,
    # and the second finds the first one's schema.
    with engine.connect().execution_options(sqlite_begin_immediate=True) as conn, conn.begin():
        if conn.exec_driver_sql("SELECT count(*) FROM sqlite_master").scalar():
            return _at_head(conn)
        Base.metadata.create_all(conn, checkfirst=False)
        version.create(conn)
        conn.execute(version.insert().values(version_num=SCHEMA_HEAD))
    return True


def alembic_upgrade(url: str | None = None) -> None:
    """Run the Alembic migrations up to head (what `upgrade` does for PostgreSQL and for a SQLite
    database that is neither brand new nor at head)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = get_engine(url)
    command.upgrade(cfg, "head")


def upgrade(url: str | None = None) -> None:
    """Bring the schema to the newest Alembic revision."""
    engine = get_engine(url)
    if _sqlite_at_head(engine) or (engine.dialect.name != "sqlite" and _already_at_head(engine)):
        return
    alembic_upgrade(url)
