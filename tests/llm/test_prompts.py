"""Prompt building (pure)."""
from __future__ import annotations

import random
import re

from evoforge.evolution import prompts
from evoforge.evolution.types import ERROR, OK
from tests.llm.conftest import PROGRAM, program, selection

CTX = "Pack 26 circles in a unit square to maximise the sum of radii."
CODE_BLOCK = re.compile(r"```(?:python)?\n(.*?)```", re.S)


def user(p: prompts.Prompt) -> str:
    return p.messages[1]["content"]


def pick_like_perturb(messages) -> str:
    """The rule of /work/shared/tools/perturb_llm.py: the last code block whose lead-in text
    mentions 'current program' or 'parent program'."""
    text = "\n".join(m["content"] for m in messages)
    prev, chosen = 0, None
    for m in CODE_BLOCK.finditer(text):
        lead = text[prev:m.start()].lower()
        if "current program" in lead or "parent program" in lead:
            chosen = m.group(1)
        prev = m.end()
    return chosen


def other(i: int, score: float) -> object:
    code = f"# other program {i}\ndef solve(n):\n    return [{i}] * n\n"
    return program(id=100 + i, code=code, score=score, metrics={"sum_radii": score * 2})


def test_layout_parent_last_and_found_by_the_stand_in_rule():
    parent = program(metrics={"sum_radii": 1.25, "combined_score": 0.5})
    sel = selection(parent, top=[other(1, 0.9), other(2, 0.8)],
                    inspirations=[other(3, 0.1), other(4, 0.2)], meta_note="Use a hex grid.")
    p = prompts.build_prompt(sel, CTX, random.Random(0))
    system, text = p.messages[0]["content"], user(p)
    assert p.messages[0]["role"] == "system" and p.messages[1]["role"] == "user"
    assert CTX in system and "<<<<<<< SEARCH" in system and "EVOLVE-BLOCK" in system
    assert text.count("# Current Program") == 1
    assert pick_like_perturb(p.messages).rstrip("\n") == PROGRAM.rstrip("\n")
    # the parent is the last fenced block; the others come before it
    blocks = CODE_BLOCK.findall(text)
    assert blocks[-1].rstrip() == PROGRAM.rstrip()
    assert "# other program 1" in blocks[0] and len(blocks) == 5
    assert "sum_radii: 1.25" in text and "Use a hex grid." in text
    assert not p.fix_mode


def test_caps_on_inspirations_and_code_length():
    long_code = "def solve(n):\n" + "".join(f"    x{i} = {i}\n" for i in range(2000))
    insp = [program(id=200 + i, code=long_code, score=0.1) for i in range(10)]
    cfg = prompts.PromptConfig(max_inspirations=2, max_other_code_chars=500, max_top=1)
    p = prompts.build_prompt(selection(inspirations=insp, top=[other(1, 0.9), other(2, 0.8)]),
                             CTX, random.Random(1), cfg)
    text = user(p)
    assert text.count("### Inspiration") == 2 and text.count("### Top program") == 1
    assert text.count("# ... (truncated)") == 2
    assert len(text) < 5000


def test_parent_shown_whole_and_not_repeated_as_top():
    parent = program(id=7)
    p = prompts.build_prompt(selection(parent, top=[parent, other(1, 0.9)]), CTX,
                             random.Random(0))
    assert user(p).count("def solve(n):\n    step = 0.25") == 1


def test_fix_mode_shows_failure_reason_and_stderr_tail_without_fences():
    stderr = "noise\n" * 1000 + "Traceback ...\nZeroDivisionError: division by zero\n```"
    parent = program(status=ERROR, score=None,
                     artifacts={"reason": "raised ZeroDivisionError", "stderr": stderr,
                                "stage": "stage1"})
    p = prompts.build_prompt(selection(parent, top=[parent]), CTX, random.Random(0))
    text = user(p)
    assert p.fix_mode and "-f" in p.variant
    assert "raised ZeroDivisionError" in text and "ZeroDivisionError: division by zero" in text
    assert "status: error" in text and "stage: stage1" in text
    assert text.count("noise") < 400                      # tail only
    assert pick_like_perturb(p.messages).rstrip() == PROGRAM.rstrip()
    assert text.rstrip().endswith(("Use SEARCH/REPLACE blocks.",))
    assert any(s in text for s in ("Fix the cause", "repair the program"))


def test_variations_depend_on_rng_and_are_reproducible():
    variants = {prompts.build_prompt(selection(), CTX, random.Random(s)).variant
                for s in range(40)}
    assert len(variants) >= 6
    a = prompts.build_prompt(selection(), CTX, random.Random(5))
    b = prompts.build_prompt(selection(), CTX, random.Random(5))
    assert a == b


def test_rewrite_mode_instructions():
    cfg = prompts.PromptConfig(diff_mode=False)
    p = prompts.build_prompt(selection(), CTX, random.Random(0), cfg)
    assert "complete new program" in p.messages[0]["content"]
    assert "SEARCH" not in p.messages[0]["content"]
    assert user(p).rstrip().endswith("Return the complete program.")


def test_idea_prompts():
    sel = selection()
    idea = prompts.build_idea_prompt(sel, CTX, random.Random(0))
    assert "Do not write code" in user(idea) and "# Current Program" in user(idea)
    review = prompts.build_review_prompt(CTX, "Use ```a hex``` lattice", sel.parent)
    assert "Score: N" in review[1]["content"] and "```" not in review[1]["content"]
    with_idea = prompts.build_prompt(sel, CTX, random.Random(0), idea="Try a hex lattice")
    assert "## Idea to implement\nTry a hex lattice" in user(with_idea)


def test_render_and_estimate():
    msgs = [{"role": "system", "content": "abc"}, {"role": "user", "content": "x" * 300}]
    assert prompts.render(msgs) == "[system]\nabc\n\n[user]\n" + "x" * 300
    assert prompts.estimate_tokens(msgs) >= 300 // 4
