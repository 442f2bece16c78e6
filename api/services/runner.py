"""Campaign execution behind the API.

Without a broker, campaigns run in this process: one `EmbeddedExecutor` thread per running
campaign, the same engine as `evoforge run`. Pause/cancel/delete change the status in the
database first (the executor stops claiming iterations as soon as the status is not `running`)
and then set the executor's `stop`. On startup, campaigns left `running` are resumed; on shutdown
they are stopped and put back to `running`, so the next start resumes them.

With a broker, the API only stores campaigns and calls `worker.dispatch.enqueue_campaign(id)`
when that module exists; Celery workers do the rest. It also runs the sweeper
(`worker.dispatch.SweeperThread`) while it is up: iterations of a dead worker (stale lease) and
lost messages are re-sent, so API + workers recover without `evoforge beat`.
"""
from __future__ import annotations

import importlib
import logging
import threading
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.campaigns import set_status
from db.models import Campaign

log = logging.getLogger(__name__)
ADHOC = "adhoc"


class Runner(Protocol):
    mode: str

    def start(self, campaign_id: int) -> None: ...
    def stop(self, campaign_id: int, *, wait_s: float | None = None) -> None: ...
    def startup(self) -> None: ...
    def shutdown(self) -> None: ...


@dataclass
class _Job:
    executor: object
    thread: threading.Thread
    by_shutdown: bool = False


class InProcessRunner:
    mode = "embedded"

    def __init__(self, sessions: sessionmaker[Session], *, sandbox: object | None = None,
                 shutdown_wait_s: float = 30.0):
        self.sessions = sessions
        self.sandbox = sandbox
        self.shutdown_wait_s = shutdown_wait_s
        self._jobs: dict[int, _Job] = {}
        self._lock = threading.Lock()
        self._closing = False

    def start(self, campaign_id: int) -> None:
        from worker.embedded import EmbeddedExecutor

        with self.sessions() as s:
            c = s.get(Campaign, campaign_id)
            if c is None:
                return
            parallel = c.parallel
        with self._lock:
            if self._closing:
                return
            prev = self._jobs.get(campaign_id)
            if prev and prev.thread.is_alive() and not prev.executor.stop.is_set():
                return  # already running here
            ex = EmbeddedExecutor(self.sessions, campaign_id, parallel=parallel, sandbox=self.sandbox)
            t = threading.Thread(target=self._run, args=(campaign_id, ex, prev.thread if prev else None),
                                 name=f"evoforge-campaign-{campaign_id}", daemon=True)
            self._jobs[campaign_id] = _Job(ex, t)
            t.start()

    def _run(self, campaign_id: int, ex, prev: threading.Thread | None) -> None:
        try:
            if prev is not None:
                prev.join()  # the previous executor finishes its in-flight iterations first
            if ex.stop.is_set():
                return
            ex.run()
        except Exception as exc:
            log.exception("campaign %s failed", campaign_id)
            set_status(self.sessions, campaign_id, "failed", only_from=("queued", "running"),
                       error=f"{type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                job = self._jobs.get(campaign_id)
                if job is not None and job.executor is ex and not job.by_shutdown:
                    del self._jobs[campaign_id]

    def stop(self, campaign_id: int, *, wait_s: float | None = None) -> None:
        with self._lock:
            job = self._jobs.get(campaign_id)
        if job is None:
            return
        job.executor.stop.set()
        if wait_s:
            job.thread.join(wait_s)

    def is_running(self, campaign_id: int) -> bool:
        with self._lock:
            job = self._jobs.get(campaign_id)
        return job is not None and job.thread.is_alive()

    def startup(self) -> None:
        with self.sessions() as s:
            ids = list(s.scalars(select(Campaign.id).where(Campaign.status == "running",
                                                            Campaign.name != ADHOC)))
        for cid in ids:
            log.info("resuming campaign %s", cid)
            self.start(cid)

    def shutdown(self) -> None:
        with self._lock:
            self._closing = True
            jobs = dict(self._jobs)
            for job in jobs.values():
                if not job.executor.stop.is_set():
                    job.by_shutdown = True
                    job.executor.stop.set()
        for cid, job in jobs.items():
            job.thread.join(self.shutdown_wait_s)
            if job.by_shutdown:  # stopped by us, not by a user: resume on the next start
                set_status(self.sessions, cid, "running", only_from=("paused",))
        try:
            from worker.runtime import close_sandboxes
            close_sandboxes()
        except Exception:
            log.exception("closing sandboxes")


class BrokerRunner:
    """Campaigns run on Celery workers; the API stores them and pokes the dispatcher."""

    mode = "broker"

    def __init__(self, broker_url: str, sessions: sessionmaker[Session] | None = None, *,
                 sweep: bool = True):
        self.broker_url = broker_url
        self.sessions = sessions
        self.sweep = sweep and sessions is not None
        self._sweeper = None

    def start(self, campaign_id: int) -> None:
        try:
            dispatch = importlib.import_module("worker.dispatch")
        except ModuleNotFoundError as exc:
            if exc.name != "worker.dispatch":
                raise
            log.warning("worker.dispatch not available: campaign %s stays queued", campaign_id)
            return
        try:
            dispatch.enqueue_campaign(campaign_id)
        except Exception:  # the campaign is stored; the dispatcher picks it up later
            log.exception("enqueue_campaign(%s) failed", campaign_id)

    def stop(self, campaign_id: int, *, wait_s: float | None = None) -> None:
        pass  # workers stop claiming iterations once the status is not `running`

    def is_running(self, campaign_id: int) -> bool:
        return False

    def startup(self) -> None:
        if not self.sweep:
            return
        try:
            dispatch = importlib.import_module("worker.dispatch")
        except ModuleNotFoundError as exc:
            if exc.name != "worker.dispatch":
                raise
            return
        self._sweeper = dispatch.SweeperThread(self.sessions).start()

    def shutdown(self) -> None:
        if self._sweeper is not None:
            self._sweeper.stop()
            self._sweeper = None


class NullRunner(BrokerRunner):
    """Stores campaigns and runs nothing (tests, read-only replicas)."""

    mode = "none"

    def __init__(self) -> None:
        super().__init__("", sweep=False)

    def start(self, campaign_id: int) -> None:
        pass
