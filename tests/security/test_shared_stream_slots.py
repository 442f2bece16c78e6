"""Event-stream slots hold for the whole server when API processes share a Redis broker.

`EVOFORGE_SSE_MAX_STREAMS` / `EVOFORGE_SSE_MAX_STREAMS_TOTAL` bound what one project (and
everyone) can hold open. Counted per process, N `evoforge serve` processes would allow N times as
many; with a broker the slots are leases in Redis (api/events.py `RedisStreamSlots`), so:

- two real `evoforge serve` processes on one database and one redis-server: the per-project limit
  and the total limit hold across them, and a slot closed on one process is free on the other at
  once (a release, not a lease running out);
- a process killed with SIGKILL while holding a slot (no release, no refresh) loses it once its
  lease runs out, while a live holder keeps its slot for many lease lengths (it refreshes);
- Redis unreachable: each process falls back to counting its own streams (logged), the per
  process limits still hold, and the streams it admitted are counted in Redis once it is back;
- owner strings are hashed into namespaced keys, so no owner string reaches another key.

Without a broker the in-process counting of tests/security/test_limits.py is unchanged.
"""
from __future__ import annotations

import hashlib
import logging
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from evoforge.api import events
from evoforge.db.apikeys import create_key
from evoforge.db.engine import session_factory
from tests.api.conftest import wait_for
from tests.integration.services import (  # noqa: F401
    ROOT, RedisServer, free_port, redis_server, redis_url)

pytestmark = [pytest.mark.integration]

SPEC = {"task": "circle_packing", "params": {"n": 26}, "budget": {"max_evaluations": 5}}


class Stream:
    """One SSE connection of its own, held open until closed."""

    def __init__(self, url: str, key: str, cid: int):
        self.client = httpx.Client(base_url=url + "/api/v1", timeout=20,
                                   headers={"Authorization": f"Bearer {key}"})
        self.response = self.client.send(self.client.build_request("GET", f"/campaigns/{cid}/events"),
                                         stream=True)
        self.status = self.response.status_code
        if self.status == 200:
            # kept: dropping the iterator would close the response (httpx closes it in a finally)
            self.lines = self.response.iter_lines()
            assert next(self.lines).startswith("retry:")  # really open
        else:
            self.response.read()

    def detail(self) -> str:
        return self.response.json()["detail"]

    def close(self) -> None:
        self.response.close()
        self.client.close()


class Deployment:
    """Two `evoforge serve` processes, A and B, on one SQLite file and one Redis."""

    def __init__(self, serve_process, tmp_path, redis_url: str, **env: str):
        db_url = f"sqlite:///{tmp_path / 'shared.db'}"
        # the database in the environment too: the broker runner's enqueue reads it from there
        env = {"EVOFORGE_BROKER_URL": redis_url, "EVOFORGE_DATABASE_URL": db_url, **env}
        self.a = serve_process(env=env, db_url=db_url)      # upgrades the schema
        sessions = session_factory(db_url)
        self.keys = {p: create_key(sessions, p)[0] for p in ("a", "b")}
        self.b = serve_process(env=env, db_url=db_url)
        self.cids = {}
        for project, key in self.keys.items():
            r = httpx.post(self.a.url + "/api/v1/campaigns", json=SPEC, timeout=30,
                           headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == 201, r.text
            self.cids[project] = r.json()["id"]   # queued: no Celery worker, the stream stays open
        self.streams: list[Stream] = []

    def open(self, proc, project: str) -> Stream:
        s = Stream(proc.url, self.keys[project], self.cids[project])
        self.streams.append(s)
        return s

    def close_all(self) -> None:
        for s in self.streams:
            s.close()


def opens_within(deployment: Deployment, proc, project: str, seconds: float) -> Stream:
    """The first stream `proc` accepts for `project` within `seconds` (429s are closed)."""
    def attempt():
        s = deployment.open(proc, project)
        if s.status == 200:
            return s
        assert s.status == 429, (s.status, s.detail())
        s.close()
        return None
    return wait_for(attempt, seconds)


def redis_leases(url: str) -> int:
    import redis

    r = redis.Redis.from_url(url)
    try:
        return r.zcard("evoforge:sse:total")
    finally:
        r.close()


def test_per_project_limit_holds_across_api_processes(serve_process, tmp_path, redis_url):
    d = Deployment(serve_process, tmp_path, redis_url, EVOFORGE_SSE_MAX_STREAMS="2")
    try:
        first, second = d.open(d.a, "a"), d.open(d.a, "a")
        assert [first.status, second.status] == [200, 200]
        third = d.open(d.b, "a")                       # the other process: same project
        assert third.status == 429, third.status
        assert third.detail() == ("too many event streams open (2; the limit is 2 per project or "
                                  "client): close one first")
        assert third.response.headers["retry-after"] == "5"
        assert d.open(d.b, "b").status == 200          # another project has its own slots
        first.close()
        # freed by the release when the stream ends, well before a 45 s lease could run out
        opens_within(d, d.b, "a", 15)
        assert d.open(d.a, "a").status == 429
    finally:
        d.close_all()
    wait_for(lambda: redis_leases(redis_url) == 0, 15)  # every slot released, none left to expire


def test_total_limit_holds_across_api_processes(serve_process, tmp_path, redis_url):
    d = Deployment(serve_process, tmp_path, redis_url, EVOFORGE_SSE_MAX_STREAMS="8",
                   EVOFORGE_SSE_MAX_STREAMS_TOTAL="3")
    try:
        held = [d.open(d.a, "a"), d.open(d.b, "a"), d.open(d.b, "b")]
        assert [s.status for s in held] == [200, 200, 200]
        for proc in (d.a, d.b):
            over = d.open(proc, "b")
            assert over.status == 429, over.status
            assert over.detail() == ("the server has 3 event streams open, its limit: "
                                     "try again later")
        held[0].close()
        opens_within(d, d.b, "b", 15)
    finally:
        d.close_all()


# -- leases ----------------------------------------------------------------------------------

HOLDER = """
import sys, time
from evoforge.api.events import RedisStreamSlots
slots = RedisStreamSlots(sys.argv[1], per_owner=1, total=10, lease_s=float(sys.argv[2]))
assert slots.acquire("project:7") is None
print("held", flush=True)
time.sleep(600)
"""


def test_a_killed_holders_slot_is_freed_after_its_lease(redis_url):
    lease_s = 2.0
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, redis_url, str(lease_s)],
                              cwd=str(ROOT), stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    slots = events.RedisStreamSlots(redis_url, per_owner=1, total=10, lease_s=lease_s)
    try:
        assert holder.stdout.readline().strip() == "held"
        refused = slots.acquire("project:7")
        assert refused and "the limit is 1" in refused
        time.sleep(3 * lease_s)                        # alive: it keeps refreshing its lease
        assert slots.acquire("project:7") is not None
        os.kill(holder.pid, signal.SIGKILL)            # dies holding the slot: no release
        holder.wait(10)
        died = time.monotonic()
        wait_for(lambda: slots.acquire("project:7") is None, 4 * lease_s, interval_s=0.1)
        assert time.monotonic() - died <= 2 * lease_s + 1
        assert redis_leases(redis_url) == 1            # the dead one's lease is gone, ours held
        slots.release("project:7")
        assert redis_leases(redis_url) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)
        slots.close()


def test_close_releases_every_lease_of_the_process(redis_url):
    slots = events.RedisStreamSlots(redis_url, per_owner=3, total=10)
    for owner in ("project:1", "project:1", "client:127.0.0.1"):
        assert slots.acquire(owner) is None
    assert redis_leases(redis_url) == 3
    slots.close()                                      # the app's shutdown
    assert redis_leases(redis_url) == 0


def test_owner_strings_are_hashed_into_namespaced_keys(redis_url):
    import redis

    slots = events.RedisStreamSlots(redis_url, per_owner=1, total=10)
    hostile = ["total", "evoforge:sse:total", "x\r\nFLUSHALL\r\n", "project:1", "client:?"]
    try:
        for owner in hostile:
            assert slots.acquire(owner) is None        # one slot each: no two share a key
        r = redis.Redis.from_url(redis_url)
        keys = sorted(k.decode() for k in r.keys("*"))
        r.close()
        expected = sorted(["evoforge:sse:total"] + [
            "evoforge:sse:owner:" + hashlib.sha256(o.encode()).hexdigest() for o in hostile])
        assert keys == expected
        assert redis_leases(redis_url) == len(hostile)
    finally:
        slots.close()


# -- Redis unreachable ---------------------------------------------------------------------------


def test_unreachable_redis_falls_back_to_per_process_limits(tmp_path, caplog):
    server = RedisServer(tmp_path)                     # its port, nothing listening yet
    slots = events.RedisStreamSlots(server.url, per_owner=2, total=3, lease_s=1.5)
    try:
        with caplog.at_level(logging.WARNING, logger="evoforge.api.events"):
            assert slots.acquire("project:1") is None
            assert slots.acquire("project:1") is None
            assert slots.acquire("project:1") == ("too many event streams open (2; the limit is 2 "
                                                  "per project or client): close one first")
            assert slots.acquire("project:2") is None
            assert slots.acquire("project:2") == ("the server has 3 event streams open, its "
                                                  "limit: try again later")
        assert any("per process" in r.getMessage() for r in caplog.records)
        slots.release("project:1")
        assert slots.acquire("project:2") is None      # still counted, locally
        server.start()                                 # back: what this process holds is counted
        wait_for(lambda: redis_leases(server.url) == 3, 15, interval_s=0.1)
        other = events.RedisStreamSlots(server.url, per_owner=2, total=3)
        try:
            assert other.acquire("project:9") == ("the server has 3 event streams open, its "
                                                  "limit: try again later")
        finally:
            other.close()
    finally:
        slots.close()
        server.stop()


def test_slots_of_picks_redis_when_the_app_has_a_broker(tmp_path, redis_url):
    from evoforge.api.app import create_app

    with_broker = create_app(f"sqlite:///{tmp_path / 'a.db'}", broker_url=redis_url, execute=False)
    without = create_app(f"sqlite:///{tmp_path / 'b.db'}", broker_url="", execute=False)
    try:
        assert isinstance(events.slots_of(with_broker), events.RedisStreamSlots)
        assert isinstance(events.slots_of(without), events.StreamSlots)
    finally:
        events.slots_of(with_broker).close()
