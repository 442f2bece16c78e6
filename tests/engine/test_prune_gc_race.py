"""The code-blob gc (a prune's) never takes a blob from under a commit, of any campaign.

- A campaign is pruned between its store's "already stored" check and the commit of a program
  whose code only pruned programs had (SQLite and PostgreSQL): the gc deletes the blob the
  store remembers as stored (the store of a running campaign, or of a worker, lives on).
- A second campaign with the same seed proposes the same programs as a finished first one (the
  local mutator is seeded): evaluation-cache hits whose code blobs the first one wrote. The
  first one is pruned while such a commit's transaction is open, its program row written
  (PostgreSQL: row locks; SQLite serialises writers, so this cannot interleave there).

Before db/blobs.py `hold_codes` and the gc's lock-then-look, both left a program whose code
blob was gone (its code unreadable for good). Real store, real embedded executor, real prune.
"""
from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from evoforge.db import blobs, store as store_module
from evoforge.db.campaign_config import CampaignSpec
from evoforge.db.engine import session_factory, upgrade
from evoforge.db.models import Campaign, CodeBlob, EliteCell, Program
from evoforge.db.store import CampaignStore
from evoforge.evolution.hashing import code_hash, run_hash
from evoforge.evolution.step import Child
from evoforge.evolution.types import ERROR, EvalResult, Mutation
from evoforge.worker import prune
from evoforge.worker.campaign_service import create_campaign
from evoforge.worker.embedded import EmbeddedExecutor
from tests.integration.services import postgres_server  # noqa: F401

SPEC = CampaignSpec(task="circle_packing", seed=3, budget={"max_evaluations": 30})


def _sqlite(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'race.db'}"
    upgrade(url)
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return _sqlite(tmp_path)
    server = request.getfixturevalue("postgres_server")
    u = server.createdb()
    upgrade(u)
    return u


def _first_campaign(sessions, sandbox) -> tuple[int, set[str]]:
    """A finished campaign and the code hashes a prune (keep elites) will leave unneeded."""
    first = create_campaign(sessions, SPEC).id
    EmbeddedExecutor(sessions, first, sandbox=sandbox).run()
    with sessions() as s:
        best = s.get(Campaign, first).best_program_id
        kept = set(s.scalars(select(EliteCell.program_id).where(EliteCell.campaign_id == first)))
        rows = s.execute(select(Program.id, Program.code_hash)
                         .where(Program.campaign_id == first, Program.code_hash.is_not(None))).all()
    keep = {h for pid, h in rows if pid in kept or pid == best}
    doomed = {h for _, h in rows} - keep
    assert doomed, "nothing to collect: the test proves nothing"
    return first, doomed


def _no_program_lost_its_code(sessions) -> None:
    with sessions() as s:
        rows = s.execute(select(Program.id, Program.code_hash)
                         .where(Program.pruned_at.is_(None), Program.code_hash.is_not(None))).all()
        stored = set(s.scalars(select(CodeBlob.hash)))
        lost = [pid for pid, h in rows if h not in stored]
        assert not lost, f"programs {lost} refer to code blobs that are gone"
        for p in s.scalars(select(Program).where(Program.pruned_at.is_(None))):
            blobs.program_texts(s, p)    # every kept text still decodes


def _child(iteration: int, parent, code: str, quoted: str) -> Child:
    """A failed LLM-style program (never an elite: prunable) whose prompt quotes `quoted`."""
    prompt = f"Improve this:\n```python\n{quoted.rstrip()}\n```\nAttempt {iteration}."
    return Child(iteration=iteration, island=0, parent_id=parent.id,
                 generation=parent.generation + 1, code=code, code_hash=code_hash(code),
                 mutation=Mutation(code=code, kind="llm:diff", prompt=prompt,
                                   response=f"rewrite:\n{code}", model="m"),
                 result=EvalResult(status=ERROR, score=None, metrics={}, features={},
                                   duration_s=0.01),
                 run_hash=run_hash(code, 0))


def test_a_prune_between_the_stored_check_and_the_commit(url, fork_sandbox):
    """A store remembers the codes it committed (`CampaignStore._stored`: no insert for them).
    A prune collects one of them; the same store then commits that code again, with a prompt
    that quotes it: the program must get its code blob, and its prompt must decode."""
    sessions = session_factory(url)
    cid = create_campaign(sessions, CampaignSpec(task="circle_packing", seed=3,
                                                 budget={"max_evaluations": 6})).id
    EmbeddedExecutor(sessions, cid, sandbox=fork_sandbox).run()
    with sessions() as s:
        parent = s.get(Program, s.get(Campaign, cid).best_program_id)
        parent_code = blobs.program_texts(s, parent).code
    code = parent_code + "\n# a variant only failed programs have\n" + "x = 1\n" * 20
    store = CampaignStore(sessions, cid)
    store.commit(_child(100, parent, code, parent_code))
    store.commit(_child(101, parent, code + "# again\n", code))     # its prompt quotes `code`
    result = prune.prune_campaign(sessions, cid, keep=frozenset({"elites"}))
    with sessions() as s:
        assert result.code_blobs_deleted >= 2 and not blobs.has_code(s, code_hash(code))
    committed = store.commit(_child(102, parent, code, code))
    with sessions() as s:
        p = s.get(Program, committed.program_id)
        assert p.pruned_at is None and blobs.ref_hashes(p.prompt_z) == [code_hash(code)]
        texts = blobs.program_texts(s, p)
        assert texts.code == code and code.rstrip() in texts.prompt
    _no_program_lost_its_code(sessions)


def test_gc_while_a_commit_is_open_on_postgres(postgres_server, fork_sandbox, monkeypatch):
    url = postgres_server.createdb()
    upgrade(url)
    sessions = session_factory(url)
    first, doomed = _first_campaign(sessions, fork_sandbox)
    fired: list[str] = []
    pruned_meanwhile: list[bool] = []
    real = store_module.model_stats.record

    def record_then_prune(conn, campaign_id, child):
        # Inside the commit's transaction: its program row (and hold) are written, not committed.
        real(conn, campaign_id, child)
        h = code_hash(child.code) if child.code is not None else None
        if campaign_id != first and h in doomed and not fired:
            with sessions() as s:
                if s.scalar(select(Program.id).where(Program.code_hash == h,
                                                     Program.pruned_at.is_(None),
                                                     Program.campaign_id != first).limit(1)):
                    return
            fired.append(h)
            done: list = []
            t = threading.Thread(target=lambda: done.append(prune.prune_campaign(
                sessions, first, keep=frozenset({"elites"}))), daemon=True)
            t.start()
            t.join(60)    # never waits for this open transaction: it skips what it holds
            # (checked after the run: an exception here would fail the commit instead)
            pruned_meanwhile.append(bool(done) and done[0].pruned > 0)

    monkeypatch.setattr(store_module.model_stats, "record", record_then_prune)
    second = create_campaign(sessions, SPEC).id
    out = EmbeddedExecutor(sessions, second, sandbox=fork_sandbox).run()
    assert fired, "the second campaign never re-proposed a prunable program"
    assert pruned_meanwhile == [True], "the prune waited for (or failed on) the open commit"
    assert out["failures"] == 7 and out["status"] == "completed"   # as the first run's
    with sessions() as s:
        p = s.scalar(select(Program).where(Program.campaign_id == second,
                                           Program.code_hash == fired[0]).limit(1))
        assert p.status == "ok" and blobs.has_code(s, fired[0])
        # a later gc, with nothing in flight, collects what is really unneeded and no more
    with sessions.begin() as s:
        blobs.gc_code_blobs(s)
    _no_program_lost_its_code(sessions)
