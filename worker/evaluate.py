"""Evaluate one program outside any campaign (`evoforge eval`, `POST /evaluations`).

Ad-hoc evaluations are stored like any other, in one bookkeeping campaign per task key and
project, so they share the evaluation cache with the project's campaigns of the same task key
(and no other project's, unless the operator opted in: worker/cache_policy.py).
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from evoforge.db.campaign_config import CampaignSpec
from evoforge.db.models import Campaign
from evoforge.db.store import CampaignStore
from evoforge.evaluators.base import task_key
from evoforge.evaluators.pipeline import CascadeEvaluator
from evoforge.evolution import hashing
from evoforge.evolution.program import syntax_check
from evoforge.evolution.step import Child, evaluate_code, functional_reuse
from evoforge.evolution.types import REJECTED, EvalResult, Mutation
from evoforge.worker.cache_policy import runner_id, shares_cache
from evoforge.worker import quotas
from evoforge.worker.campaign_service import Scope, create_campaign
from evoforge.worker.runtime import shared_sandbox

def adhoc_campaign(sessions: sessionmaker[Session], task: Any, params: Any,
                   project_id: int | None = None) -> int:
    """The project's bookkeeping campaign for this task key (`Campaign.adhoc`), made on first use."""
    key = task_key(task, params)
    with sessions() as s:
        cid = s.scalar(Scope(project_id).where(
            select(Campaign.id).where(Campaign.task_key == key, Campaign.adhoc.is_(True))))
    if cid is not None:
        return cid
    spec = CampaignSpec(task=task.name, params=params.model_dump(mode="json"), name="adhoc",
                        archive={"islands": 1})
    return create_campaign(sessions, spec, project_id=project_id, status="completed", adhoc=True).id


def evaluate_program(sessions: sessionmaker[Session], task: Any, params: Any, code: str, *,
                     sandbox: Any | None = None, seed: int = 0,
                     project_id: int | None = None) -> dict[str, Any]:
    cid = adhoc_campaign(sessions, task, params, project_id)
    sandbox = sandbox or shared_sandbox("fork")
    store = CampaignStore(sessions, cid, shared_cache=shares_cache(task), runner=runner_id(sandbox))
    with quotas.admission(sessions, project_id):  # the evaluation quota, checked and reserved
        with sessions() as s:                       # at once (worker/quotas.py)
            quotas.check_evaluation(s, project_id)
        with sessions.begin() as s:
            it = s.execute(update(Campaign).where(Campaign.id == cid)
                           .values(iterations_reserved=Campaign.iterations_reserved + 1)
                           .returning(Campaign.iterations_reserved)).scalar_one() - 1
    error, reuse = syntax_check(code, getattr(params, "language", "python")), False
    if error:
        result, cache, source = EvalResult(status=REJECTED, score=None,
                                           artifacts={"reason": error}), "miss", None
    else:
        evaluator = CascadeEvaluator(task, params, sandbox)
        result, cache, source = evaluate_code(code, store=store, evaluator=evaluator, seed=seed)
        reuse = functional_reuse(evaluator)
    code_hash = hashing.code_hash(code)
    committed = store.commit(Child(iteration=it, island=0, parent_id=None, generation=0, code=code,
                                   code_hash=code_hash, mutation=Mutation(code=code, kind="eval"),
                                   result=result, cache=cache, cache_source_id=source,
                                   run_hash=hashing.run_hash(code, seed), functional_reuse=reuse))
    result = committed.result  # as stored: cleaned (evolution/sanitize.py)
    return {
        "status": result.status, "score": result.score, "metrics": result.metrics,
        "features": result.features, "code_hash": code_hash,
        "functional_hash": result.functional_hash, "cache": cache,
        "reason": result.artifacts.get("reason"), "stderr": result.artifacts.get("stderr"),
        "duration_s": round(result.duration_s, 4), "program_id": committed.program_id,
        "task_key": store.task_key,
    }
