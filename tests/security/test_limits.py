"""A key holder cannot exhaust the server: event streams, campaigns and deletes are bounded.

Everything goes through a real uvicorn server on loopback (`live_server`) and a real SQLite
database; limits are set the way an operator sets them, in the environment.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from evoforge.db.apikeys import create_key
from evoforge.db.models import Campaign, Program
from tests.api.conftest import wait_for
from tests.integration.services import pg_url, postgres_server  # noqa: F401

SPEC = {"task": "circle_packing", "params": {"n": 26}, "budget": {"max_evaluations": 5}}


def keys(srv, *projects: str) -> list[str]:
    return [create_key(srv.app.state.evo.sessions, p)[0] for p in projects]


def create(srv, key: str | None, **extra) -> httpx.Response:
    with srv.client(key) as c:
        return c.post("/campaigns", json={**SPEC, **extra})


class Stream:
    """One SSE connection of its own, held open until closed."""

    def __init__(self, srv, key: str | None, cid: int):
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.client = httpx.Client(base_url=srv.url + "/api/v1", headers=headers, timeout=20)
        self.response = self.client.send(self.client.build_request("GET", f"/campaigns/{cid}/events"),
                                         stream=True)
        self.status = self.response.status_code
        if self.status == 200:
            self.lines = self.response.iter_lines()
            assert next(self.lines).startswith("retry:")  # the stream is really open

    def text(self) -> str:
        self.response.read()
        return self.response.text

    def read_for(self, seconds: float) -> tuple[str, bool]:
        """What the stream sends within `seconds`, and whether it ended by itself."""
        out, deadline = [], time.monotonic() + seconds
        for line in self.lines:
            out.append(line)
            if time.monotonic() > deadline:
                return "\n".join(out), False
        return "\n".join(out), True

    def close(self) -> None:
        self.response.close()
        self.client.close()


def opened(srv) -> int:
    slots = getattr(srv.app.state, "event_streams", None)
    return 0 if slots is None else sum(slots._open.values())


# -- event streams ------------------------------------------------------------------------------


def test_event_streams_are_capped_per_project_and_slots_come_back(live_server, monkeypatch):
    monkeypatch.setenv("EVOFORGE_SSE_MAX_STREAMS", "3")
    srv = live_server(execute=False)
    key_a, key_b = keys(srv, "a", "b")
    cid_a = create(srv, key_a).json()["id"]
    cid_b = create(srv, key_b).json()["id"]
    streams = [Stream(srv, key_a, cid_a) for _ in range(3)]
    try:
        assert [s.status for s in streams] == [200, 200, 200]
        extra = Stream(srv, key_a, cid_a)
        assert extra.status == 429, extra.status
        assert "too many event streams" in extra.text()
        extra.close()
        other = Stream(srv, key_b, cid_b)          # another project has its own slots
        assert other.status == 200
        other.close()
    finally:
        for s in streams:
            s.close()
    wait_for(lambda: opened(srv) == 0, 15)         # the clients went away: the slots are free

    again = [Stream(srv, key_a, cid_a) for _ in range(3)]
    try:
        assert [s.status for s in again] == [200, 200, 200]
    finally:
        for s in again:
            s.close()


def test_open_mode_caps_streams_per_client_address(live_server, monkeypatch):
    monkeypatch.setenv("EVOFORGE_SSE_MAX_STREAMS", "2")
    srv = live_server(execute=False)
    cid = create(srv, None).json()["id"]
    streams = [Stream(srv, None, cid) for _ in range(2)]
    try:
        assert [s.status for s in streams] == [200, 200]
        third = Stream(srv, None, cid)
        assert third.status == 429 and "limit is 2" in third.text()
        third.close()
    finally:
        for s in streams:
            s.close()


def test_an_idle_stream_is_closed(live_server, monkeypatch):
    monkeypatch.setenv("EVOFORGE_SSE_IDLE_S", "1.5")
    srv = live_server(execute=False)   # queued forever: nothing but heartbeats to send
    cid = create(srv, None).json()["id"]
    s = Stream(srv, None, cid)
    try:
        text, ended = s.read_for(15)
    finally:
        s.close()
    assert ended, f"the stream was still open after 15 s:\n{text[-500:]}"
    assert "event: end" in text and '"reason": "idle"' in text
    wait_for(lambda: opened(srv) == 0, 10)


def test_a_stream_ends_when_its_campaign_is_deleted(live_server):
    srv = live_server(execute=False)
    cid = create(srv, None).json()["id"]
    s = Stream(srv, None, cid)
    try:
        with srv.client() as c:
            assert c.delete(f"/campaigns/{cid}").status_code == 204
        text, ended = s.read_for(15)
    finally:
        s.close()
    assert ended and '"reason": "deleted"' in text
    wait_for(lambda: opened(srv) == 0, 10)


# -- quotas -------------------------------------------------------------------------------------


def count_campaigns(srv) -> int:
    with srv.app.state.evo.sessions() as s:
        return s.scalar(select(func.count()).select_from(Campaign))


def test_running_campaigns_quota(live_server, monkeypatch):
    monkeypatch.setenv("EVOFORGE_QUOTA_RUNNING_CAMPAIGNS", "1")
    srv = live_server(execute=False)   # campaigns stay queued: they count as active
    key_a, key_b = keys(srv, "a", "b")
    first = create(srv, key_a)
    assert first.status_code == 201, first.text
    second = create(srv, key_a)
    assert second.status_code == 429 and "limit is 1" in second.json()["detail"]
    assert count_campaigns(srv) == 1                      # nothing created
    assert create(srv, key_b).status_code == 201          # per project

    with srv.client(key_a) as c:                          # pausing frees the slot ...
        cid = first.json()["id"]
        assert c.post(f"/campaigns/{cid}/pause").status_code == 200
        third = c.post("/campaigns", json=SPEC)
        assert third.status_code == 201, third.text
        resumed = c.post(f"/campaigns/{cid}/resume")      # ... and resuming needs it again
        assert resumed.status_code == 429 and "limit is 1" in resumed.json()["detail"]
        assert c.get(f"/campaigns/{cid}").json()["status"] == "paused"
        assert c.post(f"/campaigns/{third.json()['id']}/cancel").status_code == 200
        assert c.post(f"/campaigns/{cid}/resume").status_code == 200


def test_concurrent_creates_cannot_both_pass_a_limit_of_one(live_server, monkeypatch):
    monkeypatch.setenv("EVOFORGE_QUOTA_RUNNING_CAMPAIGNS", "1")
    srv = live_server(execute=False)
    (key,) = keys(srv, "a")
    barrier = threading.Barrier(12)

    def one(_):
        with srv.client(key) as c:
            barrier.wait()
            return c.post("/campaigns", json=SPEC).status_code

    with ThreadPoolExecutor(12) as pool:
        codes = list(pool.map(one, range(12)))
    assert sorted(codes) == [201] + [429] * 11, codes
    assert count_campaigns(srv) == 1


def test_parallel_above_the_operators_maximum_is_refused(live_server, monkeypatch):
    monkeypatch.setenv("EVOFORGE_QUOTA_MAX_PARALLEL", "4")
    srv = live_server(execute=False)
    r = create(srv, None, parallel=8)
    assert r.status_code == 403 and "parallel 8" in r.json()["detail"]
    assert count_campaigns(srv) == 0
    assert create(srv, None, parallel=4).status_code == 201


def test_evaluation_quota_counts_the_budget_asked_for(live_server, monkeypatch):
    monkeypatch.setenv("EVOFORGE_QUOTA_EVALUATIONS", "100")
    srv = live_server(execute=False)
    unbounded = create(srv, None, budget={})
    assert unbounded.status_code == 403 and "budget.max_evaluations" in unbounded.json()["detail"]
    assert create(srv, None, budget={"max_evaluations": 60}).status_code == 201
    over = create(srv, None, budget={"max_evaluations": 60})
    assert over.status_code == 403 and "40 of 100" in over.json()["detail"]
    assert create(srv, None, budget={"max_evaluations": 40}).status_code == 201
    assert count_campaigns(srv) == 2


# -- deletes ------------------------------------------------------------------------------------

SLOW_WRAPPER = """

import time as _time
_pack = pack_circles


def pack_circles(n):
    _time.sleep(8)
    return _pack(n)
"""


def test_deleting_running_campaigns_does_not_block_the_server(live_server, monkeypatch):
    monkeypatch.setenv("EVOFORGE_QUOTA_RUNNING_CAMPAIGNS", "0")
    srv = live_server()   # campaigns run in this process
    seed = (Path(__file__).resolve().parents[2] / "evaluators/circle_packing/seed.py").read_text()
    ids = []
    with srv.client() as c:
        for _ in range(20):
            r = c.post("/campaigns", json={**SPEC, "program": seed + SLOW_WRAPPER})
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])
    runner = srv.app.state.evo.runner
    sessions = srv.app.state.evo.sessions

    def seeds_in_flight() -> bool:
        with sessions() as s:
            return s.scalar(select(func.count()).select_from(Campaign)
                            .where(Campaign.iterations_reserved > 0)) == len(ids)
    wait_for(seeds_in_flight, 30)      # every campaign is evaluating its (8 s) seed

    def delete(cid: int) -> float:
        t0 = time.monotonic()
        with srv.client() as c:
            r = c.delete(f"/campaigns/{cid}")
            # 202: cancelled now, the row goes once the seed in flight ends (not waited for)
            assert r.status_code in (202, 204), r.text
        return time.monotonic() - t0

    health_s = []
    with ThreadPoolExecutor(len(ids)) as pool:
        futures = [pool.submit(delete, cid) for cid in ids]
        with srv.client() as c:
            t_end = time.monotonic() + 3.0   # deletes in flight, then their background ends
            while time.monotonic() < t_end or not all(f.done() for f in futures):
                t0 = time.monotonic()
                assert c.get("/healthz").status_code == 200
                health_s.append(time.monotonic() - t0)
                time.sleep(0.05)
        delete_s = [f.result() for f in futures]
    assert max(delete_s) < 4.0, f"deletes waited for the campaigns: {sorted(delete_s)}"
    assert health_s and max(health_s) < 2.0, health_s

    with srv.client() as c:
        statuses = [c.get(f"/campaigns/{cid}").json().get("status") for cid in ids]
        assert set(statuses) <= {"cancelled", None}, statuses      # nothing runs on
        # The executors end on their own once their in-flight seed is done; then the rows go.
        wait_for(lambda: all(c.get(f"/campaigns/{cid}").status_code == 404 for cid in ids), 60)
    wait_for(lambda: not any(runner.is_running(cid) for cid in ids), 60)
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(Program)
                        .where(Program.campaign_id.in_(ids))) == 0


@pytest.mark.integration
def test_concurrent_creates_on_postgresql_across_two_api_processes(pg_url, serve_process):
    """Two `evoforge serve` processes on one PostgreSQL: the advisory lock holds across them."""
    from evoforge.db.engine import session_factory

    env = {"EVOFORGE_QUOTA_RUNNING_CAMPAIGNS": "1", "EVOFORGE_BROKER_URL": ""}
    servers = [serve_process(db_url=pg_url, env=env) for _ in range(2)]
    key, _ = create_key(session_factory(pg_url), "pg")
    barrier = threading.Barrier(12)

    def one(i):
        with httpx.Client(base_url=servers[i % 2].url + "/api/v1", timeout=60,
                          headers={"Authorization": f"Bearer {key}"}) as c:
            barrier.wait()
            return c.post("/campaigns", json=SPEC).status_code

    with ThreadPoolExecutor(12) as pool:
        codes = list(pool.map(one, range(12)))
    assert sorted(codes) == [201] + [429] * 11, codes
