"""The sweeper: stale leases re-sent at once, lease-less gaps after `stale_after_s`, live ones
left alone, queued campaigns started, dead leases collected. Time is passed in (`now`)."""
from __future__ import annotations

from sqlalchemy import func, select

from evoforge.db.models import WorkerLease
from tests.worker.conftest import commit, lease, new_campaign, state
from evoforge.worker import dispatch

STALE_AFTER_S, LEASE_STALE_S = 100.0, 10.0


def sweeper(sessions) -> dispatch.Sweeper:
    return dispatch.Sweeper(sessions, stale_after_s=STALE_AFTER_S, lease_stale_s=LEASE_STALE_S)


def running(sessions, sent, *, evals: int = 10, parallel: int = 3) -> int:
    """A running campaign whose seed committed and iterations 1..parallel are in flight."""
    cid = new_campaign(sessions, evals=evals, parallel=parallel)
    dispatch.enqueue_campaign(cid, sessions)
    commit(sessions, cid, 0)
    dispatch.refill(cid, sessions)
    sent.clear()
    return cid


def leases(sessions, cid: int) -> list[int]:
    with sessions() as s:
        return sorted(s.scalars(select(WorkerLease.iteration)
                                .where(WorkerLease.campaign_id == cid)))


def test_live_leases_and_fresh_gaps_are_left_alone(sessions, sent):
    cid = running(sessions, sent)
    lease(sessions, cid, 1, age_s=1)
    sw = sweeper(sessions)
    assert sw.sweep(now=0)["resent"] == 0
    assert sw.sweep(now=STALE_AFTER_S - 1)["resent"] == 0
    assert sent == []


def test_a_stale_lease_is_resent_at_once_and_its_lease_dropped(sessions, sent):
    cid = running(sessions, sent)
    lease(sessions, cid, 1, age_s=LEASE_STALE_S + 5, worker="dead:1")
    lease(sessions, cid, 2, age_s=1, worker="alive:2")
    stats = sweeper(sessions).sweep(now=0)
    assert stats["resent"] == 1
    assert sent == [("evoforge.iterate", (cid, 1), "eval")]
    assert leases(sessions, cid) == [2]                 # the dead worker's lease is gone


def test_a_lease_less_gap_is_resent_after_stale_after_s_once(sessions, sent):
    cid = running(sessions, sent, parallel=1)
    sw = sweeper(sessions)
    assert sw.sweep(now=0)["resent"] == 0               # first seen: the clock starts
    assert sw.sweep(now=STALE_AFTER_S - 1)["resent"] == 0
    assert sw.sweep(now=STALE_AFTER_S)["resent"] == 1
    assert sent.iterations() == [1]
    assert sw.sweep(now=STALE_AFTER_S + 1)["resent"] == 0   # its clock restarted at the re-send
    assert sw.sweep(now=2 * STALE_AFTER_S + 1)["resent"] == 1


def test_after_a_dead_worker_lease_less_gaps_wait_only_lease_stale_s(sessions, sent):
    """The dead worker's prefetched messages have no lease: once it is found dead, gaps without
    a lease are re-sent after `lease_stale_s`, not `stale_after_s`."""
    cid = running(sessions, sent, parallel=3)
    sw = sweeper(sessions)
    sw.sweep(now=0)                                      # 1, 2, 3 seen without a lease
    lease(sessions, cid, 1, age_s=LEASE_STALE_S + 5)
    stats = sw.sweep(now=LEASE_STALE_S)
    assert stats["resent"] == 3
    assert sorted(sent.iterations()) == [1, 2, 3]


def test_a_live_lease_restarts_the_waiting_clock(sessions, sent):
    cid = running(sessions, sent, parallel=1)
    sw = sweeper(sessions)
    sw.sweep(now=0)
    lease(sessions, cid, 1, age_s=0)
    sw.sweep(now=STALE_AFTER_S - 1)                      # running: seen again at this time
    with sessions.begin() as s:
        s.query(WorkerLease).delete()                    # it ended without a commit (lost)
    assert sw.sweep(now=STALE_AFTER_S + 1)["resent"] == 0
    assert sw.sweep(now=2 * STALE_AFTER_S)["resent"] == 1


def test_a_missing_seed_is_resent_alone(sessions, sent):
    cid = new_campaign(sessions, evals=10, parallel=3)
    dispatch.enqueue_campaign(cid, sessions)
    sent.clear()
    lease(sessions, cid, 0, age_s=LEASE_STALE_S + 1)
    assert sweeper(sessions).sweep(now=0)["resent"] == 1
    assert sent.iterations() == [0]


def test_broker_down_stops_the_round_and_the_next_round_resends(sessions, sent):
    cid = running(sessions, sent, parallel=2)
    lease(sessions, cid, 1, age_s=LEASE_STALE_S + 5)
    sw = sweeper(sessions)
    sent.fail = True
    assert sw.sweep(now=0)["resent"] == 0                # no exception: logged, retried later
    assert leases(sessions, cid) == [1]                  # kept: nothing was re-sent
    sent.fail = False
    assert sw.sweep(now=1)["resent"] == 1
    assert sent.iterations() == [1]


def test_queued_campaigns_are_started_unless_they_wait_for_a_trigger(sessions, sent):
    plain = new_campaign(sessions)
    scheduled = new_campaign(sessions, schedule={"cron": "0 3 * * *"})
    stats = sweeper(sessions).sweep(now=0)
    assert stats["started"] == 1
    assert state(sessions, plain).status == "running"
    assert state(sessions, scheduled).status == "queued"
    assert sent == [("evoforge.iterate", (plain, 0), "eval")]


def test_refills_and_completes_running_campaigns(sessions, sent):
    cid = running(sessions, sent, evals=3, parallel=2)
    commit(sessions, cid, 1)
    stats = sweeper(sessions).sweep(now=0)
    assert stats["sent"] == 0 and state(sessions, cid).status == "running"   # 2 in flight
    commit(sessions, cid, 2)
    stats = sweeper(sessions).sweep(now=0)
    assert stats["completed"] == 1 and state(sessions, cid).status == "completed"


def test_old_leases_are_collected(sessions, sent):
    cid = running(sessions, sent)
    commit(sessions, cid, 1)
    lease(sessions, cid, 1, age_s=10_000)                # left behind by a finished iteration
    lease(sessions, cid, 2, age_s=1)
    sw = sweeper(sessions)
    sw.sweep(now=1000)
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(WorkerLease)) == 1
    assert leases(sessions, cid) == [2]
