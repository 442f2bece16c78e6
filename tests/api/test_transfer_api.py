"""REST export, import and prune on a real uvicorn server (loopback, SQLite), two projects:
a project exports and prunes only its own campaigns, an import lands in the caller's project,
paused or finished, and the body is capped at the edge."""
from __future__ import annotations

import time

import httpx
import pytest
from sqlalchemy import func, select

from evoforge.api.routers import transfer as transfer_router
from evoforge.db import apikeys
from evoforge.db.engine import session_factory, upgrade
from evoforge.db.models import Campaign, EliteCell, Program
from tests.engine.test_transfer import _llm_children, _rewrite, normalized

MEDIA = "application/zstd"


@pytest.fixture
def setup(finished_campaign):
    f = finished_campaign(16, extend=lambda sessions, cid: _llm_children(sessions, cid, 4, start=16))
    return f.server, f.sessions, f.cid, f.alpha, f.beta, f.beta_id


def _export(client: httpx.Client, cid: int) -> bytes:
    r = client.get(f"/campaigns/{cid}/export")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == MEDIA
    assert "attachment" in r.headers["content-disposition"]
    return r.content


def test_export_import_round_trip_between_projects(setup):
    server, sessions, cid, alpha, beta, beta_id = setup
    a, b = server.client(alpha), server.client(beta)
    data = _export(a, cid)
    assert b.get(f"/campaigns/{cid}/export").status_code == 404     # not beta's
    assert server.client().get(f"/campaigns/{cid}/export").status_code == 401

    r = b.post("/campaigns/import", content=data, headers={"content-type": MEDIA})
    assert r.status_code == 201, r.text
    copy = r.json()
    assert r.headers["location"] == f"/api/v1/campaigns/{copy['id']}"
    assert copy["status"] == "completed" and copy["evaluations"] == 20
    assert copy["best_score"] == a.get(f"/campaigns/{cid}").json()["best_score"]
    assert a.get(f"/campaigns/{copy['id']}").status_code == 404     # beta's now
    with sessions() as s:
        assert s.get(Campaign, copy["id"]).project_id == beta_id
    assert normalized(_export(b, copy["id"])) == normalized(data)
    # the elites and the lineage came along
    elites = b.get(f"/campaigns/{copy['id']}/elites").json()
    assert sum(len(i["cells"]) for i in elites["islands"]) == sum(
        len(i["cells"]) for i in a.get(f"/campaigns/{cid}/elites").json()["islands"])
    best = b.get(f"/programs/{copy['best_program_id']}").json()
    assert best["campaign_id"] == copy["id"] and best["code"]
    chain = b.get(f"/programs/{copy['best_program_id']}/lineage").json()["ancestors"]
    assert chain[-1]["parent_id"] is None and len(chain) == best["generation"] + 1


def test_imported_running_campaign_arrives_paused_and_stays(setup):
    server, sessions, cid, alpha, beta, _ = setup
    with sessions.begin() as s:
        s.get(Campaign, cid).status = "running"
    data = _export(server.client(alpha), cid)
    with sessions.begin() as s:
        s.get(Campaign, cid).status = "completed"
    r = server.client(beta).post("/campaigns/import", content=data, headers={"content-type": MEDIA})
    assert r.status_code == 201 and r.json()["status"] == "paused"
    time.sleep(1.0)  # the in-process runner would have started it by now
    again = server.client(beta).get(f"/campaigns/{r.json()['id']}").json()
    assert again["status"] == "paused" and again["evaluations"] == 20


def _campaigns(sessions) -> int:
    with sessions() as s:
        return s.scalar(select(func.count()).select_from(Campaign))


def test_refused_imports_store_nothing(setup):
    server, sessions, cid, alpha, beta, _ = setup
    data = _export(server.client(alpha), cid)
    b = server.client(beta)
    before = _campaigns(sessions)
    bad = _rewrite(data, lambda recs: recs[:2] + [{"type": "evil"}] + recs[2:])
    r = b.post("/campaigns/import", content=bad, headers={"content-type": MEDIA})
    assert r.status_code == 422 and "line 3" in r.json()["detail"], r.text
    r = b.post("/campaigns/import", content=b"not zstd at all", headers={"content-type": MEDIA})
    assert r.status_code == 422
    # a campaign that would send its prompts to an address the operator never allowed
    mutator = {"kind": "llm", "base_url": "http://10.1.2.3:9/v1"}
    evil = _rewrite(data, lambda recs: [
        dict(r, config={**r["config"], "mutator": {**r["config"]["mutator"], **mutator}})
        if r["type"] == "campaign" else r for r in recs])
    r = b.post("/campaigns/import", content=evil, headers={"content-type": MEDIA})
    assert r.status_code == 422 and "base_url is not allowed" in r.json()["detail"], r.text
    assert _campaigns(sessions) == before


def test_import_body_is_capped_at_the_edge(tmp_path, fork_sandbox, live_server, monkeypatch):
    url = f"sqlite:///{tmp_path / 'small.db'}"
    upgrade(url)
    key, _ = apikeys.create_key(session_factory(url), "alpha")
    monkeypatch.setattr(transfer_router, "MAX_IMPORT_BYTES", 64 * 1024)
    server = live_server("small.db")
    c = server.client(key)
    body = b"\0" * (100 * 1024)
    r = c.post("/campaigns/import", content=body, headers={"content-type": MEDIA})
    assert r.status_code == 413
    # chunked, without a Content-Length: cut while it is read
    r = c.post("/campaigns/import", content=iter([body[:50_000], body[50_000:]]),
               headers={"content-type": MEDIA})
    assert r.status_code == 413


def test_prune_over_rest_and_pruned_programs_say_so(setup):
    server, sessions, cid, alpha, beta, _ = setup
    a = server.client(alpha)
    with sessions() as s:
        elites = set(s.scalars(select(EliteCell.program_id).where(EliteCell.campaign_id == cid)))
        ids = list(s.scalars(select(Program.id).where(Program.campaign_id == cid)))
    assert server.client(beta).post(f"/campaigns/{cid}/prune").status_code == 404
    assert a.post(f"/campaigns/{cid}/prune", params={"keep": "elites,code"}).status_code == 422
    assert a.post(f"/campaigns/{cid}/prune", params={"older_than": "forever"}).status_code == 422
    r = a.post(f"/campaigns/{cid}/prune", params={"keep": "elites"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["pruned"] > 0 and out["database"] == "sqlite" and "VACUUM" in out["reclaim"]
    with sessions() as s:
        best = s.get(Campaign, cid).best_program_id
    pruned = next(i for i in ids if i not in elites and i != best)
    p = a.get(f"/programs/{pruned}").json()
    assert p["pruned"] is True and p["pruned_at"] and p["code"] is None and p["prompt"] is None
    assert p["code_hash"] and p["evaluation"]["score"] == p["score"]
    kept = a.get(f"/programs/{next(iter(elites))}").json()
    assert kept["pruned"] is False and kept["code"]
    # the dashboard's program data carries the flag for its page
    page = httpx.get(f"{server.url}/dashboard-api/programs/{pruned}",
                     headers={"Authorization": f"Bearer {alpha}"}, timeout=30).json()
    assert page["program"]["pruned"] is True
    # the pruned campaign still exports, and imports elsewhere
    data = _export(a, cid)
    r = server.client(beta).post("/campaigns/import", content=data, headers={"content-type": MEDIA})
    assert r.status_code == 201
    assert server.client(beta).get(f"/programs/{r.json()['best_program_id']}").json()["code"]
