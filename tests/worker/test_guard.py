"""A task's guard: a deleted campaign drops the iteration quietly; any other error, a KeyError
from a bug included, fails the campaign with the error."""
from __future__ import annotations

from evoforge.db.errors import campaign_not_found
from tests.worker.conftest import new_campaign, state
from evoforge.worker import celery_jobs as tasks, dispatch


def _raise(exc):
    def fn(sessions, campaign_id, it):
        raise exc
    return fn


def test_a_gone_campaign_is_dropped_and_a_key_error_fails_the_campaign(sessions, monkeypatch, sent):
    monkeypatch.setattr(dispatch, "default_sessions", lambda: sessions)
    cid = new_campaign(sessions)
    dispatch.enqueue_campaign(cid, sessions)
    assert tasks._guard(cid, 0, _raise(campaign_not_found(cid))) is None
    assert state(sessions, cid).status == "running"
    assert tasks._guard(cid, 0, _raise(KeyError("params"))) is None
    c = state(sessions, cid)
    assert c.status == "failed" and "KeyError('params')" in c.error


def test_a_half_runs_under_a_lease(sessions, monkeypatch):
    from sqlalchemy import select

    from evoforge.db.models import WorkerLease

    monkeypatch.setattr(dispatch, "default_sessions", lambda: sessions)

    def look(s, campaign_id, it):
        with s() as session:
            return session.execute(select(WorkerLease.campaign_id, WorkerLease.iteration)).all()

    assert tasks._guard(4, 9, look) == [(4, 9)]
