"""Per-project quotas, set by the operator in the environment (0 or empty: no limit).

    EVOFORGE_QUOTA_RUNNING_CAMPAIGNS  campaigns of one project that are queued or running (16)
    EVOFORGE_QUOTA_MAX_PARALLEL       the largest `parallel` one campaign may ask for (32)
    EVOFORGE_QUOTA_EVALUATIONS        evaluations one project may commit to, in all (no limit)

A project's evaluations are what its existing campaigns have done or may still do: a campaign
that can still run counts its whole `budget.max_evaluations` (the budget asked for, reserved up
front), a finished one what it did. With an evaluation quota, a campaign without
`budget.max_evaluations` is refused: an open-ended campaign cannot be counted.

Checks run under `admission(sessions, project_id)`, a per-project lock (a thread lock, plus a
PostgreSQL advisory lock when the database is PostgreSQL, for several API processes) held until
the new campaign or the status change is committed, so two concurrent creates cannot both pass a
limit of 1. Open mode (no project) is one project.
"""
from __future__ import annotations

import logging
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from evoforge.db.campaign_config import stored_budget, stored_schedule
from evoforge.db.campaign_rows import ACTIVE, FINAL, engine_of
from evoforge.db.models import Campaign
from evoforge.worker.campaign_service import Scope

log = logging.getLogger(__name__)
RUNNING_ENV = "EVOFORGE_QUOTA_RUNNING_CAMPAIGNS"
PARALLEL_ENV = "EVOFORGE_QUOTA_MAX_PARALLEL"
EVALUATIONS_ENV = "EVOFORGE_QUOTA_EVALUATIONS"
_LOCK_NAMESPACE = 0x45564F  # "EVO": the first key of the PostgreSQL advisory lock


class QuotaExceeded(Exception):
    """Beyond a quota. `status_code` 429: try again later (a campaign ends); 403: never as asked."""

    def __init__(self, message: str, status_code: int):
        super().__init__(message)
        self.status_code = status_code


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return max(0, int(raw))
    except ValueError:
        log.warning("%s=%r is not an integer; using %s", name, raw, default)
        return default


@dataclass(frozen=True)
class Quotas:
    running_campaigns: int = 16   # 0: no limit
    max_parallel: int = 32
    evaluations: int = 0

    @classmethod
    def from_env(cls) -> "Quotas":
        return cls(running_campaigns=_env_int(RUNNING_ENV, cls.running_campaigns),
                   max_parallel=_env_int(PARALLEL_ENV, cls.max_parallel),
                   evaluations=_env_int(EVALUATIONS_ENV, cls.evaluations))


def active_campaigns(s: Session, project_id: int | None, *, exclude_id: int | None = None) -> int:
    """Campaigns of the project that are queued or running (the ad-hoc bookkeeping one aside)."""
    q = Scope(project_id).where(select(func.count()).select_from(Campaign)).where(
        Campaign.status.in_(ACTIVE), Campaign.adhoc.is_(False))
    if exclude_id is not None:
        q = q.where(Campaign.id != exclude_id)
    return s.scalar(q) or 0


def committed_evaluations(status: str, evaluations: int, config: dict[str, Any] | None) -> int:
    """What one campaign counts against the evaluation quota."""
    asked = stored_budget(config).max_evaluations
    if asked is None or status in ("cancelled", "failed") or (
            status in FINAL and stored_schedule(config) is None):
        return evaluations
    return max(evaluations, asked)


def project_evaluations(s: Session, project_id: int | None, *, exclude_id: int | None = None) -> int:
    """Everything the project's campaigns have done or may still do; the ad-hoc bookkeeping
    campaign (`POST /evaluations`) counts what it reserved, in-flight evaluations included."""
    q = Scope(project_id).where(select(Campaign.status, Campaign.evaluations, Campaign.config,
                                       Campaign.adhoc, Campaign.iterations_reserved))
    if exclude_id is not None:
        q = q.where(Campaign.id != exclude_id)
    return sum(max(evaluations, reserved or 0) if adhoc
               else committed_evaluations(status, evaluations, config)
               for status, evaluations, config, adhoc, reserved in s.execute(q))


def check_evaluation(s: Session, project_id: int | None, quotas: Quotas | None = None) -> None:
    """Raise QuotaExceeded (403) when one more one-off evaluation (`POST /evaluations`) would
    pass the evaluation quota. Called under `admission` with the reservation committed inside,
    so parallel requests cannot all pass the last slot."""
    quotas = quotas or Quotas.from_env()
    if quotas.evaluations and project_evaluations(s, project_id) + 1 > quotas.evaluations:
        raise QuotaExceeded(f"this project has used its {quotas.evaluations} evaluations "
                            "(this server's per-project limit)", 403)


def check(s: Session, project_id: int | None, *, parallel: int, max_evaluations: int | None,
          campaign_id: int | None = None, quotas: Quotas | None = None) -> None:
    """Raise QuotaExceeded when one more active campaign with this `parallel` and evaluation
    budget would pass a quota. `campaign_id`: an existing campaign (resume), not counted twice."""
    quotas = quotas or Quotas.from_env()
    if quotas.max_parallel and parallel > quotas.max_parallel:
        raise QuotaExceeded(f"parallel {parallel} is above this server's limit of "
                            f"{quotas.max_parallel} per campaign", 403)
    if quotas.running_campaigns:
        active = active_campaigns(s, project_id, exclude_id=campaign_id)
        if active >= quotas.running_campaigns:
            raise QuotaExceeded(f"this project already has {active} queued or running campaigns "
                                f"(the limit is {quotas.running_campaigns}); pause, cancel or "
                                "delete one, or wait for one to end", 429)
    if quotas.evaluations:
        used = project_evaluations(s, project_id, exclude_id=campaign_id)
        left = max(0, quotas.evaluations - used)
        if max_evaluations is None:
            raise QuotaExceeded(f"this server limits evaluations to {quotas.evaluations} per "
                                f"project: set budget.max_evaluations (at most {left} left)", 403)
        if max_evaluations > left:
            raise QuotaExceeded(f"budget.max_evaluations {max_evaluations} is above what this "
                                f"project has left: {left} of {quotas.evaluations} evaluations",
                                403)


_locks: dict[int | None, threading.Lock] = {}
_locks_guard = threading.Lock()


@contextmanager
def admission(sessions: sessionmaker[Session], project_id: int | None) -> Iterator[None]:
    """Hold the project's admission lock: check a quota and commit the change inside it."""
    with _locks_guard:
        lock = _locks.setdefault(project_id, threading.Lock())
    with lock:
        engine = engine_of(sessions)
        if engine.dialect.name != "postgresql":
            yield  # SQLite: one API process writes (the in-process runner needs exactly one)
            return
        with engine.connect() as conn:
            key = {"ns": _LOCK_NAMESPACE, "pid": project_id or 0}
            conn.execute(text("SELECT pg_advisory_lock(:ns, :pid)"), key)
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:ns, :pid)"), key)
                conn.commit()
