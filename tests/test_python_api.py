"""`evoforge.evolve` / `evoforge.evaluate` through the real path: the campaign service, the
embedded executor, the fork-server sandbox and SQLite; a real HTTP stand-in for the LLM."""
from __future__ import annotations

import io
import shutil
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest

import evoforge
from evoforge import python_api
from tests.llm.fake_openai import FakeOpenAI, Reply, diff_reply

ROOT = Path(__file__).resolve().parents[1]
CURVE_FIT = ROOT / "examples" / "curve_fit"

PROGRAM = '''
# EVOLVE-BLOCK-START
def value():
    x = 1.0
    return x * 0.5
# EVOLVE-BLOCK-END
'''

EVALUATOR = '''
import importlib.util

def evaluate(program_path):
    spec = importlib.util.spec_from_file_location("candidate", program_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    v = float(module.value())
    return {"combined_score": -abs(v - 3.0), "value": v}
'''


def _stored(db: Path, campaign_id: int):
    from evoforge.db.engine import session_factory
    from evoforge.db.models import Campaign

    with session_factory(f"sqlite:///{db}")() as s:
        c = s.get(Campaign, campaign_id)
        return c.params, c.status, c.config


def test_source_strings_and_the_local_mutator_improve_on_the_seed(tmp_path):
    db = tmp_path / "api.db"
    r = evoforge.evolve(PROGRAM, EVALUATOR, iterations=40, db=db, progress=False)
    assert isinstance(r, evoforge.Result)
    assert r.status == "completed" and r.error is None
    assert r.evaluations == 41 and r.seed_score == pytest.approx(-2.5)
    assert r.best_score > r.seed_score
    assert r.metrics["combined_score"] == pytest.approx(r.best_score)
    assert "EVOLVE-BLOCK-START" in r.best_code and r.best_code != PROGRAM
    assert r.db_url == f"sqlite:///{db.resolve()}"
    assert 0 <= r.failures <= r.evaluations and r.cache_hits >= 0
    params, status, config = _stored(db, r.campaign_id)
    assert status == "completed" and params["stages"] == ["evaluate"]
    assert config["mutator"]["kind"] == "local"
    text = repr(r)
    assert f"campaign {r.campaign_id} completed" in text and "41 evaluations" in text
    with pytest.raises(Exception):  # frozen
        r.best_score = 1.0  # type: ignore[misc]
    # The same seed, the same campaign: repeatable.
    again = evoforge.evolve(PROGRAM, EVALUATOR, iterations=40, db=db, progress=False)
    assert again.campaign_id != r.campaign_id and again.best_score == r.best_score


def test_an_openevolve_directory_is_a_stored_problem(tmp_path):
    from evoforge.db.engine import session_factory
    from evoforge.db.models import Campaign, Problem

    db = tmp_path / "d.db"
    r = evoforge.evolve(CURVE_FIT, db=db, progress=False)  # its config: 30 iterations, seed 0
    assert r.status == "completed" and r.evaluations == 31
    assert r.best_score >= r.seed_score and r.metrics["mse"] >= 0
    assert len(r.problem) == 64
    with session_factory(f"sqlite:///{db}")() as s:
        row = s.query(Problem).one()
        c = s.get(Campaign, r.campaign_id)
        assert row.digest == r.problem and c.problem_id == row.id and c.params["files"] == {}
        assert {"initial_program.py", "evaluator.py", "points.csv"} <= set(row.files)
        assert "config.yaml" not in row.files and row.name == "curve_fit"
        assert c.name == "curve_fit #0"
    # The same content again: the same problem; what the caller sets overrides the config.
    again = evoforge.evolve(CURVE_FIT, db=db, iterations=3, seed=5, progress=False)
    assert again.problem == r.problem and again.evaluations == 4
    with session_factory(f"sqlite:///{db}")() as s:
        assert s.query(Problem).count() == 1
        assert s.get(Campaign, again.campaign_id).seed == 5


def test_a_directory_with_another_config_is_read_as_the_cli_reads_it(tmp_path):
    db = tmp_path / "o.db"
    r = evoforge.evolve(CURVE_FIT, config={"max_iterations": 2, "random_seed": 4}, db=db,
                        progress=False)
    assert r.status == "completed" and r.evaluations == 3 and r.problem is None
    params, _, _ = _stored(db, r.campaign_id)
    assert "points.csv" in params["files"] and "config.yaml" not in params["files"]


def test_a_directory_whose_requirements_are_missing_is_refused(tmp_path):
    problem = tmp_path / "needs"
    shutil.copytree(CURVE_FIT, problem)
    (problem / "requirements.txt").write_text("numpy\nno-such-module-evoforge-test\n")
    with pytest.raises(ValueError, match="no-such-module-evoforge-test"):
        evoforge.evolve(problem, db=tmp_path / "r.db", progress=False)


def test_the_default_database_is_the_clis(tmp_path):
    r = evoforge.evolve(PROGRAM, EVALUATOR, iterations=2, progress=False)
    home = Path(evoforge.python_api._db_url(None).removeprefix("sqlite:///"))
    assert home.is_file() and str(home).startswith(str(tmp_path))  # EVOFORGE_HOME (conftest)
    out = subprocess.run([sys.executable, "-m", "evoforge.cli", "best", str(r.campaign_id)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "def value" in out.stdout, out.stderr


def test_a_callable_evaluator_runs_here(tmp_path):
    calls: list[str] = []
    threads: set[str] = set()

    def score(program_path: str) -> dict:
        calls.append(Path(program_path).read_text())
        threads.add(threading.current_thread().name)
        ns: dict = {}
        exec(compile(calls[-1], program_path, "exec"), ns)
        return {"combined_score": -abs(ns["value"]() - 3.0)}

    db = tmp_path / "c.db"
    r = evoforge.evolve(PROGRAM, score, iterations=30, parallel=2, db=db, progress=False)
    assert r.status == "completed" and r.best_score > r.seed_score == pytest.approx(-2.5)
    assert calls[0] == PROGRAM and 1 < len(calls) <= r.evaluations
    assert threads == {"evoforge-evaluator"}
    # What is stored is a placeholder that refuses to run; it never holds the function.
    params, _, _ = _stored(db, r.campaign_id)
    placeholder = params["files"]["evaluator.py"]
    assert "test_a_callable_evaluator_runs_here.<locals>.score" in placeholder
    e = evoforge.evaluate(PROGRAM, placeholder)  # in the real sandbox
    assert e.status == "error" and "cannot run outside" in e.artifacts["reason"]
    # A fresh nonce each time: two callables never share cache entries.
    r2 = evoforge.evolve(PROGRAM, score, iterations=1, db=db, progress=False)
    assert _stored(db, r2.campaign_id)[0]["files"]["evaluator.py"] != placeholder


def test_in_process_runner_failures_timeouts_and_async():
    from evoforge.evaluators.openevolve.driver import EvaluationResult

    def boom(path):
        raise ValueError("no good")

    def slow(path):
        time.sleep(5)

    async def coro(path):
        return EvaluationResult({"combined_score": 2.0}, {"note": "async"})

    call = [{"call": "evaluate", "evaluator": "evaluator.py", "files": {}}]
    failed = python_api.InProcessRunner(boom).run("x = 1\n", "evaluate", call, timeout_s=5)
    assert failed.status == "error" and failed.reason == "ValueError: no good"
    assert "Traceback" in failed.stderr
    t0 = time.monotonic()
    late = python_api.InProcessRunner(slow).run("x = 1\n", "evaluate", call, timeout_s=0.3)
    assert late.status == "timeout" and time.monotonic() - t0 < 2
    ok = python_api.InProcessRunner(coro).run("x = 1\n", "evaluate", call, timeout_s=5)
    assert ok.ok and ok.outputs == [{"metrics": {"combined_score": 2.0}, "artifacts": {"note": "async"}}]
    bad = python_api.InProcessRunner(lambda p: 42).run("x = 1\n", "evaluate", call, timeout_s=5)
    assert bad.status == "error" and "expected a dict" in bad.reason


def test_a_failing_callable_is_a_recorded_failure_not_an_exception(tmp_path):
    def score(path):
        if "0.5" in Path(path).read_text():
            return {"combined_score": 0.0}
        raise RuntimeError("only the seed passes")

    r = evoforge.evolve(PROGRAM, score, iterations=10, db=tmp_path / "f.db", progress=False)
    assert r.best_score == 0.0 and r.failures >= 1


def test_evaluate(tmp_path):
    e = evoforge.evaluate(CURVE_FIT)
    assert isinstance(e, evoforge.Evaluation) and e.ok and e.metrics["mse"] > 0
    assert e.score == pytest.approx(1 / (1 + e.metrics["mse"]))
    better = (CURVE_FIT / "initial_program.py").read_text().replace("1.0, 0.0, 0.0", "1.5, -0.7, 0.3")
    assert evoforge.evaluate(better, CURVE_FIT / "evaluator.py").score == pytest.approx(1.0)
    broken = evoforge.evaluate("def value(:\n", EVALUATOR)
    assert broken.status == "error" and "SyntaxError" in broken.artifacts["stderr"]
    seed = ROOT / "examples" / "circle_packing" / "seed.py"
    cp = evoforge.evaluate(seed, task="circle_packing", params={"n": 26})
    assert cp.ok and 1.5 < cp.score < 2.7 and "Evaluation(ok" in repr(cp)
    assert evoforge.evaluate(PROGRAM, lambda p: {"combined_score": 7}).score == 7.0
    with pytest.raises(TypeError):
        evoforge.evaluate(seed, EVALUATOR, task="circle_packing")
    with pytest.raises(ValueError, match="unknown task"):
        evoforge.evaluate(seed, task="no_such_task")


def test_bad_arguments_are_one_line_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        evoforge.evolve("missing.py", EVALUATOR, db=tmp_path / "x.db")
    with pytest.raises(TypeError, match="an evaluator is needed"):
        evoforge.evolve(PROGRAM, db=tmp_path / "x.db")
    with pytest.raises(ValueError, match="needs llm="):
        evoforge.evolve(PROGRAM, EVALUATOR, mutator="llm", db=tmp_path / "x.db")
    with pytest.raises(ValueError, match="mutator"):
        evoforge.evolve(PROGRAM, EVALUATOR, mutator="gpt", db=tmp_path / "x.db")
    with pytest.raises(TypeError, match="unknown keys"):
        evoforge.evolve(PROGRAM, EVALUATOR, llm={"url": "http://x"}, db=tmp_path / "x.db")
    with pytest.raises(ValueError, match="iterations"):
        evoforge.evolve(PROGRAM, EVALUATOR, iterations=-1, db=tmp_path / "x.db")
    with pytest.raises(ValueError, match="sandbox"):
        evoforge.evolve(PROGRAM, EVALUATOR, sandbox="none", db=tmp_path / "x.db")


def test_an_llm_url_is_the_operators_and_gets_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-operator-key-0123456789")
    with FakeOpenAI(models=("perturb",)) as fake:
        fake.default = Reply(diff_reply("    x = 1.0\n", "    x = 6.0\n"))
        r = evoforge.evolve(PROGRAM, EVALUATOR, iterations=4, db=tmp_path / "l.db", progress=False,
                            llm={"base_url": fake.base_url, "models": ["perturb"]})
        requests = fake.chat_requests()
    assert r.status == "completed" and r.best_score == 0.0 and "x = 6.0" in r.best_code
    assert requests and all(q.body["model"] == "perturb" for q in requests)
    assert requests[0].headers.get("authorization") == "Bearer sk-test-operator-key-0123456789"
    _, _, config = _stored(tmp_path / "l.db", r.campaign_id)
    assert config["mutator"]["kind"] == "llm" and "sk-test" not in repr(config)


def test_progress_in_a_terminal_and_in_jupyter(monkeypatch):
    from rich.console import Console

    p = python_api._Progress(7, 10, 0, None)
    assert python_api._view(False, p, Console(force_terminal=True)) is None
    assert python_api._view(True, p, Console(file=io.StringIO())) is None  # a pipe: nothing
    out = io.StringIO()
    view = python_api._view(True, p, Console(file=out, force_terminal=True, width=100))
    assert isinstance(view, python_api._RichView)
    committed = types.SimpleNamespace(result=types.SimpleNamespace(ok=True, score=0.25), cache="miss")
    p.view = view
    with view:
        p.commit(1, committed)
    assert "campaign 7" in out.getvalue() and "1/10" in out.getvalue() and "0.25" in out.getvalue()

    shown: list = []

    class Handle:
        def update(self, obj):
            shown.append(obj)

    display = types.ModuleType("IPython.display")
    display.display = lambda obj, display_id=False: (shown.append(obj), Handle())[1]
    monkeypatch.setitem(sys.modules, "IPython", types.ModuleType("IPython"))
    monkeypatch.setitem(sys.modules, "IPython.display", display)
    p = python_api._Progress(8, 2, 0, None)
    view = python_api._view(True, p, Console(force_jupyter=True))
    assert isinstance(view, python_api._NotebookView)
    p.view = view
    p.commit(1, committed)
    p.commit(2, committed)
    assert "campaign 8  2/2  best 0.25" in repr(shown[-1])
    assert '<progress value="2" max="2"' in shown[-1]._repr_html_()


def test_import_is_lazy_and_help_reads_well():
    code = ("import sys, evoforge\n"
            "assert 'evoforge.python_api' not in sys.modules and 'sqlalchemy' not in sys.modules\n"
            "assert {'evolve', 'evaluate', 'Result', 'Client'} <= set(dir(evoforge))\n"
            "assert set(evoforge.__all__) >= {'evolve', 'evaluate', 'Result', 'Client'}\n"
            "f = evoforge.evolve\n"
            "assert 'evoforge.python_api' in sys.modules and 'sqlalchemy' not in sys.modules\n"
            "from evoforge import Client\n"
            "try:\n    evoforge.nothing\nexcept AttributeError as e:\n    print('ok', e)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and "has no attribute 'nothing'" in out.stdout, out.stderr
    import pydoc

    text = pydoc.render_doc(evoforge.evolve, renderer=pydoc.plaintext)
    for part in ("initial_program", "Args:", "Returns:", "Example:", "unsandboxed"):
        assert part in text
    assert "Example:" in (evoforge.evaluate.__doc__ or "")


def test_a_failing_seed_fails_the_campaign_with_the_reason(tmp_path):
    broken = 'def evaluate(program_path):\n    raise ValueError("broken evaluator")\n'
    r = evoforge.evolve(PROGRAM, broken, iterations=5, db=tmp_path / "s.db", progress=False)
    assert r.status == "failed" and r.evaluations == 1 and r.best_code is None
    assert "the seed program failed" in r.error and "broken evaluator" in r.error
    assert "no valid program" in repr(r) and "error 'the seed program failed" in repr(r)
