"""Celery tasks: take ids, reload state from the database, run the step, refill the campaign.

Each task holds a worker lease on its (campaign, iteration) while it runs (see
`worker.dispatch.Heartbeat`), so a killed worker's iterations are re-sent within about
$EVOFORGE_LEASE_STALE_S seconds by the sweeper.

Idempotent by construction: iteration numbers are reserved in the database before a message is
sent, and a commit of an iteration that already committed is a no-op (unique key). Only
transient faults (database connection, broker) are retried, with exponential backoff and
jitter; anything else fails the campaign with the error, as the embedded executor does.
"""
from __future__ import annotations

import logging
import traceback
from typing import Any

from sqlalchemy.exc import InterfaceError, OperationalError

from db.campaigns import set_status
from worker import dispatch, stages
from worker.celery_app import app

log = logging.getLogger(__name__)

TRANSIENT = (OperationalError, InterfaceError, TimeoutError) + dispatch.BROKER_ERRORS
RETRY = dict(autoretry_for=TRANSIENT, retry_backoff=1, retry_backoff_max=60, retry_jitter=True,
             max_retries=10, acks_late=True, reject_on_worker_lost=True, ignore_result=True)


def _guard(campaign_id: int, iteration: int, fn, *args: Any) -> Any:
    """Run one stage under a lease (worker/dispatch.py `Heartbeat`): while this process lives and
    heartbeats, the sweeper leaves the iteration alone; when it dies, the sweeper re-sends it."""
    sessions = dispatch.default_sessions()
    try:
        with dispatch.HEARTBEAT.holding(sessions, campaign_id, iteration):
            return fn(sessions, campaign_id, iteration, *args)
    except TRANSIENT:
        raise
    except KeyError:  # the campaign was deleted
        log.info("campaign %s is gone; dropping iteration %s", campaign_id, iteration)
        return None
    except Exception as exc:
        log.exception("campaign %s iteration %s failed", campaign_id, iteration)
        set_status(sessions, campaign_id, "failed", only_from=("running",),
                   error=f"iteration {iteration}: {exc!r}\n{traceback.format_exc(limit=3)}")
        return None


@app.task(name="evoforge.iterate", bind=True, **RETRY)
def iterate(self, campaign_id: int, iteration: int) -> None:
    """One whole iteration (seed, local mutator, or an LLM campaign's seed)."""
    _guard(campaign_id, iteration, stages.run_full)
    dispatch.refill(campaign_id)


@app.task(name="evoforge.mutate", bind=True, **RETRY)
def mutate(self, campaign_id: int, iteration: int) -> None:
    """LLM step (queue `llm`): select a parent, ask the model, hand the program to evaluation."""
    proposal = _guard(campaign_id, iteration, stages.propose)
    if proposal is not None:
        queue, _ = dispatch.route_of(dispatch.default_sessions(), campaign_id)
        evaluate.apply_async((campaign_id, iteration, proposal), queue=queue)


@app.task(name="evoforge.evaluate", bind=True, **RETRY)
def evaluate(self, campaign_id: int, iteration: int, proposal: dict[str, Any]) -> None:
    """Sandboxed evaluation and commit of an LLM proposal (queue `eval` or `gpu`)."""
    _guard(campaign_id, iteration, stages.evaluate_proposal, proposal)
    dispatch.refill(campaign_id)
