"""Ensemble choice, rests, bandit and prices (pure)."""
from __future__ import annotations

import random
from collections import Counter

import pytest

from evoforge.evolution.ensemble import (Ensemble, ModelSpec, Price, PriceTable, parse_model_spec,
                                         parse_model_specs)


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.mark.parametrize("spec, name, weight", [
    ("gpt-4o", "gpt-4o", 1.0),
    ("gpt-4o:0.8", "gpt-4o", 0.8),
    ("llama3:8b", "llama3:8b", 1.0),
    ("meta-llama/llama-3-8b-instruct:free", "meta-llama/llama-3-8b-instruct:free", 1.0),
    ("qwen2.5-coder:7b:3", "qwen2.5-coder:7b", 3.0),
    ("qwen:7:1", "qwen:7", 1.0),
])
def test_parse_model_spec(spec, name, weight):
    assert parse_model_spec(spec) == ModelSpec(name, weight)


@pytest.mark.parametrize("bad", ["", "m:0", "m:-1", "m:nan"])
def test_parse_model_spec_rejects(bad):
    with pytest.raises(ValueError):
        parse_model_spec(bad)


def test_duplicate_models_rejected():
    with pytest.raises(ValueError):
        parse_model_specs(["a:1", "a:2"])


def test_weighted_choice_follows_weights():
    ens = Ensemble(["big:1", "small:3"])
    rng = random.Random(0)
    counts = Counter(ens.choose(rng) for _ in range(4000))
    assert 0.70 < counts["small"] / 4000 < 0.80


def test_failing_model_rests_then_returns():
    clock = Clock()
    ens = Ensemble(["a:1", "b:1"], cooldown_s=30, clock=clock)
    assert ens.report_failure("a") == 30
    rng = random.Random(0)
    assert {ens.choose(rng) for _ in range(50)} == {"b"}
    clock.t += 31
    assert {ens.choose(rng) for _ in range(50)} == {"a", "b"}
    # consecutive failures double the rest; success clears it
    assert ens.report_failure("a") == 60
    assert ens.resting() == ["a"]
    ens.report_success("a")
    assert ens.resting() == []


def test_all_resting_picks_the_one_back_first():
    clock = Clock()
    ens = Ensemble(["a", "b"], cooldown_s=10, clock=clock)
    ens.report_failure("a")
    ens.report_failure("a")          # a rests 20 s
    ens.report_failure("b")          # b rests 10 s
    assert ens.choose(random.Random(0)) == "b"


def test_bandit_tries_each_then_prefers_improvement_per_cost():
    ens = Ensemble(["cheap", "dear"], bandit=True, exploration=0.1,
                   prices=PriceTable({"dear": Price(10, 30)}))
    rng = random.Random(0)
    first = {ens.choose(rng)}
    ens.record_outcome(first.pop(), 0.1, 0.0, tokens=1000)
    untried = ens.choose(rng)
    ens.record_outcome(untried, 0.1, 0.0, tokens=1000)
    for _ in range(20):
        ens.record_outcome("cheap", 0.1, 0.0, tokens=1000)   # 0.1 per 0.001 M tokens
        ens.record_outcome("dear", 0.1, 1.0)                 # 0.1 per USD
    counts = Counter(ens.choose(rng) for _ in range(100))
    assert counts["cheap"] == 100


def test_price_table_and_cost():
    table = PriceTable.parse(["gpt-4o=2.5/10", "gpt-4o-mini=0.15/0.6"])
    assert table.cost_usd("gpt-4o", 1_000_000, 100_000) == pytest.approx(3.5)
    assert table.cost_usd("local", 10**9, 10**9) == 0.0
    t2 = PriceTable.from_mapping({"m": {"prompt": 1, "completion": 2}, "n": [3, 4]})
    assert t2.cost_usd("m", 10**6, 10**6) == 3 and t2.cost_usd("n", 10**6, 0) == 3
    with pytest.raises(ValueError):
        PriceTable.parse(["nope"])
    with pytest.raises(ValueError):
        PriceTable.parse(["m=-1/2"])
