"""Scheduled campaigns and the `evoforge beat` loop.

A campaign whose config has `schedule: {cron, evaluations_per_run}` gets a slice at each cron
trigger (UTC): its `max_evaluations` grows by `evaluations_per_run` and it is enqueued again, on
the same archive. Triggers missed while beat was down collapse into one slice. A paused
campaign's triggers pass without a slice; cancelled and failed campaigns are left alone.
A scheduled campaign created without `max_evaluations` waits for its first trigger.

`Campaign.last_scheduled_at` records the trigger served; it is read under a row lock
(SELECT .. FOR UPDATE on PostgreSQL), so two beat processes never serve one trigger twice.
Run one beat per deployment anyway.
"""
from __future__ import annotations

import logging
import signal
import threading
import time
from datetime import datetime, timezone
from typing import Callable

from croniter import croniter
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from db.campaigns import set_status
from db.models import Campaign

log = logging.getLogger(__name__)
SCHEDULABLE = ("queued", "running", "completed", "paused")
MAX_STEPS = 100_000


def _utc(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def due(cron: str, last_run: datetime, now: datetime) -> datetime | None:
    """The latest trigger time t with last_run < t <= now, or None (pure function)."""
    last_run, now = _utc(last_run), _utc(now)
    it = croniter(cron, last_run)
    t = it.get_next(datetime)
    if t > now:
        return None
    for _ in range(MAX_STEPS):
        nxt = it.get_next(datetime)
        if nxt > now:
            return t
        t = nxt
    return _utc(croniter(cron, now).get_prev(datetime))


def tick(sessions: sessionmaker[Session], now: datetime | None = None, *,
         enqueue: Callable[[int], object] | None = None) -> list[int]:
    """Serve every due trigger; returns the ids of campaigns given a slice."""
    now = _utc(now or datetime.now(timezone.utc))
    if enqueue is None:
        from worker.dispatch import enqueue_campaign

        def enqueue(cid: int) -> object:
            return enqueue_campaign(cid, sessions)
    with sessions() as s:
        candidates = [cid for cid, cfg in s.execute(
            select(Campaign.id, Campaign.config).where(Campaign.status.in_(SCHEDULABLE)))
            if (cfg or {}).get("schedule")]
    started = []
    for cid in candidates:
        try:
            if _serve(sessions, cid, now):
                set_status(sessions, cid, "running", only_from=("queued", "completed", "running"))
                enqueue(cid)
                started.append(cid)
        except Exception:
            log.exception("schedule: campaign %s", cid)
    return started


def _serve(sessions: sessionmaker[Session], cid: int, now: datetime) -> bool:
    with sessions.begin() as s:
        c = s.execute(select(Campaign).where(Campaign.id == cid).with_for_update()).scalar_one_or_none()
        sched = (c.config or {}).get("schedule") if c is not None else None
        if not sched or c.status not in SCHEDULABLE:
            return False
        t = due(sched["cron"], c.last_scheduled_at or c.created_at, now)
        if t is None:
            return False
        values = {"last_scheduled_at": t}
        if c.status != "paused":
            per_run = int(sched.get("evaluations_per_run") or 100)
            values["max_evaluations"] = func.coalesce(Campaign.max_evaluations, Campaign.evaluations) + per_run
        s.execute(update(Campaign).where(Campaign.id == cid).values(**values))
        log.info("campaign %s: trigger %s%s", cid, t.isoformat(),
                 " (paused: no slice)" if c.status == "paused" else "")
        return c.status != "paused"


def run_beat(sessions: sessionmaker[Session], *, interval_s: float = 5.0, stale_after_s: float = 600.0,
             stop: threading.Event | None = None) -> None:
    """The scheduler + sweeper loop behind `evoforge beat`. SIGTERM/SIGINT end it."""
    from worker.dispatch import Sweeper

    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    sweeper = Sweeper(sessions, stale_after_s=stale_after_s)
    log.info("beat: every %.1fs, re-sending iterations stale for %.0fs", interval_s, stale_after_s)
    while not stop.is_set():
        t0 = time.monotonic()
        try:
            started = tick(sessions)
            stats = sweeper.sweep()
            if started or stats["resent"] or stats["started"]:
                log.info("beat: scheduled %s, sweep %s", started, stats)
        except Exception:  # the database or broker is down: try again next round
            log.warning("beat round failed", exc_info=True)
        stop.wait(max(0.0, interval_s - (time.monotonic() - t0)))
