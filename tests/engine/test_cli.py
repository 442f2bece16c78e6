"""The `evoforge` command line through real subprocesses, the default fork-server sandbox and
SQLite: the checks the README promises."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.services import default_sigint

ROOT = Path(__file__).resolve().parents[2]
EVOFORGE = [sys.executable, "-m", "evoforge.cli"]
SEED = (ROOT / "examples/circle_packing/seed.py").read_text()


def cli(*args, home, check=True):
    env = {"EVOFORGE_HOME": str(home), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    p = subprocess.run([*EVOFORGE, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=600)
    if check and p.returncode != 0:
        raise AssertionError(f"evoforge {' '.join(args)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return p


def last_json(p):
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.fixture
def home(tmp_path):
    return tmp_path / "home"


def write(tmp_path, name, text):
    f = tmp_path / name
    f.write_text(text)
    return str(f)


def test_run_json_summary_and_repeatability(home):
    a = last_json(cli("run", "circle_packing", "--iterations", "40", "--seed", "3", "--json", home=home))
    for key in ("campaign_id", "best_score", "seed_score", "best_program_id", "evaluations",
                "cache_hits", "failures", "tokens", "cost_usd"):
        assert key in a
    assert a["evaluations"] == 41 and a["status"] == "completed"
    assert a["best_score"] >= a["seed_score"]
    b = last_json(cli("run", "circle_packing", "--iterations", "40", "--seed", "3", "--json", home=home))
    assert b["campaign_id"] != a["campaign_id"] and b["best_score"] == a["best_score"]
    best = cli("best", str(a["campaign_id"]), home=home).stdout
    assert "def pack_circles" in best
    resumed = last_json(cli("run", "circle_packing", "--resume", str(a["campaign_id"]), "--iterations", "10",
                            "--json", home=home))
    assert resumed["campaign_id"] == a["campaign_id"] and resumed["evaluations"] == 51
    listed = cli("campaigns", home=home).stdout
    assert str(a["campaign_id"]) in listed


def test_eval_cache_code_and_functional(tmp_path, home):
    first = last_json(cli("eval", "circle_packing", write(tmp_path, "a.py", SEED), "--json", home=home))
    assert first["status"] == "ok" and first["cache"] == "miss"
    assert 1.5 < first["score"] < 2.7 and first["functional_hash"]

    # The exact same text: a code-hash hit.
    again = last_json(cli("eval", "circle_packing", write(tmp_path, "a2.py", SEED), "--json", home=home))
    assert again["cache"] == "code" and again["functional_hash"] == first["functional_hash"]
    assert again["score"] == first["score"]

    # Reformatted, with comments and a docstring changed: another code hash (a program can read
    # its own docstring and source), but the same outputs: a functional-hash hit.
    reformatted = SEED.replace("    margin = 0.1\n", "    margin = (0.1)  # the border\n")
    reformatted = reformatted.replace('"""Centers on a staggered grid', '"""Other words')
    same = last_json(cli("eval", "circle_packing", write(tmp_path, "b.py", reformatted), "--json", home=home))
    assert same["code_hash"] != first["code_hash"]
    assert same["cache"] == "functional" and same["score"] == first["score"]

    # Other names, same outputs: a functional-hash hit with no full evaluation.
    renamed = re.sub(r"\bradii\b", "rr", SEED).replace("stagger", "offset_frac")
    hit = last_json(cli("eval", "circle_packing", write(tmp_path, "c.py", renamed), "--json", home=home))
    assert hit["code_hash"] != first["code_hash"]
    assert hit["cache"] == "functional" and hit["functional_hash"] == first["functional_hash"]

    # A changed constant is a miss.
    changed = SEED.replace("margin = 0.1", "margin = 0.11")
    miss = last_json(cli("eval", "circle_packing", write(tmp_path, "d.py", changed), "--json", home=home))
    assert miss["cache"] == "miss" and miss["functional_hash"] != first["functional_hash"]


@pytest.mark.parametrize("name", ["overlapping", "nan_radius", "wrong_shape", "slightly_outside"])
def test_eval_rejects_bad_packings(home, name):
    out = last_json(cli("eval", "circle_packing", str(ROOT / f"examples/circle_packing/{name}.py"),
                        "--json", home=home))
    assert out["status"] != "ok", out
    assert out["reason"]


def test_eval_n32_and_bad_params(tmp_path, home):
    out = last_json(cli("eval", "circle_packing", write(tmp_path, "a.py", SEED), "--param", "n=32",
                        "--json", home=home))
    assert out["status"] == "ok" and out["metrics"]["n"] == 32
    bad = cli("eval", "circle_packing", write(tmp_path, "b.py", SEED), "--param", "n=-3", home=home,
              check=False)
    assert bad.returncode != 0 and "n" in bad.stderr and "Traceback" not in bad.stderr
    unknown = cli("run", "no_such_task", home=home, check=False)
    assert unknown.returncode != 0 and "unknown task" in unknown.stderr


def test_eval_broken_candidate_is_recorded_not_raised(tmp_path, home):
    out = last_json(cli("eval", "circle_packing", write(tmp_path, "s.py", "def pack_circles(n):\n  return (\n"),
                        "--json", home=home))
    assert out["status"] == "rejected" and "line" in out["reason"]
    boom = last_json(cli("eval", "circle_packing",
                         write(tmp_path, "e.py", "def pack_circles(n):\n    raise ValueError('nope')\n"),
                         "--json", home=home))
    assert boom["status"] == "error" and "nope" in (boom["reason"] or "") + (boom["stderr"] or "")


def test_ctrl_c_pauses_cleanly_and_resume_continues(home):
    import signal
    import time

    env = {"EVOFORGE_HOME": str(home), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    p = subprocess.Popen([*EVOFORGE, "run", "circle_packing", "--iterations", "100000", "--json"],
                         cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=default_sigint)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until it has really started evaluating
        rows = json.loads(cli("campaigns", "--json", home=home).stdout or "[]")
        if rows and rows[0]["evaluations"] >= 5:
            break
        time.sleep(1)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["status"] == "paused", err[-2000:]
    assert 5 <= summary["evaluations"] < 100001
    done = summary["evaluations"]
    resumed = last_json(cli("run", "circle_packing", "--resume", str(summary["campaign_id"]),
                            "--iterations", "5", "--json", home=home))
    assert resumed["status"] == "completed" and resumed["evaluations"] == done + 5


def test_run_with_the_stand_in_llm_applies_and_counts_edits(home, tmp_path):
    import socket
    import time

    stand_in = ROOT.parent / "shared/tools/perturb_llm.py"
    if not stand_in.exists():
        pytest.skip("the stand-in LLM (../shared/tools/perturb_llm.py) is not beside the checkout")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, str(stand_in), "--port", str(port), "--seed", "0"])
    try:
        for _ in range(100):
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        out = last_json(cli("run", "circle_packing", "--llm-base-url", f"http://127.0.0.1:{port}/v1",
                            "--model", "perturb", "--iterations", "40", "--parallel", "2", "--seed", "0",
                            "--json", home=home))
    finally:
        server.kill()
    assert out["status"] == "completed" and out["evaluations"] == 41
    assert out["edits_applied"] > 20 and out["mutations"]["llm:diff"]["applied"] == out["edits_applied"]
    assert out["tokens"] == 120 * 40          # the stand-in reports 120 tokens per call
    assert out["best_score"] >= out["seed_score"]


def test_concurrent_first_use_of_a_fresh_database(home):
    """Several commands creating the same fresh SQLite file at once all succeed (the migration
    takes the write lock up front instead of failing with 'database is locked')."""
    env = {"EVOFORGE_HOME": str(home), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([*EVOFORGE, "campaigns", "--json"], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(5)]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    assert all(rc == 0 for rc, _ in results), [err[-500:] for _, err in results]
