"""Which LLM endpoints a REST caller may use (worker/endpoints.py holds the rules)."""
from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select
from starlette.exceptions import HTTPException
from sqlalchemy.orm import Session, sessionmaker

from evoforge.api.auth import Principal
from evoforge.db.models import Project
from evoforge.worker.campaign_service import SpecError
from evoforge.worker.endpoints import (EndpointError, EndpointsFile, check_mutator as _check,
                                       load_endpoints)

log = logging.getLogger("evoforge.api")


class EndpointsUnavailable(HTTPException):
    """The operator's endpoint file is broken: the caller gets a 503, the log says why."""

    def __init__(self, detail: str):
        super().__init__(503, detail=detail)


def project_name(sessions: sessionmaker[Session], principal: Principal) -> str | None:
    if principal.project_id is None:
        return None
    with sessions() as s:
        return s.scalar(select(Project.name).where(Project.id == principal.project_id))


def endpoints() -> EndpointsFile:
    try:
        return load_endpoints()
    except EndpointError as exc:
        log.error("LLM endpoint configuration: %s", exc)
        raise EndpointsUnavailable("the server's LLM endpoint configuration is broken; "
                                   "the operator's log says why") from None


def check_mutator(sessions: sessionmaker[Session], principal: Principal, spec: Any) -> None:
    """Before a campaign is stored: its mutator names an endpoint this project may use (with
    allowed models, no caller prices), or a base_url the operator lets this project use (public
    addresses only, unless allowed). SpecError (422) with the reason otherwise."""
    if spec.mutator.kind != "llm" and not (spec.mutator.endpoint or spec.mutator.base_url):
        return
    cfg = endpoints()
    try:
        _check(spec.mutator, project_name(sessions, principal), cfg)
    except EndpointError as exc:
        raise SpecError(str(exc)) from None


def listing(sessions: sessionmaker[Session], principal: Principal) -> dict[str, Any]:
    """GET /endpoints: names and allowed models only (no URLs, no key sources)."""
    cfg = endpoints()
    project = project_name(sessions, principal)
    return {"endpoints": [{"name": n, "models": list(ep.models)}
                          for n, ep in sorted(cfg.usable_by(project).items())],
            "caller_urls": cfg.caller_urls_allowed(project)}
