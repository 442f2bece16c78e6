"""The Celery app: a Redis broker, JSON only, late acks, prefetch 1, no result backend.

Queues (which message goes where is decided by `worker.dispatch.route` alone):
  llm   the `propose` half of LLM-mutator campaigns (network-bound: many threads per worker)
  eval  the `complete` half, or a whole iteration: sandboxed evaluation + commit (CPU-bound:
        about one slot per core)
  gpu   the same as `eval` for tasks whose `resources.gpu` is True

Environment:
  EVOFORGE_BROKER_URL             redis://host:6379/0 (required by workers)
  EVOFORGE_VISIBILITY_TIMEOUT_S   seconds before Redis redelivers an unacknowledged message
                                  (a worker killed mid-task); must exceed the longest task.
                                  Default 3600.
"""
from __future__ import annotations

import os

from celery import Celery
from kombu import Queue

from evoforge.worker.broker import TRANSPORT

BROKER_ENV = "EVOFORGE_BROKER_URL"
VISIBILITY_ENV = "EVOFORGE_VISIBILITY_TIMEOUT_S"
QUEUES = ("llm", "eval", "gpu")


def visibility_timeout_s() -> float:
    return float(os.environ.get(VISIBILITY_ENV) or 3600)


def make_app(broker_url: str | None = None) -> Celery:
    app = Celery("evoforge", include=["evoforge.worker.celery_jobs"])
    vt = visibility_timeout_s()
    app.conf.update(
        broker_url=broker_url or os.environ.get(BROKER_ENV) or "redis://127.0.0.1:6379/0",
        broker_transport=TRANSPORT,             # kombu's Redis transport, surviving restarts
        broker_transport_options={
            "visibility_timeout": vt,
            # sweep for abandoned (unacked) messages often enough for the timeout to matter
            "unacked_restore_interval": max(1, min(10, int(vt // 4))),
            "unacked_restore_throttle": 1,
            "socket_timeout": 30, "socket_connect_timeout": 10, "health_check_interval": 10,
        },
        broker_connection_retry=True,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,     # keep trying while Redis restarts
        task_serializer="json", accept_content=["json"], result_serializer="json",
        result_backend=None, task_ignore_result=True, task_store_errors_even_if_ignored=False,
        task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1,
        task_queues=[Queue(q, routing_key=q) for q in QUEUES],
        task_default_queue="eval",  # unused: every send names its queue (worker.dispatch.route)
        task_publish_retry=True,
        task_publish_retry_policy={"max_retries": 5, "interval_start": 0.2, "interval_step": 0.5,
                                   "interval_max": 3},
        worker_hijack_root_logger=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_send_task_events=False,
        timezone="UTC", enable_utc=True,
    )
    return app


app = make_app()
