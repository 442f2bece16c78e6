"""/programs: one program (code, evaluation, diff against its parent) and its lineage.

The answers are encoded by the schema's own TypeAdapter straight to JSON bytes (validated on
the way, as `response_model` would): FastAPI's path validates into the model, dumps it to
Python objects, then encodes those again; under 50 clients that was a seventh of the CPU."""
from __future__ import annotations

from fastapi import APIRouter, Query, Response
from pydantic import TypeAdapter

from evoforge.api.errors import E401
from evoforge.api.read_threads import run_read
from evoforge.api.deps import Auth, ProgramId, State
from evoforge.api.schemas import ErrorPublic, LineagePublic, ProgramPublic
from evoforge.api.services import programs as svc

router = APIRouter(prefix="/programs", tags=["programs"], responses=E401)
E404 = {404: {"model": ErrorPublic, "description": "No such program (or not yours)."}}
_PROGRAM = TypeAdapter(ProgramPublic)
_LINEAGE = TypeAdapter(LineagePublic)


def _json(adapter: TypeAdapter, value: dict) -> bytes:
    return adapter.dump_json(adapter.validate_python(value))


# The reads themselves (blocking: on a read thread), shared with api/fastpath.py, which answers
# the plain forms of these requests without the framework.
def program_json(state, who, program_id: int) -> bytes:
    with state.read_engine.connect() as s:
        return _json(_PROGRAM, svc.program_detail(s, who, program_id))


def lineage_json(state, who, program_id: int, depth: int) -> bytes:
    with state.read_engine.connect() as s:
        return _json(_LINEAGE, svc.lineage(s, who, program_id, depth=depth))


@router.get("/{program_id}", response_model=ProgramPublic, responses=E404)
async def get_program(program_id: ProgramId, state: State, who: Auth):
    """Code, metrics, the evaluation (status, artifacts such as stderr), the parent and the
    unified diff against it, the prompt and the model's response, tokens and cost."""
    return Response(await run_read(program_json, state, who, program_id),
                    media_type="application/json")


DEFAULT_LINEAGE, MAX_LINEAGE = 100, 1000


@router.get("/{program_id}/lineage", response_model=LineagePublic, responses=E404)
async def get_lineage(program_id: ProgramId, state: State, who: Auth,
                      depth: int = Query(DEFAULT_LINEAGE, ge=1, le=MAX_LINEAGE,
                                         description="Most ancestors to return.")):
    return Response(await run_read(lineage_json, state, who, program_id, depth),
                    media_type="application/json")
