"""Evaluation time per candidate for each built-in task: fork-server vs container, side by side.

    .venv/bin/python bench/task_eval_time.py [--repeat 3]
    (the container column needs podman's Docker API: `bash scripts/setup_podman.sh`)

Each cell is the median wall time of a full evaluation (probe + cascade) of the task's example
program, the trusted scoring included, with no cache.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from evoforge.evaluators.base import get_task, parse_params  # noqa: E402
from evoforge.evaluators.pipeline import CascadeEvaluator  # noqa: E402
from evoforge.sandbox import make_sandbox  # noqa: E402

CASES = [
    ("circle_packing", {}, "examples/circle_packing/seed.py"),
    ("matmul", {"n": 2, "m": 2, "p": 2}, "examples/matmul/strassen.py"),
    ("optimizer", {}, "examples/optimizer/adam.py"),
    ("alpha_factors", {}, "examples/alpha_factors/momentum_20d.py"),
]


def time_one(task, params, code: str, sandbox, repeat: int) -> tuple[float, str]:
    ev = CascadeEvaluator(task, params, sandbox)
    times, status = [], ""
    for _ in range(repeat):
        t0 = time.perf_counter()
        probe = ev.probe(code, 0)
        res = probe.failure or ev.evaluate(code, 0, probe)
        times.append(time.perf_counter() - t0)
        status = res.status
    return statistics.median(times), status


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    sandboxes = {"fork": make_sandbox("fork")}
    try:
        docker = make_sandbox("docker")
        docker.run("def f():\n    return 1\n", "f", [{}], timeout_s=60, memory_mb=256)
        sandboxes["container"] = docker
    except Exception as exc:  # no engine here: say so, still print the fork-server column
        print(f"(container sandbox unavailable: {exc})")
    print(f"{'task':16s} {'fork s':>8} {'container s':>12} {'ratio':>7}  status")
    for name, raw, path in CASES:
        task = get_task(name)
        params = parse_params(task, raw)
        code = (ROOT / path).read_text()
        row = {k: time_one(task, params, code, sb, a.repeat) for k, sb in sandboxes.items()}
        fork_s, st = row["fork"]
        cont = row.get("container")
        ratio = f"{cont[0] / fork_s:7.1f}" if cont else "      -"
        print(f"{name:16s} {fork_s:8.3f} {cont[0] if cont else float('nan'):12.3f} {ratio}  "
              f"{st}{'/' + cont[1] if cont else ''}")
    for sb in sandboxes.values():
        sb.close()


if __name__ == "__main__":
    main()
