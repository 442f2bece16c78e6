"""The per-process read caches (api/caches.py) and the cache-hit fast path (api/fastpath.py):
a revoked key stops working after the key TTL, elites and programs show a write made elsewhere
(another process, a worker) on the very next request, tenancy and auth are unchanged on cache
hits, answers are the route's own, the fast path serves exactly the requests the route has
accepted (it parses no query of its own), and `ApiCaches.fresh` never hands a caller a read that
began before it arrived. tests/api/test_multiprocess.py runs several server processes."""
from __future__ import annotations

import asyncio
import threading
import time

from sqlalchemy import insert, select, update

from evoforge.db import apikeys
from evoforge.db.engine import session_factory, upgrade
from evoforge.db.blobs import put_code
from evoforge.db.models import ApiKey, Campaign, EliteCell, Program

CAMPAIGN = {"task": "circle_packing", "budget": {"max_evaluations": 15}}


def make_key(db_url: str, project: str) -> str:
    upgrade(db_url)
    return apikeys.create_key(session_factory(db_url), project)[0]


def progress(db_url: str, cid: int, iteration: int, score: float) -> int:
    """What an iteration's commit does to the tables these endpoints read: a program, an elite
    cell, and `evaluations` bumped in the same transaction."""
    sessions = session_factory(db_url)
    with sessions.begin() as s:
        c = s.get(Campaign, cid)
        pid = s.execute(insert(Program).values(
            campaign_id=cid, iteration=iteration, island=0, generation=1,
            code_hash=put_code(s, "x = 1\n"), kind="test", status="ok", score=score, extra={})
            .returning(Program.id)).scalar_one()
        s.execute(insert(EliteCell).values(campaign_id=cid, island=0, cell=f"{iteration},0",
                                           program_id=pid, score=score, features={}))
        s.execute(update(Campaign).where(Campaign.id == cid)
                  .values(evaluations=c.evaluations + 1))
    sessions.kw["bind"].dispose()
    return pid


def cells(doc: dict) -> list[tuple]:
    return sorted((i["island"], c["cell"], c["program_id"]) for i in doc["islands"] for c in i["cells"])


def test_revoked_key_stops_working_within_the_ttl(live_server):
    srv = live_server(execute=False)
    caches = srv.app.state.evo.caches
    caches.key_ttl_s = 0.5
    key = make_key(srv.db_url, "alpha")
    with srv.client(key) as a:
        cid = a.post("/campaigns", json=CAMPAIGN).json()["id"]
        paths = [f"/campaigns/{cid}/elites", f"/campaigns/{cid}/programs", "/tasks"]
        for _ in range(3):  # fills the key, version and body caches; later ones are hits
            for path in paths:
                assert a.get(path).status_code == 200
        sessions = session_factory(srv.db_url)
        with sessions() as s:
            kid = s.scalar(select(ApiKey.id))
        assert apikeys.revoke_key(sessions, kid)
        revoked_at = time.monotonic()
        seen = []  # (seconds after the revocation when the request was sent, status)
        while time.monotonic() - revoked_at < 1.5:
            for path in paths:
                sent = time.monotonic() - revoked_at
                seen.append((sent, a.get(path).status_code))
            time.sleep(0.02)
        assert {code for _, code in seen} <= {200, 401}
        # Sent after the TTL (0.5 s, with a margin for the request in flight): refused, always.
        late = [code for sent, code in seen if sent > 0.5 + 0.1]
        assert late and set(late) == {401}, seen
        r = a.get(f"/campaigns/{cid}/elites")
        assert r.status_code == 401 and r.json()["detail"] == "invalid or revoked API key"


def test_elites_and_programs_follow_a_progressing_campaign(live_server):
    srv = live_server(execute=False)
    key = make_key(srv.db_url, "alpha")
    with srv.client(key) as a:
        cid = a.post("/campaigns", json=CAMPAIGN).json()["id"]
        first = a.get(f"/campaigns/{cid}/elites").json()
        assert a.get(f"/campaigns/{cid}/elites").json() == first          # a cache hit, same
        assert a.get(f"/campaigns/{cid}/programs").json()["total"] == 0

        pid = progress(srv.db_url, cid, 1, 0.5)
        # Seen through GET /campaigns/{id}: the elites show that state at once.
        assert a.get(f"/campaigns/{cid}").json()["evaluations"] == 1
        assert (0, "1,0", pid) in cells(a.get(f"/campaigns/{cid}/elites").json())
        page = a.get(f"/campaigns/{cid}/programs").json()
        assert page["total"] == 1 and [p["id"] for p in page["items"]] == [pid]

        # Written behind this process's back (as another API process or a worker would): the
        # next request shows it, no TTL, many times over.
        for it in range(2, 12):
            pid2 = progress(srv.db_url, cid, it, 0.5 + it / 100)
            assert (0, f"{it},0", pid2) in cells(a.get(f"/campaigns/{cid}/elites").json())
            top = a.get(f"/campaigns/{cid}/programs?sort=score&limit=1").json()
            assert top["items"][0]["id"] == pid2 and top["total"] == it
        assert a.get(f"/campaigns/{cid}/programs").json()["total"] == 11


def test_cache_hits_keep_tenancy_auth_and_validation(live_server):
    srv = live_server(execute=False)
    key_a, key_b = make_key(srv.db_url, "alpha"), make_key(srv.db_url, "beta")
    with srv.client(key_a) as a, srv.client(key_b) as b, srv.client() as anon:
        cid = a.post("/campaigns", json=CAMPAIGN).json()["id"]
        paths = [f"/campaigns/{cid}/elites", f"/campaigns/{cid}/programs",
                 f"/campaigns/{cid}/programs?sort=-score&limit=5&offset=0"]
        for _ in range(3):
            for path in paths:
                assert a.get(path).status_code == 200
        for path in paths:
            r = b.get(path)
            assert r.status_code == 404 and r.json()["detail"] == f"campaign {cid} not found"
            assert anon.get(path).status_code == 401
            bad = a.get(path, headers={"Authorization": "Bearer evf_nope"})
            assert bad.status_code == 401
        for query in ("limit=0", "limit=501", "limt=5", "sort=best", "island=64",
                      "status="):
            assert a.get(f"/campaigns/{cid}/programs?{query}").status_code == 422, query
        assert a.get(f"/campaigns/{cid}/elites?x=1").status_code == 422
        # Byte-for-byte the route's answer: a hit equals the miss that filled the cache.
        srv.app.state.evo.caches.__init__()
        miss = a.get(paths[0])
        hit = a.get(paths[0])
        assert hit.content == miss.content
        assert hit.headers["content-type"] == miss.headers["content-type"] == "application/json"
        assert hit.headers["content-length"] == miss.headers["content-length"]
        # Deleted: 404 at once (the delete drops the cached version).
        assert a.delete(f"/campaigns/{cid}").status_code == 204
        assert a.get(f"/campaigns/{cid}/elites").status_code == 404
        assert a.get(f"/campaigns/{cid}/programs").status_code == 404
        metrics = a.get("/metrics").text
        assert 'route="/api/v1/campaigns/{campaign_id}/elites",status="200"' in metrics


def test_fast_path_serves_only_what_the_route_accepted(live_server, monkeypatch):
    from evoforge.api.fastpath import FastReads

    served = []  # (query string, served by the fast path)
    answer = FastReads._answer

    async def spy(self, scope):
        hit = await answer(self, scope)
        served.append((scope.get("query_string", b"").decode(), hit is not None))
        return hit

    monkeypatch.setattr(FastReads, "_answer", spy)
    srv = live_server(execute=False)
    key_a, key_b = make_key(srv.db_url, "alpha"), make_key(srv.db_url, "beta")
    with srv.client(key_a) as a, srv.client(key_b) as b:
        cid = a.post("/campaigns", json=CAMPAIGN).json()["id"]
        progress(srv.db_url, cid, 1, 0.5)
        # Any query the route accepts, in any spelling, is served here the second time (a
        # cache hit; the first time too where the spelling is the plain one), same bytes.
        for query in ("", "sort=-score&limit=5", "limit=5&sort=-score", "island=0&status=ok",
                      "offset=0"):
            served.clear()
            first = a.get(f"/campaigns/{cid}/programs?{query}")
            second = a.get(f"/campaigns/{cid}/programs?{query}")
            assert first.status_code == second.status_code == 200
            assert second.content == first.content
            assert served[-1][1], (query, served)
        # What the route refuses is never stored, so never served here.
        served.clear()
        for _ in range(2):
            assert a.get(f"/campaigns/{cid}/programs?limit=0").status_code == 422
            assert a.get(f"/campaigns/{cid}/elites?x=1").status_code == 422
            assert b.get(f"/campaigns/{cid}/programs").status_code == 404
        assert not any(hit for _, hit in served), served


def test_fresh_reads_start_after_their_caller_arrived():
    """50 concurrent callers against a slow read: reads are shared (far fewer than callers), yet
    every caller gets the result of a read that started after it called."""
    from evoforge.api.caches import ApiCaches

    caches = ApiCaches()
    clock = {"n": 0}
    lock = threading.Lock()

    def read() -> int:  # the "database": a counter, read slowly
        with lock:
            clock["n"] += 1
            started = clock["n"]
        time.sleep(0.01)
        return started

    async def caller(delay_s: float) -> tuple[int, int]:
        await asyncio.sleep(delay_s)
        with lock:
            arrived = clock["n"]  # reads started before this caller arrived
        return arrived, await caches.fresh(("version", 1, 1), read)

    async def main():
        return await asyncio.gather(*(caller(i * 0.001) for i in range(50)))

    results = asyncio.run(main())
    for arrived, started in results:
        assert started > arrived, (arrived, started)  # a read begun after the caller arrived
    assert caches.fresh_reads < 25, caches.fresh_reads
    assert not caches._fresh  # nothing left behind


def test_fresh_read_errors_reach_every_waiter():
    from evoforge.api.caches import ApiCaches

    caches = ApiCaches()
    calls = []

    def read():
        calls.append(1)
        time.sleep(0.01)
        raise RuntimeError("database down")

    async def main():
        return await asyncio.gather(*(caches.fresh(("k",), read) for _ in range(5)),
                                    return_exceptions=True)

    out = asyncio.run(main())
    assert all(isinstance(e, RuntimeError) for e in out) and len(calls) == 2
    assert not caches._fresh
