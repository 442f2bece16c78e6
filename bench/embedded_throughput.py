"""Embedded iterations per second on circle packing, --parallel 1 vs --parallel 2, in one run.

    .venv/bin/python bench/embedded_throughput.py [--evals 300]

Each configuration gets a fresh SQLite database (so the evaluation cache starts empty) and the
same seed; the table shows evaluations, fresh sandbox runs, cache hits and iterations/s.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evoforge.db.engine import session_factory, upgrade  # noqa: E402
from evoforge.sandbox import make_sandbox  # noqa: E402
from evoforge.worker.campaign_service import create_campaign  # noqa: E402
from evoforge.worker.embedded import EmbeddedExecutor  # noqa: E402
from evoforge.db.campaign_config import CampaignSpec  # noqa: E402


def one(parallel: int, evals: int, seed: int, sandbox) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        upgrade(url)
        sessions = session_factory(url)
        spec = CampaignSpec(task="circle_packing", seed=seed, parallel=parallel,
                            budget={"max_evaluations": evals})
        cid = create_campaign(sessions, spec).id
        t0 = time.perf_counter()
        out = EmbeddedExecutor(sessions, cid, parallel=parallel, sandbox=sandbox).run()
        out["wall_s"] = time.perf_counter() - t0
        return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--evals", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    sandbox = make_sandbox("fork")
    try:
        one(1, 5, a.seed + 1, sandbox)  # warm-up: imports, fork-server start
        rows = [(p, one(p, a.evals, a.seed, sandbox)) for p in (1, 2)]
    finally:
        sandbox.close()
    print(f"{'parallel':>8} {'evals':>6} {'runs':>6} {'hits':>6} {'wall s':>8} {'it/s':>8} {'best':>10}")
    for p, r in rows:
        print(f"{p:>8} {r['evaluations']:>6} {r['sandbox_runs']:>6} {r['cache_hits']:>6} "
              f"{r['wall_s']:>8.2f} {r['evaluations'] / r['wall_s']:>8.1f} {r['best_score']:>10.4f}")
    ratio = (rows[1][1]["evaluations"] / rows[1][1]["wall_s"]) / (rows[0][1]["evaluations"] / rows[0][1]["wall_s"])
    print(f"parallel 2 / parallel 1 throughput: {ratio:.2f}x")


if __name__ == "__main__":
    main()
