"""The OpenEvolve adapter on small OpenEvolve-style fixtures (tests/openevolve/fixtures/).

Real parts throughout: the fork-server sandbox runs the evaluators, the CLI test talks to the
stand-in LLM (perturb_llm.py) over loopback and writes a real SQLite database.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evoforge.evaluators.base import get_task
from evoforge.evaluators.openevolve import TASK, fitness, load_problem
from evoforge.evaluators.pipeline import CascadeEvaluator

FIX = Path(__file__).resolve().parent / "fixtures"
ROOT = Path(__file__).resolve().parents[2]
PERTURB = Path(os.environ.get("PERTURB_LLM", "/work/shared/tools/perturb_llm.py"))


def problem(name: str, config: str | None = None, **kw):
    d = FIX / name
    return load_problem(d / "initial_program.py", d / "evaluator.py",
                        d / config if config else None, **kw)


def evaluate(prob, sandbox, code: str | None = None):
    params = TASK.Params.model_validate(prob.task_params)
    ev = CascadeEvaluator(get_task("openevolve"), params, sandbox)
    code = code if code is not None else prob.seed_program
    probe = ev.probe(code, 0)
    if probe.failure is not None:
        return probe.failure, probe
    return ev.evaluate(code, 0, probe), probe


# ------------------------------------------------------------------------------ config mapping

def test_config_keys_are_mapped_or_reported():
    p = problem("dict_problem", "config.yaml")
    assert p.mutator["kind"] == "llm" and p.mutator["base_url"] == "http://127.0.0.1:9/v1"
    assert p.mutator["models"] == [{"name": "perturb", "weight": 1.0}]
    assert p.mutator["temperature"] == 0.5 and p.mutator["max_tokens"] == 512
    assert p.mutator["diff_mode"] is True
    assert p.archive["islands"] == 2 and p.parallel == 2 and p.max_iterations == 5
    assert p.task_params["timeout_s"] == 20.0 and p.task_params["stages"] == ["evaluate"]
    assert p.task_params["context"] == "Make guess() return 10."
    assert "helper.py" in p.task_params["files"]  # the evaluator's sibling module is shipped
    keys = {line.split(":")[0] for line in p.unsupported}
    assert {"totally_unknown_key", "database.made_up_database_key", "checkpoint_interval"} <= keys
    assert p.mutator["top_p"] == 0.9
    for mapped in ("llm.api_base", "llm.temperature", "database.num_islands", "evaluator.timeout",
                   "max_iterations", "prompt.system_message", "database.population_size",
                   "llm.top_p"):
        assert mapped not in keys


def test_cli_base_url_overrides_config_and_no_api_base_means_local_mutator():
    p = problem("dict_problem", "config.yaml", llm_base_url="http://127.0.0.1:1/v1")
    assert p.mutator["base_url"] == "http://127.0.0.1:1/v1"
    assert any("overrides llm.api_base" in n for n in p.notes)
    local = problem("cascade_problem", "config.yaml")
    assert local.mutator["kind"] == "local"
    assert any("local AST mutator" in n for n in local.notes)


def test_cascade_stages_and_thresholds_from_config():
    p = problem("cascade_problem", "config.yaml")
    assert p.task_params["stages"] == ["evaluate_stage1", "evaluate_stage2"]
    stages = TASK.stages(TASK.Params.model_validate(p.task_params))
    assert [s.threshold for s in stages] == [0.5, None]
    # no config: OpenEvolve's default cascade_evaluation is true, with thresholds [0.5, 0.75, 0.9]
    assert problem("cascade_problem").task_params["stages"] == ["evaluate_stage1", "evaluate_stage2"]


def test_fitness_is_combined_score_else_mean_of_numeric_metrics():
    assert fitness({"combined_score": 0.3, "other": 9.0}) == 0.3
    assert fitness({"a": 1.0, "b": 3, "flag": True, "label": "x"}) == 2.0
    assert fitness({"a": 1.0, "feat": 5.0}, exclude=["feat"]) == 1.0
    assert fitness({}) == 0.0


# ------------------------------------------------------------------------------ in the sandbox

def test_dict_result_with_sibling_import(fork_sandbox):
    r, probe = evaluate(problem("dict_problem", "config.yaml"), fork_sandbox)
    assert r.ok, r.artifacts
    assert r.score == pytest.approx(1.0 / (1.0 + 4.0))
    assert r.metrics["value"] == 6.0 and r.metrics["note"] == "dict result"
    assert probe.functional_hash  # stage-1 metrics + artifacts are the functional hash


def test_object_result_metrics_and_artifacts(fork_sandbox):
    r, _ = evaluate(problem("object_problem"), fork_sandbox)
    assert r.ok, r.artifacts
    # no combined_score: the mean of numeric metrics (bools and strings left out)
    assert r.score == pytest.approx(((7.0 / 3.0) + 3.0) / 2.0)
    assert r.metrics["label"] == "three" and r.metrics["ok"] is True
    # the evaluator's artifacts live in their own namespace (evaluators/pipeline.py)
    assert r.artifacts["evaluator"]["summary"] == "got 3 values"
    assert r.artifacts["evaluator"]["raw"] == "bytes survive as text"


def test_cascade_stops_below_threshold_and_goes_on_above(fork_sandbox):
    p = problem("cascade_problem", "config.yaml")
    low, _ = evaluate(p, fork_sandbox)
    assert low.ok and low.score == pytest.approx(0.2)
    assert low.artifacts.get("cascade_stopped_at") == "evaluate_stage1"
    assert "stage2_ran" not in low.metrics  # stage 2 never ran
    high, _ = evaluate(p, fork_sandbox, p.seed_program.replace("0.2", "0.8"))
    assert high.ok and high.score == pytest.approx(1.6)
    assert high.metrics["stage2_ran"] == 1.0 and high.metrics["stage1_quality"] == 0.8


def test_raising_evaluator_is_a_recorded_failure(fork_sandbox):
    r, _ = evaluate(problem("raising_problem"), fork_sandbox)
    assert not r.ok and r.status == "error" and r.score is None
    assert "this evaluator always fails" in r.artifacts["reason"]


def test_candidate_that_breaks_is_a_failure_not_a_crash(fork_sandbox):
    p = problem("dict_problem", "config.yaml")
    r, _ = evaluate(p, fork_sandbox, p.seed_program.replace("return a * b", "return a * undefined"))
    assert not r.ok and "undefined" in r.artifacts.get("reason", "")


def test_candidate_top_level_runs_once_as_under_openevolve(fork_sandbox):
    # OpenEvolve's evaluator imports the program from a file; the driver must not run it first.
    p = problem("dict_problem", "config.yaml")
    params = TASK.Params.model_validate(p.task_params)
    code = 'print("candidate body ran")\n' + p.seed_program
    run = fork_sandbox.run(code, TASK.entrypoint, TASK.probe(params), timeout_s=20,
                           driver=TASK.driver)
    assert run.ok, run.reason
    assert run.stdout.count("candidate body ran") == 1, run.stdout
    assert "guess() = 6.0" in run.stdout
    # A program that fails at import is the evaluator's failure to import it, with its reason.
    bad = fork_sandbox.run("raise ValueError('broken at import')\n", TASK.entrypoint,
                           TASK.probe(params), timeout_s=20, driver=TASK.driver)
    assert not bad.ok and "broken at import" in bad.reason


# ------------------------------------------------------------------------------ CLI, end to end

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def stand_in_llm():
    if not PERTURB.exists():
        pytest.skip(f"{PERTURB} not found")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, str(PERTURB), "--port", str(port), "--seed", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("perturb_llm.py did not start")
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait()


def test_cli_openevolve_json_against_stand_in(stand_in_llm, tmp_path):
    d = FIX / "dict_problem"
    evoforge = Path(sys.executable).with_name("evoforge")
    cmd = [str(evoforge) if evoforge.exists() else sys.executable, *([] if evoforge.exists() else ["-m", "evoforge.cli"]),
           "openevolve", str(d / "initial_program.py"), str(d / "evaluator.py"),
           "--config", str(d / "config.yaml"), "--iterations", "8", "--parallel", "2",
           "--db", f"sqlite:///{tmp_path / 'oe.db'}", "--llm-base-url", stand_in_llm, "--json"]
    env = dict(os.environ, EVOFORGE_HOME=str(tmp_path / "home"))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    seed_fitness = 1.0 / (1.0 + 4.0)
    assert out["status"] == "completed" and out["task"] == "openevolve"
    assert out["evaluations"] == 9  # the initial program + 8 iterations
    assert out["seed_score"] == pytest.approx(seed_fitness)
    assert out["best_score"] >= seed_fitness
    assert isinstance(out["campaign_id"], int) and out["mutator"] == "llm"
    assert out["tokens"] > 0
    assert any(u.startswith("totally_unknown_key") for u in out["unsupported_config"])
    assert "unsupported: totally_unknown_key" in proc.stderr
    assert "files" not in out["params"]  # the evaluator's files stay in the database
