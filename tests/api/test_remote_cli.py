"""`evoforge remote` against a real `evoforge serve` process (campaigns run in it, no broker),
driven as a user drives it: the CLI in its own process, the key from the environment.

An OpenEvolve-layout problem built here (a seed, an evaluator that reads a data file from a
subdirectory, a config.yaml with an API key in it) is submitted with the local mutator and
followed to the end; then resubmitted (same problem), listed, read, saved, cancelled, and
followed and interrupted. Errors (a bad key, no server, a bad directory) are one line each, and
hostile text from the server (a campaign name with escape sequences) never reaches the terminal
raw.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.integration.services import default_sigint, free_port
from tests.security.conftest import serve_process  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[2]
KEY_IN_CONFIG = "sk-" + "Z9y8X7w6V5u4T3s2R1q0P9o8"
OE_EXAMPLES = Path("/work/oe/examples")

SEED = '''\
"""Minimize (x - a)^2 + (y - b)^2 for the target in data/target.json."""
# EVOLVE-BLOCK-START
def solve():
    x = 3.0
    y = -2.0
    return x, y
# EVOLVE-BLOCK-END


def run():
    return solve()
'''

EVALUATOR = '''\
import importlib.util
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def evaluate(program_path):
    with open(os.path.join(HERE, "data", "target.json")) as f:
        a, b = json.load(f)["target"]
    spec = importlib.util.spec_from_file_location("candidate", program_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    x, y = module.run()
    distance = (float(x) - a) ** 2 + (float(y) - b) ** 2
    return {"combined_score": 1.0 / (1.0 + distance), "distance": distance}
'''


def make_problem(root: Path) -> Path:
    (root / "data").mkdir(parents=True)
    (root / "initial_program.py").write_text(SEED)
    (root / "evaluator.py").write_text(EVALUATOR)
    (root / "data" / "target.json").write_text('{"target": [1.0, 0.5]}')
    (root / "config.yaml").write_text(yaml.safe_dump({
        "max_iterations": 50, "random_seed": 1,
        "llm": {"api_key": KEY_IN_CONFIG, "primary_model": "some-model"},
        "evaluator": {"timeout": 30}}))
    (root / ".env").write_text(f"OPENAI_API_KEY={KEY_IN_CONFIG}\n")
    return root


def remote(server, *args: str, key: str | None = None, timeout: float = 300,
           extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVOFORGE_", "OPENAI_"))}
    env["EVOFORGE_SERVER"] = server if isinstance(server, str) else server.url
    if key:
        env["EVOFORGE_API_KEY"] = key
    env.update(extra_env or {})
    return subprocess.run([sys.executable, "-m", "evoforge.cli", "remote", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


@pytest.fixture
def server(serve_process, tmp_path):  # noqa: F811
    """`evoforge serve` with one API key (so keys are required), and that key."""
    db_url = f"sqlite:///{tmp_path / 'remote.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVOFORGE_")}
    env["EVOFORGE_HOME"] = str(tmp_path / "home")
    made = subprocess.run([sys.executable, "-m", "evoforge.cli", "apikey", "create", "--project",
                           "remote-test", "--db", db_url, "--json"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=True)
    key = json.loads(made.stdout)["key"]
    return serve_process(db_url=db_url), key


def test_submit_follow_resubmit_read_save_cancel(server, tmp_path):
    srv, key = server
    problem_dir = make_problem(tmp_path / "minimize")

    first = remote(srv, "submit", str(problem_dir), "--mutator", "local", "--iterations", "20",
                   "--name", "first", "--follow", "--json", key=key)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert set(result) >= {"campaign_id", "problem_id", "status", "seed_score", "best_score",
                           "evaluations"}
    assert result["status"] == "completed", result
    assert result["evaluations"] == 21
    assert result["seed_score"] is not None and result["best_score"] >= result["seed_score"]
    pid, cid = result["problem_id"], result["campaign_id"]
    assert len(pid) == 64

    # The same content again: the same problem (stored once), a new campaign. Without --json
    # the report goes to stderr, the campaign line to stdout.
    again = remote(srv, "submit", str(problem_dir), "--mutator", "local", "--iterations", "3",
                   key=key)
    assert again.returncode == 0, again.stderr
    assert f"problem {pid} (already stored)" in again.stderr
    assert ".env (hidden)" in again.stderr                   # never sent, and said so
    assert f"on problem {pid}" in again.stdout

    # What the server holds: the data file in its subdirectory, the config without the key.
    shown = remote(srv, "problem", pid, "--json", key=key)
    assert shown.returncode == 0, shown.stderr
    stored = json.loads(shown.stdout)
    paths = {f["path"] for f in stored["files"]}
    assert {"initial_program.py", "evaluator.py", "data/target.json"} <= paths
    assert ".env" not in paths and KEY_IN_CONFIG not in shown.stdout
    data = remote(srv, "problem", pid, "--file", "data/target.json", key=key)
    assert data.returncode == 0 and json.loads(data.stdout)["target"] == [1.0, 0.5]

    # The same content as JSON {path: text} from Python: the same problem, not stored again.
    from evoforge.client import Client

    as_json = {p.relative_to(problem_dir).as_posix(): p.read_text()
               for p in problem_dir.rglob("*") if p.is_file() and p.name != ".env"}
    with Client(srv.url, key) as client:
        same = client.upload_problem(as_json)
        assert same["id"] == pid and same["created"] is False

    listed = remote(srv, "problems", key=key)
    assert listed.returncode == 0 and listed.stdout.count(pid) == 1

    campaigns = remote(srv, "campaigns", "--json", key=key)
    rows = {c["id"]: c for c in json.loads(campaigns.stdout)}
    assert rows[cid]["problem"] == pid and rows[cid]["name"] == "first"

    status = remote(srv, "status", str(cid), key=key)
    assert status.returncode == 0 and "status completed" in status.stdout
    assert f"problem {pid}" in status.stdout

    # best --out: the exact code; an existing file only with --force; never through a link.
    out = tmp_path / "best.py"
    saved = remote(srv, "best", str(cid), "--out", str(out), key=key)
    assert saved.returncode == 0, saved.stderr
    printed = remote(srv, "best", str(cid), key=key).stdout
    assert out.read_text().rstrip("\n") == printed.rstrip("\n") and "def solve" in printed
    refused = remote(srv, "best", str(cid), "--out", str(out), key=key)
    assert refused.returncode == 2 and "--force" in one_error_line(refused)
    assert remote(srv, "best", str(cid), "--out", str(out), "--force", key=key).returncode == 0
    os.symlink(tmp_path / "elsewhere.py", tmp_path / "link.py")
    linked = remote(srv, "best", str(cid), "--out", str(tmp_path / "link.py"), "--force", key=key)
    assert linked.returncode == 2 and "symlink" in one_error_line(linked)
    assert not (tmp_path / "elsewhere.py").exists()

    # A long campaign: followed, then Ctrl-C stops following, not the campaign; then cancelled.
    long = remote(srv, "submit", str(problem_dir), "--mutator", "local", "--iterations",
                  "1000000", "--json", key=key)
    long_id = json.loads(long.stdout)["campaign_id"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVOFORGE_", "OPENAI_"))}
    env.update(EVOFORGE_SERVER=srv.url, EVOFORGE_API_KEY=key)
    follower = subprocess.Popen([sys.executable, "-m", "evoforge.cli", "remote", "status",
                                 str(long_id), "--follow"], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=default_sigint)
    time.sleep(4)
    follower.send_signal(signal.SIGINT)
    _, err = follower.communicate(timeout=30)
    assert follower.returncode == 130, err
    assert f"evoforge remote cancel {long_id}" in err and "Traceback" not in err
    running = json.loads(remote(srv, "status", str(long_id), "--json", key=key).stdout)
    assert running["status"] == "running"
    cancelled = remote(srv, "cancel", str(long_id), key=key)
    assert cancelled.returncode == 0 and f"campaign {long_id} cancelled" in cancelled.stdout
    again_cancel = remote(srv, "cancel", str(long_id), key=key)
    assert again_cancel.returncode == 1 and "HTTP 409" in one_error_line(again_cancel)


def test_errors_are_one_line(server, tmp_path):
    srv, key = server
    problem_dir = make_problem(tmp_path / "p")

    bad_key = remote(srv, "campaigns", key="evf_not-a-real-key-0000")
    assert bad_key.returncode == 1 and "HTTP 401" in one_error_line(bad_key)
    assert "evf_not-a-real-key" not in bad_key.stderr + bad_key.stdout
    assert remote(srv, "problems").returncode == 1  # no key at all, keys required

    nobody = f"http://127.0.0.1:{free_port()}"
    down = remote(nobody, "submit", str(problem_dir), "--mutator", "local", key=key)
    assert down.returncode == 1 and f"cannot reach {nobody}" in one_error_line(down)
    assert key not in down.stderr

    missing = remote(srv, "status", "999999", key=key)
    assert missing.returncode == 1 and "HTTP 404" in one_error_line(missing)

    (tmp_path / "empty").mkdir()
    empty = remote(srv, "submit", str(tmp_path / "empty"), "--mutator", "local", key=key)
    assert empty.returncode == 1 and "HTTP 422" in one_error_line(empty)

    both = remote(srv, "submit", str(problem_dir), "--mutator", "local", "--endpoint", "x", key=key)
    assert both.returncode == 2 and "--mutator llm" in both.stderr

    not_dir = tmp_path / "prog.py"
    not_dir.write_text("x = 1\n")
    local = remote(srv, "submit", str(not_dir), key=key)
    assert local.returncode == 2 and "not a directory" in one_error_line(local)

    bad_id = remote(srv, "problem", "../../campaigns", key=key)
    assert bad_id.returncode == 2 and "64 hex" in one_error_line(bad_id)


def test_hostile_server_text_is_escaped(server, tmp_path):
    srv, key = server
    problem_dir = make_problem(tmp_path / "p")
    name = "evil\x1b]52;c;SGVsbG8=\x07\x1b[2J\u202ename\r\nforged row"
    made = remote(srv, "submit", str(problem_dir), "--mutator", "local", "--iterations", "1",
                  "--name", name, "--json", key=key)
    assert made.returncode == 0, made.stderr
    cid = json.loads(made.stdout)["campaign_id"]
    for args in (("campaigns",), ("status", str(cid))):
        proc = remote(srv, *args, key=key)
        assert proc.returncode == 0, proc.stderr
        text = proc.stdout + proc.stderr
        assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
        assert "\r" not in text
        assert "evil\\x1b]52;c;SGVsbG8=\\x07\\x1b[2J\\u202ename\\x0d\\x0aforged row" in text
        assert not any(line.startswith("forged row") for line in text.splitlines())
    listed = json.loads(remote(srv, "campaigns", "--json", key=key).stdout)
    assert any(c["name"] == name for c in listed)           # JSON keeps the exact text


def test_a_failing_seed_fails_the_campaign_with_its_reason(server, tmp_path):
    srv, key = server
    root = make_problem(tmp_path / "broken")
    (root / "evaluator.py").write_text(
        "import sys\n\ndef evaluate(program_path):\n"
        "    print('the data \\x1b[31mis missing', file=sys.stderr)\n"
        "    raise RuntimeError('no data here')\n")
    proc = remote(srv, "submit", str(root), "--mutator", "local", "--iterations", "50",
                  "--follow", "--json", key=key)
    assert proc.returncode == 1, proc.stderr               # printed, and a failed exit code
    result = json.loads(proc.stdout)
    assert result["status"] == "failed" and result["evaluations"] == 1
    assert "the seed program failed" in result["error"] and "no data here" in result["error"]
    shown = remote(srv, "status", str(result["campaign_id"]), key=key)
    assert "error: the seed program failed" in shown.stdout and "\x1b" not in shown.stdout
    assert "\\x1b[31mis missing" in shown.stdout        # the stderr tail, escaped


@pytest.mark.skipif(not (OE_EXAMPLES / "function_minimization").is_dir(),
                    reason="OpenEvolve's examples are not checked out at /work/oe/examples")
def test_openevolve_example_function_minimization(server):
    srv, key = server
    proc = remote(srv, "submit", str(OE_EXAMPLES / "function_minimization"), "--mutator", "local",
                  "--iterations", "5", "--follow", "--json", key=key, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert result["status"] == "completed", result
    assert result["best_score"] >= result["seed_score"]
