"""The LLM bandit learns under Celery: two real worker processes, PostgreSQL, Redis, and a
loopback OpenAI-compatible server with one good model and one that never makes a program.

Each worker runs both queues, so a model chosen by one process is evaluated and committed by
either; what the bandit learns reaches every chooser only through the database (`model_stat`,
updated in the commit). Without that, the LLM workers' bandits never see an outcome and pick
the two models evenly to the end (the bug of issue 12).
"""
from __future__ import annotations

import pytest
from sqlalchemy import select

from evoforge.db import model_stats
from evoforge.db.campaign_config import CampaignSpec
from evoforge.db.models import Campaign, Program
from tests.integration.services import (  # noqa: F401
    evoforge_env, pg_url, postgres_server, redis_server, redis_url, start_worker, stop_process,
    tail, use_broker, wait_for)
from tests.llm.bandit_server import BANDIT_MUTATOR, bandit_server, endpoints_toml, thirds
from evoforge.worker.campaign_service import create_campaign

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EVALS = 91


def test_two_celery_workers_shift_calls_away_from_a_failing_model(tmp_path, pg_url, redis_url):
    from evoforge.db.engine import session_factory
    from evoforge.worker.dispatch import enqueue_campaign

    use_broker(redis_url)
    sessions = session_factory(pg_url)
    workers = []
    with bandit_server() as fake:
        toml = tmp_path / "endpoints.toml"
        toml.write_text(endpoints_toml(fake.base_url))
        env = evoforge_env(pg_url, redis_url, EVOFORGE_LLM_ENDPOINTS=str(toml))
        logs = [tmp_path / f"worker-{i}.log" for i in (1, 2)]
        try:
            for i, log in enumerate(logs, 1):
                workers.append(start_worker(env, log, queues="llm,eval", concurrency=2,
                                            name=f"w{i}"))
            for log in logs:
                wait_for(lambda: "ready." in tail(log, 100_000), 60, what=f"{log.name} ready")
            spec = CampaignSpec(task="circle_packing", params={"n": 26}, seed=0, parallel=4,
                                budget={"max_evaluations": EVALS}, mutator=BANDIT_MUTATOR)
            cid = create_campaign(sessions, spec).id
            enqueue_campaign(cid, sessions)

            def done() -> bool:
                with sessions() as s:
                    return s.get(Campaign, cid).status in ("completed", "failed")

            try:
                wait_for(done, 240, what="the bandit campaign")
            except TimeoutError:
                raise AssertionError("\n".join(tail(log) for log in logs))
        finally:
            for p in workers:
                stop_process(p)
        calls = [(r.body or {}).get("model") for r in fake.chat_requests()]

    with sessions() as s:
        c = s.get(Campaign, cid)
        assert c.status == "completed" and c.evaluations == EVALS, (c.status, c.error)
        models = list(s.scalars(select(Program.model).where(Program.campaign_id == cid,
                                                            Program.iteration > 0)
                                .order_by(Program.id)))
    for log in logs:  # both processes chose models (the llm half) and committed (the eval half)
        text = tail(log, 10_000_000)
        assert "evoforge.mutate[" in text and "evoforge.evaluate[" in text, log.name
    learned = model_stats.read(sessions, cid)
    assert {m: s.pulls for m, s in learned.items()} == {m: models.count(m) for m in set(models)}
    assert learned["bad"].valid == 0 and learned["good"].valid > 0
    first, last, third = thirds(calls, "bad")
    print(f"calls to the bad model: {first} of the first {third}, {last} of the last {third}")
    # UCB keeps exploring a little (its bonus grows with log n), and four iterations are in
    # flight while outcomes commit, so the failing model still gets an odd late call: the test
    # asks for few of them late, no more than early, and a small share overall. Without the
    # database statistics each chooser picks the two evenly (about 45% each in every third).
    bad = calls.count("bad")
    assert last < third / 10 and last <= max(first, 2) and bad <= 0.2 * len(calls), \
        (first, last, bad, calls)
