"""The embedded engine end to end: real SQLite, real fork-server sandbox, real circle packing."""
from sqlalchemy import func, select

from evoforge.db.models import Campaign, EliteCell, Evaluation, Program
from evoforge.evolution.step import Child
from evoforge.evolution.types import OK, EvalResult, Mutation
from evoforge.worker.campaign_service import create_campaign
from evoforge.worker.embedded import EmbeddedExecutor
from evoforge.db.campaign_config import CampaignSpec


def run_campaign(sessions, sandbox, *, evals, parallel=1, seed=0, **extra):
    spec = CampaignSpec(task="circle_packing", seed=seed, parallel=parallel,
                        budget={"max_evaluations": evals}, **extra)
    cid = create_campaign(sessions, spec).id
    return EmbeddedExecutor(sessions, cid, parallel=parallel, sandbox=sandbox).run()


def test_campaign_improves_fills_cells_and_counts(sessions, fork_sandbox):
    out = run_campaign(sessions, fork_sandbox, evals=61)
    assert out["status"] == "completed"
    assert out["evaluations"] == 61
    assert out["seed_score"] is not None and out["best_score"] > out["seed_score"]
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(Program)
                        .where(Program.campaign_id == out["campaign_id"])) == 61
        cells = s.scalar(select(func.count(func.distinct(EliteCell.cell)))
                         .where(EliteCell.campaign_id == out["campaign_id"]))
        assert cells > 1
        best = s.get(Program, out["best_program_id"])
        assert best.status == OK and best.score == out["best_score"]
        # counters agree with the rows they count
        c = s.get(Campaign, out["campaign_id"])
        hits = s.scalar(select(func.count()).select_from(Evaluation).join(Program)
                        .where(Program.campaign_id == c.id, Evaluation.cache != "miss"))
        assert c.cache_hits == hits


def test_same_seed_same_result(tmp_path, fork_sandbox):
    from evoforge.db.engine import session_factory, upgrade

    results = []
    for i in range(2):
        url = f"sqlite:///{tmp_path / f'run{i}.db'}"
        upgrade(url)
        results.append(run_campaign(session_factory(url), fork_sandbox, evals=40, seed=7))
    assert results[0]["best_score"] == results[1]["best_score"]
    assert results[0]["cache_hits"] == results[1]["cache_hits"]


def test_parallel_never_overshoots_budget(sessions, fork_sandbox):
    out = run_campaign(sessions, fork_sandbox, evals=25, parallel=4)
    assert out["evaluations"] == 25
    with sessions() as s:
        iters = sorted(s.scalars(select(Program.iteration).where(Program.campaign_id == out["campaign_id"])))
    assert iters == list(range(25))


def test_resume_continues_the_same_archive(sessions, fork_sandbox):
    first = run_campaign(sessions, fork_sandbox, evals=15)
    cid = first["campaign_id"]
    with sessions.begin() as s:
        c = s.get(Campaign, cid)
        c.max_evaluations += 10
        c.status = "paused"
    second = EmbeddedExecutor(sessions, cid, sandbox=fork_sandbox).run()
    assert second["evaluations"] == 25 and second["status"] == "completed"
    assert second["best_score"] >= first["best_score"]


def test_uncommitted_reservation_is_rerun_on_resume(sessions, fork_sandbox):
    out = run_campaign(sessions, fork_sandbox, evals=10)
    cid = out["campaign_id"]
    with sessions.begin() as s:  # simulate a crash after reserving iteration 10 and 11
        c = s.get(Campaign, cid)
        c.max_evaluations, c.iterations_reserved, c.status = 12, 12, "running"
    out = EmbeddedExecutor(sessions, cid, sandbox=fork_sandbox).run()
    assert out["evaluations"] == 12
    with sessions() as s:
        assert sorted(s.scalars(select(Program.iteration).where(Program.campaign_id == cid))) == list(range(12))


def test_redelivered_iteration_is_not_inserted_twice(sessions, fork_sandbox):
    from evoforge.db.store import CampaignStore

    out = run_campaign(sessions, fork_sandbox, evals=3)
    store = CampaignStore(sessions, out["campaign_id"])
    child = Child(iteration=2, island=0, parent_id=None, generation=1, code="x = 1", code_hash="h",
                  mutation=Mutation(code="x = 1", kind="ast:const"),
                  result=EvalResult(status=OK, score=99.0))
    again = store.commit(child)
    with sessions() as s:
        c = s.get(Campaign, out["campaign_id"])
        assert c.evaluations == 3                       # not double-counted
        assert c.best_score != 99.0                     # the duplicate did not replace anything
        assert again.program_id == s.scalar(select(Program.id).where(
            Program.campaign_id == c.id, Program.iteration == 2))


def test_functional_cache_is_shared_across_campaigns(sessions, fork_sandbox):
    a = run_campaign(sessions, fork_sandbox, evals=5)
    b = run_campaign(sessions, fork_sandbox, evals=5)
    with sessions() as s:
        seed_b = s.scalar(select(Evaluation).join(Program).where(
            Program.campaign_id == b["campaign_id"], Program.iteration == 0))
    assert seed_b.cache == "code"           # the second campaign's seed was never re-run
    assert b["seed_score"] == a["seed_score"]


def test_archive_rebuilds_from_database(sessions, fork_sandbox):
    from evoforge.db.store import CampaignStore

    out = run_campaign(sessions, fork_sandbox, evals=40, archive={"migration_interval": 7})
    store = CampaignStore(sessions, out["campaign_id"])
    with sessions() as s:
        stored = {(r.island, r.cell): (r.program_id, r.score) for r in
                  s.scalars(select(EliteCell).where(EliteCell.campaign_id == out["campaign_id"]))}
    rebuilt = store.rebuild_elites()
    assert rebuilt == stored
    assert len({pid for pid, _ in stored.values()}) > 1
    with sessions() as s:  # ring migration really copied an elite onto another island
        migrated = s.scalar(select(func.count()).select_from(EliteCell).join(
            Program, Program.id == EliteCell.program_id).where(
            EliteCell.campaign_id == out["campaign_id"], Program.parent_id.is_not(None),
            EliteCell.island != Program.island))
    assert migrated > 0


def test_novelty_gate_skips_near_duplicates_and_counts_them(sessions, fork_sandbox):
    out = run_campaign(sessions, fork_sandbox, evals=20, archive={"novelty_threshold": 0.6})
    assert out["novelty_skips"] > 0
    with sessions() as s:
        skipped = s.scalars(select(Evaluation).join(Program).where(
            Program.campaign_id == out["campaign_id"], Program.status == "rejected")).all()
    reasons = [e.artifacts.get("reason", "") for e in skipped if e.artifacts.get("novelty")]
    assert len(reasons) == out["novelty_skips"]
    assert all(r.startswith("novelty gate:") for r in reasons)


def test_novelty_gate_is_off_by_default(sessions, fork_sandbox):
    out = run_campaign(sessions, fork_sandbox, evals=10)
    assert out["novelty_skips"] == 0


def test_meta_note_is_refreshed_and_shown_to_the_mutator(sessions, fork_sandbox):
    out = run_campaign(sessions, fork_sandbox, evals=12, mutator={"meta_interval": 5})
    with sessions() as s:
        note = s.get(Campaign, out["campaign_id"]).meta_note
    assert note.startswith("Over the last 5 attempts")
    from evoforge.db.store import CampaignStore
    import random
    sel = CampaignStore(sessions, out["campaign_id"]).select(0, random.Random(0))
    assert sel.meta_note == note


def test_campaign_that_cannot_start_is_failed_not_stuck(sessions, fork_sandbox):
    cid = create_campaign(sessions, CampaignSpec(task="circle_packing", budget={"max_evaluations": 5})).id
    with sessions.begin() as s:  # a stored campaign whose task no longer exists on this worker
        c = s.get(Campaign, cid)
        c.task = "vanished_task"  # the task's one home is its column (db/campaign_config.py)
    out = EmbeddedExecutor(sessions, cid, sandbox=fork_sandbox).run()
    assert out["status"] == "failed" and "vanished_task" in out["error"]


def test_unknown_params_are_rejected():
    import pytest
    from evoforge.worker.campaign_service import SpecError

    with pytest.raises(SpecError, match="unknown param"):
        from evoforge.worker.campaign_service import resolve
        resolve(CampaignSpec(task="circle_packing", params={"nn": 3}))
