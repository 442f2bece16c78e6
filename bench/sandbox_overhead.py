"""Per-candidate sandbox overhead: warm fork-server vs a fresh interpreter, side by side.

    .venv/bin/python bench/sandbox_overhead.py [--runs 200] [--fresh-runs 30]

The candidate is trivial (`def f(): return 1`), so every millisecond measured is sandbox
overhead: isolation set-up, interpreter or fork, the result channel and tear-down, as seen by
the caller of run(). Needs root (see docs/sandbox.md).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sandbox.forkserver import SCIPY_PRELOAD, ForkServerSandbox  # noqa: E402
from sandbox.subprocess_runner import SubprocessSandbox  # noqa: E402

CODE = "def f():\n    return 1\n"


def measure(sb, runs: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        assert sb.run(CODE, "f", [{}]).outputs == [1]
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        r = sb.run(CODE, "f", [{}])
        times.append((time.perf_counter() - t0) * 1000)
        assert r.ok, r
    return times


def p90(xs: list[float]) -> float:
    return sorted(xs)[max(0, int(round(0.9 * len(xs))) - 1)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200, help="runs per fork-server variant")
    ap.add_argument("--fresh-runs", type=int, default=30, help="runs per fresh-interpreter variant")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root: the sandboxes switch to unprivileged uids", file=sys.stderr)
        return 2

    rows = []
    with ForkServerSandbox() as fork:
        fork.start()
        rows.append(("fork-server (numpy preloaded, default)", measure(fork, args.runs)))
    with ForkServerSandbox(preload=SCIPY_PRELOAD) as fork:
        fork.start()
        rows.append(("fork-server (numpy + scipy preloaded)", measure(fork, args.runs)))
    rows.append(("fresh interpreter (subprocess, no bwrap)",
                 measure(SubprocessSandbox(use_bwrap=False), args.fresh_runs, warmup=1)))
    if shutil.which("bwrap"):
        rows.append(("fresh interpreter (subprocess + bwrap)",
                     measure(SubprocessSandbox(use_bwrap=True), args.fresh_runs, warmup=1)))

    base = statistics.median(rows[0][1])
    print(f"sandbox overhead per candidate, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f}")
    print(f"{'runner':44s} {'runs':>5s} {'median ms':>10s} {'p90 ms':>8s} {'vs fork-server':>15s}")
    for name, xs in rows:
        med = statistics.median(xs)
        print(f"{name:44s} {len(xs):5d} {med:10.2f} {p90(xs):8.2f} {med / base:14.1f}x")
    fresh = min(statistics.median(xs) for name, xs in rows if name.startswith("fresh"))
    print(f"\ngoal: fork-server median <= 10 ms: {'met' if base <= 10 else 'NOT met'} "
          f"({base:.2f} ms); >= 15x faster than a fresh interpreter: "
          f"{'met' if fresh / base >= 15 else 'NOT met'} ({fresh / base:.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
