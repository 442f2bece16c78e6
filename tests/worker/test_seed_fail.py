"""Seed fail-fast: a campaign whose seed program fails stops at once as `failed`, with the reason,
the evaluator's message and the stderr tail as its error, instead of running a campaign of
failures; embedded (the executor `evoforge run` and `evoforge serve` use) and on Celery workers.
A slow seed never holds up the request that created the campaign."""
from __future__ import annotations

import time

import httpx
import pytest
from sqlalchemy import func, select

from evoforge.db.campaign_config import CampaignSpec
from evoforge.db.models import Campaign, Program
from evoforge.worker.campaign_service import create_campaign
from tests.integration.services import (  # noqa: F401
    evoforge_env, pg_url, postgres_server, redis_server, redis_url, start_worker, stop_process,
    tail, use_broker, wait_for)
from tests.security.conftest import serve_process  # noqa: F401

BROKEN = ("import sys\n\ndef pack_circles(n):\n"
          "    print('seed: reading data.csv', file=sys.stderr)\n"
          "    raise FileNotFoundError('data.csv is not there')\n")
SLOW_BROKEN = "import time\n\ndef pack_circles(n):\n    time.sleep(3)\n    return 'not circles'\n"


def spec(program: str, **extra) -> CampaignSpec:
    return CampaignSpec(task="circle_packing", params={"n": 26}, seed=0, parallel=2,
                        program=program, mutator={"kind": "local"},
                        budget={"max_evaluations": 20}, **extra)


def assert_failed_by_seed(c: Campaign, programs: int) -> None:
    assert c.status == "failed", (c.status, c.error)
    assert c.error.startswith("the seed program failed: error: FileNotFoundError: data.csv is "
                              "not there"), c.error
    assert "stderr (tail):\nseed: reading data.csv" in c.error, c.error
    assert c.evaluations == 1 and programs == 1, (c.evaluations, programs)
    assert c.finished_at is not None


def test_embedded_a_broken_seed_fails_the_campaign_at_once(sessions):
    from evoforge.worker.embedded import EmbeddedExecutor

    cid = create_campaign(sessions, spec(BROKEN)).id
    t0 = time.monotonic()
    summary = EmbeddedExecutor(sessions, cid, parallel=2).run()
    assert time.monotonic() - t0 < 30 and summary["status"] == "failed", summary
    with sessions() as s:
        c = s.get(Campaign, cid)
        n = s.scalar(select(func.count()).select_from(Program).where(Program.campaign_id == cid))
        assert_failed_by_seed(c, n)


def test_embedded_a_good_seed_runs_on(sessions):
    from evoforge.evaluators.base import get_task
    from evoforge.worker.embedded import EmbeddedExecutor

    task = get_task("circle_packing")
    good = CampaignSpec(task="circle_packing", params={"n": 26}, seed=0, mutator={"kind": "local"},
                        program=task.seed_program(task.Params()), budget={"max_evaluations": 3})
    cid = create_campaign(sessions, good).id
    summary = EmbeddedExecutor(sessions, cid, parallel=2).run()
    with sessions() as s:
        c = s.get(Campaign, cid)
        assert c.status == "completed" and c.evaluations == 3 and not c.error, summary


def test_a_slow_seed_does_not_block_the_request_and_then_fails_it(serve_process):  # noqa: F811
    sp = serve_process()
    with httpx.Client(base_url=sp.url + "/api/v1", timeout=30) as client:
        t0 = time.monotonic()
        r = client.post("/campaigns", json={"task": "circle_packing", "params": {"n": 26},
                                            "program": SLOW_BROKEN, "seed": 0,
                                            "mutator": {"kind": "local"},
                                            "budget": {"max_evaluations": 20}})
        took = time.monotonic() - t0
        assert r.status_code == 201, r.text
        assert took < 1.0, f"POST /campaigns took {took:.2f} s with a 3 s seed"
        cid = r.json()["id"]
        deadline = time.monotonic() + 60
        while (camp := client.get(f"/campaigns/{cid}").json())["status"] in ("queued", "running"):
            assert time.monotonic() < deadline, camp
            time.sleep(0.2)
    assert camp["status"] == "failed", camp
    assert camp["error"].startswith("the seed program failed: invalid: "), camp["error"]
    assert camp["evaluations"] == 1, camp


@pytest.mark.integration
def test_celery_a_broken_seed_fails_the_campaign_at_once(tmp_path, pg_url, redis_url):  # noqa: F811
    from evoforge.db.engine import session_factory
    from evoforge.worker.dispatch import enqueue_campaign

    use_broker(redis_url)
    sessions = session_factory(pg_url)
    log = tmp_path / "worker.log"
    worker = start_worker(evoforge_env(pg_url, redis_url), log, queues="llm,eval", concurrency=2)
    try:
        wait_for(lambda: "ready." in tail(log, 100_000), 60, what="the worker")
        cid = create_campaign(sessions, spec(BROKEN)).id
        t0 = time.monotonic()
        enqueue_campaign(cid, sessions)

        def done() -> bool:
            with sessions() as s:
                return s.get(Campaign, cid).status not in ("queued", "running")

        try:
            wait_for(done, 60, what="the campaign to end")
        except TimeoutError:
            raise AssertionError(tail(log))
        took = time.monotonic() - t0
        time.sleep(1.0)  # anything sent after the seed would have run by now
    finally:
        stop_process(worker)
    with sessions() as s:
        c = s.get(Campaign, cid)
        n = s.scalar(select(func.count()).select_from(Program).where(Program.campaign_id == cid))
        assert_failed_by_seed(c, n)
        assert c.iterations_reserved == 1, c.iterations_reserved
    assert took < 20, f"the seed's failure took {took:.1f} s to end the campaign"
