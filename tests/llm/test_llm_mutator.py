"""LLMMutator end to end: OpenAIClient -> loopback server -> edits applied -> Mutation."""
from __future__ import annotations

import os
import random
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from evoforge.evolution.ensemble import Ensemble, Price, PriceTable
from evoforge.evolution.llm_mutator import Completion, IdeaConfig, LLMMutator, parse_review_score
from evoforge.evolution.program import region_texts
from evoforge.evolution.types import ERROR
from tests.llm.conftest import PROGRAM, program, selection
from tests.llm.fake_openai import Raw, Reply, Status, diff_reply
from evoforge.worker.llm_client import OpenAIClient

CTX = "Return n numbers; a larger spread scores higher."
KEY = "sk-mutator-SECRET-abcdef0123456789"
GOOD = diff_reply("    step = 0.25", "    step = 0.5")
PERTURB = Path("/work/shared/tools/perturb_llm.py")


def make(fake, models=("fake-a",), **kw) -> LLMMutator:
    client = OpenAIClient(fake.base_url, api_key=KEY, timeout_s=2.0, max_retries=0,
                          hard_limit_s=5.0, backoff_base_s=0.01)
    prices = PriceTable({"fake-a": Price(1.0, 2.0), "fake-b": Price(0.5, 1.0)})
    return LLMMutator(client.complete, CTX, Ensemble(list(models), prices=prices), **kw)


def test_diff_reply_becomes_a_program_with_tokens_and_cost(fake):
    fake.script(Reply(GOOD, prompt_tokens=1000, completion_tokens=500))
    m = make(fake).mutate(selection(), random.Random(0))
    assert m.error == "" and m.kind == "llm:diff"
    assert m.code == PROGRAM.replace("step = 0.25", "step = 0.5")
    assert m.model == "fake-a" and (m.prompt_tokens, m.completion_tokens) == (1000, 500)
    assert m.cost_usd == pytest.approx((1000 * 1.0 + 500 * 2.0) / 1e6)
    assert m.response == GOOD and "# Current Program" in m.prompt and CTX in m.prompt
    assert m.extra["calls"] == 1 and m.extra["edit_applied"] == 1
    [req] = fake.chat_requests()
    assert req.body["max_tokens"] == 4096 and req.body["temperature"] == 0.7


def test_rewrite_mode_applies_full_program(fake):
    new = PROGRAM.replace("step = 0.25", "step = 0.75")
    fake.script(Reply(f"Rewrote it.\n```python\n{new}```\n"))
    m = make(fake, diff_mode=False).mutate(selection(), random.Random(0))
    assert m.kind == "llm:rewrite" and m.code == new
    assert "complete new program" in m.prompt


@pytest.mark.parametrize("reply, match", [
    (diff_reply("    step = 9.99", "    step = 1.0"), ""),
    (diff_reply("def run():", "def run2():"), "EVOLVE"),
    (diff_reply("    step = 0.25", "    step = (0.25"), "parse"),
    ("I have no idea.", ""),
    (diff_reply("    step = 0.25", "    step = 0.25"), "unchanged"),
])
def test_failed_edits_are_recorded_not_raised(fake, reply, match):
    fake.script(Reply(reply))
    m = make(fake).mutate(selection(), random.Random(0))
    assert m.code is None and m.error and match in m.error
    assert m.response == reply and m.prompt_tokens == 123


@pytest.mark.parametrize("behaviour, match", [
    (Raw(b"{oops"), "MalformedLLMReply"),
    (Raw(b'{"object": "chat.completion"}'), "no choices"),
    (Status(500), "TransientLLMError"),
    (Status(401), "PermanentLLMError"),
])
def test_call_failures_are_recorded_and_rest_the_model(fake, behaviour, match):
    fake.script(behaviour)
    mut = make(fake)
    m = mut.mutate(selection(), random.Random(0))
    assert m.code is None and m.kind == "llm:error" and match in m.error
    assert m.model == "fake-a" and m.prompt and m.response is None
    assert mut.ensemble.resting() == ["fake-a"]


def test_ensemble_rests_failing_model_and_uses_the_other(fake):
    fake.per_model = {"fake-a": Status(503), "fake-b": Reply(GOOD)}
    mut = make(fake, models=("fake-a:1", "fake-b:1"))
    rng = random.Random(3)
    results = [mut.mutate(selection(), rng) for _ in range(12)]
    assert len(fake.chat_requests("fake-a")) == 1          # tried once, then rested
    assert sum(r.code is not None for r in results) >= 11
    assert all(r.model == "fake-b" for r in results if r.code is not None)


def test_key_never_in_stored_prompt_response_or_error(fake, monkeypatch):
    monkeypatch.setenv("EVOFORGE_LLM_API_KEY", KEY)
    echo = lambda req: {"error": {"message": req.headers["authorization"]}}
    fake.script(Reply(GOOD + f"\n(by the way: {KEY})"), Status(400, body=echo))
    client = OpenAIClient(fake.base_url, max_retries=0)
    mut = LLMMutator(client.complete, CTX, Ensemble(["fake-a"]))
    ok = mut.mutate(selection(), random.Random(0))
    bad = mut.mutate(selection(), random.Random(1))
    assert fake.chat_requests()[0].headers["authorization"] == f"Bearer {KEY}"
    for m in (ok, bad):
        blob = repr(m)
        assert KEY not in blob
    assert ok.code is not None and "[redacted]" in ok.response
    assert bad.code is None and "400" in bad.error


def test_budget_refusal_makes_no_call(fake):
    asked = []
    mut = make(fake, budget=lambda n: asked.append(n) or False)
    m = mut.mutate(selection(), random.Random(0))
    assert (m.code, m.kind, m.error) == (None, "budget", "token budget spent")
    assert fake.chat_requests() == [] and asked and asked[0] > 4096


class Budget:
    def __init__(self, tokens):
        self.left, self.released = tokens, 0

    def reserve_tokens(self, n):
        if n > self.left:
            return False
        self.left -= n
        return True

    def release_tokens(self, n):
        self.left += n
        self.released += n


def test_budget_reserves_then_returns_the_unused_part(fake):
    fake.default = Reply(GOOD, prompt_tokens=1000, completion_tokens=200)
    budget = Budget(20_000)
    mut = make(fake, budget=budget, max_tokens=5000)
    results = [mut.mutate(selection(), random.Random(i)) for i in range(30)]
    used = sum(r.prompt_tokens + r.completion_tokens for r in results)
    assert used == 20_000 - budget.left            # the budget tracks real usage
    kinds = [r.kind for r in results]
    assert "budget" in kinds and kinds.index("budget") >= 10
    assert len(fake.chat_requests()) == sum(k != "budget" for k in kinds)


def test_parent_failure_reaches_the_prompt(fake):
    fake.script(Reply(GOOD))
    parent = program(status=ERROR, score=None,
                     artifacts={"reason": "edit did not apply: SEARCH block 'foo' matched nowhere",
                                "stderr": "Traceback\nValueError: boom"})
    m = make(fake).mutate(selection(parent), random.Random(0))
    assert m.extra["fix_mode"] is True
    assert "matched nowhere" in m.prompt and "ValueError: boom" in m.prompt
    assert "matched nowhere" in fake.chat_requests()[0].body["messages"][1]["content"]


# ------------------------------------------------------------------ research ideas

IDEA = "Use a geometric progression for the steps instead of a constant step."


def test_low_scored_idea_is_dropped_without_code(fake):
    fake.script(Reply(IDEA, 50, 30), Reply("Not novel at all.\nScore: 3", 40, 10))
    mut = make(fake, ideas=IdeaConfig(threshold=6))
    m = mut.mutate(selection(), random.Random(0))
    assert m.code is None and m.kind == "idea-rejected" and "3 < threshold 6" in m.error
    assert m.extra["idea"] == IDEA and "Score: 3" in m.extra["review"]
    assert m.extra["review_score"] == 3 and m.extra["calls"] == 2
    assert (m.prompt_tokens, m.completion_tokens) == (90, 40)
    assert len(fake.chat_requests()) == 2


def test_good_idea_is_implemented_and_stored_together(fake):
    fake.script(Reply(IDEA), Reply("Promising and new.\n**Score:** 8/10"), Reply(GOOD))
    mut = make(fake, models=("fake-a",), ideas=IdeaConfig(threshold=6, reviewer_model="fake-b"))
    m = mut.mutate(selection(), random.Random(0))
    assert m.code is not None and m.kind == "llm:diff"
    assert m.extra["idea"] == IDEA and m.extra["review_score"] == 8
    assert m.extra["review_model"] == "fake-b" and m.extra["calls"] == 3
    reqs = fake.chat_requests()
    assert [r.body["model"] for r in reqs] == ["fake-a", "fake-b", "fake-a"]
    assert IDEA in reqs[2].body["messages"][1]["content"] and IDEA in m.prompt


def test_review_scores_parse():
    assert parse_review_score("good.\nScore: 7") == 7
    assert parse_review_score("Score: 2 at first... final Score = 9/10") == 9
    assert parse_review_score("**Score**: 6.5") == 6.5
    assert parse_review_score("no number") is None
    assert parse_review_score("Score: 42") is None


def test_injected_complete_without_http():
    """The mutator needs only a `complete` callable (how the worker and unit tests use it)."""
    seen = []

    def complete(model, messages, *, temperature, max_tokens):
        seen.append((model, temperature, max_tokens))
        return Completion(GOOD, 10, 5)

    m = LLMMutator(complete, CTX, Ensemble(["x"]), temperature=0.2, max_tokens=99).mutate(
        selection(), random.Random(0))
    assert m.code is not None and seen == [("x", 0.2, 99)]


# ------------------------------------------------------------------ the benchmark stand-in

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def perturb_server():
    if not PERTURB.exists():
        pytest.skip(f"{PERTURB} not present")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, str(PERTURB), "--port", str(port), "--seed", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=0.5)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("perturb_llm.py did not start")
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=5)


NUMBER = re.compile(r"\d+\.\d+|\d+")


def test_perturb_stand_in_changes_one_number_inside_the_evolve_block(perturb_server):
    other = program(id=9, code=PROGRAM.replace("0.25", "0.125").replace("solve", "solve2"),
                    score=0.9)
    sel = selection(top=[other], inspirations=[program(id=10, code="x = 12345\n", score=0.1)])
    client = OpenAIClient(perturb_server, timeout_s=5, max_retries=1, hard_limit_s=10)
    mut = LLMMutator(client.complete, CTX, Ensemble(["perturb"]))
    changed = 0
    for i in range(5):
        m = mut.mutate(sel, random.Random(i))
        assert m.error == "" and m.code is not None and m.kind == "llm:diff", m.error
        assert (m.prompt_tokens, m.completion_tokens) == (100, 20)
        # outside the block nothing moved; inside exactly one number changed
        assert m.code.split("# EVOLVE-BLOCK-START")[0] == PROGRAM.split("# EVOLVE-BLOCK-START")[0]
        assert m.code.split("# EVOLVE-BLOCK-END")[1] == PROGRAM.split("# EVOLVE-BLOCK-END")[1]
        old, new = region_texts(PROGRAM)[0], region_texts(m.code)[0]
        assert NUMBER.sub("#", old) == NUMBER.sub("#", new)
        diffs = [(a, b) for a, b in zip(NUMBER.findall(old), NUMBER.findall(new)) if a != b]
        assert len(diffs) == 1
        changed += 1
    assert changed == 5


def test_build_llm_mutator_for_the_cli(fake):
    from evoforge.worker.llm_client import build_llm_mutator

    fake.default = Reply(GOOD)
    mut = build_llm_mutator(fake.base_url, ["fake-a:2", "fake-b:1"], CTX, temperature=0.1,
                            max_tokens=256, prices=PriceTable.parse(["fake-a=1/1"]), seed=0)
    ms = [mut.mutate(selection(), random.Random(i)) for i in range(10)]
    assert all(m.code is not None for m in ms)
    assert {m.model for m in ms} == {"fake-a", "fake-b"}
    assert {r.body["max_tokens"] for r in fake.chat_requests()} == {256}
    assert mut.ensemble.models == ["fake-a", "fake-b"]
