"""Behaviour relative to the archive: a real alpha_factors campaign (embedded engine, SQLite,
fork-server sandbox, local mutator) whose elite_corr feature is computed by the store from the
factor fingerprints of the island's current elites, and decides the MAP-Elites cell."""
from sqlalchemy import select

from evoforge.db.blobs import get_codes
from evoforge.db.models import Campaign, EliteCell, Evaluation, Program
from evoforge.db.store import CampaignStore
from evoforge.evaluators.base import FINGERPRINT_KEY
from evoforge.evolution import archive as cells
from evoforge.evolution.types import OK
from evoforge.worker.campaign_service import create_campaign
from evoforge.worker.embedded import EmbeddedExecutor
from evoforge.db.campaign_config import CampaignSpec

PARAMS = {"data": "synthetic", "synth_dates": 300, "synth_assets": 12, "synth_signal_ic": 0.1}


def test_elite_correlation_is_a_stored_feature_that_places_programs(sessions, fork_sandbox):
    spec = CampaignSpec(task="alpha_factors", params=PARAMS, seed=1,
                        budget={"max_evaluations": 14}, archive={"islands": 2, "migration_interval": 5})
    cid = create_campaign(sessions, spec).id
    out = EmbeddedExecutor(sessions, cid, sandbox=fork_sandbox).run()
    assert out["status"] == "completed" and out["evaluations"] == 14
    with sessions() as s:
        dims = s.get(Campaign, cid).config["archive"]["dims"]
        rows = s.execute(select(Program.iteration, Program.code_hash, Evaluation.features, Evaluation.artifacts)
                         .join(Evaluation, Evaluation.program_id == Program.id)
                         .where(Program.campaign_id == cid, Program.status == OK)
                         .order_by(Program.id)).all()
        stored = {(e.island, e.cell): (e.program_id, e.score) for e in
                  s.scalars(select(EliteCell).where(EliteCell.campaign_id == cid))}
    assert [d["name"] for d in dims] == ["code_size", "elite_corr"]
    assert len(rows) > 3 and rows[0].iteration == 0
    for r in rows:
        assert "elite_corr" in r.features and 0.0 <= r.features["elite_corr"] <= 1.0
        assert isinstance(r.artifacts[FINGERPRINT_KEY], str)
    assert rows[0].features["elite_corr"] == 0.0                 # the seed: no elites yet
    assert any(r.features["elite_corr"] > 0.0 for r in rows[1:])  # children resemble their parents
    store = CampaignStore(sessions, cid)
    # The cell really depends on it: same code, another elite_corr -> another cell.
    child = rows[1]
    with sessions() as s:
        code = get_codes(s, [child.code_hash])[child.code_hash]
    moved = {**child.features, "elite_corr": 0.0 if child.features["elite_corr"] >= 0.5 else 0.99}
    assert store.cell_of(code, child.features) != store.cell_of(code, moved)
    assert (cells.parse_cell_key(store.cell_of(code, child.features))[1]
            == cells.bin_index(child.features["elite_corr"], store.dims[1]))
    # ... and in the real table: the seed (elite_corr 0) and its close copies hold different cells.
    assert len({cells.parse_cell_key(cell)[1] for _, cell in stored}) > 1
    # Stored features are the whole truth: the archive rebuilds from them alone.
    assert store.rebuild_elites() == stored
    # ... and the fingerprints never reach prompts: ProgramRefs of a hooked store leave them out.
    from evoforge.worker.runtime import Runtime
    rt = Runtime.for_campaign(sessions, cid, sandbox=fork_sandbox)
    sel = rt.store.select(0, __import__("random").Random(0))
    assert sel.parent is not None and FINGERPRINT_KEY not in sel.parent.artifacts
