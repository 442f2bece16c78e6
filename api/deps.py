"""Shared route dependencies and parameter types."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Path, Query, Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from evoforge.api.auth import Principal, principal
from evoforge.api.caches import ApiCaches
from evoforge.api.schemas import MAX_ID


@dataclass
class AppState:
    sessions: sessionmaker[Session]
    db_url: str
    broker_url: str | None
    open_mode: bool | None
    bind_host: str | None
    runner: object
    metrics: object
    poll_s: float = 0.5
    heartbeat_s: float = 15.0
    caches: ApiCaches = field(default_factory=ApiCaches)
    # Sessions for the read routes (programs, lineage, listings, elites): without a transaction
    # on PostgreSQL (db.engine.read_session_factory); `sessions` when not given.
    reads: sessionmaker[Session] | None = None

    def __post_init__(self) -> None:
        if self.reads is None:
            self.reads = self.sessions

    @property
    def read_engine(self) -> Engine:
        """The engine of `reads`: for reads that need no ORM session (a Core connection costs
        a fifth of a session's CPU per statement)."""
        return self.reads.kw["bind"]


async def app_state(request: Request) -> AppState:  # async: no thread-pool hop
    return request.app.state.evo


State = Annotated[AppState, Depends(app_state)]
Auth = Annotated[Principal, Depends(principal)]
CampaignId = Annotated[int, Path(ge=1, le=MAX_ID, description="Campaign id.")]
ProgramId = Annotated[int, Path(ge=1, le=MAX_ID, description="Program id.")]
MAX_LIMIT = 500
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"Page size (1..{MAX_LIMIT}).")]
# An offset costs the rows it skips, read from an index alone: ~2 ms at 10,000 on PostgreSQL,
# ~17 ms at 90,000. Bounded (10,000, Elasticsearch's default result window too), so that under
# load deep offsets cannot hold the read threads and the database's cores (at 100,000 the p99
# of 50 clients was 190 ms, at 10,000 96 ms: docs/benchmarks.md); deeper, `after` (keyset)
# costs the same at any depth.
MAX_OFFSET = 10_000
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description=(
    f"Items to skip (0..{MAX_OFFSET:,}); deeper, page with `after` where the list has it."))]


_allowed_query: dict[int, frozenset[str]] = {}


def _query_names(dependant) -> set[str]:
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


async def reject_unknown_query(request: Request) -> None:  # pure CPU: stays on the loop
    """Unknown query parameters are errors (like unknown body fields), not silently ignored:
    `?limt=5` should not quietly return 50 items."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    allowed = _allowed_query.get(id(route))
    if allowed is None:
        allowed = _allowed_query[id(route)] = frozenset(_query_names(dependant))
    unknown = sorted(set(request.query_params) - allowed)
    if unknown:
        from fastapi.exceptions import RequestValidationError
        raise RequestValidationError([
            {"loc": ("query", k), "msg": f"unknown query parameter (allowed: "
                                          f"{', '.join(sorted(allowed)) or 'none'})",
             "type": "extra_forbidden"} for k in unknown])
