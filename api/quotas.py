"""The operator's per-project quotas (worker/quotas.py) as HTTP answers.

`admit_create` and `admit_resume` are context managers: the check runs under the project's
admission lock and the caller commits its change (the new campaign, the status change) inside
the block, so concurrent requests cannot both pass a limit. Beyond a quota: 429 (running
campaigns: try again once one ends) or 403 (parallel, evaluations), with the reason, and nothing
is created or changed.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from fastapi import HTTPException
from sqlalchemy.orm import Session, sessionmaker

from evoforge.api.auth import Principal
from evoforge.worker import quotas
from evoforge.db.campaign_config import CampaignSpec, stored_budget


def refused(exc: quotas.QuotaExceeded) -> HTTPException:
    """The answer to a quota refusal: its status and message (429s say when to try again)."""
    headers = {"Retry-After": "60"} if exc.status_code == 429 else None
    return HTTPException(exc.status_code, detail=str(exc), headers=headers)


@contextmanager
def _admitted(sessions: sessionmaker[Session], project_id: int | None, **kw) -> Iterator[None]:
    with quotas.admission(sessions, project_id):
        try:
            with sessions() as s:
                quotas.check(s, project_id, **kw)
        except quotas.QuotaExceeded as exc:
            raise refused(exc) from None
        yield


@contextmanager
def admit_create(sessions: sessionmaker[Session], principal: Principal,
                 spec: CampaignSpec) -> Iterator[None]:
    with _admitted(sessions, principal.project_id, parallel=spec.parallel,
                   max_evaluations=spec.budget.max_evaluations):
        yield


@contextmanager
def admit_resume(sessions: sessionmaker[Session], principal: Principal,
                 campaign_id: int, more_evaluations: int | None = None) -> Iterator[None]:
    """Resuming makes a paused campaign active again: the same quotas as a new one (with
    `more_evaluations`, for the budget it will have)."""
    from evoforge.api.services.project_campaigns import get_campaign
    from evoforge.worker.campaign_service import budget_after

    with sessions() as s:
        c = get_campaign(s, principal, campaign_id)
        parallel, asked = c.parallel, stored_budget(c.config).max_evaluations
        if more_evaluations is not None:
            asked = budget_after(c, more_evaluations)
    with _admitted(sessions, principal.project_id, parallel=parallel, max_evaluations=asked,
                   campaign_id=campaign_id):
        yield
