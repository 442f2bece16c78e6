"""evolution/sanitize.py: the rules every untrusted value passes before it is stored."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from evoforge.evolution import sanitize
from evoforge.evolution.sanitize import Sanitizer, clean_child, servable, unstorable
from evoforge.evolution.step import Child
from evoforge.evolution.types import ERROR, INVALID, OK, REJECTED, EvalResult, Mutation


def strict_json(value) -> str:
    """What PostgreSQL's json type and a UTF-8 encoder accept: no NaN, encodable text."""
    text = json.dumps(value, allow_nan=False, ensure_ascii=False)
    text.encode("utf-8")
    assert "\x00" not in text and "\\u0000" not in text
    return text


def test_nan_and_infinity_become_null_and_are_noted():
    s = Sanitizer()
    out = s.json({"loss": float("nan"), "gain": float("inf"), "drop": -math.inf, "ok": 1.5,
                  "nested": {"deep": [1.0, float("nan")]}}, "metrics")
    assert out == {"loss": None, "gain": None, "drop": None, "ok": 1.5, "nested": {"deep": [1.0, None]}}
    assert "metrics.loss: NaN -> null" in s.notes
    assert "metrics.gain: inf -> null" in s.notes and "metrics.drop: -inf -> null" in s.notes
    assert "metrics.nested.deep[1]: NaN -> null" in s.notes
    strict_json(out)


def test_nul_and_lone_surrogates_in_text_and_keys():
    s = Sanitizer()
    assert s.text("a\x00b\x00", "response") == "ab"
    assert s.text("bad \udcff end", "reason") == "bad \\udcff end"
    assert s.notes == ["response: 2 NUL removed", "reason: 1 lone surrogate escaped"]
    out = s.json({"k\x00ey\ud800": "v\udfff"}, "artifacts")
    assert out == {"key\\ud800": "v\\udfff"}
    strict_json(out)
    assert s.text("héllo ✓", "x") == "héllo ✓"  # real non-ASCII text is kept


def test_long_strings_are_cut_with_a_marker():
    s = Sanitizer()
    out = s.text("x" * 5000, "stderr", max_chars=1000)
    assert out.startswith("x" * 1000) and out.endswith("... [4000 more chars truncated]")
    assert s.notes == ["stderr: truncated to 1000 chars (4000 cut)"]
    leaf = Sanitizer().json({"a": "y" * (sanitize.MAX_TEXT_CHARS + 7)}, "artifacts")["a"]
    assert len(leaf) < sanitize.MAX_TEXT_CHARS + 100 and leaf.endswith("7 more chars truncated]")


def test_deep_nesting_is_flattened_to_text():
    deep: object = 1
    for _ in range(500):
        deep = [deep]
    s = Sanitizer()
    out = s.json({"d": deep}, "artifacts")
    strict_json(out)  # json.dumps of the original would hit the recursion limit
    probe, depth = out["d"], 1
    while isinstance(probe, list):
        probe, depth = probe[0], depth + 1
    assert isinstance(probe, str) and depth <= sanitize.MAX_DEPTH + 1
    assert any("nested deeper than" in n for n in s.notes)


def test_huge_dicts_and_lists_are_bounded():
    s = Sanitizer()
    out = s.json({"big": list(range(50_000)), **{f"k{i}": i for i in range(5000)}}, "metrics")
    assert len(out) == sanitize.MAX_ITEMS and len(out["big"]) == sanitize.MAX_ITEMS
    assert "metrics: 4001 of 5001 keys dropped" in s.notes
    assert "metrics.big: 49000 of 50000 items dropped" in s.notes
    # many medium containers: the per-record value budget holds
    s2 = Sanitizer()
    out2 = s2.json([[i] * 900 for i in range(900)], "features")
    assert sum(v is not None for row in out2 for v in (row if isinstance(row, list) else [row])) \
        <= sanitize.MAX_VALUES
    assert any("more than" in n for n in s2.notes)
    assert len(s2.notes) <= sanitize.MAX_NOTES + 1


def test_integers_beyond_64_bits_and_odd_types():
    s = Sanitizer()
    out = s.json({"big": 10 ** 30, "huge": 10 ** 400, "ok": 2 ** 63 - 1, "np": np.float32(0.5),
                  "npi": np.int64(3), "arr": np.array([1.0, np.nan]), "t": (1, 2), "b": b"\xffx",
                  "obj": object(), 3: "int key", (1, 2): "tuple key"}, "metrics")
    assert out["big"] == 1e30 and out["huge"] is None and out["ok"] == 2 ** 63 - 1
    assert out["np"] == 0.5 and out["npi"] == 3 and out["arr"] == [1.0, None] and out["t"] == [1, 2]
    assert out["b"] == "\ufffdx" and out["obj"].startswith("<object object")
    assert out["3"] == "int key" and out["(1, 2)"] == "tuple key"
    assert "metrics.big: integer beyond 64 bits -> 1e+30" in s.notes
    assert "metrics.huge: integer beyond 64 bits -> null" in s.notes
    assert "metrics: int key '3' -> string" in s.notes
    strict_json(out)


def child(result: EvalResult, *, code="def f():\n    return 1\n", **mutation) -> Child:
    return Child(iteration=1, island=0, parent_id=None, generation=0, code=code, code_hash="h",
                 mutation=Mutation(code=code, kind="llm:diff", **mutation), result=result)


def test_a_nan_score_is_a_failed_evaluation_never_an_elite():
    c = clean_child(child(EvalResult(status=OK, score=float("nan"), metrics={"loss": float("nan")})))
    r = c.result
    assert r.status == INVALID and r.score is None
    assert r.artifacts["reason"] == "non-finite score NaN"
    assert r.artifacts["sanitized"] == ["score: NaN -> null", "metrics.loss: NaN -> null"]
    inf = clean_child(child(EvalResult(status=OK, score=float("inf")))).result
    assert inf.status == INVALID and inf.score is None and "inf" in inf.artifacts["reason"]
    # a failed evaluation keeps its own reason
    bad = clean_child(child(EvalResult(status=ERROR, score=float("nan"),
                                       artifacts={"reason": "boom"}))).result
    assert bad.status == ERROR and bad.score is None and bad.artifacts["reason"] == "boom"


def test_llm_exchange_and_program_text_are_cleaned_and_noted():
    c = clean_child(child(EvalResult(status=REJECTED, score=None, artifacts={"reason": "no diff"}),
                          code=None, response="reply\x00 with NUL", prompt="p\udcff",
                          model="m" * 500, prompt_tokens=2 ** 40, completion_tokens=-3,
                          cost_usd=float("nan"), extra={"traceback": "x\x00"}))
    m = c.mutation
    assert m.response == "reply with NUL" and m.prompt == "p\\udcff" and len(m.model) < 260
    assert m.prompt_tokens == 2 ** 31 - 1 and m.completion_tokens == 0 and m.cost_usd == 0.0
    assert m.extra == {"traceback": "x"}
    notes = c.result.artifacts["sanitized"]
    assert "response: 1 NUL removed" in notes and "prompt: 1 lone surrogate escaped" in notes
    assert "cost_usd: NaN -> null" in notes and c.result.status == REJECTED


def test_a_program_whose_text_changed_is_not_ok():
    c = clean_child(child(EvalResult(status=OK, score=1.0), code="x = 1\x00\n"))
    assert c.code == "x = 1\n" and c.result.status == INVALID and c.result.score is None
    assert c.result.artifacts["reason"] == sanitize.CLEANED_CODE


def test_clean_values_pass_unchanged_without_notes():
    r = EvalResult(status=OK, score=0.5, metrics={"a": 1.0, "n": 2}, features={"f": 0.1},
                   artifacts={"stderr": "warn"})
    c = clean_child(child(r))
    assert c.result == r and "sanitized" not in c.result.artifacts


def test_unstorable_keeps_the_iteration_as_a_failure_without_the_values():
    c = clean_child(child(EvalResult(status=OK, score=1.0, metrics={"a": 1.0}), response="r"))
    u = unstorable(c, ValueError("the database said no \x00"))
    assert u.code is None and u.code_hash is None and u.mutation.response is None
    assert u.result.status == ERROR and u.result.score is None and u.result.metrics == {}
    assert u.result.artifacts["reason"] == \
        "the result could not be stored (ValueError: the database said no )"
    assert u.result.artifacts["stage"] == "commit"


def test_servable_escapes_what_a_json_encoder_rejects():
    clean = {"a": ["x", 1.0, {"b": "é"}]}
    assert servable(clean) is clean  # nothing to change: no copy
    bad = {"a": ["x\udcff", float("nan")], "k\ud800": 1, "ok": "fine"}
    out = servable(bad)
    assert out == {"a": ["x\\udcff", None], "k\\ud800": 1, "ok": "fine"}
    json.dumps(out, allow_nan=False, ensure_ascii=False).encode("utf-8")
    assert bad["a"][0] == "x\udcff"  # the input is left alone


def test_hostile_objects_cannot_break_the_cleaning():
    class Hostile:
        def __repr__(self) -> str:
            raise RuntimeError("no")

        __str__ = __repr__

        def __hash__(self) -> int:
            return 1

    s = Sanitizer()
    out = s.json({"v": Hostile(), Hostile(): 1}, "artifacts")
    assert out["v"] == "<Hostile>" and out["<Hostile>"] == 1
    cyclic: list = []
    cyclic.append(cyclic)
    strict_json(Sanitizer().json({"c": cyclic}, "artifacts"))
    assert Sanitizer().text(Hostile(), "model") == "<Hostile>"


@pytest.mark.parametrize("value", [float("nan"), "s\x00", "\udcff", 10 ** 100, [float("inf")],
                                   {"a": {"b": {"c": float("-inf")}}}])
def test_anything_cleaned_is_strict_json(value):
    strict_json(Sanitizer().json(value, "v"))


def test_prompts_show_the_evaluator_artifacts_apart_from_the_captured_ones():
    """The namespace (evaluators/pipeline.py) reaches the prompt: both stderrs, told apart."""
    import random

    from evoforge.evolution.prompts import build_prompt
    from evoforge.evolution.step import Selection
    from evoforge.evolution.types import ProgramRef

    parent = ProgramRef(id=1, code="x = 1\n", score=0.5, status=OK, island=0, generation=0,
                        artifacts={"stderr": "captured line",
                                   "evaluator": {"stderr": "forged line", "summary": "3 values"}})
    user = build_prompt(Selection(island=0, parent=parent), "ctx", random.Random(0)).messages[1]["content"]
    assert "stderr: captured line" in user
    assert "evaluator.stderr: forged line" in user and "evaluator.summary: 3 values" in user
