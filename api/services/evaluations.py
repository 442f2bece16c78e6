"""One-off evaluations (`POST /evaluations`), as `evoforge eval`."""
from __future__ import annotations

from typing import Any

from evoforge.api.auth import Principal
from evoforge.api.quotas import refused
from evoforge.api.schemas import EvaluationCreate
from evoforge.evolution.sanitize import servable
from evoforge.worker.campaign_service import resolve_task


def evaluate(sessions, principal: Principal, body: EvaluationCreate) -> dict[str, Any]:
    from evoforge.worker.evaluate import evaluate_program
    from evoforge.worker.runtime import shared_sandbox

    from evoforge.worker.quotas import QuotaExceeded

    task, params = resolve_task(body.task, body.params)  # SpecError: unknown task or params
    try:
        return servable(evaluate_program(sessions, task, params, body.code,
                                         sandbox=shared_sandbox("fork"), seed=body.seed,
                                         project_id=principal.project_id))
    except QuotaExceeded as exc:  # the project's evaluation quota (worker/quotas.py)
        raise refused(exc) from None
