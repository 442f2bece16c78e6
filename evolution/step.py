"""One iteration of evolution, written against protocols, in two halves.

    propose:  select -> mutate                                   -> Proposal
    complete: novelty gate -> dedupe (run hash) -> probe (functional hash) -> evaluate -> commit

The embedded executor runs both halves in one thread (`run_iteration`); Celery runs `propose` on
the `llm` queue and `complete` on `eval`/`gpu`, the `Proposal` travelling as JSON. Only the
objects passed in differ (a SQLite or PostgreSQL store, a fork-server or container sandbox, a
local or LLM mutator). What a mutator learns (bandit statistics, the meta note) is written by the
store's commit and read back before the next choice, so no half keeps it in memory. Every failure
becomes a recorded result, never an exception that kills a worker.
"""
from __future__ import annotations

import dataclasses
import json
import random
import traceback
from dataclasses import dataclass, field
from typing import Protocol

from evoforge.evolution import hashing
from evoforge.evolution.types import REJECTED, ERROR, EvalResult, Mutation, ProbeResult, ProgramRef

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
    parent_score: float | None = None   # the bandit's improvement is measured against it


@dataclass(frozen=True)
class Committed:
    program_id: int
    improved_cell: bool
    new_best: bool
    result: EvalResult
    cache: str


@dataclass(frozen=True)
class Proposal:
    """The first half's message to the second: where the child goes and the mutation that made
    it. Self-contained (no parent lookup needed), so Celery carries it as JSON from the `llm`
    queue to `eval`/`gpu`, and the embedded executor hands it over in memory."""

    iteration: int
    island: int
    parent_id: int | None
    parent_generation: int | None
    parent_score: float | None
    mutation: Mutation

    @property
    def generation(self) -> int:
        return 0 if self.parent_generation is None else self.parent_generation + 1

    def to_json(self) -> str:
        """JSON text; values JSON cannot hold (in `mutation.extra`) are written as strings."""
        return json.dumps(dataclasses.asdict(self), default=str, allow_nan=True)

    @classmethod
    def from_json(cls, text: str) -> "Proposal":
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(Mutation)}
        mutation = Mutation(**{k: v for k, v in data.pop("mutation").items() if k in known})
        return cls(mutation=mutation, **{f.name: data[f.name] for f in dataclasses.fields(cls)
                                         if f.name != "mutation"})


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


def mutate_unseen(mutator: Mutator, selection: Selection, rng: random.Random, *,
                  store: Store) -> Mutation:
    """`mutator.mutate`, told (when it `takes_seen`, as the local AST mutator does) which code
    the campaign already has: `store.has_code(code)`, one indexed lookup per draw. Only the
    campaign's own programs count, so a campaign replays the same way whatever else its
    project's cache holds."""
    seen = getattr(store, "has_code", None)
    if seen is None or not getattr(mutator, "takes_seen", False):
        return mutator.mutate(selection, rng)
    return mutator.mutate(selection, rng, seen=seen)


def island_of(iteration: int, islands: int) -> int:
    """The island an iteration works on: the seed (iteration 0) on island 0, then round-robin."""
    return 0 if iteration == 0 else (iteration - 1) % max(1, islands)


def propose(iteration: int, island: int, *, store: Store, mutator: Mutator, seed: int) -> Proposal:
    """The first half: select a parent on `island` and mutate it. A mutator failure (a bug, an
    LLM error) becomes a proposal without code that says why."""
    rng = iteration_rng(seed, iteration)
    selection = store.select(island, rng)
    try:
        mutation = mutate_unseen(mutator, selection, rng, store=store)
    except Exception as exc:  # a mutator bug or an LLM failure is a recorded outcome
        mutation = Mutation(code=None, kind="error", error=f"mutator failed: {exc!r}",
                            extra={"traceback": traceback.format_exc(limit=5)})
    parent = selection.parent
    return Proposal(iteration=iteration, island=selection.island,
                    parent_id=parent.id if parent else None,
                    parent_generation=parent.generation if parent else None,
                    parent_score=parent.score if parent else None, mutation=mutation)


def complete(proposal: Proposal, *, store: Store, evaluator: Evaluator, seed: int) -> Committed:
    """The second half: novelty gate, dedupe, probe, evaluate, commit. The store's commit also
    records what the mutator learns (per-model bandit statistics, the meta note)."""
    mutation, code = proposal.mutation, proposal.mutation.code
    cache, source = CACHE_MISS, None
    near = store.near_duplicate(proposal.island, code) if code is not None else None
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
        iteration=proposal.iteration, island=proposal.island, parent_id=proposal.parent_id,
        generation=proposal.generation,
        code=code, code_hash=hashing.code_hash(code) if code is not None else None,
        mutation=mutation, result=result, cache=cache, cache_source_id=source,
        run_hash=hashing.run_hash(code, seed) if code is not None else None,
        functional_reuse=functional_reuse(evaluator), parent_score=proposal.parent_score,
    )
    return store.commit(child)


def run_iteration(iteration: int, island: int, *, store: Store, mutator: Mutator,
                  evaluator: Evaluator, seed: int) -> Committed:
    """Both halves in one thread (the embedded executor, tests)."""
    proposal = propose(iteration, island, store=store, mutator=mutator, seed=seed)
    return complete(proposal, store=store, evaluator=evaluator, seed=seed)
