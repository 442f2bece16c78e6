"""/tasks and /evaluations: the registered problems, and one-off evaluation of a program."""
from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter

from evoforge.api.errors import E401, E413
from evoforge.api.deps import Auth, State
from evoforge.api.schemas import ErrorPublic, EvaluationCreate, EvaluationResultPublic, TaskPublic
from evoforge.api.services import evaluations as svc
from evoforge.evaluators.base import all_tasks

router = APIRouter(tags=["tasks"], responses=E401)


@router.get("/tasks", response_model=list[TaskPublic])
def list_tasks(who: Auth):
    """Each task with the JSON schema of its params (for forms) and their defaults."""
    return [{"name": name, "version": t.version, "entrypoint": t.entrypoint,
             "params_schema": t.Params.model_json_schema(),
             "defaults": t.Params().model_dump(mode="json"), "resources": asdict(t.resources)}
            for name, t in all_tasks().items()]


@router.post("/evaluations", response_model=EvaluationResultPublic,
             responses={**E413, 403: {"model": ErrorPublic, "description": (
                 "The project has used the evaluations the operator allows it.")},
                 422: {"model": ErrorPublic, "description": (
                     "Unknown task, bad params, or a body outside the schema (nothing is coerced: "
                     "a `seed` of `true` or `\"5\"` is refused).")}})
def create_evaluation(body: EvaluationCreate, state: State, who: Auth):
    """Evaluate one program in the sandbox, as `evoforge eval --json` (with the evaluation
    cache). A program that fails is a 200 with its status (`error`, `invalid`, `rejected`, ...)."""
    return svc.evaluate(state.sessions, who, body)
