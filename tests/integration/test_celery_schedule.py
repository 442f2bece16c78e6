"""Scheduled campaigns: the trigger rule as a pure function, then slices run by a real worker.

The integration test drives `worker.schedule.tick` with a fake `now` (minutes apart) against a
real SQLite file, Redis and one `evoforge worker` process, so no test waits for a wall-clock
minute.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from evoforge.db.models import Campaign, Program
from tests.integration.services import (  # noqa: F401
    evoforge_env, redis_server, redis_url, start_worker, stop_process, tail, use_broker, wait_for)
from evoforge.worker.schedule import due, tick

UTC = timezone.utc


def t(h: int, m: int, s: int = 0, day: int = 1) -> datetime:
    return datetime(2025, 1, day, h, m, s, tzinfo=UTC)


def test_due_is_none_before_the_next_trigger():
    assert due("*/5 * * * *", t(10, 0), t(10, 4, 59)) is None


def test_due_fires_exactly_at_the_trigger():
    assert due("*/5 * * * *", t(10, 0), t(10, 5)) == t(10, 5)


def test_due_never_fires_twice_for_one_trigger():
    assert due("*/5 * * * *", t(10, 5), t(10, 9, 59)) is None


def test_missed_triggers_collapse_into_the_latest():
    assert due("0 2 * * *", t(2, 0, day=1), t(3, 0, day=4)) == t(2, 0, day=4)


def test_naive_times_are_utc():
    assert due("30 * * * *", datetime(2025, 1, 1, 10, 0), datetime(2025, 1, 1, 10, 31)) == t(10, 30)


def test_seconds_field_cron():
    assert due("* * * * * */10", t(10, 0, 0), t(10, 0, 25)) == t(10, 0, 20)


@pytest.mark.integration
def test_schedule_slices_run_on_the_same_archive(tmp_path, redis_url):
    from evoforge.db.engine import session_factory, upgrade
    from evoforge.worker.campaign_service import create_campaign
    from evoforge.worker.dispatch import enqueue_campaign
    from evoforge.db.campaign_config import CampaignSpec

    db_url = f"sqlite:///{tmp_path / 'sched.db'}"
    upgrade(db_url)
    sessions = session_factory(db_url)
    use_broker(redis_url)
    log = tmp_path / "worker.log"
    proc = start_worker(evoforge_env(db_url, redis_url), log, queues="eval", concurrency=2)
    try:
        spec = CampaignSpec(task="circle_packing", seed=1, parallel=2,
                            schedule={"cron": "*/5 * * * *", "evaluations_per_run": 6})
        cid = create_campaign(sessions, spec).id
        assert enqueue_campaign(cid, sessions) == 0       # no budget yet: waits for a trigger
        with sessions() as s:
            c = s.get(Campaign, cid)
            created = c.created_at.replace(tzinfo=UTC) if c.created_at.tzinfo is None else c.created_at
            assert c.status == "queued"
        first = created.replace(second=0, microsecond=0) + timedelta(minutes=5 - created.minute % 5)

        def status() -> Campaign:
            with sessions() as s:
                return s.get(Campaign, cid)

        assert tick(sessions, first - timedelta(seconds=1)) == []
        assert tick(sessions, first) == [cid]
        assert tick(sessions, first + timedelta(seconds=30)) == []     # one slice per trigger
        try:
            wait_for(lambda: status().status == "completed", 90, what="first slice")
        except TimeoutError:
            c = status()
            raise AssertionError((c.status, c.evaluations, c.iterations_reserved, c.max_evaluations, c.error))
        assert status().evaluations == 6
        best_1 = status().best_score

        assert tick(sessions, first + timedelta(minutes=5)) == [cid]
        wait_for(lambda: status().status == "completed" and status().evaluations == 12, 90,
                 what="second slice")
        c = status()
        assert c.max_evaluations == 12 and c.best_score >= best_1
        with sessions() as s:
            iters = sorted(s.scalars(select(Program.iteration).where(Program.campaign_id == cid)))
            seeds = s.scalars(select(Program.kind).where(Program.campaign_id == cid,
                                                         Program.kind == "seed")).all()
        assert iters == list(range(12)) and len(seeds) == 1    # the archive went on, no re-seed

        with sessions.begin() as s:                              # paused: the trigger passes
            s.get(Campaign, cid).status = "paused"
        assert tick(sessions, first + timedelta(minutes=10)) == []
        with sessions() as s:
            c = s.get(Campaign, cid)
            assert c.max_evaluations == 12 and c.status == "paused"
    except Exception:
        print(tail(log))
        raise
    finally:
        stop_process(proc)
