"""Worker leases: which iterations a worker process runs now, and how recently it said so.

A Celery task holds a `WorkerLease` row for its (campaign, iteration) while it runs; the worker
process' `Heartbeat` thread refreshes all of its rows every `heartbeat_s` (default 5 s). A
SIGKILLed worker stops heartbeating, so the sweeper (worker/dispatch.py) finds its leases stale
`lease_stale_s` (default 30 s) after its death and re-sends those iterations.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Iterator

from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from evoforge.db.campaign_rows import utc
from evoforge.db.models import WorkerLease

log = logging.getLogger(__name__)

HEARTBEAT_ENV = "EVOFORGE_HEARTBEAT_S"          # worker: seconds between heartbeats (5)
LEASE_STALE_ENV = "EVOFORGE_LEASE_STALE_S"      # sweeper: a lease this old is dead (30)


def env_positive(name: str, default: float) -> float:
    """A positive number (seconds, a count) from the environment, else `default`."""
    try:
        value = float(os.environ.get(name) or default)
    except ValueError:
        log.warning("%s=%r is not a number; using %s", name, os.environ.get(name), default)
        return default
    return value if value > 0 else default


def default_heartbeat_s() -> float:
    return env_positive(HEARTBEAT_ENV, 5.0)


def default_lease_stale_s() -> float:
    """Must be several heartbeats: a live worker whose heartbeat is late is re-sent (wasted
    work, never a wrong count)."""
    return env_positive(LEASE_STALE_ENV, 30.0)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class Heartbeat:
    """The leases of one worker process: which iterations it runs, refreshed every `interval_s`
    by a daemon thread. Lease writes are best-effort: a database hiccup never fails a task (the
    worst case is a needless re-send, which the unique (campaign, iteration) key absorbs)."""

    def __init__(self, interval_s: float | None = None):
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._held: dict[int, tuple[int, int]] = {}   # local token -> (campaign, iteration)
        self._row: dict[int, int | None] = {}          # local token -> WorkerLease.id
        self._next = 0
        self._sessions: sessionmaker[Session] | None = None
        self._thread: threading.Thread | None = None
        self.worker_id = ""

    def _ensure(self, sessions: sessionmaker[Session]) -> None:
        with self._lock:
            if self._pid != os.getpid():   # first use, or a forked child: its own id and thread
                self._pid = os.getpid()
                self.worker_id = f"{socket.gethostname()[:120]}:{self._pid}:{uuid.uuid4().hex[:8]}"
                self._held.clear()
                self._row.clear()
                self._thread = None
            self._sessions = sessions
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="evoforge-heartbeat",
                                                daemon=True)
                self._thread.start()

    @contextmanager
    def holding(self, sessions: sessionmaker[Session], campaign_id: int, iteration: int) -> Iterator[None]:
        self._ensure(sessions)
        with self._lock:
            token = self._next
            self._next += 1
            self._held[token] = (campaign_id, iteration)
            self._row[token] = None
        row_id = self._insert(sessions, campaign_id, iteration)
        with self._lock:
            if token in self._row:
                self._row[token] = row_id
        try:
            yield
        finally:
            with self._lock:
                self._held.pop(token, None)
                row_id = self._row.pop(token, None)
            if row_id is not None:
                try:
                    with sessions.begin() as s:
                        s.execute(delete(WorkerLease).where(WorkerLease.id == row_id))
                except Exception:
                    log.warning("lease: could not delete lease %s", row_id, exc_info=True)

    def _insert(self, sessions: sessionmaker[Session], campaign_id: int, iteration: int) -> int | None:
        now = utc_now()
        try:
            with sessions.begin() as s:
                return s.execute(insert(WorkerLease).values(
                    worker_id=self.worker_id, campaign_id=campaign_id, iteration=iteration,
                    started_at=now, heartbeat_at=now).returning(WorkerLease.id)).scalar_one()
        except Exception:
            log.warning("lease: could not record campaign %s iteration %s", campaign_id, iteration,
                        exc_info=True)
            return None

    def beat(self) -> None:
        """Refresh this process' leases; re-create any that are missing (a sweeper took this
        worker for dead while the database was unreachable, or an insert failed)."""
        with self._lock:
            sessions, held = self._sessions, dict(self._held)
            rows = {t: r for t, r in self._row.items() if t in held}
        if sessions is None or not held:
            return
        with sessions.begin() as s:
            ids = [r for r in rows.values() if r is not None]
            alive = set(s.scalars(update(WorkerLease).where(WorkerLease.id.in_(ids))
                                  .values(heartbeat_at=utc_now()).returning(WorkerLease.id))) if ids else set()
        for token, (cid, it) in held.items():
            if rows.get(token) in alive:
                continue
            row_id = self._insert(sessions, cid, it)
            with self._lock:
                if token in self._row:
                    self._row[token] = row_id
                    continue
            if row_id is not None:  # the task ended meanwhile: drop the row just made
                with sessions.begin() as s:
                    s.execute(delete(WorkerLease).where(WorkerLease.id == row_id))

    def _loop(self) -> None:
        me = threading.current_thread()
        while self._thread is me and self._pid == os.getpid():
            time.sleep(self.interval_s or default_heartbeat_s())
            try:
                self.beat()
            except Exception:
                log.warning("heartbeat failed (database down?); retrying", exc_info=True)


HEARTBEAT = Heartbeat()


def leases_of(sessions: sessionmaker[Session], campaign_id: int) -> dict[int, datetime]:
    """iteration -> the newest heartbeat of any lease on it."""
    out: dict[int, datetime] = {}
    with sessions() as s:
        for it, hb in s.execute(select(WorkerLease.iteration, WorkerLease.heartbeat_at)
                                .where(WorkerLease.campaign_id == campaign_id)):
            hb = utc(hb)
            if it not in out or hb > out[it]:
                out[it] = hb
    return out
