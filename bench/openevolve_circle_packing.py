"""Real work, side by side: OpenEvolve's examples/circle_packing on OpenEvolve 0.4.0 and on EvoForge.

    OPENEVOLVE_EXAMPLES=/tmp/openevolve-src/examples .venv/bin/python bench/openevolve_circle_packing.py \
        [--iterations 200] [--seeds 1 2 3] [--parallel 2] [--skip-openevolve]

Get the examples (never committed here) with
    git clone https://github.com/algorithmicsuperintelligence/openevolve /tmp/openevolve-src
(or any checkout: only examples/circle_packing is read) and OpenEvolve itself with
    python3 -m venv /tmp/oe-venv && /tmp/oe-venv/bin/pip install openevolve==0.4.0

Both systems run the example's unmodified initial_program.py and evaluator.py with
config_phase_1.yaml, `diff_based_evolution: true` (OpenEvolve: a temp copy of the config with that
key and llm.api_base at the stand-in; EvoForge: the same temp copy, plus --llm-base-url), against
the stand-in LLM ../shared/tools/perturb_llm.py with --seed S, 2 parallel. Prints wall time,
evaluations and best combined_score per seed and system, and the medians.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from openevolve_overhead import OE_RUN, StandIn, oe_config, run_evoforge, run_openevolve  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--skip-openevolve", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    examples = os.environ.get("OPENEVOLVE_EXAMPLES")
    if not examples:
        sys.exit("set OPENEVOLVE_EXAMPLES to an OpenEvolve checkout's examples/ directory "
                 "(git clone https://github.com/algorithmicsuperintelligence/openevolve)")
    ex = Path(examples) / "circle_packing"
    program, evaluator, config = ex / "initial_program.py", ex / "evaluator.py", ex / "config_phase_1.yaml"
    if not args.skip_openevolve and not Path(OE_RUN).exists():
        sys.exit(f"{OE_RUN} not found (pip install openevolve==0.4.0 in /tmp/oe-venv, or set OPENEVOLVE_RUN)")
    rows = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory(prefix="oe-circles-") as tmp:
            tmp = Path(tmp)
            if not args.skip_openevolve:
                (tmp / "oe").mkdir()
                with StandIn(seed) as llm:
                    r = run_openevolve(program, evaluator, config, args.iterations, llm.url, tmp / "oe",
                                       top={"diff_based_evolution": True})
                r["seed"] = seed
                rows.append(r)
            (tmp / "ef").mkdir()
            with StandIn(seed) as llm:
                cfg = oe_config(config, llm.url, tmp / "ef", diff_based_evolution=True)
                r = run_evoforge(program, evaluator, cfg, args.iterations, llm.url, tmp / "ef",
                                 parallel=args.parallel, seed=seed)
            r["seed"] = seed
            rows.append(r)
    print(f"circle_packing (config_phase_1.yaml, diff_based_evolution true), {args.iterations} "
          f"iterations, {args.parallel} parallel")
    print(f"{'system':12s} {'seed':>4s} {'wall_s':>8s} {'evals':>6s} {'best combined_score':>20s}")
    for r in rows:
        best = r.get("best_score")
        print(f"{r['system']:12s} {r['seed']:4d} {r['wall_s']:8.2f} {str(r.get('evaluations', '-')):>6s} "
              f"{(f'{best:.4f}' if isinstance(best, float) else '-'):>20s}"
              + (f"  FAILED rc {r['rc']}: {r.get('stderr_tail', '')[-500:]}" if r.get("rc") else ""))
    for system in ("openevolve", "evoforge"):
        mine = [r for r in rows if r["system"] == system and not r.get("rc")]
        if mine:
            scores = [r["best_score"] for r in mine if isinstance(r.get("best_score"), float)]
            print(f"median {system:12s} wall {statistics.median(r['wall_s'] for r in mine):.2f} s, "
                  f"best combined_score {statistics.median(scores) if scores else float('nan'):.4f}")
    if args.json:
        for r in rows:
            r.pop("timestamps", None)
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
