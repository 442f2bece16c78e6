"""One iteration of evolution, written against protocols.

    select -> mutate -> dedupe (run hash) -> probe (functional hash) -> evaluate -> commit

The embedded executor and the Celery workers both call `run_iteration`; only the objects passed
in differ (a SQLite or PostgreSQL store, a fork-server or container sandbox, a local or LLM
mutator). Every failure becomes a recorded result, never an exception that kills a worker.
"""
from __future__ import annotations

import random
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Protocol

from evolution import hashing
from evolution.types import REJECTED, ERROR, EvalResult, Mutation, ProbeResult, ProgramRef

CACHE_MISS, CACHE_CODE, CACHE_FUNCTIONAL = "miss", "code", "functional"


@dataclass(frozen=True)
class Selection:
    island: int
    parent: ProgramRef | None            # None only before the seed program exists
    inspirations: list[ProgramRef] = field(default_factory=list)
    top: list[ProgramRef] = field(default_factory=list)       # the island's best programs
    meta_note: str = ""                   # optional campaign-level note for prompts


@dataclass(frozen=True)
class Child:
    """Everything `commit` needs to store one iteration's result."""

    iteration: int
    island: int
    parent_id: int | None
    generation: int
    code: str | None
    code_hash: str | None
    mutation: Mutation
    result: EvalResult
    cache: str = CACHE_MISS             # miss, code or functional
    cache_source_id: int | None = None  # the evaluation reused on a cache hit
    run_hash: str | None = None         # code-cache key: exact source + seed (hashing.run_hash)
    functional_reuse: bool = False      # the functional hash determines the score: cache it


@dataclass(frozen=True)
class Committed:
    program_id: int
    improved_cell: bool
    new_best: bool
    result: EvalResult
    cache: str


class Store(Protocol):
    """Campaign state as the step sees it (implemented in db/ for SQLite and PostgreSQL)."""

    def select(self, island: int, rng: random.Random) -> Selection: ...
    def lookup(self, *, run_hash: str | None = None,
               functional_hash: str | None = None) -> tuple[int | None, EvalResult] | None:
        """The cached (evaluation id or None, result) of this campaign's cache scope."""
        ...
    def commit(self, child: Child) -> Committed: ...
    def near_duplicate(self, island: int, code: str) -> str | None:
        """Why `code` is too close to a program already on the island, or None (novelty gate)."""
        ...


class Mutator(Protocol):
    def mutate(self, selection: Selection, rng: random.Random) -> Mutation: ...


class Evaluator(Protocol):
    """Runs a program in a sandbox and scores it with trusted code.

    `functional_reuse` is True only when the probe's outputs are everything that is scored (every
    stage's inputs equal the probe's): then equal functional hashes mean equal scores. Otherwise
    a candidate could behave on the probe and differently on the scored inputs.
    """

    functional_reuse: bool

    def probe(self, code: str, seed: int) -> ProbeResult: ...
    def evaluate(self, code: str, seed: int, probe: ProbeResult) -> EvalResult: ...


def iteration_rng(seed: int, iteration: int) -> random.Random:
    """A private RNG per (campaign seed, iteration): the same seed replays the same run."""
    return random.Random(f"evoforge:{seed}:{iteration}")


def functional_reuse(evaluator: Evaluator) -> bool:
    """Whether the evaluator's functional hash may answer for a score (False when unsure)."""
    return getattr(evaluator, "functional_reuse", False) is True


def evaluate_code(code: str, *, store: Store, evaluator: Evaluator, seed: int
                  ) -> tuple[EvalResult, str, int | None]:
    """Dedupe by run hash (exact source + seed), then by functional hash where that is sound,
    then evaluate. Returns (result, cache, source evaluation id)."""
    hit = store.lookup(run_hash=hashing.run_hash(code, seed))
    if hit is not None:
        return hit[1], CACHE_CODE, hit[0]
    probe = evaluator.probe(code, seed)
    if probe.failure is not None:
        return probe.failure, CACHE_MISS, None
    if functional_reuse(evaluator):
        hit = store.lookup(functional_hash=probe.functional_hash)
        if hit is not None:
            return hit[1], CACHE_FUNCTIONAL, hit[0]
    return evaluator.evaluate(code, seed, probe), CACHE_MISS, None


def run_iteration(iteration: int, island: int, *, store: Store, mutator: Mutator,
                  evaluator: Evaluator, seed: int) -> Committed:
    rng = iteration_rng(seed, iteration)
    selection = store.select(island, rng)
    parent = selection.parent
    try:
        mutation = mutator.mutate(selection, rng)
    except Exception as exc:  # a mutator bug or an LLM failure is a recorded outcome
        mutation = Mutation(code=None, kind="error", error=f"mutator failed: {exc!r}",
                            extra={"traceback": traceback.format_exc(limit=5)})
    code, cache, source = mutation.code, CACHE_MISS, None
    near = store.near_duplicate(selection.island, code) if code is not None else None
    if code is None:
        result = EvalResult(status=REJECTED, score=None,
                            artifacts={"reason": mutation.error or "no program produced"})
    elif near:
        result = EvalResult(status=REJECTED, score=None, artifacts={"reason": near, "novelty": True})
    else:
        try:
            result, cache, source = evaluate_code(code, store=store, evaluator=evaluator, seed=seed)
        except Exception as exc:  # infrastructure error: record it, never crash the worker
            result = EvalResult(status=ERROR, score=None,
                                artifacts={"reason": f"evaluator failed: {exc!r}",
                                           "traceback": traceback.format_exc(limit=5)})
    child = Child(
        iteration=iteration, island=selection.island,
        parent_id=parent.id if parent else None,
        generation=(parent.generation + 1) if parent else 0,
        code=code, code_hash=hashing.code_hash(code) if code is not None else None,
        mutation=mutation, result=result, cache=cache, cache_source_id=source,
        run_hash=hashing.run_hash(code, seed) if code is not None else None,
        functional_reuse=functional_reuse(evaluator),
    )
    committed = store.commit(child)
    observe = getattr(mutator, "observe", None)  # e.g. the LLM ensemble's bandit
    if observe is not None:
        try:
            observe(selection, mutation, committed.result)
        except Exception:  # feedback is advisory; never fail a committed iteration over it
            pass
    return committed
