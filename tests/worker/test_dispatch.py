"""The dispatcher: routing, reservations in flight, budgets, re-sends of gaps."""
from __future__ import annotations

import pytest

from evoforge.db.errors import CampaignNotFound
from evoforge.db.models import Campaign
from evoforge.evolution.step import Proposal
from evoforge.evolution.types import Mutation
from tests.worker.conftest import commit, new_campaign, state
from evoforge.worker import dispatch


def test_route_chooses_task_and_queue(sessions):
    local = new_campaign(sessions)
    llm = new_campaign(sessions, llm=True)
    assert dispatch.route(sessions, local, 0) == ("evoforge.iterate", "eval")
    assert dispatch.route(sessions, local, 7) == ("evoforge.iterate", "eval")
    assert dispatch.route(sessions, llm, 0) == ("evoforge.iterate", "eval")    # the seed: whole
    assert dispatch.route(sessions, llm, 7) == ("evoforge.mutate", "llm")
    assert dispatch.route(sessions, llm, 7, proposed=True) == ("evoforge.evaluate", "eval")


def test_route_of_a_deleted_campaign_is_not_found_and_not_a_key_error(sessions):
    cid = new_campaign(sessions)
    with sessions.begin() as s:
        s.delete(s.get(Campaign, cid))
    with pytest.raises(CampaignNotFound) as info:
        dispatch.route(sessions, cid, 1)
    assert not isinstance(info.value, KeyError)
    with pytest.raises(CampaignNotFound):
        dispatch.enqueue_campaign(cid, sessions)


def test_enqueue_sends_the_seed_alone_then_refill_fills_parallel(sessions, sent):
    cid = new_campaign(sessions, evals=10, parallel=3)
    assert dispatch.enqueue_campaign(cid, sessions) == 1
    assert sent == [("evoforge.iterate", (cid, 0), "eval")]
    assert state(sessions, cid).status == "running"
    assert dispatch.refill(cid, sessions) == 0            # nothing after the seed until it commits
    commit(sessions, cid, 0)
    assert dispatch.refill(cid, sessions) == 3
    assert sent.iterations() == [0, 1, 2, 3]
    assert state(sessions, cid).iterations_reserved == 4
    assert dispatch.refill(cid, sessions) == 0            # `parallel` in flight
    commit(sessions, cid, 2)
    assert dispatch.refill(cid, sessions) == 1 and sent.iterations()[-1] == 4


def test_llm_iterations_go_to_the_llm_queue_and_proposals_to_eval(sessions, sent):
    cid = new_campaign(sessions, llm=True, parallel=2)
    dispatch.enqueue_campaign(cid, sessions)
    commit(sessions, cid, 0)
    dispatch.refill(cid, sessions)
    assert sent[1:] == [("evoforge.mutate", (cid, 1), "llm"), ("evoforge.mutate", (cid, 2), "llm")]
    proposal = Proposal(iteration=2, island=1, parent_id=None, parent_generation=0,
                        parent_score=1.5, mutation=Mutation(code="x = 1", kind="llm:diff", model="m"))
    dispatch.send_proposal(sessions, cid, proposal)
    task, args, queue = sent[-1]
    assert (task, queue, args[:2]) == ("evoforge.evaluate", "eval", (cid, 2))
    assert Proposal.from_json(args[2]) == proposal


def test_budget_is_never_overshot_and_the_campaign_completes(sessions, sent):
    cid = new_campaign(sessions, evals=3, parallel=5)
    dispatch.enqueue_campaign(cid, sessions)
    commit(sessions, cid, 0)
    assert dispatch.refill(cid, sessions) == 2             # 1 and 2: the budget is 3
    assert state(sessions, cid).iterations_reserved == 3
    commit(sessions, cid, 2)
    assert dispatch.refill(cid, sessions) == 0
    assert state(sessions, cid).status == "running"        # iteration 1 is still missing
    commit(sessions, cid, 1)
    assert dispatch.refill(cid, sessions) == 0
    assert state(sessions, cid).status == "completed"


def test_a_broker_error_leaves_a_gap_that_a_resume_resends(sessions, sent):
    cid = new_campaign(sessions, evals=10, parallel=2)
    dispatch.enqueue_campaign(cid, sessions)
    commit(sessions, cid, 0)
    sent.fail = True
    assert dispatch.refill(cid, sessions) == 0             # reserved 1, could not send it
    assert state(sessions, cid).iterations_reserved == 2
    sent.fail = False
    assert dispatch.enqueue_campaign(cid, sessions) == 2   # the gap (1) again, then 2
    assert sent.iterations() == [0, 1, 2]


def test_resend_gaps_sends_only_the_seed_while_it_is_missing(sessions, sent):
    cid = new_campaign(sessions, evals=10, parallel=3)
    dispatch.enqueue_campaign(cid, sessions)
    assert dispatch.resend_gaps(sessions, cid, only=[0, 1, 2]) == 1
    assert sent.iterations() == [0, 0]
