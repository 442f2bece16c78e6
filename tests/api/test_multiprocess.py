"""Several API processes over one database stay coherent: a write through one process (or a
Celery worker's commit) is seen by the very next read through any other.

Real processes only: Redis, PostgreSQL or a SQLite file, `evoforge worker` (Celery, the one that
commits the programs) and either two `evoforge serve` processes on two ports, or one
`evoforge serve --workers 2` whose two processes share a port (each connection is mapped to the
process that accepted it through /proc, so "write through one, read through the other" is
literal). What is checked:

- campaign writes (create, pause, resume, schedule, cancel, delete) through process A are what
  process B answers at once, on /campaigns/{id}, /schedule, /elites and /programs;
- while the worker commits, reads alternating between the processes never go back: evaluations,
  the number of programs and each elite cell's score only grow, and a read through B sent after
  a read through A is at least as new (programs total >= the evaluations A showed; the
  campaign's evaluations >= the programs total B showed);
- B's event stream shows the pause and the cancel made through A.

Against the per-process version cache this replaced (0.15 s + 0.25 s TTL), the progress check
fails within a few reads (tests/api/test_read_caches.py checks the single-process case).
"""
from __future__ import annotations

import http.client
import json
import os
import subprocess
import threading
from pathlib import Path

import httpx
import pytest

from tests.integration.services import (  # noqa: F401
    EVOFORGE, ROOT, evoforge_env, free_port, postgres_server, redis_server, redis_url,
    start_evoforge, stop_process, tail, wait_for, wait_port)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BODY = {"task": "circle_packing", "params": {"n": 26}, "seed": 0, "parallel": 2,
        "budget": {"max_evaluations": 400}}
SCHEDULE = {"cron": "*/15 * * * *", "evaluations_per_run": 7}


def _cli(env: dict[str, str], *args: str) -> str:
    out = subprocess.run(EVOFORGE + list(args), env=env, cwd=str(ROOT), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, f"evoforge {' '.join(args)}: {out.stdout}\n{out.stderr}"
    return out.stdout


class Deployment:
    """Processes of one test, stopped (and their logs shown on failure) at the end."""

    def __init__(self, tmp_path: Path, db_url: str, broker_url: str):
        self.tmp, self.procs, self.logs = tmp_path, {}, {}
        self.env = evoforge_env(db_url, broker_url, EVOFORGE_SWEEP_INTERVAL_S="1")
        _cli(self.env, "db", "upgrade")
        self.key = json.loads(_cli(self.env, "apikey", "create", "--project", "A",
                                   "--json"))["key"]

    def start(self, name: str, args: list[str]) -> subprocess.Popen:
        self.logs[name] = self.tmp / f"{name}.log"
        self.procs[name] = start_evoforge(args, self.env, self.logs[name])
        return self.procs[name]

    def serve(self, name: str, *extra: str) -> int:
        port = free_port()
        proc = self.start(name, ["serve", "--host", "127.0.0.1", "--port", str(port),
                                 "--log-level", "info", *extra])
        wait_port(port, 90, proc=proc)
        return port

    def worker(self) -> None:
        self.start("worker", ["worker", "--queues", "llm,eval,gpu", "--concurrency", "2",
                              "--hostname", "w1@%h"])
        wait_for(lambda: "ready." in tail(self.logs["worker"], 100_000), 90, what="worker ready")

    def all_logs(self) -> str:
        return "\n".join(f"--- {n}\n{tail(p, 3000)}" for n, p in self.logs.items())

    def stop(self) -> None:
        for proc in self.procs.values():
            try:
                os.killpg(proc.pid, 15)
            except ProcessLookupError:
                pass
            stop_process(proc)


class Api:
    """One keep-alive connection to one API process (http.client: its socket is known, so the
    process that accepted it can be found)."""

    def __init__(self, port: int, key: str):
        self.port, self.key = port, key
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.conn.connect()

    def call(self, method: str, path: str, body=None) -> tuple[int, object]:
        headers = {"Authorization": f"Bearer {self.key}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        self.conn.request(method, "/api/v1" + path, body=data, headers=headers)
        r = self.conn.getresponse()
        raw = r.read()
        return r.status, (json.loads(raw) if raw else None)

    def get(self, path: str):
        status, doc = self.call("GET", path)
        assert status == 200, (path, status, doc)
        return doc

    def close(self) -> None:
        self.conn.close()


class Events:
    """Server-sent events of one campaign from one process, collected by a thread."""

    def __init__(self, port: int, key: str, cid: int):
        self.events: list[tuple[str, dict]] = []
        self.thread = threading.Thread(target=self._run, args=(port, key, cid), daemon=True)
        self.thread.start()

    def _run(self, port: int, key: str, cid: int) -> None:
        with httpx.Client(timeout=httpx.Timeout(10, read=120)) as http:
            with http.stream("GET", f"http://127.0.0.1:{port}/api/v1/campaigns/{cid}/events",
                             headers={"Authorization": f"Bearer {key}"}) as r:
                assert r.status_code == 200
                name = None
                for line in r.iter_lines():
                    if line.startswith("event: "):
                        name = line[7:]
                    elif line.startswith("data: ") and name:
                        self.events.append((name, json.loads(line[6:])))
                        if name == "end":
                            return

    def statuses(self) -> list[str]:
        return [d["status"] for n, d in list(self.events) if n == "progress"]


def cell_scores(doc: dict) -> dict[tuple[int, str], float]:
    return {(i["island"], c["cell"]): c["score"] for i in doc["islands"] for c in i["cells"]}


class Monotonic:
    """Reads alternating between processes A and B never go back in time."""

    def __init__(self, a: Api, b: Api, cid: int):
        self.a, self.b, self.cid = a, b, cid
        self.evaluations = self.total = 0
        self.cells: dict[tuple[int, str], float] = {}
        self.rounds = 0

    def round(self) -> int:
        for first, second in ((self.a, self.b), (self.b, self.a)):
            c = first.get(f"/campaigns/{self.cid}")
            assert c["evaluations"] >= max(self.evaluations, self.total), ("campaign went back", c)
            self.evaluations = c["evaluations"]
            page = second.get(f"/campaigns/{self.cid}/programs?sort=-iteration&limit=5")
            # The other process, asked after: at least the programs the campaign counted.
            assert page["total"] >= self.evaluations, ("stale programs", page["total"],
                                                       self.evaluations)
            self.total = page["total"]
            elites = cell_scores(second.get(f"/campaigns/{self.cid}/elites"))
            for cell, score in self.cells.items():
                assert cell in elites and elites[cell] >= score, ("stale elites", cell, score)
            self.cells = elites
        self.rounds += 1
        return self.evaluations


def warm(api: Api) -> None:
    status, c = api.call("POST", "/campaigns", {**BODY, "budget": {"max_evaluations": 1}})
    assert status == 201, c
    api.call("POST", f"/campaigns/{c['id']}/cancel")
    assert api.call("DELETE", f"/campaigns/{c['id']}")[0] in (202, 204)


def coherence(a: Api, b: Api, port_b: int, key: str) -> None:
    """Write through `a`, read through `b` at once; reads through both stay monotonic while
    the worker commits; `b`'s event stream follows writes made through `a`."""
    status, c = a.call("POST", "/campaigns", BODY)
    assert status == 201, c
    cid = c["id"]
    seen = b.get(f"/campaigns/{cid}")
    assert seen["id"] == cid and seen["status"] == c["status"]
    events = Events(port_b, key, cid)
    mono = Monotonic(a, b, cid)
    wait_for(lambda: mono.round() >= 10, 120, interval_s=0, what="10 evaluations")

    status, paused = a.call("POST", f"/campaigns/{cid}/pause")
    assert status == 200 and paused["status"] == "paused", paused
    assert b.get(f"/campaigns/{cid}")["status"] == "paused"
    mono.round()
    wait_for(lambda: "paused" in events.statuses(), 15, interval_s=0.05,
             what="the pause through A in B's event stream")
    status, sched = a.call("PUT", f"/campaigns/{cid}/schedule", SCHEDULE)
    assert status == 200 and sched["schedule"] == SCHEDULE, sched
    assert b.get(f"/campaigns/{cid}/schedule") == SCHEDULE
    assert b.get(f"/campaigns/{cid}")["schedule"] == SCHEDULE
    status, _ = a.call("DELETE", f"/campaigns/{cid}/schedule")
    assert status == 200 and b.get(f"/campaigns/{cid}")["schedule"] is None

    status, resumed = a.call("POST", f"/campaigns/{cid}/resume")
    assert status == 200, resumed
    assert b.get(f"/campaigns/{cid}")["status"] == resumed["status"] == "running"
    start = mono.evaluations
    wait_for(lambda: mono.round() >= start + 10, 120, interval_s=0, what="10 more evaluations")
    assert mono.total >= start + 10

    status, cancelled = a.call("POST", f"/campaigns/{cid}/cancel")
    assert status == 200 and cancelled["status"] == "cancelled", cancelled
    assert b.get(f"/campaigns/{cid}")["status"] == "cancelled"
    mono.round()
    events.thread.join(30)
    assert not events.thread.is_alive(), "the stream from B did not end on the cancel through A"
    assert events.events[-1] == ("end", {"reason": "cancelled", "campaign_id": cid})
    statuses = events.statuses()
    assert "paused" in statuses and statuses[-1] == "cancelled", statuses
    # Committed after the cancel (in-flight iterations end) or not: B still matches A.
    final = a.get(f"/campaigns/{cid}")["evaluations"]
    assert b.get(f"/campaigns/{cid}/programs?limit=1")["total"] >= final

    # Deleted through A: gone through B at once, cached bodies or not.
    status, _ = a.call("DELETE", f"/campaigns/{cid}")
    assert status in (202, 204)
    wait_for(lambda: a.call("GET", f"/campaigns/{cid}")[0] == 404, 30, what="the delete")
    for path in (f"/campaigns/{cid}", f"/campaigns/{cid}/elites", f"/campaigns/{cid}/programs"):
        assert b.call("GET", path)[0] == 404, path
    print(f"{mono.rounds} rounds of alternating reads; {final} evaluations")


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_two_serve_processes_on_two_ports(tmp_path, database, redis_url, request):
    if database == "postgres":
        db_url = request.getfixturevalue("postgres_server").createdb()
    else:
        db_url = f"sqlite:///{tmp_path / 'shared.db'}"
    dep = Deployment(tmp_path, db_url, redis_url)
    try:
        port_a, port_b = dep.serve("serve-a"), dep.serve("serve-b")
        dep.worker()
        a, b = Api(port_a, dep.key), Api(port_b, dep.key)
        coherence(a, b, port_b, dep.key)
        # And the other way round, on a new campaign.
        coherence(b, a, port_a, dep.key)
    except BaseException:
        print(dep.all_logs())
        raise
    finally:
        dep.stop()


# -- one `evoforge serve --workers 2`: which process holds which connection ---------------------
def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


def _server_pid(conn: http.client.HTTPConnection, pids: list[int]) -> int | None:
    """The process holding the server end of this client connection (/proc/net/tcp gives the
    socket's inode by its ports, /proc/PID/fd who holds it)."""
    client_port = conn.sock.getsockname()[1]
    server_port = conn.sock.getpeername()[1]
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if (int(f[1].split(":")[1], 16) == server_port
                and int(f[2].split(":")[1], 16) == client_port):
            inode = f[9]
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    return pid
        except OSError:
            continue
    return None


def test_serve_workers_2_write_through_one_read_through_the_other(tmp_path, postgres_server,
                                                                  redis_url):
    dep = Deployment(tmp_path, postgres_server.createdb(), redis_url)
    try:
        port = dep.serve("serve", "--workers", "2")
        dep.worker()
        parent = dep.procs["serve"].pid
        workers = wait_for(lambda: [p for p in _children(parent)
                                    if "multiprocessing" in Path(f"/proc/{p}/cmdline").read_text()
                                    and "spawn_main" in Path(f"/proc/{p}/cmdline").read_text()]
                           if len(_children(parent)) >= 2 else None, 60, what="2 API processes")
        assert len(workers) == 2, workers
        by_pid: dict[int, Api] = {}
        for _ in range(200):  # connections until both processes hold one
            for held in by_pid.values():  # within uvicorn's keep-alive timeout (5 s)
                held.get("/tasks")
            api = Api(port, dep.key)
            api.get("/tasks")
            pid = _server_pid(api.conn, workers)
            if pid is not None and pid not in by_pid:
                by_pid[pid] = api
            else:
                api.close()
            if len(by_pid) == 2:
                break
        assert len(by_pid) == 2, f"every connection went to one process: {by_pid}"
        a, b = by_pid[workers[0]], by_pid[workers[1]]
        for x, other in ((a, b), (b, a)):  # warm each process up (the first create imports the
            warm(x)                         # task and the broker client: seconds on 2 cores)
            other.get("/tasks")             # and keep the other connection open meanwhile
        coherence(a, b, port, dep.key)
        # Both ways, on a new campaign (the event stream lands on either process).
        coherence(b, a, port, dep.key)
        assert [_server_pid(x.conn, workers) for x in (a, b)] == workers  # still two processes
    except BaseException:
        print(dep.all_logs())
        raise
    finally:
        dep.stop()


def test_serve_workers_refuses_without_a_broker(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVOFORGE_")}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run(EVOFORGE + ["serve", "--workers", "2", "--db",
                                     f"sqlite:///{tmp_path / 'x.db'}", "--port", str(free_port())],
                         env=env, cwd=str(ROOT), capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "--workers 2 needs a broker" in out.stderr, out.stderr
