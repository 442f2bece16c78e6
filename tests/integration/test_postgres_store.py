"""The engine on a real PostgreSQL (psycopg 3): migrations, a campaign, and concurrent writers.

The server is started by the `postgres_server` fixture (initdb + pg_ctl on a free loopback port).
"""
from __future__ import annotations

import multiprocessing as mp
import subprocess
import threading

import pytest
from sqlalchemy import func, inspect, select

from evoforge.db.blobs import put_code
from evoforge.db.models import Campaign, EliteCell, Program
from evoforge.evolution.step import Child
from evoforge.evolution.types import OK, EvalResult, Mutation
from tests.integration.services import EVOFORGE, ROOT, pg_url, postgres_server  # noqa: F401
from evoforge.worker.campaign_service import create_campaign
from evoforge.db.campaign_config import CampaignSpec

pytestmark = pytest.mark.integration


def _campaign(sessions, **extra) -> int:
    spec = CampaignSpec(task="circle_packing", seed=0, budget={"max_evaluations": 1000}, **extra)
    return create_campaign(sessions, spec, status="running").id


def _child(iteration: int, score: float, code: str = "def f():\n    return 1\n") -> Child:
    return Child(iteration=iteration, island=0, parent_id=None, generation=1, code=code,
                 code_hash=f"h{iteration}", mutation=Mutation(code=code, kind="ast:const"),
                 result=EvalResult(status=OK, score=score, features={"radius_spread": 0.1}))


def test_db_upgrade_cli_on_postgres(postgres_server):
    url = postgres_server.createdb()
    out = subprocess.run(EVOFORGE + ["db", "upgrade", "--db", url], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    from evoforge.db.engine import get_engine

    names = set(inspect(get_engine(url)).get_table_names())
    assert {"campaign", "program", "evaluation", "elite_cell", "eval_cache", "api_key"} <= names


def test_campaign_on_postgres_is_exact(pg_url, fork_sandbox):
    from evoforge.db.engine import session_factory
    from evoforge.db.store import CampaignStore
    from evoforge.worker.embedded import EmbeddedExecutor

    sessions = session_factory(pg_url)
    spec = CampaignSpec(task="circle_packing", seed=3, parallel=3, budget={"max_evaluations": 30},
                        archive={"migration_interval": 5})
    cid = create_campaign(sessions, spec).id
    out = EmbeddedExecutor(sessions, cid, parallel=3, sandbox=fork_sandbox).run()
    assert out["status"] == "completed" and out["evaluations"] == 30
    assert out["best_score"] > out["seed_score"]
    with sessions() as s:
        iters = sorted(s.scalars(select(Program.iteration).where(Program.campaign_id == cid)))
        assert iters == list(range(30))
        c = s.get(Campaign, cid)
        assert c.best_score == s.scalar(select(func.max(Program.score)).where(Program.campaign_id == cid))
        # every elite is the best program stored for its (island, cell)... or a migrant
        elites = s.scalars(select(EliteCell).where(EliteCell.campaign_id == cid)).all()
        assert elites and all(e.score == s.get(Program, e.program_id).score for e in elites)
    # a redelivered iteration is not inserted or counted twice on PostgreSQL either
    CampaignStore(sessions, cid).commit(_child(5, 1e9))
    with sessions() as s:
        assert s.get(Campaign, cid).evaluations == 30
        assert s.get(Campaign, cid).best_score < 1e9


def test_concurrent_offers_to_one_new_cell_keep_the_best(pg_url):
    """Threads race to create the same empty cell: the best score must win every time (a plain
    UPDATE-then-INSERT-IGNORE loses it when both UPDATEs find no row)."""
    from evoforge.db.engine import session_factory
    from evoforge.db.elites import offer

    sessions = session_factory(pg_url)
    cid = _campaign(sessions)
    with sessions.begin() as s:  # programs for the elite rows to point at
        pids = []
        for i in range(8):
            p = Program(campaign_id=cid, iteration=i, code_hash=put_code(s, "x"), status=OK,
                        score=float(i))
            s.add(p)
            s.flush()
            pids.append(p.id)
    rounds, n = 40, 8
    for r in range(rounds):
        barrier = threading.Barrier(n)
        errors = []

        def go(i: int) -> None:
            try:
                with sessions.begin() as s:
                    barrier.wait(10)
                    offer(s, cid, 0, f"r{r}", pids[i], float(i), {})
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=go, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
    with sessions() as s:
        scores = dict(s.execute(select(EliteCell.cell, EliteCell.score)
                                .where(EliteCell.campaign_id == cid)).all())
    assert len(scores) == rounds
    assert all(v == float(n - 1) for v in scores.values()), scores


def _commit_worker(url: str, cid: int, iterations: list[int], scores: list[float], barrier) -> None:
    from evoforge.db.engine import session_factory
    from evoforge.db.store import CampaignStore

    store = CampaignStore(session_factory(url), cid)
    barrier.wait(30)
    for it, score in zip(iterations, scores):
        store.commit(_child(it, score))


def test_concurrent_commits_from_processes_are_exact(pg_url):
    """Four processes commit 120 iterations into the same cells (each iteration twice, as a
    redelivered task would): counters count each iteration once, and the best elite survives."""
    from evoforge.db.engine import session_factory

    sessions = session_factory(pg_url)
    cid = _campaign(sessions, archive={"islands": 2, "migration_interval": 0})
    n_iter = 120
    scores = {i: float((i * 37) % 101) for i in range(n_iter)}
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(4)
    plans = []
    for w in range(4):
        its = [i for i in range(n_iter) if i % 2 == w % 2]  # two processes per iteration
        its = its if w < 2 else list(reversed(its))
        plans.append(its)
    procs = [ctx.Process(target=_commit_worker, args=(pg_url, cid, its, [scores[i] for i in its], barrier))
             for its in plans]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    with sessions() as s:
        c = s.get(Campaign, cid)
        assert c.evaluations == n_iter
        assert s.scalar(select(func.count()).select_from(Program).where(Program.campaign_id == cid)) == n_iter
        assert c.best_score == max(scores.values())
        best_per_island = dict(s.execute(select(EliteCell.island, func.max(EliteCell.score))
                                         .where(EliteCell.campaign_id == cid)
                                         .group_by(EliteCell.island)).all())
    assert best_per_island == {0: max(scores.values()), 1: max(scores.values())}
