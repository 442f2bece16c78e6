"""The program listing at scale (api/services/listing.py), through a real server, on SQLite and
PostgreSQL: keyset pages (`after`) walk the whole list with no duplicate and no gap, with many
tied scores, unscored programs and every filter, in exactly the order offset pages give;
offsets across the scored/unscored boundary; a bad cursor is a 422, never a 500; the lineage
of a program 3,000 generations deep is bounded by `depth` and exact."""
from __future__ import annotations

import random

import pytest
from sqlalchemy import insert, update

from evoforge.db import apikeys
from evoforge.db.engine import session_factory, upgrade
from evoforge.db.models import Campaign, Program
from tests.api.conftest import start_server
from tests.integration.services import pg_url, postgres_server  # noqa: F401  (fixtures)

CAMPAIGN = {"task": "circle_packing", "budget": {"max_evaluations": 15}}
STATUSES = ("ok", "ok", "ok", "invalid", "error")
N = 120


@pytest.fixture(params=["sqlite", "postgres"])
def server(request, tmp_path):
    url = (f"sqlite:///{tmp_path / 'listing.db'}" if request.param == "sqlite"
           else request.getfixturevalue("pg_url"))
    srv = start_server(url, execute=False)
    yield srv
    srv.stop()


def fill(db_url: str, cid: int, n: int = N, *, chain: int = 0) -> list[dict]:
    """`n` programs with few distinct scores (many ties), a fifth unscored, 3 islands; then a
    chain of `chain` programs, each the parent of the next. Returns the programs as rows."""
    rng = random.Random(7)
    rows = []
    for i in range(n):
        status = STATUSES[i % len(STATUSES)]
        score = None if status == "error" else rng.choice([0.0, 0.25, 0.5, 0.5, 1.0, -3.5])
        rows.append(dict(campaign_id=cid, iteration=i + 1, island=i % 3, generation=1,
                         code_hash=f"{i:064x}", kind="test", status=status, score=score, extra={}))
    sessions = session_factory(db_url)
    with sessions.begin() as s:
        ids = s.execute(insert(Program).returning(Program.id, sort_by_parameter_order=True),
                        rows).scalars().all()
        for r, pid in zip(rows, ids):
            r["id"] = pid
        parent = ids[0]
        chained = []
        for k in range(chain):
            chained.append(s.execute(insert(Program).values(
                campaign_id=cid, iteration=n + 1 + k, parent_id=parent, island=0, generation=k + 1,
                code_hash=f"c{k:063x}", kind="test", status="ok", score=0.1, extra={})
                .returning(Program.id)).scalar_one())
            parent = chained[-1]
        s.execute(update(Campaign).where(Campaign.id == cid).values(evaluations=n + chain))
    sessions.kw["bind"].dispose()
    fill.chain = chained
    return rows


def expected(rows: list[dict], sort: str, status=None, island=None) -> list[int]:
    rows = [r for r in rows if (status is None or r["status"] == status)
            and (island is None or r["island"] == island)]
    scored = [r for r in rows if r["score"] is not None]
    unscored = sorted((r for r in rows if r["score"] is None), key=lambda r: r["id"])
    if sort == "score":
        out = sorted(scored, key=lambda r: (-r["score"], r["id"])) + unscored
    elif sort == "-score":
        out = sorted(scored, key=lambda r: (r["score"], -r["id"])) + unscored
    else:
        out = sorted(rows, key=lambda r: r["iteration"], reverse=sort == "-iteration")
    return [r["id"] for r in out]


def walk(client, cid: int, query: str, limit: int) -> tuple[list[int], int]:
    """Every page by `after`, from the first; (ids in order, pages)."""
    ids, after, pages = [], None, 0
    while True:
        q = f"/campaigns/{cid}/programs?{query}&limit={limit}" + (f"&after={after}" if after else "")
        r = client.get(q)
        assert r.status_code == 200, r.text
        page = r.json()
        pages += 1
        ids += [p["id"] for p in page["items"]]
        after = page["next_after"]
        if after is None:
            assert len(page["items"]) <= limit
            return ids, pages
        assert len(page["items"]) == limit
        assert pages < 1000


def test_keyset_and_offset_pages_walk_the_list_exactly(server):
    key = make_key(server.db_url)
    with server.client(key) as c:
        cid = c.post("/campaigns", json=CAMPAIGN).json()["id"]
        rows = fill(server.db_url, cid)
        for sort in ("score", "-score", "iteration", "-iteration"):
            for status, island in ((None, None), ("error", None), ("invalid", 2)):
                query = f"sort={sort}" + (f"&status={status}" if status else "") + (
                    f"&island={island}" if island is not None else "")
                want = expected(rows, sort, status, island)
                for limit in (1, 9, 50) if (sort, status, island) == ("score", None, None) else (9,):
                    got, pages = walk(c, cid, query, limit)
                    assert got == want, (query, limit)
                    assert len(set(got)) == len(got)
                # offset pages give the same order, across the scored/unscored boundary too
                offset_ids = []
                for offset in range(0, len(want) + 13, 13):
                    page = c.get(f"/campaigns/{cid}/programs?{query}&limit=13&offset={offset}").json()
                    assert page["total"] == len(want)
                    offset_ids += [p["id"] for p in page["items"]]
                assert offset_ids == want, query


def test_totals_follow_commits_even_out_of_id_order(server):
    """The totals are counted again only for the newer iterations; one committed behind the
    latest one counted (concurrent workers) is caught by the campaign's counter."""
    key = make_key(server.db_url)
    with server.client(key) as c:
        cid = c.post("/campaigns", json=CAMPAIGN).json()["id"]
        rows = fill(server.db_url, cid, 20)
        newest = max(r["id"] for r in rows)

        def totals() -> tuple[int, int, int]:
            return tuple(c.get(f"/campaigns/{cid}/programs?limit=1{q}").json()["total"]
                         for q in ("", "&status=error", "&island=1&status=ok"))

        def commit(pid: int, status: str, island: int) -> None:
            sessions = session_factory(server.db_url)
            with sessions.begin() as s:   # what a commit does: a program and the counter
                n = s.get(Campaign, cid).evaluations
                s.execute(insert(Program).values(
                    id=pid, campaign_id=cid, iteration=1000 + pid, island=island, generation=1,
                    code_hash=f"{pid:064x}", kind="test", status=status,
                    score=None if status == "error" else 1.0, extra={}))
                s.execute(update(Campaign).where(Campaign.id == cid).values(evaluations=n + 1))
            sessions.kw["bind"].dispose()

        def want() -> tuple[int, int, int]:
            return (len(rows), sum(r["status"] == "error" for r in rows),
                    sum(r["status"] == "ok" and r["island"] == 1 for r in rows))

        assert totals() == want()
        commit(newest + 100, "error", 1)          # after the latest: counted incrementally
        rows.append({"status": "error", "island": 1})
        assert totals() == want()
        commit(newest + 50, "ok", 1)              # behind the latest counted: caught, recounted
        rows.append({"status": "ok", "island": 1})
        assert totals() == want()
        ids = [p["id"] for p in c.get(f"/campaigns/{cid}/programs?sort=iteration&limit=500").json()["items"]]
        assert newest + 50 in ids and newest + 100 in ids


def test_a_cursor_from_another_sort_or_forged_is_refused(server):
    key = make_key(server.db_url)
    with server.client(key) as c:
        cid = c.post("/campaigns", json=CAMPAIGN).json()["id"]
        fill(server.db_url, cid, 30)
        first = c.get(f"/campaigns/{cid}/programs?sort=score&limit=5").json()
        assert first["next_after"].startswith("s:")
        base = f"/campaigns/{cid}/programs?limit=5"
        for query in (f"sort=iteration&after={first['next_after']}",   # another sort's cursor
                      "sort=score&after=i:3", "sort=iteration&after=s:1:0.5",
                      "sort=score&after=s:1:nan", "sort=score&after=s:1", "sort=score&after=n:1:2",
                      "sort=score&after=s:99999999999999999999:1", "sort=score&after=x:1",
                      f"sort=score&after={'s:1:' + '9' * 40}",
                      "sort=score&after=s:1:0.5%27%20OR%201=1", "sort=score&after=",
                      f"sort=score&offset=5&after={first['next_after']}",
                      "sort=iteration&offset=10001", "sort=score&offset=1000000000"):
            r = c.get(f"{base}&{query}")
            assert r.status_code == 422, (query, r.status_code, r.text)
        # the deepest offset still served (a page number); deeper pages go by `after`
        deepest = c.get(f"{base}&sort=iteration&offset=10000")
        assert deepest.status_code == 200 and deepest.json()["items"] == []
        assert "10000" in c.get(f"{base}&sort=iteration&offset=10001").text
        # an infinite score is a number the cursor can carry (never NaN)
        r = c.get(f"{base}&sort=score&after=s:1:-inf")
        assert r.status_code == 200 and r.json()["items"][0]["score"] is None
        assert c.get(f"{base}&sort=score&after=s:1:1e999999").json()["items"][0]["score"] == 1.0


def test_lineage_of_a_deep_chain_is_bounded_and_exact(server):
    key = make_key(server.db_url)
    with server.client(key) as c:
        cid = c.post("/campaigns", json=CAMPAIGN).json()["id"]
        rows = fill(server.db_url, cid, 3, chain=3000)
        chain = fill.chain
        deepest = chain[-1]
        r = c.get(f"/programs/{deepest}/lineage?depth=1000")
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["truncated"] is True
        assert [a["id"] for a in doc["ancestors"]] == chain[::-1][:1000]
        assert [a["generation"] for a in doc["ancestors"]] == list(range(3000, 2000, -1))
        for a, b in zip(doc["ancestors"], doc["ancestors"][1:]):
            assert a["parent_id"] == b["id"]
        # the rest of the chain, from the last ancestor's parent: down to the root, complete
        tail = c.get(f"/programs/{chain[10]}/lineage?depth=1000").json()
        assert [a["id"] for a in tail["ancestors"]] == chain[10::-1] + [rows[0]["id"]]
        assert tail["truncated"] is False
        exact = c.get(f"/programs/{chain[9]}/lineage?depth=11").json()   # exactly the depth
        assert len(exact["ancestors"]) == 11 and exact["truncated"] is False
        assert c.get(f"/programs/{chain[9]}/lineage?depth=10").json()["truncated"] is True
        assert c.get(f"/programs/{deepest}/lineage?depth=1001").status_code == 422


def test_lineage_never_leaves_the_campaign_or_loops(server):
    key = make_key(server.db_url)
    other = apikeys.create_key(session_factory(server.db_url), "other")[0]
    with server.client(key) as c, server.client(other) as o:
        cid = c.post("/campaigns", json=CAMPAIGN).json()["id"]
        oid = o.post("/campaigns", json=CAMPAIGN).json()["id"]
        mine = fill(server.db_url, cid, 3)
        theirs = fill(server.db_url, oid, 3)
        sessions = session_factory(server.db_url)
        with sessions.begin() as s:   # a hand-edited database: a link out, and a cycle
            s.execute(update(Program).where(Program.id == mine[2]["id"])
                      .values(parent_id=theirs[0]["id"]))
            s.execute(update(Program).where(Program.id == mine[1]["id"])
                      .values(parent_id=mine[0]["id"]))
            s.execute(update(Program).where(Program.id == mine[0]["id"])
                      .values(parent_id=mine[1]["id"]))
        sessions.kw["bind"].dispose()
        out = c.get(f"/programs/{mine[2]['id']}/lineage").json()
        assert [a["id"] for a in out["ancestors"]] == [mine[2]["id"]]
        assert out["truncated"] is False
        loop = c.get(f"/programs/{mine[1]['id']}/lineage").json()
        assert [a["id"] for a in loop["ancestors"]] == [mine[1]["id"], mine[0]["id"]]
        assert loop["truncated"] is True
        assert o.get(f"/programs/{mine[1]['id']}/lineage").status_code == 404


def make_key(db_url: str) -> str:
    upgrade(db_url)
    return apikeys.create_key(session_factory(db_url), "alpha")[0]
