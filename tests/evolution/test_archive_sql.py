"""The SQL fast path of the archive (db/store.py: placement as one upsert per cell, ring migration
in the commit) equals the pure reference (evolution/archive.py) for the same sequence of commits.

Random programs (sizes spread over the code-size bins, features, scores from a small set so that
ties are common, failures, programs without a parent offered to every island) are committed
through a real CampaignStore on SQLite, with migration every few iterations; the elite table
must equal what `Archive` computes from the same sequence, cell for cell, program for program.
"""
import random

import pytest
from sqlalchemy import select

from evoforge.db.models import EliteCell
from evoforge.db.store import CampaignStore
from evoforge.evolution import archive as cells
from evoforge.evolution import hashing
from evoforge.evolution.step import Child
from evoforge.evolution.types import ERROR, OK, EvalResult, Mutation
from evoforge.worker.campaign_service import create_campaign
from evoforge.db.campaign_config import CampaignSpec

ISLANDS, MIGRATION_INTERVAL = 3, 4
SCORES = (0.1, 0.2, 0.3, 0.5, 0.8)


def _random_children(rng: random.Random, count: int, dims: list):
    """(child, offered-parent index) pairs; parents are named by commit index, resolved to
    program ids while committing."""
    out = []
    for it in range(count):
        size = rng.randrange(1, 400)
        code = "x = [" + "1, " * size + "]\n"
        ok = it == 0 or rng.random() < 0.85
        features = {d.name: rng.uniform(d.lo - 1, d.hi + 1) for d in dims
                    if d.name != cells.CODE_SIZE and rng.random() < 0.8}
        score = SCORES[0] if it == 0 else rng.choice(SCORES)  # a best seed would never migrate
        result = (EvalResult(status=OK, score=score, features=features) if ok else
                  EvalResult(status=ERROR, score=None, artifacts={"reason": "boom"}))
        parent = None if it == 0 or rng.random() < 0.03 else rng.randrange(it)
        out.append((it, code, result, parent, rng.randrange(ISLANDS)))
    return out


def _elite_table(sessions, campaign_id: int) -> dict:
    with sessions() as s:
        rows = s.execute(select(EliteCell.island, EliteCell.cell, EliteCell.program_id,
                                EliteCell.score).where(EliteCell.campaign_id == campaign_id)).all()
    return {(island, cell): (pid, score) for island, cell, pid, score in rows}


@pytest.mark.parametrize("seed", range(4))
def test_sql_placement_and_migration_equal_the_pure_archive(sessions, seed):
    spec = CampaignSpec(task="circle_packing",
                        archive={"islands": ISLANDS, "migration_interval": MIGRATION_INTERVAL})
    cid = create_campaign(sessions, spec).id
    store = CampaignStore(sessions, cid)
    dims = store.dims
    assert len(dims) >= 1 and store.islands == ISLANDS

    rng = random.Random(seed)
    reference = cells.Archive(ISLANDS, MIGRATION_INTERVAL, dims)
    program_ids: list[int] = []
    migrations = 0
    for it, code, result, parent, island in _random_children(rng, 90, dims):
        parent_id = None if parent is None else program_ids[parent]
        child = Child(iteration=it, island=island, parent_id=parent_id, generation=0, code=code,
                      code_hash=hashing.code_hash(code), mutation=Mutation(code=code, kind="test"),
                      result=result)
        pid = store.commit(child).program_id
        program_ids.append(pid)
        # the same program through the pure rules
        if result.status == OK:
            cell = cells.program_cell(code, result.features, dims)
            for i in cells.target_islands(parent_id, island, ISLANDS):
                reference.offer(i, cell, pid, result.score, result.features)
        migrations += len(reference.migrate(it))

    expected = {(i, cells.cell_key(c)): (e.program_id, e.score) for i, c, e in reference.elites()}
    assert migrations > 0  # the sequence did exercise migration
    assert _elite_table(sessions, cid) == expected
    assert store.rebuild_elites() == expected


def test_migrants_pick_each_islands_best_lowest_id_on_ties():
    rows = [(0, (1,), 7, 0.5, {}), (0, (2,), 3, 0.5, {}), (1, (0,), 9, 0.9, {}),
            (2, (4,), 5, 0.1, {})]
    assert cells.migrants(rows, 3) == [(1, (2,), 3, 0.5, {}), (2, (0,), 9, 0.9, {}),
                                       (0, (4,), 5, 0.1, {})]
    assert cells.migrants(rows, 1) == []


def test_target_islands_and_migration_due():
    assert list(cells.target_islands(None, 2, 4)) == [0, 1, 2, 3]
    assert list(cells.target_islands(7, 2, 4)) == [2]
    assert [i for i in range(13) if cells.migration_due(i, 4)] == [4, 8, 12]
    assert not any(cells.migration_due(i, 0) for i in range(10))
    assert cells.replaces(0.2, None) and cells.replaces(0.3, 0.2)
    assert not cells.replaces(0.2, 0.2)  # the tie keeps the incumbent
