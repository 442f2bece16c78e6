"""OpenEvolve's semantics in EvoForge: awaited async evaluators, the merged cascade fitness,
non-Python candidates end to end, files in subdirectories, and the config keys users set.

Real parts: the fork-server sandbox runs the evaluators; the bash-candidate campaign runs
through `evoforge openevolve` (a real process, a real SQLite database, the local mutator).
"""
from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from evoforge.evaluators.base import get_task
from evoforge.evaluators.openevolve import TASK, load_problem
from evoforge.evaluators.openevolve.config import map_problem
from evoforge.evaluators.openevolve.package import package_from_files
from evoforge.evaluators.openevolve.task import merged_metrics, passes_threshold
from evoforge.evaluators.pipeline import CascadeEvaluator
from evoforge.evolution.ast_mutator import LocalASTMutator
from evoforge.evolution.diff import apply_reply
from evoforge.evolution.program import evolvable_regions, syntax_check
from evoforge.evolution.step import Selection
from evoforge.evolution.text_mutator import literal_sites
from evoforge.evolution.types import ProgramRef

ROOT = Path(__file__).resolve().parents[2]


def write(d: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_text(text)
    return d


def evaluate(prob, sandbox, code: str | None = None):
    params = TASK.Params.model_validate(prob.task_params)
    ev = CascadeEvaluator(get_task("openevolve"), params, sandbox)
    code = code if code is not None else prob.seed_program
    probe = ev.probe(code, 0)
    return probe.failure if probe.failure is not None else ev.evaluate(code, 0, probe)


SEED = "# EVOLVE-BLOCK-START\nX = 3.0\n# EVOLVE-BLOCK-END\n"

THREE_STAGES = '''
import importlib.util

def _x(path):
    spec = importlib.util.spec_from_file_location("p", path)
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
    return m.X

def evaluate_stage1(path):
    return {"a": _x(path), "flag": True, "error": 5.0, "note": "stage one"}

def evaluate_stage2(path):
    return {"b": 2.0 * _x(path), "a": 1.0}

def evaluate_stage3(path):
    return {"c": 10.0, "feat": 100.0}
'''


def test_cascade_fitness_merges_every_stage_as_openevolve_does(tmp_path, fork_sandbox):
    d = write(tmp_path, {"initial_program.py": SEED, "evaluator.py": THREE_STAGES,
                         "config.yaml": "evaluator: {cascade_thresholds: [0.5, 0.5]}\n"
                                        "database: {feature_dimensions: [complexity, feat]}\n"})
    prob = load_problem(d / "initial_program.py", d / "evaluator.py", d / "config.yaml")
    assert prob.task_params["stages"] == ["evaluate_stage1", "evaluate_stage2", "evaluate_stage3"]
    r = evaluate(prob, fork_sandbox)
    assert r.status == "ok", r.artifacts
    # stages merged: numeric as floats (the bool too), `error` and strings dropped, later wins:
    # {a: 1, flag: 1, b: 6, c: 10, feat: 100}; `feat` is a feature dimension, out of the mean.
    assert r.score == pytest.approx((1.0 + 1.0 + 6.0 + 10.0) / 4)
    assert r.features == {"feat": 100.0}
    # The last stage's own metrics alone would give 10.0 (what EvoForge scored before).
    assert r.score != pytest.approx(10.0)


def test_cascade_stops_where_openevolve_stops(tmp_path, fork_sandbox):
    # Stage 1 alone: {a: 0.2, flag: True}: its threshold mean counts the bool (0.6 >= 0.5, go
    # on), while the fitness of stage 1 alone would not (0.2).
    d = write(tmp_path, {"initial_program.py": SEED.replace("3.0", "0.2"),
                         "evaluator.py": THREE_STAGES.replace('"error": 5.0, ', ""),
                         "config.yaml": "evaluator: {cascade_thresholds: [0.5, 100.0]}\n"})
    prob = load_problem(d / "initial_program.py", d / "evaluator.py", d / "config.yaml")
    r = evaluate(prob, fork_sandbox)
    assert r.status == "ok"
    assert r.artifacts.get("cascade_stopped_at") == "evaluate_stage2"   # 100.0 not reached
    assert "c" not in r.metrics
    assert r.score == pytest.approx((1.0 + 1.0 + 0.4) / 3)
    assert passes_threshold({"a": 0.2, "flag": True}, 0.5)
    assert not passes_threshold({"error": 9.0}, 0.5)
    assert merged_metrics([{"x": True, "s": "t"}]) == {"x": True, "s": "t"}  # one stage: as is


ASYNC_EVALUATOR = '''
import asyncio, importlib.util, json, os

async def evaluate(path):
    await asyncio.sleep(0)
    with open(os.path.join("data", "deep", "target.json")) as f:
        target = json.load(f)["target"]
    spec = importlib.util.spec_from_file_location("p", path)
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
    return {"combined_score": -abs(m.X - target), "suffix": os.path.splitext(path)[1]}
'''


def test_async_evaluate_is_awaited_and_subdirectories_are_shipped(tmp_path, fork_sandbox):
    d = write(tmp_path, {"initial_program.py": SEED, "evaluator.py": ASYNC_EVALUATOR,
                         "data/deep/target.json": '{"target": 5.0}'})
    prob = load_problem(d / "initial_program.py", d / "evaluator.py")
    assert "data/deep/target.json" in prob.shipped
    r = evaluate(prob, fork_sandbox)
    assert r.status == "ok", r.artifacts
    assert r.score == pytest.approx(-2.0) and r.metrics["suffix"] == ".py"


def test_driver_refuses_paths_that_escape(tmp_path, fork_sandbox):
    d = write(tmp_path, {"initial_program.py": SEED, "evaluator.py": ASYNC_EVALUATOR,
                         "data/deep/target.json": '{"target": 5.0}'})
    prob = load_problem(d / "initial_program.py", d / "evaluator.py")
    params = TASK.Params.model_validate(prob.task_params)
    calls = TASK.probe(params)
    evil = {**calls[0], "files": {**calls[0]["files"], "../escape.txt": "x", "/tmp/abs.txt": "x",
                                  "data/.hidden": "x"}}
    run = fork_sandbox.run(prob.seed_program, "evaluate", [evil], seed=0, timeout_s=20,
                           memory_mb=1024, driver=TASK.driver)
    assert run.ok, run.reason  # the bad paths are skipped, the rest runs
    assert not (tmp_path / "escape.txt").exists() and not Path("/tmp/abs.txt").exists()
    with pytest.raises(ValueError):
        TASK.Params.model_validate({**prob.task_params, "evaluator": "../evaluator.py"})


def test_max_code_length_fails_a_long_candidate_before_it_runs(tmp_path, fork_sandbox):
    d = write(tmp_path, {"initial_program.py": SEED, "evaluator.py": ASYNC_EVALUATOR,
                         "data/deep/target.json": '{"target": 5.0}',
                         "config.yaml": "max_code_length: 60\n"})
    prob = load_problem(d / "initial_program.py", d / "evaluator.py", d / "config.yaml")
    assert evaluate(prob, fork_sandbox).status == "ok"
    long = SEED.replace("X = 3.0", "X = 3.0  # " + "padding " * 10)
    r = evaluate(prob, fork_sandbox, long)
    assert r.status == "error" and "max_code_length 60" in r.artifacts["reason"]


FLAKY = '''
import os
def evaluate(path):
    mark = os.path.join(os.environ.get("TMPDIR", "/tmp"), "tried")
    if not os.path.exists(mark):
        open(mark, "w").close()
        raise RuntimeError("flaky")
    return {"combined_score": 1.0}
'''


def test_evaluator_max_retries_retries_an_exception(tmp_path, fork_sandbox):
    d = write(tmp_path, {"initial_program.py": SEED, "evaluator.py": FLAKY,
                         "config.yaml": "evaluator: {max_retries: 1}\n"})
    assert evaluate(load_problem(d / "initial_program.py", d / "evaluator.py", d / "config.yaml"),
                    fork_sandbox).score == 1.0
    (d / "config.yaml").write_text("evaluator: {max_retries: 0}\n")
    r = evaluate(load_problem(d / "initial_program.py", d / "evaluator.py", d / "config.yaml"),
                 fork_sandbox)
    assert r.status == "error" and "flaky" in r.artifacts["reason"]


# ------------------------------------------------------------------ non-Python candidates

BASH_SEED = """#!/bin/bash
# EVOLVE-BLOCK-START
x=3.5
# EVOLVE-BLOCK-END
echo "$x"
"""

BASH_EVALUATOR = '''
import subprocess

def evaluate(program_path):
    out = subprocess.run(["bash", program_path], capture_output=True, text=True, timeout=10)
    x = float(out.stdout.strip())
    return {"combined_score": 1.0 / (1.0 + abs(x - 10.0)), "x": x}
'''


def test_a_bash_candidate_evolves_with_the_local_mutator(tmp_path):
    d = write(tmp_path, {"initial_program.sh": BASH_SEED, "evaluator.py": BASH_EVALUATOR,
                         "config.yaml": "file_suffix: .sh\n"})
    assert syntax_check(BASH_SEED) is not None  # not Python: it must never be parsed as such
    db = tmp_path / "oe.db"
    cmd = [sys.executable, "-m", "evoforge.cli", "openevolve", str(d / "initial_program.sh"),
           str(d / "evaluator.py"), "--config", str(d / "config.yaml"), "--iterations", "5",
           "--db", f"sqlite:///{db}", "--json"]
    env = dict(os.environ, EVOFORGE_HOME=str(tmp_path / "home"))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["evaluations"] == 6 and out["mutator"] == "local"
    assert out["seed_score"] == pytest.approx(1.0 / 7.5)
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT e.status, e.artifacts FROM evaluation e").fetchall()
    assert len(rows) >= 1
    assert not [a for _, a in rows if a and "SyntaxError" in a]
    assert all(status == "ok" for status, _ in rows), rows


def test_markers_in_other_comment_styles_and_text_mutation():
    rust = ("fn main() {\n    // EVOLVE-BLOCK-START\n    let k = 0.5; let n = 10usize;\n"
            "    let r = 0..4; let s = \"7\";\n    /* EVOLVE-BLOCK-END */\n    let fixed = 2.0;\n}\n")
    (region,) = evolvable_regions(rust)
    assert rust[region.start:region.end].strip().startswith("let k")
    assert [rust[a:b] for a, b in literal_sites(rust)] == ["0.5"]
    for marker in ("-- EVOLVE-BLOCK-START", "% EVOLVE-BLOCK-START", "; EVOLVE-BLOCK-START"):
        code = f"{marker}\nx = 1\n{marker.replace('START', 'END')}\ny = 2\n"
        assert len(evolvable_regions(code)) == 1
    mut = LocalASTMutator(language="rust")
    parent = ProgramRef(id=1, code=rust, score=1.0, status="ok", island=0, generation=0)
    a = mut.mutate(Selection(island=0, parent=parent), random.Random(3))
    b = mut.mutate(Selection(island=0, parent=parent), random.Random(3))
    assert a.code == b.code and a.kind == "text:const"   # deterministic per rng
    assert a.code.endswith("    let fixed = 2.0;\n}\n") and "0.5;" not in a.code
    # An LLM edit of a Rust program is not rejected as a Python syntax error.
    reply = ("<<<<<<< SEARCH\n    let k = 0.5; let n = 10usize;\n=======\n"
             "    let k = 0.75; let n = 10usize;\n>>>>>>> REPLACE\n")
    as_python = apply_reply(rust, reply, "python")
    assert as_python.code is None and "does not parse" in as_python.error
    outcome = apply_reply(rust, reply, "rust")
    assert outcome.code is not None and "let k = 0.75;" in outcome.code


# ------------------------------------------------------------------ config keys

FULL_CONFIG = """
max_iterations: 7
parallel_evaluations: 3
max_code_length: 5000
early_stopping_patience: 10
file_suffix: .rs
llm:
  api_base: http://127.0.0.1:9/v1
  top_p: 0.9
  timeout: 30
  retries: 2
  models:
    - {name: a, weight: 2, max_tokens: 1000}
    - {name: b, weight: 1, max_tokens: 3000, api_base: http://127.0.0.1:9/v1}
    - {name: c, weight: 1, api_base: http://other:8/v1}
prompt:
  num_top_programs: 4
  num_diverse_programs: 1
  max_artifact_bytes: 1000
  template_dir: templates
database:
  num_islands: 2
  population_size: 50
  archive_size: 20
  feature_dimensions: [complexity, diversity, accuracy, extra]
  feature_bins: 10
evaluator:
  max_retries: 2
  timeout: 12
"""


def test_the_keys_users_set_are_mapped():
    pkg = package_from_files({"initial_program.rs": b"// EVOLVE-BLOCK-START\nlet x = 1;\n// EVOLVE-BLOCK-END\n",
                              "evaluator.py": b"def evaluate(p):\n    return {}\n",
                              "templates/system_message.txt": b"You write Rust.",
                              "config.yaml": FULL_CONFIG.encode()})
    p = map_problem(pkg)
    tp = p.task_params
    assert tp["language"] == "rust" and tp["file_suffix"] == ".rs"
    assert tp["max_code_length"] == 5000 and tp["retries"] == 2 and tp["timeout_s"] == 12.0
    assert tp["max_artifact_chars"] == 1000 and tp["context"] == "You write Rust."
    assert tp["feature_metrics"] == ["diversity", "accuracy"]
    assert tp["feature_dimensions"] == ["complexity", "diversity", "accuracy", "extra"]
    assert tp["memory_mb"] == 4096
    assert p.parallel == 3 and p.max_iterations == 7
    assert p.mutator["max_tokens"] == 3000
    assert [m["name"] for m in p.mutator["models"]] == ["a", "b", "c"]
    assert p.archive["selection"] == {"top_k": 4, "diverse": 1, "global_top_k": 20}
    # 50 programs over 2 islands, 3 axes (code size, diversity, accuracy): 2 bins each
    assert p.archive["bins"] == 2 == tp["feature_bins"]
    keys = {line.split(":")[0].split(" ")[0] for line in p.unsupported}
    for mapped in ("parallel_evaluations", "max_code_length", "evaluator.max_retries",
                   "database.population_size", "prompt.num_top_programs", "llm.top_p",
                   "llm.timeout", "llm.retries", "early_stopping_patience", "database.archive_size"):
        assert mapped not in keys
    assert (p.mutator["top_p"], p.mutator["timeout_s"], p.mutator["max_retries"]) == (0.9, 30.0, 2)
    assert p.budget == {"patience": 10, "min_improvement": 0.001}
    assert any("http://other:8/v1" in u for u in p.unsupported)
    assert "database.feature_dimensions" in keys  # 'extra', a third axis
    params = TASK.Params.model_validate(tp)
    assert [d.name for d in TASK.feature_dims(params)] == ["diversity", "accuracy"]


def test_native_stages_are_honoured():
    toml = b'[cascade]\nstages = ["quick", "full"]\nthresholds = [0.1]\n'
    pkg = package_from_files({"initial_program.py": SEED.encode(), "evoforge.toml": toml,
                              "evaluator.py": b"def quick(p):\n    return {}\ndef full(p):\n    return {}\n"})
    p = map_problem(pkg)
    assert p.task_params["stages"] == ["quick", "full"] and p.task_params["thresholds"] == [0.1]


def test_memory_defaults_to_4096_when_the_config_is_silent(tmp_path):
    d = write(tmp_path, {"initial_program.py": SEED, "evaluator.py": ASYNC_EVALUATOR})
    assert load_problem(d / "initial_program.py", d / "evaluator.py").task_params["memory_mb"] == 4096
    assert TASK.Params().memory_mb == 4096 and TASK.resources.memory_mb == 4096
    (d / "c.yaml").write_text("evaluator: {memory_limit_mb: 1500}\n")
    assert load_problem(d / "initial_program.py", d / "evaluator.py",
                        d / "c.yaml").task_params["memory_mb"] == 1500


def test_diversity_is_the_minhash_distance_to_the_elites():
    params = TASK.Params(feature_metrics=["diversity"])
    from evoforge.evaluators.openevolve.task import code_fingerprint
    a = code_fingerprint("def f(x):\n    return x * 2 + 1\n" * 3)
    b = code_fingerprint("import math\nprint(math.sqrt(2))\n" * 3)
    assert TASK.relative_features(params, a, []) == {"diversity": 0.0}
    assert TASK.relative_features(params, a, [a])["diversity"] == 0.0
    assert TASK.relative_features(params, a, [b])["diversity"] > 0.8
    assert TASK.relative_features(TASK.Params(), a, [b]) == {}
