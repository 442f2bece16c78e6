"""Campaign execution behind the API.

Without a broker, campaigns run in this process: one `EmbeddedExecutor` thread per running
campaign, the same engine as `evoforge run`. Pause/cancel/delete change the status in the
database first (the executor stops claiming iterations as soon as the status is not `running`)
and then set the executor's `stop`. On startup, campaigns left `running` are resumed; on shutdown
they are stopped and put back to `running`, so the next start resumes them. A delete does not
wait for the executor: its in-flight iterations end on their own and find the campaign gone.
A scheduler thread serves cron triggers every `EVOFORGE_SCHEDULE_INTERVAL_S` (5 s) as `evoforge
beat` does with a broker; a scheduled campaign outside a slice stays queued
(`worker.schedule.hold`).

With a broker, the API only stores campaigns and calls `worker.dispatch.enqueue_campaign(id)`;
Celery workers do the rest. It also runs the sweeper
(`worker.dispatch.SweeperThread`) while it is up: iterations of a dead worker (stale lease) and
lost messages are re-sent, so API + workers recover without `evoforge beat`.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from evoforge.db.campaign_rows import set_status
from evoforge.db.models import Campaign
from evoforge.worker.leases import env_positive

log = logging.getLogger(__name__)
SCHEDULE_INTERVAL_ENV = "EVOFORGE_SCHEDULE_INTERVAL_S"


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
        self._ticker_stop = threading.Event()
        self._deleting: set[int] = set()
        self._ticker: threading.Thread | None = None

    def start(self, campaign_id: int) -> None:
        from evoforge.worker.embedded import EmbeddedExecutor
        from evoforge.worker.schedule import hold

        if hold(self.sessions, campaign_id):  # scheduled, outside a slice: waits for its trigger
            return
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
            if self._gone(campaign_id):  # deleted while running: nothing to report
                log.info("campaign %s was deleted while running", campaign_id)
                return
            log.exception("campaign %s failed", campaign_id)
            set_status(self.sessions, campaign_id, "failed", only_from=("queued", "running"),
                       error=f"{type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                job = self._jobs.get(campaign_id)
                if job is not None and job.executor is ex and not job.by_shutdown:
                    del self._jobs[campaign_id]

    def _gone(self, campaign_id: int) -> bool:
        try:
            with self.sessions() as s:
                return s.get(Campaign, campaign_id) is None
        except Exception:
            return False

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

    def delete_when_stopped(self, campaign_id: int, delete: Callable[[], None]) -> bool:
        """When an executor here still runs the campaign, stop it and call `delete` in a
        background thread once its in-flight iterations have ended; True then. False: nothing
        runs here, the caller deletes now."""
        with self._lock:
            job = self._jobs.get(campaign_id)
            if job is None or not job.thread.is_alive():
                return False
            if campaign_id in self._deleting:
                return True
            self._deleting.add(campaign_id)
        job.executor.stop.set()

        def finish() -> None:
            try:
                job.thread.join()
                delete()
            except Exception:
                log.exception("deleting campaign %s", campaign_id)
            finally:
                with self._lock:
                    self._deleting.discard(campaign_id)

        threading.Thread(target=finish, name=f"evoforge-delete-{campaign_id}", daemon=True).start()
        return True

    def startup(self) -> None:
        with self.sessions() as s:
            ids = list(s.scalars(select(Campaign.id).where(Campaign.status == "running",
                                                            Campaign.adhoc.is_(False))))
        for cid in ids:
            log.info("resuming campaign %s", cid)
            self.start(cid)
        self._ticker = threading.Thread(target=self._tick_loop, name="evoforge-schedule", daemon=True)
        self._ticker.start()

    def _tick_loop(self) -> None:
        """Cron triggers of scheduled campaigns, as `evoforge beat` serves them with a broker."""
        from evoforge.worker.schedule import tick

        while not self._ticker_stop.wait(env_positive(SCHEDULE_INTERVAL_ENV, 5.0)):
            try:
                tick(self.sessions, enqueue=self.start)
            except Exception:  # the database is busy or down: next round
                log.warning("schedule round failed", exc_info=True)

    def shutdown(self) -> None:
        self._ticker_stop.set()
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
        deadline = time.monotonic() + 5.0  # deletes waiting for those jobs: let them finish
        while self._deleting and time.monotonic() < deadline:
            time.sleep(0.05)
        try:
            from evoforge.worker.runtime import close_sandboxes
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
        from evoforge.worker import dispatch  # imported on first use: the broker's client libraries

        try:
            # this server's database (`serve --db`), not $EVOFORGE_DATABASE_URL's
            dispatch.enqueue_campaign(campaign_id, self.sessions)
        except Exception:  # the campaign is stored; the dispatcher picks it up later
            log.exception("enqueue_campaign(%s) failed", campaign_id)

    def stop(self, campaign_id: int, *, wait_s: float | None = None) -> None:
        pass  # workers stop claiming iterations once the status is not `running`

    def is_running(self, campaign_id: int) -> bool:
        return False

    def startup(self) -> None:
        if not self.sweep:
            return
        from evoforge.worker import dispatch

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
