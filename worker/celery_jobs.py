"""Celery jobs: take ids, reload state from the database, run a half of the step, refill.
(Celery calls them tasks; in EvoForge a "task" is a problem, `evaluators.base.Task`.)

Each task holds a worker lease on its (campaign, iteration) while it runs (worker/leases.py), so
a killed worker's iterations are re-sent within about $EVOFORGE_LEASE_STALE_S seconds by the
sweeper. Which task runs on which queue is decided by `worker.dispatch.route` alone.

Idempotent by construction: iteration numbers are reserved in the database before a message is
sent, and a commit of an iteration that already committed is a no-op (unique key). Only
transient faults (database connection, broker) are retried, with exponential backoff and
jitter; a campaign deleted meanwhile (`CampaignNotFound`) drops the iteration; anything else
runs the half once more (`iteration.once_more`), and if that fails too, fails the campaign with
the error, as the embedded executor does.
"""
from __future__ import annotations

import logging
import traceback
from typing import Any

from sqlalchemy.exc import InterfaceError, OperationalError, TimeoutError as PoolTimeout

from evoforge.db.campaign_rows import set_status
from evoforge.db.errors import CampaignNotFound
from evoforge.worker import dispatch, iteration
from evoforge.worker.celery_app import app
from evoforge.worker.leases import HEARTBEAT

log = logging.getLogger(__name__)

# PoolTimeout: no database connection free within the pool's timeout (a busy moment)
TRANSIENT = (OperationalError, InterfaceError, PoolTimeout, TimeoutError) + dispatch.BROKER_ERRORS
RETRY = dict(autoretry_for=TRANSIENT, retry_backoff=1, retry_backoff_max=60, retry_jitter=True,
             max_retries=10, acks_late=True, reject_on_worker_lost=True, ignore_result=True)


def _guard(campaign_id: int, it: int, fn, *args: Any) -> Any:
    """Run one half under a lease (worker/leases.py `Heartbeat`): while this process lives and
    heartbeats, the sweeper leaves the iteration alone; when it dies, the sweeper re-sends it."""
    sessions = dispatch.default_sessions()
    try:
        with HEARTBEAT.holding(sessions, campaign_id, it):
            return iteration.once_more(fn, sessions, campaign_id, it, *args,
                                       expected=TRANSIENT + (CampaignNotFound,),
                                       what=f"campaign {campaign_id} iteration {it}")
    except TRANSIENT:
        raise
    except CampaignNotFound:  # deleted while the message waited or ran
        log.info("campaign %s is gone; dropping iteration %s", campaign_id, it)
        return None
    except Exception as exc:
        log.exception("campaign %s iteration %s failed", campaign_id, it)
        set_status(sessions, campaign_id, "failed", only_from=("running",),
                   error=f"iteration {it}: {exc!r}\n{traceback.format_exc(limit=3)}")
        return None


@app.task(name=dispatch.ITERATE, bind=True, **RETRY)
def iterate(self, campaign_id: int, it: int) -> None:
    """Both halves (the seed, a local-mutator campaign's iteration)."""
    _guard(campaign_id, it, iteration.run_whole)
    dispatch.refill(campaign_id)


@app.task(name=dispatch.PROPOSE, bind=True, **RETRY)
def mutate(self, campaign_id: int, it: int) -> None:
    """The LLM half: select a parent, ask a model, hand the proposal to evaluation."""
    proposal = _guard(campaign_id, it, iteration.propose)
    if proposal is None:
        return
    try:  # a broker error retries this task (TRANSIENT); the proposal is made again
        dispatch.send_proposal(dispatch.default_sessions(), campaign_id, proposal)
    except CampaignNotFound:
        log.info("campaign %s is gone; dropping iteration %s", campaign_id, it)


@app.task(name=dispatch.COMPLETE, bind=True, **RETRY)
def evaluate(self, campaign_id: int, it: int, proposal_json: str) -> None:
    """Sandboxed evaluation and commit of a proposal."""
    _guard(campaign_id, it, iteration.complete, proposal_json)
    dispatch.refill(campaign_id)
