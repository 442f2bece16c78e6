"""Parent-selection time with 1,000 vs 100,000 programs stored, side by side in one run.

    .venv/bin/python bench/selection_scaling.py [--small 1000] [--large 100000]

Both databases get the same archive shape (4 islands x 100 filled cells); only the number of
stored programs differs. Selection reads elites, never the whole history, so the ratio should
stay near 1 (goal: at most 2).
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import insert  # noqa: E402

from evoforge.db.blobs import code_hash, put_codes  # noqa: E402
from evoforge.db.engine import session_factory, upgrade  # noqa: E402
from evoforge.db.models import EliteCell, Evaluation, Program  # noqa: E402
from evoforge.db.store import CampaignStore  # noqa: E402
from evoforge.worker.campaign_service import create_campaign  # noqa: E402
from evoforge.db.campaign_config import CampaignSpec  # noqa: E402

ISLANDS, CELLS = 4, 100


def populate(url: str, programs: int) -> tuple:
    upgrade(url)
    sessions = session_factory(url)
    spec = CampaignSpec(task="circle_packing", archive={"islands": ISLANDS})
    c = create_campaign(sessions, spec)
    code = c.seed_program
    rng = random.Random(0)
    with sessions.begin() as s:
        for start in range(0, programs, 5000):
            rows = [dict(id=i + 1, campaign_id=c.id, iteration=i, island=i % ISLANDS, generation=1,
                         code_hash=code_hash(code + f"\n# variant {i}\n"), kind="bench",
                         status="ok", score=rng.random(), extra={})
                    for i in range(start, min(programs, start + 5000))]
            put_codes(s, [code + f"\n# variant {i}\n" for i in range(start, start + len(rows))])
            s.execute(insert(Program), rows)
            s.execute(insert(Evaluation), [dict(program_id=r["id"], task_key=c.task_key, status="ok",
                                                score=r["score"], metrics={}, features={}, artifacts={},
                                                cache="miss") for r in rows])
        elites = rng.sample(range(1, programs + 1), ISLANDS * CELLS)
        s.execute(insert(EliteCell), [dict(campaign_id=c.id, island=k % ISLANDS, cell=f"{k // ISLANDS},0",
                                           program_id=pid, score=rng.random(), features={})
                                      for k, pid in enumerate(elites)])
    return sessions, c.id


def time_select(sessions, cid: int, calls: int) -> list[float]:
    store = CampaignStore(sessions, cid)
    rng = random.Random(1)
    for i in range(20):  # warm the program cache as a running campaign would have
        store.select(i % ISLANDS, rng)
    out = []
    for i in range(calls):
        t0 = time.perf_counter()
        store.select(i % ISLANDS, rng)
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", type=int, default=1000)
    ap.add_argument("--large", type=int, default=100_000)
    ap.add_argument("--calls", type=int, default=300)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        res = {}
        for n in (a.small, a.large):
            sessions, cid = populate(f"sqlite:///{tmp}/sel{n}.db", n)
            res[n] = time_select(sessions, cid, a.calls)
        print(f"{'programs':>10} {'median ms':>10} {'p90 ms':>8}")
        for n, t in res.items():
            print(f"{n:>10} {statistics.median(t) * 1e3:>10.2f} {statistics.quantiles(t, n=10)[-1] * 1e3:>8.2f}")
        ratio = statistics.median(res[a.large]) / statistics.median(res[a.small])
        print(f"median ratio {a.large} / {a.small} programs: {ratio:.2f} (goal <= 2)")


if __name__ == "__main__":
    main()
