"""/problems: upload a problem directory (zip, tar, tar.gz or JSON {path: text}), list, read
its files, delete. Its id is its content's sha256; the caller's project holds it."""
from __future__ import annotations

from typing import Annotated, Literal

import anyio
from fastapi import APIRouter, Path, Query, Request, Response, status
from fastapi.responses import JSONResponse

from evoforge.api.deps import Auth, Limit, Offset, State
from evoforge.api.errors import E401
from evoforge.api.schemas import (ErrorPublic, Page, ProblemFilePublic, ProblemFileTextPublic,
                                  ProblemPublic, ProblemSummaryPublic)
from evoforge.api.services import problems as svc
from evoforge.db.campaign_config import DIGEST
from evoforge.evaluators.openevolve.package import MAX_UPLOAD_BYTES
from evoforge.worker.leases import env_positive

UPLOAD_PATH = "/problems"
router = APIRouter(prefix=UPLOAD_PATH, tags=["problems"], responses=E401)
ProblemId = Annotated[str, Path(pattern=DIGEST, description="Problem id (sha256 of its content).")]
E404 = {404: {"model": ErrorPublic, "description": "No such problem (or not yours)."}}
EUPLOAD = {
    200: {"model": ProblemPublic, "description": "The same content was stored already: that problem."},
    413: {"model": ErrorPublic, "description": f"Body over {MAX_UPLOAD_BYTES >> 20} MiB."},
    415: {"model": ErrorPublic, "description": "A content type other than application/zip, "
                                               "application/x-tar, application/gzip, application/json."},
    422: {"model": ErrorPublic, "description": "Refused (a path, a link, a limit, no evaluator, a "
                                               "missing requirement); nothing was stored."}}


def _upload_limiter(request: Request) -> anyio.CapacityLimiter:
    """Uploads parsed at once, per process: one costs up to ~3 s of CPU and ~50 MB (body,
    inflated archive, files), so they queue here instead of taking every worker thread."""
    app_state = request.app.state
    limiter = getattr(app_state, "upload_limiter", None)
    if limiter is None:
        limiter = app_state.upload_limiter = anyio.CapacityLimiter(
            max(1, int(env_positive("EVOFORGE_UPLOAD_CONCURRENCY", 2))))
    return limiter


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ProblemPublic,
             responses=EUPLOAD, openapi_extra={"requestBody": {"required": True, "content": {
                 t: {"schema": {"type": "string", "format": "binary"}}
                 for t in ("application/zip", "application/x-tar", "application/gzip")} | {
                 "application/json": {"schema": {"type": "object",
                                                 "additionalProperties": {"type": "string"}}}}}})
async def upload_problem(request: Request, state: State, who: Auth, response: Response,
                         name: str | None = Query(None, min_length=1, max_length=200,
                                                  description="Its name (default: evoforge.toml's)."),
                         sandbox: Literal["fork", "subprocess", "docker"] = Query(
                             "fork", description="Check the requirements in this sandbox.")):
    """Store a problem directory: OpenEvolve's layout (`initial_program.py`, `evaluator.py`,
    optional `config.yaml`, the files the evaluator reads) or the native one (`evoforge.toml`).
    201 when new; 200 with the same id when the same content is stored already."""
    try:
        kind = svc.upload_kind(request.headers.get("content-type"))
    except svc.UnsupportedType as exc:
        return JSONResponse({"detail": str(exc)}, status_code=status.HTTP_415_UNSUPPORTED_MEDIA_TYPE)
    body = await request.body()  # the edge guard cuts it at MAX_UPLOAD_BYTES (413)
    if len(body) > MAX_UPLOAD_BYTES:
        return JSONResponse({"detail": f"request body too large: the limit is "
                                       f"{MAX_UPLOAD_BYTES >> 20} MiB"}, status_code=413)
    out, created = await anyio.to_thread.run_sync(
        lambda: svc.upload(state.sessions, who, body, kind, name=name, sandbox=sandbox),
        limiter=_upload_limiter(request))
    response.headers["Location"] = f"/api/v1/problems/{out['id']}"
    if not created:
        response.status_code = status.HTTP_200_OK
    return out


@router.get("", response_model=Page[ProblemSummaryPublic])
def list_problems(state: State, who: Auth, limit: Limit = 50, offset: Offset = 0):
    """The caller's problems, newest first."""
    return svc.listing(state.sessions, who, limit=limit, offset=offset)


@router.get("/{problem_id}", response_model=ProblemPublic, responses=E404)
def get_problem(problem_id: ProblemId, state: State, who: Auth):
    return svc.detail(state.sessions, who, problem_id)


@router.delete("/{problem_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response,
               responses={**E404, 409: {"model": ErrorPublic,
                                        "description": "A campaign runs it; delete those first."}})
def delete_problem(problem_id: ProblemId, state: State, who: Auth):
    svc.delete(state.sessions, who, problem_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{problem_id}/files", response_model=list[ProblemFilePublic], responses=E404)
def list_files(problem_id: ProblemId, state: State, who: Auth):
    return svc.files(state.sessions, who, problem_id)


@router.get("/{problem_id}/files/{path:path}", response_model=ProblemFileTextPublic,
            responses=E404)
def read_file(problem_id: ProblemId, path: Annotated[str, Path(max_length=1000)], state: State,
              who: Auth):
    """One file's text (JSON: path, text, bytes)."""
    return svc.read_file(state.sessions, who, problem_id, path)
