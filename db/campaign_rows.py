"""Campaign rows: reserve work, check budgets, change status (the statements on `campaign`)."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Engine, bindparam, func, select, update
from sqlalchemy.orm import Session, object_session, sessionmaker

from evoforge.db.campaign_config import Budget, stored_budget
from evoforge.db.models import Campaign, Program
from evoforge.evolution.sanitize import Sanitizer
from evoforge.evolution.types import OK

ACTIVE = ("queued", "running")
FINAL = ("completed", "cancelled", "failed")
_C = Campaign.__table__
_CLAIMABLE = (_C.c.id == bindparam("cid"), _C.c.status == "running",
              (_C.c.max_evaluations.is_(None)) | (_C.c.iterations_reserved < _C.c.max_evaluations))
_RESERVE = (update(_C).where(*_CLAIMABLE)
            .values(iterations_reserved=_C.c.iterations_reserved + 1)
            .returning(_C.c.iterations_reserved))
# The distributed dispatcher's claim: the same, plus fewer than `parallel` iterations in flight
# and nothing after the seed until the seed has committed.
_RESERVE_SLOT = (update(_C).where(*_CLAIMABLE,
                                  _C.c.iterations_reserved - _C.c.evaluations < _C.c.parallel,
                                  (_C.c.evaluations > 0) | (_C.c.iterations_reserved == 0))
                 .values(iterations_reserved=_C.c.iterations_reserved + 1)
                 .returning(_C.c.iterations_reserved))


def engine_of(sessions: sessionmaker[Session]) -> Engine:
    """The engine a sessionmaker is bound to (hot paths run Core statements on it directly)."""
    bind = sessions.kw.get("bind")
    if isinstance(bind, Engine):
        return bind
    with sessions() as s:
        return s.get_bind()


def reserve_iteration(sessions: sessionmaker[Session] | Engine, campaign_id: int) -> int | None:
    """Atomically claim the next iteration number (0 is the seed), or None when the evaluation
    budget is spent or the campaign is not running. N workers can never overshoot the budget."""
    engine = sessions if isinstance(sessions, Engine) else engine_of(sessions)
    with engine.begin() as conn:
        row = conn.execute(_RESERVE, {"cid": campaign_id}).first()
        return None if row is None else row[0] - 1


def reserve_slot(sessions: sessionmaker[Session], campaign_id: int) -> int | None:
    """`reserve_iteration` for the distributed dispatcher: also keeps at most `parallel`
    iterations in flight and holds everything after the seed until the seed has committed.
    Token, cost and time budgets are checked first (the UPDATE covers the evaluation budget)."""
    with sessions() as s:
        c = s.get(Campaign, campaign_id)
        if c is None or c.status != "running" or spent_budget(c):
            return None
    with engine_of(sessions).begin() as conn:
        row = conn.execute(_RESERVE_SLOT, {"cid": campaign_id}).first()
        return None if row is None else row[0] - 1


def _budget(c: Campaign) -> Budget:
    return stored_budget(c.config)


def has_extra_budget(c: Campaign) -> bool:
    """True when the campaign has a token, cost, time or patience budget, which
    `reserve_iteration` alone does not check (it checks the status and the evaluation budget)."""
    budget = _budget(c)
    return bool(budget.max_tokens or budget.max_cost_usd or budget.max_seconds or budget.patience)


def spent_budget(c: Campaign, now: datetime | None = None) -> str | None:
    """The name of the first spent budget, or None while work may go on. The evaluation budget
    is the run's limit (the `max_evaluations` column: a schedule's slice end, or the total)."""
    budget = _budget(c)
    if c.max_evaluations is not None and c.evaluations >= c.max_evaluations:
        return "max_evaluations"
    if budget.max_tokens and c.tokens >= budget.max_tokens:
        return "max_tokens"
    if budget.max_cost_usd and c.cost_usd >= budget.max_cost_usd:
        return "max_cost_usd"
    if budget.max_seconds and c.started_at is not None:
        now = now or datetime.now(timezone.utc)
        if (now - utc(c.started_at)).total_seconds() >= budget.max_seconds:
            return "max_seconds"
    if (budget.patience and c.evaluations > budget.patience
            and (since_gain(c, budget.min_improvement) or 0) >= budget.patience):
        return "patience"
    return None


def since_gain(c: Campaign, min_improvement: float) -> int | None:
    """Early stopping (`budget.patience`): how many evaluations have passed since the best score
    last gained more than `min_improvement`, i.e. since the first program that came within
    `min_improvement` of the current best (the best program itself when it is 0); None before
    any valid program, and for a row outside a session (it reads the campaign's programs; every
    reservation and completion check passes a live row). Counted in iteration numbers (the seed
    is 0), so evaluations still in flight do not count."""
    s = object_session(c)
    if c.best_score is None or s is None:
        return None
    first = s.scalar(select(func.min(Program.iteration)).where(
        Program.campaign_id == c.id, Program.status == OK,
        Program.score >= c.best_score - min_improvement))
    return None if first is None else max(0, c.evaluations - 1 - first)


def set_status(sessions: sessionmaker[Session], campaign_id: int, status: str, *,
               only_from: tuple[str, ...] | None = None, error: str = "") -> bool:
    """Conditional status change; True when it happened."""
    values: dict[str, Any] = {"status": status}
    now = datetime.now(timezone.utc)
    if status == "running":
        values["finished_at"] = None
    if status in FINAL:
        values["finished_at"] = now
    if error:  # exception text may quote a candidate's or an LLM's output: cleaned like them
        values["error"] = Sanitizer().text(error, "error", max_chars=2000)
    with sessions.begin() as s:
        q = update(Campaign).where(Campaign.id == campaign_id)
        if only_from:
            q = q.where(Campaign.status.in_(only_from))
        ok = bool(s.execute(q.values(**values)).rowcount)
        if ok and status == "running":
            s.execute(update(Campaign).where(Campaign.id == campaign_id, Campaign.started_at.is_(None))
                      .values(started_at=now))
        return ok


def missing_iterations(s: Session, campaign_id: int, reserved: int) -> list[int]:
    """Reserved iteration numbers that never committed (a crash or Ctrl-C between the two)."""
    done = set(s.scalars(select(Program.iteration).where(Program.campaign_id == campaign_id)))
    return [i for i in range(reserved) if i not in done]


def utc(t: datetime | None) -> datetime | None:
    """SQLite hands datetimes back without a zone; they were stored in UTC."""
    return t if t is None or t.tzinfo else t.replace(tzinfo=timezone.utc)
