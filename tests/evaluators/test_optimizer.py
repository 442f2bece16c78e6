"""The optimizer task: harness run in-process (a stand-in for the sandbox) + trusted scoring."""
from __future__ import annotations

import json
import time
import types
from pathlib import Path

import numpy as np
import pytest

from evoforge.evaluators.base import get_task, task_key
from evoforge.evaluators.optimizer import task as opt

ROOT = Path(__file__).resolve().parents[2]
TASK = get_task("optimizer")
PARAMS = TASK.Params()


def run_like_sandbox(code: str, driver: str, inputs: list, seed: int = 0) -> list:
    """What the sandbox does, minus isolation: exec the candidate into a module, exec the
    trusted driver, call drive(), and return plain data (JSON round trip: arrays -> lists)."""
    module = types.ModuleType("candidate")
    exec(compile(code, "<candidate>", "exec"), module.__dict__)
    namespace: dict = {}
    exec(compile(driver, "<driver>", "exec"), namespace)
    outputs = namespace["drive"](module, inputs, seed)
    return json.loads(json.dumps(outputs, default=lambda a: np.asarray(a).tolist()))


def evaluate(code: str):
    results = []
    for stage in TASK.stages(PARAMS):
        results.append(TASK.score(PARAMS, stage, run_like_sandbox(code, TASK.driver, stage.inputs)))
        if not results[-1].valid:
            break
    return results


@pytest.fixture(scope="module")
def example_results():
    out = {}
    for name in ("sgd", "adam", "lion"):
        t0 = time.perf_counter()
        out[name] = evaluate((ROOT / "examples" / "optimizer" / f"{name}.py").read_text())
        out[name + "_s"] = time.perf_counter() - t0
    return out


def test_registered_with_contract_fields():
    assert TASK.name == "optimizer" and TASK.entrypoint == "update" and TASK.resources.gpu is False
    assert task_key(TASK, PARAMS).startswith("optimizer@1:")
    stages = TASK.stages(PARAMS)
    assert stages[0].inputs == TASK.probe(PARAMS)  # stage 1 reuses the probe outputs
    json.dumps([s.inputs for s in stages])          # sandbox inputs are plain JSON data
    assert "init(param)" in TASK.context(PARAMS)


def test_adam_and_lion_score_above_sgd(example_results):
    sgd, adam, lion = (example_results[n][-1] for n in ("sgd", "adam", "lion"))
    assert sgd.valid and adam.valid and lion.valid, (sgd.reason, adam.reason, lion.reason)
    assert adam.combined_score == pytest.approx(1.0)  # the example is the baseline itself
    assert adam.combined_score > 2 * sgd.combined_score
    assert lion.combined_score > 2 * sgd.combined_score
    assert adam.metrics["sgd_score"] == pytest.approx(sgd.combined_score)
    assert adam.metrics["lion_score"] == pytest.approx(lion.combined_score)
    for name in ("sgd", "adam", "lion"):
        assert example_results[name + "_s"] < 30.0
    dims = {d.name: d for d in TASK.feature_dims(PARAMS)}
    assert set(lion.features) == set(dims)
    assert 0.9 < lion.metrics["mlp_accuracy"] <= 1.0 and 0.9 < adam.metrics["logistic_accuracy"] <= 1.0


def test_divergence_at_some_learning_rates_is_allowed(example_results):
    sgd = example_results["sgd"][-1]
    assert sgd.valid and sgd.metrics["quadratic_diverged_lrs"] > 0


NAN_UPDATE = """
import numpy as np
def init(param):
    return None
def update(param, grad, state, t, lr):
    return param - lr * grad * np.nan, state
"""


def test_nan_update_is_invalid():
    results = evaluate(NAN_UPDATE)
    assert not results[-1].valid and len(results) == 1  # stopped at the probe stage
    assert "non-finite" in results[-1].reason
    suite = TASK.stages(PARAMS)[1]
    assert not TASK.score(PARAMS, suite, run_like_sandbox(NAN_UPDATE, TASK.driver, suite.inputs)).valid


def test_frozen_optimizer_scores_far_below_adam():
    frozen = "def init(p):\n    return None\ndef update(p, g, s, t, lr):\n    return p, s\n"
    result = evaluate(frozen)[-1]
    assert result.valid and result.combined_score < 0.1


def test_wrong_shape_is_an_error_inside_the_harness():
    bad = "import numpy as np\ndef init(p):\n    return None\ndef update(p, g, s, t, lr):\n    return np.zeros(3), s\n"
    with pytest.raises(ValueError, match="shape"):
        run_like_sandbox(bad, TASK.driver, TASK.probe(PARAMS))


def test_seed_program_is_valid():
    result = evaluate(TASK.seed_program(PARAMS))[-1]
    assert result.valid and result.combined_score > 0
    assert "EVOLVE-BLOCK-START" in TASK.seed_program(PARAMS)


@pytest.mark.parametrize("garbage", [None, "x", 3, [], [None], [{"params": "x"}], [{"params": [[["a"]]] * 2}],
                                     [{"params": [[[1.0, 2.0]]] * 2}]])
def test_garbage_outputs_are_invalid_not_exceptions(garbage):
    stage = TASK.stages(PARAMS)[0]
    result = TASK.score(PARAMS, stage, garbage)
    assert result.valid is False and result.reason


def test_tampered_params_are_judged_by_trusted_losses():
    """The score comes from losses recomputed here: claimed curves are ignored."""
    stage = TASK.stages(PARAMS)[0]
    out = run_like_sandbox((ROOT / "examples" / "optimizer" / "adam.py").read_text(), TASK.driver, stage.inputs)
    honest = TASK.score(PARAMS, stage, out)
    out[0]["curve"] = [[0.0] * 3 for _ in out[0]["curve"]]
    assert TASK.score(PARAMS, stage, out).combined_score == honest.combined_score
    out[0]["params"] = [[list(np.asarray(p[0]) * 10.0)] for p in out[0]["params"]]
    assert TASK.score(PARAMS, stage, out).combined_score < honest.combined_score
