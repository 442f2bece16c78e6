"""Campaign throughput on Celery: 1 vs 2 `evoforge worker` processes (eval queue), side by side.

    .venv/bin/python bench/worker_throughput.py [--evals 60] [--burn-ms 100] [--db sqlite|postgres]

Starts its own Redis (and PostgreSQL with --db postgres) on loopback, then for each worker count
a fresh database, the workers (concurrency 1 each), and one circle-packing campaign (parallel 4)
whose seed program burns `--burn-ms` of CPU per call on the n=26 input, outside the
EVOLVE-BLOCK so no mutation changes it: every candidate costs about 2 x burn (probe + full
stage; a cache hit skips the full stage). The clock runs from enqueue to `completed`, with the
workers already up. Goal: >= 1.7x with 2 workers on 2 cores.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.integration.services import (  # noqa: E402
    PostgresServer, RedisServer, evoforge_env, pg_bindir, start_worker, stop_process, tail, use_broker, wait_for)

BURNER = '''

def pack_circles(n):
    import time as _t
    if n >= 26:  # the benchmark's CPU cost, outside the EVOLVE-BLOCK
        _t0 = _t.process_time()
        while _t.process_time() - _t0 < {burn_s}:
            pass
    centers = place_centers(n)
    radii = compute_radii(centers)
    return centers, radii
'''


def seed_program(burn_s: float) -> str:
    from evoforge.evaluators.base import get_task, parse_params

    task = get_task("circle_packing")
    code = task.seed_program(parse_params(task, {}))
    head = code[:code.index("def pack_circles(n):")]
    return head.rstrip() + "\n" + BURNER.format(burn_s=burn_s)


def run_one(workers: int, db_url: str, redis_url: str, args, tmp: Path) -> dict:
    from evoforge.db.engine import session_factory, upgrade
    from evoforge.db.models import Campaign
    from evoforge.worker.campaign_service import create_campaign
    from evoforge.worker.dispatch import enqueue_campaign
    from evoforge.db.campaign_config import CampaignSpec

    upgrade(db_url)
    sessions = session_factory(db_url)
    use_broker(redis_url)
    env = evoforge_env(db_url, redis_url)
    logs = [tmp / f"w{workers}-{i}.log" for i in range(workers)]
    procs = [start_worker(env, log, queues="eval", concurrency=1, name=f"bench{i}") for i, log in enumerate(logs)]
    try:
        for log in logs:
            wait_for(lambda: "ready." in tail(log, 100_000), 60, what="worker ready")
        spec = CampaignSpec(task="circle_packing", seed=args.seed, parallel=4,
                            program=seed_program(args.burn_ms / 1000.0),
                            budget={"max_evaluations": args.evals})
        cid = create_campaign(sessions, spec).id
        t0 = time.perf_counter()
        enqueue_campaign(cid, sessions)

        def done():
            with sessions() as s:
                c = s.get(Campaign, cid)
                return c if c.status != "running" else None

        c = wait_for(done, 900, interval_s=0.05, what="campaign")
        wall = time.perf_counter() - t0
        assert c.status == "completed" and c.evaluations == args.evals, (c.status, c.error)
        return {"workers": workers, "evaluations": c.evaluations, "sandbox_runs": c.sandbox_runs,
                "cache_hits": c.cache_hits, "wall_s": wall, "evals_per_s": c.evaluations / wall,
                "best": c.best_score}
    finally:
        for p in procs:
            stop_process(p)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--evals", type=int, default=60)
    ap.add_argument("--burn-ms", type=float, default=100.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--db", choices=["sqlite", "postgres"], default="postgres" if pg_bindir() else "sqlite")
    args = ap.parse_args()
    if not shutil.which("redis-server"):
        sys.exit("redis-server is not installed")
    tmp = Path(tempfile.mkdtemp(prefix="evoforge-bench-"))
    redis = RedisServer(tmp).start()
    pg = PostgresServer(pg_bindir()).start() if args.db == "postgres" else None
    rows = []
    try:
        for n in (1, 2):
            url = pg.createdb() if pg else f"sqlite:///{tmp / f'bench{n}.db'}"
            import redis as redis_lib
            redis_lib.Redis.from_url(redis.url).flushall()
            rows.append(run_one(n, url, redis.url, args, tmp))
    finally:
        if pg:
            pg.stop()
        redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    cpus = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    print(f"circle_packing, {args.evals} evaluations, parallel 4, burn {args.burn_ms:g} ms/call, "
          f"{args.db}, {cpus} CPUs")
    print(f"{'workers':>7} {'evals':>6} {'sandbox':>8} {'cache':>6} {'wall s':>8} {'evals/s':>8}")
    for r in rows:
        print(f"{r['workers']:>7} {r['evaluations']:>6} {r['sandbox_runs']:>8} {r['cache_hits']:>6} "
              f"{r['wall_s']:>8.2f} {r['evals_per_s']:>8.2f}")
    print(f"ratio 2 workers / 1 worker: {rows[1]['evals_per_s'] / rows[0]['evals_per_s']:.2f}x (goal >= 1.7x)")


if __name__ == "__main__":
    main()
