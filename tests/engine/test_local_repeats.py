"""The local mutator draws again (within `max_draws`) instead of proposing code the campaign has
already evaluated (issue 12, item 11): a campaign replays fewer programs from the cache."""
import random

from sqlalchemy import func, select

from evoforge.db.models import Evaluation, Program
from evoforge.evolution.ast_mutator import LocalASTMutator
from evoforge.evolution.step import Selection
from evoforge.evolution.types import ProgramRef
from evoforge.worker.campaign_service import create_campaign
from evoforge.worker.embedded import EmbeddedExecutor
from evoforge.db.campaign_config import CampaignSpec

PARENT = ProgramRef(id=1, code="def f(x):\n    return x * 2.5 + 1.25\n", score=1.0, status="ok",
                    island=0, generation=0)


def test_redraws_until_the_code_is_new():
    seen_codes: set[str] = set()
    mutator = LocalASTMutator()
    for i in range(40):
        m = mutator.mutate(Selection(island=0, parent=PARENT), random.Random(i),
                           seen=seen_codes.__contains__)
        assert m.code is not None
        if m.extra.get("repeat"):
            assert m.extra["draws"] == mutator.max_draws
        else:
            assert m.code not in seen_codes and 1 <= m.extra["draws"] <= mutator.max_draws
        seen_codes.add(m.code)
    assert len(seen_codes) > 30  # a tiny program: a few repeats once its edits run out


def test_bounded_when_everything_is_seen():
    calls = []
    m = LocalASTMutator(max_draws=5).mutate(Selection(island=0, parent=PARENT), random.Random(0),
                                            seen=lambda code: calls.append(code) or True)
    assert m.code is not None and m.extra == {**m.extra, "repeat": True, "draws": 5}
    assert len(calls) <= 5


def test_without_seen_the_draw_is_unchanged():
    a = LocalASTMutator().mutate(Selection(island=0, parent=PARENT), random.Random(3))
    b = LocalASTMutator().mutate(Selection(island=0, parent=PARENT), random.Random(3),
                                 seen=lambda code: False)
    assert a.code == b.code and "draws" not in a.extra and b.extra["draws"] == 1


def _code_cache_hits(tmp_path, name: str, fork_sandbox, evals: int) -> int:
    """Code-cache hits of a fresh campaign in its own database (a second campaign of the same
    project would replay the first one's cache)."""
    from evoforge.db.engine import session_factory, upgrade

    url = f"sqlite:///{tmp_path / f'{name}.db'}"
    upgrade(url)
    sessions = session_factory(url)
    spec = CampaignSpec(task="circle_packing", seed=0, budget={"max_evaluations": evals})
    cid = create_campaign(sessions, spec).id
    EmbeddedExecutor(sessions, cid, parallel=1, sandbox=fork_sandbox).run()
    with sessions() as s:
        by_cache = dict(s.execute(select(Evaluation.cache, func.count()).join(Program)
                                  .where(Program.campaign_id == cid, Evaluation.status == "ok")
                                  .group_by(Evaluation.cache)).all())
    assert by_cache.get("miss", 0) >= evals // 3, by_cache  # the candidates really ran
    return by_cache.get("code", 0)


def test_campaign_repeats_fewer_programs(tmp_path, fork_sandbox, monkeypatch):
    """The same seeded campaign with and without the redraw: code-cache hits (programs the
    campaign had already evaluated) drop by at least half."""
    with_redraw = _code_cache_hits(tmp_path, "redraw", fork_sandbox, 120)
    monkeypatch.setattr(LocalASTMutator, "takes_seen", False)  # the step then passes no `seen`
    without = _code_cache_hits(tmp_path, "plain", fork_sandbox, 120)
    assert without >= 6, without  # the comparison means something
    assert with_redraw * 2 <= without, (with_redraw, without)
