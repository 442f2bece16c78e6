import ast
import random

import pytest
from hypothesis import given, settings, strategies as st

from evoforge.evolution.ast_mutator import LocalASTMutator
from evoforge.evolution.hashing import code_hash
from evoforge.evolution.program import fixed_segments
from evoforge.evolution.step import Selection
from evoforge.evolution.types import ProgramRef

PROGRAM = '''import numpy as np

SCALE = 3  # outside the block: must never change


# EVOLVE-BLOCK-START
def pack_circles(n):
    """Place circles on a grid."""
    centers = np.zeros((n, 2))
    radii = np.full(n, 0.05)
    for i in range(n):
        if i < n // 2:
            centers[i] = [0.1 + 0.2 * (i % 5), 0.3]
        else:
            centers[i] = [0.1 * (i % 5) + 0.05, 0.7]
    total = radii.sum() * 1.0
    return centers, radii


def helper(x):
    y = x + 1
    z = y * 2
    return z - x
# EVOLVE-BLOCK-END


def main():
    return pack_circles(SCALE * 2 + 1 if SCALE > 0 else 1)
'''

DONOR = '''def helper(x):
    return x * x - 1.5
'''


def ref(code, pid=1, island=0):
    return ProgramRef(id=pid, code=code, score=1.0, status="ok", island=island, generation=0)


def selection(code=PROGRAM, inspirations=()):
    return Selection(island=0, parent=ref(code), inspirations=list(inspirations))


def test_no_parent_is_an_error_mutation():
    m = LocalASTMutator().mutate(Selection(island=0, parent=None), random.Random(0))
    assert m.code is None and m.kind == "error" and m.error == "no parent"


def test_deterministic_for_a_given_rng():
    mut = LocalASTMutator()
    a = [mut.mutate(selection(inspirations=[ref(DONOR, 2)]), random.Random(s)) for s in range(30)]
    b = [mut.mutate(selection(inspirations=[ref(DONOR, 2)]), random.Random(s)) for s in range(30)]
    assert [(m.code, m.kind) for m in a] == [(m.code, m.kind) for m in b]
    assert len({m.code for m in a}) > 10


def test_mutations_stay_inside_evolve_block_and_parse():
    mut = LocalASTMutator()
    kinds = set()
    for seed in range(300):
        m = mut.mutate(selection(inspirations=[ref(DONOR, 2)]), random.Random(seed))
        assert m.code is not None, m.error
        ast.parse(m.code)
        assert fixed_segments(m.code) == fixed_segments(PROGRAM)
        assert code_hash(m.code) != code_hash(PROGRAM)
        kinds.add(m.kind)
    assert kinds == {"ast:const", "ast:swap-cmp", "ast:swap-arith", "ast:dup-stmt",
                     "ast:del-stmt", "ast:swap-stmt", "ast:crossover"}


@pytest.mark.parametrize("op,check", [
    ("const", lambda old, new: old != new),
    ("swap-cmp", lambda old, new: any(isinstance(n, ast.Compare) for n in ast.walk(ast.parse(new)))),
    ("swap-arith", lambda old, new: old != new),
])
def test_single_operators(op, check):
    mut = LocalASTMutator(weights={op: 1.0})
    for seed in range(20):
        m = mut.mutate(selection(), random.Random(seed))
        assert m.kind == f"ast:{op}"
        assert check(PROGRAM, m.code)


def test_const_perturbs_exactly_one_number():
    mut = LocalASTMutator(weights={"const": 1.0})
    m = mut.mutate(selection(), random.Random(5))
    old = [n.value for n in ast.walk(ast.parse(PROGRAM)) if isinstance(n, ast.Constant)
           and type(n.value) in (int, float)]
    new = [n.value for n in ast.walk(ast.parse(m.code)) if isinstance(n, ast.Constant)
           and type(n.value) in (int, float)]
    assert len(old) == len(new)
    assert sum(a != b for a, b in zip(old, new)) == 1


def test_ints_move_by_one():
    mut = LocalASTMutator(weights={"const": 1.0})
    code = "def f():\n    return 10\n"
    values = set()
    for seed in range(20):
        tree = ast.parse(mut.mutate(selection(code), random.Random(seed)).code)
        values.add([n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)][0])
    assert values == {9, 11}


def test_comparison_swaps_stay_in_group():
    mut = LocalASTMutator(weights={"swap-cmp": 1.0})
    code = "def f(a, b):\n    return a == b\n"
    for seed in range(10):
        assert "a != b" in mut.mutate(selection(code), random.Random(seed)).code


def test_statement_deletion_never_empties_a_body():
    mut = LocalASTMutator(weights={"del-stmt": 1.0})
    code = "def f(x):\n    return x\n"
    m = mut.mutate(selection(code), random.Random(0))
    assert m.code is None and m.kind == "error"
    code2 = "def f(x):\n    x = x + 1\n    return x\n"
    for seed in range(10):
        out = mut.mutate(selection(code2), random.Random(seed)).code
        fn = ast.parse(out).body[0]
        assert len(fn.body) == 1


def test_statement_swap_and_duplicate():
    code = "def f(x):\n    a = 1\n    b = 2\n    return a + b\n"
    swapped = LocalASTMutator(weights={"swap-stmt": 1.0}).mutate(selection(code), random.Random(0))
    assert sorted(swapped.code.splitlines()) == sorted(code.splitlines())
    dup = LocalASTMutator(weights={"dup-stmt": 1.0}).mutate(selection(code), random.Random(0))
    assert len(ast.parse(dup.code).body[0].body) == 4


def test_crossover_replaces_same_named_function():
    mut = LocalASTMutator(weights={"crossover": 1.0})
    m = mut.mutate(selection(inspirations=[ref(DONOR, 7)]), random.Random(0))
    assert m.kind == "ast:crossover"
    assert "return x * x - 1.5" in m.code and "z = y * 2" not in m.code
    assert "program 7" in m.extra["detail"]
    assert fixed_segments(m.code) == fixed_segments(PROGRAM)


def test_crossover_reindents_nested_donor():
    donor = "class K:\n    def helper(x):\n        return 42\n"
    mut = LocalASTMutator(weights={"crossover": 1.0})
    m = mut.mutate(selection(inspirations=[ref(donor, 3)]), random.Random(0))
    assert "\ndef helper(x):\n    return 42\n" in m.code


def test_crossover_needs_a_different_donor():
    mut = LocalASTMutator(weights={"crossover": 1.0})
    m = mut.mutate(selection(inspirations=[ref(PROGRAM, 2)]), random.Random(0))
    assert m.code is None


def test_unparsable_parent_is_an_error():
    m = LocalASTMutator().mutate(selection("def f(:\n"), random.Random(0))
    assert m.code is None and "does not parse" in m.error


def test_unknown_operator_weight_rejected():
    with pytest.raises(ValueError):
        LocalASTMutator(weights={"nope": 1.0})


def test_non_ascii_source_positions():
    code = 'def f(x):\n    s = "héllo ☃"; y = x + 2.5\n    return s, y < 3\n'
    mut = LocalASTMutator(weights={"const": 1.0, "swap-arith": 1.0, "swap-cmp": 1.0})
    for seed in range(30):
        m = mut.mutate(selection(code), random.Random(seed))
        assert m.code is not None and '"héllo ☃"' in m.code
        ast.parse(m.code)


# -- property: any program made of simple functions mutates into a parsable program -----------

names = st.sampled_from(["a", "b", "c", "x"])
numbers = st.one_of(st.integers(-5, 20), st.floats(-10, 10, allow_nan=False).map(lambda v: round(v, 3)))
ops = st.sampled_from(["+", "-", "*", "/", "<", "<=", ">", ">=", "==", "!="])


@st.composite
def expressions(draw, depth=2):
    if depth == 0 or draw(st.booleans()):
        return draw(st.one_of(names, numbers.map(repr)))
    return f"({draw(expressions(depth=depth - 1))} {draw(ops)} {draw(expressions(depth=depth - 1))})"


@st.composite
def programs(draw):
    lines = ["def f(a, b, c, x):"]
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["assign", "if", "for"]))
        if kind == "assign":
            lines.append(f"    {draw(names)} = {draw(expressions())}  # note")
        elif kind == "if":
            lines += [f"    if {draw(expressions())}:", f"        {draw(names)} = {draw(expressions())}",
                      "    else:", f"        x = {draw(expressions())}"]
        else:
            lines += [f"    for i in range({draw(st.integers(0, 5))}):",
                      f"        {draw(names)} += {draw(expressions())}"]
    lines.append(f"    return {draw(expressions())}")
    return "\n".join(lines) + "\n"


@settings(max_examples=150, deadline=None)
@given(programs(), st.integers(0, 10_000))
def test_mutants_always_parse(code, seed):
    m = LocalASTMutator().mutate(selection(code), random.Random(seed))
    if m.code is None:
        assert m.kind == "error"
        return
    compile(m.code, "mutant", "exec")
    assert code_hash(m.code) != code_hash(code)
