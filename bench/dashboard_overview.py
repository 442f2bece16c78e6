"""The campaign page's overview (api/dashboard/queries.py `campaign_overview`) on its first call
after a server start, big campaign against small, side by side in one run.

    .venv/bin/python bench/dashboard_overview.py --state /work/pg1m/state.json [--runs 3]
        [--before REV]

`--state`: a bench/million.py state file (the database URL, the project key, the big and small
campaigns); read-only: nothing is written to that database. Every measurement is a fresh
Python process (no read cache of any kind, as after `evoforge serve` starts; the database's own
caches stay warm), which times the first `campaign_overview` call, then a second one (the live
page's refetch with no new rows), and the memory the process keeps for the campaign's
aggregates afterwards (tracemalloc, a second cold computation). `--before REV` runs the same with
api/dashboard/queries.py as it is at the git revision REV (e.g. HEAD), interleaved run by run
with the working tree's, so both see the same machine load. Prints medians and the big/small
ratio. Goal: the first call at a million programs well under 1 s.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def child(url: str, project_id: int, cid: int, module: str) -> dict:
    """In a fresh process: the first and second call, then the aggregates' retained memory."""
    import gc
    import tracemalloc

    from sqlalchemy import text

    from evoforge.api.auth import Principal
    from evoforge.db.engine import session_factory
    from evoforge.db.models import Campaign

    spec = importlib.util.spec_from_file_location("overview_under_test", module)
    q = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(q)
    sessions = session_factory(url)
    who = Principal(project_id=project_id)
    with sessions() as s:
        s.execute(text("SELECT 1"))         # the connection, as a running server has one
    out = {}
    for name in ("first_ms", "again_ms"):
        with sessions() as s:
            t0 = time.perf_counter()
            o = q.campaign_overview(s, who, cid)
            out[name] = (time.perf_counter() - t0) * 1e3
    out["programs"] = o["history"]["programs"]
    out["points"] = len(o["history"]["scores"]["x"])
    out["improvements"] = len(o["history"]["best"]["x"])
    q._cache.clear()
    gc.collect()
    with sessions() as s:
        camp = s.get(Campaign, cid)
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        q.aggregates(s, camp)
        gc.collect()
        out["kept_kb"] = (tracemalloc.get_traced_memory()[0] - base) / 1024
        tracemalloc.stop()
    return out


def spawn(state: str, label: str, module: Path) -> dict:
    cmd = [sys.executable, __file__, "--state", state, "--child", label, "--module", str(module)]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    if r.returncode:
        raise RuntimeError(f"{label}: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--state", required=True, help="a bench/million.py --state file")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--before", default=None, help="a git revision to compare with")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--module", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    st = json.loads(Path(a.state).read_text())
    targets = {k: v[0] for k, v in st["targets"].items()}
    if a.child:
        from sqlalchemy import select

        from evoforge.db.engine import session_factory
        from evoforge.db.models import Campaign

        with session_factory(st["url"])() as s:
            project_id = s.scalar(select(Campaign.project_id).where(Campaign.id == targets[a.child]))
        print(json.dumps(child(st["url"], project_id, targets[a.child], a.module)))
        return
    impls = {"now": ROOT / "api" / "dashboard" / "queries.py"}
    with tempfile.TemporaryDirectory() as tmp:
        if a.before:
            old = Path(tmp) / "queries_before.py"
            old.write_bytes(subprocess.run(["git", "show", f"{a.before}:api/dashboard/queries.py"],
                                           cwd=ROOT, capture_output=True, check=True).stdout)
            impls = {f"{a.before}": old, **impls}
        load0 = os.getloadavg()
        res: dict = {(i, t): [] for i in impls for t in targets}
        for run in range(a.runs):
            for impl, module in impls.items():
                for label in ("big", "small"):
                    r = spawn(a.state, label, module)
                    res[(impl, label)].append(r)
                    print(f"  run {run + 1} {impl:>8} {label:>5}: first {r['first_ms']:7.0f} ms, "
                          f"again {r['again_ms']:6.1f} ms, kept {r['kept_kb']:8.0f} KiB "
                          f"({r['programs']:,} programs, {r['points']} points, "
                          f"{r['improvements']} best steps)", flush=True)
    url = st["url"].split("@")[-1]
    print(f"\n== campaign_overview, first call in a fresh process: {url} (load average "
          f"{' '.join(f'{x:.1f}' for x in load0)} before, "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} after, {os.cpu_count()} CPUs)")
    print(f"{'code':>8} {'campaign':>8} {'programs':>10} {'first ms':>9} {'again ms':>9} {'kept KiB':>9}")
    med = {}
    for (impl, label), rs in res.items():
        med[(impl, label)] = m = {k: statistics.median(r[k] for r in rs)
                                  for k in ("first_ms", "again_ms", "kept_kb")}
        print(f"{impl:>8} {label:>8} {rs[0]['programs']:>10,} {m['first_ms']:>9.0f} "
              f"{m['again_ms']:>9.1f} {m['kept_kb']:>9.0f}")
    for impl in impls:
        b, s = med[(impl, "big")], med[(impl, "small")]
        print(f"{impl:>8}: big/small first call = {b['first_ms'] / s['first_ms']:.1f} "
              f"({b['first_ms']:.0f} / {s['first_ms']:.0f} ms; goal: big well under 1000 ms)")


if __name__ == "__main__":
    main()
