"""Campaign services: scoped reads and conditional state changes."""
from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from api import quotas
from api.auth import Principal
from api.services import Conflict, NotFound, utc
from api.services.llm_access import check_mutator
from db.campaigns import FINAL, set_status, summary
from db.models import Campaign
from evaluators.base import get_task
from worker.campaigns import SpecError, create_campaign
from worker.spec import CampaignSpec

ADHOC = "adhoc"


def scope(q, principal: Principal):
    if principal.project_id is None:
        return q.where(Campaign.project_id.is_(None))
    return q.where(Campaign.project_id == principal.project_id)


def get_campaign(s: Session, principal: Principal, campaign_id: int) -> Campaign:
    c = s.scalar(scope(select(Campaign).where(Campaign.id == campaign_id), principal))
    if c is None:
        raise NotFound(f"campaign {campaign_id} not found")
    return c


def public(c: Campaign) -> dict[str, Any]:
    cfg = c.config or {}
    archive = {k: v for k, v in (cfg.get("archive") or {}).items() if k != "dims"}
    sm = summary(c)
    return {
        "id": c.id, "name": c.name, "task": c.task, "params": c.params or {}, "status": c.status,
        "seed": c.seed, "parallel": c.parallel, "islands": c.islands, "sandbox": cfg.get("sandbox"),
        "mutator": cfg.get("mutator") or {}, "archive": archive, "budget": cfg.get("budget") or {},
        "schedule": cfg.get("schedule"), "evaluations": c.evaluations,
        "max_evaluations": c.max_evaluations, "best_score": c.best_score, "seed_score": c.seed_score,
        "best_program_id": c.best_program_id, "cache_hits": c.cache_hits,
        "sandbox_runs": c.sandbox_runs, "failures": c.failures, "rejected": c.rejected,
        "tokens": c.tokens, "cost_usd": sm["cost_usd"], "eval_seconds": round(c.eval_seconds, 6),
        "elapsed_s": sm["elapsed_s"], "error": c.error or None, "created_at": utc(c.created_at),
        "started_at": utc(c.started_at), "finished_at": utc(c.finished_at),
    }


def check_params(spec: CampaignSpec) -> None:
    """Unknown task params are an error even for tasks whose Params model ignores extras."""
    try:
        task = get_task(spec.task)
    except KeyError as exc:
        raise SpecError(str(exc.args[0])) from None
    unknown = sorted(set(spec.params) - set(task.Params.model_fields))
    if unknown:
        known = ", ".join(task.Params.model_fields) or "none"
        raise SpecError(f"unknown params for task {task.name!r}: {', '.join(unknown)} (known: {known})")


def create(sessions: sessionmaker[Session], principal: Principal, spec: CampaignSpec, runner) -> int:
    check_mutator(sessions, principal, spec)  # LLM endpoints are the operator's (llm_access.py)
    check_params(spec)
    with quotas.admit_create(sessions, principal, spec):  # 429/403 beyond a quota
        try:
            c = create_campaign(sessions, spec, project_id=principal.project_id, status="queued")
        except SpecError:
            raise
        except (ValueError, TypeError) as exc:  # e.g. a seed program the archive cannot size
            raise SpecError(f"invalid campaign: {exc}") from None
    if runner.mode == "embedded":
        set_status(sessions, c.id, "running", only_from=("queued",))
    runner.start(c.id)
    return c.id


def list_campaigns(s: Session, principal: Principal, *, status: str | None, task: str | None,
                   limit: int, offset: int) -> tuple[list[Campaign], int]:
    q = scope(select(Campaign).where(Campaign.name != ADHOC), principal)
    if status:
        q = q.where(Campaign.status == status)
    if task:
        q = q.where(Campaign.task == task)
    total = s.scalar(select(func.count()).select_from(q.subquery()))
    rows = list(s.scalars(q.order_by(Campaign.id.desc()).limit(limit).offset(offset)))
    return rows, total


def _transition(sessions, principal, campaign_id: int, to: str, only_from: tuple[str, ...]) -> None:
    with sessions() as s:
        c = get_campaign(s, principal, campaign_id)
        current = c.status
    if not set_status(sessions, campaign_id, to, only_from=only_from):
        with sessions() as s:
            current = get_campaign(s, principal, campaign_id).status
        raise Conflict(f"cannot {_VERB[to]} a campaign that is {current} "
                       f"(only one that is {' or '.join(only_from)})")


_VERB = {"paused": "pause", "running": "resume", "cancelled": "cancel"}


def pause(sessions, principal, campaign_id: int, runner) -> None:
    _transition(sessions, principal, campaign_id, "paused", ("queued", "running"))
    runner.stop(campaign_id)


def resume(sessions, principal, campaign_id: int, runner) -> None:
    with sessions() as s:
        c = get_campaign(s, principal, campaign_id)
        if c.status in ("paused", "queued"):
            from db.campaigns import budget_left
            spent = budget_left(c)
            if spent:
                raise Conflict(f"cannot resume: its {spent} budget is spent")
    with quotas.admit_resume(sessions, principal, campaign_id):  # 429/403 beyond a quota
        _transition(sessions, principal, campaign_id, "running", ("paused", "queued"))
    runner.start(campaign_id)


def cancel(sessions, principal, campaign_id: int, runner) -> None:
    _transition(sessions, principal, campaign_id, "cancelled", ("queued", "running", "paused"))
    runner.stop(campaign_id)


def remove(sessions, principal, campaign_id: int, runner) -> bool:
    """Cancel, tell the runner to stop without waiting, and delete. True: deleted now. False:
    iterations of this process are still in flight; the runner deletes the (cancelled) row
    once they end, in the background (a row deleted earlier could see its id reused by SQLite
    while a late commit still carries it). A server thread is never held for a slow iteration."""
    with sessions() as s:
        c = get_campaign(s, principal, campaign_id)
        final = c.status in FINAL
    if not final:
        set_status(sessions, campaign_id, "cancelled", only_from=("queued", "running", "paused"))
    runner.stop(campaign_id)

    def delete_row() -> None:
        with sessions.begin() as s:
            s.execute(delete(Campaign).where(Campaign.id == campaign_id))

    later = getattr(runner, "delete_when_stopped", None)
    if later is not None and later(campaign_id, delete_row):
        return False
    delete_row()
    return True


def set_schedule(sessions, principal, campaign_id: int, schedule: dict[str, Any] | None) -> None:
    with sessions.begin() as s:
        c = get_campaign(s, principal, campaign_id)
        if c.name == ADHOC:
            raise Conflict("the bookkeeping campaign of ad-hoc evaluations cannot be scheduled")
        config = dict(c.config or {})
        config["schedule"] = schedule
        c.config = config  # a new dict, so the JSON column is written
