"""Every program listing the API offers is an index range in its sort's order, on both databases.

For each sort (score, -score, iteration, -iteration) and each combination of the filters
(status, island), the statements api/services/listing.py runs (a first page, a keyset page after
a cursor, and the skip of an `offset` page's deferred join) are explained on a campaign of 20,000
programs: no sort step, and every filter is a condition of the index searched, never a check of
table rows one by one (which cost 10-200 ms a page deep in a million-program campaign:
migration 0009, docs/benchmarks.md).
"""
from __future__ import annotations

import json
import random
from datetime import datetime, timezone

import pytest
from sqlalchemy import insert

from evoforge.api.services import listing
from evoforge.api.services.programs import _SUMMARY_COLUMNS, _filter
from evoforge.db.campaign_config import CampaignSpec
from evoforge.db.engine import get_engine, session_factory, upgrade
from evoforge.db.models import Program
from evoforge.worker.campaign_service import create_campaign
from tests.integration.services import pg_url, postgres_server  # noqa: F401

N = 20_000
SORTS = ("score", "-score", "iteration", "-iteration")
SHAPES = [(sort, status, island) for sort in SORTS for status in (None, "ok")
          for island in (None, 1)]


def _campaign(url: str) -> int:
    upgrade(url)
    sessions = session_factory(url)
    cid = create_campaign(sessions, CampaignSpec(task="circle_packing"), status="completed").id
    rng, now = random.Random(0), datetime.now(timezone.utc)
    rows = []
    for i in range(N):
        status = rng.choices(("ok", "invalid", "error"), (8, 1, 1))[0]
        rows.append({"campaign_id": cid, "iteration": i, "island": i % 4, "generation": 0,
                     "kind": "diff", "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0,
                     "extra": {}, "status": status, "created_at": now,
                     "score": rng.random() if status == "ok" else None})
    engine = get_engine(url)
    with engine.begin() as conn:
        conn.execute(insert(Program), rows)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE program" if engine.dialect.name == "postgresql"
                             else "ANALYZE")
    return cid


def _statements(cid: int):
    """(what, statement with its parameters) of every listing shape."""
    for sort, status, island in SHAPES:
        where = _filter(bool(status), island is not None)
        params = {"cid": cid, "status": status, "island": island, "page_limit": 51,
                  "page_offset": 5_000}
        cursor = listing.Cursor("i", 7_000) if "iteration" in sort else \
            listing.Cursor("s", 7_000, 0.5)
        keyset, after = listing.parts(sort, cursor)
        shape = f"sort={sort} status={status} island={island}"
        for what, part, deferred, extra in (("first page", listing.segments(sort)[0], False, {}),
                                            ("offset page", listing.segments(sort)[0], True, {}),
                                            ("keyset page", keyset[-1], False, after)):
            q = listing._statement(_SUMMARY_COLUMNS, where, part, sort, deferred=deferred)
            bound = {k: v for k, v in {**params, **extra}.items() if v is not None}
            yield f"{what}, {shape}", q.params(**bound), (status, island)


def _sqlite_plan(conn, q) -> list[str]:
    compiled = q.compile(dialect=conn.dialect)
    args = tuple(compiled.params[k] for k in compiled.positiontup)
    return [row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + str(compiled), args)]


def test_sqlite_listings_search_an_index(tmp_path):
    url = f"sqlite:///{tmp_path / 'plans.db'}"
    cid = _campaign(url)
    with get_engine(url).connect() as conn:
        for what, q, (status, island) in _statements(cid):
            plan = _sqlite_plan(conn, q)
            if what.startswith("offset"):   # the page's own rows, read by key, are sorted
                assert plan[0].startswith("MATERIALIZE"), (what, plan)
                plan = plan[:-1] if plan[-1] == "USE TEMP B-TREE FOR ORDER BY" else plan
            assert not any("TEMP B-TREE" in line for line in plan), (what, plan)
            on_program = [line for line in plan if " program " in f"{line} "
                          and "USING INTEGER PRIMARY KEY" not in line]
            assert on_program, (what, plan)
            for line in on_program:   # the one search of the list: every filter in its index
                assert line.startswith("SEARCH") and "INDEX" in line, (what, plan)
                for column, value in (("status", status), ("island", island)):
                    assert value is None or f"{column}=?" in line, (what, plan)


def _nodes(node):
    yield node
    for child in node.get("Plans", ()):
        yield from _nodes(child)


@pytest.mark.integration
def test_postgresql_listings_search_an_index(pg_url):
    cid = _campaign(pg_url)
    engine = get_engine(pg_url)
    with engine.connect() as conn:
        # no whole-table plans: is there an index range in the sort's order for each shape?
        conn.exec_driver_sql("SET enable_seqscan = off")
        conn.exec_driver_sql("SET enable_bitmapscan = off")
        for what, q, (status, island) in _statements(cid):
            compiled = q.compile(dialect=conn.dialect)
            raw = conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + str(compiled),
                                       compiled.params).scalar()
            plan = raw if isinstance(raw, list) else json.loads(raw)
            top = plan[0]["Plan"]
            if what.startswith("offset") and top["Node Type"] == "Sort":
                top = top["Plans"][0]   # the page's own rows, read by key, are sorted
            nodes = list(_nodes(top))
            text = json.dumps(plan)
            assert not any(n["Node Type"] in ("Sort", "Incremental Sort", "Seq Scan")
                           for n in nodes), (what, [n["Node Type"] for n in nodes], text)
            for n in nodes:   # (not the page's own rows, read by key after the skip)
                if n.get("Relation Name") == "program" and "Index Name" in n \
                        and "= program_1." not in n.get("Index Cond", ""):
                    for column, value in (("status", status), ("island", island)):
                        if value is not None:
                            assert column in n.get("Index Cond", ""), (what, text)
                            assert column not in n.get("Filter", ""), (what, text)
