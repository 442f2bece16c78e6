"""Framework overhead, side by side: OpenEvolve 0.4.0 vs `evoforge openevolve`, in one run.

    OPENEVOLVE_RUN=/tmp/oe-venv/bin/openevolve-run .venv/bin/python bench/openevolve_overhead.py \
        [--iterations 1000] [--parallel 2] [--problem ../shared/bench/overhead] [--skip-openevolve]

The problem is ../shared/bench/overhead (initial_program.py, a ~1 ms evaluator.py, config.yaml);
both systems get the stand-in LLM ../shared/tools/perturb_llm.py on a free loopback port (a fresh
server with the same --llm-seed for each) and the same files. OpenEvolve runs from its own venv
(`python3 -m venv /tmp/oe-venv && /tmp/oe-venv/bin/pip install openevolve==0.4.0`) on a temp copy
of the config whose llm.api_base points at the stand-in; EvoForge runs
`evoforge openevolve ... --llm-base-url` on the unmodified files with a fresh SQLite database.

Prints the wall time of each (process start to exit), the ratio, and EvoForge's per-100-iteration
timing from the commit timestamps in its database (Program.created_at): iterations 1-100,
101-200 and the last 100, to show the cost per iteration does not grow with the population.
OpenEvolve's per-100 timing comes from its programs' timestamps when it saves them.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
PERTURB = Path(os.environ.get("PERTURB_LLM", SHARED / "tools" / "perturb_llm.py"))
OE_RUN = os.environ.get("OPENEVOLVE_RUN", "/tmp/oe-venv/bin/openevolve-run")
EVOFORGE = os.environ.get("EVOFORGE", str(REPO / ".venv" / "bin" / "evoforge"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StandIn:
    """perturb_llm.py on a free loopback port, for the duration of a `with` block."""

    def __init__(self, seed: int):
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, str(PERTURB), "--port", str(self.port),
                                      "--seed", str(seed)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            self.proc.kill()
            raise RuntimeError("the stand-in LLM did not start")
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> "StandIn":
        return self

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait()


def oe_config(config: Path, url: str, out: Path, **top) -> Path:
    """A temp copy of the config with llm.api_base at the stand-in (and optional top-level keys)."""
    cfg = yaml.safe_load(config.read_text()) or {}
    cfg.setdefault("llm", {})["api_base"] = url
    cfg.update(top)
    path = out / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def run_openevolve(program: Path, evaluator: Path, config: Path, iterations: int, url: str,
                   workdir: Path, *, top: dict | None = None, timeout_s: float = 3600) -> dict:
    cfg = oe_config(config, url, workdir, **(top or {}))
    out_dir = workdir / "oe_output"
    env = dict(os.environ, OPENAI_API_KEY="x")
    t0 = time.perf_counter()
    proc = subprocess.run([OE_RUN, str(program), str(evaluator), "--config", str(cfg),
                           "--iterations", str(iterations), "--output", str(out_dir)],
                          env=env, capture_output=True, text=True, timeout=timeout_s,
                          cwd=str(workdir))
    wall = time.perf_counter() - t0
    res = {"system": "openevolve", "wall_s": round(wall, 2), "rc": proc.returncode}
    if proc.returncode != 0:
        res["stderr_tail"] = proc.stderr[-2000:]
    best = out_dir / "best" / "best_program_info.json"
    if best.exists():
        info = json.loads(best.read_text())
        res["best_score"] = (info.get("metrics") or {}).get("combined_score")
        res["best_metrics"] = info.get("metrics")
    programs = sorted(out_dir.glob("checkpoints/*/programs/*.json"))
    if programs:
        ckpt = max({p.parent.parent for p in programs}, key=lambda d: int(d.name.split("_")[-1]))
        rows = [json.loads(p.read_text()) for p in ckpt.glob("programs/*.json")]
        res["programs_kept"] = len(rows)  # its population after the run, not its evaluations
        res["timestamps"] = sorted(float(r["timestamp"]) for r in rows if r.get("timestamp"))
    return res


def run_evoforge(program: Path, evaluator: Path, config: Path, iterations: int, url: str,
                 workdir: Path, *, parallel: int, seed: int = 0, timeout_s: float = 3600,
                 extra: list[str] | None = None) -> dict:
    db = workdir / "evoforge.db"
    cmd = [EVOFORGE, "openevolve", str(program), str(evaluator), "--config", str(config),
           "--iterations", str(iterations), "--parallel", str(parallel), "--seed", str(seed),
           "--db", f"sqlite:///{db}", "--llm-base-url", url, "--json", *(extra or [])]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    wall = time.perf_counter() - t0
    res = {"system": "evoforge", "wall_s": round(wall, 2), "rc": proc.returncode}
    if proc.returncode != 0:
        res["stderr_tail"] = proc.stderr[-2000:]
        return res
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    res.update({k: summary.get(k) for k in ("campaign_id", "status", "error", "evaluations", "best_score", "seed_score",
                                            "sandbox_runs", "cache_hits", "failures", "rejected",
                                            "elapsed_s", "tokens")})
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT created_at FROM program WHERE campaign_id = ? ORDER BY created_at",
                           (summary["campaign_id"],)).fetchall()
    res["timestamps"] = [datetime.fromisoformat(r[0]).timestamp() for r in rows]
    return res


def windows(ts: list[float], size: int = 100) -> dict:
    """Seconds taken by commits 1-100, 101-200 and the last 100 (commit 0 is the seed)."""
    if len(ts) < 2 * size + 1:
        return {}
    first = ts[size] - ts[0]
    second = ts[2 * size] - ts[size]
    last = ts[-1] - ts[-1 - size]
    return {"first_100_s": round(first, 3), "second_100_s": round(second, 3),
            "last_100_s": round(last, 3), "last_over_first": round(last / first, 2),
            "last_over_second": round(last / second, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=1000)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--problem", type=Path, default=SHARED / "bench" / "overhead")
    ap.add_argument("--llm-seed", type=int, default=0)
    ap.add_argument("--skip-openevolve", action="store_true")
    ap.add_argument("--json", action="store_true", help="Print the raw results as JSON too.")
    args = ap.parse_args()
    program, evaluator, config = (args.problem / "initial_program.py", args.problem / "evaluator.py",
                                  args.problem / "config.yaml")
    results = []
    with tempfile.TemporaryDirectory(prefix="oe-overhead-") as tmp:
        tmp = Path(tmp)
        if not args.skip_openevolve:
            if not Path(OE_RUN).exists():
                sys.exit(f"{OE_RUN} not found: python3 -m venv /tmp/oe-venv && "
                         "/tmp/oe-venv/bin/pip install openevolve==0.4.0 (or set OPENEVOLVE_RUN)")
            (tmp / "oe").mkdir()
            with StandIn(args.llm_seed) as llm:
                results.append(run_openevolve(program, evaluator, config, args.iterations, llm.url,
                                              tmp / "oe"))
        (tmp / "ef").mkdir()
        with StandIn(args.llm_seed) as llm:
            results.append(run_evoforge(program, evaluator, config, args.iterations, llm.url,
                                        tmp / "ef", parallel=args.parallel))
    print(f"framework overhead: {args.problem.name}, {args.iterations} iterations, "
          f"{args.parallel} parallel, stand-in LLM seed {args.llm_seed}")
    print(f"{'system':12s} {'wall_s':>8s} {'evals':>6s} {'best':>8s}  per-100 (first / second / last)")
    print("  (openevolve's evals: not reported by it; its per-100 timing needs saved programs)")
    for r in results:
        w = windows(r.get("timestamps") or [])
        per = (f"{w['first_100_s']:.2f} / {w['second_100_s']:.2f} / {w['last_100_s']:.2f} s "
               f"(last/first {w['last_over_first']}, last/second {w['last_over_second']})") if w else "-"
        best = r.get("best_score")
        print(f"{r['system']:12s} {r['wall_s']:8.2f} {str(r.get('evaluations', '-')):>6s} "
              f"{(f'{best:.4f}' if isinstance(best, float) else '-'):>8s}  {per}")
        if r.get("rc"):
            print(f"  {r['system']} failed (rc {r['rc']}):\n{r.get('stderr_tail', '')}")
    if len(results) == 2 and results[1]["wall_s"]:
        print(f"ratio openevolve/evoforge wall time: {results[0]['wall_s'] / results[1]['wall_s']:.2f}x")
    if args.json:
        for r in results:
            r.pop("timestamps", None)
        print(json.dumps(results))


if __name__ == "__main__":
    main()
