"""Scheduled campaigns and the `evoforge beat` loop.

A campaign whose config has `schedule: {cron, evaluations_per_run}` runs only in slices: at each
cron trigger (UTC) its run limit, the `max_evaluations` column (here: the end of the current
slice), is set to what it has reserved so far plus `evaluations_per_run`, capped by its config's
`budget.max_evaluations` (the total, when one was asked for; the one home of the total), and it
is enqueued again, on the same archive. Before its first trigger
and between slices it waits (`queued`, or `completed` after a slice): `waits_for_trigger` is
the rule the runners apply before starting it. Triggers missed while beat was down collapse into
one slice. A paused campaign's triggers pass without a slice; cancelled and failed campaigns are
left alone. A trigger that would make the project pass its running-campaign quota
(worker/quotas.py) waits for a later tick.

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
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from evoforge.db.campaign_rows import ACTIVE, set_status
from evoforge.db.campaign_config import stored_budget, stored_schedule
from evoforge.db.models import Campaign
from evoforge.worker import quotas
from evoforge.worker.campaign_service import open_slice

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


def waits_for_trigger(c: Campaign) -> bool:
    """True for a scheduled campaign outside a slice: before its first trigger, or once the
    slice's evaluations are all done. A runner leaves such a campaign queued."""
    if stored_schedule(c.config) is None:
        return False
    if c.last_scheduled_at is None or c.max_evaluations is None:
        return True
    return c.evaluations >= c.max_evaluations


def hold(sessions: sessionmaker[Session], campaign_id: int) -> bool:
    """When the campaign waits for a trigger, put it (back) to queued and return True."""
    with sessions() as s:
        c = s.get(Campaign, campaign_id)
        if c is None or not waits_for_trigger(c):
            return False
    set_status(sessions, campaign_id, "queued", only_from=("running",))
    return True


def slice_end(c: Campaign, per_run: int) -> int:
    """The new `max_evaluations` of a trigger: at most `per_run` past what is reserved (or
    done), never past the total budget asked for."""
    done = max(c.iterations_reserved, c.evaluations)
    end = done + max(1, per_run)
    total = stored_budget(c.config).max_evaluations
    return end if total is None else min(end, total)


def tick(sessions: sessionmaker[Session], now: datetime | None = None, *,
         enqueue: Callable[[int], object] | None = None) -> list[int]:
    """Serve every due trigger; returns the ids of campaigns given a slice."""
    now = _utc(now or datetime.now(timezone.utc))
    if enqueue is None:
        from evoforge.worker.dispatch import enqueue_campaign

        def enqueue(cid: int) -> object:
            return enqueue_campaign(cid, sessions)
    with sessions() as s:
        candidates = [cid for cid, cfg in s.execute(
            select(Campaign.id, Campaign.config).where(Campaign.status.in_(SCHEDULABLE)))
            if stored_schedule(cfg) is not None]
    started = []
    for cid in candidates:
        try:
            if _serve(sessions, cid, now):
                open_slice(sessions, cid)
                enqueue(cid)
                started.append(cid)
        except Exception:
            log.exception("schedule: campaign %s", cid)
    return started


def _serve(sessions: sessionmaker[Session], cid: int, now: datetime) -> bool:
    with sessions.begin() as s:
        c = s.execute(select(Campaign).where(Campaign.id == cid).with_for_update()).scalar_one_or_none()
        sched = stored_schedule(c.config) if c is not None else None
        if sched is None or c.status not in SCHEDULABLE:
            return False
        t = due(sched.cron, c.last_scheduled_at or c.created_at, now)
        if t is None:
            return False
        values: dict = {"last_scheduled_at": t}
        work = c.status != "paused"
        if work:
            end = slice_end(c, sched.evaluations_per_run)
            work = end > max(c.iterations_reserved, c.evaluations)  # else: the budget is spent
            if work and c.status not in ACTIVE and _at_running_quota(s, c):
                log.info("campaign %s: trigger %s waits (project at its running quota)", cid, t)
                return False
            if work:
                values["max_evaluations"] = end
        s.execute(update(Campaign).where(Campaign.id == cid).values(**values))
        log.info("campaign %s: trigger %s%s", cid, t.isoformat(), "" if work else " (no slice)")
        return work


def _at_running_quota(s: Session, c: Campaign) -> bool:
    limit = quotas.Quotas.from_env().running_campaigns
    return bool(limit) and quotas.active_campaigns(s, c.project_id, exclude_id=c.id) >= limit


def run_beat(sessions: sessionmaker[Session], *, interval_s: float = 5.0, stale_after_s: float = 600.0,
             stop: threading.Event | None = None) -> None:
    """The scheduler + sweeper loop behind `evoforge beat`. SIGTERM/SIGINT end it."""
    from evoforge.worker.dispatch import Sweeper

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
