"""Build the objects one iteration needs (store, mutator, evaluator) for a stored campaign.

The embedded executor and the Celery tasks both call `Runtime.for_campaign`, so they run the
very same step (`propose`, then `complete`: evolution/step.py) with the very same parts.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from functools import partial
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from evoforge.db.campaign_config import CampaignConfig
from evoforge.db.errors import campaign_not_found
from evoforge.db.models import Campaign
from evoforge.db.store import CampaignStore
from evoforge.evaluators.base import FINGERPRINT_KEY, get_task, parse_params
from evoforge.evaluators.pipeline import CascadeEvaluator
from evoforge.evolution.step import (Committed, Evaluator, Mutator, Proposal, Selection, complete,
                                     island_of, propose)
from evoforge.evolution.types import Mutation
from evoforge.worker.cache_policy import runner_id, shares_cache

_sandboxes: dict[str, Any] = {}
_sandbox_lock = threading.Lock()
_keepers: list[tuple[threading.Event, threading.Thread]] = []  # prestart_sandbox: set = may end


def shared_sandbox(kind: str = "fork") -> Any:
    """One warm sandbox per process and kind (a fork-server is expensive to start, cheap to use)."""
    with _sandbox_lock:
        return _shared_sandbox_locked(kind)


def _shared_sandbox_locked(kind: str) -> Any:
    if kind not in _sandboxes:
        from evoforge.sandbox import make_sandbox
        _sandboxes[kind] = make_sandbox(kind)
    return _sandboxes[kind]


def prestart_sandbox(kind: str) -> None:
    """Start the shared sandbox of `kind` now, in a background thread, so that its server's start
    (a fresh interpreter that imports numpy: a quarter of a second) runs on another core while
    the caller goes on (database, campaign, mutator) instead of delaying the first evaluation.
    Only the fork-server has a server; other kinds are left to start on first use. A failed
    start is dropped here: the first run() starts it again and reports why it cannot.

    The thread stays until close_sandboxes(): the server gets SIGKILL when the thread that
    started it ends (PR_SET_PDEATHSIG follows the parent thread, not the process)."""
    if kind not in ("fork", "forkserver"):
        return
    release = threading.Event()

    def keep() -> None:
        with _sandbox_lock:
            if release.is_set():  # closed before it began
                return
            try:
                sb = _shared_sandbox_locked(kind)
            except Exception:
                return
        try:
            sb.start()
        except Exception:
            pass
        if release.is_set():  # close_sandboxes() came before the start: stop what it started
            sb.close()
        release.wait()

    thread = threading.Thread(target=keep, daemon=True, name="evoforge-sandbox-start")
    with _sandbox_lock:
        _keepers.append((release, thread))
    thread.start()


def close_sandboxes(wait_s: float = 30.0) -> None:
    """Stop every shared sandbox, then let the prestart threads end and wait for them (outside
    the lock, which a thread that has not begun yet still takes once)."""
    with _sandbox_lock:
        for sb in _sandboxes.values():
            try:
                sb.close()  # waits for a start in progress (the sandbox's lock), then stops it
            except Exception:
                pass
        _sandboxes.clear()
        keepers = list(_keepers)
        _keepers.clear()
        for release, _thread in keepers:
            release.set()
    for _release, thread in keepers:
        thread.join(wait_s)


class SeedMutator:
    """Iteration 0: the campaign's seed program, unchanged."""

    def __init__(self, code: str):
        self.code = code

    def mutate(self, selection: Selection, rng: Any) -> Mutation:
        return Mutation(code=self.code, kind="seed")


def make_mutator(spec: CampaignConfig, task: Any, params: Any, store: CampaignStore,
                 sessions: sessionmaker[Session], campaign_id: int, *,
                 operator_url: str | None = None) -> Mutator:
    if spec.mutator.kind == "local":
        from evoforge.evolution.ast_mutator import LocalASTMutator
        # The candidates' language (an OpenEvolve problem's `language`): only Python is parsed.
        return LocalASTMutator(language=str(getattr(params, "language", None) or "python"))
    from evoforge.worker.llm import make_llm_mutator
    return make_llm_mutator(spec, task, params, sessions, campaign_id, operator_url=operator_url)


@dataclass
class Runtime:
    campaign_id: int
    seed: int
    islands: int
    store: CampaignStore
    mutator: Mutator
    evaluator: Evaluator
    seed_code: str

    @classmethod
    def for_campaign(cls, sessions: sessionmaker[Session], campaign_id: int,
                     sandbox: Any | None = None, *, operator_url: str | None = None) -> "Runtime":
        """`operator_url`: the LLM base URL the local CLI's user (the operator) gave on its
        command line; only that URL may get the key from the environment (worker/endpoints.py)."""
        with sessions() as s:
            c = s.get(Campaign, campaign_id)
            if c is None:
                raise campaign_not_found(campaign_id)
            spec = CampaignConfig.load(c)
            seed, islands, seed_code = c.seed, c.islands, c.seed_program
            raw_params, problem_id = c.params, c.problem_id
        task = get_task(spec.task)
        params = parse_params(task, raw_params)
        if problem_id is not None and getattr(params, "problem", None):
            # A stored problem's campaign: its params name the content (files={}); the files
            # come from the database, in memory only (worker/problem_service.py).
            from evoforge.worker.problem_service import problem_files
            params = params.model_copy(
                update={"files": problem_files(sessions, problem_id, params.problem)})
        hook = getattr(task, "relative_features", None)  # optional: see evaluators.base.Task
        wants = getattr(task, "wants_relative_features", None)
        if hook is not None and wants is not None and not wants(params):
            hook = None  # these params leave the relative feature out: no fingerprints to read
        if sandbox is None:
            sandbox = shared_sandbox(os.environ.get("EVOFORGE_SANDBOX") or spec.sandbox)
            if hasattr(sandbox, "for_task"):  # containers: the task's image, GPU device requests
                sandbox = sandbox.for_task(task.name, gpu=task.resources.gpu)
        store = CampaignStore(sessions, campaign_id, fingerprint_key=FINGERPRINT_KEY,
                              relative_features=partial(hook, params) if hook is not None else None,
                              shared_cache=shares_cache(task), runner=runner_id(sandbox))
        evaluator = CascadeEvaluator(task, params, sandbox)
        mutator = make_mutator(spec, task, params, store, sessions, campaign_id,
                               operator_url=operator_url)
        return cls(campaign_id, seed, islands, store, mutator, evaluator, seed_code)

    def propose(self, iteration: int) -> Proposal:
        """Select and mutate (iteration 0 proposes the seed program unchanged)."""
        mutator = SeedMutator(self.seed_code) if iteration == 0 else self.mutator
        return propose(iteration, island_of(iteration, self.islands), store=self.store,
                       mutator=mutator, seed=self.seed)

    def complete(self, proposal: Proposal) -> Committed:
        """Dedupe, evaluate and commit a proposal (made here or by another worker).

        A seed (iteration 0) that is not ok ends the campaign at once, here, so the embedded
        executor and the Celery workers both stop: `failed`, with an error that says why (the
        reason, the evaluator's own message, the stderr tail) instead of a campaign of
        failures. Nothing after the seed is reserved before it commits (dispatch's slot rule,
        the embedded executor runs it first), and nothing is reserved once it is failed."""
        committed = complete(proposal, store=self.store, evaluator=self.evaluator, seed=self.seed)
        result = committed.result
        if proposal.iteration == 0 and not result.ok:
            from evoforge.db.campaign_rows import set_status

            art = result.artifacts if isinstance(result.artifacts, dict) else {}
            said = art.get("evaluator") if isinstance(art.get("evaluator"), dict) else {}
            why = art.get("reason") or "no reason given"
            lines = [f"the seed program failed: {result.status}: {why}"]
            for key in ("error", "message"):  # the evaluator's own words, where it gave some
                for where in (said, result.metrics or {}):
                    if isinstance(where.get(key), str) and where[key].strip():
                        lines.append(f"evaluator {key}: {where[key].strip()[:400]}")
                        break
            if isinstance(art.get("stderr"), str) and art["stderr"].strip():
                lines.append("stderr (tail):\n" + art["stderr"].strip()[-1000:])
            set_status(self.store.sessions, self.campaign_id, "failed",
                       only_from=("queued", "running"), error="\n".join(lines))
        return committed

    def iterate(self, iteration: int) -> Committed:
        """Both halves, in this thread."""
        return self.complete(self.propose(iteration))
