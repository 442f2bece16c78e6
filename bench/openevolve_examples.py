"""OpenEvolve's example shelf, side by side: every offline example, a few iterations each, on
OpenEvolve 0.4.0 and on EvoForge, with the same stand-in LLM.

    OPENEVOLVE_EXAMPLES=/path/to/openevolve/examples \\
    OPENEVOLVE_RUN=/tmp/oe-venv/bin/openevolve-run \\
        .venv/bin/python bench/openevolve_examples.py [--iterations 10] [--timeout 900] \\
        [--only NAME ...] [--skip-openevolve] [--markdown OUT.md] [--json OUT.json]

Get the examples (never committed here) from a checkout of
https://github.com/algorithmicsuperintelligence/openevolve and OpenEvolve itself with
`python3 -m venv /tmp/oe-venv && /tmp/oe-venv/bin/pip install openevolve==0.4.0`.

A problem is a directory with `evaluator.py` and `initial_program.*`. Both systems run its
unmodified files and `config.yaml`: OpenEvolve on a temp copy of the config whose `llm.api_base`
points at the stand-in (../shared/tools/perturb_llm.py, a fresh server per run); EvoForge as
`evoforge openevolve DIR/initial_program.* DIR/evaluator.py --config DIR/config.yaml
--llm-base-url URL`, on a fresh SQLite database. Problems that need what this machine cannot
give (the network, a GPU, Apple hardware, an LLM inside the evaluator) are listed with the
reason and not run; a problem whose toolchain (cargo, Rscript) or Python requirements are
missing for one system is reported as such for that system.

Per problem and system the table says: whether it ran (the seed was evaluated and the run
ended), the seed's fitness and the best fitness (OpenEvolve's rule: `combined_score`, else the
mean of the numeric non-feature metrics), the wall time, and why anything did not run.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from openevolve_overhead import EVOFORGE, OE_RUN, StandIn, oe_config  # noqa: E402

# What the examples need beyond this machine (checked by reading each example's README and
# evaluator). Keyed by the problem's path under examples/.
NEEDS = {
    "arc_benchmark": "the ARC-AGI dataset, downloaded (network)",
    "attention_optimization": "the MLIR toolchain (mlir-opt) and its Python bindings",
    "llm_prompt_optimization": "an LLM inside the evaluator and HuggingFace datasets (network)",
    "mlx_metal_kernel_opt": "Apple silicon (MLX, Metal GPU)",
    "online_judge_programming": "the Kattis online judge (network)",
    "sldbench": "the SLDBench data from HuggingFace (network)",
    "web_scraper_optillm": "live web pages and an optillm proxy (network)",
    "lm_eval": "an LLM inside the evaluator (lm-evaluation-harness)",
    "symbolic_regression": "the LLM-SRBench dataset (network)",
}
TOOLCHAINS = {".rs": ("cargo", "rustc"), ".r": ("Rscript",), ".R": ("Rscript",),
              ".cpp": ("g++",), ".cc": ("g++",), ".c": ("gcc",), ".go": ("go",),
              ".jl": ("julia",)}
PIP_TO_MODULE = {"scikit-learn": "sklearn", "pyyaml": "yaml", "pillow": "PIL", "beautifulsoup4": "bs4",
                 "pywavelets": "pywt", "python-sat": "pysat", "faiss-cpu": "faiss", "jaxlib": "jaxlib",
                 "google-generativeai": "google.generativeai", "lm-eval": "lm_eval", "pot": "ot",
                 "mlx-lm": "mlx_lm", "ortools": "ortools", "pyaml": "yaml"}


def problems(root: Path) -> list[tuple[str, Path | None]]:
    """(name, directory or None when it has no evaluator.py) for every example problem."""
    out: list[tuple[str, Path | None]] = []
    for ev in sorted(root.rglob("evaluator.py")):
        d = ev.parent
        if any(p.name.startswith(("initial_program", "init_program")) for p in d.iterdir()):
            out.append((str(d.relative_to(root)), d))
    seen = {name.split("/")[0] for name, _ in out}
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        if d.name not in seen:
            out.append((d.name, None))
    return out


def seed_file(d: Path) -> Path | None:
    for p in sorted(d.iterdir()):
        if p.is_file() and p.name.startswith("initial_program"):
            return p
    return None


def requirements(d: Path) -> list[str]:
    req = d / "requirements.txt"
    if not req.is_file():
        return []
    names = []
    for line in req.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            names.append(re.split(r"[<>=!~;\[ ]", line, maxsplit=1)[0].strip())
    return [n for n in names if n]


def missing_modules(python: str, names: list[str]) -> list[str]:
    mods = {n: PIP_TO_MODULE.get(n.lower(), n.replace("-", "_")) for n in names}
    code = ("import importlib.util, json, sys\n"
            "print(json.dumps([n for n, m in json.loads(sys.argv[1]).items()"
            " if importlib.util.find_spec(m.split('.')[0]) is None]))")
    out = subprocess.run([python, "-c", code, json.dumps(mods)], capture_output=True, text=True)
    return json.loads(out.stdout or "[]")


def toolchain_missing(seed: Path) -> list[str]:
    path = os.environ.get("PATH", "") + os.pathsep + str(Path.home() / ".cargo" / "bin")
    return [t for t in TOOLCHAINS.get(seed.suffix, ()) if shutil.which(t, path=path) is None]


def fitness(metrics: dict | None, features: list[str]) -> float | None:
    from evoforge.evaluators.openevolve.task import fitness as oe_fitness
    return None if not metrics else round(oe_fitness(metrics, features), 6)


def feature_dims(config: Path | None) -> list[str]:
    if config is None or not config.is_file():
        return []
    cfg = yaml.safe_load(config.read_text()) or {}
    return [str(d) for d in ((cfg.get("database") or {}).get("feature_dimensions") or [])]


def logged_seed_metrics(out_dir: Path) -> dict | None:
    """The seed's metrics from OpenEvolve's log (4 decimals): the first "Evaluated program"
    line after "Adding initial program"."""
    for log in sorted(out_dir.glob("logs/*.log")):
        text = log.read_text(errors="replace")
        at = text.find("Adding initial program to database")
        m = re.search(r"Evaluated program \S+ in [\d.]+s: (.*)", text[at:]) if at >= 0 else None
        if m:
            pairs = (kv.split("=", 1) for kv in m.group(1).split(", ") if "=" in kv)
            out = {}
            for k, v in pairs:
                try:
                    out[k.strip()] = float(v)
                except ValueError:
                    out[k.strip()] = v
            return out
    return None


def run_openevolve(d: Path, seed: Path, config: Path | None, iterations: int, url: str,
                   work: Path, timeout_s: float) -> dict:
    if config:
        cfg = oe_config(config, url, work, checkpoint_interval=iterations)  # a final checkpoint
    else:
        cfg = work / "config.yaml"
        cfg.write_text(yaml.safe_dump({"llm": {"api_base": url}, "checkpoint_interval": iterations}))
    out_dir = work / "oe_output"
    env = dict(os.environ, OPENAI_API_KEY="x")
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([OE_RUN, str(seed), str(d / "evaluator.py"), "--config", str(cfg),
                               "--iterations", str(iterations), "--output", str(out_dir)],
                              env=env, capture_output=True, text=True, timeout=timeout_s, cwd=str(d))
        rc, tail = proc.returncode, (proc.stderr or proc.stdout)[-600:]
    except subprocess.TimeoutExpired:
        rc, tail = None, f"no end after {timeout_s:.0f} s"
    res: dict = {"wall_s": round(time.perf_counter() - t0, 1), "rc": rc}
    feats = feature_dims(config)
    progs = sorted(out_dir.glob("checkpoints/*/programs/*.json"))
    if progs:
        last = max({p.parent.parent for p in progs}, key=lambda p: int(p.name.split("_")[-1]))
        rows = [json.loads(p.read_text()) for p in last.glob("programs/*.json")]
        seeds = [r for r in rows if r.get("parent_id") is None]
        if seeds:
            res["seed_score"] = fitness(seeds[0].get("metrics"), feats)
        res["best_score"] = max((fitness(r.get("metrics"), feats) or 0.0 for r in rows), default=None)
    if res.get("seed_score") is None:
        res["seed_score"] = fitness(logged_seed_metrics(out_dir), feats)
    best = out_dir / "best" / "best_program_info.json"
    if best.is_file() and res.get("best_score") is None:
        res["best_score"] = fitness(json.loads(best.read_text()).get("metrics"), feats)
    res["ran"] = rc == 0 and res.get("seed_score") is not None
    if not res["ran"]:
        res["why"] = (tail.strip().splitlines() or ["no programs saved"])[-1][:200] if rc is not None else tail
    return res


def run_evoforge(d: Path, seed: Path, config: Path | None, iterations: int, url: str,
                 work: Path, timeout_s: float) -> dict:
    cmd = [EVOFORGE, "openevolve", str(seed), str(d / "evaluator.py"),
           "--iterations", str(iterations), "--db", f"sqlite:///{work / 'evoforge.db'}",
           "--llm-base-url", url, "--json"]
    if config:
        cmd[4:4] = ["--config", str(config)]
    env = dict(os.environ)
    homes = [str(p) for p in (Path.home() / ".cargo", Path.home() / ".rustup") if p.is_dir()]
    if homes and "EVOFORGE_SANDBOX_TOOLCHAINS" not in env:  # docs/sandbox.md "Toolchains"
        env["EVOFORGE_SANDBOX_TOOLCHAINS"] = os.pathsep.join(homes)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=str(work),
                              env=env)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        return {"wall_s": round(time.perf_counter() - t0, 1), "ran": False,
                "why": f"no end after {timeout_s:.0f} s"}
    res: dict = {"wall_s": round(time.perf_counter() - t0, 1), "rc": rc}
    try:
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        res.update(ran=False, why=(proc.stderr.strip().splitlines() or ["no output"])[-1][:200])
        return res
    res.update(status=summary.get("status"), seed_score=summary.get("seed_score"),
               best_score=summary.get("best_score"), evaluations=summary.get("evaluations"),
               failures=summary.get("failures"))
    res["ran"] = summary.get("status") == "completed" and summary.get("seed_score") is not None
    if not res["ran"]:
        res["why"] = str(summary.get("error") or summary.get("status"))[:200]
    return res


def fmt(x) -> str:
    return "" if x is None else f"{x:.6g}" if isinstance(x, float) else str(x)


def markdown(rows: list[dict], iterations: int) -> str:
    out = [f"| example | EvoForge: runs | seed | best | s | OpenEvolve 0.4.0: runs | seed | best | s | notes |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        e, o = r.get("evoforge") or {}, r.get("openevolve") or {}
        cell = lambda res: ("yes" if res.get("ran") else "no" if res else "")  # noqa: E731
        notes = "; ".join(x for x in (r.get("skip"), e.get("why") and f"EvoForge: {e['why']}",
                                      o.get("why") and f"OpenEvolve: {o['why']}") if x)
        out.append(f"| {r['name']} | {cell(e)} | {fmt(e.get('seed_score'))} | {fmt(e.get('best_score'))} "
                   f"| {fmt(e.get('wall_s'))} | {cell(o)} | {fmt(o.get('seed_score'))} "
                   f"| {fmt(o.get('best_score'))} | {fmt(o.get('wall_s'))} | {notes.replace('|', '/')} |")
    both = sum(1 for r in rows if (r.get("evoforge") or {}).get("ran") and (r.get("openevolve") or {}).get("ran"))
    evo = sum(1 for r in rows if (r.get("evoforge") or {}).get("ran") and not (r.get("openevolve") or {}).get("ran"))
    oe = sum(1 for r in rows if (r.get("openevolve") or {}).get("ran") and not (r.get("evoforge") or {}).get("ran"))
    skipped = sum(1 for r in rows if r.get("skip"))
    neither = len(rows) - both - evo - oe - skipped
    out.append("")
    out.append(f"{len(rows)} problems, {iterations} iterations each: {both} run on both, {evo} only on "
               f"EvoForge, {oe} only on OpenEvolve, {neither} on neither, {skipped} need what this "
               "machine cannot give.")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--timeout", type=float, default=900, help="per problem, EvoForge, seconds")
    ap.add_argument("--oe-timeout", type=float, default=None,
                    help="per problem, OpenEvolve (default: --timeout); it deadlocks on some")
    ap.add_argument("--only", nargs="*", default=None, help="problem names (substrings)")
    ap.add_argument("--skip-openevolve", action="store_true")
    ap.add_argument("--markdown", type=Path, default=None)
    ap.add_argument("--json", dest="json_out", type=Path, default=None)
    ap.add_argument("--rows", type=Path, default=None,
                    help="JSON lines of an earlier run: kept for problems not run again")
    args = ap.parse_args()
    root = Path(os.environ.get("OPENEVOLVE_EXAMPLES", ""))
    if not (root / "circle_packing").is_dir():
        sys.exit("set OPENEVOLVE_EXAMPLES to OpenEvolve's examples/ directory")
    oe_python = str(Path(OE_RUN).with_name("python"))
    rows = []
    for name, d in problems(root):
        if args.only and not any(o in name for o in args.only):
            continue
        row: dict = {"name": name}
        rows.append(row)
        top = name.split("/")[0]
        if d is None or top in NEEDS:
            row["skip"] = NEEDS.get(top, "no evaluator.py")
            print(f"{name}: skipped ({row['skip']})", flush=True)
            continue
        seed = seed_file(d)
        if seed is None:  # tsp_tour_minimization: its initial_program is a directory
            row["skip"] = "no initial_program.* file (initial_program/ is a directory)"
            print(f"{name}: skipped ({row['skip']})", flush=True)
            continue
        config = d / "config.yaml" if (d / "config.yaml").is_file() else None
        reqs = requirements(d)
        tools = toolchain_missing(seed)
        for system, python, run, limit in (
                ("evoforge", sys.executable, run_evoforge, args.timeout),
                ("openevolve", oe_python, run_openevolve, args.oe_timeout or args.timeout)):
            if system == "openevolve" and args.skip_openevolve:
                continue
            missing = missing_modules(python, reqs) + tools
            if missing:
                row[system] = {"ran": False, "why": "missing: " + ", ".join(missing)}
                continue
            with tempfile.TemporaryDirectory(prefix=f"oe-shelf-{system}-") as tmp, StandIn(seed=0) as llm:
                row[system] = run(d, seed, config, args.iterations, llm.url, Path(tmp), limit)
        print(json.dumps(row), flush=True)
    if args.rows:  # an earlier run's rows for the problems not run this time, in shelf order
        done = {r["name"] for r in rows}
        earlier = {r["name"]: r for r in map(json.loads, args.rows.read_text().splitlines())
                   if r["name"] not in done}
        order = [name for name, _ in problems(root)]
        rows = sorted(rows + list(earlier.values()),
                      key=lambda r: order.index(r["name"]) if r["name"] in order else len(order))
    table = markdown(rows, args.iterations)
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n")
    if args.json_out:
        args.json_out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
