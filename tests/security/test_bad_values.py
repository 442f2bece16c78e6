"""Bad values never break a campaign or a response (evolution/sanitize.py, db/store.py).

An attacker controls what a candidate prints, raises and returns, what an uploaded evaluator
reports, and (through a prompt) what an LLM replies. None of it may fail the campaign, fail a
response, or pass for what the sandbox captured.
"""
from __future__ import annotations

import json
import math
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.integration.services import pg_url, postgres_server  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]

RAISES = ("def pack_circles(n):\n"
          "    raise ValueError('bad ' + chr(0xdcff) + ' and ' + chr(0) + ' end')\n")
RETURNS_NAN = ("import numpy as np\n"
               "def pack_circles(n):\n"
               "    return np.full((n, 3), float('nan'))\n")

# An OpenEvolve-style evaluator whose metrics hold NaN and whose artifacts are named like the
# fields EvoForge captures. It writes a line to stderr, which the sandbox captures.
EVALUATOR = '''
import sys
from openevolve.evaluation_result import EvaluationResult

def evaluate(program_path):
    sys.stderr.write("captured by the sandbox\\n")
    return EvaluationResult(
        metrics={"combined_score": 0.5, "loss": float("nan"), "big": 10 ** 30},
        artifacts={"stderr": "forged stderr", "reason": "forged reason", "stage": "forged",
                   "sanitized": "forged", "note": "bad \\udcff byte"})
'''
SEED = "# EVOLVE-BLOCK-START\ndef guess():\n    return 1.0\n# EVOLVE-BLOCK-END\n"


def test_exception_with_surrogate_and_nul_is_a_recorded_failure(live_server):
    srv = live_server()
    with srv.client() as c:
        r = c.post("/evaluations", json={"task": "circle_packing", "code": RAISES})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "error" and body["score"] is None
        assert "bad \\udcff and  end" in body["reason"]  # escaped, NUL removed, nothing lost else
        assert "\x00" not in body["reason"] + (body["stderr"] or "")

        g = c.get(f"/programs/{body['program_id']}")
        assert g.status_code == 200, g.text
        ev = g.json()["evaluation"]
        assert ev["status"] == "error" and "bad \\udcff and  end" in ev["artifacts"]["reason"]
        notes = ev["artifacts"]["sanitized"]
        assert "artifacts.reason: 1 NUL removed" in notes
        assert "artifacts.reason: 1 lone surrogate escaped" in notes

        nan = c.post("/evaluations", json={"task": "circle_packing", "code": RETURNS_NAN})
        assert nan.status_code == 200, nan.text
        assert nan.json()["status"] in ("invalid", "error")
        assert nan.json()["score"] is None or math.isfinite(nan.json()["score"])
        assert nan.json()["reason"]
        assert c.get(f"/programs/{nan.json()['program_id']}").status_code == 200


def test_rows_stored_before_the_fix_are_still_served(live_server, tmp_path):
    """A row written by an older EvoForge (or by hand) with a lone surrogate and NaN in its JSON
    columns is served, escaped, instead of failing the response."""
    srv = live_server()
    with srv.client() as c:
        made = c.post("/evaluations", json={"task": "circle_packing", "code": "def pack_circles(:\n"})
        assert made.status_code == 200, made.text
        pid = made.json()["program_id"]
    db = sqlite3.connect(srv.db_url.removeprefix("sqlite:///"))
    with db:
        db.execute("UPDATE evaluation SET artifacts = ?, metrics = ?, features = ? WHERE program_id = ?",
                   ('{"reason": "old \\udcff row", "\\ud800key": [NaN]}',
                    '{"loss": NaN, "gain": Infinity}', '{"f": -Infinity}', pid))
        db.execute("UPDATE program SET extra = ?, score = NULL WHERE id = ?",
                   ('{"traceback": "tb \\udfff"}', pid))
        cid = db.execute("SELECT campaign_id FROM program WHERE id = ?", (pid,)).fetchone()[0]
    db.close()
    with srv.client() as c:
        g = c.get(f"/programs/{pid}")
        assert g.status_code == 200, g.text
        p = g.json()
        assert p["evaluation"]["artifacts"]["reason"] == "old \\udcff row"
        assert p["evaluation"]["artifacts"]["\\ud800key"] == [None]
        assert p["evaluation"]["metrics"] == {"loss": None, "gain": None}
        assert p["extra"]["traceback"] == "tb \\udfff"
        listing = c.get(f"/campaigns/{cid}/programs")
        assert listing.status_code == 200, listing.text


def test_evaluator_artifacts_cannot_replace_what_the_sandbox_captured(live_server):
    srv = live_server()
    with srv.client() as c:
        r = c.post("/campaigns", json={"task": "openevolve", "params": {"files": {"evaluator.py": EVALUATOR}},
                                       "program": SEED, "mutator": {"kind": "local"},
                                       "budget": {"max_evaluations": 2}})
        assert r.status_code == 201, r.text
        cid = r.json()["id"]
        deadline = time.monotonic() + 120
        while (camp := c.get(f"/campaigns/{cid}").json())["status"] in ("queued", "running"):
            assert time.monotonic() < deadline, camp
            time.sleep(0.2)
        assert camp["status"] == "completed", camp
        programs = c.get(f"/campaigns/{cid}/programs", params={"sort": "iteration"}).json()["items"]
        seed = c.get(f"/programs/{programs[0]['id']}")
        assert seed.status_code == 200, seed.text
    ev = seed.json()["evaluation"]
    art = ev["artifacts"]
    assert ev["status"] == "ok" and ev["score"] == 0.5
    assert "captured by the sandbox" in art["stderr"]          # what the sandbox captured
    assert art.get("reason") != "forged reason" and art.get("stage") != "forged"
    assert art["evaluator"]["stderr"] == "forged stderr"       # the evaluator's own, kept apart
    assert art["evaluator"]["reason"] == "forged reason"
    assert art["evaluator"]["note"] == "bad \\udcff byte"
    assert "metrics.loss: NaN -> null" in art["sanitized"]     # EvoForge's note, not the forgery
    assert ev["metrics"]["loss"] is None and ev["metrics"]["big"] == 1e30


def _openevolve_problem(tmp_path: Path, evaluator: str) -> tuple[Path, Path]:
    d = tmp_path / "problem"
    d.mkdir()
    (d / "initial_program.py").write_text(SEED)
    (d / "evaluator.py").write_text(evaluator)
    return d / "initial_program.py", d / "evaluator.py"


NUL_REPLY = ("Here is the change.\x00\n"
             "<<<<<<< SEARCH\n    return 1.0\n=======\n    return 2.0  # \x00 oops\n>>>>>>> REPLACE\n")


@pytest.mark.integration
def test_nan_metric_and_nul_reply_do_not_fail_a_postgres_campaign(pg_url, listener, tmp_path):
    """The same campaign that completes on SQLite completes on PostgreSQL: the NaN metric and
    the NUL in the model's reply are cleaned and noted, never a DataError that fails it."""
    listener.reply = NUL_REPLY
    program, evaluator = _openevolve_problem(tmp_path, EVALUATOR)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVOFORGE_", "OPENAI_"))}
    env["EVOFORGE_HOME"] = str(tmp_path / "home")
    proc = subprocess.run([sys.executable, "-m", "evoforge.cli", "openevolve", str(program), str(evaluator),
                           "--iterations", "3", "--db", pg_url, "--llm-base-url", listener.url,
                           "--json"], capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["status"] == "completed", out
    assert out["evaluations"] == 4 and out["error"] is None
    assert out["seed_score"] == 0.5 and out["best_score"] == 0.5
    assert any(r.path.endswith("/chat/completions") for r in listener.requests)

    engine = create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT p.iteration, p.status, p.response_z, e.metrics::text, e.artifacts::text "
            "FROM program p JOIN evaluation e ON e.program_id = p.id ORDER BY p.iteration")).all()
        from evoforge.db.blobs import decode_texts
        replies = decode_texts(conn, [r[2] for r in rows])   # the stored reply, exactly
        rows = [(r[0], r[1], reply, r[3], r[4]) for r, reply in zip(rows, replies)]
    engine.dispose()
    assert len(rows) == 4
    seed_metrics, seed_artifacts = json.loads(rows[0][3]), json.loads(rows[0][4])
    assert seed_metrics["loss"] is None and seed_metrics["combined_score"] == 0.5
    assert "metrics.loss: NaN -> null" in seed_artifacts["sanitized"]
    replies = [r for r in rows[1:] if r[2] is not None]
    assert replies, rows
    for _, status, response, _, artifacts in replies:
        assert "\x00" not in response and response.startswith("Here is the change.")
        assert "response: 2 NUL removed" in json.loads(artifacts)["sanitized"]
        assert status != "ok"  # the edit with a NUL in it never became a program


class Unstorable:  # a value no cleaning anticipates, which the JSON encoder rejects
    def __repr__(self) -> str:
        raise RuntimeError("no text either")


def test_a_database_refusal_is_one_failed_evaluation(tmp_path):
    """Should the database refuse a row despite the cleaning, that iteration is stored as a
    failed evaluation saying why, and the next one goes on (no exception reaches the runner)."""
    from evoforge.db.engine import upgrade

    url = f"sqlite:///{tmp_path / 'refuse.db'}"
    upgrade(url)
    _refusal_is_one_failed_evaluation(url, {"m": float("nan"), "o": Unstorable()})


@pytest.mark.integration
def test_a_postgres_data_error_is_one_failed_evaluation(pg_url):
    """PostgreSQL's own DataError (NaN is not JSON) on one iteration's row, as it was raised
    before the cleaning: a failed evaluation, not a failed campaign."""
    _refusal_is_one_failed_evaluation(pg_url, {"m": float("nan")})


def _refusal_is_one_failed_evaluation(url: str, bad_metrics: dict) -> None:
    from evoforge.db.engine import session_factory
    from evoforge.db.models import Campaign
    from evoforge.db.store import CampaignStore
    from evoforge.evolution.step import Child
    from evoforge.evolution.types import OK, EvalResult, Mutation
    from evoforge.worker.campaign_service import create_campaign
    from evoforge.db.campaign_config import CampaignSpec

    sessions = session_factory(url)
    cid = create_campaign(sessions, CampaignSpec(task="circle_packing")).id
    store = CampaignStore(sessions, cid)
    child = Child(iteration=0, island=0, parent_id=None, generation=0, code="x = 1\n",
                  code_hash="h0", mutation=Mutation(code="x = 1\n", kind="seed",
                                                    extra={"odd": float("nan")}),
                  result=EvalResult(status=OK, score=1.0, metrics={"m": 1.0}))
    committed = store.commit(child)
    assert committed.result.status == OK and committed.result.artifacts["sanitized"] == \
        ["extra.odd: NaN -> null"]

    import evoforge.db.store as store_module

    real = store_module.clean_child
    store_module.clean_child = lambda c: c  # what the database sees if cleaning missed a value
    try:
        bad = store.commit(Child(iteration=1, island=0, parent_id=committed.program_id, generation=1,
                                 code="x = 2\n", code_hash="h1",
                                 mutation=Mutation(code="x = 2\n", kind="ast:const"),
                                 result=EvalResult(status=OK, score=2.0, metrics=bad_metrics)))
    finally:
        store_module.clean_child = real
    assert bad.result.status == "error" and bad.result.score is None
    assert bad.result.artifacts["stage"] == "commit"
    assert bad.result.artifacts["reason"].startswith("the result could not be stored")
    with sessions() as s:
        c = s.get(Campaign, cid)
        assert c.evaluations == 2 and c.failures == 1 and c.best_score == 1.0
