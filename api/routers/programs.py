"""/programs: one program (code, evaluation, diff against its parent) and its lineage."""
from __future__ import annotations

from fastapi import APIRouter, Query

from evoforge.api.errors import E401
from evoforge.api.deps import Auth, ProgramId, State
from evoforge.api.schemas import ErrorPublic, LineagePublic, ProgramPublic
from evoforge.api.services import programs as svc

router = APIRouter(prefix="/programs", tags=["programs"], responses=E401)
E404 = {404: {"model": ErrorPublic, "description": "No such program (or not yours)."}}


@router.get("/{program_id}", response_model=ProgramPublic, responses=E404)
def get_program(program_id: ProgramId, state: State, who: Auth):
    """Code, metrics, the evaluation (status, artifacts such as stderr), the parent and the
    unified diff against it, the prompt and the model's response, tokens and cost."""
    with state.sessions() as s:
        return svc.program_detail(s, who, program_id)


@router.get("/{program_id}/lineage", response_model=LineagePublic, responses=E404)
def get_lineage(program_id: ProgramId, state: State, who: Auth,
                depth: int = Query(100, ge=1, le=1000, description="Most ancestors to return.")):
    with state.sessions() as s:
        return svc.lineage(s, who, program_id, depth=depth)
