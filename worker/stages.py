"""What the Celery tasks do, as plain functions (the task bodies stay a few lines).

`run_full` is one whole iteration (`Runtime.iterate`, exactly what the embedded executor runs).
An LLM campaign splits it: `propose` (select + mutate, on the `llm` queue) returns a JSON-able
proposal; `evaluate_proposal` (on `eval`/`gpu`) runs the same `run_iteration` with that
selection and mutation fixed, so dedupe, probe, cascade and commit are the very same code.
"""
from __future__ import annotations

import dataclasses
import json
import threading
import traceback
from collections import OrderedDict
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Campaign, Program
from evolution.step import Committed, Selection, iteration_rng, run_iteration
from evolution.types import Mutation, ProgramRef
from worker.runtime import Runtime

_runtimes: OrderedDict[tuple, Runtime] = OrderedDict()
_runtimes_lock = threading.Lock()
MAX_RUNTIMES = 32


def runtime(sessions: sessionmaker[Session], campaign_id: int) -> Runtime:
    """One Runtime per campaign per worker process (its store caches programs, its LLM
    ensemble keeps its statistics). Runtimes are thread-safe: the embedded executor shares one.
    Keyed by database, id and creation time: SQLite may hand a deleted campaign's id out again."""
    with sessions() as s:
        created = s.scalar(select(Campaign.created_at).where(Campaign.id == campaign_id))
    if created is None:
        raise KeyError(f"campaign {campaign_id} not found")
    key = (str(sessions.kw.get("bind").url), campaign_id, created.isoformat())
    with _runtimes_lock:
        rt = _runtimes.get(key)
        if rt is not None:
            _runtimes.move_to_end(key)
            return rt
    rt = Runtime.for_campaign(sessions, campaign_id)
    with _runtimes_lock:
        rt = _runtimes.setdefault(key, rt)
        while len(_runtimes) > MAX_RUNTIMES:
            _runtimes.popitem(last=False)
    return rt


def should_run(sessions: sessionmaker[Session], campaign_id: int, iteration: int) -> bool:
    """Only running campaigns get work, and a committed iteration is never redone (a redelivered
    message after the commit). A paused campaign's skipped iteration stays reserved: it is
    re-sent when the campaign resumes."""
    with sessions() as s:
        status = s.scalar(select(Campaign.status).where(Campaign.id == campaign_id))
        if status != "running":
            return False
        done = s.scalar(select(Program.id).where(Program.campaign_id == campaign_id,
                                                 Program.iteration == iteration))
        return done is None


def island_of(rt: Runtime, iteration: int) -> int:
    return 0 if iteration == 0 else (iteration - 1) % rt.islands


def run_full(sessions: sessionmaker[Session], campaign_id: int, iteration: int) -> Committed | None:
    if not should_run(sessions, campaign_id, iteration):
        return None
    return runtime(sessions, campaign_id).iterate(iteration)


def propose(sessions: sessionmaker[Session], campaign_id: int, iteration: int) -> dict[str, Any] | None:
    if not should_run(sessions, campaign_id, iteration):
        return None
    rt = runtime(sessions, campaign_id)
    rng = iteration_rng(rt.seed, iteration)
    selection = rt.store.select(island_of(rt, iteration), rng)
    try:
        mutation = rt.mutator.mutate(selection, rng)
    except Exception as exc:  # as run_iteration: a mutator failure is a recorded outcome
        mutation = Mutation(code=None, kind="error", error=f"mutator failed: {exc!r}",
                            extra={"traceback": traceback.format_exc(limit=5)})
    return {"island": selection.island,
            "parent_id": selection.parent.id if selection.parent else None,
            "mutation": json.loads(json.dumps(dataclasses.asdict(mutation), default=str))}


class _Fixed:
    """A Store whose `select` returns the proposal's selection, and a Mutator that returns its
    mutation: `run_iteration` then dedupes, evaluates and commits as always."""

    def __init__(self, store: Any, selection: Selection, mutation: Mutation):
        self.store, self.selection, self.mutation = store, selection, mutation

    def select(self, island: int, rng: Any) -> Selection:
        return self.selection

    def __getattr__(self, name: str) -> Any:  # lookup, commit, near_duplicate, ...
        return getattr(self.store, name)

    def mutate(self, selection: Selection, rng: Any) -> Mutation:
        return self.mutation


def evaluate_proposal(sessions: sessionmaker[Session], campaign_id: int, iteration: int,
                      proposal: dict[str, Any]) -> Committed | None:
    if not should_run(sessions, campaign_id, iteration):
        return None
    rt = runtime(sessions, campaign_id)
    parent = None
    if proposal.get("parent_id") is not None:
        with sessions() as s:
            p = s.get(Program, proposal["parent_id"])
            if p is not None:
                parent = ProgramRef(id=p.id, code=p.code or "", score=p.score, status=p.status,
                                    island=p.island, generation=p.generation)
    fields = {f.name for f in dataclasses.fields(Mutation)}
    mutation = Mutation(**{k: v for k, v in proposal["mutation"].items() if k in fields})
    fixed = _Fixed(rt.store, Selection(island=proposal["island"], parent=parent), mutation)
    return run_iteration(iteration, proposal["island"], store=fixed, mutator=fixed,
                         evaluator=rt.evaluator, seed=rt.seed)
