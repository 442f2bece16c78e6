"""A task's guard: a deleted campaign drops the iteration quietly; a transient fault goes back
to Celery's retry; any other error runs the half once more, and if that fails too, a KeyError
from a bug included, fails the campaign with the error. The embedded executor does the same."""
from __future__ import annotations

import pytest
from sqlalchemy.exc import OperationalError

from evoforge.db.errors import campaign_not_found
from tests.worker.conftest import new_campaign, state
from evoforge.worker import celery_jobs as tasks, dispatch, iteration


@pytest.fixture(autouse=True)
def no_pause(monkeypatch):
    monkeypatch.setattr(iteration, "AGAIN_AFTER_S", 0.0)


class Raising:
    """A half that raises each of `errors` in turn, then returns "done"; counts its calls."""

    def __init__(self, *errors: BaseException):
        self.errors, self.calls = list(errors), 0

    def __call__(self, sessions, campaign_id, it):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


@pytest.fixture
def cid(sessions, monkeypatch, sent) -> int:
    monkeypatch.setattr(dispatch, "default_sessions", lambda: sessions)
    cid = new_campaign(sessions)
    dispatch.enqueue_campaign(cid, sessions)
    return cid


def test_a_gone_campaign_is_dropped_at_once(sessions, cid):
    half = Raising(campaign_not_found(cid))
    assert tasks._guard(cid, 0, half) is None
    assert half.calls == 1 and state(sessions, cid).status == "running"


def test_an_error_that_happens_once_costs_one_rerun_not_the_campaign(sessions, cid):
    half = Raising(SystemError("AST constructor recursion depth mismatch (before=39, after=104)"))
    assert tasks._guard(cid, 0, half) == "done"
    assert half.calls == 2 and state(sessions, cid).status == "running"


def test_an_error_that_happens_twice_fails_the_campaign(sessions, cid):
    half = Raising(KeyError("params"), KeyError("params"))
    assert tasks._guard(cid, 0, half) is None
    c = state(sessions, cid)
    assert half.calls == 2 and c.status == "failed" and "KeyError('params')" in c.error


def test_a_transient_fault_goes_to_celerys_retry_without_a_rerun(sessions, cid):
    half = Raising(OperationalError("SELECT 1", {}, Exception("server closed the connection")))
    with pytest.raises(OperationalError):
        tasks._guard(cid, 0, half)
    assert half.calls == 1 and state(sessions, cid).status == "running"


def test_embedded_an_error_that_happens_once_loses_nothing(sessions, monkeypatch):
    from evoforge.worker.embedded import EmbeddedExecutor
    from evoforge.worker.runtime import Runtime

    real, failed = Runtime.iterate, []

    def iterate(self, it):
        if it == 3 and not failed:
            failed.append(it)
            raise SystemError("AST constructor recursion depth mismatch (before=39, after=104)")
        return real(self, it)

    monkeypatch.setattr(Runtime, "iterate", iterate)
    cid = new_campaign(sessions, evals=6, mutator={"kind": "local"})
    summary = EmbeddedExecutor(sessions, cid, parallel=2).run()
    c = state(sessions, cid)
    assert failed == [3] and c.status == "completed" and c.evaluations == 6, summary


def test_embedded_an_error_that_happens_twice_fails_the_campaign(sessions, monkeypatch):
    from evoforge.worker.embedded import EmbeddedExecutor
    from evoforge.worker.runtime import Runtime

    real, calls = Runtime.iterate, []

    def iterate(self, it):
        if it == 3:
            calls.append(it)
            raise KeyError("params")
        return real(self, it)

    monkeypatch.setattr(Runtime, "iterate", iterate)
    cid = new_campaign(sessions, evals=6, mutator={"kind": "local"})
    EmbeddedExecutor(sessions, cid, parallel=2).run()
    c = state(sessions, cid)
    assert calls == [3, 3] and c.status == "failed" and "iteration 3: KeyError('params')" in c.error


@pytest.mark.parametrize("to", ["cancelled", "paused"])
def test_embedded_no_rerun_once_the_campaign_stops_running(sessions, monkeypatch, to):
    from sqlalchemy import select

    from evoforge.db.campaign_rows import set_status
    from evoforge.db.models import Program
    from evoforge.worker.embedded import EmbeddedExecutor
    from evoforge.worker.runtime import Runtime

    real, calls = Runtime.iterate, []
    cid = new_campaign(sessions, evals=6, parallel=1, mutator={"kind": "local"})

    def iterate(self, it):
        calls.append(it)
        if it == 3 and calls.count(3) == 1:  # the user stops the campaign, then the run fails
            set_status(sessions, cid, to, only_from=("running",))
            raise SystemError("spurious")
        return real(self, it)

    monkeypatch.setattr(Runtime, "iterate", iterate)
    EmbeddedExecutor(sessions, cid, parallel=1).run()
    with sessions() as s:
        committed = s.scalars(select(Program.iteration).where(Program.campaign_id == cid)
                              .order_by(Program.iteration)).all()
    assert calls == [0, 1, 2, 3] and committed == [0, 1, 2], (calls, committed)
    assert state(sessions, cid).status == to


def test_a_campaign_that_fails_twice_keeps_the_second_error_alone(sessions, cid):
    half = Raising(KeyError("first"), KeyError("second"))
    tasks._guard(cid, 0, half)
    error = state(sessions, cid).error
    assert error.startswith("iteration 0: KeyError('second')"), error
    assert "first" not in error and "During handling" not in error, error


def test_a_half_runs_under_a_lease(sessions, monkeypatch):
    from sqlalchemy import select

    from evoforge.db.models import WorkerLease

    monkeypatch.setattr(dispatch, "default_sessions", lambda: sessions)

    def look(s, campaign_id, it):
        with s() as session:
            return session.execute(select(WorkerLease.campaign_id, WorkerLease.iteration)).all()

    assert tasks._guard(4, 9, look) == [(4, 9)]
