"""`evoforge worker` and `evoforge beat`: the Celery workers and the scheduler
(worker/celery_app.py, worker/dispatch.py, worker/schedule.py)."""
from __future__ import annotations

import logging
import os

import click

from evoforge.cli.common import DB_HELP


def _service_env(db: str | None, broker_url: str | None) -> None:
    """Options win over the environment; child processes (Celery pool) inherit it."""
    if db:
        os.environ["EVOFORGE_DATABASE_URL"] = db
    if broker_url:
        os.environ["EVOFORGE_BROKER_URL"] = broker_url
    if not os.environ.get("EVOFORGE_BROKER_URL"):
        raise click.UsageError("no broker: pass --broker-url or set EVOFORGE_BROKER_URL")


@click.command()
@click.option("--queues", default="llm,eval,gpu", show_default=True,
              help="Comma-separated queues to consume: llm (LLM calls), eval (sandboxed "
                   "evaluation), gpu (evaluation of GPU tasks).")
@click.option("--concurrency", type=click.IntRange(1, 1024), default=None,
              help="Iterations in flight in this worker (default: CPU cores; 16 for llm only).")
@click.option("--pool", type=click.Choice(["threads", "prefork", "solo"]), default="threads",
              show_default=True, help="Candidates run in sandbox processes, so threads suffice.")
@click.option("--loglevel", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"], case_sensitive=False))
@click.option("--hostname", default=None, help="Celery node name, e.g. eval1@%h.")
@click.option("--db", default=None, help=DB_HELP)
@click.option("--broker-url", default=None, help="Redis URL (default: $EVOFORGE_BROKER_URL).")
@click.option("--visibility-timeout", type=click.FloatRange(1, None), default=None,
              help="Seconds before Redis redelivers a dead worker's task "
                   "(default: $EVOFORGE_VISIBILITY_TIMEOUT_S, else 3600; above the longest task).")
def worker(queues, concurrency, pool, loglevel, hostname, db, broker_url, visibility_timeout) -> None:
    """Run a Celery worker that executes campaign iterations."""
    from evoforge.worker.celery_app import QUEUES

    _service_env(db, broker_url)
    if visibility_timeout:
        os.environ["EVOFORGE_VISIBILITY_TIMEOUT_S"] = str(visibility_timeout)
    names = [q.strip() for q in queues.split(",") if q.strip()]
    bad = [q for q in names if q not in QUEUES]
    if not names or bad:
        raise click.BadParameter(f"unknown queue(s) {bad or queues!r}; choose from {', '.join(QUEUES)}",
                                 param_hint="--queues")
    if concurrency is None:
        concurrency = 16 if names == ["llm"] else (os.cpu_count() or 1)
    from celery.signals import worker_shutdown

    from evoforge.worker.celery_app import app
    import evoforge.worker.celery_jobs  # noqa: F401  (registers the tasks)
    from evoforge.worker.runtime import close_sandboxes

    worker_shutdown.connect(lambda **_: close_sandboxes(), weak=False)
    argv = ["worker", f"--queues={','.join(names)}", f"--concurrency={concurrency}",
            f"--pool={pool}", f"--loglevel={loglevel.upper()}", "--without-gossip",
            "--without-mingle"]
    if hostname:
        argv.append(f"--hostname={hostname}")
    app.worker_main(argv)


@click.command()
@click.option("--interval", type=click.FloatRange(0.1, 3600), default=5.0, show_default=True,
              help="Seconds between rounds (schedule triggers + sweep).")
@click.option("--stale-after", type=click.FloatRange(1, None), default=600.0, show_default=True,
              help="Re-send a reserved iteration still uncommitted after this many seconds "
                   "(a lost message); above the longest queue wait + iteration.")
@click.option("--db", default=None, help=DB_HELP)
@click.option("--broker-url", default=None, help="Redis URL (default: $EVOFORGE_BROKER_URL).")
@click.option("--loglevel", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"], case_sensitive=False))
def beat(interval, stale_after, db, broker_url, loglevel) -> None:
    """Run the scheduler: cron slices of scheduled campaigns, and the sweeper that re-sends lost
    iterations, refills running campaigns and marks finished ones completed. Run one."""
    from evoforge.db.engine import session_factory
    from evoforge.worker.schedule import run_beat

    _service_env(db, broker_url)
    logging.getLogger().setLevel(loglevel.upper())
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_beat(session_factory(db), interval_s=interval, stale_after_s=stale_after)
