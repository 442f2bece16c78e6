"""The campaign overview's aggregates (api/dashboard/queries.py) equal a naive computation over
every program, on SQLite and PostgreSQL: on the first call, after new commits (read
incrementally), after a commit behind the ids already read, and when a commit lands between the
reads of one call. The memory kept per campaign stays bounded: the scatter never holds more than
MAX_SCATTER_POINTS points, the history only the improvements."""
from __future__ import annotations

import random
import threading

import pytest
from sqlalchemy import event, insert

from evoforge.api.dashboard import queries as Q
from evoforge.db.engine import session_factory
from evoforge.db.models import Campaign, Program
from tests.integration.services import pg_url, postgres_server  # noqa: F401  (fixtures)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

CAP = 16   # MAX_SCATTER_POINTS in these tests: the bucket width doubles several times
STATUSES = ["ok"] * 6 + ["error", "invalid", "", "timeout"]


@pytest.fixture(params=["sqlite", "postgres"])
def url(request, db_url):
    return db_url if request.param == "sqlite" else request.getfixturevalue("pg_url")


@pytest.fixture
def small(monkeypatch):
    """A small cap and small read chunks, so that every path (widening, several IN lists and
    range reads per call) runs on a few hundred programs; no aggregates cached from elsewhere."""
    monkeypatch.setattr(Q, "MAX_SCATTER_POINTS", CAP)
    monkeypatch.setattr(Q, "_IDS_PER_QUERY", 7)
    monkeypatch.setattr(Q, "_RANGES_PER_QUERY", 3)
    Q._cache.clear()
    yield
    Q._cache.clear()


def campaigns(sessions, n: int = 2) -> list[int]:
    from evoforge.db.campaign_config import CampaignSpec
    from evoforge.worker.campaign_service import create_campaign

    return [create_campaign(sessions, CampaignSpec(task="circle_packing", archive={"islands": 3})).id
            for _ in range(n)]


class Filler:
    """Programs with chosen ids (gaps, other campaigns in between), scores that drift upwards
    with ties and failures, three models and no model."""

    def __init__(self, sessions, seed: int = 0):
        self.sessions, self.rng, self.iteration, self.level = sessions, random.Random(seed), {}, 1.0

    def row(self, cid: int, pid: int) -> dict:
        r = self.rng
        status = r.choice(STATUSES)
        self.level += r.random() * 0.01
        score = round(self.level + r.gauss(0, 0.3), 2) if status == "ok" else None
        it = self.iteration[cid] = self.iteration.get(cid, -1) + 1
        model = r.choice([None, "m1", "m2", "gpt"])
        return dict(id=pid, campaign_id=cid, iteration=it, island=r.randrange(3), kind="test",
                    status=status, score=score, model=model, extra={},
                    prompt_tokens=r.randrange(100) if model else 0,
                    completion_tokens=r.randrange(50) if model else 0,
                    cost_usd=r.random() / 1000 if model else 0.0)

    def add(self, rows: list[dict]) -> None:
        with self.sessions.begin() as s:
            s.execute(insert(Program), rows)


def naive(rows: list[dict], islands: int, cap: int) -> dict:
    """The overview's numbers from every program, one by one, in id order (the old way)."""
    rows = sorted(rows, key=lambda r: r["id"])
    isl = {i: {"island": i, "programs": 0, "ok": 0, "failures": 0, "best_score": None, "elites": 0}
           for i in range(islands)}
    statuses: dict[str, int] = {}
    models: dict[str, dict] = {}
    best, bx, by = None, [], []
    for x, r in enumerate(rows, 1):
        st = isl[r["island"]]
        st["programs"] += 1
        st["ok" if r["status"] == "ok" else "failures"] += 1
        statuses[r["status"] or "unknown"] = statuses.get(r["status"] or "unknown", 0) + 1
        name = r["model"] or "local"
        m = models.setdefault(name, {"model": name, "programs": 0, "prompt_tokens": 0,
                                     "completion_tokens": 0, "cost_usd": 0.0})
        m["programs"] += 1
        m["prompt_tokens"] += r["prompt_tokens"]
        m["completion_tokens"] += r["completion_tokens"]
        m["cost_usd"] += r["cost_usd"]
        if r["score"] is None:
            continue
        if st["best_score"] is None or r["score"] > st["best_score"]:
            st["best_score"] = r["score"]
        if best is None or r["score"] > best:
            best = r["score"]
            bx.append(x)
            by.append(best)
    if bx and bx[-1] != len(rows):
        bx, by = bx + [len(rows)], by + [by[-1]]
    width = 1     # the smallest power of two that cuts the ids' span into at most `cap` buckets
    while rows and rows[-1]["id"] // width - rows[0]["id"] // width + 1 > cap:
        width *= 2
    first: dict[int, tuple] = {}
    for x, r in enumerate(rows, 1):
        first.setdefault(r["id"] // width, (x, r["score"]))
    points = [first[b] for b in sorted(first) if first[b][1] is not None]
    return {"islands": [isl[i] for i in sorted(isl)], "statuses": statuses,
            "models": {m["model"]: m for m in models.values()},
            "history": {"best": {"x": bx, "y": by},
                        "scores": {"x": [x for x, _ in points], "y": [y for _, y in points],
                                   "stride": width,
                                   "total": sum(r["score"] is not None for r in rows)},
                        "programs": len(rows)}}


def overview(sessions, cid: int) -> tuple[Q.Aggregates, dict]:
    with sessions() as s:
        agg = Q.aggregates(s, s.get(Campaign, cid))
    parts = Q.breakdown(agg, 3)
    return agg, {"islands": parts["islands"], "statuses": parts["statuses"],
                 "models": {m["model"]: m for m in parts["models"]},
                 "history": Q.score_history(agg)}


def check(sessions, cid: int, rows: list[dict], cap: int = CAP) -> Q.Aggregates:
    agg, got = overview(sessions, cid)
    want = naive([r for r in rows if r["campaign_id"] == cid], 3, cap)
    for name, m in want["models"].items():       # sums of floats: the database adds in its order
        assert got["models"][name].pop("cost_usd") == pytest.approx(m.pop("cost_usd"), rel=1e-9)
    assert got == want
    assert len(agg.scatter) <= cap and len(got["history"]["scores"]["x"]) <= cap
    assert len(agg.best_x) == len(agg.best_y) <= len(want["history"]["best"]["x"])
    return agg


def test_equal_to_naive_first_call_then_incremental(url, small):
    sessions = session_factory(url)
    a, b = campaigns(sessions)
    fill = Filler(sessions)
    rows: list[dict] = []
    # Interleaved campaigns, gaps in the ids: 300 programs of `a` over ids 1..~700.
    pid = 0
    for _ in range(300):
        pid += fill.rng.choice([1, 1, 2, 3])
        rows.append(fill.row(a, pid))
        if fill.rng.random() < 0.3:
            pid += 1
            rows.append(fill.row(b, pid))
    fill.add(rows)
    first = check(sessions, a, rows)
    check(sessions, b, rows)
    width = first.width
    # New commits, in batches of different sizes: read incrementally, into the same aggregates.
    for n in (1, 3, 40, 250, 7, 600):
        new = []
        for _ in range(n):
            pid += fill.rng.choice([1, 2])
            new.append(fill.row(a if fill.rng.random() < 0.8 else b, pid))
        fill.add(new)
        rows += new
        agg = check(sessions, a, rows)
        assert agg is first, "new rows only: the cached aggregates are extended, not recomputed"
        check(sessions, b, rows)
    assert first.width > width        # the scatter's buckets widened as the ids grew
    assert first.programs == sum(r["campaign_id"] == a for r in rows) > 900


def test_one_program_per_bucket(url, small, monkeypatch):
    """Under the cap every program is its own bucket (the scores come with the buckets)."""
    monkeypatch.setattr(Q, "MAX_SCATTER_POINTS", 2000)
    sessions = session_factory(url)
    (a,) = campaigns(sessions, 1)
    fill = Filler(sessions, seed=4)
    rows = [fill.row(a, pid) for pid in range(1, 400)]
    fill.add(rows)
    assert check(sessions, a, rows, 2000).width == 1
    rows.append(fill.row(a, 400))
    rows[-1].update(status="ok", score=1e6)
    fill.add(rows[-1:])
    agg = check(sessions, a, rows, 2000)
    assert agg.best_x[-1] == 400 and len(agg.scatter) == 400


def test_a_commit_behind_the_ids_read_starts_over(url, small):
    sessions = session_factory(url)
    (a,) = campaigns(sessions, 1)
    fill = Filler(sessions, seed=1)
    rows = [fill.row(a, pid) for pid in range(10, 2000, 3)]      # gaps: 11, 12, 14, ...
    fill.add(rows)
    first = check(sessions, a, rows)
    assert check(sessions, a, rows) is first                     # nothing new: the same totals
    # Rows commit behind the ids already read (a writer that took its ids earlier), one of them
    # with the best score so far, another as the campaign's first program.
    late = [fill.row(a, 11), fill.row(a, 1001), fill.row(a, 2)]
    late[1].update(status="ok", score=1e6)
    fill.add(late)
    rows += late
    again = check(sessions, a, rows)
    assert again is not first
    assert again.best == 1e6 and again.first_id == 2


def test_a_commit_between_the_reads_of_one_call(pg_url, small):  # noqa: F811
    """PostgreSQL reads each statement at its own snapshot: a row that commits behind the ids
    being read, between the totals and the buckets, makes them disagree; the call reads again."""
    sessions = session_factory(pg_url)
    (a,) = campaigns(sessions, 1)
    fill = Filler(sessions, seed=2)
    rows = [fill.row(a, pid) for pid in range(1, 900, 2)]
    fill.add(rows)
    late = fill.row(a, 500)
    engine, fired = sessions.kw["bind"], []

    def after(conn, cursor, statement, *args):
        if "GROUP BY program.island" in statement and not fired:
            fired.append(1)
            t = threading.Thread(target=fill.add, args=([late],))   # another connection
            t.start()
            t.join()

    event.listen(engine, "after_cursor_execute", after)
    try:
        agg = check(sessions, a, rows + [late])
    finally:
        event.remove(engine, "after_cursor_execute", after)
    assert fired and agg.programs == len(rows) + 1


def test_memory_stays_bounded(db_url, small):
    """Ten thousand programs kept as totals, at most CAP scatter points and the improvements."""
    sessions = session_factory(db_url)
    (a,) = campaigns(sessions, 1)
    fill = Filler(sessions, seed=3)
    rows, pid = [], 0
    for batch in range(10):
        new = [fill.row(a, pid + i) for i in range(1, 1001)]
        pid += 1000
        fill.add(new)
        rows += new
        agg, got = overview(sessions, a)
        assert len(agg.scatter) <= CAP
        assert len(got["history"]["scores"]["x"]) <= CAP
        sizes = [len(v) for v in vars(agg).values() if isinstance(v, (list, dict))]
        assert max(sizes) <= max(CAP, len(agg.best_x)) < 500   # of 10,000 programs
    assert agg.programs == 10_000 and agg.width == 1024
