"""The listing, program and lineage reads against hostile callers, on SQLite and PostgreSQL,
through a real server: every sort x filter x cursor position x offset against a brute-force
Python ordering (ties, NULL scores, extreme floats), with the statements cached per shape
shared by two projects' campaigns; no key reads another project's programs through any of the
cached statements; cursors, offsets and ids at their extremes are a 4xx or an exact page, never
a 500."""
from __future__ import annotations

import random
from urllib.parse import quote

import pytest
from sqlalchemy import insert, update

from evoforge.api.auth import Principal
from evoforge.api.services import NotFound
from evoforge.api.services import programs as programs_svc
from evoforge.db import apikeys
from evoforge.db.engine import get_engine, session_factory, upgrade
from evoforge.db.models import Campaign, Program
from tests.api.conftest import start_server
from tests.integration.services import pg_url, postgres_server  # noqa: F401  (fixtures)

CAMPAIGN = {"task": "circle_packing", "budget": {"max_evaluations": 15}}
SCORES = (None, None, 0.0, -0.0, 0.5, 0.5, 1.0, -3.5, 1e308, -1e308, 5e-324)
STATUSES = ("ok", "invalid", "error")
SORTS = ("score", "-score", "iteration", "-iteration")
FILTERS = ((None, None), ("ok", None), ("error", None), (None, 0), ("ok", 1), ("invalid", 2),
           ("error", 2))


@pytest.fixture(params=["sqlite", "postgres"])
def server(request, tmp_path):
    url = (f"sqlite:///{tmp_path / 'attack.db'}" if request.param == "sqlite"
           else request.getfixturevalue("pg_url"))
    upgrade(url)
    srv = start_server(url, execute=False)
    yield srv
    srv.stop()


def fill(db_url: str, cid: int, n: int, seed: int) -> list[dict]:
    """`n` programs: statuses and scores drawn independently (an `ok` without a score too),
    many ties, extreme floats, iterations out of id order."""
    rng = random.Random(seed)
    iterations = rng.sample(range(1, 10 * n), n)
    rows = [dict(campaign_id=cid, iteration=iterations[i], island=rng.randrange(3), generation=1,
                 code_hash=f"{seed:08x}{i:056x}", kind="test", status=rng.choice(STATUSES),
                 score=rng.choice(SCORES), extra={}) for i in range(n)]
    sessions = session_factory(db_url)
    with sessions.begin() as s:
        ids = s.execute(insert(Program).returning(Program.id, sort_by_parameter_order=True),
                        rows).scalars().all()
        s.execute(update(Campaign).where(Campaign.id == cid).values(evaluations=n))
    for r, pid in zip(rows, ids):
        r["id"] = pid
    return rows


def order_key(sort: str):
    """The listing's total order as a Python key of a row."""
    def key(r):
        if sort == "iteration":
            return (r["iteration"],)
        if sort == "-iteration":
            return (-r["iteration"],)
        if r["score"] is None:
            return (1, 0.0, r["id"])
        return (0, -r["score"], r["id"]) if sort == "score" else (0, r["score"], -r["id"])
    return key


def cursor_key(sort: str, after: str):
    """The position of a cursor in `order_key`'s order."""
    kind, k, *rest = after.split(":")
    k = int(k)
    if kind == "i":
        return (k,) if sort == "iteration" else (-k,)
    if kind == "n":
        return (1, 0.0, k)
    x = float(rest[0])
    return (0, -x, k) if sort == "score" else (0, x, -k)


def listed(rows, sort, status, island) -> list[dict]:
    rows = [r for r in rows if (status is None or r["status"] == status)
            and (island is None or r["island"] == island)]
    return sorted(rows, key=order_key(sort))


def cursor_of(sort: str, r: dict) -> str:
    if sort in ("iteration", "-iteration"):
        return f"i:{r['iteration']}"
    return f"n:{r['id']}" if r["score"] is None else f"s:{r['id']}:{r['score']!r}"


def query_of(sort, status, island) -> str:
    return f"sort={sort}" + (f"&status={status}" if status else "") + (
        f"&island={island}" if island is not None else "")


def probe(c, url: str):
    """The response, or the transport error a crashed request leaves (a reset connection)."""
    try:
        return c.get(url, headers={"Connection": "close"})   # a 500 closes the connection
    except Exception as exc:   # noqa: BLE001 - what the client saw is the finding
        return type("Reset", (), {"status_code": f"{type(exc).__name__}: {exc}"})()


def failed(r) -> bool:
    return isinstance(r.status_code, str) or r.status_code >= 500


def get_ok(c, url: str) -> dict:
    r = c.get(url)
    assert r.status_code == 200, (url, r.status_code, r.text[:300])
    return r.json()


def two_projects(server):
    sessions = session_factory(server.db_url)
    a, pa = apikeys.create_key(sessions, "alpha")
    b, pb = apikeys.create_key(sessions, "beta")
    with server.client(a) as ca, server.client(b) as cb:
        cid_a = ca.post("/campaigns", json=CAMPAIGN).json()["id"]
        cid_b = cb.post("/campaigns", json=CAMPAIGN).json()["id"]
    return (a, pa, cid_a), (b, pb, cid_b)


def test_every_page_matches_a_brute_force_order(server):
    """Offset pages at every offset, and the page after every item's cursor, for each sort and
    filter; two projects' campaigns share the cached statements, read alternately."""
    (a, _, cid_a), (b, _, cid_b) = two_projects(server)
    rows = {cid_a: fill(server.db_url, cid_a, 45, 1), cid_b: fill(server.db_url, cid_b, 40, 2)}
    limit = 4
    with server.client(a) as ca, server.client(b) as cb:
        for sort in SORTS:
            for status, island in FILTERS:
                q = query_of(sort, status, island)
                for c, cid in ((ca, cid_a), (cb, cid_b)):
                    want = listed(rows[cid], sort, status, island)
                    ids = [r["id"] for r in want]
                    for offset in range(0, len(want) + 2):
                        page = get_ok(c, f"/campaigns/{cid}/programs?{q}&limit={limit}&offset={offset}")
                        assert [p["id"] for p in page["items"]] == ids[offset:offset + limit], (cid, q, offset)
                        assert page["total"] == len(want)
                    for i, r in enumerate(want):
                        after = cursor_of(sort, r)
                        page = get_ok(c, f"/campaigns/{cid}/programs?{q}&limit={limit}&after={quote(after)}")
                        assert [p["id"] for p in page["items"]] == ids[i + 1:i + 1 + limit], (cid, q, after)


def test_no_key_reads_another_projects_programs(server):
    (a, pa, cid_a), (b, pb, cid_b) = two_projects(server)
    rows_a = fill(server.db_url, cid_a, 12, 3)
    rows_b = fill(server.db_url, cid_b, 12, 4)
    sessions = session_factory(server.db_url)
    with sessions.begin() as s:   # a chain in B, and a link from A's program into B
        s.execute(update(Program).where(Program.id == rows_b[1]["id"]).values(parent_id=rows_b[0]["id"]))
        s.execute(update(Program).where(Program.id == rows_a[0]["id"]).values(parent_id=rows_b[1]["id"]))
    with server.client(a) as ca, server.client(b) as cb:
        # B warms every statement shape first, then A tries them on B's campaign and programs
        for sort in SORTS:
            for status, island in FILTERS:
                q = query_of(sort, status, island)
                for extra in ("", "&offset=3", f"&after={quote(cursor_of(sort, rows_b[5]))}"):
                    assert cb.get(f"/campaigns/{cid_b}/programs?{q}{extra}").status_code == 200
                    r = ca.get(f"/campaigns/{cid_b}/programs?{q}{extra}")
                    assert r.status_code == 404, (q, extra, r.status_code)
                    ids = {p["id"] for p in get_ok(ca, f"/campaigns/{cid_a}/programs?{q}{extra}")["items"]}
                    assert ids <= {r["id"] for r in rows_a}
        for r in rows_b:
            assert ca.get(f"/programs/{r['id']}").status_code == 404
            assert ca.get(f"/programs/{r['id']}/lineage").status_code == 404
            assert cb.get(f"/programs/{r['id']}/lineage").status_code == 200
        out = get_ok(ca, f"/programs/{rows_a[0]['id']}/lineage?depth=10")
        assert [x["id"] for x in out["ancestors"]] == [rows_a[0]["id"]]
        assert get_ok(ca, f"/programs/{rows_a[0]['id']}")["parent_id"] == rows_b[1]["id"]
    # open mode (no project) sees neither project's programs, through the same statements
    engine = get_engine(server.db_url)
    with engine.connect() as conn:
        for pid in (rows_a[0]["id"], rows_b[1]["id"]):
            with pytest.raises(NotFound):
                programs_svc.program_detail(conn, Principal(None), pid)
            with pytest.raises(NotFound):
                programs_svc.lineage(conn, Principal(None), pid, depth=5)
        with pytest.raises(NotFound):
            programs_svc.list_programs_versioned(conn, Principal(None), cid_a, sort="score",
                                                 status=None, island=None, limit=5, offset=0)
        # and a project principal through the service sees its own only
        assert programs_svc.program_detail(conn, Principal(pa), rows_a[0]["id"])["id"] == rows_a[0]["id"]
        with pytest.raises(NotFound):
            programs_svc.program_detail(conn, Principal(pb), rows_a[0]["id"])


HOSTILE_AFTER = {
    "score": ("s:1:inf", "s:1:-inf", "s:0:1e308", "s:0:-1e308", "s:9223372036854775807:inf",
              "s:9223372036854775807:-1e308", "s:3000000000:0.5", "s:2147483648:1",
              "n:2147483648", "n:9223372036854775807", "n:0", "s:0:5e-324", "s:1:+inf",
              "s:1:1e-400", "s:1:-0"),
    "-score": ("s:1:inf", "s:1:-inf", "s:0:1e308", "s:9223372036854775807:-inf",
               "s:3000000000:0.5", "n:2147483648", "n:9223372036854775807", "n:0"),
    "iteration": ("i:0", "i:2147483647", "i:2147483648", "i:9223372036854775807"),
    "-iteration": ("i:0", "i:2147483648", "i:9223372036854775807"),
}


def test_hostile_cursors_offsets_and_ids_are_a_4xx_or_an_exact_page(server):
    (a, _, cid), _ = two_projects(server)
    rows = fill(server.db_url, cid, 30, 5)
    failures = []
    with server.client(a) as c:
        for sort, cursors in HOSTILE_AFTER.items():
            for status, island in ((None, None), ("ok", 1)):
                want = listed(rows, sort, status, island)
                q = query_of(sort, status, island)
                for after in cursors:
                    r = probe(c, f"/campaigns/{cid}/programs?{q}&limit=500&after={quote(after)}")
                    if failed(r):
                        failures.append((q, after, r.status_code))
                        continue
                    if r.status_code != 200:
                        continue
                    at = cursor_key(sort, after)
                    key = order_key(sort)
                    expect = [x["id"] for x in want if key(x) > at]
                    if [p["id"] for p in r.json()["items"]] != expect:
                        failures.append((q, after, "wrong page"))
        for url in (f"/campaigns/{cid}/programs?limit=500&offset=10000",
                    f"/campaigns/{cid}/programs?limit=500&offset=10000&sort=-score&status=ok&island=1",
                    f"/campaigns/{cid}/programs?limit=500&offset=29&sort=iteration",
                    f"/campaigns/{cid}/programs?limit=500&offset=1",
                    "/campaigns/2147483648/programs", "/campaigns/9223372036854775807/programs",
                    "/campaigns/2147483648/elites",
                    "/programs/2147483648", "/programs/9223372036854775807",
                    "/programs/2147483648/lineage", "/programs/9223372036854775807/lineage?depth=1000"):
            r = probe(c, url)
            if failed(r):
                failures.append((url, r.status_code))
        # the pages that must be exact
        assert [p["id"] for p in get_ok(c, f"/campaigns/{cid}/programs?limit=500&offset=1")["items"]] \
            == [x["id"] for x in listed(rows, "score", None, None)][1:]
        assert get_ok(c, f"/campaigns/{cid}/programs?limit=500&offset=10000")["items"] == []
        deeper = c.get(f"/campaigns/{cid}/programs?offset=10001")
        assert deeper.status_code == 422 and deeper.json()["detail"][0]["loc"] == ["query", "offset"]
    assert not failures, "\n".join(map(str, failures))


@pytest.mark.integration
def test_core_read_connections_never_hand_a_writer_autocommit(pg_url):
    """The routes read on `read_engine.connect()` (Core, not sessions), a pool of its own.
    Interleaved with writers, from several threads, a writer that fails halfway leaves nothing."""
    import threading

    from sqlalchemy import select, text

    from evoforge.api.app import create_app

    state = create_app(pg_url, execute=False).state.evo
    reads, sessions = state.read_engine, state.sessions
    with sessions.begin() as s:
        s.execute(text("CREATE TABLE probe (x int)"))
    errors: list[BaseException] = []

    def reader():
        try:
            for _ in range(40):
                with reads.connect() as conn:
                    conn.execute(select(Campaign.id)).all()
                    assert conn.connection.driver_connection.autocommit
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def writer(k: int):
        try:
            for i in range(20):
                try:
                    with sessions.begin() as s:
                        assert not s.connection().connection.driver_connection.autocommit
                        s.execute(text("INSERT INTO probe VALUES (:x)"), {"x": k * 1000 + i})
                        s.execute(text("SELECT 1/0"))
                except Exception as exc:   # noqa: BLE001
                    if "division by zero" not in str(exc):
                        raise
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)] + [
        threading.Thread(target=writer, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    with sessions() as s:
        assert s.execute(text("SELECT count(*) FROM probe")).scalar() == 0
