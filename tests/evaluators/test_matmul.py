"""matmul: exact verification on pure data, the rank table, the seed program and the examples."""
from __future__ import annotations

import itertools
import time
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from evoforge.evaluators.base import get_task, parse_params
from evoforge.evaluators.matmul import verify
from evoforge.evaluators.matmul.ranks import best_known_rank, load_table
from evoforge.evaluators.matmul.task import partial_score

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "matmul"
TASK = get_task("matmul")


def params(n=2, m=2, p=2, field="integer"):
    return parse_params(TASK, {"n": n, "m": m, "p": p, "field": field})


def load(name):
    namespace: dict = {"__name__": "candidate"}
    exec(compile((EXAMPLES / name).read_text(), name, "exec"), namespace)
    return namespace["decompose"]


def score(output, n=2, m=2, p=2, field="integer"):
    prm = params(n, m, p, field)
    return TASK.score(prm, TASK.stages(prm)[0], [output])


def strassen():
    return load("strassen.py")(2, 2, 2)


# --- params and contract --------------------------------------------------------------------

def test_registered_with_contract_fields():
    assert TASK.name == "matmul" and TASK.entrypoint == "decompose" and TASK.driver is None
    prm = params()
    assert TASK.stages(prm)[0].inputs == TASK.probe(prm) == [{"n": 2, "m": 2, "p": 2}]
    assert parse_params(TASK, {"n": "3", "m": "2", "p": "4"}).n == 3


@pytest.mark.parametrize("raw", [{"n": 0}, {"m": 6}, {"p": -1}, {"field": "real"},
                                 {"n": 2, "q": 1}])
def test_bad_params_are_clear_errors(raw):
    with pytest.raises(ValueError):  # a ValidationError, or an unknown name
        parse_params(TASK, raw)


# --- exact verification -----------------------------------------------------------------------

def test_strassen_is_exact_rank_7_score_1():
    res = score(strassen())
    assert res.valid, res.reason
    assert res.metrics["rank"] == 7 and res.metrics["exact"] is True and res.metrics["errors"] == 0
    assert res.combined_score == 1.0
    assert 0.0 <= res.features["sparsity"] <= 1.0


def test_strassen_as_floats_and_lists_is_accepted():
    u, v, w = strassen()
    assert score((u.astype(float), v.astype(np.float32), w.tolist())).valid
    assert score([u.tolist(), v.tolist(), w.tolist()]).valid


def test_schoolbook_2_3_4_is_rank_24():
    res = score(load("schoolbook.py")(2, 3, 4), 2, 3, 4)
    assert res.valid and res.metrics["rank"] == 24
    assert res.combined_score == pytest.approx(20 / 24)


def test_schoolbook_2_2_2_scores_7_over_8():
    res = score(load("schoolbook.py")(2, 2, 2))
    assert res.valid and res.combined_score == pytest.approx(7 / 8)


@pytest.mark.parametrize("shape", list(itertools.product([1, 2, 3], repeat=3)))
def test_schoolbook_is_exact_for_many_shapes(shape):
    res = score(load("schoolbook.py")(*shape), *shape)
    assert res.valid and res.metrics["rank"] == np.prod(shape)


def test_one_wrong_entry_is_invalid_with_partial_score():
    res = score(load("one_wrong_entry.py")(2, 2, 2))
    assert res.valid is False
    assert res.metrics["exact"] is False and res.metrics["errors"] > 0 and res.metrics["rank"] == 7
    assert "not exact" in res.reason
    assert 0 < res.combined_score < 7 / verify.MAX_RANK  # below the worst possible exact score


@pytest.mark.parametrize("factor,row,col", [(0, 0, 0), (1, 3, 6), (2, 2, 4)])
def test_any_single_changed_entry_is_caught(factor, row, col):
    u, v, w = (x.astype(np.int64).copy() for x in strassen())
    (u, v, w)[factor][row, col] += 1
    assert score((u, v, w)).valid is False


def test_float_tolerance_is_never_used():
    u, v, w = (x.astype(float) for x in strassen())
    u[0, 0] += 1e-15 if u[0, 0] == 0 else u[0, 0] * 2 ** -52
    res = score((u, v, w))
    assert res.valid is False and "not an integer" in res.reason


def test_non_representable_entries_are_invalid_with_reason():
    u, v, w = (x.astype(float) for x in strassen())
    u[1, 2] = 0.3
    res = score((u, v, w))
    assert not res.valid and "U[1, 2]" in res.reason and "0.3" in res.reason
    u[1, 2] = 0.5  # not an integer, but a valid half-integer (decomposition then wrong)
    assert "not an integer" in score((u, v, w)).reason
    res = score((u, v, w), field="half_integer")
    assert not res.valid and "not exact" in res.reason
    u[1, 2] = 0.25
    assert "multiple of 1/2" in score((u, v, w), field="half_integer").reason


def test_partial_scores_are_below_every_exact_score():
    for n, m, p in itertools.product(range(1, 6), repeat=3):
        for field in verify.FIELDS:
            best = best_known_rank(n, m, p, field)
            assert partial_score(best, 1) < best / verify.MAX_RANK
    assert partial_score(7, 1) > partial_score(7, 5) > 0


def half_integer_strassen():
    """Strassen with U scaled by 1/2 and W by 2: a genuine half-integer decomposition."""
    u, v, w = strassen()
    return u / 2, v.astype(float), w * 2.0


def test_half_integer_field():
    dec = half_integer_strassen()
    res = score(dec, field="half_integer")
    assert res.valid, res.reason
    assert res.combined_score == 1.0
    assert not score(dec, field="integer").valid
    assert "not an integer" in score(dec, field="integer").reason


def test_half_integer_reconstruction_is_scaled_exactly():
    u, v, w = half_integer_strassen()
    w = w.copy()
    w[0, 0] += 0.5  # one half off
    res = score((u, v, w), field="half_integer")
    assert not res.valid and res.metrics["errors"] > 0


def complex_strassen():
    """Strassen rescaled by units: U*i, V*(-i), W unchanged (i * -i = 1), plus half factors."""
    u, v, w = strassen()
    return u * 1j / 2, v * -1j, w * 2 + 0j


def test_complex_field():
    dec = complex_strassen()
    res = score(dec, field="complex_half_integer")
    assert res.valid, res.reason
    assert res.metrics["rank"] == 7
    bad = score(dec, field="integer")
    assert not bad.valid and "complex" in bad.reason
    assert not score(dec, field="half_integer").valid


def test_complex_imaginary_error_is_caught():
    u, v, w = complex_strassen()
    w = w.copy()
    w[3, 0] += 0.5j
    res = score((u, v, w), field="complex_half_integer")
    assert not res.valid and res.metrics["errors"] > 0


def test_complex_with_zero_imaginary_part_is_fine_in_integer_field():
    u, v, w = strassen()
    assert score((u + 0j, v, w)).valid


def test_complex_field_accepts_real_decompositions_with_its_own_best():
    dec = load("strassen_squared_444.py")(4, 4, 4)
    res = score(dec, 4, 4, 4, field="complex_half_integer")
    assert res.valid and res.metrics["best_known_rank"] == 48
    assert res.combined_score == pytest.approx(48 / 49)


def test_rank_49_444_verifies_fast():
    dec = load("strassen_squared_444.py")(4, 4, 4)
    prm = params(4, 4, 4)
    start = time.perf_counter()
    res = TASK.score(prm, TASK.stages(prm)[0], [dec])
    elapsed = time.perf_counter() - start
    assert res.valid, res.reason
    assert res.metrics["rank"] == 49 and res.combined_score == 1.0
    assert elapsed < 1.0


def test_large_rank_verifies_fast_and_without_overflow():
    rng = np.random.default_rng(0)
    big = verify.MAX_ABS_SCALED
    u = rng.choice([-big, big], size=(25, verify.MAX_RANK))
    v = rng.choice([-big, big], size=(25, verify.MAX_RANK))
    w = np.full((25, verify.MAX_RANK), big)
    start = time.perf_counter()
    res = score((u, v, w), 5, 5, 5)
    assert time.perf_counter() - start < 2.0
    assert res.valid is False and res.metrics["errors"] > 0
    # exact extreme case: all products equal, the sum is 1000 * 2**48 (fits in int64)
    f = verify.parse_factors((np.full((1, 1000), big), np.full((1, 1000), big),
                              np.full((1, 1000), big)), 1, 1, 1, "integer")
    t, _ = verify.reconstruct(f)
    assert int(t[0, 0, 0]) == 1000 * big ** 3


@pytest.mark.parametrize("output,fragment", [
    (None, "(U, V, W)"), ("UVW", "(U, V, W)"), (7, "(U, V, W)"), ({"U": 1}, "(U, V, W)"),
    ((1, 2), "(U, V, W)"), ((None, None, None), "U"), (("a", "b", "c"), "U"),
    ((np.zeros((4, 7)), np.zeros((4, 7)), np.zeros((4, 6))), "shape"),
    ((np.zeros((4, 7)), np.zeros((3, 7)), np.zeros((4, 7))), "shape"),
    ((np.zeros(4), np.zeros(4), np.zeros(4)), "2-D"),
    ((np.zeros((4, 0)), np.zeros((4, 0)), np.zeros((4, 0))), "at least 1"),
    ((np.zeros((4, 1001)), np.zeros((4, 1001)), np.zeros((4, 1001))), "exceeds the limit"),
    ((np.full((4, 7), np.nan), np.zeros((4, 7)), np.zeros((4, 7))), "finite"),
    ((np.full((4, 7), np.inf), np.zeros((4, 7)), np.zeros((4, 7))), "finite"),
    ((np.full((4, 7), 2 ** 20), np.zeros((4, 7)), np.zeros((4, 7))), "bound"),
    ((np.full((4, 7), 1e300), np.zeros((4, 7)), np.zeros((4, 7))), "bound"),
    ((np.full((4, 7), 2 ** 70, dtype=object), np.zeros((4, 7)), np.zeros((4, 7))), "dtype"),
    ((np.full((4, 7), True), np.zeros((4, 7)), np.zeros((4, 7))), "dtype"),
    (([[1, "x"]] * 4, np.zeros((4, 2)), np.zeros((4, 2))), "dtype"),
    (([[1], [1, 2]], np.zeros((4, 2)), np.zeros((4, 2))), "U"),
    ((np.zeros((4, 7), dtype=np.longdouble), np.zeros((4, 7)), np.zeros((4, 7))), "dtype"),
])
def test_garbage_is_invalid_without_raising(output, fragment):
    res = score(output)
    assert res.valid is False
    assert fragment in res.reason


@pytest.mark.parametrize("outputs", [None, [], "x", [1, 2], 5, {"a": 1}])
def test_wrong_number_of_outputs_is_invalid(outputs):
    prm = params()
    res = TASK.score(prm, TASK.stages(prm)[0], outputs)
    assert res.valid is False and res.reason


# --- best-known table -----------------------------------------------------------------------

def test_best_known_table_is_complete_and_consistent():
    table = load_table()
    shapes = {tuple(row["shape"]) for row in table["ranks"]}
    assert shapes == set(itertools.product(range(1, 6), repeat=3))
    assert len(table["ranks"]) == 125
    for row in table["ranks"]:
        n, m, p = row["shape"]
        ranks = [row[f] for f in verify.FIELDS]
        # a decomposition over a smaller field is one over a larger field
        assert ranks[0] >= ranks[1] >= ranks[2] >= 1
        assert ranks[0] <= n * m * p
        assert row["sources"] and all(s in table["sources"] for s in row["sources"])
        for perm in itertools.permutations((n, m, p)):  # rank is invariant under permutations
            for f in verify.FIELDS:
                assert best_known_rank(*perm, f) == row[f]
        if 1 in (n, m, p):
            assert ranks[0] == n * m * p


@pytest.mark.parametrize("shape,field,rank", [
    ((2, 2, 2), "integer", 7), ((3, 3, 3), "integer", 23), ((4, 4, 4), "integer", 49),
    ((4, 4, 4), "complex_half_integer", 48), ((2, 4, 5), "integer", 33),
    ((5, 4, 2), "half_integer", 32), ((5, 5, 5), "integer", 93), ((4, 5, 4), "integer", 61),
    ((3, 4, 5), "integer", 47), ((5, 5, 4), "integer", 76), ((1, 4, 5), "integer", 20),
])
def test_known_records(shape, field, rank):
    assert best_known_rank(*shape, field) == rank


# --- the seed program -------------------------------------------------------------------------

def run_seed(shape, seed):
    namespace: dict = {"__name__": "candidate"}
    exec(compile(TASK.seed_program(params(*shape)), "seed", "exec"), namespace)
    np.random.seed(seed)  # what the sandbox does before calling the entrypoint
    return namespace["decompose"](*shape)


def test_seed_program_finds_exact_rank_7_for_2_2_2():
    results = []
    for seed in range(3):
        start = time.perf_counter()
        res = score(run_seed((2, 2, 2), seed))
        results.append((res.valid, res.metrics.get("rank"), time.perf_counter() - start))
        if res.valid and res.metrics["rank"] == 7:
            break
    assert any(valid and rank == 7 for valid, rank, _ in results), results
    assert "EVOLVE-BLOCK-START" in TASK.seed_program(params())


def test_seed_program_is_deterministic_given_the_seed():
    a, b = run_seed((2, 2, 2), 5), run_seed((2, 2, 2), 5)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 3, 2), (2, 3, 2), (5, 5, 5)])
def test_seed_program_is_always_exact(shape):
    res = score(run_seed(shape, 0), *shape)
    assert res.valid, res.reason
    assert res.metrics["rank"] <= np.prod(shape)


def test_seed_example_matches_task_seed():
    assert (EXAMPLES / "seed.py").read_text() == TASK.seed_program(params())


def test_context_mentions_convention_and_record():
    text = TASK.context(params(3, 3, 3))
    assert "T[i*m+j, j*p+k, k*n+i]" in text and "23" in text and "decompose" in text
