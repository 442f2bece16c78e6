import math
import random

from hypothesis import given, strategies as st

from evoforge.evolution.archive import (Archive, bin_index, cell_index, cell_key, code_size_feature,
                                        parse_cell_key)
from evoforge.evolution.types import FeatureDim

DIMS = [FeatureDim("size", 0.0, 100.0, 10), FeatureDim("spread", 0.0, 1.0, 4)]


def test_cell_index_fixed_edges_and_clamping():
    assert cell_index({"size": 0.0, "spread": 0.0}, DIMS) == (0, 0)
    assert cell_index({"size": 9.99, "spread": 0.25}, DIMS) == (0, 1)
    assert cell_index({"size": 10.0, "spread": 0.999}, DIMS) == (1, 3)
    assert cell_index({"size": 100.0, "spread": 1.0}, DIMS) == (9, 3)
    assert cell_index({"size": -5, "spread": 7}, DIMS) == (0, 3)
    assert cell_index({"size": math.inf, "spread": -math.inf}, DIMS) == (9, 0)


def test_nan_missing_and_junk_features_fall_in_bin_zero():
    assert cell_index({"size": math.nan}, DIMS) == (0, 0)
    assert cell_index({}, DIMS) == (0, 0)
    assert bin_index("abc", DIMS[0]) == 0 and bin_index(None, DIMS[0]) == 0


@given(st.floats(allow_nan=True), st.integers(1, 50))
def test_bin_index_always_in_range(v, bins):
    assert 0 <= bin_index(v, FeatureDim("d", -3.0, 7.0, bins)) < bins


def test_cell_key_roundtrip():
    assert parse_cell_key(cell_key((3, 0, 12))) == (3, 0, 12)
    assert parse_cell_key(cell_key(())) == ()


def test_code_size_ignores_comments_and_formatting():
    a = "def f(x):\n    return x+1\n"
    b = "def f(x):   # c\n\n    return (x + 1)\n"
    assert code_size_feature(a) == code_size_feature(b) > 0
    assert code_size_feature(a + "y = f(2) * 3\n") > code_size_feature(a)
    assert code_size_feature("def f(:") == 2.0


def test_offer_replaces_only_if_strictly_better():
    arc = Archive(2)
    assert arc.offer(0, (1, 1), 10, 0.5)
    assert not arc.offer(0, (1, 1), 11, 0.5)       # tie keeps the incumbent
    assert not arc.offer(0, (1, 1), 12, 0.4)
    assert arc.offer(0, (1, 1), 13, 0.6)
    assert arc.get(0, (1, 1)).program_id == 13
    assert not arc.offer(0, (2, 2), 14, None)
    assert not arc.offer(0, (2, 2), 15, float("nan"))
    assert arc.offer(1, (1, 1), 16, 0.1)           # islands are independent
    assert arc.filled() == 2 and arc.filled(0) == 1


def test_offer_features_uses_dims():
    arc = Archive(1, dims=DIMS)
    ok, cell = arc.offer_features(0, {"size": 55, "spread": 0.6}, 1, 1.0)
    assert ok and cell == (5, 2)
    assert arc.stats()["cells_per_island"] == 40


def test_ring_migration_every_k_generations():
    arc = Archive(3, migration_interval=5)
    arc.offer(0, (0,), 1, 3.0)
    arc.offer(1, (0,), 2, 1.0)
    arc.offer(1, (1,), 3, 0.5)
    arc.offer(2, (2,), 4, 2.0)
    assert arc.migrate(4) == [] and arc.migrate(0) == []
    moved = arc.migrate(5)
    assert [(m.source_island, m.target_island, m.program_id) for m in moved] == \
        [(0, 1, 1), (1, 2, 2), (2, 0, 4)]
    assert arc.get(1, (0,)).program_id == 1          # 3.0 beat 1.0
    assert arc.get(2, (0,)).program_id == 2          # island 1's best *before* this round
    assert arc.get(0, (2,)).program_id == 4
    # a second round cannot replace better incumbents with worse copies
    again = arc.migrate(10)
    assert all(m.score > 0 for m in again)
    assert arc.get(1, (0,)).score == 3.0


def test_migration_respects_better_incumbent():
    arc = Archive(2, migration_interval=1)
    arc.offer(0, (0,), 1, 1.0)
    arc.offer(1, (0,), 2, 5.0)
    moved = arc.migrate(1)
    assert [(m.source_island, m.program_id) for m in moved] == [(1, 2)]
    assert arc.get(1, (0,)).program_id == 2


def test_single_island_never_migrates():
    arc = Archive(1, migration_interval=1)
    arc.offer(0, (0,), 1, 1.0)
    assert arc.migrate(1) == [] and arc.migrate(1, force=True) == []


def test_stats_and_best():
    arc = Archive(2)
    assert arc.best() is None and arc.stats()["best_score"] is None
    arc.offer(0, (0,), 1, 1.0)
    arc.offer(1, (3,), 2, 2.0)
    arc.offer(1, (4,), 3, 2.0)
    island, cell, elite = arc.best()
    assert (island, cell, elite.program_id) == (1, (3,), 2)   # ties: lowest program id
    s = arc.stats()
    assert s["filled"] == 3 and s["best_program_id"] == 2 and s["islands"][1]["filled"] == 2


def test_rebuild_matches_live_archive_whatever_the_row_order():
    rng = random.Random(0)
    live = Archive(3, dims=DIMS)
    rows = []
    for pid in range(1, 400):
        island = rng.randrange(3)
        feats = {"size": rng.uniform(0, 120), "spread": rng.random()}
        score = round(rng.uniform(0, 10), 1)   # plenty of ties
        live.offer_features(island, feats, pid, score)
        rows.append({"id": pid, "island": island, "score": score, "features": feats})
    rng.shuffle(rows)
    rebuilt = Archive.rebuild(rows, num_islands=3, dims=DIMS)
    assert rebuilt.elites() == live.elites()


def test_rebuild_from_elite_rows_with_cell_keys():
    class Row:
        def __init__(self, **kw):
            self.__dict__.update(kw)
    rows = [Row(program_id=5, island=1, cell="2,3", score=1.5, features={}),
            Row(program_id=6, island=0, cell=(0, 0), score=0.5, features={})]
    arc = Archive.rebuild(rows)
    assert arc.num_islands == 2
    assert arc.get(1, (2, 3)).program_id == 5 and arc.get(0, (0, 0)).score == 0.5
