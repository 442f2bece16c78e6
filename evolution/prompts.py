"""Chat prompts for LLM mutations. Pure: text in, messages out; the rng picks template variations.

Layout of the user message (the order matters):

    ## Best programs on this island / ## Inspirations   (other programs, capped and truncated)
    # Current Program                                   (the parent, whole, in a fenced block)
    ## Its metrics / ## Its last outcome                (status, reason, stderr tail, artifacts)
    ## Notes from earlier iterations                    (the meta note)
    ## Your task                                        (improve, or fix mode)

The parent's code is the last fenced block of the prompt and the only one under a "Current
Program" heading: tools that edit "the current program" (and the benchmark stand-in LLM) find it,
and text after it has its backticks neutralised so no other block can follow it.
"""
from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from typing import Any, Iterable

from evoforge.evolution.types import OK, ProgramRef

CURRENT_HEADING = "# Current Program"


@dataclass(frozen=True)
class PromptConfig:
    diff_mode: bool = True               # SEARCH/REPLACE blocks; False = full rewrite
    max_top: int = 2                     # island's best programs shown
    max_inspirations: int = 3            # diverse programs from other cells
    max_other_code_chars: int = 2500     # per shown top program / inspiration
    max_parent_code_chars: int = 40000   # the parent is shown whole up to this
    max_artifact_chars: int = 1500       # per artifact value (stderr keeps its tail)
    max_metrics: int = 16
    language: str = "python"


# Template variations: the rng picks one of each per prompt, recorded in `variant`.
_ROLES = (
    "You are an expert programmer and researcher improving a program through careful, "
    "measurable changes.",
    "You are a world-class algorithm designer. You evolve a program step by step; each "
    "step is scored by an automatic evaluator.",
    "You are a meticulous optimisation engineer. Your edits are judged only by the "
    "evaluator's score.",
)
_IMPROVE = (
    "Propose one focused change that is likely to raise combined_score.",
    "Try a bolder idea than the programs above: a different algorithm or a new heuristic, "
    "while keeping the program valid.",
    "Improve the current program. Tune what matters, remove what does not, and keep it "
    "correct.",
    "Combine the strongest ideas of the programs shown into the current program.",
)
_FIX = (
    "The current program does not produce a valid result. Fix the cause of the failure "
    "shown above with the smallest change that makes it valid; keep its approach.",
    "The current program fails. Read the failure reason and error output, then repair the "
    "program so that it runs within the limits and returns valid output.",
)

_DIFF_FORMAT = """Answer with one or more SEARCH/REPLACE blocks in exactly this format:

<<<<<<< SEARCH
lines copied exactly from the current program
=======
the new lines
>>>>>>> REPLACE

The SEARCH part must match the current program exactly (whitespace included) and should be
short but unique. Edit only between the EVOLVE-BLOCK-START and EVOLVE-BLOCK-END markers when
the program has them; never remove the markers. Explain the change in at most two sentences
before the blocks."""

_REWRITE_FORMAT = """Answer with the complete new program in one fenced ```{language} block.
Keep the code outside the EVOLVE-BLOCK-START / EVOLVE-BLOCK-END markers unchanged and keep the
markers. Explain the change in at most two sentences before the block."""


@dataclass(frozen=True)
class Prompt:
    messages: list[dict[str, str]]
    fix_mode: bool
    variant: str                         # e.g. "r1-i3" (role, instruction): for analysis


def is_fix_mode(parent: ProgramRef | None) -> bool:
    """Fix mode: the parent is not valid (the selector hands out an invalid parent only when
    the island has no valid program yet)."""
    return parent is None or parent.status != OK


def build_prompt(selection: Any, task_context: str, rng: random.Random,
                 config: PromptConfig = PromptConfig(), *, idea: str | None = None) -> Prompt:
    """Messages for one mutation of `selection.parent` (an `evolution.step.Selection`)."""
    parent: ProgramRef = selection.parent
    if parent is None:
        raise ValueError("a mutation prompt needs a parent program")
    top = [p for p in (selection.top or []) if p.id != parent.id and p.code]
    fix = is_fix_mode(parent)
    r = rng.randrange(len(_ROLES))
    instructions = _FIX if fix else _IMPROVE
    i = rng.randrange(len(instructions))

    system = _system(task_context, config, r)
    parts: list[str] = []
    shown = {parent.id}
    tops = [p for p in top if p.id not in shown][: config.max_top]
    shown.update(p.id for p in tops)
    if tops:
        parts.append("## Best programs on this island\n")
        for k, p in enumerate(tops, 1):
            parts.append(_other_program(f"### Top program {k}", p, config))
    insp = [p for p in (selection.inspirations or []) if p.id not in shown and p.code]
    insp = insp[: config.max_inspirations]
    if insp:
        parts.append("## Inspirations (diverse programs from other niches)\n")
        for k, p in enumerate(insp, 1):
            parts.append(_other_program(f"### Inspiration {k}", p, config))

    parts.append(f"{CURRENT_HEADING}\n\n```{config.language}\n"
                 f"{_clip_code(parent.code, config.max_parent_code_chars)}\n```\n")
    tail: list[str] = [_parent_status(parent, config)]
    meta = (getattr(selection, "meta_note", "") or "").strip()
    if meta:
        tail.append("## Notes from earlier iterations\n" + _clip(meta, 2000) + "\n")
    if idea:
        tail.append("## Idea to implement\n" + _clip(idea.strip(), 2000) + "\n")
    tail.append("## Your task\n" + instructions[i] + ("\nImplement the idea above." if idea else "")
                + "\n" + ("Use SEARCH/REPLACE blocks." if config.diff_mode
                          else "Return the complete program."))
    user = "\n".join(parts) + "\n" + _defuse("\n".join(tail))
    return Prompt(messages=[{"role": "system", "content": system},
                            {"role": "user", "content": user}],
                  fix_mode=fix, variant=f"r{r}-{'f' if fix else 'i'}{i}")


def build_idea_prompt(selection: Any, task_context: str, rng: random.Random,
                      config: PromptConfig = PromptConfig()) -> Prompt:
    """Ask for one short research idea in prose (AlphaResearch style), no code."""
    base = build_prompt(selection, task_context, rng, config)
    system = (_ROLES[0] + "\n\n## Task\n" + task_context.strip() + "\n\nYou propose research "
              "ideas; you do not write code in this step.")
    user = base.messages[1]["content"].rsplit("## Your task", 1)[0] + (
        "## Your task\nPropose ONE concrete idea that could raise combined_score of the current "
        "program. Describe it in plain prose in at most 120 words: what to change and why it "
        "should help. Do not write code.")
    return Prompt([{"role": "system", "content": system}, {"role": "user", "content": user}],
                  fix_mode=base.fix_mode, variant=base.variant + "-idea")


def build_review_prompt(task_context: str, idea: str, parent: ProgramRef) -> list[dict[str, str]]:
    """A reviewer scores an idea 1-10 for novelty and promise; the last line holds the score."""
    score = "none" if parent.score is None else _fmt(parent.score)
    system = ("You are a strict reviewer of research ideas for automated algorithm discovery. "
              "Most ideas deserve 3-6; reserve 8-10 for ideas that are both novel and likely "
              "to improve the score.")
    user = (f"## Problem\n{_clip(task_context.strip(), 3000)}\n\n"
            f"## Current program\nstatus {parent.status}, combined_score {score}\n\n"
            f"## Proposed idea\n{_clip(idea.strip(), 2000)}\n\n"
            "## Your task\nRate the idea for novelty and promise on a scale of 1 to 10. Give "
            "one or two sentences of reasons, then end with a line `Score: N`.")
    return [{"role": "system", "content": system}, {"role": "user", "content": _defuse(user)}]


def render(messages: Iterable[dict[str, str]]) -> str:
    """One text for storage with the program: `[role]` headers before each message."""
    return "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in messages)


def estimate_tokens(messages: Iterable[dict[str, str]]) -> int:
    """A generous token estimate (about 3 characters per token) for budget reservations."""
    return sum(len(m.get("content") or "") // 3 + 4 for m in messages)


# --------------------------------------------------------------------------- pieces

def _system(task_context: str, config: PromptConfig, role: int) -> str:
    fmt = _DIFF_FORMAT if config.diff_mode else _REWRITE_FORMAT.format(language=config.language)
    return f"{_ROLES[role]}\n\n## Task\n{task_context.strip()}\n\n## Edit format\n{fmt}"


def _other_program(title: str, p: ProgramRef, config: PromptConfig) -> str:
    head = f"{title} (combined_score {_fmt(p.score)}{_metric_line(p.metrics, 4)})"
    return (f"{_defuse(head)}\n```{config.language}\n"
            f"{_clip_code(p.code, config.max_other_code_chars)}\n```\n")


def _parent_status(p: ProgramRef, config: PromptConfig) -> str:
    lines = [f"## Its outcome\nstatus: {p.status}; combined_score: {_fmt(p.score)}; "
             f"generation {p.generation}"]
    metrics = _metrics(p.metrics, config.max_metrics)
    if metrics:
        lines.append("## Its metrics\n" + metrics)
    arts = _artifacts(p.artifacts or {}, config.max_artifact_chars)
    if arts:
        lines.append("## Its evaluation output\n" + arts)
    return "\n".join(lines) + "\n"


def _artifacts(arts: dict[str, Any], cap: int) -> str:
    # The evaluator's own artifacts (evaluators/pipeline.py keeps them under "evaluator") are
    # shown as "evaluator.<name>": the model sees both, and which is which.
    nested = arts.get("evaluator")
    if isinstance(nested, dict):
        arts = {**{k: v for k, v in arts.items() if k != "evaluator"},
                **{f"evaluator.{k}": v for k, v in nested.items()}}
    first = ("reason", "stage", "edit_errors", "stderr", "traceback", "stdout")
    keys = [k for k in first if k in arts] + sorted(k for k in arts if k not in first)
    out, total = [], 0
    for k in keys:
        v = arts[k]
        if v is None or v == "" or v == [] or v == {}:
            continue
        if isinstance(v, (list, tuple)):
            text = "\n".join(f"- {x}" for x in v[-5:])
        elif isinstance(v, dict):
            text = json.dumps(v, default=str, sort_keys=True)
        else:
            text = str(v)
        tail = k.removeprefix("evaluator.") in ("stderr", "stdout", "traceback")
        text = _clip(text, cap, keep_tail=tail)
        out.append(f"{k}:\n{text}" if "\n" in text else f"{k}: {text}")
        total += len(text)
        if total > 4 * cap:
            break
    return "\n".join(out)


def _metrics(metrics: dict[str, Any], cap: int) -> str:
    items = list(metrics.items())[:cap]
    return "\n".join(f"- {k}: {_fmt(v)}" for k, v in items)


def _metric_line(metrics: dict[str, Any], cap: int) -> str:
    items = [(k, v) for k, v in metrics.items()
             if k != "combined_score" and isinstance(v, (int, float))][:cap]
    return "".join(f", {k} {_fmt(v)}" for k, v in items)


def _fmt(v: Any) -> str:
    if v is None:
        return "none"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return f"{v:.6g}" if math.isfinite(v) else str(v)
    if isinstance(v, int):
        return str(v)
    return _clip(str(v), 200)


def _clip(text: str, cap: int, keep_tail: bool = False) -> str:
    if len(text) <= cap:
        return text
    if keep_tail:
        return "[...]\n" + text[-cap:]
    return text[:cap] + "\n[...]"


def _clip_code(code: str, cap: int) -> str:
    code = code.rstrip("\n")
    if len(code) <= cap:
        return code
    cut = code[:cap].rsplit("\n", 1)[0]
    return cut + "\n# ... (truncated)"


def _defuse(text: str) -> str:
    """No fenced blocks in free text (stderr, notes, ideas): they must not look like programs."""
    return text.replace("```", "'''")
