"""One-off evaluations (`POST /evaluations`), as `evoforge eval`."""
from __future__ import annotations

from typing import Any

from api.auth import Principal
from api.schemas import EvaluationCreate
from evaluators.base import get_task, parse_params
from evolution.sanitize import servable
from worker.campaigns import SpecError


def evaluate(sessions, principal: Principal, body: EvaluationCreate) -> dict[str, Any]:
    from worker.evaluate import evaluate_program
    from worker.runtime import shared_sandbox

    try:
        task = get_task(body.task)
    except KeyError as exc:
        raise SpecError(str(exc.args[0])) from None
    unknown = sorted(set(body.params) - set(task.Params.model_fields))
    if unknown:
        raise SpecError(f"unknown params for task {task.name!r}: {', '.join(unknown)}")
    try:
        params = parse_params(task, body.params)
    except Exception as exc:
        raise SpecError(f"invalid params for task {task.name!r}: {exc}") from None
    return servable(evaluate_program(sessions, task, params, body.code, sandbox=shared_sandbox("fork"),
                                     seed=body.seed, project_id=principal.project_id))
