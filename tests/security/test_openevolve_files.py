"""An OpenEvolve problem directory ships only what its evaluator needs, and no key is stored.

The directory holds what real ones do: a config.yaml with `llm.api_key` (and a per-model key,
headers, a user:password in api_base), a credentials.json, a .env, a settings.json with an
api_key in it, a symlink to /etc/passwd, and the data file the evaluator opens. The candidate
(run by the real CLI in the real sandbox) lists and reads everything it can reach and reports
it through a metric; the database file, `GET /campaigns/{id}`, the LLM endpoint and the terminal
must show none of the secrets. Over REST, `params.files` with such files is refused.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECRETS = ("sk-SECRET-config-123", "sk-SECRET-model-456", "SECRET-header-789", "sk-SECRET-url-000",
           "CRED-SECRET-111", "ENV-SECRET-222", "JSON-SECRET-333")

EVALUATOR = '''\
import importlib.util


def evaluate(program_path):
    with open("data.csv") as f:
        rows = [r for r in f.read().splitlines() if r]
    spec = importlib.util.spec_from_file_location("candidate", program_path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return {"combined_score": float(len(rows)), "seen": mod.snoop()}
'''

CANDIDATE = '''\
# EVOLVE-BLOCK-START
import os

MARK = "SEC" + "RET"   # the secrets' common part, never spelled out in this program


def snoop():
    """Everything this program can see near it, and which of it holds a secret."""
    seen = []
    for where in (".", "..", {host_dir!r}):
        try:
            names = sorted(os.listdir(where))
        except OSError as exc:
            seen.append(where + ":" + type(exc).__name__)
            continue
        for name in names:
            seen.append(name)
            try:
                with open(os.path.join(where, name), errors="replace") as f:
                    if MARK in f.read():
                        seen.append("LEAK:" + name)
            except OSError:
                pass
    return ";".join(seen)
# EVOLVE-BLOCK-END
'''


def make_problem(d: Path, llm_url: str) -> Path:
    d.mkdir()
    host, _, rest = llm_url.removeprefix("http://").partition("/")
    (d / "config.yaml").write_text(f"""\
max_iterations: 2
llm:
  api_base: "http://user:sk-SECRET-url-000@{host}/{rest}"
  api_key: "sk-SECRET-config-123"
  headers:
    Authorization: "Bearer SECRET-header-789"
  models:
    - name: "m"
      weight: 1.0
      api_key: "sk-SECRET-model-456"
evaluator:
  timeout: 30
  cascade_evaluation: false
""")
    (d / "credentials.json").write_text('{"token": "CRED-SECRET-111"}\n')
    (d / ".env").write_text("OPENAI_API_KEY=ENV-SECRET-222\n")
    (d / "settings.json").write_text('{"api_key": "JSON-SECRET-333"}\n')
    (d / "system_users.txt").symlink_to("/etc/passwd")
    (d / "data.csv").write_text("1\n2\n3\n")
    (d / "evaluator.py").write_text(EVALUATOR)
    (d / "initial_program.py").write_text(CANDIDATE.format(host_dir=str(d)))
    return d


def run_cli(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVOFORGE_", "OPENAI_"))}
    env.update(EVOFORGE_HOME=str(home), PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "evoforge.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def campaign(tmp_path, listener):
    d = make_problem(tmp_path / "problem", listener.url)
    db = tmp_path / "oe.db"
    p = run_cli("openevolve", str(d / "initial_program.py"), str(d / "evaluator.py"),
                "--config", str(d / "config.yaml"), "--db", f"sqlite:///{db}", "--json",
                home=tmp_path / "home")
    assert p.returncode == 0, p.stderr[-3000:]
    return d, db, p, json.loads(p.stdout.strip().splitlines()[-1])


def test_only_the_evaluator_and_its_data_are_shipped_and_the_cli_says_so(campaign, listener):
    _, _, p, out = campaign
    assert out["shipped_files"] == ["evaluator.py", "data.csv", "initial_program.py"]
    skipped = dict(s.split(" (", 1) for s in out["skipped_files"])
    assert skipped[".env"].startswith("hidden")
    assert skipped["config.yaml"].startswith("a config file")
    assert skipped["credentials.json"].startswith("secret-looking name")
    assert skipped["settings.json"].startswith("secret-looking content")
    assert skipped["system_users.txt"].startswith("symlink")
    assert sorted(out["ignored_config_keys"]) == sorted([
        "llm.api_base user:password", "llm.api_key", "llm.headers", "llm.models[0].api_key"])
    err = p.stderr
    assert "read config.yaml; ignored llm.api_base user:password, llm.api_key," in err
    assert "keys come from the environment" in err
    assert "shipped 3 files into the sandbox: evaluator.py, data.csv, initial_program.py" in err
    assert "skipped: " in err and "credentials.json (secret-looking name)" in err
    assert "never read" not in err  # the old message claimed this while the file was shipped
    for secret in SECRETS:
        assert secret not in p.stdout + p.stderr
    # The LLM endpoint was called (2 iterations) and never got a key from the config.
    assert listener.requests, "the mutator never called the configured endpoint"
    for r in listener.requests:
        assert "SECRET" not in json.dumps(r.headers) + r.path + r.body.decode(errors="replace")


def test_the_candidate_cannot_see_the_secrets_and_nothing_is_stored(campaign, live_server):
    d, db, _, out = campaign
    raw = db.read_bytes() + b"".join(p.read_bytes() for p in db.parent.glob("oe.db-*"))
    for secret in SECRETS:
        assert secret.encode() not in raw, f"{secret} is in the database file"
    srv = live_server(db.name, execute=False)
    with srv.client() as c:
        r = c.get(f"/campaigns/{out['campaign_id']}")
        assert r.status_code == 200, r.text
        body = r.text
        assert sorted(r.json()["params"]["files"]) == ["data.csv", "evaluator.py", "initial_program.py"]
        progs = c.get(f"/campaigns/{out['campaign_id']}/programs", params={"limit": 100})
        assert progs.status_code == 200, progs.text
        details = [c.get(f"/programs/{item['id']}").json() for item in progs.json()["items"]]
    for secret in SECRETS:
        assert secret not in body
    assert "credentials" not in body and "config.yaml" not in body and "user:" not in body
    seen = [d["metrics"]["seen"] for d in details if "seen" in (d.get("metrics") or {})]
    assert seen and all("data.csv" in s for s in seen), seen  # the snoop works: it saw the data
    for s in seen:
        assert "LEAK:" not in s, s
        for name in ("credentials.json", ".env", "config.yaml", "settings.json", "system_users.txt"):
            assert name not in s.split(";"), (name, s)


REST_BASE = {"task": "openevolve", "program": "def f():\n    return 1\n", "seed": 0,
             "budget": {"max_evaluations": 1}}
GOOD_FILES = {"evaluator.py": "def evaluate(p):\n    return {'combined_score': 1.0}\n",
              "data.csv": "1\n"}


@pytest.mark.parametrize("name,text,why", [
    ("config.yaml", "llm:\n  api_key: sk-SECRET-config-123\n", "config"),
    ("config_phase_1.yml", "max_iterations: 3\n", "config"),
    ("credentials.json", "{}\n", "secret-looking name"),
    (".env", "A=1\n", "hidden"),
    ("settings.json", '{"api_key": "JSON-SECRET-333"}', "secret-looking content"),
    ("helper.py", "KEY = 'sk-SECRETabcdefghijklmnop'\n", "secret-looking content"),
    ("../escape.py", "x = 1\n", "plain file name"),
    ("id_rsa", "x\n", "secret-looking name"),
])
def test_rest_refuses_secret_looking_files_in_params(live_server, name, text, why):
    srv = live_server(execute=False)
    with srv.client() as c:
        r = c.post("/campaigns", json={**REST_BASE, "params": {"files": {**GOOD_FILES, name: text}}})
        assert r.status_code == 422, r.text
        assert why in r.text and name in r.text
        assert "SECRET" not in r.text  # the refusal names the file, never its content
        ok = c.post("/campaigns", json={**REST_BASE, "params": {"files": GOOD_FILES}})
        assert ok.status_code == 201, ok.text


# -- the rules themselves (pure functions) ----------------------------------------------------

def test_a_large_data_file_is_checked_in_linear_time(live_server):
    """A 1 MB run of word characters in a data file: the secret-content scan must not backtrack
    quadratically (it took ~22 s for 20 KB, so days for 1 MB, holding the request)."""
    srv = live_server(execute=False)
    with srv.client() as c:
        files = {**GOOD_FILES, "data.csv": "a" * 1_000_000}
        r = c.post("/campaigns", json={**REST_BASE, "params": {"files": files}}, timeout=30)
        assert r.status_code == 201, r.text



def test_secret_rules_catch_keys_and_spare_ordinary_names():
    import yaml

    from evoforge.evaluators.openevolve.files import refusal
    from evoforge.evaluators.openevolve.redact import drop_secrets

    for name in ("credentials.json", "client_secret.json", "token.txt", "auth_tokens.csv",
                 "server.pem", "tls.key", "id_ed25519", "netrc", "my-api-key.txt", "config.yml",
                 "config_phase_2.yaml", ".env.local", ".git"):
        assert refusal(name), name
    for name in ("tokenizer.json", "data.csv", "helper.py", "keys_of_the_piano.txt", "params.yaml"):
        assert refusal(name) is None, name
    assert refusal("data.json", '{"password": "hunter22"}')
    assert refusal("helper.py", "token = tokenizer.encode(text)\n") is None  # code, not a secret
    assert refusal("helper.py", "-----BEGIN OPENSSH PRIVATE KEY-----\n")

    cfg = yaml.safe_load("""
llm:
  max_tokens: 100
  api_base: "https://u:p@example.com/v1?api-key=abc&api-version=2024"
  models: [{name: a, weight: 1, api_key: k1}, {name: b, extra_headers: {X-Key: k2}}]
evaluator: {timeout: 5, auth_token: k3}
loop: &loop [1]
""")
    cfg["loop"].append(cfg["loop"])  # a cycle (YAML aliases can make one) is visited once
    dropped = drop_secrets(cfg)
    assert sorted(dropped) == ["evaluator.auth_token", "llm.api_base query key",
                               "llm.api_base user:password", "llm.models[0].api_key",
                               "llm.models[1].extra_headers"]
    assert cfg["llm"]["max_tokens"] == 100 and cfg["evaluator"] == {"timeout": 5}
    assert cfg["llm"]["api_base"] == "https://example.com/v1?api-version=2024"
    assert "k1" not in repr(cfg) and "k2" not in repr(cfg) and "abc" not in repr(cfg)


def test_include_exclude_and_limits(tmp_path):
    from evoforge.evaluators.openevolve.files import SHIP_FILE_BYTES, SHIP_MAX_FILES, ship_files

    ev = tmp_path / "evaluator.py"
    ev.write_text(EVALUATOR)
    (tmp_path / "points.dat").write_text("1 2\n")
    (tmp_path / "data.csv").write_text("1\n")
    (tmp_path / "notes.md").write_text("# notes\n")
    (tmp_path / "credentials.json").write_text("{}\n")
    (tmp_path / "big.txt").write_text("x" * (SHIP_FILE_BYTES + 1))
    (tmp_path / "blob.csv").write_bytes(b"\xff\xfe\x00")
    (tmp_path / "sub").mkdir()
    for i in range(SHIP_MAX_FILES + 5):
        (tmp_path / f"z{i:03d}.py").write_text("x = 1\n")
    got = ship_files(ev, EVALUATOR, include=["*.dat", "credentials.*"], exclude=["data.csv"])
    assert "points.dat" in got.files and "data.csv" not in got.files and "notes.md" not in got.files
    assert len(got.files) == SHIP_MAX_FILES
    reasons = dict(s.split(" (", 1) for s in got.skipped)
    assert reasons["credentials.json"].startswith("secret-looking name")  # --include cannot add it
    assert reasons["data.csv"].startswith("excluded")
    assert reasons["notes.md"].startswith("not a code or data suffix")
    assert reasons["big.txt"].startswith("larger than")
    assert reasons["blob.csv"].startswith("not UTF-8")
    assert reasons["sub"].startswith("directory")
    assert sum(r.startswith(f"over {SHIP_MAX_FILES} files") for r in reasons.values()) >= 5
