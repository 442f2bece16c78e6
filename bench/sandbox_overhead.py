"""Per-candidate sandbox overhead: warm fork-server vs a fresh interpreter, side by side.

    .venv/bin/python bench/sandbox_overhead.py [--runs 200] [--fresh-runs 30]
        [--baseline GIT_REV] [--load N]

The candidate is trivial (`def f(): return 1`), so every millisecond measured is sandbox
overhead: isolation set-up, interpreter or fork, the result channel and tear-down, as seen by
the caller of run(). Needs root (see docs/sandbox.md).

--baseline REV also measures the fork-server of that git revision (its sandbox/ extracted to a
temporary directory and run in a subprocess), side by side with the working tree's.
--load N repeats the fork-server rows while N busy-looping processes compete for the CPUs.
"CPU ms/run" is the CPU of the caller, the server and every sandbox process (rusage); "kthread"
is CPU used meanwhile by kernel threads (namespace clean-up runs there; other load counts too).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

# Run as a copy inside an extracted baseline tree (--json-fork), the tree is the script's dir.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE if os.path.isdir(os.path.join(_HERE, "sandbox")) else
                os.path.dirname(_HERE))

from evoforge.sandbox import make_sandbox  # noqa: E402

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


def kthread_cpu_s() -> float:
    """CPU seconds of all kernel threads so far (children of kthreadd, pid 2)."""
    total = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == "2":
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def measure(sb, runs: int, warmup: int = 3) -> tuple[list[float], float, float]:
    """Wall ms of each run(), CPU ms per run of the process tree, kernel-thread CPU ms per run."""
    for _ in range(warmup):
        assert sb.run(CODE, "f", [{}]).outputs == [1]
    server = getattr(sb, "server_pid", lambda: None)()
    times, c0, k0 = [], cpu_s(server), kthread_cpu_s()
    for _ in range(runs):
        t0 = time.perf_counter()
        r = sb.run(CODE, "f", [{}])
        times.append((time.perf_counter() - t0) * 1000)
        assert r.ok, r
    time.sleep(1.5)  # let the server reap the last sandbox processes
    return times, (cpu_s(server) - c0) * 1000 / runs, (kthread_cpu_s() - k0) * 1000 / runs


def fork_rows(runs: int, label: str = "") -> list:
    rows = []
    with make_sandbox("fork") as fork:
        fork.start()
        rows.append((f"fork-server{label} (numpy, default)", measure(fork, runs)))
    return rows


def baseline_rows(rev: str, runs: int, label: str) -> list:
    """The fork-server of git revision `rev`, measured in a subprocess on its own sandbox/."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with tempfile.TemporaryDirectory(prefix="evoforge-baseline-") as tmp:
        archive = subprocess.run(["git", "-C", repo, "archive", rev, "sandbox"],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        shutil.copy(os.path.abspath(__file__), os.path.join(tmp, "bench.py"))
        out = subprocess.run([sys.executable, os.path.join(tmp, "bench.py"), "--json-fork",
                              "--runs", str(runs)], check=True, capture_output=True,
                             text=True, cwd=tmp).stdout
    short = subprocess.run(["git", "-C", repo, "rev-parse", "--short", rev],
                           capture_output=True, text=True).stdout.strip() or rev
    return [(f"fork-server @{short}{label}", tuple(json.loads(out.splitlines()[-1])))]


class Load:
    """N busy-looping processes, for the 'under load' rows."""

    def __init__(self, n: int):
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                      for _ in range(n)]

    def __enter__(self) -> "Load":
        time.sleep(0.5)
        return self

    def __exit__(self, *exc) -> None:
        for p in self.procs:
            p.kill()
            p.wait()


def p90(xs: list[float]) -> float:
    return sorted(xs)[max(0, int(round(0.9 * len(xs))) - 1)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200, help="runs per fork-server variant")
    ap.add_argument("--fresh-runs", type=int, default=30, help="runs per fresh-interpreter variant")
    ap.add_argument("--baseline", metavar="GIT_REV",
                    help="also measure the fork-server of this git revision")
    ap.add_argument("--load", type=int, default=0, metavar="N",
                    help="repeat the fork-server rows under N busy-looping processes")
    ap.add_argument("--json-fork", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root: the sandboxes switch to unprivileged uids", file=sys.stderr)
        return 2
    if args.json_fork:  # inside a baseline tree: one row as JSON
        print(json.dumps(fork_rows(args.runs)[0][1]))
        return 0

    rows = fork_rows(args.runs)
    if args.baseline:
        rows += baseline_rows(args.baseline, args.runs, "")
    from evoforge.sandbox import SCIPY_PRELOAD  # not in older trees: only the working tree's row

    with make_sandbox("fork", preload=SCIPY_PRELOAD) as fork:
        fork.start()
        rows.append(("fork-server (numpy + scipy preloaded)", measure(fork, args.runs)))
    rows.append(("fresh interpreter (subprocess, no bwrap)",
                 measure(make_sandbox("subprocess", use_bwrap=False), args.fresh_runs,
                         warmup=1)))
    if shutil.which("bwrap"):
        rows.append(("fresh interpreter (subprocess + bwrap)",
                     measure(make_sandbox("bwrap"), args.fresh_runs, warmup=1)))
    if args.load:
        label = f", {args.load} busy loops"
        with Load(args.load):
            rows += fork_rows(args.runs, label)
            if args.baseline:
                rows += baseline_rows(args.baseline, args.runs, label)

    base = statistics.median(rows[0][1][0])
    base_cpu = rows[0][1][1]
    print(f"sandbox overhead per candidate, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f}")
    print(f"{'runner':50s} {'runs':>5s} {'median ms':>10s} {'p90 ms':>8s} {'min ms':>7s} "
          f"{'ratio':>6s} {'CPU ms/run':>11s} {'ratio':>6s} {'kthread ms':>10s}")
    for name, (xs, cpu, kcpu) in rows:
        med = statistics.median(xs)
        # bubblewrap's own init reaps the candidate, so its CPU never reaches our rusage.
        cpu_txt = "   n/a        " if "+ bwrap" in name else f"{cpu:11.2f} {cpu / base_cpu:5.1f}x"
        print(f"{name:50s} {len(xs):5d} {med:10.2f} {p90(xs):8.2f} {min(xs):7.2f} "
              f"{med / base:5.1f}x {cpu_txt} {kcpu:10.2f}")
    fresh = min(statistics.median(r[0]) for name, r in rows if name.startswith("fresh"))
    print(f"\ngoal: fork-server median <= 10 ms: {'met' if base <= 10 else 'NOT met'} "
          f"({base:.2f} ms); >= 15x faster than a fresh interpreter: "
          f"{'met' if fresh / base >= 15 else 'NOT met'} ({fresh / base:.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
