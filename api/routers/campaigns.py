"""/campaigns: create, list, read, pause/resume/cancel, delete, schedule, elites, programs, events."""
from __future__ import annotations

import logging
import os
from typing import Literal

import anyio

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import TypeAdapter

from evoforge.api import events
from evoforge.api.caches import body_key
from evoforge.api.errors import E401, E413
from evoforge.api.fastpath import VERSION_SCOPE_KEY
from evoforge.api.deps import Auth, CampaignId, Limit, Offset, State
from evoforge.api.schemas import (CampaignCreate, CampaignPublic, CampaignStatus, ElitesPublic, ErrorPublic,
                                  Page, ProgramPage, ScheduleUpdate)
from evoforge.api.services import NotFound
from evoforge.api.services import project_campaigns as svc
from evoforge.api.services import listing
from evoforge.api.services import programs as programs_svc
from evoforge.evolution.types import EVAL_STATUSES

log = logging.getLogger("evoforge.api")

router = APIRouter(prefix="/campaigns", tags=["campaigns"], responses=E401)
E404 = {404: {"model": ErrorPublic, "description": "No such campaign (or not yours)."}}
E409 = {409: {"model": ErrorPublic, "description": "Impossible in the campaign's current state."}}
EQUOTA = {403: {"model": ErrorPublic, "description": "Beyond a quota of the operator's (parallel, "
                                                    "evaluations); nothing was changed."},
          429: {"model": ErrorPublic, "description": "The project has as many queued or running "
                                                    "campaigns as the operator allows."}}


def _read(state, who, campaign_id: int) -> dict:
    """The campaign as the caller's project sees it, read from the database (never cached: any
    process, a worker or the CLI may have just changed it)."""
    with state.sessions() as s:
        return svc.public(svc.get_campaign(s, who, campaign_id))


# /elites and /programs answer from per-process caches of ready-made JSON bytes (api/caches.py),
# keyed by the campaign's version, which every request reads from the database (one query by
# primary key, shared by the requests that arrive while it runs): a hit costs that query and no
# re-validation, and is exact across API processes. The bytes are made exactly as FastAPI makes
# them for the route's response_model (TypeAdapter validate_python + dump_json), so the answers
# are byte-for-byte the route's.
_ELITES_JSON = TypeAdapter(ElitesPublic)
_PAGE_JSON = TypeAdapter(ProgramPage)


def _json(body: bytes) -> Response:
    return Response(content=body, media_type="application/json")


async def read_version(state, who, campaign_id: int) -> tuple | None:
    """The campaign's version as the caller's project sees it (None: not found or not theirs),
    read by a query that started after this call (`ApiCaches.fresh`)."""
    def read():
        with state.read_engine.connect() as conn:
            return programs_svc.campaign_version(conn, who, campaign_id)

    reader = _async_reader(state)
    if reader is not None:
        async def read_async():
            try:
                return await reader.read(campaign_id, who.project_id)
            except Exception as exc:   # the next read opens a new connection; this one, pooled
                log.warning("version read on the event loop failed (%s); read on the pool", exc)
                return await anyio.to_thread.run_sync(read)
        return await state.caches.fresh(("version", who.project_id, campaign_id), read_async)
    return await state.caches.fresh(("version", who.project_id, campaign_id), read,
                                    inline=_inline_reads(state))


def _version_read_mode(state) -> str:
    """Where version reads run: "loop" (PostgreSQL through psycopg: on the event loop,
    api/version_reader.py), "inline" (SQLite: a local file, microseconds) or "thread" (another
    network database: a round trip must not hold the loop); $EVOFORGE_VERSION_READ = inline or
    thread overrides it. Decided once per process."""
    mode = state.caches.version_read_mode
    if mode is None:
        engine = state.sessions.kw["bind"]
        mode = os.environ.get("EVOFORGE_VERSION_READ", "")
        if mode not in ("inline", "thread"):
            if engine.dialect.name == "sqlite":
                mode = "inline"
            elif engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg":
                mode = "loop"
            else:
                mode = "thread"
        state.caches.version_read_mode = mode
    return mode


def _async_reader(state):
    """The process's event-loop reader when versions are read on the loop, else None."""
    if _version_read_mode(state) != "loop":
        return None
    if state.caches.async_reader is None:
        from evoforge.api.version_reader import AsyncVersionReader

        state.caches.async_reader = AsyncVersionReader(state.sessions.kw["bind"],
                                                       programs_svc.VERSION)
    return state.caches.async_reader


def _inline_reads(state) -> bool:
    """Read versions on the event loop itself, blocking (`ApiCaches.fresh`): SQLite's default."""
    return _version_read_mode(state) == "inline"


async def _current_version(request: Request, state, who, campaign_id: int) -> tuple:
    """The version the fast path read for this request (api/fastpath.py), else a fresh one."""
    seen = request.scope.get(VERSION_SCOPE_KEY)
    if seen is not None and seen[:2] == (who.project_id, campaign_id):
        version = seen[2]
    else:
        version = await read_version(state, who, campaign_id)
    if version is None:
        raise NotFound(f"campaign {campaign_id} not found")
    return version


@router.post("", status_code=status.HTTP_201_CREATED, response_model=CampaignPublic,
             responses={422: {"model": ErrorPublic, "description": "Invalid campaign."}, **EQUOTA, **E413})
def create_campaign(body: CampaignCreate, state: State, who: Auth, response: Response):
    """Create a campaign. Without a broker it starts running in this process at once; with one
    it is queued for the Celery dispatcher."""
    cid = svc.create(state.sessions, who, body, state.runner)
    response.headers["Location"] = f"/api/v1/campaigns/{cid}"
    return _read(state, who, cid)


@router.get("", response_model=Page[CampaignPublic])
def list_campaigns(state: State, who: Auth, limit: Limit = 50, offset: Offset = 0,
                   status: CampaignStatus | None = None,
                   task: str | None = Query(None, min_length=1, max_length=100,
                                             pattern=r"^[A-Za-z0-9_.:-]+$")):
    """Campaigns of the caller's project, newest first."""
    with state.sessions() as s:
        rows, total = svc.list_campaigns(s, who, status=status, task=task, limit=limit, offset=offset)
        return {"items": [svc.public(c) for c in rows], "total": total, "limit": limit, "offset": offset}


@router.get("/{campaign_id}", response_model=CampaignPublic, responses=E404)
def get_campaign(campaign_id: CampaignId, state: State, who: Auth):
    return _read(state, who, campaign_id)


@router.post("/{campaign_id}/pause", response_model=CampaignPublic, responses={**E404, **E409})
def pause_campaign(campaign_id: CampaignId, state: State, who: Auth):
    """Stop claiming new iterations (in-flight ones finish). Only a queued or running campaign."""
    svc.pause(state.sessions, who, campaign_id, state.runner)
    return _read(state, who, campaign_id)


@router.post("/{campaign_id}/resume", response_model=CampaignPublic,
             responses={**E404, **E409, **EQUOTA})
def resume_campaign(campaign_id: CampaignId, state: State, who: Auth,
                    evaluations: int | None = Query(
                        None, ge=0, le=10_000_000,
                        description="More evaluations: the budget becomes this many past those "
                                    "done, and a completed campaign runs again.")):
    """Continue a paused (or queued) campaign on the same archive; with `evaluations`, also a
    completed one, its budget raised (the meaning `evoforge run --resume` has)."""
    svc.resume(state.sessions, who, campaign_id, state.runner, more_evaluations=evaluations)
    return _read(state, who, campaign_id)


@router.post("/{campaign_id}/cancel", response_model=CampaignPublic, responses={**E404, **E409})
def cancel_campaign(campaign_id: CampaignId, state: State, who: Auth):
    """End a queued, running or paused campaign for good; what it found is kept."""
    svc.cancel(state.sessions, who, campaign_id, state.runner)
    return _read(state, who, campaign_id)


@router.delete("/{campaign_id}", status_code=status.HTTP_204_NO_CONTENT, responses={**E404, 202: {
    "model": ErrorPublic, "description": "Cancelled; deleted once its in-flight iterations end."}},
               response_class=Response)
def delete_campaign(campaign_id: CampaignId, state: State, who: Auth):
    """Delete a campaign with its programs and archive. A campaign with iterations in flight in
    this process is cancelled at once and deleted when they end (202); never waits for them."""
    done = svc.remove(state.sessions, who, campaign_id, state.runner)
    if not done:
        return JSONResponse({"detail": f"campaign {campaign_id} is cancelled and will be deleted "
                                       "once its in-flight iterations end"},
                            status_code=status.HTTP_202_ACCEPTED)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{campaign_id}/schedule", response_model=ScheduleUpdate | None, responses=E404)
def get_schedule(campaign_id: CampaignId, state: State, who: Auth):
    return _read(state, who, campaign_id)["schedule"]


@router.put("/{campaign_id}/schedule", response_model=CampaignPublic, responses={**E404, **E409, **E413})
def put_schedule(campaign_id: CampaignId, body: ScheduleUpdate, state: State, who: Auth):
    """Set the cron schedule (UTC) and the evaluations each triggered run adds. The scheduler
    process (Celery beat) reads it from the database."""
    svc.set_schedule(state.sessions, who, campaign_id, body.model_dump(mode="json"))
    return _read(state, who, campaign_id)


@router.delete("/{campaign_id}/schedule", response_model=CampaignPublic, responses={**E404, **E409})
def delete_schedule(campaign_id: CampaignId, state: State, who: Auth):
    svc.set_schedule(state.sessions, who, campaign_id, None)
    return _read(state, who, campaign_id)


@router.get("/{campaign_id}/elites", response_model=ElitesPublic, responses=E404)
async def get_elites(campaign_id: CampaignId, request: Request, state: State, who: Auth):
    """The MAP-Elites archive: each island's occupied cells with score and program id."""
    caches, raw_query = state.caches, request.scope.get("query_string", b"")
    version = await _current_version(request, state, who, campaign_id)
    body = caches.body(body_key("elites", version, raw_query))
    if body is None:
        def build():
            with state.reads() as s:
                v, out = programs_svc.elites_versioned(s, who, campaign_id)
            return v, _ELITES_JSON.dump_json(_ELITES_JSON.validate_python(out))
        version, body = await caches.single_flight(body_key("elites", version, raw_query), build)
        caches.remember_body(body_key("elites", version, raw_query), body)
    return _json(body)


SORTS = ("score", "-score", "iteration", "-iteration")
MAX_ISLAND, MAX_CURSOR = 63, 64


@router.get("/{campaign_id}/programs", response_model=ProgramPage, responses=E404)
async def list_programs(campaign_id: CampaignId, request: Request, state: State, who: Auth,
                  limit: Limit = 50,
                  offset: Offset = 0,
                  sort: Literal[SORTS] = Query(  # type: ignore[valid-type]
                      "score", description="score: best first; iteration: oldest first; '-' reverses."),
                  status: Literal[EVAL_STATUSES] | None = None,  # type: ignore[valid-type]
                  island: int | None = Query(None, ge=0, le=MAX_ISLAND),
                  after: str | None = Query(
                      None, max_length=MAX_CURSOR, pattern=listing.CURSOR_PATTERN,
                      description="The `next_after` of the previous page: keyset pagination, "
                                  "as fast deep in the list as on its first page (`offset` "
                                  "costs the rows it skips). Not with `offset`.")):
    """A page of the campaign's programs, sorted and filtered; `next_after` continues it."""
    version = await _current_version(request, state, who, campaign_id)
    try:
        body = await programs_page(state, who, campaign_id, version,
                                   request.scope.get("query_string", b""),
                                   dict(sort=sort, status=status, island=island, limit=limit,
                                        offset=offset, after=after))
    except listing.BadCursor as exc:
        raise HTTPException(422, str(exc)) from None  # `status` is a filter here
    return _json(body)


async def programs_page(state, who, campaign_id: int, version: tuple, raw_query: bytes,
                        query: dict) -> bytes:
    """A listing page's JSON at `version` (read for this request): the cached bytes of this very
    query string, else read (once for concurrent callers) and cached. `query`: the validated
    parameters (the route's, or the ones api/fastpath.py parsed from their plain form)."""
    caches = state.caches
    body = caches.body(body_key("programs", version, raw_query))
    if body is None:
        def build():
            with state.read_engine.connect() as s:
                v, items, total, next_after = programs_svc.list_programs_versioned(
                    s, who, campaign_id, version=version, **query)
            page = {"items": items, "total": total, "limit": query["limit"],
                    "offset": query["offset"], "next_after": next_after}
            return v, _PAGE_JSON.dump_json(_PAGE_JSON.validate_python(page))
        version, body = await caches.single_flight(body_key("programs", version, raw_query), build)
        caches.remember_body(body_key("programs", version, raw_query), body)
    return body


@router.get("/{campaign_id}/events", responses={**E404, 200: {
    "content": {"text/event-stream": {"schema": {"type": "string"}}},
    "description": "Server-sent events: `progress` (the campaign), `end`, and heartbeat comments."},
    429: {"model": ErrorPublic, "description": "Too many event streams open (per project or client)."}},
    response_class=StreamingResponse)
def campaign_events(campaign_id: CampaignId, request: Request, state: State, who: Auth,
                    max_seconds: float | None = Query(None, gt=0, le=86_400,
                                                      description="End the stream after this long.")):
    """Progress as server-sent events. Streams are capped per project (per client address in
    open mode) and end when the campaign ends, is deleted, stays idle, or the client leaves."""
    _read(state, who, campaign_id)  # 404 before the stream starts
    owner = (f"project:{who.project_id}" if who.project_id is not None
             else f"client:{request.client.host if request.client else '?'}")
    slots = events.slots_of(request.app)
    refused = slots.acquire(owner)
    if refused:
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, detail=refused,
                            headers={"Retry-After": "5"})

    def load():
        try:
            return _read(state, who, campaign_id)
        except NotFound:
            return None

    stream = events.progress_stream(request, load, poll_s=state.poll_s, heartbeat_s=state.heartbeat_s,
                                    max_seconds=max_seconds, idle_s=events.idle_timeout_s())
    return events.SlotStreamingResponse(
        stream, release=lambda: slots.release(owner), media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
