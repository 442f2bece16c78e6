"""Early stopping on the Celery path: the dispatcher reserves nothing once `budget.patience`
evaluations have passed without a gain, and completes the campaign when they have committed."""
from __future__ import annotations

from sqlalchemy import update

from evoforge.db.campaign_config import CampaignSpec
from evoforge.db.models import Campaign
from evoforge.worker import dispatch
from evoforge.worker.campaign_service import create_campaign, describe
from tests.worker.conftest import commit, state


def test_the_dispatcher_stops_after_patience_without_gain(sessions, sent):
    spec = CampaignSpec(task="circle_packing", params={"n": 26}, parallel=2,
                        budget={"max_evaluations": 100, "patience": 3})
    cid = create_campaign(sessions, spec).id
    dispatch.enqueue_campaign(cid, sessions)
    commit(sessions, cid, 0)   # every program scores 1.0: the seed stays the best
    with sessions.begin() as s:
        s.execute(update(Campaign).where(Campaign.id == cid).values(best_score=1.0))
    assert dispatch.refill(cid, sessions) == 2
    commit(sessions, cid, 1, 2)
    assert not dispatch.maybe_complete(sessions, cid)
    assert dispatch.refill(cid, sessions) == 2            # iterations 3 and 4
    commit(sessions, cid, 3)                              # 3 evaluations after the seed
    assert dispatch.refill(cid, sessions) == 0            # patience spent: nothing more
    assert not dispatch.maybe_complete(sessions, cid)     # iteration 4 is still in flight
    commit(sessions, cid, 4)
    assert dispatch.maybe_complete(sessions, cid)
    with sessions() as s:
        c = s.get(Campaign, cid)
        assert (c.status, c.evaluations) == ("completed", 5)
        assert describe(c)["stop_reason"] == "patience"
    assert state(sessions, cid).status == "completed"
