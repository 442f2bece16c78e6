"""One iteration on a Celery worker, as plain functions (the task bodies stay a few lines).

`run_whole` is both halves in one task (the seed, a local-mutator campaign): exactly what the
embedded executor runs. An LLM campaign splits it: `propose` (select + mutate, on the `llm`
queue) returns a `Proposal`, which travels as JSON to `complete` (dedupe, probe, cascade,
commit, on `eval`/`gpu`). Both halves are evolution/step.py's, run by the campaign's `Runtime`.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from typing import Any, Callable, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from evoforge.db.errors import campaign_not_found
from evoforge.db.models import Campaign, Program
from evoforge.evolution.step import Committed, Proposal
from evoforge.worker.runtime import Runtime

log = logging.getLogger(__name__)
T = TypeVar("T")
AGAIN_AFTER_S = 1.0


def once_more(fn: Callable[..., T], *args: Any, expected: tuple[type[BaseException], ...] = (),
              what: str = "an iteration", wanted: Callable[[], bool] = lambda: True) -> T | None:
    """Run `fn(*args)`; if it raises anything but `expected`, log it and run it once more, unless
    `wanted()` says by then that the run is no longer wanted (None: the campaign was paused,
    cancelled or stopped meanwhile).

    The halves are idempotent (a committed iteration is skipped, a commit is keyed by the
    iteration), so a second run never double-counts. A fault that happens once (a library's
    spurious error, a moment without memory) then costs one re-run, not a campaign that may
    have run for weeks; a bug that fails every time still fails the campaign, one run later,
    with its own error and traceback (the second run is outside the first one's handler).
    """
    try:
        return fn(*args)
    except expected:
        raise
    except Exception:
        log.warning("%s failed unexpectedly; running it once more", what, exc_info=True)
    time.sleep(AGAIN_AFTER_S)
    if not wanted():
        log.info("%s is no longer wanted; not running it again", what)
        return None
    return fn(*args)


_runtimes: OrderedDict[tuple, Runtime] = OrderedDict()
_runtimes_lock = threading.Lock()
MAX_RUNTIMES = 32


def runtime(sessions: sessionmaker[Session], campaign_id: int) -> Runtime:
    """One Runtime per campaign per worker process (its store caches programs). Runtimes are
    thread-safe. Keyed by database, id and creation time: SQLite may hand a deleted campaign's
    id out again. Raises CampaignNotFound."""
    with sessions() as s:
        created = s.scalar(select(Campaign.created_at).where(Campaign.id == campaign_id))
    if created is None:
        raise campaign_not_found(campaign_id)
    key = (str(sessions.kw.get("bind").url), campaign_id, created.isoformat())
    with _runtimes_lock:
        rt = _runtimes.get(key)
        if rt is not None:
            _runtimes.move_to_end(key)
            return rt
    rt = Runtime.for_campaign(sessions, campaign_id)
    with _runtimes_lock:
        rt = _runtimes.setdefault(key, rt)
        while len(_runtimes) > MAX_RUNTIMES:
            _runtimes.popitem(last=False)
    return rt


def should_run(sessions: sessionmaker[Session], campaign_id: int, iteration: int) -> bool:
    """Only running campaigns get work, and a committed iteration is never redone (a redelivered
    message after the commit). A paused campaign's skipped iteration stays reserved: it is
    re-sent when the campaign resumes."""
    with sessions() as s:
        status = s.scalar(select(Campaign.status).where(Campaign.id == campaign_id))
        if status != "running":
            return False
        done = s.scalar(select(Program.id).where(Program.campaign_id == campaign_id,
                                                 Program.iteration == iteration))
        return done is None


def run_whole(sessions: sessionmaker[Session], campaign_id: int, iteration: int) -> Committed | None:
    if not should_run(sessions, campaign_id, iteration):
        return None
    return runtime(sessions, campaign_id).iterate(iteration)


def propose(sessions: sessionmaker[Session], campaign_id: int, iteration: int) -> Proposal | None:
    if not should_run(sessions, campaign_id, iteration):
        return None
    return runtime(sessions, campaign_id).propose(iteration)


def complete(sessions: sessionmaker[Session], campaign_id: int, iteration: int,
             proposal_json: str) -> Committed | None:
    if not should_run(sessions, campaign_id, iteration):
        return None
    proposal = Proposal.from_json(proposal_json)
    if proposal.iteration != iteration:
        raise ValueError(f"proposal of iteration {proposal.iteration} sent as {iteration}")
    return runtime(sessions, campaign_id).complete(proposal)
