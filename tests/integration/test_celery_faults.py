"""Celery workers on Redis with PostgreSQL, as real processes, under faults.

Each test starts Redis (shared), a fresh PostgreSQL database, two `evoforge worker` processes
(threads pool, concurrency 2) and `evoforge beat` (the sweeper), then breaks something:

(a) SIGKILL one worker mid-campaign: it stops heartbeating, its leases go stale (6 s here,
    30 s by default) and beat's sweeper re-sends the iterations it was running; Redis keeps its
    default one-hour visibility timeout, so the recovery cannot come from a redelivery. The
    campaign completes with exactly its budget, each iteration once.
(b) Restart Redis (no persistence: every queued message is lost): workers reconnect, the
    sweeper re-sends the lost reserved iterations, the campaign completes exactly.
(c) The LLM endpoint is down when the campaign starts and comes up later: LLM iterations run on
    the `llm` queue, progress resumes and later programs are LLM diffs.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from evoforge.db.models import Campaign, Program
from tests.integration.services import (  # noqa: F401
    ROOT, evoforge_env, free_port, pg_url, postgres_server, redis_server, redis_url, use_broker,
    start_evoforge, start_worker, stop_process, tail, wait_for, wait_port)
from evoforge.worker.campaign_service import create_campaign
from evoforge.db.campaign_config import CampaignSpec

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STALE_S = 12        # beat --stale-after: a reserved iteration without a lease (lost message)
LEASE_STALE_S = 6   # a worker silent this long is dead (default 30 s; short to keep CI quick)
HEARTBEAT_S = 1


class Cluster:
    def __init__(self, tmp: Path, db_url: str, broker_url: str):
        from evoforge.db.engine import session_factory

        use_broker(broker_url)  # this process only sends messages
        self.tmp, self.db_url, self.broker_url = tmp, db_url, broker_url
        self.sessions = session_factory(db_url)
        self.env = evoforge_env(db_url, broker_url, EVOFORGE_LEASE_STALE_S=LEASE_STALE_S,
                                EVOFORGE_HEARTBEAT_S=HEARTBEAT_S)
        self.env.pop("EVOFORGE_VISIBILITY_TIMEOUT_S", None)   # the default, 3600 s
        self.workers: dict[str, subprocess.Popen] = {}
        self.beat: subprocess.Popen | None = None

    def start_worker(self, name: str, queues: str = "llm,eval,gpu", concurrency: int = 2) -> None:
        self.workers[name] = start_worker(self.env, self.log(name), queues=queues,
                                          concurrency=concurrency, name=name)

    def start_beat(self) -> None:
        self.beat = start_evoforge(["beat", "--interval", "1", "--stale-after", str(STALE_S)],
                                   self.env, self.log("beat"))

    def log(self, name: str) -> Path:
        return self.tmp / f"{name}.log"

    def wait_ready(self, name: str, timeout_s: float = 60) -> None:
        wait_for(lambda: "ready." in tail(self.log(name), 100_000), timeout_s,
                 what=f"worker {name} ready")

    def logs(self) -> str:
        names = list(self.workers) + (["beat"] if self.beat else [])
        return "\n".join(f"--- {n}\n{tail(self.log(n), 3000)}" for n in names)

    def state(self, cid: int) -> Campaign:
        with self.sessions() as s:
            return s.get(Campaign, cid)

    def wait_done(self, cid: int, timeout_s: float) -> Campaign:
        try:
            wait_for(lambda: self.state(cid).status in ("completed", "failed", "cancelled"),
                     timeout_s, what=f"campaign {cid} to finish")
        except TimeoutError:
            c = self.state(cid)
            raise AssertionError(f"campaign {cid} stuck: {c.status} {c.evaluations}/"
                                 f"{c.max_evaluations} reserved {c.iterations_reserved}\n{self.logs()}")
        return self.state(cid)

    def iterations(self, cid: int) -> list[int]:
        with self.sessions() as s:
            return sorted(s.scalars(select(Program.iteration).where(Program.campaign_id == cid)))

    def stop(self) -> None:
        for p in list(self.workers.values()) + ([self.beat] if self.beat else []):
            stop_process(p)


@pytest.fixture
def cluster(tmp_path, pg_url, redis_url):
    c = Cluster(tmp_path, pg_url, redis_url)
    yield c
    c.stop()


def _campaign(cluster: Cluster, *, evals: int, parallel: int, **extra) -> int:
    from evoforge.worker.dispatch import enqueue_campaign

    spec = CampaignSpec(task="circle_packing", params={"n": 26}, seed=0, parallel=parallel,
                        budget={"max_evaluations": evals}, **extra)
    cid = create_campaign(cluster.sessions, spec).id
    enqueue_campaign(cid, cluster.sessions)
    return cid


def _assert_exact(cluster: Cluster, cid: int, evals: int) -> None:
    c = cluster.state(cid)
    assert c.status == "completed", (c.status, c.error, cluster.logs())
    assert c.evaluations == evals
    assert cluster.iterations(cid) == list(range(evals))       # each iteration exactly once
    assert c.iterations_reserved == evals                      # the budget was never overshot
    with cluster.sessions() as s:
        rows = s.execute(select(Program.iteration, Program.kind, Program.status, Program.score)
                         .where(Program.campaign_id == cid).order_by(Program.iteration)).all()
    assert c.best_score is not None and c.seed_score is not None, (rows, cluster.logs())


def test_sigkill_a_worker_mid_campaign(cluster):
    cluster.start_worker("a")
    cluster.start_worker("b")
    cluster.start_beat()
    cluster.wait_ready("a")
    cluster.wait_ready("b")
    cid = _campaign(cluster, evals=40, parallel=4)
    wait_for(lambda: cluster.state(cid).evaluations >= 10, 90, what="10 evaluations")
    received = tail(cluster.log("a"), 1_000_000).count("evoforge.iterate[")
    assert received > 0, "worker a never got work: the kill would prove nothing"
    os.killpg(cluster.workers["a"].pid, signal.SIGKILL)
    cluster.workers["a"].wait(10)
    killed_at = cluster.state(cid).evaluations
    t0 = time.monotonic()
    cluster.wait_done(cid, 150)
    assert killed_at < 40
    _assert_exact(cluster, cid, 40)
    assert time.monotonic() - t0 < 150   # the visibility timeout (3600 s) played no part


def test_redis_restart_mid_campaign(cluster, redis_server):
    cluster.start_worker("a")
    cluster.start_worker("b")
    cluster.start_beat()
    cluster.wait_ready("a")
    cluster.wait_ready("b")
    cid = _campaign(cluster, evals=40, parallel=4)
    wait_for(lambda: cluster.state(cid).evaluations >= 10, 90, what="10 evaluations")
    redis_server.restart(down_s=2.0)
    restarted_at = cluster.state(cid).evaluations
    assert restarted_at < 40
    cluster.wait_done(cid, 180)
    _assert_exact(cluster, cid, 40)
    for name, proc in cluster.workers.items():     # the workers survived and reconnected
        assert proc.poll() is None, f"worker {name} died:\n{tail(cluster.log(name))}"


PERTURB_LLM = Path("/work/shared/tools/perturb_llm.py")


def test_llm_endpoint_down_then_back(cluster, tmp_path):
    if not PERTURB_LLM.exists():
        pytest.skip(f"the stand-in LLM server {PERTURB_LLM} is not available")
    port = free_port()
    # The operator's endpoint (a stored base_url would get no key and no loopback address).
    endpoints = tmp_path / "endpoints.toml"
    endpoints.write_text(f'[endpoints.perturb]\nbase_url = "http://127.0.0.1:{port}/v1"\n'
                         f'models = ["perturb"]\n')
    cluster.env["EVOFORGE_LLM_ENDPOINTS"] = str(endpoints)
    cluster.start_worker("llm", queues="llm", concurrency=2)
    cluster.start_worker("eval", queues="eval", concurrency=2)
    cluster.start_beat()
    cluster.wait_ready("llm")
    cluster.wait_ready("eval")
    cid = _campaign(cluster, evals=12, parallel=2,
                    mutator={"kind": "llm", "endpoint": "perturb", "models": [{"name": "perturb"}]})
    wait_for(lambda: cluster.state(cid).evaluations >= 1, 60, what="the seed evaluation")
    time.sleep(6)  # nothing listens on the port yet: LLM calls fail and back off meanwhile
    before = cluster.state(cid).evaluations
    assert before < 12
    llm = subprocess.Popen([sys.executable, str(PERTURB_LLM), "--port", str(port), "--seed", "0"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc=llm)
        cluster.wait_done(cid, 150)
    finally:
        stop_process(llm)
    _assert_exact(cluster, cid, 12)
    with cluster.sessions() as s:
        kinds = dict(s.execute(select(Program.iteration, Program.kind)
                               .where(Program.campaign_id == cid)).all())
    assert kinds[0] == "seed"
    assert sum(k == "llm:diff" for k in kinds.values()) >= 1, kinds
    assert kinds[max(kinds)] != "seed"
    # the LLM step ran on the llm worker, the evaluation on the eval worker
    assert "evoforge.mutate[" in tail(cluster.log("llm"), 1_000_000)
    assert "evoforge.evaluate[" in tail(cluster.log("eval"), 1_000_000)
