"""PostgreSQL: the campaign version read on the event loop, over one psycopg AsyncConnection.

Every GET of /elites and /programs reads its campaign's version from the database
(`api.routers.campaigns.read_version`, docs/service.md). On the thread pool that read cost a
hop to a worker thread and back plus SQLAlchemy's connection checkout, about a tenth of an
uncached listing's CPU under 50 clients, for a one-row primary-key read. Here it is one prepared
statement on an autocommit connection owned by the event loop: no thread, no pool, no
transaction. One connection serves the process: reads queue on it one at a time, and
`ApiCaches.fresh` already shares one read among the requests that arrive while it runs.

The statement is the one `read_version` runs on the pool, compiled by SQLAlchemy for this
database, so both paths return equal tuples (the cache keys). Any failure (the server restarted,
a network blip) closes the connection and raises; the caller falls back to the thread pool for
that read, and the next read opens a new connection.
"""
from __future__ import annotations

import asyncio

from evoforge.api.auth import Principal

APPLICATION_NAME = "evoforge-version-reader"   # its connection in pg_stat_activity


class AsyncVersionReader:
    def __init__(self, engine, statement):
        """`statement`: the version read as a `project_campaigns.Scoped` select with the bind
        parameter `cid` (api/services/programs.py `VERSION`)."""
        self.conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.statement = statement
        self.sql = {id(q): str(q.compile(dialect=engine.dialect))
                    for q in (statement.open, statement.project)}
        self._conn = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None

    async def read(self, campaign_id: int, project_id: int | None) -> tuple | None:
        import psycopg

        loop = asyncio.get_running_loop()
        if self._loop is not loop:      # a connection belongs to the loop that opened it
            self._loop, self._conn, self._lock = loop, None, asyncio.Lock()
        stmt, params = self.statement(Principal(project_id), cid=campaign_id)
        async with self._lock:
            if self._conn is None or self._conn.closed:
                self._conn = await psycopg.AsyncConnection.connect(
                    self.conninfo, autocommit=True, application_name=APPLICATION_NAME)
            try:
                cur = await self._conn.execute(self.sql[id(stmt)], params, prepare=True)
                row = await cur.fetchone()
            except BaseException:
                conn, self._conn = self._conn, None
                await conn.close()
                raise
        return None if row is None else tuple(row)

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
