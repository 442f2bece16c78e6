"""The hot reads' fast path (api/fastpath.py) answers exactly what the routes answer.

The strong check: random query strings and paths, many hostile, each sent twice to one live
server, once with the fast path allowed to answer and once with every request forced through
the FastAPI route, the body cache emptied before each, and the two answers compared byte for
byte (status, content type, body). The fast path must also actually answer the plain forms,
or the comparison would prove nothing.
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evoforge.api.caches import LRU
from evoforge.api.fastpath import FastReads, page_query

DEFAULT = {"sort": "score", "status": None, "island": None, "limit": 50, "offset": 0,
           "after": None}


@pytest.mark.parametrize("raw, expected", [
    (b"", {}),
    (b"sort=-iteration&limit=5&island=1&status=ok", {"sort": "-iteration", "limit": 5,
                                                     "island": 1, "status": "ok"}),
    (b"offset=0&limit=500", {"limit": 500}),
    (b"offset=10000", {"offset": 10000}),
    (b"after=s:12:0.5", {"after": "s:12:0.5"}),
    (b"after=s%3A12%3A-1e%2B20", {"after": "s:12:-1e+20"}),   # '+' only encoded
    (b"sort=%73core", {}),
])
def test_plain_forms_are_read(raw, expected):
    assert page_query(raw) == {**DEFAULT, **expected}


@pytest.mark.parametrize("raw", [
    b"limit=5&limit=6", b"limt=5", b"%6Cimit=5", b"limit", b"limit=", b"limit=0", b"limit=501",
    b"limit=05", b"limit=+5", b"limit=%2B5", b"limit=5%20", b"limit=1e2", b"limit=-1",
    b"offset=10001", b"island=64", b"island=-0", b"sort=best", b"sort=Score", b"status=",
    b"status=OK", b"after=s:12:1e+20", b"after=s:1:0.5%0A", b"after=x:1", b"after=" + b"9" * 65,
    b"limit=5&", b"&limit=5", b"status=%C3%28", b"status=\xff", b"after=s:1:0.5%00",
])
def test_anything_else_is_the_routes(raw):
    assert page_query(raw) is None


# Each parameter's edges and near-misses, and values any parameter may get.
EDGES = {"limit": ["1", "500", "501", "0", "05"], "offset": ["0", "10000", "10001", "01"],
         "island": ["0", "63", "64", "-0", "1"], "depth": ["1", "1000", "1001", "0", "010"],
         "sort": ["score", "-score", "iteration", "-iteration", "Score", "best"],
         "status": ["ok", "error", "invalid", "OK", ""],
         "after": ["CUR", "CUR", "s:1:0.5", "n:1", "i:3", "s:1:nan", "i:2147483648",
                   "s:99999999999999999999:1", "s:1:1e+20", "s:1:1e%2B20", "x:1"]}
ANY = ["5", "+5", "%2B5", " 5", "-1", "1e2", "%00", "%C3%28", "%FF", "", "x", "%35"]
KEYS = list(EDGES) + ["limt", "%6Cimit", ""]


def _query(draw) -> str:
    parts = []
    for key in draw(st.lists(st.sampled_from(KEYS), max_size=4)):
        parts.append(f"{key}={draw(st.sampled_from(EDGES.get(key, []) * 2 + ANY))}")
    return "&".join(parts)


@st.composite
def requests(draw, cid: int, ids: list[int], cursors: list[str]):
    kind = draw(st.sampled_from(["programs"] * 3 + ["program", "lineage", "lineage", "elites"]))
    query = _query(draw).replace("CUR", draw(st.sampled_from(cursors)))
    if kind in ("programs", "elites"):
        target = draw(st.sampled_from([cid, cid, cid + 1000, 2**31]))
        path = f"/campaigns/{target}/{kind}"
    else:
        pid = draw(st.sampled_from(ids + [ids[-1] + 1000, 2**31 - 1, 2**31]))
        path = f"/programs/{pid}" + ("/lineage" if kind == "lineage" else "")
    key = draw(st.sampled_from(["alpha", "alpha", "alpha", "beta"]))
    return key, path + (f"?{query}" if query else "")


def test_the_fast_path_answers_as_the_routes_do(finished_campaign, monkeypatch):
    f = finished_campaign(24)
    srv, state = f.server, f.server.app.state.evo
    mode, answered = {"route": False}, []
    answer = FastReads._answer

    async def switch(self, scope):
        if mode["route"]:
            return None
        out = await answer(self, scope)
        answered.append(out is not None)
        return out

    monkeypatch.setattr(FastReads, "_answer", switch)
    with srv.client(f.alpha) as alpha, srv.client(f.beta) as beta:
        clients = {"alpha": alpha, "beta": beta}
        page = alpha.get(f"/campaigns/{f.cid}/programs?limit=5").json()
        ids = sorted(p["id"] for p in alpha.get(f"/campaigns/{f.cid}/programs?limit=500")
                     .json()["items"])
        cursors = [page["next_after"]] + [
            alpha.get(f"/campaigns/{f.cid}/programs?limit=3&sort={s}").json()["next_after"]
            for s in ("-score", "iteration", "-iteration")]
        for path in (f"/programs/{ids[0]}", f"/programs/{ids[-1]}/lineage",
                     f"/campaigns/{f.cid}/elites"):
            assert alpha.get(path).status_code == 200   # each route seen once

        def both(key: str, path: str):
            out = []
            for route in (False, True):
                mode["route"] = route
                state.caches._bodies = LRU(state.caches.body_entries)   # no cache hits
                r = clients[key].get(path)
                out.append((r.status_code, r.headers.get("content-type"), r.content))
            mode["route"] = False
            return out

        # every parameter with each of its edges and each odd value, alone, then twice
        for key in KEYS:
            for value in EDGES.get(key, []) + ANY:
                value = value.replace("CUR", cursors[1])
                path = (f"/programs/{ids[-1]}/lineage" if key == "depth"
                        else f"/campaigns/{f.cid}/programs")
                for query in (f"{key}={value}", f"{key}={value}&{key}={value}"):
                    fast, route = both("alpha", f"{path}?{query}")
                    assert fast == route, (path, query)

        @settings(max_examples=300, deadline=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(requests(f.cid, ids, cursors))
        def check(req):
            fast, route = both(*req)
            assert fast == route, req

        check()
        assert sum(answered) >= 20, sum(answered)   # the fuzzing reached the fast answers
        # the plain forms were answered here, not only handed over
        answered.clear()
        for path in (f"/campaigns/{f.cid}/programs?sort=-iteration&limit=7&island=1",
                     f"/campaigns/{f.cid}/programs?after={cursors[0]}",
                     f"/programs/{ids[3]}", f"/programs/{ids[-1]}/lineage?depth=3"):
            fast, route = both("alpha", path)
            assert fast == route and fast[0] == 200
        assert answered == [True] * 4
        metrics = alpha.get("/metrics").text
        for label in ("/api/v1/programs/{program_id}", "/api/v1/programs/{program_id}/lineage",
                      "/api/v1/campaigns/{campaign_id}/programs"):
            assert f'route="{label}",status="200"' in metrics


def test_fast_answers_keep_the_api_routes_metrics_label(finished_campaign):
    """The fast path labels its answers with the route it stands in for, learnt by the route's
    endpoint function: a dashboard route whose path ends alike (/dashboard-api/programs/{id}),
    matched first, is not taken for the API's."""
    import httpx

    f = finished_campaign(6)
    auth = {"Authorization": f"Bearer {f.alpha}"}
    with httpx.Client(base_url=f.server.url, timeout=60) as c:
        pid = c.get(f"/api/v1/campaigns/{f.cid}/programs?limit=1", headers=auth).json()["items"][0]["id"]
        assert c.get(f"/dashboard-api/programs/{pid}").status_code == 401   # routed, refused
        for _ in range(3):
            assert c.get(f"/api/v1/programs/{pid}", headers=auth).status_code == 200
        lines = [line for line in c.get("/api/v1/metrics", headers=auth).text.splitlines()
                 if line.startswith("evoforge_http_request_duration_seconds_count")]
    ok = [line for line in lines if 'route="/api/v1/programs/{program_id}",status="200"' in line]
    assert ok and ok[0].endswith(" 3.0"), lines
    assert not any("dashboard-api" in line and 'status="200"' in line for line in lines), lines
