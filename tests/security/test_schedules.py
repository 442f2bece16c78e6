"""Schedules keep their word: a scheduled campaign waits, queued, for its trigger, and one trigger
adds at most `evaluations_per_run` evaluations, whatever the budget says (and never more than
the budget). Through the real server: in-process (`live_server`, `evoforge serve`) and with a
broker and a real Celery worker.

The tests drive `worker.schedule.tick` with a `now` at the next cron time, so none waits for a
wall-clock trigger (except the one that checks `evoforge serve`'s own scheduler thread, on a
cron with a seconds field).
"""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from croniter import croniter

from evoforge.db.models import Campaign
from tests.api.conftest import wait_for
from tests.integration.services import redis_server, redis_url  # noqa: F401
from evoforge.worker.schedule import tick

UTC = timezone.utc
YEARLY = "0 0 1 1 *"
BASE = {"task": "circle_packing", "params": {"n": 26}, "seed": 3, "parallel": 2}


def next_trigger(sessions, cid: int, cron: str) -> datetime:
    with sessions() as s:
        created = s.get(Campaign, cid).created_at
    created = created if created.tzinfo else created.replace(tzinfo=UTC)
    return croniter(cron, created).get_next(datetime)


def row(sessions, cid: int) -> Campaign:
    with sessions() as s:
        return s.get(Campaign, cid)


def settled(c, cid):
    body = c.get(f"/campaigns/{cid}").json()
    return body if body["status"] in ("completed", "failed", "cancelled") else None


@pytest.mark.parametrize("budget, per_run, expected", [
    ({}, 4, 4),                            # no budget: one slice of per_run
    ({"max_evaluations": 1000}, 3, 3),     # a large budget does not widen the slice
    ({"max_evaluations": 2}, 5, 2),        # ... nor does a slice pass the budget
])
def test_embedded_schedule_waits_for_its_trigger_and_adds_one_slice(live_server, monkeypatch,
                                                                    budget, per_run, expected):
    monkeypatch.setenv("EVOFORGE_SCHEDULE_INTERVAL_S", "0.3")  # the server's own scheduler runs
    srv = live_server()
    sessions, runner = srv.app.state.evo.sessions, srv.app.state.evo.runner
    with srv.client() as c:
        r = c.post("/campaigns", json={**BASE, "budget": budget,
                                       "schedule": {"cron": YEARLY, "evaluations_per_run": per_run}})
        assert r.status_code == 201, r.text
        cid = r.json()["id"]
        time.sleep(2.0)                                  # long enough to run hundreds if let loose
        body = c.get(f"/campaigns/{cid}").json()
        assert body["status"] == "queued" and body["evaluations"] <= 1, body
        # Resuming a campaign that waits for its trigger does not start it either.
        assert c.post(f"/campaigns/{cid}/resume").status_code == 200
        time.sleep(1.0)
        body = c.get(f"/campaigns/{cid}").json()
        assert body["status"] == "queued" and body["evaluations"] <= 1, body

        first = next_trigger(sessions, cid, YEARLY)
        assert tick(sessions, first - timedelta(seconds=1), enqueue=runner.start) == []
        assert tick(sessions, first, enqueue=runner.start) == [cid]
        done = wait_for(lambda: settled(c, cid), 60)
        assert done["status"] == "completed" and done["evaluations"] == expected, done
        time.sleep(1.0)
        assert c.get(f"/campaigns/{cid}").json()["evaluations"] == expected
        assert tick(sessions, first, enqueue=runner.start) == []            # no second slice


def test_second_trigger_adds_per_run_and_stops_at_the_budget(live_server):
    srv = live_server()
    sessions, runner = srv.app.state.evo.sessions, srv.app.state.evo.runner
    with srv.client() as c:
        cid = c.post("/campaigns", json={**BASE, "budget": {"max_evaluations": 7},
                                         "schedule": {"cron": YEARLY, "evaluations_per_run": 4}}
                     ).json()["id"]
        first = next_trigger(sessions, cid, YEARLY)
        assert tick(sessions, first, enqueue=runner.start) == [cid]
        wait_for(lambda: settled(c, cid), 60)
        assert row(sessions, cid).evaluations == 4
        second = croniter(YEARLY, first).get_next(datetime)
        assert tick(sessions, second, enqueue=runner.start) == [cid]
        wait_for(lambda: settled(c, cid), 60)
        c_row = row(sessions, cid)
        assert (c_row.evaluations, c_row.max_evaluations) == (7, 7)         # 4 + 3: the budget
        third = croniter(YEARLY, second).get_next(datetime)
        assert tick(sessions, third, enqueue=runner.start) == []            # the budget is spent
        assert row(sessions, cid).evaluations == 7


def test_evoforge_serve_runs_its_own_triggers_one_slice_each(serve_process):
    """`evoforge serve` without a broker serves cron triggers itself (here every 3 s)."""
    sp = serve_process(env={"EVOFORGE_SCHEDULE_INTERVAL_S": "0.5"})
    with httpx.Client(base_url=sp.url + "/api/v1", timeout=30) as c:
        r = c.post("/campaigns", json={**BASE, "parallel": 1,
                                       "schedule": {"cron": "* * * * * */3", "evaluations_per_run": 2}})
        assert r.status_code == 201, r.text
        cid = r.json()["id"]
        t0 = time.monotonic()
        samples = []
        while time.monotonic() - t0 < 12:
            samples.append((time.monotonic() - t0, c.get(f"/campaigns/{cid}").json()["evaluations"]))
            time.sleep(0.5)
    # At most one slice of 2 per 3-second trigger (and one trigger may come at once).
    assert all(n <= 2 * (t // 3 + 2) for t, n in samples), samples
    assert samples[-1][1] >= 2, (samples, sp.log_text()[-2000:])


@pytest.mark.integration
def test_broker_schedule_waits_and_slices(live_server, redis_url, tmp_path):
    from tests.integration.services import evoforge_env, start_worker, stop_process, tail, use_broker

    srv = live_server(broker_url=redis_url)
    sessions = srv.app.state.evo.sessions
    use_broker(redis_url)
    log = tmp_path / "worker.log"
    proc = start_worker(evoforge_env(srv.db_url, redis_url), log, queues="eval", concurrency=2)
    try:
        with srv.client() as c:
            r = c.post("/campaigns", json={**BASE, "budget": {"max_evaluations": 1000},
                                           "schedule": {"cron": YEARLY, "evaluations_per_run": 5}})
            assert r.status_code == 201, r.text
            cid = r.json()["id"]
            time.sleep(3.0)
            body = c.get(f"/campaigns/{cid}").json()
            assert body["status"] == "queued" and body["evaluations"] == 0, body
            assert row(sessions, cid).iterations_reserved == 0

            first = next_trigger(sessions, cid, YEARLY)
            assert tick(sessions, first) == [cid]                 # enqueue_campaign: the workers
            done = wait_for(lambda: settled(c, cid), 90)
            assert done["status"] == "completed" and done["evaluations"] == 5, done
            assert row(sessions, cid).max_evaluations == 5
    except Exception:
        print(tail(log))
        raise
    finally:
        stop_process(proc)
