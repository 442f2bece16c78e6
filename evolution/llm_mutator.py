"""The LLM mutator: prompt -> model from the ensemble -> reply -> edit applied -> `Mutation`.

No HTTP here: the call goes through an injected `complete(model, messages, *, temperature,
max_tokens) -> Completion` (worker/llm_client.OpenAIClient.complete in production). Every
failure (budget spent, call failed, malformed reply, edit did not apply, syntax error, idea
rejected) comes back as `Mutation(code=None, error=...)`; `mutate` never raises for them.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol

from evoforge.evolution import prompts
from evoforge.evolution.diff import apply_reply
from evoforge.evolution.ensemble import ArmStats, Ensemble
from evoforge.evolution.program import syntax_check
from evoforge.evolution.types import Mutation


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Complete(Protocol):
    def __call__(self, model: str, messages: list[dict[str, str]], *, temperature: float,
                 max_tokens: int) -> Completion: ...


class TokenBudget(Protocol):
    """Reserve before a call so parallel workers never overshoot; `release_tokens` (optional)
    hands back what a call did not use."""

    def reserve_tokens(self, n: int) -> bool: ...


@dataclass(frozen=True)
class IdeaConfig:
    """Research-ideas mode: idea in prose -> review scored 1-10 -> code only above threshold."""

    threshold: float = 6.0
    reviewer_model: str | None = None    # None: a model from the ensemble
    idea_max_tokens: int = 400
    review_max_tokens: int = 300
    review_temperature: float = 0.2


@dataclass
class _Tally:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    calls: int = 0


class _CallFailed(Exception):
    def __init__(self, kind: str, error: str):
        super().__init__(error)
        self.kind, self.error = kind, error


_SCORE = re.compile(r"score\W{0,4}(\d+(?:\.\d+)?)(?:\s*/\s*10)?", re.I)


def parse_review_score(review: str) -> float | None:
    """The last `Score: N` (1-10) in a review; None when there is none."""
    found = _SCORE.findall(review or "")
    if not found:
        return None
    v = float(found[-1])
    return v if 0 <= v <= 10 else None


class LLMMutator:
    """Implements `evolution.step.Mutator` with a model ensemble."""

    def __init__(self, complete: Complete, task_context: str, ensemble: Ensemble, *,
                 diff_mode: bool = True,
                 budget: TokenBudget | Callable[[int], bool] | None = None,
                 temperature: float = 0.7, max_tokens: int = 4096,
                 prompt_config: prompts.PromptConfig | None = None,
                 ideas: IdeaConfig | None = None):
        self._complete = complete
        self.task_context = task_context
        self.ensemble = ensemble
        self.diff_mode = diff_mode
        self.temperature, self.max_tokens = temperature, max_tokens
        self.config = prompt_config or prompts.PromptConfig(diff_mode=diff_mode)
        if self.config.diff_mode != diff_mode:
            raise ValueError("prompt_config.diff_mode disagrees with diff_mode")
        self.ideas = ideas
        self._reserve, self._release = _budget_hooks(budget)
        self._learned: Callable[[], Mapping[str, ArmStats]] | None = None

    # ------------------------------------------------------------------ Mutator protocol
    def learn_from(self, read: Callable[[], Mapping[str, ArmStats]]) -> None:
        """Before every choice, load the bandit's statistics from `read` (the campaign's rows in
        the database, which the store's commit updates): every worker then knows every outcome."""
        self._learned = read

    def mutate(self, selection: Any, rng: random.Random) -> Mutation:
        parent = selection.parent
        kind = "llm:diff" if self.diff_mode else "llm:rewrite"
        if parent is None or not parent.code:
            return Mutation(code=None, kind=kind, error="no parent program to edit")
        tally, extra = _Tally(), {}
        if self._learned is not None:
            self.ensemble.load(self._learned())
        model = self.ensemble.choose(rng)
        try:
            idea = None
            if self.ideas is not None:
                idea = self._idea(selection, rng, model, tally, extra)
                if idea is None:
                    return self._mutation(None, "idea-rejected", extra.pop("_reason"),
                                          extra.pop("idea_prompt", None), None, model, tally,
                                          extra)
            prompt = prompts.build_prompt(selection, self.task_context, rng, self.config,
                                          idea=idea)
            extra.update(variant=prompt.variant, fix_mode=prompt.fix_mode)
            text = prompts.render(prompt.messages)
            try:
                reply = self._ask(model, prompt.messages, self.temperature, self.max_tokens, tally)
            except _CallFailed as f:
                return self._mutation(None, f.kind, f.error, text, None, model, tally, extra)
            code, error, kind = self._apply(parent.code, reply.text, extra)
            return self._mutation(code, kind, error, text, reply.text, model, tally, extra)
        except _CallFailed as f:  # idea or review call
            return self._mutation(None, f.kind, f.error, None, None, model, tally, extra)

    # ------------------------------------------------------------------ pieces
    def _idea(self, selection: Any, rng: random.Random, model: str, tally: _Tally,
              extra: dict[str, Any]) -> str | None:
        cfg = self.ideas
        assert cfg is not None
        p = prompts.build_idea_prompt(selection, self.task_context, rng, self.config)
        extra["idea_prompt"] = prompts.render(p.messages)
        idea = self._ask(model, p.messages, self.temperature, cfg.idea_max_tokens, tally).text
        extra["idea"] = idea.strip()
        reviewer = cfg.reviewer_model or self.ensemble.choose(rng)
        review_msgs = prompts.build_review_prompt(self.task_context, idea, selection.parent)
        review = self._ask(reviewer, review_msgs, cfg.review_temperature,
                           cfg.review_max_tokens, tally).text
        score = parse_review_score(review)
        extra.update(review=review.strip(), review_score=score, review_model=reviewer)
        if score is None:
            extra["_reason"] = "idea review gave no score"
            return None
        if score < cfg.threshold:
            extra["_reason"] = f"idea scored {score:g} < threshold {cfg.threshold:g}"
            return None
        return idea

    def _ask(self, model: str, messages: list[dict[str, str]], temperature: float,
             max_tokens: int, tally: _Tally) -> Completion:
        reserved = prompts.estimate_tokens(messages) + max_tokens
        if self._reserve is not None and not self._reserve(reserved):
            raise _CallFailed("budget", "token budget spent")
        tally.calls += 1
        try:
            reply = self._complete(model, messages, temperature=temperature,
                                   max_tokens=max_tokens)
            if not isinstance(reply, Completion) or not isinstance(reply.text, str):
                raise TypeError(f"complete() returned {type(reply).__name__}, not Completion")
        except Exception as exc:  # transient, permanent, malformed, a bug: all recorded
            self.ensemble.report_failure(model)
            if self._release is not None:
                self._release(reserved)
            raise _CallFailed("llm:error", f"LLM call to {model} failed: "
                                           f"{type(exc).__name__}: {exc}") from None
        self.ensemble.report_success(model)
        used = max(0, reply.prompt_tokens) + max(0, reply.completion_tokens)
        if self._release is not None and reserved > used:
            self._release(reserved - used)
        tally.prompt_tokens += max(0, reply.prompt_tokens)
        tally.completion_tokens += max(0, reply.completion_tokens)
        tally.cost_usd += self.ensemble.cost_usd(model, reply.prompt_tokens,
                                                 reply.completion_tokens)
        return reply

    def _apply(self, parent_code: str, reply: str,
               extra: dict[str, Any]) -> tuple[str | None, str, str]:
        """SEARCH/REPLACE blocks when the reply has any, else a full rewrite (either mode)."""
        language = self.config.language
        outcome = apply_reply(parent_code, reply, language)
        kind = f"llm:{outcome.kind}"
        extra.update(edit_blocks=outcome.blocks, edit_applied=outcome.applied)
        if outcome.code is None:
            return None, outcome.error or "the reply contained no applicable edit", kind
        if outcome.code == parent_code:
            return None, "the edit left the program unchanged", kind
        err = syntax_check(outcome.code, language)
        if err:
            return None, f"syntax error after edit: {err}", kind
        return outcome.code, "", kind

    def _mutation(self, code: str | None, kind: str, error: str, prompt: str | None,
                  response: str | None, model: str, tally: _Tally,
                  extra: dict[str, Any]) -> Mutation:
        extra = {k: v for k, v in extra.items() if not k.startswith("_")}
        extra["calls"] = tally.calls
        return Mutation(code=code, kind=kind, error=error, prompt=prompt, response=response,
                        model=model, prompt_tokens=tally.prompt_tokens,
                        completion_tokens=tally.completion_tokens,
                        cost_usd=tally.cost_usd, extra=extra)


def _budget_hooks(budget: Any) -> tuple[Callable[[int], bool] | None, Callable[[int], None] | None]:
    if budget is None:
        return None, None
    if hasattr(budget, "reserve_tokens"):
        return budget.reserve_tokens, getattr(budget, "release_tokens", None)
    if callable(budget):
        return budget, None
    raise TypeError("budget must have reserve_tokens(n) -> bool or be such a callable")
