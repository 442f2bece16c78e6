"""/healthz and /metrics (no key needed: probes and Prometheus scrapers)."""
from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from evoforge.api.deps import State
from evoforge.api.schemas import ErrorPublic, HealthPublic

router = APIRouter(tags=["system"])


@router.get("/healthz", response_model=HealthPublic,
            responses={503: {"model": ErrorPublic, "description": "Database unreachable."}})
def healthz(state: State):
    try:
        with state.sessions() as s:
            s.execute(text("SELECT 1"))
    except Exception as exc:
        return JSONResponse({"detail": f"database unreachable: {type(exc).__name__}"}, status_code=503)
    return {"status": "ok", "database": "ok",
            "mode": "broker" if state.runner.mode == "broker" else "embedded"}


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                             "description": "Prometheus text exposition format."}})
def metrics(state: State):
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
