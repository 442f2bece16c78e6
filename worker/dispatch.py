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

Liveness (worker/leases.py): a task holds a `WorkerLease` row for its (campaign, iteration)
while it runs, refreshed by its process' heartbeat thread. A SIGKILLed worker stops
heartbeating, so its iterations are re-sent about `lease_stale_s` after its death, not after the
broker's visibility timeout (3600 s, which must exceed the longest task). The dead worker's
unacknowledged messages come back from Redis an hour later and are skipped: the iterations are
committed by then.

Iteration numbers are reserved before a message is sent, so a redelivered or re-sent message
re-runs the same number, and the (campaign, iteration) unique key makes the second commit a
no-op: nothing is counted or inserted twice.

Routing, all in `route`: iteration 0 (the seed) and every iteration of a local-mutator campaign
is one `evoforge.iterate` message (both halves of the step) on `eval` (or `gpu` when the task
needs one). An LLM campaign's iteration is `evoforge.mutate` on `llm` (the `propose` half:
select + LLM call), which sends `evoforge.evaluate` with the `Proposal` to `eval`/`gpu` (the
`complete` half: sandboxed run + commit). LLM latency then never holds a CPU slot, and each pool
is sized for its own bottleneck. This module sends messages by task name, so it does not import
worker/celery_jobs.py (which imports this one).
"""
from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta
from typing import Callable

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from evoforge.db.campaign_config import stored_schedule
from evoforge.db.campaign_rows import missing_iterations, reserve_slot, set_status, spent_budget
from evoforge.db.errors import campaign_not_found
from evoforge.db.models import Campaign, WorkerLease
from evoforge.evolution.step import Proposal
from evoforge.worker.leases import default_lease_stale_s, env_positive, leases_of, utc_now

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


SWEEP_INTERVAL_ENV = "EVOFORGE_SWEEP_INTERVAL_S"  # `evoforge serve`'s sweeper: round period (5)
SWEEP_STALE_ENV = "EVOFORGE_SWEEP_STALE_S"      # `evoforge serve`'s sweeper: no-lease re-send (600)


def default_sessions() -> sessionmaker[Session]:
    from evoforge.db.engine import session_factory

    return session_factory(None)  # $EVOFORGE_DATABASE_URL


# -- routing ----------------------------------------------------------------------------------
ITERATE, PROPOSE, COMPLETE = "evoforge.iterate", "evoforge.mutate", "evoforge.evaluate"


def route(sessions: sessionmaker[Session], campaign_id: int, iteration: int, *,
          proposed: bool = False) -> tuple[str, str]:
    """(Celery task, queue) of the next message of an iteration: the one place a queue is
    chosen. An LLM campaign's iterations after the seed are proposed on `llm`, then completed
    (`proposed=True`) on the evaluation queue; any other iteration runs whole there. The
    evaluation queue is `gpu` for a task whose `resources.gpu` is set, else `eval`. Read each
    time (one small query): a cache keyed by id would outlive a deleted campaign whose id SQLite
    hands out again."""
    with sessions() as s:
        row = s.execute(select(Campaign.task, Campaign.config).where(Campaign.id == campaign_id)).first()
    if row is None:
        raise campaign_not_found(campaign_id)
    task_name, config = row
    if iteration > 0 and not proposed and _mutator_kind(config) == "llm":
        return PROPOSE, "llm"
    try:
        from evoforge.evaluators.base import get_task

        gpu = bool(get_task(task_name).resources.gpu)
    except KeyError:  # an unknown task: its iterations fail on `eval` with the reason
        gpu = False
    return (COMPLETE if proposed else ITERATE), ("gpu" if gpu else "eval")


def _mutator_kind(config: dict | None) -> str:
    from evoforge.db.campaign_config import MutatorSpec  # the one default kind

    return MutatorSpec.model_validate((config or {}).get("mutator") or {}).kind


def celery_send(task: str, args: tuple, queue: str) -> None:
    from evoforge.worker.celery_app import app  # the broker's client libraries, on first send

    app.send_task(task, args, queue=queue)


# How a message leaves this process: Celery's producer (tests put a recorder here).
SEND: Callable[[str, tuple, str], None] = celery_send


def send_iteration(sessions: sessionmaker[Session], campaign_id: int, iteration: int) -> None:
    task, queue = route(sessions, campaign_id, iteration)
    SEND(task, (campaign_id, iteration), queue)


def send_proposal(sessions: sessionmaker[Session], campaign_id: int, proposal: Proposal) -> None:
    """Hand a proposal from the `llm` worker to evaluation (as JSON text)."""
    task, queue = route(sessions, campaign_id, proposal.iteration, proposed=True)
    SEND(task, (campaign_id, proposal.iteration, proposal.to_json()), queue)


# -- completion ------------------------------------------------------------------------------
def maybe_complete(sessions: sessionmaker[Session], campaign_id: int) -> bool:
    """running -> completed once a budget is spent and every reserved iteration committed."""
    with sessions() as s:
        c = s.get(Campaign, campaign_id)
        if c is None or c.status != "running" or not spent_budget(c):
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
    from evoforge.worker.schedule import hold

    sessions = sessions or default_sessions()
    with sessions() as s:
        if s.get(Campaign, campaign_id) is None:
            raise campaign_not_found(campaign_id)
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
        """One round over the queued and running campaigns; `now` is a monotonic time."""
        now = time.monotonic() if now is None else now
        stats = {"resent": 0, "sent": 0, "started": 0, "completed": 0}
        live: set[tuple[int, int]] = set()
        for cid, status, evaluations, reserved, config in self._active():
            try:
                if status == "queued":
                    # a scheduled campaign waits for its trigger; `tick` enqueues it then
                    if stored_schedule(config) is None:
                        stats["started"] += bool(enqueue_campaign(cid, self.sessions))
                    continue
                if evaluations < reserved:
                    stats["resent"] += self.recover(cid, reserved, now, live)
                stats["sent"] += refill(cid, self.sessions)
                with self.sessions() as s:
                    stats["completed"] += s.get(Campaign, cid).status == "completed"
            except BROKER_ERRORS:
                log.warning("sweep: broker unavailable", exc_info=True)
                break
        for key in [k for k in self.first_seen if k not in live]:
            del self.first_seen[key]
        self.collect_leases(now)
        return stats

    def _active(self) -> list[tuple]:
        with self.sessions() as s:
            return s.execute(select(Campaign.id, Campaign.status, Campaign.evaluations,
                                    Campaign.iterations_reserved, Campaign.config)
                             .where(Campaign.status.in_(("queued", "running")))).all()

    def recover(self, cid: int, reserved: int, now: float, live: set[tuple[int, int]]) -> int:
        """Re-send the campaign's gaps that are orphaned or have waited too long; returns how
        many were sent. Adds every gap it saw to `live`."""
        with self.sessions() as s:
            gaps = missing_iterations(s, cid, reserved)
        if not gaps:
            return 0
        wall = utc_now()
        orphaned, waiting = self.classify(cid, gaps, leases_of(self.sessions, cid), wall, now)
        live.update((cid, it) for it in gaps)
        # A dead worker also took its prefetched, not yet started messages with it: they have no
        # lease and the broker returns them only after its visibility timeout. So once a worker
        # of this campaign is found dead, lease-less iterations that have waited as long as a
        # lease takes to go stale are re-sent too (a duplicate of one still queued is harmless:
        # the (campaign, iteration) key keeps one).
        limit = self.lease_stale_s if orphaned else self.stale_after_s
        stale = orphaned + [it for it, waited_s in waiting if waited_s >= limit]
        return self.resend(cid, stale, orphaned, wall, now) if stale else 0

    def classify(self, cid: int, gaps: list[int], leases: dict[int, datetime], wall: datetime,
                 now: float) -> tuple[list[int], list[tuple[int, float]]]:
        """(orphaned gaps: only stale leases, [(lease-less gap, seconds waited)]); a gap with a
        live lease is running, and its waiting clock restarts."""
        orphaned: list[int] = []
        waiting: list[tuple[int, float]] = []
        for it in gaps:
            key, hb = (cid, it), leases.get(it)
            if hb is not None and (wall - hb).total_seconds() <= self.lease_stale_s:
                self.first_seen[key] = now               # running on a live worker
            elif hb is not None:
                orphaned.append(it)                      # its worker stopped heartbeating
            else:
                waiting.append((it, now - self.first_seen.setdefault(key, now)))
        return orphaned, waiting

    def resend(self, cid: int, stale: list[int], orphaned: list[int], wall: datetime,
               now: float) -> int:
        """Re-send `stale` (only the seed while it is missing); drop the dead leases of what
        was re-sent: the new message takes a fresh lease when it starts."""
        n = resend_gaps(self.sessions, cid, only=stale)
        sent_its = [0][:n] if 0 in stale else stale[:n]
        for it in sent_its:
            self.first_seen[(cid, it)] = now
        dead = [it for it in sent_its if it in orphaned]
        if dead:
            with self.sessions.begin() as s:
                s.execute(delete(WorkerLease).where(
                    WorkerLease.campaign_id == cid, WorkerLease.iteration.in_(dead),
                    WorkerLease.heartbeat_at < wall - timedelta(seconds=self.lease_stale_s)))
        log.log(logging.WARNING if dead else logging.INFO,
                "campaign %s: re-sent iterations %s (of a dead worker: %s; the others had no "
                "lease for %.0fs)", cid, sent_its, dead, self.stale_after_s)
        return n

    def collect_leases(self, now: float) -> None:
        """Delete leases dead for long (their campaign was paused, deleted or finished)."""
        if now - self.last_gc < 60:
            return
        self.last_gc = now
        cutoff = utc_now() - timedelta(seconds=max(600.0, 10 * self.lease_stale_s))
        with self.sessions.begin() as s:
            s.execute(delete(WorkerLease).where(WorkerLease.heartbeat_at < cutoff))


class SweeperThread:
    """The sweeper as a daemon thread, for `evoforge serve` with a broker: a deployment of API +
    workers recovers from dead workers and lost messages without `evoforge beat`. Several
    sweepers (replicas, beat) are safe: a double re-send is a wasted evaluation at most."""

    def __init__(self, sessions: sessionmaker[Session], *, interval_s: float | None = None,
                 stale_after_s: float | None = None):
        self.interval_s = interval_s or env_positive(SWEEP_INTERVAL_ENV, 5.0)
        self.sweeper = Sweeper(sessions, stale_after_s=stale_after_s or env_positive(SWEEP_STALE_ENV, 600.0))
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
