"""The dispatcher and the sweeper without Redis: a SQLite database and a recording `SEND`."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import update

from evoforge.db.campaign_config import CampaignSpec
from evoforge.db.blobs import put_code
from evoforge.db.models import Campaign, Program, WorkerLease
from evoforge.worker import dispatch
from evoforge.worker.campaign_service import create_campaign


class Sent(list):
    """Every message `worker.dispatch` sends: (task, args, queue). `fail` makes sends raise a
    broker error (a Redis that is down)."""

    fail = False

    def __call__(self, task: str, args: tuple, queue: str) -> None:
        if self.fail:
            raise ConnectionError("broker down (test)")
        self.append((task, args, queue))

    def iterations(self) -> list[int]:
        return [args[1] for _task, args, _queue in self]


@pytest.fixture
def sent(monkeypatch) -> Sent:
    recorder = Sent()
    monkeypatch.setattr(dispatch, "SEND", recorder)
    return recorder


def new_campaign(sessions, *, evals: int = 10, parallel: int = 2, llm: bool = False,
                 **extra) -> int:
    if llm:
        extra["mutator"] = {"kind": "llm", "endpoint": "test", "models": [{"name": "m"}]}
    spec = CampaignSpec(task="circle_packing", params={"n": 26}, seed=0, parallel=parallel,
                        budget={"max_evaluations": evals}, **extra)
    return create_campaign(sessions, spec).id


def commit(sessions, cid: int, *iterations: int) -> None:
    """What the store's commit does to the rows the dispatcher reads: a program per iteration
    and the campaign's evaluation counter."""
    with sessions.begin() as s:
        for it in iterations:
            s.add(Program(campaign_id=cid, iteration=it, status="ok", score=1.0,
                          code_hash=put_code(s, "x")))
        s.execute(update(Campaign).where(Campaign.id == cid)
                  .values(evaluations=Campaign.evaluations + len(iterations)))


def lease(sessions, cid: int, it: int, age_s: float, worker: str = "w:1") -> None:
    beat = datetime.now(timezone.utc) - timedelta(seconds=age_s)
    with sessions.begin() as s:
        s.add(WorkerLease(worker_id=worker, campaign_id=cid, iteration=it, started_at=beat,
                          heartbeat_at=beat))


def state(sessions, cid: int) -> Campaign:
    with sessions() as s:
        return s.get(Campaign, cid)
