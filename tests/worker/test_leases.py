"""A worker's leases: held while a task runs, refreshed by beats, re-created when a sweeper
took them, gone when the task ends."""
from __future__ import annotations

import time

from sqlalchemy import delete, select

from evoforge.db.models import WorkerLease
from evoforge.worker.leases import Heartbeat, leases_of


def rows(sessions) -> list[tuple[int, int, object]]:
    with sessions() as s:
        return s.execute(select(WorkerLease.campaign_id, WorkerLease.iteration,
                                WorkerLease.heartbeat_at)).all()


def test_held_while_running_refreshed_and_recreated(sessions):
    hb = Heartbeat(interval_s=3600)      # beats by hand below
    with hb.holding(sessions, 7, 3):
        (cid, it, first), = rows(sessions)
        assert (cid, it) == (7, 3) and hb.worker_id
        time.sleep(0.02)
        hb.beat()
        (_, _, later), = rows(sessions)
        assert later > first
        with sessions.begin() as s:      # a sweeper took this worker for dead
            s.execute(delete(WorkerLease))
        hb.beat()
        assert [(c, i) for c, i, _ in rows(sessions)] == [(7, 3)]
        assert set(leases_of(sessions, 7)) == {3}
    assert rows(sessions) == []


def test_a_failing_task_drops_its_lease(sessions):
    hb = Heartbeat(interval_s=3600)
    try:
        with hb.holding(sessions, 1, 1):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert rows(sessions) == []
