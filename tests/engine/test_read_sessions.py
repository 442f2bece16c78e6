"""Read sessions (db.engine.read_session_factory), used by the API's read routes.

On PostgreSQL they run without a transaction (autocommit: no BEGIN and no ROLLBACK round trip
per checkout) on a pool of their own: a writer must never get a connection in autocommit, or its
multi-statement writes would stop being atomic. Their connections are pinged only after a
second of idleness, and a read whose connection died anyway is retried once. On SQLite they are
the plain sessions.
"""
from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import select, text

from evoforge.api.app import create_app
from evoforge.db.engine import read_session_factory, session_factory, upgrade
from evoforge.db.models import Campaign
from tests.integration.services import pg_url, postgres_server  # noqa: F401

IDLE, INTRANS = psycopg.pq.TransactionStatus.IDLE, psycopg.pq.TransactionStatus.INTRANS


def _driver(s):
    return s.connection().connection.driver_connection


@pytest.mark.integration
def test_reads_run_without_a_transaction_and_writers_never_do(pg_url):
    upgrade(pg_url)
    with read_session_factory(pg_url)() as s:
        s.execute(select(Campaign.id)).all()
        dc = _driver(s)
        assert dc.autocommit and dc.info.transaction_status == IDLE
    with session_factory(pg_url)() as s:
        s.execute(select(Campaign.id)).all()
        w = _driver(s)
        assert w.autocommit is False and w.info.transaction_status == INTRANS
        assert w is not dc   # two pools
    # a writer that fails halfway leaves nothing, on whichever pooled connection it got
    sessions, reads = session_factory(pg_url), read_session_factory(pg_url)
    for _ in range(3):
        with reads() as s:
            s.execute(select(Campaign.id)).all()
    with pytest.raises(Exception):
        with sessions.begin() as s:
            s.execute(text("CREATE TEMP TABLE IF NOT EXISTS t_probe (x int)"))
            s.execute(text("INSERT INTO t_probe VALUES (1)"))
            s.execute(text("SELECT 1/0"))
    with sessions() as s:
        # the temporary table went with the rolled-back transaction: nothing autocommitted
        assert s.execute(text("SELECT to_regclass('pg_temp.t_probe')")).scalar() is None


@pytest.mark.integration
def test_the_api_reads_through_them(pg_url):
    app = create_app(pg_url, execute=False)
    state = app.state.evo
    assert state.reads is not state.sessions
    with state.reads() as s:
        s.execute(select(Campaign.id)).all()
        assert _driver(s).autocommit


def test_sqlite_reads_are_the_plain_sessions(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    upgrade(url)
    with read_session_factory(url)() as s:
        s.execute(select(Campaign.id)).all()
        assert s.in_transaction()   # one snapshot for a read's statements (WAL)
    app = create_app(url, execute=False)
    assert app.state.evo.reads.kw["bind"] is session_factory(url).kw["bind"]


def _kill(pg_url, engine) -> int:
    """Terminate every backend the engine's pool holds (as a server restart would); how many."""
    pids = [c.dbapi_connection.info.backend_pid for c in list(engine.pool._pool.queue)]
    with psycopg.connect(pg_url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as a:
        for pid in pids:
            a.execute("SELECT pg_terminate_backend(%s)", (pid,))
    return len(pids)


def _read(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(select(Campaign.id)).all()


@pytest.mark.integration
def test_a_dropped_read_connection_is_replaced(pg_url, monkeypatch):
    """A hot connection (used within the ping's idle time) that died fails its statement, and
    the read is retried on a new connection: the caller sees its answer, not the error. An idle
    one is pinged on checkout and replaced before the read runs."""
    from sqlalchemy.exc import DBAPIError

    from evoforge.db import engine as E

    upgrade(pg_url)
    engine = E.read_engine(pg_url)
    assert engine is not E.get_engine(pg_url)
    _read(engine)
    assert _kill(pg_url, engine) >= 1
    with pytest.raises(DBAPIError) as err:       # hot: no ping, so the statement finds it dead
        _read(engine)
    assert err.value.connection_invalidated
    _read(engine)
    assert _kill(pg_url, engine) >= 1
    assert E.retry_dropped(_read, engine) == _read(engine)   # the retry answers
    # idle past the ping's threshold: the checkout pings, finds it dead, takes a new one
    monkeypatch.setattr(E, "READ_PING_IDLE_S", 0.0)
    E.read_engine.cache_clear()
    try:
        idle = E.read_engine(pg_url)
        _read(idle)
        assert _kill(pg_url, idle) >= 1
        _read(idle)                               # no error, no retry
        idle.dispose()
    finally:
        E.read_engine.cache_clear()


@pytest.mark.integration
def test_the_api_read_path_survives_dropped_connections(pg_url):
    """Through the routes' own `run_read`: every read connection killed between two reads."""
    import asyncio

    from evoforge.api.read_threads import run_read
    from evoforge.db.engine import read_engine

    upgrade(pg_url)
    engine = read_engine(pg_url)

    async def twice():
        first = await run_read(_read, engine)
        assert _kill(pg_url, engine) >= 1
        return first, await run_read(_read, engine)
    first, second = asyncio.run(twice())
    assert first == second
