"""The bandit's statistics as data: increments, loading them, and how they steer the choice."""
from __future__ import annotations

import math
import random
from collections import Counter

from evoforge.evolution.ensemble import ArmStats, Ensemble, improvement_of


def test_an_outcome_is_an_increment():
    assert ArmStats.of_outcome(0.5, 0.01, 999) == ArmStats(1, 1, 0.5, 0.01)
    assert ArmStats.of_outcome(-1.0, 0.0, 2_000_000, valid=False) == ArmStats(1, 0, 0.0, 2.0)
    assert ArmStats.of_outcome(math.nan, 0.0) == ArmStats(1, 1, 0.0, 0.0)
    assert ArmStats(1, 1, 0.5, 1.0) + ArmStats(2, 0, 0.25, 1.0) == ArmStats(3, 1, 0.75, 2.0)
    assert improvement_of(1.0, 1.5, ok=True) == 0.5
    assert improvement_of(1.0, 0.5, ok=True) == 0.0
    assert improvement_of(1.0, 9.0, ok=False) == 0.0
    assert improvement_of(None, 9.0, ok=True) == 0.0


def test_loaded_stats_replace_what_the_ensemble_knew():
    ens = Ensemble(["a", "b"], bandit=True)
    ens.record_outcome("a", 1.0, 0.1)
    ens.load({"b": ArmStats(3, 3, 0.0, 0.3)})
    snap = ens.snapshot()
    assert snap["a"]["pulls"] == 0 and snap["b"]["pulls"] == 3
    assert ens.choose(random.Random(0)) == "a"          # untried after the load: first


def test_a_model_that_never_makes_a_valid_program_falls_behind():
    """No model improved yet (both rates are zero): the share of valid programs decides."""
    ens = Ensemble(["good", "bad"], bandit=True)
    good, bad = ArmStats(), ArmStats()
    rng = random.Random(1)
    picks = []
    for _ in range(120):
        ens.load({"good": good, "bad": bad})
        model = ens.choose(rng)
        picks.append(model)
        if model == "good":
            good = good + ArmStats.of_outcome(0.0, 0.0, 170, valid=True)
        else:
            bad = bad + ArmStats.of_outcome(0.0, 0.0, 0, valid=False)
    first, last = Counter(picks[:40]), Counter(picks[-40:])
    assert last["bad"] < first["bad"] and last["bad"] < last["good"] / 4, (first, last)


def test_without_the_bandit_the_stats_do_not_steer():
    ens = Ensemble(["good", "bad"])
    ens.load({"good": ArmStats(50, 50, 1.0, 0.1), "bad": ArmStats(50, 0, 0.0, 0.0)})
    counts = Counter(ens.choose(random.Random(i)) for i in range(400))
    assert 150 < counts["bad"] < 250
