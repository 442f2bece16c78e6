"""Campaign service functions shared by the CLI, the REST API and the Celery workers."""
from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from db.models import Campaign
from evaluators.base import Task, get_task, parse_params, task_key
from evolution.archive import code_size_feature
from evolution.types import FeatureDim
from worker.spec import CampaignSpec


class SpecError(ValueError):
    """A campaign that cannot be created as asked (unknown task, bad params, broken seed)."""


def resolve(spec: CampaignSpec) -> tuple[Task, Any]:
    try:
        task = get_task(spec.task)
    except KeyError as exc:
        raise SpecError(str(exc.args[0])) from None
    try:
        params = parse_params(task, spec.params)
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
    behaviour features."""
    if spec.archive.code_size_range:
        lo, hi = spec.archive.code_size_range
    else:
        size = max(1.0, code_size_feature(seed_code))
        lo, hi = 0.5 * size, 3.0 * size
    dims = [FeatureDim("code_size", float(lo), float(hi), spec.archive.bins)]
    for d in task.feature_dims(params)[:1]:
        dims.append(FeatureDim(d.name, d.lo, d.hi, spec.archive.bins))
    return dims


def create_campaign(sessions: sessionmaker[Session], spec: CampaignSpec, *,
                    project_id: int | None = None, status: str = "queued") -> Campaign:
    task, params = resolve(spec)
    seed_code = spec.program if spec.program is not None else task.seed_program(params)
    if not seed_code.strip():
        raise SpecError("the seed program is empty")
    dims = archive_dims(spec, task, params, seed_code)
    config = spec.model_dump(mode="json", exclude={"program"})
    config["archive"]["dims"] = [d.__dict__ for d in dims]
    campaign = Campaign(
        project_id=project_id, name=spec.name or f"{task.name} #{spec.seed}", task=task.name,
        params=params.model_dump(mode="json"), task_key=task_key(task, params), status=status,
        seed=spec.seed, parallel=spec.parallel, islands=spec.archive.islands, config=config,
        seed_program=seed_code, max_evaluations=spec.budget.max_evaluations)
    with sessions.begin() as s:
        s.add(campaign)
    return campaign


def spec_of(c: Campaign) -> CampaignSpec:
    cfg = {k: v for k, v in (c.config or {}).items() if k in CampaignSpec.model_fields}
    cfg["archive"] = {k: v for k, v in cfg.get("archive", {}).items() if k != "dims"}
    return CampaignSpec.model_validate(cfg)


def mutation_stats(sessions: sessionmaker[Session], campaign_id: int) -> dict[str, Any]:
    """How the campaign's programs were made: edits applied vs rejected, by mutation kind."""
    from sqlalchemy import func, select

    from db.models import Program

    with sessions() as s:
        rows = s.execute(select(Program.kind, Program.code.is_not(None), func.count())
                         .where(Program.campaign_id == campaign_id)
                         .group_by(Program.kind, Program.code.is_not(None))).all()
    by_kind: dict[str, dict[str, int]] = {}
    for kind, has_code, n in rows:
        entry = by_kind.setdefault(kind, {"applied": 0, "rejected": 0})
        entry["applied" if has_code else "rejected"] += n
    mutations = {k: v for k, v in by_kind.items() if k not in ("seed", "eval")}
    return {"edits_applied": sum(v["applied"] for v in mutations.values()),
            "edits_rejected": sum(v["rejected"] for v in mutations.values()),
            "mutations": by_kind}
