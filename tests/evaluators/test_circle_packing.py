"""circle_packing: trusted validation on pure data, the seed program and the example programs."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from evoforge.evaluators.base import get_task, parse_params, task_key
from evoforge.evaluators.circle_packing import BEST_KNOWN

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "circle_packing"
TASK = get_task("circle_packing")


def params(n=26):
    return parse_params(TASK, {"n": n})


def score_single(output, n=4):
    """Score one output for a stage that calls pack_circles(n) once."""
    from evoforge.evaluators.base import Stage

    return TASK.score(params(n), Stage(name="t", inputs=[{"n": n}]), [output])


def run_program(code: str, n: int):
    namespace: dict = {"__name__": "candidate"}
    exec(compile(code, "<candidate>", "exec"), namespace)
    return namespace["pack_circles"](n)


def score_program(code: str, n: int):
    p = params(n)
    stage = TASK.stages(p)[-1]
    outputs = [run_program(code, call["n"]) for call in stage.inputs]
    return TASK.score(p, stage, outputs)


def quad():
    """Four circles of radius 1/4 touching each other and the walls: valid with equality."""
    centers = np.array([[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]])
    return centers, np.full(4, 0.25)


# --- registration and params -------------------------------------------------------------

def test_registered_with_contract_fields():
    assert TASK.name == "circle_packing" and TASK.entrypoint == "pack_circles"
    assert TASK.driver is None
    assert params().n == 26
    assert parse_params(TASK, {"n": "32"}).n == 32  # CLI strings are coerced


@pytest.mark.parametrize("raw", [{"n": 1}, {"n": 201}, {"n": "many"}, {"k": 3}])
def test_out_of_range_params_are_clear_errors(raw):
    with pytest.raises(ValueError):  # a ValidationError, or an unknown name
        parse_params(TASK, raw)


def test_probe_includes_full_n_and_first_stage_is_probe():
    p = params(26)
    assert {"n": 26} in TASK.probe(p)
    stages = TASK.stages(p)
    assert stages[0].inputs == TASK.probe(p)
    assert stages[-1].inputs == TASK.probe(p)  # the full stage reuses the probe's outputs
    assert task_key(TASK, params(26)) != task_key(TASK, params(32))


# --- validity rules on pure data -----------------------------------------------------------

def test_touching_packing_is_valid_and_sum_is_recomputed():
    res = score_single(quad())
    assert res.valid, res.reason
    assert res.combined_score == 1.0
    assert res.metrics["sum_radii"] == 1.0 and res.metrics["n"] == 4
    assert res.metrics["min_radius"] == 0.25
    assert res.features == {"radius_spread": 0.0}


def test_overlap_by_1e_12_is_invalid():
    centers, radii = quad()
    centers[1, 0] -= 1e-12
    res = score_single((centers, radii))
    assert not res.valid and "overlap" in res.reason


@pytest.mark.parametrize("axis,delta", [(0, -1e-12), (0, 1e-12), (1, -1e-12), (1, 1e-12)])
def test_outside_by_1e_12_is_invalid(axis, delta):
    centers, radii = quad()
    idx = 0 if delta < 0 else 3
    centers[idx, axis] += delta
    res = score_single((centers, radii))
    assert not res.valid and "side of the unit square" in res.reason


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_values_are_invalid(bad):
    centers, radii = quad()
    radii[2] = bad
    assert not score_single((centers, radii)).valid
    centers, radii = quad()
    centers[1, 1] = bad
    res = score_single((centers, radii))
    assert not res.valid and "NaN" in res.reason


def test_negative_radius_is_invalid():
    centers, radii = quad()
    radii[0] = -0.0001
    res = score_single((centers, radii))
    assert not res.valid and "negative" in res.reason


@pytest.mark.parametrize("centers,radii", [
    (np.full((3, 2), 0.5), np.zeros(4)),          # too few centers
    (np.full((4, 3), 0.5), np.zeros(4)),          # 3 columns
    (np.full((4, 2), 0.5), np.zeros((4, 1))),     # radii as a column
    (np.full((4, 2), 0.5), np.zeros(5)),          # too many radii
    (np.full(8, 0.5), np.zeros(4)),               # flat centers
])
def test_wrong_shapes_are_invalid(centers, radii):
    res = score_single((centers, radii))
    assert not res.valid and "shape" in res.reason


class Liar:
    def __float__(self):
        return 0.0

    def __lt__(self, other):
        return False

    def __ge__(self, other):
        return True


@pytest.mark.parametrize("output", [
    None, "centers", b"bytes", 42, 3.5, {"centers": [[0.5, 0.5]] * 4, "radii": [0.1] * 4},
    [], [1, 2, 3], (None, None), ("abc", "def"), ([[0.5, 0.5]] * 4, None),
    ([[0.5, "x"]] * 4, [0.1] * 4), ([[0.5, 0.5]] * 4, [0.1, 0.1, None, 0.1]),
    ([[0.5], [0.5, 0.5], [0.5, 0.5], [0.5, 0.5]], [0.0] * 4),   # ragged
    ([[Liar(), Liar()]] * 4, [Liar()] * 4), (object(), object()),
    ([[True, False]] * 4, [False] * 4), ([[0.5 + 0j, 0.5]] * 4, [0.0] * 4),
    np.zeros((4, 3)),
])
def test_garbage_is_invalid_without_raising(output):
    res = score_single(output)
    assert res.valid is False
    assert res.reason


@pytest.mark.parametrize("outputs", [None, "x", [], [1, 2, 3], {"a": 1}, 7])
def test_wrong_number_of_outputs_is_invalid(outputs):
    from evoforge.evaluators.base import Stage

    res = TASK.score(params(4), Stage(name="t", inputs=[{"n": 4}]), outputs)
    assert res.valid is False and res.reason


def test_lists_of_python_floats_are_accepted():
    centers, radii = quad()
    res = score_single((centers.tolist(), radii.tolist()))
    assert res.valid and res.combined_score == 1.0


def test_every_output_of_the_stage_must_be_valid():
    p = params(4)
    from evoforge.evaluators.base import Stage

    stage = Stage(name="t", inputs=[{"n": 2}, {"n": 4}])
    small_bad = (np.array([[0.25, 0.25], [0.5, 0.25]]), np.array([0.25, 0.25]))  # overlap
    res = TASK.score(p, stage, [small_bad, quad()])
    assert not res.valid and res.reason.startswith("n=2")


def test_ratio_to_best_known():
    assert BEST_KNOWN == {26: 2.635, 32: 2.939}
    p = params(26)
    from evoforge.evaluators.base import Stage

    n = 26
    side = 6
    idx = np.arange(n)
    centers = np.stack([(idx % side + 0.5) / side, (idx // side + 0.5) / side], axis=1)
    radii = np.full(n, 0.5 / side) * 0.999
    res = TASK.score(p, Stage(name="full", inputs=[{"n": 26}]), [(centers, radii)])
    assert res.valid
    assert math.isclose(res.metrics["ratio_to_best"], float(radii.sum()) / 2.635)


# --- seed program and examples ---------------------------------------------------------------

@pytest.mark.parametrize("n", [26, 32, 2, 6, 7, 100, 200])
def test_seed_program_is_valid(n):
    res = score_program(TASK.seed_program(params(n)), n)
    assert res.valid, res.reason
    assert res.metrics["n"] == n


def test_seed_is_simple_not_an_optimum():
    res = score_program(TASK.seed_program(params(26)), 26)
    assert 1.5 <= res.combined_score <= 2.0
    assert "EVOLVE-BLOCK-START" in TASK.seed_program(params(26))


def test_seed_example_matches_task_seed():
    assert (EXAMPLES / "seed.py").read_text() == TASK.seed_program(params())


@pytest.mark.parametrize("name,fragment", [
    ("overlapping.py", "overlap"),
    ("nan_radius.py", "NaN"),
    ("wrong_shape.py", "shape"),
    ("slightly_outside.py", "side of the unit square"),
])
def test_bad_examples_are_invalid(name, fragment):
    res = score_program((EXAMPLES / name).read_text(), 26)
    assert not res.valid and fragment in res.reason


@pytest.mark.parametrize("n", [26, 32])
def test_better_example_beats_seed(n):
    seed = score_program(TASK.seed_program(params(n)), n)
    better = score_program((EXAMPLES / "better.py").read_text(), n)
    assert better.valid, better.reason
    assert better.combined_score > seed.combined_score + 0.5
    assert better.combined_score < BEST_KNOWN[n]


def test_feature_dims_fixed_and_feature_present():
    dims = TASK.feature_dims(params())
    assert len(dims) == 1 and dims[0].name == "radius_spread" and dims[0].lo < dims[0].hi
    res = score_program(TASK.seed_program(params()), 26)
    assert set(res.features) == {"radius_spread"}
    assert dims[0].lo <= res.features["radius_spread"] <= dims[0].hi


def test_context_mentions_rules():
    text = TASK.context(params(26))
    assert "pack_circles" in text and "2.635" in text and "zero tolerance" in text.lower()
