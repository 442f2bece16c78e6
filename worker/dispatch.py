"""The campaign dispatcher: keep each running campaign's `parallel` iterations in flight.

    enqueue_campaign(id)   queued/paused -> running; re-send reserved-but-uncommitted iterations;
                           fill the campaign's parallelism.
    refill(id)             after every iteration: reserve iteration numbers in the database (at
                           most `parallel` in flight, never past the budget) and send one message
                           per number; mark the campaign completed when its budget is spent and
                           nothing is missing.
    Sweeper.sweep()        run by `evoforge beat` and by `evoforge serve` (a background thread,
                           when a broker is configured) every few seconds: re-send reserved,
                           uncommitted iterations whose worker lease is stale (the worker died:
                           no heartbeat for `lease_stale_s`, default 30 s) at once, and those
                           with no lease at all after `stale_after_s` (a message lost with a
                           Redis restart or a failed send); refill running campaigns, start
                           queued ones the API could not enqueue.

Liveness: a task holds a `WorkerLease` row for its (campaign, iteration) while it runs; the
worker process' `Heartbeat` thread refreshes all of its rows every `heartbeat_s` (default 5 s).
A SIGKILLed worker stops heartbeating, so its iterations are re-sent about `lease_stale_s` after
its death, not after the broker's visibility timeout (3600 s, which must exceed the longest
task). The dead worker's unacknowledged messages come back from Redis an hour later and are
skipped: the iterations are committed by then.

Iteration numbers are reserved before a message is sent, so a redelivered or re-sent message
re-runs the same number, and the (campaign, iteration) unique key makes the second commit a
no-op: nothing is counted or inserted twice.

Routing: iteration 0 (the seed) and every iteration of a local-mutator campaign is one
`evoforge.iterate` message on `eval` (or `gpu` when the task needs one). An LLM campaign's
iteration is `evoforge.mutate` on `llm` (select + LLM call), which sends `evoforge.evaluate` with
the proposed program to `eval`/`gpu` (sandboxed run + commit). LLM latency then never holds a
CPU slot, and each pool is sized for its own bottleneck.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from db.campaigns import budget_left, missing_iterations, reserve_slot, set_status, utc
from db.models import Campaign, WorkerLease

log = logging.getLogger(__name__)

# Errors that mean "the broker is unreachable right now": the sweeper re-sends later.
try:
    from kombu.exceptions import OperationalError as _KombuOperationalError
    from redis.exceptions import ConnectionError as _RedisConnectionError
    from redis.exceptions import TimeoutError as _RedisTimeoutError
    BROKER_ERRORS: tuple[type[BaseException], ...] = (
        _KombuOperationalError, _RedisConnectionError, _RedisTimeoutError, ConnectionError, OSError)
except ImportError:  # pragma: no cover
    BROKER_ERRORS = (ConnectionError, OSError)


HEARTBEAT_ENV = "EVOFORGE_HEARTBEAT_S"          # worker: seconds between heartbeats (5)
LEASE_STALE_ENV = "EVOFORGE_LEASE_STALE_S"      # sweeper: a lease this old is dead (30)
SWEEP_INTERVAL_ENV = "EVOFORGE_SWEEP_INTERVAL_S"  # `evoforge serve`'s sweeper: round period (5)
SWEEP_STALE_ENV = "EVOFORGE_SWEEP_STALE_S"      # `evoforge serve`'s sweeper: no-lease re-send (600)


def _env_s(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name) or default)
    except ValueError:
        log.warning("%s=%r is not a number; using %s", name, os.environ.get(name), default)
        return default
    return value if value > 0 else default


def default_heartbeat_s() -> float:
    return _env_s(HEARTBEAT_ENV, 5.0)


def default_lease_stale_s() -> float:
    """Must be several heartbeats: a live worker whose heartbeat is late is re-sent (wasted
    work, never a wrong count)."""
    return _env_s(LEASE_STALE_ENV, 30.0)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def default_sessions() -> sessionmaker[Session]:
    from db.engine import session_factory

    return session_factory(None)  # $EVOFORGE_DATABASE_URL


# -- routing ----------------------------------------------------------------------------------
def route_of(sessions: sessionmaker[Session], campaign_id: int) -> tuple[str, bool]:
    """(evaluation queue, whether iterations > 0 go through the `llm` queue first). Read each
    time (one small query): a cache keyed by id would outlive a deleted campaign whose id
    SQLite hands out again."""
    with sessions() as s:
        row = s.execute(select(Campaign.task, Campaign.config).where(Campaign.id == campaign_id)).first()
    if row is None:
        raise KeyError(f"campaign {campaign_id} not found")
    task_name, config = row
    mutator = (config or {}).get("mutator", {}).get("kind", "local")
    try:
        from evaluators.base import get_task

        gpu = bool(get_task(task_name).resources.gpu)
    except KeyError:
        gpu = False
    return ("gpu" if gpu else "eval", mutator == "llm")


def send_iteration(sessions: sessionmaker[Session], campaign_id: int, iteration: int) -> None:
    from worker import tasks

    queue, llm = route_of(sessions, campaign_id)
    if llm and iteration > 0:
        tasks.mutate.apply_async((campaign_id, iteration), queue="llm")
    else:
        tasks.iterate.apply_async((campaign_id, iteration), queue=queue)


# -- completion ------------------------------------------------------------------------------
def maybe_complete(sessions: sessionmaker[Session], campaign_id: int) -> bool:
    """running -> completed once a budget is spent and every reserved iteration committed."""
    with sessions() as s:
        c = s.get(Campaign, campaign_id)
        if c is None or c.status != "running" or not budget_left(c):
            return False
        if c.evaluations < c.iterations_reserved and missing_iterations(s, campaign_id,
                                                                         c.iterations_reserved):
            return False
    return set_status(sessions, campaign_id, "completed", only_from=("running",))


def refill(campaign_id: int, sessions: sessionmaker[Session] | None = None) -> int:
    """Reserve and send iterations until `parallel` are in flight; returns how many were sent.
    A broker error leaves the reserved number as a gap that the sweeper re-sends."""
    sessions = sessions or default_sessions()
    sent = 0
    while True:
        it = reserve_slot(sessions, campaign_id)
        if it is None:
            break
        try:
            send_iteration(sessions, campaign_id, it)
        except BROKER_ERRORS:
            log.warning("campaign %s: could not send iteration %s (broker down?); the sweeper "
                        "will re-send it", campaign_id, it, exc_info=True)
            break
        sent += 1
    if not sent:
        maybe_complete(sessions, campaign_id)
    return sent


def enqueue_campaign(campaign_id: int, sessions: sessionmaker[Session] | None = None) -> int:
    """Start (or resume) a campaign on the workers. Called by the API after storing it queued.

    A scheduled campaign outside a slice waits, queued, for its next trigger (worker/schedule.py)."""
    from worker.schedule import hold

    sessions = sessions or default_sessions()
    with sessions() as s:
        if s.get(Campaign, campaign_id) is None:
            raise KeyError(f"campaign {campaign_id} not found")
    if hold(sessions, campaign_id):
        return 0
    if not set_status(sessions, campaign_id, "running", only_from=("queued", "paused", "running")):
        return 0
    sent = resend_gaps(sessions, campaign_id)
    return sent + refill(campaign_id, sessions)


def resend_gaps(sessions: sessionmaker[Session], campaign_id: int,
                only: list[int] | None = None) -> int:
    with sessions() as s:
        c = s.get(Campaign, campaign_id)
        gaps = only if only is not None else (
            missing_iterations(s, campaign_id, c.iterations_reserved)
            if c.evaluations < c.iterations_reserved else [])
    if 0 in gaps:  # everything else waits for the seed
        gaps = [0]
    sent = 0
    for it in gaps:
        try:
            send_iteration(sessions, campaign_id, it)
        except BROKER_ERRORS:
            log.warning("campaign %s: could not re-send iteration %s", campaign_id, it, exc_info=True)
            break
        sent += 1
    return sent


# -- worker liveness ----------------------------------------------------------------------------
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
        now = _now()
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
                                  .values(heartbeat_at=_now()).returning(WorkerLease.id))) if ids else set()
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


# -- the sweeper ------------------------------------------------------------------------------
class Sweeper:
    """Recover from dead workers and lost messages. A reserved, uncommitted iteration is
    - running, while some worker's lease on it has a heartbeat younger than `lease_stale_s`;
    - orphaned, when its only leases are stale: re-sent now, the stale leases deleted;
    - waiting or lost, with no lease: the sweeper remembers (in memory) when it first saw it so
      and re-sends it after `stale_after_s` (above the longest queue wait: a re-send of a message
      that was only waiting wastes one evaluation, never counts twice)."""

    def __init__(self, sessions: sessionmaker[Session] | None = None, *, stale_after_s: float = 600.0,
                 lease_stale_s: float | None = None):
        self.sessions = sessions or default_sessions()
        self.stale_after_s = stale_after_s
        self.lease_stale_s = lease_stale_s if lease_stale_s is not None else default_lease_stale_s()
        self.first_seen: dict[tuple[int, int], float] = {}
        self.last_gc = 0.0

    def sweep(self, now: float | None = None) -> dict[str, int]:
        now = time.monotonic() if now is None else now
        stats = {"resent": 0, "sent": 0, "started": 0, "completed": 0}
        with self.sessions() as s:
            rows = s.execute(select(Campaign.id, Campaign.status, Campaign.evaluations,
                                    Campaign.iterations_reserved, Campaign.max_evaluations,
                                    Campaign.config)
                             .where(Campaign.status.in_(("queued", "running")))).all()
        live: set[tuple[int, int]] = set()
        for cid, status, evaluations, reserved, max_evals, config in rows:
            try:
                if status == "queued":
                    if (config or {}).get("schedule"):
                        continue  # it waits for its trigger; `tick` enqueues it then
                    stats["started"] += bool(enqueue_campaign(cid, self.sessions))
                    continue
                if evaluations < reserved:
                    with self.sessions() as s:
                        gaps = missing_iterations(s, cid, reserved)
                    leases = leases_of(self.sessions, cid) if gaps else {}
                    wall = _now()
                    stale, orphaned = [], []
                    waiting: list[tuple[int, float]] = []
                    for it in gaps:
                        key = (cid, it)
                        live.add(key)
                        hb = leases.get(it)
                        if hb is not None and (wall - hb).total_seconds() <= self.lease_stale_s:
                            self.first_seen[key] = now        # running on a live worker
                        elif hb is not None:
                            orphaned.append(it)               # its worker stopped heartbeating
                            stale.append(it)
                        else:
                            waiting.append((it, now - self.first_seen.setdefault(key, now)))
                    # A dead worker also took its prefetched, not yet started messages with it: they
                    # have no lease and the broker returns them only after its visibility timeout.
                    # So once a worker of this campaign is found dead, lease-less iterations that
                    # have waited as long as a lease takes to go stale are re-sent too (a duplicate
                    # of one still queued is harmless: the (campaign, iteration) key keeps one).
                    limit = self.lease_stale_s if orphaned else self.stale_after_s
                    stale += [it for it, waited in waiting if waited >= limit]
                    if stale:
                        n = resend_gaps(self.sessions, cid, only=stale)
                        sent_its = [0][:n] if 0 in stale else stale[:n]
                        for it in sent_its:
                            self.first_seen[(cid, it)] = now
                        dead = [it for it in sent_its if it in orphaned]
                        if dead:  # the re-sent message takes a fresh lease when it starts
                            with self.sessions.begin() as s:
                                s.execute(delete(WorkerLease).where(
                                    WorkerLease.campaign_id == cid, WorkerLease.iteration.in_(dead),
                                    WorkerLease.heartbeat_at < wall - timedelta(seconds=self.lease_stale_s)))
                        stats["resent"] += n
                        log.log(logging.WARNING if dead else logging.INFO,
                                "campaign %s: re-sent iterations %s (of a dead worker: %s; the "
                                "others had no lease for %.0fs)", cid, sent_its, dead,
                                self.stale_after_s)
                stats["sent"] += refill(cid, self.sessions)
                with self.sessions() as s:
                    stats["completed"] += s.get(Campaign, cid).status == "completed"
            except BROKER_ERRORS:
                log.warning("sweep: broker unavailable", exc_info=True)
                break
        for key in list(self.first_seen):
            if key not in live:
                del self.first_seen[key]
        self.collect_leases(now)
        return stats

    def collect_leases(self, now: float) -> None:
        """Delete leases dead for long (their campaign was paused, deleted or finished)."""
        if now - self.last_gc < 60:
            return
        self.last_gc = now
        cutoff = _now() - timedelta(seconds=max(600.0, 10 * self.lease_stale_s))
        with self.sessions.begin() as s:
            s.execute(delete(WorkerLease).where(WorkerLease.heartbeat_at < cutoff))


class SweeperThread:
    """The sweeper as a daemon thread, for `evoforge serve` with a broker: a deployment of API +
    workers recovers from dead workers and lost messages without `evoforge beat`. Several
    sweepers (replicas, beat) are safe: a double re-send is a wasted evaluation at most."""

    def __init__(self, sessions: sessionmaker[Session], *, interval_s: float | None = None,
                 stale_after_s: float | None = None):
        self.interval_s = interval_s or _env_s(SWEEP_INTERVAL_ENV, 5.0)
        self.sweeper = Sweeper(sessions, stale_after_s=stale_after_s or _env_s(SWEEP_STALE_ENV, 600.0))
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="evoforge-sweeper", daemon=True)

    def start(self) -> "SweeperThread":
        log.info("sweeper: every %.1fs; dead-worker leases after %.0fs, lost messages after %.0fs",
                 self.interval_s, self.sweeper.lease_stale_s, self.sweeper.stale_after_s)
        self.thread.start()
        return self

    def _loop(self) -> None:
        while not self.stop_event.wait(self.interval_s):
            try:
                stats = self.sweeper.sweep()
                if stats["resent"] or stats["started"]:
                    log.info("sweeper: %s", stats)
            except Exception:  # database or broker down: next round
                log.warning("sweep failed", exc_info=True)

    def stop(self, wait_s: float = 10.0) -> None:
        self.stop_event.set()
        if self.thread.is_alive():
            self.thread.join(wait_s)


def campaign_state(sessions: sessionmaker[Session], campaign_id: int) -> dict[str, Any]:
    with sessions() as s:
        c = s.get(Campaign, campaign_id)
        return {"status": c.status, "evaluations": c.evaluations,
                "reserved": c.iterations_reserved, "max_evaluations": c.max_evaluations}
