import random
import time
from collections import Counter

import pytest

from evoforge.evolution.selection import (SelectionConfig, choose, fitness_weighted, select_inspirations,
                                          select_parent)
from evoforge.evolution.types import ProgramRef


def elite(pid, score, island=0, code=None):
    return ProgramRef(id=pid, code=code or f"x = {pid}\n", score=score, status="ok",
                      island=island, generation=1, features={"f": float(pid)})


ISLAND0 = [elite(1, 1.0), elite(2, 5.0), elite(3, 2.0), elite(4, 0.0)]
ISLAND1 = [elite(10, 9.0, 1), elite(11, 3.0, 1)]
ALL = ISLAND0 + ISLAND1


def test_exploitation_prefers_fitter_elites():
    counts = Counter(fitness_weighted(ISLAND0, random.Random(s)).id for s in range(2000))
    assert counts[2] > counts[3] > counts[1] > counts[4] > 0


def test_modes_follow_configured_ratios():
    cfg = SelectionConfig(exploit=0.7, explore=0.2, top=0.1)
    modes = Counter(select_parent(ISLAND0, ALL, random.Random(s), cfg)[1] for s in range(3000))
    assert abs(modes["exploit"] / 3000 - 0.7) < 0.04
    assert abs(modes["explore"] / 3000 - 0.2) < 0.04
    assert abs(modes["top"] / 3000 - 0.1) < 0.03


def test_exploration_is_uniform_over_filled_cells():
    cfg = SelectionConfig(exploit=0, explore=1, top=0)
    counts = Counter(select_parent(ISLAND0, ALL, random.Random(s), cfg)[0].id for s in range(4000))
    assert set(counts) == {1, 2, 3, 4}
    assert max(counts.values()) / min(counts.values()) < 1.25


def test_global_top_draws_from_all_islands():
    cfg = SelectionConfig(exploit=0, explore=0, top=1, global_top_k=1)
    parent, mode = select_parent(ISLAND0, ALL, random.Random(0), cfg)
    assert (parent.id, mode) == (10, "top")


def test_empty_island_falls_back_and_nothing_gives_none():
    parent, _ = select_parent([], ALL, random.Random(0), SelectionConfig(exploit=1, explore=0, top=0))
    assert parent.id in {2, 10, 11}
    assert select_parent([], [], random.Random(0)) == (None, "none")


def test_unscored_elites_still_selectable_when_nothing_is_scored():
    failed = [ProgramRef(id=1, code="x", score=None, status="error", island=0, generation=0)]
    parent, _ = select_parent(failed, failed, random.Random(0))
    assert parent.id == 1


def test_selection_independent_of_input_order():
    for s in range(50):
        a = choose(0, ISLAND0, ALL, random.Random(s))
        b = choose(0, list(reversed(ISLAND0)), list(reversed(ALL)), random.Random(s))
        assert a == b


def test_inspirations_are_top_plus_others_deduplicated_without_parent():
    parent = ISLAND0[1]  # id 2, the island's best
    clone = elite(99, 0.5, 1, code=ISLAND0[2].code + "# same program, other island\n")
    migrated = elite(2, 5.0, 1)  # the parent migrated to island 1
    cfg = SelectionConfig(top_k=2, diverse=10)
    insp, top = select_inspirations(parent, ISLAND0, ALL + [clone, migrated], random.Random(0), cfg)
    ids = [r.id for r in insp]
    assert [r.id for r in top] == [3, 1]
    assert ids[:2] == [3, 1]
    assert 2 not in ids and len(ids) == len(set(ids))
    assert not ({3, 99} <= set(ids))          # same normalised code counted once
    assert {10, 11} <= set(ids)


def test_config_validation():
    with pytest.raises(ValueError):
        SelectionConfig(exploit=0, explore=0, top=0)
    with pytest.raises(ValueError):
        SelectionConfig(temperature=0)


def test_cost_does_not_depend_on_programs_stored():
    # the inputs are elites only; 100 elites cost the same whatever the history size
    elites = [elite(i, float(i % 17), i % 4) for i in range(100)]
    rng = random.Random(0)
    t0 = time.perf_counter()
    for _ in range(200):
        choose(0, [e for e in elites if e.island == 0], elites, rng)
    per_call = (time.perf_counter() - t0) / 200
    assert per_call < 0.01
