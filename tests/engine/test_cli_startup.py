"""Start-up of `evoforge openevolve` / `evoforge run`: what it must not import on that path, and
what it must leave behind (the GC running again, no sandbox server or starter thread), also when
the command fails early. Run in a fresh interpreter, as the command is."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.services import pg_url, postgres_server  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "openevolve" / "fixtures" / "dict_problem"

DRIVER = r"""
import gc, json, sys, threading
from evoforge.cli.main import main

def state(rc):
    return {"rc": rc, "gc_enabled": gc.isenabled(), "frozen": gc.get_freeze_count(),
            "modules": sorted(m for m in ("rich", "alembic", "fastapi", "uvicorn", "celery", "evoforge.api.app")
                              if m in sys.modules),
            "numpy": "numpy" in sys.modules,
            "starters": [t.name for t in threading.enumerate() if t.name == "evoforge-sandbox-start"]}

try:
    main(sys.argv[1:], standalone_mode=False)
    rc = 0
except Exception as exc:
    rc = type(exc).__name__
sys.stdout.flush()
print("STATE " + json.dumps(state(rc)))
"""


def _drive(*args, tmp_path, db_url=None):
    env = {"EVOFORGE_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    if db_url:
        env["EVOFORGE_DATABASE_URL"] = db_url
    p = subprocess.run([sys.executable, "-c", DRIVER, *args], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    lines = p.stdout.strip().splitlines()
    state = json.loads(lines[-1].removeprefix("STATE "))
    return state, lines[:-1], p.stderr


def test_openevolve_json_start_up(tmp_path):
    state, out, _ = _drive("openevolve", str(FIX / "initial_program.py"), str(FIX / "evaluator.py"),
                           "--config", str(FIX / "config.yaml"), "--iterations", "0",
                           "--db", f"sqlite:///{tmp_path / 'oe.db'}",
                           "--llm-base-url", "http://127.0.0.1:9/v1", "--json", tmp_path=tmp_path)
    summary = json.loads(out[-1])
    assert state["rc"] == 0 and summary["status"] == "completed" and summary["evaluations"] == 1
    assert summary["mutator"] == "llm"
    assert state["gc_enabled"] and state["frozen"] > 0  # paused for the start-up, then frozen
    assert state["modules"] == []  # no progress bar, no migrations to replay, no service code
    assert state["starters"] == []


def test_run_start_up_and_an_early_failure(tmp_path):
    state, out, _ = _drive("run", "circle_packing", "--iterations", "2", "--json", tmp_path=tmp_path)
    assert state["rc"] == 0 and json.loads(out[-1])["evaluations"] == 3
    assert state["gc_enabled"] and state["starters"] == [] and state["modules"] == []

    # failures after the sandbox was started: it is closed, the GC is back on
    state, _, _ = _drive("run", "no_such_task", "--json", tmp_path=tmp_path)
    assert state["rc"] == "ClickException"
    assert state["gc_enabled"] and state["starters"] == []
    bad = tmp_path / "evaluator.py"
    bad.write_text("def evaluate(path):\n    return {\n")
    state, _, _ = _drive("openevolve", str(FIX / "initial_program.py"), str(bad), "--json",
                         tmp_path=tmp_path)
    assert state["rc"] == "ClickException"
    assert state["gc_enabled"] and state["starters"] == []


def _read_commands_import_little(tmp_path, db_url):
    """`evoforge campaigns` and `best` only read the database: no Alembic (the schema is at
    head), no numpy (nothing to evaluate), which were 0.6-0.9 s of their 1 s at a million
    programs (docs/benchmarks.md)."""
    state, out, err = _drive("run", "circle_packing", "--iterations", "2", "--json",
                             tmp_path=tmp_path, db_url=db_url)
    assert state["rc"] == 0, err
    campaign = json.loads(out[-1])["campaign_id"]
    for args in (("campaigns",), ("best", str(campaign))):
        state, out, err = _drive(*args, tmp_path=tmp_path, db_url=db_url)
        assert state["rc"] == 0, err
        assert "alembic" not in state["modules"] and not state["numpy"], (args, state)
    assert "def pack_circles" in "\n".join(out)


def test_read_commands_import_little_on_sqlite(tmp_path):
    _read_commands_import_little(tmp_path, f"sqlite:///{tmp_path / 'read.db'}")


@pytest.mark.integration
def test_read_commands_import_little_on_postgres(tmp_path, pg_url):
    _read_commands_import_little(tmp_path, pg_url)
