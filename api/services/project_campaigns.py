"""The campaign service (worker/campaign_service.py) as an API key's project sees it: scoped to
the principal's project, with the project's quotas, and the server's runner started or stopped."""
from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, delete
from sqlalchemy.orm import Session, sessionmaker

from evoforge.api import quotas
from evoforge.api.auth import Principal
from evoforge.api.services import Conflict, NotFound
from evoforge.api.services.llm_access import check_mutator
from evoforge.db.campaign_config import CampaignSpec, Schedule
from evoforge.db.campaign_rows import FINAL, set_status
from evoforge.db.models import Campaign
from evoforge.worker import campaign_service as service
from evoforge.worker import problem_service
from evoforge.worker.campaign_service import (CampaignNotFound, SpecError, TransitionRefused,
                                              describe)


def scope_of(principal: Principal) -> service.Scope:
    return service.Scope(principal.project_id)


def scope(q, principal: Principal):
    """`q` limited to the principal's campaigns."""
    return scope_of(principal).where(q)


class Scoped:
    """A statement limited to a principal's campaigns as `scope` limits it, built once (at import,
    for the read routes' statements): the project is a bound parameter, so no statement is
    built, and no cache key computed, per request. Call it for the statement and its params."""

    def __init__(self, q, then=lambda scoped: scoped):
        """`then`: what to build around the scoped statement (e.g. a recursive query whose
        first step it is)."""
        self.open = then(q.where(Campaign.project_id.is_(None)))
        self.project = then(q.where(Campaign.project_id == bindparam("scope_project_id")))

    def __call__(self, principal: Principal, **params: Any) -> tuple[Any, dict[str, Any]]:
        if principal.project_id is None:
            return self.open, params
        return self.project, {**params, "scope_project_id": principal.project_id}


def get_campaign(s: Session, principal: Principal, campaign_id: int) -> Campaign:
    try:
        return service.get_campaign(s, scope_of(principal), campaign_id)
    except CampaignNotFound as exc:
        raise NotFound(str(exc)) from None


public = describe  # the one campaign-to-dict


def create(sessions: sessionmaker[Session], principal: Principal, spec: CampaignSpec, runner) -> int:
    problem_id = None
    if spec.problem is not None:  # the problem's defaults first: the checks see the whole spec
        try:  # (the requirements are checked in the campaign's sandbox: a thread of the pool)
            resolved = problem_service.spec_for_campaign(sessions, scope_of(principal), spec)
        except problem_service.ProblemNotFound as exc:
            raise NotFound(str(exc)) from None
        spec, problem_id = resolved.spec, resolved.problem_id
    check_mutator(sessions, principal, spec)  # LLM endpoints are the operator's (llm_access.py)
    with quotas.admit_create(sessions, principal, spec):  # 429/403 beyond a quota
        try:
            c = service.create_campaign(sessions, spec, project_id=principal.project_id,
                                        status="queued", problem_id=problem_id)
        except SpecError:
            raise
        except (ValueError, TypeError) as exc:  # e.g. a seed program the archive cannot size
            raise SpecError(f"invalid campaign: {exc}") from None
    if runner.mode == "embedded":
        set_status(sessions, c.id, "running", only_from=("queued",))
    runner.start(c.id)
    return c.id


def list_campaigns(s: Session, principal: Principal, *, status: str | None, task: str | None,
                   limit: int, offset: int) -> tuple[list[Campaign], int]:
    return service.list_campaigns(s, scope_of(principal), status=status, task=task,
                                  limit=limit, offset=offset)


def _refused_as_conflict(call, *args, **kw) -> None:
    try:
        call(*args, **kw)
    except CampaignNotFound as exc:
        raise NotFound(str(exc)) from None
    except TransitionRefused as exc:
        raise Conflict(str(exc)) from None


def pause(sessions, principal, campaign_id: int, runner) -> None:
    _refused_as_conflict(service.pause, sessions, scope_of(principal), campaign_id)
    runner.stop(campaign_id)


def resume(sessions, principal, campaign_id: int, runner, *,
           more_evaluations: int | None = None) -> None:
    with quotas.admit_resume(sessions, principal, campaign_id, more_evaluations):  # 429/403
        _refused_as_conflict(service.resume, sessions, scope_of(principal), campaign_id,
                             more_evaluations=more_evaluations)
    runner.start(campaign_id)


def cancel(sessions, principal, campaign_id: int, runner) -> None:
    _refused_as_conflict(service.cancel, sessions, scope_of(principal), campaign_id)
    runner.stop(campaign_id)


def remove(sessions, principal, campaign_id: int, runner) -> bool:
    """Cancel, tell the runner to stop without waiting, and delete. True: deleted now. False:
    iterations of this process are still in flight; the runner deletes the (cancelled) row
    once they end, in the background (a row deleted earlier could see its id reused by SQLite
    while a late commit still carries it). A server thread is never held for a slow iteration."""
    with sessions() as s:
        c = get_campaign(s, principal, campaign_id)
        final = c.status in FINAL
    if not final:
        set_status(sessions, campaign_id, "cancelled", only_from=("queued", "running", "paused"))
    runner.stop(campaign_id)

    def delete_row() -> None:
        with sessions.begin() as s:
            s.execute(delete(Campaign).where(Campaign.id == campaign_id))

    later = getattr(runner, "delete_when_stopped", None)
    if later is not None and later(campaign_id, delete_row):
        return False
    delete_row()
    return True


def set_schedule(sessions, principal, campaign_id: int, schedule: dict[str, Any] | None) -> None:
    from evoforge.db.campaign_config import CampaignConfig

    with sessions.begin() as s:
        c = get_campaign(s, principal, campaign_id)
        if c.adhoc:
            raise Conflict("the bookkeeping campaign of ad-hoc evaluations cannot be scheduled")
        config = CampaignConfig.load(c)
        new = None if schedule is None else Schedule.model_validate(schedule)
        c.config = config.model_copy(update={"schedule": new}).document()  # a new dict: written
