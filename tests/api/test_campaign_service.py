"""One campaign service behind the API and the CLI (worker/campaign_service.py): the same list,
the same resume, ad-hoc evaluations marked by a column. Real server, real SQLite, real sandbox,
and the real `evoforge` command on the same database."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.api.conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]
SMALL = {"task": "circle_packing", "params": {"n": 26}, "budget": {"max_evaluations": 4}}


def _finished(c, cid):
    body = c.get(f"/campaigns/{cid}").json()
    return body if body["status"] in ("completed", "cancelled", "failed") else None


def _cli(db_url: str, *args: str) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "evoforge.cli", *args, "--db", db_url], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    return p


def test_a_campaign_named_adhoc_is_listed_and_the_bookkeeping_one_is_not(live_server):
    srv = live_server()
    with srv.client() as c:
        r = c.post("/evaluations", json={"task": "circle_packing", "params": {"n": 26},
                                         "code": "def pack_circles(n):\n    return []\n"})
        assert r.status_code == 200, r.text
        assert c.get("/campaigns").json()["total"] == 0      # the bookkeeping campaign is hidden
        cid = c.post("/campaigns", json={**SMALL, "name": "adhoc"}).json()["id"]
        wait_for(lambda: _finished(c, cid), timeout_s=180)
        listed = c.get("/campaigns").json()
        assert [(x["id"], x["name"]) for x in listed["items"]] == [(cid, "adhoc")]
        assert listed["total"] == 1
        # a user's "adhoc" campaign can be scheduled like any other
        r = c.put(f"/campaigns/{cid}/schedule", json={"cron": "0 3 * * *", "evaluations_per_run": 2})
        assert r.status_code in (200, 204), r.text
    rows = json.loads(_cli(srv.db_url, "campaigns", "--json").stdout)
    assert [(r["campaign_id"], r["name"]) for r in rows] == [(cid, "adhoc")]


def test_resume_means_the_same_in_the_api_and_the_cli(live_server):
    srv = live_server()
    with srv.client() as c:
        cid = c.post("/campaigns", json=SMALL).json()["id"]
        done = wait_for(lambda: _finished(c, cid), timeout_s=180)
        assert done["status"] == "completed" and done["evaluations"] == 4
        # a completed campaign resumes only with more evaluations
        r = c.post(f"/campaigns/{cid}/resume")
        assert r.status_code == 409 and "completed" in r.json()["detail"]
        r = c.post(f"/campaigns/{cid}/resume", params={"evaluations": 3})
        assert r.status_code == 200, r.text
        done = wait_for(lambda: _finished(c, cid), timeout_s=180)
        assert done["status"] == "completed" and done["evaluations"] == 7
        assert done["max_evaluations"] == done["budget"]["max_evaluations"] == 7  # one total
    # The CLI's --resume: the same service call, the same meaning.
    out = json.loads(_cli(srv.db_url, "run", "circle_packing", "--resume", str(cid),
                          "--iterations", "2", "--json").stdout.strip().splitlines()[-1])
    assert out["evaluations"] == 9 and out["max_evaluations"] == out["budget"]["max_evaluations"] == 9
    with srv.client() as c:
        cancelled = c.post("/campaigns", json={**SMALL, "budget": {"max_evaluations": 10**6}}).json()["id"]
        assert c.post(f"/campaigns/{cancelled}/cancel").status_code == 200
        r = c.post(f"/campaigns/{cancelled}/resume", params={"evaluations": 3})
        assert r.status_code == 409 and "cancelled" in r.json()["detail"]
    p = subprocess.run([sys.executable, "-m", "evoforge.cli", "run", "circle_packing", "--resume",
                        str(cancelled), "--iterations", "2", "--db", srv.db_url], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 1 and "cancelled" in p.stderr


def test_summaries_are_readable_and_json_keeps_every_digit(tmp_path):
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    text = _cli(db, "run", "circle_packing", "--iterations", "3").stdout
    best = json.loads(_cli(db, "campaigns", "--json").stdout)[0]["best_score"]
    assert len(repr(best)) > 10                        # a float with many digits ...
    assert f"best score {best:.6g} " in text          # ... shown with 6 significant ones
    assert repr(best) not in text
    listed = _cli(db, "campaigns").stdout
    assert f"best {best:.6g} " in listed and repr(best) not in listed


def test_resume_past_the_largest_budget_is_refused_and_nothing_changes(live_server):
    """A resume whose budget would pass the largest a campaign may have is a 422 (it used to be
    stored, and the campaign then failed to load: 500s on every read of it)."""
    srv = live_server(execute=False)
    with srv.client() as c:
        cid = c.post("/campaigns", json={"task": "circle_packing", "params": {"n": 5}}).json()["id"]
        assert c.post(f"/campaigns/{cid}/pause").status_code == 200
        r = c.post(f"/campaigns/{cid}/resume", params={"evaluations": 10_000_000})
        assert r.status_code == 422 and "beyond the largest" in r.text, r.text
        after = c.get(f"/campaigns/{cid}")
        assert after.status_code == 200 and after.json()["status"] == "paused"
        assert after.json()["budget"]["max_evaluations"] is None
