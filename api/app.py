"""The FastAPI app factory: `create_app(db_url, broker_url=..., open_mode=...)`.

Everything lives under `/api/v1`; OpenAPI at `/openapi.json`, Swagger UI at `/docs`. A
dashboard package (`api/dashboard/`, defining `mount(app)`) is mounted when present.
"""
from __future__ import annotations

import logging
import os
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from fastapi.responses import JSONResponse

from evoforge.api import dashboard, fastpath, guards
from evoforge.api.deps import AppState, reject_unknown_query
from evoforge.api.metrics import LatencyMiddleware, Metrics
from evoforge.api.routers import campaigns, endpoints, problems, programs, system, tasks, transfer
from evoforge.api.services import Conflict, NotFound
from evoforge.api.services.runner import BrokerRunner, InProcessRunner, NullRunner
from evoforge.worker.campaign_service import SpecError

log = logging.getLogger("evoforge.api")
API_PREFIX = "/api/v1"
BROKER_ENV = "EVOFORGE_BROKER_URL"


def create_app(db_url: str | None = None, *, broker_url: str | None = None,
               open_mode: bool | None = None, bind_host: str | None = None,
               execute: bool = True, poll_s: float = 0.5, heartbeat_s: float = 15.0,
               allowed_hosts: list[str] | None = None, allowed_origins: list[str] | None = None,
               max_body_bytes: int | None = None, server: bool = False) -> FastAPI:
    """Build the app.

    db_url: SQLAlchemy URL (default: $EVOFORGE_DATABASE_URL, else the SQLite file).
    broker_url: Celery broker; None reads $EVOFORGE_BROKER_URL, "" means none. Without one,
        campaigns run in this process.
    open_mode: None decides by itself: requests without a key are served only while no key
        exists and the server is bound to loopback (`bind_host`, else the socket the request came
        in on). True/False force it (keys, once they exist, are always required).
    execute: False stores campaigns without running them (tests, read-only replicas).
    allowed_hosts / allowed_origins: Host names and browser origins served besides loopback and
        this server itself (None reads $EVOFORGE_ALLOWED_HOSTS / $EVOFORGE_ALLOWED_ORIGINS).
    max_body_bytes: request body limit (None reads $EVOFORGE_MAX_BODY_BYTES, default 4 MiB),
        of every route but the problem upload's (8 MiB: evaluators/openevolve/package.py).
        See api/guards.py.
    server: the app is the process's own (`evoforge serve`): once it has started, the objects
        the start-up made go to the GC's permanent generation, and threads take turns on the GIL
        every millisecond (`_settle_process`).
    """
    from evoforge.db.engine import default_url, read_session_factory, session_factory, upgrade

    db_url = db_url or default_url()
    if broker_url is None:
        broker_url = os.environ.get(BROKER_ENV) or None
    sessions = session_factory(db_url)
    if not execute:
        runner = NullRunner()
    elif broker_url:
        runner = BrokerRunner(broker_url, sessions)  # with the sweeper thread
    else:
        runner = InProcessRunner(sessions)
    metrics = Metrics(sessions)
    state = AppState(sessions=sessions, db_url=db_url, broker_url=broker_url or None,
                     open_mode=open_mode, bind_host=bind_host, runner=runner, metrics=metrics,
                     poll_s=poll_s, heartbeat_s=heartbeat_s, reads=read_session_factory(db_url))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        import anyio

        await anyio.to_thread.run_sync(upgrade, db_url)
        await anyio.to_thread.run_sync(runner.startup)
        if server:
            _settle_process()
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(runner.shutdown)
            from evoforge.api.events import close_slots  # this process's stream slots in Redis

            await anyio.to_thread.run_sync(close_slots, app)
            if state.caches.async_reader:
                await state.caches.async_reader.close()

    app = FastAPI(title="EvoForge", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="LLM-driven program evolution as a service. Send "
                              "`Authorization: Bearer <key>`; see docs/api.md.")
    app.state.evo = state
    for r in (campaigns.router, problems.router, programs.router, tasks.router, system.router,
              endpoints.router, transfer.router):
        app.include_router(r, prefix=API_PREFIX, dependencies=[Depends(reject_unknown_query)])
    _add_error_handlers(app)
    fastpath.install(app, state)  # the hot reads' plain forms (inside the metrics)
    app.add_middleware(LatencyMiddleware, metrics=metrics)
    # Added last, so it runs first: refused requests are never authenticated, routed or read.
    app.add_middleware(guards.EdgeGuard, bind_host=bind_host, **guards.edge_settings(
        allowed_hosts=allowed_hosts, allowed_origins=allowed_origins, max_body_bytes=max_body_bytes,
        route_limits={("POST", API_PREFIX + problems.UPLOAD_PATH): problems.MAX_UPLOAD_BYTES,
                      ("POST", API_PREFIX + transfer.IMPORT_PATH): transfer.MAX_IMPORT_BYTES}))
    guards.mount_docs(app)
    dashboard.mount(app)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(NotFound)
    async def _not_found(_request: Request, exc: NotFound):
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(Conflict)
    async def _conflict(_request: Request, exc: Conflict):
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(SpecError)
    async def _spec(_request: Request, exc: SpecError):
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError):
        # Never echo the (possibly huge) input back; say where and what.
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                  for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 400 and request.method in ("POST", "PUT", "PATCH"):
            # FastAPI's "There was an error parsing the body" (bytes that are not UTF-8 JSON):
            # a body problem like any other, so 422 with a clearer message.
            return JSONResponse({"detail": [{"loc": ["body"], "msg": "the request body is not valid "
                                             "UTF-8 JSON", "type": "json_invalid"}]}, status_code=422)
        return await http_exception_handler(request, exc)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal server error"}, status_code=500)


SERVE_ENV = {"db_url": "EVOFORGE_DATABASE_URL", "bind_host": "EVOFORGE_BIND_HOST"}


def create_app_from_env() -> FastAPI:
    """The app of one of several API processes (`evoforge serve --workers N`, or
    `uvicorn --factory evoforge.api.app:create_app_from_env --workers N`, or gunicorn with
    uvicorn's worker class): every setting from the environment ($EVOFORGE_DATABASE_URL,
    $EVOFORGE_BROKER_URL, $EVOFORGE_BIND_HOST, $EVOFORGE_ALLOWED_HOSTS, $EVOFORGE_ALLOWED_ORIGINS,
    $EVOFORGE_MAX_BODY_BYTES). A broker is required: without one each process would run
    campaigns in-process, the same campaign in several of them (docs/service.md)."""
    if not os.environ.get(BROKER_ENV):
        raise RuntimeError(f"several API processes need a broker (set ${BROKER_ENV}, and run "
                           "`evoforge worker`): without one, campaigns run inside the API process, "
                           "so use a single `evoforge serve`")
    return create_app(os.environ.get(SERVE_ENV["db_url"]) or None,
                      bind_host=os.environ.get(SERVE_ENV["bind_host"]) or None, server=True)


def _settle_process() -> None:
    """For a process that serves requests from now on:

    - gc.freeze(): the ~300k objects the start-up made (modules, SQLAlchemy's and pydantic's
      schemas, FastAPI's routes) live as long as the process, and every full collection would
      walk them again, a pause of tens of milliseconds in whichever requests are in flight: the
      tail under load (docs/benchmarks.md). Frozen, they are never walked; they are still freed
      by reference counting. A collection first, so no garbage is frozen with them.
    - A GIL switch interval of 1 ms instead of 5: the event loop and the read threads
      (api/read_threads.py) hand the GIL back and forth several times per request (each
      database round trip releases it), and a thread whose answer has arrived waited up to the
      whole interval for a busy loop to let go. Side by side under 50 clients: more requests/s
      and a lower p99 (docs/benchmarks.md, "API under 50 clients")."""
    import gc
    import sys

    gc.collect()
    gc.freeze()
    sys.setswitchinterval(SWITCH_INTERVAL_S)


SWITCH_INTERVAL_S = 0.001
