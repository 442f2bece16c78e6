"""Issue 12 item 9: a task's entry point is called positionally, in the order the task documents.

A correct program whose entry function names its parameters differently (`pack_circles(count)`
instead of `pack_circles(n)`) must score exactly what the original scores, through the real
evaluator and the real fork-server sandbox.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from evoforge.evaluators.base import get_task, parse_params
from evoforge.evaluators.pipeline import CascadeEvaluator

ROOT = Path(__file__).resolve().parents[2]


class _Rename(ast.NodeTransformer):
    """Rename the parameters of the functions in `renames` ({function: {old: new}})."""

    def __init__(self, renames: dict[str, dict[str, str]]):
        self.renames, self.current = renames, None

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        mapping = self.renames.get(node.name)
        if mapping is None:
            return self.generic_visit(node)
        outer, self.current = self.current, mapping
        for arg in node.args.args:
            arg.arg = mapping.get(arg.arg, arg.arg)
        self.generic_visit(node)
        self.current = outer
        return node

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if self.current and node.id in self.current:
            node.id = self.current[node.id]
        return node


def renamed(code: str, renames: dict[str, dict[str, str]]) -> str:
    return ast.unparse(_Rename(renames).visit(ast.parse(code)))


def evaluate(task, params, code: str, sandbox):
    ev = CascadeEvaluator(task, params, sandbox)
    probe = ev.probe(code, 0)
    assert probe.failure is None, probe.failure
    return ev.evaluate(code, 0, probe)


CASES = {
    # task: (params, program, {function: {parameter: new name}}, signature the rename must show)
    "circle_packing": ({"n": 5}, "examples/circle_packing/seed.py",
                       {"pack_circles": {"n": "count"}}, "def pack_circles(count)"),
    "matmul": ({"n": 2, "m": 2, "p": 2}, "examples/matmul/strassen.py",
               {"decompose": {"n": "rows", "m": "inner", "p": "cols"}},
               "def decompose(rows, inner, cols)"),
    "optimizer": ({"steps_scale": 0.25}, None,
                  {"init": {"param": "weights"},
                   "update": {"param": "w", "grad": "g", "state": "s", "t": "step",
                              "lr": "rate"}},
                  "def update(w, g, s, step, rate)"),
    "alpha_factors": ({"data": "synthetic", "synth_dates": 400, "synth_assets": 20}, None,
                      {"alpha": {"panel": "prices"}}, "def alpha(prices)"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_renamed_parameters_score_exactly_the_same(name, fork_sandbox):
    task = get_task(name)
    raw, path, renames, signature = CASES[name]
    params = parse_params(task, raw)
    original = (ROOT / path).read_text() if path else task.seed_program(params)
    other = renamed(original, renames)
    assert signature in other  # the program really names its parameters differently

    want = evaluate(task, params, original, fork_sandbox)
    got = evaluate(task, params, other, fork_sandbox)
    assert want.status == "ok" and want.score is not None, (want.status, want.artifacts)
    assert (got.status, got.score, got.metrics, got.features) == \
        (want.status, want.score, want.metrics, want.features), got.artifacts


def test_a_call_is_positional_in_its_documented_order(fork_sandbox):
    """The harness passes a call's values in order, not by name: a dict or a list (and a
    candidate that replaces the builtins cannot change how it is called)."""
    code = ("import builtins\n"
            "builtins.dict = None\n"
            "def f(first, second):\n    return [first, second]\n")
    r = fork_sandbox.run(code, "f", [{"a": 1, "b": 2}, [3, 4]])
    assert r.ok, r.reason
    assert r.outputs == [[1, 2], [3, 4]]
