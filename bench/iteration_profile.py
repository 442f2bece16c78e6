"""Where one iteration's CPU goes: `evoforge openevolve` on ../shared/bench/overhead, in-process.

    .venv/bin/python bench/iteration_profile.py [--iterations 500] [--parallel 2]

Runs the overhead problem (a ~1 ms evaluator) against a fresh stand-in LLM and reports, per
iteration, the CPU time (time.thread_time, so other threads and processes do not count) of each
part of the main process: the store's calls, the LLM request (in its own thread), the mutator
(prompt + diff), the sandbox client; then the process's own CPU and that of its children (the
fork-server, every candidate it forked, all reaped) per iteration. Wrapping costs ~2 us a call.
This is the table behind the "where the time goes" paragraph of docs/openevolve.md.
"""
from __future__ import annotations

import argparse
import collections
import functools
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from openevolve_overhead import SHARED, StandIn  # noqa: E402

ACC: collections.Counter = collections.Counter()
CALLS: collections.Counter = collections.Counter()


def wrap(owner, name: str, label: str) -> None:
    fn = getattr(owner, name)

    @functools.wraps(fn)
    def timed(*a, **kw):
        t = time.thread_time()
        try:
            return fn(*a, **kw)
        finally:
            ACC[label] += time.thread_time() - t
            CALLS[label] += 1

    setattr(owner, name, timed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=500)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--problem", type=Path, default=SHARED / "bench" / "overhead")
    args = ap.parse_args()

    from evoforge.db.store import CampaignStore
    from evoforge.evaluators.pipeline import CascadeEvaluator
    from evoforge.evolution.llm_mutator import LLMMutator
    from evoforge.worker.embedded import EmbeddedExecutor
    from evoforge.worker.llm_client import OpenAIClient

    for n in ("select", "lookup", "commit"):
        wrap(CampaignStore, n, f"store.{n}")
    wrap(EmbeddedExecutor, "_next_iteration", "store: reserve the iteration")
    wrap(OpenAIClient, "_post_chat", "LLM request (its own thread)")
    wrap(LLMMutator, "mutate", "mutator: prompt + diff (+ waiting on the LLM thread)")
    wrap(CascadeEvaluator, "probe", "sandbox client (request, answer)")

    from evoforge.cli.main import main as cli

    with StandIn(0) as llm, tempfile.TemporaryDirectory() as tmp:
        argv = ["openevolve", str(args.problem / "initial_program.py"),
                str(args.problem / "evaluator.py"), "--config", str(args.problem / "config.yaml"),
                "--iterations", str(args.iterations), "--parallel", str(args.parallel),
                "--seed", "0", "--db", f"sqlite:///{tmp}/profile.db", "--llm-base-url", llm.url,
                "--json"]
        t0 = time.perf_counter()
        try:
            cli.main(argv, standalone_mode=False)
        except SystemExit:
            pass
        wall = time.perf_counter() - t0
        # read before the stand-in exits: only the fork-server (closed by the command) counts
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    n = max(1, args.iterations)
    print(f"\n{args.iterations} iterations, --parallel {args.parallel}: wall {wall:.2f} s "
          f"(start-up included)")
    print(f"{'part':58s} {'CPU ms / iteration':>20s}")
    for label in sorted(ACC, key=lambda k: -ACC[k]):
        print(f"{label:58s} {ACC[label] / n * 1e3:20.3f}")
    print(f"{'main process, all threads (start-up included)':58s} "
          f"{(me.ru_utime + me.ru_stime) / n * 1e3:20.3f}")
    print(f"{'sandbox: fork-server + candidates (reaped children)':58s} "
          f"{(kids.ru_utime + kids.ru_stime) / n * 1e3:20.3f}  "
          f"(user {kids.ru_utime / n * 1e3:.2f}, sys {kids.ru_stime / n * 1e3:.2f})")


if __name__ == "__main__":
    main()
