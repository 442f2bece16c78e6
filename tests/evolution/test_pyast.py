"""`evolution/pyast.parse` is safe from several threads; the bare `ast.parse` is not on 3.11.

The race (python/cpython#106905): a parse's node allocations run the garbage collector, a
finalizer runs Python code, the interpreter switches to a thread that parses from a different
stack depth, and the first parse ends with `SystemError: AST constructor recursion depth
mismatch`. It failed a Celery campaign in CI (tests/integration/test_celery_faults.py).
"""
from __future__ import annotations

import ast
import gc
import re
import sys
import threading
import traceback
from pathlib import Path

import pytest

from evoforge.evolution import pyast

ROOT = Path(__file__).resolve().parents[2]
CODE = "\n".join(f"def f{i}(x):\n    return [x * {i} for _ in range(3)] + [{i}, ({i}, {i})]"
                 for i in range(200))


def _at_depth(depth: int, fn):
    return _at_depth(depth - 1, fn) if depth else fn()


def _interleave(parse, other_parse=None) -> list[str]:
    """Parse in this thread, deep in the stack; when the collector runs mid-parse, let a second
    thread parse (`other_parse`, default `parse`) from a shallow stack before this one goes on
    (as a finalizer's thread switch would), waiting at most a second for it. Returns the
    SystemErrors either thread met."""
    other_parse = other_parse or parse
    errors: list[str] = []
    state = {"mine": False}
    go, done = threading.Event(), threading.Event()

    def other() -> None:
        go.wait(10)
        try:
            other_parse(CODE)
        except SystemError as exc:
            errors.append(f"other: {exc}")
        done.set()

    def mid_parse(phase: str, info: dict) -> None:
        if phase == "start" and state["mine"] and not go.is_set():
            go.set()
            done.wait(1.0)  # the guarded parse holds the lock: the other thread waits for us

    def mine() -> None:
        state["mine"] = True
        try:
            parse(CODE)
        except SystemError as exc:
            errors.append(f"mine: {exc}")
        finally:
            state["mine"] = False

    thread = threading.Thread(target=other)
    thread.start()
    threshold = gc.get_threshold()
    gc.callbacks.append(mid_parse)
    gc.set_threshold(50)  # collect every 50 allocations: several times in one parse
    try:
        _at_depth(60, mine)
    finally:
        gc.set_threshold(*threshold)
        gc.callbacks.remove(mid_parse)
        go.set()
        thread.join(10)
    assert go.is_set() and done.is_set(), "the collector never ran mid-parse"
    return errors


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="the race this guards is CPython 3.11's")
def test_the_bare_parse_races_here():
    """The control: without it the next test could pass for want of a race."""
    assert any("recursion depth mismatch" in e for e in _interleave(ast.parse))


def test_the_guarded_parse_does_not_race():
    assert _interleave(pyast.parse) == []


def _fail() -> int:
    x: dict = {}
    return x["a"] + x["b"]  # one line that traceback parses to place its carets


def _format_a_traceback(_code: str) -> str:
    try:
        _fail()
    except KeyError:
        return traceback.format_exc()
    raise AssertionError("no KeyError")


def test_traceback_formatting_does_not_race_the_guarded_parse():
    # EvoForge formats a traceback for every failed mutation or evaluation, in its threads. (One
    # is formatted first: in this harness the process's first traceback never raced.)
    _format_a_traceback("")
    assert [_interleave(pyast.parse, _format_a_traceback) for _ in range(3)] == [[], [], []]


def test_tracebacks_keep_their_carets_when_nothing_else_parses():
    text = _format_a_traceback("")
    assert 'return x["a"] + x["b"]' in text and "^" in text.split('return x["a"]')[1], text


def test_the_guarded_parse_raises_what_ast_parse_raises():
    with pytest.raises(SyntaxError):
        pyast.parse("def (")
    assert ast.dump(pyast.parse("x = 1")) == ast.dump(ast.parse("x = 1"))


BARE = re.compile(r"(?<!py)ast\.parse\(|from ast import|literal_eval|PyCF_ONLY_AST")


def test_nothing_else_calls_the_bare_parse():
    offenders = []
    for part in ("api", "cli", "worker", "evolution", "evaluators", "db", "sandbox", "evoforge",
                 "migrations"):
        for path in (ROOT / part).rglob("*.py"):
            if path.name != "pyast.py" and BARE.search(path.read_text()):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
