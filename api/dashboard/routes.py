"""The dashboard: five HTML pages, their static assets, and read-only data endpoints.

Pages and assets need no key (they contain no data). The data endpoints under /dashboard-api use
the API's own `principal` dependency, so they are scoped to the caller's project like /api/v1.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse, Response

from evoforge.api.dashboard import pages
from evoforge.api.dashboard.highlight import stylesheet
from evoforge.api.dashboard.queries import campaign_overview, problem_file, problem_page, program_page
from evoforge.api.deps import Auth, CampaignId, ProgramId, State
from evoforge.api.schemas import MAX_ID
from evoforge.db.campaign_config import DIGEST as DIGEST_PATTERN

router = APIRouter(include_in_schema=False)
NO_STORE = {"Cache-Control": "no-store"}
DIGEST = re.compile(DIGEST_PATTERN.strip("^$"))   # a problem's id, for fullmatch ($ allows a "\n")
ProblemId = Annotated[str, PathParam(pattern=DIGEST_PATTERN, description="Problem id.")]
VENDOR_CACHE = {"Cache-Control": "public, max-age=86400"}


def _page(html: str, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(html, status_code=status_code, headers={"Cache-Control": "no-cache"})


def _id(text: str) -> int | None:
    return int(text) if text.isdigit() and 1 <= int(text) <= MAX_ID else None


@router.get("/", response_class=HTMLResponse)
def campaigns_html():
    return _page(pages.campaigns_page())


@router.get("/campaigns/{campaign_id}", response_class=HTMLResponse)
def campaign_html(campaign_id: str):
    cid = _id(campaign_id)
    if cid is None:
        return _page(pages.not_found_page(f"{campaign_id!r} is not a campaign id."), 404)
    return _page(pages.campaign_page(cid))


@router.get("/programs/{program_id}", response_class=HTMLResponse)
def program_html(program_id: str):
    pid = _id(program_id)
    if pid is None:
        return _page(pages.not_found_page(f"{program_id!r} is not a program id."), 404)
    return _page(pages.program_page(pid))


@router.get("/problems", response_class=HTMLResponse)
def problems_html():
    return _page(pages.problems_page())


@router.get("/problems/{problem_id}", response_class=HTMLResponse)
def problem_html(problem_id: str):
    if not DIGEST.fullmatch(problem_id):
        return _page(pages.not_found_page(f"{problem_id[:80]!r} is not a problem id (64 hex digits).",
                                          nav="problems"), 404)
    return _page(pages.problem_page(problem_id))


def plotly_path() -> Path | None:
    """plotly.min.js as installed with the plotly package (never copied into the repository)."""
    try:
        import plotly
    except ImportError:
        return None
    path = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"
    return path if path.is_file() else None


@router.get("/dashboard/vendor/plotly.min.js")
def plotly_js():
    path = plotly_path()
    if path is None:
        raise HTTPException(404, "plotly is not installed")
    return FileResponse(path, media_type="text/javascript", headers=VENDOR_CACHE)


@router.get("/favicon.ico")
def favicon():
    return FileResponse(pages.STATIC_DIR / "favicon.svg", media_type="image/svg+xml", headers=VENDOR_CACHE)


@router.get("/dashboard/pygments.css")
def pygments_css():
    return Response(stylesheet(), media_type="text/css", headers=VENDOR_CACHE)


@router.get("/dashboard-api/campaigns/{campaign_id}/overview")
def overview(campaign_id: CampaignId, state: State, who: Auth):
    """Campaign, elites, best-score history, island stats, statuses, tokens by model."""
    with state.sessions() as s:
        return Response(_json(campaign_overview(s, who, campaign_id)), media_type="application/json",
                        headers=NO_STORE)


@router.get("/dashboard-api/programs/{program_id}")
def program(program_id: ProgramId, state: State, who: Auth,
            depth: int = Query(50, ge=1, le=1000)):
    """The program as GET /api/v1/programs/{id}, its lineage, and highlighted code and diff."""
    with state.sessions() as s:
        return Response(_json(program_page(s, who, program_id, depth=depth)),
                        media_type="application/json", headers=NO_STORE)


@router.get("/dashboard-api/problems/{problem_id}")
def problem(problem_id: ProblemId, state: State, who: Auth):
    """The problem as GET /api/v1/problems/{id}, and its config highlighted as YAML and JSON."""
    return Response(_json(problem_page(state.sessions, who, problem_id)), media_type="application/json",
                    headers=NO_STORE)


@router.get("/dashboard-api/problems/{problem_id}/files/{path:path}")
def problem_file_html(problem_id: ProblemId, path: Annotated[str, PathParam(max_length=1000)],
                      state: State, who: Auth):
    """One file of the problem, highlighted (path, bytes, lines, language, html)."""
    return Response(_json(problem_file(state.sessions, who, problem_id, path)),
                    media_type="application/json", headers=NO_STORE)


def _json(data) -> bytes:
    import json
    from datetime import datetime

    def default(o):
        if isinstance(o, datetime):
            return o.isoformat().replace("+00:00", "Z")
        return str(o)

    try:
        return json.dumps(data, default=default, allow_nan=False, separators=(",", ":")).encode()
    except ValueError:  # a NaN/Infinity somewhere in metrics: JSON has no such numbers
        return json.dumps(_finite(data), default=default, separators=(",", ":")).encode()


def _finite(value):
    import math

    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
