"""The campaign service: create, list, best, resume and cancel, with one meaning for the CLI,
the REST API (api/services/project_campaigns.py adds quotas and its runner) and the scheduler.

Whose campaigns a call sees is a `Scope`: one project's (API keys), open mode's (no project),
or every campaign (the local operator's CLI). A campaign that is not in the scope is
`CampaignNotFound`, like one that does not exist.

Resume means one thing everywhere: go on with the same archive.
- `resume(..)` takes a paused or queued campaign back to running; refused when one of its
  budgets is spent.
- `resume(.., more_evaluations=N)` also gives it N more evaluations than it has done (the seed
  counts when it is not done yet): its budget total (`budget.max_evaluations`) and its run
  limit (the `max_evaluations` column) both become that, and a completed campaign runs again.
  For a scheduled campaign only the total is raised; its triggers open the slices.
Cancelled and failed campaigns stay as they are.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from evoforge.db.campaign_config import Budget, CampaignConfig, CampaignSpec
from evoforge.db.campaign_rows import set_status, since_gain, spent_budget, utc
from evoforge.db.errors import CampaignNotFound, campaign_not_found
from evoforge.db.models import Campaign, Program
from evoforge.evaluators.base import Task, UnknownParams, get_task, parse_params, task_key
from evoforge.evolution.archive import code_size_feature
from evoforge.evolution.types import FeatureDim

__all__ = ["CampaignNotFound", "SpecError", "TransitionRefused", "Scope", "create_campaign",
           "get_campaign", "list_campaigns", "best_program", "resume", "open_slice", "cancel",
           "describe"]


class SpecError(ValueError):
    """A campaign that cannot be created as asked (unknown task, bad params, broken seed)."""


class TransitionRefused(Exception):
    """The campaign is in a state the change cannot start from (or a budget is spent)."""


@dataclass(frozen=True)
class Scope:
    """Whose campaigns: `project_id`'s (None: open mode's), or all of them (`everything`)."""
    project_id: int | None = None
    everything: bool = False

    @classmethod
    def operator(cls) -> "Scope":
        return cls(everything=True)

    def where(self, q):
        if self.everything:
            return q
        if self.project_id is None:
            return q.where(Campaign.project_id.is_(None))
        return q.where(Campaign.project_id == self.project_id)


# -- create ------------------------------------------------------------------------------------
def resolve(spec: CampaignSpec) -> tuple[Task, Any]:
    return resolve_task(spec.task, spec.params)


def resolve_task(name: str, raw_params: dict[str, Any]) -> tuple[Task, Any]:
    """The task and its validated params (SpecError: unknown task, unknown or bad params)."""
    try:
        task = get_task(name)
    except KeyError as exc:
        raise SpecError(str(exc.args[0])) from None
    try:
        params = parse_params(task, raw_params)
    except UnknownParams as exc:
        raise SpecError(str(exc)) from None
    except Exception as exc:
        raise SpecError(f"invalid params for task {task.name!r}: {_without_input(exc)}") from None
    return task, params


def _without_input(exc: Exception) -> str:
    """A validation error without the input values pydantic quotes: params can hold whole
    files (an OpenEvolve problem's), and a refusal must not echo what it refused."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):
        return str(exc)
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'params'}: {e['msg']}"
                     for e in exc.errors(include_url=False, include_input=False))


def archive_dims(spec: CampaignSpec, task: Task, params: Any, seed_code: str) -> list[FeatureDim]:
    """Fixed bin edges, decided once at creation: code size around the seed's, then the task's
    first behaviour features: `task.archive_axes` of them (optional, 1 by default, at most 2;
    evaluators.base.Task), the others are stored with each evaluation, not binned."""
    if spec.archive.code_size_range:
        lo, hi = spec.archive.code_size_range
    else:
        size = max(1.0, code_size_feature(seed_code))
        lo, hi = 0.5 * size, 3.0 * size
    dims = [FeatureDim("code_size", float(lo), float(hi), spec.archive.bins)]
    axes = min(2, max(0, int(getattr(task, "archive_axes", 1))))
    for d in task.feature_dims(params)[:axes]:
        dims.append(FeatureDim(d.name, d.lo, d.hi, spec.archive.bins))
    return dims


def create_campaign(sessions: sessionmaker[Session], spec: CampaignSpec, *,
                    project_id: int | None = None, status: str = "queued",
                    adhoc: bool = False, problem_id: int | None = None) -> Campaign:
    """Store a campaign. A spec naming a stored problem (`spec.problem`) is resolved here, in
    `project_id`'s scope, unless the caller did it (`problem_id`: the row the resolved spec's
    params name, worker/problem_service.py `spec_for_campaign`)."""
    if spec.problem is not None:
        from evoforge.worker.problem_service import spec_for_campaign
        resolved = spec_for_campaign(sessions, Scope(project_id), spec)
        spec, problem_id = resolved.spec, resolved.problem_id
    task, params = resolve(spec)
    if getattr(params, "problem", None) is not None and problem_id is None:
        raise SpecError('a stored problem runs as {"problem": ID}, not through params.problem')
    seed_code = spec.program if spec.program is not None else task.seed_program(params)
    if not seed_code.strip():
        raise SpecError("the seed program is empty")
    config = CampaignConfig.create(spec, archive_dims(spec, task, params, seed_code))
    campaign = Campaign(
        project_id=project_id, name=spec.name or f"{task.name} #{spec.seed}", task=task.name,
        params=params.model_dump(mode="json"), task_key=task_key(task, params), status=status,
        seed=spec.seed, parallel=spec.parallel, islands=spec.archive.islands,
        config=config.document(), seed_program=seed_code, adhoc=adhoc,
        max_evaluations=spec.budget.max_evaluations, problem_id=problem_id)
    try:
        with sessions.begin() as s:
            s.add(campaign)
    except IntegrityError:
        if problem_id is None:
            raise
        raise SpecError("the problem was deleted meanwhile") from None
    return campaign


# -- read --------------------------------------------------------------------------------------
def get_campaign(s: Session, scope: Scope, campaign_id: int) -> Campaign:
    c = s.scalar(scope.where(select(Campaign).where(Campaign.id == campaign_id)))
    if c is None:
        raise campaign_not_found(campaign_id)
    return c


def list_campaigns(s: Session, scope: Scope, *, status: str | None = None, task: str | None = None,
                   limit: int = 50, offset: int = 0) -> tuple[list[Campaign], int]:
    """The scope's campaigns, newest first, and how many match; never the ad-hoc ones."""
    q = scope.where(select(Campaign).where(Campaign.adhoc.is_(False)))
    if status:
        q = q.where(Campaign.status == status)
    if task:
        q = q.where(Campaign.task == task)
    total = s.scalar(select(func.count()).select_from(q.subquery()))
    return list(s.scalars(q.order_by(Campaign.id.desc()).limit(limit).offset(offset))), total


def best_program(s: Session, scope: Scope, campaign_id: int) -> tuple[Campaign, Program]:
    """The campaign and its best program; LookupError when it has no valid program yet."""
    c = get_campaign(s, scope, campaign_id)
    p = s.get(Program, c.best_program_id) if c.best_program_id is not None else None
    if p is None:
        raise LookupError(f"campaign {campaign_id} has no valid program yet")
    return c, p


# -- change ------------------------------------------------------------------------------------
RESUMABLE = ("paused", "queued")


def resume(sessions: sessionmaker[Session], scope: Scope, campaign_id: int, *,
           more_evaluations: int | None = None) -> None:
    """See the module doc. Raises CampaignNotFound or TransitionRefused."""
    with sessions.begin() as s:
        c = s.scalar(scope.where(select(Campaign).where(Campaign.id == campaign_id))
                     .with_for_update())
        if c is None:
            raise campaign_not_found(campaign_id)
        allowed = RESUMABLE + (("completed", "running") if more_evaluations is not None else ())
        if c.status not in allowed:
            raise TransitionRefused(f"cannot resume a campaign that is {c.status} "
                                    f"(only one that is {' or '.join(allowed)})")
        if more_evaluations is None:
            spent = spent_budget(c)
            if spent:
                raise TransitionRefused(f"cannot resume: its {spent} budget is spent")
        else:
            _raise_budget(c, budget_after(c, more_evaluations))
        status = c.status
    if status != "running":
        set_status(sessions, campaign_id, "running", only_from=(status,))


def budget_after(c: Campaign, more_evaluations: int) -> int:
    """The evaluation budget of a resume with `more_evaluations` (the seed's, when not done).
    SpecError past the largest budget a campaign may have (it would not load again)."""
    total = c.evaluations + more_evaluations + (1 if c.evaluations == 0 else 0)
    try:
        Budget(max_evaluations=total)
    except ValueError:
        raise SpecError(f"cannot resume with {more_evaluations} more evaluations: the budget would "
                        f"be {total}, beyond the largest a campaign may have") from None
    return total


def _raise_budget(c: Campaign, total: int) -> None:
    config = CampaignConfig.load(c)
    more: dict[str, Any] = {"max_evaluations": total}
    if config.budget.patience:  # early stopping counts again from here, not from the last gain
        stall = since_gain(c, config.budget.min_improvement) or 0
        more["patience"] = min(10_000_000, config.budget.patience + stall)
    budget = config.budget.model_copy(update=more)
    c.config = config.model_copy(update={"budget": budget}).document()  # a new dict: written
    if config.schedule is None:
        c.max_evaluations = total


def open_slice(sessions: sessionmaker[Session], campaign_id: int) -> bool:
    """The scheduler's resume (worker/schedule.py): a trigger has set the run limit to the end of
    the slice it opened; queued, completed (the last slice done) or running -> running."""
    return set_status(sessions, campaign_id, "running", only_from=("queued", "completed", "running"))


def pause(sessions: sessionmaker[Session], scope: Scope, campaign_id: int) -> None:
    """queued or running -> paused."""
    transition(sessions, scope, campaign_id, "paused", ("queued", "running"))


def cancel(sessions: sessionmaker[Session], scope: Scope, campaign_id: int) -> None:
    """queued, running or paused -> cancelled."""
    transition(sessions, scope, campaign_id, "cancelled", ("queued", "running", "paused"))


def transition(sessions: sessionmaker[Session], scope: Scope, campaign_id: int, to: str,
               only_from: tuple[str, ...]) -> None:
    with sessions() as s:
        get_campaign(s, scope, campaign_id)
    if not set_status(sessions, campaign_id, to, only_from=only_from):
        with sessions() as s:
            current = get_campaign(s, scope, campaign_id).status
        raise TransitionRefused(f"cannot {_VERB.get(to, 'change')} a campaign that is {current} "
                                f"(only one that is {' or '.join(only_from)})")


_VERB = {"paused": "pause", "cancelled": "cancel"}


# -- describe ----------------------------------------------------------------------------------
def describe(c: Campaign) -> dict[str, Any]:
    """The campaign as the API, the CLI (`--json`) and the dashboard show it."""
    config = CampaignConfig.load(c)
    elapsed = None
    if c.started_at is not None:
        from datetime import datetime, timezone
        end = utc(c.finished_at) or datetime.now(timezone.utc)
        elapsed = max(0.0, (end - utc(c.started_at)).total_seconds())
    return {
        "id": c.id, "campaign_id": c.id, "name": c.name, "task": c.task, "params": c.params or {},
        # the stored problem's id: its digest, which the params of its campaigns carry
        "problem": (c.params or {}).get("problem") if c.problem_id is not None else None,
        "status": c.status, "seed": c.seed, "parallel": c.parallel, "islands": c.islands,
        "sandbox": config.sandbox, "mutator": config.mutator.model_dump(mode="json"),
        "archive": config.archive.model_dump(mode="json", exclude={"dims"}),
        "budget": config.budget.model_dump(mode="json"),
        "schedule": None if config.schedule is None else config.schedule.model_dump(mode="json"),
        "evaluations": c.evaluations, "max_evaluations": c.max_evaluations,
        "best_score": c.best_score, "seed_score": c.seed_score, "best_program_id": c.best_program_id,
        "cache_hits": c.cache_hits, "evaluations_saved": c.cache_hits, "sandbox_runs": c.sandbox_runs,
        "failures": c.failures, "rejected": c.rejected, "novelty_skips": c.novelty_skips,
        "tokens": c.tokens, "cost_usd": round(c.cost_usd, 6), "eval_seconds": round(c.eval_seconds, 6),
        "elapsed_s": None if elapsed is None else round(elapsed, 3), "error": c.error or None,
        # which budget ended a completed campaign (max_evaluations, patience, ...)
        "stop_reason": spent_budget(c) if c.status == "completed" else None,
        "created_at": _iso(c.created_at), "started_at": _iso(c.started_at),
        "finished_at": _iso(c.finished_at),
    }


def _iso(t) -> str | None:
    return utc(t).isoformat() if t is not None else None


def mutation_stats(sessions: sessionmaker[Session], campaign_id: int) -> dict[str, Any]:
    """How the campaign's programs were made: edits applied vs rejected, by mutation kind."""
    with sessions() as s:
        rows = s.execute(select(Program.kind, Program.code_hash.is_not(None), func.count())
                         .where(Program.campaign_id == campaign_id)
                         .group_by(Program.kind, Program.code_hash.is_not(None))).all()
    by_kind: dict[str, dict[str, int]] = {}
    for kind, has_code, n in rows:
        entry = by_kind.setdefault(kind, {"applied": 0, "rejected": 0})
        entry["applied" if has_code else "rejected"] += n
    mutations = {k: v for k, v in by_kind.items() if k not in ("seed", "eval")}
    return {"edits_applied": sum(v["applied"] for v in mutations.values()),
            "edits_rejected": sum(v["rejected"] for v in mutations.values()),
            "mutations": by_kind}
