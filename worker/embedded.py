"""The embedded executor: K threads in one process running the same step as the Celery workers:
each thread runs both halves, `propose` then `complete` (evolution/step.py), of its iteration.

Each thread claims an iteration number from the database (so the budget is never overshot, and
a resumed campaign re-runs exactly the iterations that never committed), runs it, and reports.
Candidates run in sandbox processes, so threads are enough to keep K evaluations in flight.
"""
from __future__ import annotations

import logging
import threading
import traceback
from typing import Any, Callable

from sqlalchemy.orm import Session, sessionmaker

from evoforge.db.campaign_rows import (engine_of, has_extra_budget, missing_iterations, reserve_iteration,
                                       set_status, spent_budget)
from evoforge.db.errors import CampaignNotFound
from evoforge.db.models import Campaign
from evoforge.evolution.step import Committed
from evoforge.worker.campaign_service import describe
from evoforge.worker.iteration import once_more, should_run
from evoforge.worker.runtime import Runtime

log = logging.getLogger(__name__)


class EmbeddedExecutor:
    def __init__(self, sessions: sessionmaker[Session], campaign_id: int, *, parallel: int = 1,
                 sandbox: Any | None = None,
                 on_commit: Callable[[int, Committed], None] | None = None,
                 operator_url: str | None = None):
        self.sessions, self.campaign_id = sessions, campaign_id
        self.operator_url = operator_url  # the CLI's own --llm-base-url (worker/endpoints.py)
        self.parallel = max(1, parallel)
        self.sandbox = sandbox
        self.on_commit = on_commit
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._pending: list[int] = []
        self._error: str = ""
        self._engine = engine_of(sessions)
        self._extra_budget = True  # decided in run(), from the stored config

    def _next_iteration(self) -> int | None:
        with self._lock:
            if self._pending:
                return self._pending.pop(0)
        if self.stop.is_set():
            return None
        if self._extra_budget:  # tokens, cost or time: spent_budget reads the counters
            with self.sessions() as s:
                c = s.get(Campaign, self.campaign_id)
                if c is None or c.status != "running" or spent_budget(c):
                    return None
        # Otherwise one UPDATE .. RETURNING is the whole check: it claims an iteration only while
        # the campaign is running and iterations_reserved < max_evaluations (and evaluations <=
        # iterations_reserved, so spent_budget's max_evaluations test is implied).
        return reserve_iteration(self._engine, self.campaign_id)

    def _work(self, rt: Runtime) -> None:
        while not self.stop.is_set():
            it = self._next_iteration()
            if it is None:
                return
            try:
                committed = self._iterate(rt, it)
            except CampaignNotFound:  # deleted while running: nothing to record
                log.info("campaign %s is gone; stopping", self.campaign_id)
                self.stop.set()
                return
            except Exception as exc:  # failed twice: stop cleanly, keep what we have
                log.exception("iteration %s failed", it)
                with self._lock:
                    self._error = f"iteration {it}: {exc!r}\n{traceback.format_exc(limit=3)}"
                self.stop.set()
                return
            if self.on_commit and committed is not None:
                self.on_commit(it, committed)

    def run(self) -> dict[str, Any]:
        set_status(self.sessions, self.campaign_id, "running", only_from=("queued", "paused", "running"))
        with self.sessions() as s:
            c = s.get(Campaign, self.campaign_id)
            if c.status != "running":
                return describe(c)
            self._extra_budget = has_extra_budget(c)
            self._pending = missing_iterations(s, self.campaign_id, c.iterations_reserved)
        try:
            rt = Runtime.for_campaign(self.sessions, self.campaign_id, sandbox=self.sandbox,
                                      operator_url=self.operator_url)
            if 0 in self._pending:  # the seed goes first: every other iteration needs a parent
                self._pending.remove(0)
                self._run_one(rt, 0)
            elif not self._pending:
                with self.sessions() as s:
                    first = s.get(Campaign, self.campaign_id).iterations_reserved == 0
                if first:
                    it = reserve_iteration(self.sessions, self.campaign_id)
                    if it is not None:
                        self._run_one(rt, it)
            if self._stopped_by_status():  # a failed seed fails the campaign (Runtime.complete)
                return self._finish()
        except KeyboardInterrupt:  # Ctrl-C while starting: an unfinished reservation is re-run later
            self.stop.set()
            return self._finish()
        except Exception as exc:  # cannot even start (bad stored config, no sandbox, DB down)
            log.exception("campaign %s could not start", self.campaign_id)
            self._error = f"could not start: {exc!r}"
            return self._finish()
        # Wait on our own Event, not Thread.join: a join interrupted by Ctrl-C can mark a thread
        # finished while it still runs (CPython), and the summary would then miss its commit.
        remaining = [self.parallel]
        all_done = threading.Event()

        def work() -> None:
            try:
                self._work(rt)
            finally:
                with self._lock:
                    remaining[0] -= 1
                    if remaining[0] == 0:
                        all_done.set()

        for i in range(self.parallel):
            threading.Thread(target=work, daemon=True, name=f"evoforge-{self.campaign_id}-{i}").start()
        try:
            while not all_done.wait(0.5):
                pass
        except KeyboardInterrupt:  # Ctrl-C: in-flight iterations finish and commit, then we stop
            self.stop.set()
            all_done.wait()
        return self._finish()

    def _stopped_by_status(self) -> bool:
        with self.sessions() as s:
            c = s.get(Campaign, self.campaign_id)
            return c is None or c.status != "running"

    def _iterate(self, rt: Runtime, it: int) -> Committed | None:
        """Both halves of `it`; after an unexpected error, once more (`once_more`) if the campaign
        still runs, this executor was not stopped and `it` did not commit. None: not run again."""
        return once_more(rt.iterate, it, expected=(CampaignNotFound,), what=f"iteration {it}",
                         wanted=lambda: (not self.stop.is_set()
                                         and should_run(self.sessions, self.campaign_id, it)))

    def _run_one(self, rt: Runtime, it: int) -> None:
        committed = self._iterate(rt, it)
        if self.on_commit and committed is not None:
            self.on_commit(it, committed)

    def _finish(self) -> dict[str, Any]:
        with self.sessions() as s:
            c = s.get(Campaign, self.campaign_id)
            spent = spent_budget(c)
            gaps = missing_iterations(s, self.campaign_id, c.iterations_reserved)
        if self._error:
            set_status(self.sessions, self.campaign_id, "failed", only_from=("running",), error=self._error)
        elif spent and not gaps:
            set_status(self.sessions, self.campaign_id, "completed", only_from=("running",))
        elif self.stop.is_set():
            set_status(self.sessions, self.campaign_id, "paused", only_from=("running",))
        with self.sessions() as s:
            return describe(s.get(Campaign, self.campaign_id))
