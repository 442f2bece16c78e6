"""API keys and tenancy over a real HTTP server."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from evoforge.db import apikeys
from evoforge.db.engine import session_factory, upgrade

CAMPAIGN = {"task": "circle_packing", "budget": {"max_evaluations": 15}}


def make_key(db_url: str, project: str) -> str:
    upgrade(db_url)
    return apikeys.create_key(session_factory(db_url), project)[0]


def test_keys_are_hashed_and_prefixed(tmp_path):
    url = f"sqlite:///{tmp_path / 'k.db'}"
    key = make_key(url, "alpha")
    assert key.startswith("evf_") and len(key) > 40
    from evoforge.db.models import ApiKey, Project
    with session_factory(url)() as s:
        row = s.query(ApiKey).one()
        assert row.key_hash == apikeys.hash_key(key) and key not in (row.key_hash, row.prefix)
        assert s.get(Project, row.project_id).name == "alpha"
    other = apikeys.create_key(session_factory(url), "alpha")
    assert other[1] == row.project_id and other[0] != key
    assert apikeys.project_of_key(session_factory(url), key) == row.project_id
    assert apikeys.project_of_key(session_factory(url), key + "x") is None
    assert apikeys.revoke_key(session_factory(url), row.id)
    assert apikeys.project_of_key(session_factory(url), key) is None


def test_projects_are_isolated(live_server, tmp_path):
    srv = live_server(execute=False)
    key_a, key_b = make_key(srv.db_url, "alpha"), make_key(srv.db_url, "beta")
    with srv.client(key_a) as a, srv.client(key_b) as b, srv.client() as anon:
        r = a.post("/campaigns", json=CAMPAIGN)
        assert r.status_code == 201
        cid = r.json()["id"]
        assert a.get(f"/campaigns/{cid}").status_code == 200
        assert a.get("/campaigns").json()["total"] == 1

        for path in (f"/campaigns/{cid}", f"/campaigns/{cid}/elites", f"/campaigns/{cid}/programs",
                     f"/campaigns/{cid}/schedule", f"/campaigns/{cid}/events"):
            r = b.get(path)
            assert r.status_code == 404, path
            assert r.json()["detail"] == f"campaign {cid} not found"   # same as a missing one
        assert b.get("/campaigns/987654").json()["detail"] == "campaign 987654 not found"
        for action in ("pause", "resume", "cancel"):
            assert b.post(f"/campaigns/{cid}/{action}").status_code == 404
        assert b.delete(f"/campaigns/{cid}").status_code == 404
        assert b.put(f"/campaigns/{cid}/schedule", json={"cron": "0 3 * * *"}).status_code == 404
        assert b.get("/campaigns").json()["total"] == 0
        assert a.get(f"/campaigns/{cid}").json()["status"] == "queued"   # b changed nothing

        r = anon.get(f"/campaigns/{cid}")
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert anon.get("/campaigns").status_code == 401
        assert anon.get("/tasks").status_code == 401
        assert anon.post("/campaigns", json=CAMPAIGN).status_code == 401
        bad = httpx.get(srv.url + "/api/v1/campaigns", headers={"Authorization": "Bearer evf_nope"})
        assert bad.status_code == 401 and "invalid" in bad.json()["detail"]
        basic = httpx.get(srv.url + "/api/v1/campaigns", headers={"Authorization": "Basic Zm9vOmJhcg=="})
        assert basic.status_code == 401
        assert anon.get("/healthz").status_code == 200   # probes need no key

    # programs are scoped through their campaign: an ad-hoc evaluation of project alpha
    from evoforge.db.blobs import put_code
    from evoforge.db.models import Program
    from evoforge.evolution.types import OK
    from evoforge.worker.evaluate import adhoc_campaign
    from evoforge.evaluators.base import get_task, parse_params
    sessions = session_factory(srv.db_url)
    task = get_task("circle_packing")
    pid_alpha = apikeys.project_of_key(sessions, key_a)
    adhoc = adhoc_campaign(sessions, task, parse_params(task, {}), pid_alpha)
    with sessions.begin() as s:
        p = Program(campaign_id=adhoc, iteration=0, code_hash=put_code(s, "x = 1\n"), status=OK,
                    score=1.0)
        s.add(p)
        s.flush()
        program_id = p.id
    with srv.client(key_a) as a, srv.client(key_b) as b:
        assert a.get(f"/programs/{program_id}").status_code == 200
        assert a.get(f"/programs/{program_id}/lineage").status_code == 200
        assert b.get(f"/programs/{program_id}").status_code == 404
        assert b.get(f"/programs/{program_id}/lineage").status_code == 404


def test_open_mode_only_on_loopback_without_keys(live_server):
    srv = live_server("open.db", execute=False)           # bound to 127.0.0.1
    with srv.client() as anon:
        r = anon.post("/campaigns", json=CAMPAIGN)
        assert r.status_code == 201
        open_cid = r.json()["id"]
        assert anon.get("/campaigns").json()["total"] == 1
        key = make_key(srv.db_url, "alpha")                # the first key closes open mode
        assert anon.get("/campaigns").status_code == 401
    with srv.client(key) as a:
        # project-less (open mode) campaigns belong to no project
        assert a.get(f"/campaigns/{open_cid}").status_code == 404

    wide = live_server("wide.db", execute=False, bind_host="0.0.0.0")  # not loopback
    with wide.client() as anon:
        r = anon.get("/campaigns")
        assert r.status_code == 401 and "API key is required" in r.json()["detail"]

    forced = live_server("forced.db", execute=False, open_mode=False)
    with forced.client() as anon:
        assert anon.get("/campaigns").status_code == 401


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_apikey_and_serve(tmp_path):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    exe = str(Path(sys.executable).with_name("evoforge"))
    env = {**os.environ, "EVOFORGE_HOME": str(tmp_path / "home")}
    env.pop("EVOFORGE_BROKER_URL", None)
    out = subprocess.run([exe, "apikey", "create", "--project", "team-a", "--json", "--db", url],
                         capture_output=True, text=True, env=env, check=True)
    created = json.loads(out.stdout)
    assert created["project"] == "team-a" and created["key"].startswith("evf_")
    listed = subprocess.run([exe, "apikey", "list", "--json", "--db", url], capture_output=True,
                            text=True, env=env, check=True)
    rows = json.loads(listed.stdout)
    assert rows[0]["project"] == "team-a" and created["key"] not in listed.stdout

    port = free_port()
    proc = subprocess.Popen([exe, "serve", "--host", "127.0.0.1", "--port", str(port), "--db", url,
                             "--log-level", "warning"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}/api/v1"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(base + "/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
            time.sleep(0.1)
        assert httpx.get(base + "/campaigns").status_code == 401        # a key exists
        ok = httpx.get(base + "/campaigns", headers={"Authorization": f"Bearer {created['key']}"})
        assert ok.status_code == 200 and ok.json()["total"] == 0
        assert httpx.get(f"http://127.0.0.1:{port}/docs").status_code == 200
    finally:
        proc.terminate()
        proc.wait(30)
