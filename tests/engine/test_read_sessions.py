"""Read sessions (db.engine.read_session_factory), used by the API's read routes.

On PostgreSQL they run without a transaction (autocommit: no BEGIN and no ROLLBACK round trip
per checkout) on the shared pool, and a connection they used must go back to the pool as it was:
a writer that gets it next must be inside a transaction again, or its multi-statement writes
would stop being atomic. On SQLite they are the plain sessions.
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
def test_reads_run_without_a_transaction_and_writers_get_theirs_back(pg_url):
    upgrade(pg_url)
    with read_session_factory(pg_url)() as s:
        s.execute(select(Campaign.id)).all()
        dc = _driver(s)
        assert dc.autocommit and dc.info.transaction_status == IDLE
    # back in the pool: reset to the engine's default
    assert dc.autocommit is False and dc.info.transaction_status == IDLE
    with session_factory(pg_url)() as s:
        s.execute(select(Campaign.id)).all()
        w = _driver(s)
        assert w.autocommit is False and w.info.transaction_status == INTRANS
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
