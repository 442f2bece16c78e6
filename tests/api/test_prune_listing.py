"""A pruned program says so in the listing, at once, through the response caches; a running
campaign is not pruned unless forced; the Python client walks a listing by keyset.

Real uvicorn on loopback over one SQLite file; prunes through the CLI (`evoforge prune`) and
through REST, reads through REST and `evoforge.Client`."""
from __future__ import annotations

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from evoforge.cli.main import main
from evoforge.client import Client, ServerError
from evoforge.db.models import Campaign, EliteCell, Program

QUERY = {"sort": "iteration", "limit": 500}


@pytest.fixture
def setup(finished_campaign):
    f = finished_campaign(24)
    return f.server, f.sessions, f.url, f.cid, f.alpha


def _flags(client, cid: int) -> dict[int, bool]:
    r = client.get(f"/campaigns/{cid}/programs", params=QUERY)
    assert r.status_code == 200, r.text
    return {i["id"]: i["pruned"] for i in r.json()["items"]}


def _pruned_ids(sessions, cid: int) -> set[int]:
    with sessions() as s:
        return set(s.scalars(select(Program.id).where(Program.campaign_id == cid,
                                                      Program.pruned_at.is_not(None))))


def test_a_cached_listing_shows_a_prune_at_once(setup):
    server, sessions, url, cid, alpha = setup
    a = server.client(alpha)
    before = _flags(a, cid)
    assert before and not any(before.values())
    assert _flags(a, cid) == before                      # served from the body cache now
    r = CliRunner().invoke(main, ["prune", str(cid), "--keep", "elites,lineage", "--db", url])
    assert r.exit_code == 0, r.output
    by_cli = _pruned_ids(sessions, cid)
    assert by_cli, "the lineage prune pruned nothing: the test proves nothing"
    assert {i for i, p in _flags(a, cid).items() if p} == by_cli
    r = a.post(f"/campaigns/{cid}/prune", params={"keep": "elites"})
    assert r.status_code == 200, r.text
    by_rest = _pruned_ids(sessions, cid)
    assert by_rest > by_cli
    assert {i for i, p in _flags(a, cid).items() if p} == by_rest
    with sessions() as s:
        elites = set(s.scalars(select(EliteCell.program_id).where(EliteCell.campaign_id == cid)))
    assert elites and not elites & by_rest
    # the lineage (the dashboard's list of ancestors) says which ancestors were pruned
    for pid in elites:
        chain = a.get(f"/programs/{pid}/lineage").json()["ancestors"]
        assert [c["pruned"] for c in chain] == [c["id"] in by_rest for c in chain]
    assert any(c["id"] in by_rest for pid in elites
               for c in a.get(f"/programs/{pid}/lineage").json()["ancestors"])
    # a prune that prunes nothing leaves the version (and the cached pages) alone
    with sessions() as s:
        revision = s.get(Campaign, cid).revision
    assert a.post(f"/campaigns/{cid}/prune", params={"keep": "elites"}).json()["pruned"] == 0
    with sessions() as s:
        assert s.get(Campaign, cid).revision == revision == 2


@pytest.mark.parametrize("status", ["running", "queued"])
def test_a_running_campaign_is_pruned_only_when_forced(setup, status):
    server, sessions, url, cid, alpha = setup
    with sessions.begin() as s:
        s.get(Campaign, cid).status = status
    a = server.client(alpha)
    r = a.post(f"/campaigns/{cid}/prune", params={"keep": "elites"})
    assert r.status_code == 409 and status in r.json()["detail"] and "force" in r.json()["detail"]
    r = CliRunner().invoke(main, ["prune", str(cid), "--db", url])
    assert r.exit_code == 1 and f"is {status}" in r.output and "--force" in r.output
    assert not _pruned_ids(sessions, cid)
    r = CliRunner().invoke(main, ["prune", str(cid), "--db", url, "--force", "--json"])
    assert r.exit_code == 0, r.output
    assert _pruned_ids(sessions, cid)
    r = a.post(f"/campaigns/{cid}/prune", params={"keep": "elites", "force": "true"})
    assert r.status_code == 200 and r.json()["pruned"] > 0


def test_the_client_walks_the_listing_by_keyset(setup):
    server, sessions, url, cid, alpha = setup
    assert server.client(alpha).post(f"/campaigns/{cid}/prune",
                                     params={"keep": "elites"}).status_code == 200
    client = Client(server.url, alpha)
    first = client.programs(cid, sort="-score", limit=5)
    assert len(first) == 5 and first.next_after and first.total == 24
    second = client.programs(cid, sort="-score", limit=5, after=first.next_after)
    assert not {p["id"] for p in first} & {p["id"] for p in second}
    assert [p["id"] for p in first + second] == [p["id"] for p in
                                                 client.programs(cid, sort="-score", limit=10)]
    for sort in ("score", "-score", "iteration", "-iteration"):
        walked = list(client.iter_programs(cid, sort=sort, page_size=7))
        ids = [p["id"] for p in walked]
        assert len(ids) == len(set(ids)) == 24
        assert ids == [p["id"] for p in client.programs(cid, sort=sort, limit=500)]
    ok = list(client.iter_programs(cid, status="ok", island=1, page_size=3))
    assert ok and all(p["status"] == "ok" and p["island"] == 1 for p in ok)
    assert {p["id"] for p in client.iter_programs(cid) if p["pruned"]} == _pruned_ids(sessions, cid)
    last = client.programs(cid, sort="iteration", limit=500)
    assert last.next_after is None
    with pytest.raises(ServerError):
        client.programs(cid, after="not-a-cursor")
