"""What the LLM bandit learns lives in the database: the commit adds each outcome to its model's
row, in the commit's transaction, and every worker loads the rows before it chooses a model."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from evoforge.db import model_stats
from evoforge.db.campaign_config import CampaignSpec
from evoforge.db.models import Program
from evoforge.db.store import CampaignStore
from evoforge.evolution.ensemble import ArmStats
from evoforge.evolution.step import Child
from evoforge.evolution.types import OK, REJECTED, EvalResult, Mutation
from tests.llm.bandit_server import BANDIT_MUTATOR, bandit_server, endpoints_toml, thirds
from tests.worker.conftest import new_campaign
from evoforge.worker.campaign_service import create_campaign
from evoforge.worker.embedded import EmbeddedExecutor


def child(it: int, model: str, status: str, score: float | None, tokens: int = 100) -> Child:
    return Child(iteration=it, island=0, parent_id=None, generation=1,
                 code=None if status == REJECTED else f"x = {it}", code_hash=None,
                 mutation=Mutation(code=None, kind="llm:diff", model=model, prompt_tokens=tokens),
                 result=EvalResult(status=status, score=score), parent_score=1.0)


def test_the_commit_adds_each_outcome_once(sessions):
    cid = new_campaign(sessions, llm=True)
    store = CampaignStore(sessions, cid)
    store.commit(child(1, "good", OK, 1.5))
    store.commit(child(2, "good", OK, 0.5))
    store.commit(child(3, "bad", REJECTED, None, tokens=0))
    store.commit(child(3, "bad", REJECTED, None, tokens=0))     # a redelivered iteration
    local = Child(iteration=4, island=0, parent_id=None, generation=1, code="y = 1",
                  code_hash=None, mutation=Mutation(code="y = 1", kind="ast:const"),
                  result=EvalResult(status=OK, score=3.0))
    store.commit(local)                                          # no model: no row
    assert model_stats.read(sessions, cid) == {
        "good": ArmStats(pulls=2, valid=2, improvement=0.5, spend=200 / 1e6),
        "bad": ArmStats(pulls=1, valid=0, improvement=0.0, spend=0.0)}
    assert model_stats.read(sessions, cid + 1) == {}


@pytest.fixture
def fake_endpoint(tmp_path, monkeypatch):
    with bandit_server() as fake:
        path = tmp_path / "endpoints.toml"
        path.write_text(endpoints_toml(fake.base_url))
        monkeypatch.setenv("EVOFORGE_LLM_ENDPOINTS", str(path))
        yield fake


def test_embedded_bandit_campaign_learns_from_the_database(sessions, fork_sandbox, fake_endpoint):
    spec = CampaignSpec(task="circle_packing", params={"n": 26}, seed=0, parallel=2,
                        budget={"max_evaluations": 61}, mutator=BANDIT_MUTATOR)
    cid = create_campaign(sessions, spec).id
    out = EmbeddedExecutor(sessions, cid, parallel=2, sandbox=fork_sandbox).run()
    assert out["status"] == "completed", out
    with sessions() as s:
        models = list(s.scalars(select(Program.model).where(Program.campaign_id == cid,
                                                            Program.iteration > 0)
                                .order_by(Program.id)))
    learned = model_stats.read(sessions, cid)
    assert {m: s.pulls for m, s in learned.items()} == {m: models.count(m) for m in set(models)}
    assert learned["bad"].valid == 0 and learned["good"].valid > 0
    first, last, third = thirds(models, "bad")   # evenly: about half of every third
    assert last <= first and last < third / 4, (first, last, models)
    assert models.count("bad") < len(models) / 4, models
    assert len(fake_endpoint.chat_requests("good")) == models.count("good")
