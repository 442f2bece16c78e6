"""The alpha_factors task: harness run in-process (a stand-in for the sandbox) + trusted scoring."""
from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import pytest

from evoforge.evaluators.alpha_factors import data, metrics
from evoforge.evaluators.base import get_task, task_key

ROOT = Path(__file__).resolve().parents[2]
TASK = get_task("alpha_factors")
SYNTH = TASK.Params(data="synthetic", synth_dates=1500, synth_assets=50, synth_signal_ic=0.1, synth_seed=3)


def run_like_sandbox(code: str, driver: str, inputs: list, seed: int = 0) -> list:
    """What the sandbox does, minus isolation: exec the candidate into a module, exec the
    trusted driver, call drive(), and return plain data (JSON round trip: arrays -> lists)."""
    module = types.ModuleType("candidate")
    exec(compile(code, "<candidate>", "exec"), module.__dict__)
    namespace: dict = {}
    exec(compile(driver, "<driver>", "exec"), namespace)
    outputs = namespace["drive"](module, inputs, seed)
    return json.loads(json.dumps(outputs, default=lambda a: np.asarray(a).tolist()))


def evaluate(code: str, params):
    results = []
    for stage in TASK.stages(params):
        results.append(TASK.score(params, stage, run_like_sandbox(code, TASK.driver, stage.inputs)))
        if not results[-1].valid:
            break
    return results


def example(name: str) -> str:
    return (ROOT / "examples" / "alpha_factors" / f"{name}.py").read_text()


LOG_VOLUME = "import numpy as np\ndef alpha(panel):\n    return np.log(panel['volume'])\n"


def test_contract_fields():
    assert TASK.name == "alpha_factors" and TASK.entrypoint == "alpha" and not TASK.resources.gpu
    assert task_key(TASK, SYNTH) != task_key(TASK, TASK.Params(data="synthetic"))
    stages = TASK.stages(SYNTH)
    assert stages[0].inputs == TASK.probe(SYNTH)
    json.dumps([s.inputs for s in stages])  # plain JSON data only
    assert set(stages[1].inputs[0]["panel"]) == {"close", "open", "high", "low", "volume"}


def test_forward_returns_never_enter_the_sandbox():
    """The inputs hold the panel and check dates only; nothing derived from future prices."""
    spec = TASK.stages(SYNTH)[1].inputs[0]
    assert set(spec) == {"panel", "checks"}
    close = np.array(spec["panel"]["close"])
    np.testing.assert_allclose(close, data.synthetic_market(1500, 50, signal_ic=0.1, seed=3).fields["close"])


def test_planted_signal_is_recovered():
    result = evaluate(LOG_VOLUME, SYNTH)[-1]
    assert result.valid, result.reason
    for period in ("train", "val", "test"):
        assert result.metrics[f"{period}_ic"] == pytest.approx(0.1, abs=0.03)
        assert result.metrics[f"{period}_rank_ic"] == pytest.approx(0.1, abs=0.03)
        assert result.metrics[f"{period}_ls_return"] > 0
    assert result.combined_score == result.metrics["val_rank_ic"]


def test_no_planted_signal_gives_no_ic():
    params = SYNTH.model_copy(update={"synth_signal_ic": 0.0})
    result = evaluate(LOG_VOLUME, params)[-1]
    assert result.valid and abs(result.metrics["val_ic"]) < 0.03


def test_lookahead_is_invalid_on_synthetic_and_real_data():
    for params in (SYNTH, TASK.Params()):
        if params.data == "sp500":
            pytest.importorskip("skfolio")
        results = evaluate(example("lookahead"), params)
        assert not results[-1].valid and results[-1].reason.startswith("lookahead"), results[-1].reason


@pytest.mark.parametrize("code", [
    # full-sample z-score over time: uses statistics of the future
    "import numpy as np\ndef alpha(panel):\n    c = np.log(panel['close'])\n    return (c - c.mean(0)) / c.std(0)\n",
    # a lookahead hidden at a single late date
    "import numpy as np\ndef alpha(panel):\n    c = panel['close'].copy()\n    if len(c) > 1400:\n        c[1300] = c[1301]\n    return c\n",
    # lookahead more than one day ahead, NaN at the end
    "import numpy as np\ndef alpha(panel):\n    c = panel['close']\n    f = np.full(c.shape, np.nan)\n    f[:-3] = c[3:]\n    return f\n",
])
def test_subtler_lookahead_is_invalid(code):
    result = evaluate(code, SYNTH)[-1]
    assert not result.valid and "lookahead" in result.reason


def test_cheat_that_behaves_on_short_history_is_caught():
    code = ("import numpy as np\ndef alpha(panel):\n    c = panel['close']\n    f = np.roll(c, -1, axis=0)\n"
            "    return f if len(c) == 1500 else c\n")
    assert "lookahead" in evaluate(code, SYNTH)[-1].reason


def test_momentum_and_reversal_on_real_data():
    pytest.importorskip("skfolio")
    params = TASK.Params()
    mom, rev = (evaluate(example(n), params)[-1] for n in ("momentum_20d", "reversal_5d"))
    for r in (mom, rev):
        assert r.valid, r.reason
        for key in ("ic", "rank_ic", "val_icir", "test_ic", "train_turnover", "val_ls_return"):
            assert np.isfinite(r.metrics[key])
    assert mom.features["corr_momentum"] == pytest.approx(1.0)
    assert rev.features["corr_reversal"] == pytest.approx(1.0)
    assert mom.metrics["val_rank_ic"] == pytest.approx(0.0117, abs=1e-3)  # docs/tasks/alpha_factors.md
    assert mom.metrics["val_turnover"] < rev.metrics["val_turnover"]  # a longer lookback trades less


def test_inf_mostly_nan_and_wrong_shape():
    inf = "import numpy as np\ndef alpha(panel):\n    return 1.0 / (panel['close'] - panel['close'])\n"
    assert "inf" in evaluate(inf, SYNTH)[-1].reason
    sparse = ("import numpy as np\ndef alpha(panel):\n    f = np.log(panel['volume'])\n"
              "    f[::3] = np.nan\n    f[1::3] = np.nan\n    return f\n")
    assert "validation dates" in evaluate(sparse, SYNTH)[-1].reason
    with pytest.raises(ValueError, match="shape"):
        run_like_sandbox("def alpha(panel):\n    return panel['close'][:, :2]\n", TASK.driver, TASK.probe(SYNTH))


@pytest.mark.parametrize("garbage", [None, "x", [], [None], [{"factor": "a", "checks": []}],
                                     [{"factor": [[1.0]], "checks": []}], [{"checks": []}]])
def test_garbage_outputs_are_invalid_not_exceptions(garbage):
    for stage in TASK.stages(SYNTH):
        result = TASK.score(SYNTH, stage, garbage)
        assert result.valid is False and result.reason


def test_metrics_on_a_perfect_and_a_reversed_factor():
    rng = np.random.default_rng(0)
    fwd = rng.standard_normal((200, 10))
    perfect = metrics.period_metrics(fwd, fwd, min_assets=5, quantile=0.2, horizon=1)
    assert perfect["ic"] == pytest.approx(1.0) and perfect["rank_ic"] == pytest.approx(1.0)
    assert perfect["ls_return"] > 0 and 0.0 < perfect["turnover"] <= 1.0
    reversed_ = metrics.period_metrics(-fwd, fwd, min_assets=5, quantile=0.2, horizon=1)
    assert reversed_["rank_ic"] == pytest.approx(-1.0) and reversed_["ls_return"] < 0
    constant = metrics.period_metrics(np.ones_like(fwd), fwd, min_assets=5, quantile=0.2, horizon=1)
    assert constant["ic"] == 0.0 and constant["coverage"] == 0.0


def test_seed_program_is_valid():
    result = evaluate(TASK.seed_program(SYNTH), SYNTH)[-1]
    assert result.valid, result.reason
    assert "EVOLVE-BLOCK-START" in TASK.seed_program(SYNTH)


def test_fingerprint_and_elite_correlation():
    from evoforge.evaluators.base import FINGERPRINT_KEY

    log_volume = "import numpy as np\ndef alpha(panel):\n    return np.log(panel['volume'])\n"
    negated = "import numpy as np\ndef alpha(panel):\n    return -np.log(panel['volume'])\n"
    momentum = example("momentum_20d")
    fps = {}
    for name, code in (("vol", log_volume), ("neg", negated), ("mom", momentum)):
        r = evaluate(code, SYNTH)[-1]
        assert r.valid, r.reason
        assert "elite_corr" not in r.features          # the store adds it, knowing the elites
        fps[name] = r.artifacts[FINGERPRINT_KEY]
        assert isinstance(fps[name], str) and len(fps[name]) < 4000   # compact
    again = evaluate(log_volume, SYNTH)[-1].artifacts[FINGERPRINT_KEY]
    assert again == fps["vol"]                         # deterministic
    rel = lambda fp, elites: TASK.relative_features(SYNTH, fp, elites)["elite_corr"]
    assert rel(fps["vol"], []) == 0.0                  # no elites yet
    assert rel(fps["vol"], [fps["vol"]]) == pytest.approx(1.0)
    assert rel(fps["vol"], [fps["neg"]]) == pytest.approx(1.0)   # |corr|: a sign flip is no novelty
    unrelated = rel(fps["vol"], [fps["mom"]])
    assert 0.0 <= unrelated < 0.3
    assert rel(fps["vol"], [fps["mom"], fps["neg"]]) == pytest.approx(1.0)   # max over elites
    assert rel(fps["vol"], [None, "garbage", fps["mom"]]) == unrelated      # unusable ones ignored
    assert TASK.relative_features(SYNTH, None, [fps["vol"]]) == {}
    assert TASK.feature_dims(SYNTH)[0].name == "elite_corr"
