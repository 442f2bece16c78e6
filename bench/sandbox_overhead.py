"""Per-candidate sandbox overhead: warm fork-server vs a fresh interpreter, side by side.

    .venv/bin/python bench/sandbox_overhead.py [--runs 200] [--fresh-runs 30]

The candidate is trivial (`def f(): return 1`), so every millisecond measured is sandbox
overhead: isolation set-up, interpreter or fork, the result channel and tear-down, as seen by
the caller of run(). Needs root (see docs/sandbox.md).
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sandbox.forkserver import SCIPY_PRELOAD, ForkServerSandbox  # noqa: E402
from sandbox.subprocess_runner import SubprocessSandbox  # noqa: E402

CODE = "def f():\n    return 1\n"


def cpu_s(server_pid: int | None) -> float:
    """CPU seconds used so far by this process, its reaped children and the fork-server tree
    (the server reaps its supervisors, which reap their candidates)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
    if server_pid:
        with open(f"/proc/{server_pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    return total


def measure(sb, runs: int, warmup: int = 3) -> tuple[list[float], float]:
    """Wall ms of each run() and CPU ms per run (independent of how loaded the host is)."""
    for _ in range(warmup):
        assert sb.run(CODE, "f", [{}]).outputs == [1]
    server = getattr(sb, "server_pid", lambda: None)()
    times, c0 = [], cpu_s(server)
    for _ in range(runs):
        t0 = time.perf_counter()
        r = sb.run(CODE, "f", [{}])
        times.append((time.perf_counter() - t0) * 1000)
        assert r.ok, r
    time.sleep(1.5)  # let the server reap the last supervisors
    return times, (cpu_s(server) - c0) * 1000 / runs


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

    base = statistics.median(rows[0][1][0])
    base_cpu = rows[0][1][1]
    print(f"sandbox overhead per candidate, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f}")
    print(f"{'runner':44s} {'runs':>5s} {'median ms':>10s} {'p90 ms':>8s} {'min ms':>7s} "
          f"{'ratio':>6s} {'CPU ms/run':>11s} {'ratio':>6s}")
    for name, (xs, cpu) in rows:
        med = statistics.median(xs)
        # bubblewrap's own init reaps the candidate, so its CPU never reaches our rusage.
        cpu_txt = "   n/a        " if "+ bwrap" in name else f"{cpu:11.2f} {cpu / base_cpu:5.1f}x"
        print(f"{name:44s} {len(xs):5d} {med:10.2f} {p90(xs):8.2f} {min(xs):7.2f} "
              f"{med / base:5.1f}x {cpu_txt}")
    fresh = min(statistics.median(xs) for name, (xs, _) in rows if name.startswith("fresh"))
    print(f"\ngoal: fork-server median <= 10 ms: {'met' if base <= 10 else 'NOT met'} "
          f"({base:.2f} ms); >= 15x faster than a fresh interpreter: "
          f"{'met' if fresh / base >= 15 else 'NOT met'} ({fresh / base:.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
