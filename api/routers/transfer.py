"""/campaigns/{id}/export, /campaigns/import, /campaigns/{id}/prune: move a project's campaign
between servers and drop what it no longer needs (docs/export.md)."""
from __future__ import annotations

import tempfile

import anyio
from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from evoforge.api.deps import Auth, CampaignId, State
from evoforge.api.errors import E401
from evoforge.api.schemas import CampaignPublic, ErrorPublic, PrunePublic
from evoforge.api.services import project_campaigns as campaigns_svc
from evoforge.api.services import transfer as svc

IMPORT_PATH = "/campaigns/import"
MEDIA_TYPE = "application/zstd"
router = APIRouter(prefix="/campaigns", tags=["campaigns"], responses=E401)
E404 = {404: {"model": ErrorPublic, "description": "No such campaign (or not yours)."}}
MAX_IMPORT_BYTES = svc.max_import_bytes()


@router.get("/{campaign_id}/export", response_class=StreamingResponse, responses={**E404, 200: {
    "content": {MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
    "description": "The export file: zstd-compressed JSON Lines (docs/export.md), streamed."}})
def export_campaign(campaign_id: CampaignId, state: State, who: Auth):
    """The campaign as a portable file: config, problem, programs with code, prompts, responses
    and lineage, evaluations, the archive. One snapshot, streamed while it is read."""
    svc.check_export(state.sessions, who, campaign_id)
    return StreamingResponse(
        svc.export_stream(state.sessions, who, campaign_id), media_type=MEDIA_TYPE,
        headers={"Content-Disposition": f'attachment; filename="{svc.filename(campaign_id)}"',
                 "Cache-Control": "no-store"})


@router.post("/import", status_code=status.HTTP_201_CREATED, response_model=CampaignPublic,
             responses={413: {"model": ErrorPublic, "description": "Body over the import limit."},
                        422: {"model": ErrorPublic, "description": "A file it refuses (the line "
                                                                   "and why); nothing was stored."}},
             openapi_extra={"requestBody": {"required": True, "content": {
                 t: {"schema": {"type": "string", "format": "binary"}}
                 for t in (MEDIA_TYPE, "application/octet-stream")}}})
async def import_campaign(request: Request, state: State, who: Auth, response: Response):
    """Restore an export file (the body, as application/zstd or application/octet-stream) as a
    new campaign of the caller's project (new ids, lineage intact). It arrives paused, or with
    its final status, and never starts by itself."""
    spool = tempfile.SpooledTemporaryFile(max_size=8 << 20)
    try:
        async for chunk in request.stream():  # the edge guard cuts it at MAX_IMPORT_BYTES (413)
            await anyio.to_thread.run_sync(spool.write, chunk)
        spool.seek(0)
        cid = await anyio.to_thread.run_sync(
            lambda: svc.import_file(state.sessions, who, spool, body_limit=MAX_IMPORT_BYTES))
    finally:
        spool.close()
    response.headers["Location"] = f"/api/v1/campaigns/{cid}"
    with state.sessions() as s:
        return campaigns_svc.public(campaigns_svc.get_campaign(s, who, cid))


@router.post("/{campaign_id}/prune", response_model=PrunePublic, responses={**E404, 409: {
    "model": ErrorPublic, "description": "The campaign is running or queued (pass force=true to "
                                         "prune it anyway)."}, 422: {
    "model": ErrorPublic, "description": "An unknown keep value or age."}})
def prune_campaign(campaign_id: CampaignId, state: State, who: Auth,
                   keep: str = Query("elites,lineage", max_length=100, pattern=r"^[a-z,]*$",
                                     description="elites (always kept), lineage (their ancestors)."),
                   older_than: str | None = Query(None, max_length=20,
                                                  description="Only programs older than this "
                                                              "(7d, 12h, 30m, 2w)."),
                   force: bool = Query(False, description="Prune a running or queued campaign "
                                                          "too (refused with 409 otherwise).")):
    """Drop the code, prompts and responses of the programs not kept; hashes, scores and
    evaluations stay, so the evaluation cache still answers for them. The database's space is
    not vacuumed by the server: `reclaim` says what to run."""
    return svc.prune(state.sessions, who, campaign_id, keep=keep, older_than=older_than,
                     force=force)
