"""The campaign dispatcher: keep each running campaign's `parallel` iterations in flight.

    enqueue_campaign(id)   queued/paused -> running; re-send reserved-but-uncommitted iterations;
                           fill the campaign's parallelism.
    refill(id)             after every iteration: reserve iteration numbers in the database (at
                           most `parallel` in flight, never past the budget) and send one message
                           per number; mark the campaign completed when its budget is spent and
                           nothing is missing.
    Sweeper.sweep()        run by `evoforge beat` every few seconds: re-send iterations reserved
                           longer than `stale_after_s` ago and still not committed (a message
                           lost with a Redis restart, a worker killed before it acked), refill
                           running campaigns, start queued ones the API could not enqueue.

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
import time
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from db.campaigns import budget_left, missing_iterations, set_status
from db.models import Campaign

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


# -- reservation ------------------------------------------------------------------------------
def reserve_slot(sessions: sessionmaker[Session], campaign_id: int) -> int | None:
    """Claim the next iteration number when the campaign is running, under its evaluation budget,
    with fewer than `parallel` iterations in flight, and (after the seed) only once the seed has
    committed. One conditional UPDATE: concurrent refills never overshoot either limit."""
    with sessions() as s:
        c = s.get(Campaign, campaign_id)
        if c is None or c.status != "running" or budget_left(c):
            return None
    in_flight = Campaign.iterations_reserved - Campaign.evaluations
    with sessions.begin() as s:
        row = s.execute(
            update(Campaign)
            .where(Campaign.id == campaign_id, Campaign.status == "running",
                   Campaign.max_evaluations.is_(None)
                   | (Campaign.iterations_reserved < Campaign.max_evaluations),
                   in_flight < Campaign.parallel,
                   (Campaign.evaluations > 0) | (Campaign.iterations_reserved == 0))
            .values(iterations_reserved=Campaign.iterations_reserved + 1)
            .returning(Campaign.iterations_reserved)).first()
    return None if row is None else row[0] - 1


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

    A scheduled campaign without an evaluation budget waits for its first trigger."""
    sessions = sessions or default_sessions()
    with sessions() as s:
        c = s.get(Campaign, campaign_id)
        if c is None:
            raise KeyError(f"campaign {campaign_id} not found")
        if (c.config or {}).get("schedule") and c.max_evaluations is None:
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
    """Recover from lost messages. Keeps, in memory, when it first saw each uncommitted
    reserved iteration; re-sends those older than `stale_after_s` (set it above the longest
    queue wait + iteration time: a re-send of a slow but live iteration only wastes work)."""

    def __init__(self, sessions: sessionmaker[Session] | None = None, *, stale_after_s: float = 600.0):
        self.sessions = sessions or default_sessions()
        self.stale_after_s = stale_after_s
        self.first_seen: dict[tuple[int, int], float] = {}

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
                    if (config or {}).get("schedule") and max_evals is None:
                        continue
                    stats["started"] += bool(enqueue_campaign(cid, self.sessions))
                    continue
                if evaluations < reserved:
                    with self.sessions() as s:
                        gaps = missing_iterations(s, cid, reserved)
                    stale = []
                    for it in gaps:
                        key = (cid, it)
                        live.add(key)
                        first = self.first_seen.setdefault(key, now)
                        if now - first >= self.stale_after_s:
                            stale.append(it)
                    if stale:
                        n = resend_gaps(self.sessions, cid, only=stale)
                        for it in stale[:n] if 0 not in stale else [0][:n]:
                            self.first_seen[(cid, it)] = now
                        stats["resent"] += n
                        log.info("campaign %s: re-sent stale iterations %s", cid, stale[:n])
                stats["sent"] += refill(cid, self.sessions)
                with self.sessions() as s:
                    stats["completed"] += s.get(Campaign, cid).status == "completed"
            except BROKER_ERRORS:
                log.warning("sweep: broker unavailable", exc_info=True)
                break
        for key in list(self.first_seen):
            if key not in live:
                del self.first_seen[key]
        return stats


def campaign_state(sessions: sessionmaker[Session], campaign_id: int) -> dict[str, Any]:
    with sessions() as s:
        c = s.get(Campaign, campaign_id)
        return {"status": c.status, "evaluations": c.evaluations,
                "reserved": c.iterations_reserved, "max_evaluations": c.max_evaluations}
