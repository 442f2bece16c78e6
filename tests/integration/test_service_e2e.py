"""The acceptance check of the service, end to end, with real processes and default settings.

Redis and PostgreSQL on loopback; `evoforge db upgrade`; API keys for projects A and B;
`evoforge serve` and two `evoforge worker` processes started as a user would (no short
visibility timeout, no `evoforge beat`). A campaign posted over REST completes with exactly its
80 evaluations although one worker is SIGKILLed part-way: the iterations the dead worker was
running are re-sent by the sweeper inside `evoforge serve` once the worker's lease goes stale
(30 s), not after Redis' one-hour visibility timeout. Then tenancy (200 / 404 / 401) and
malformed campaigns (4xx with a message).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
from sqlalchemy import select

from evoforge.db.models import Campaign, Program, WorkerLease
from tests.integration.services import (  # noqa: F401
    EVOFORGE, ROOT, evoforge_env, free_port, postgres_server, redis_server, redis_url,
    start_evoforge, stop_process, tail, wait_for, wait_port)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BODY = {"task": "circle_packing", "params": {"n": 26}, "seed": 0, "parallel": 4,
        "budget": {"max_evaluations": 80}}
KILL_AFTER = 20


def _cli(*args: str, env: dict[str, str]) -> str:
    out = subprocess.run(EVOFORGE + list(args), env=env, cwd=str(ROOT), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, f"evoforge {' '.join(args)}: {out.stdout}\n{out.stderr}"
    return out.stdout


def test_campaign_survives_a_killed_worker_with_default_settings(tmp_path, postgres_server,
                                                                 redis_url):
    import httpx

    from evoforge.db.engine import session_factory

    db_url = postgres_server.createdb()
    env = evoforge_env(db_url, redis_url)
    for name in ("EVOFORGE_VISIBILITY_TIMEOUT_S", "EVOFORGE_LEASE_STALE_S", "EVOFORGE_HEARTBEAT_S",
                 "EVOFORGE_SWEEP_INTERVAL_S", "EVOFORGE_SWEEP_STALE_S"):
        env.pop(name, None)  # defaults, as a user would run it
    _cli("db", "upgrade", "--db", db_url, env=env)
    key_a = json.loads(_cli("apikey", "create", "--project", "A", "--json", env=env))
    key_b = json.loads(_cli("apikey", "create", "--project", "B", "--json", env=env))
    assert key_a["project"] == "A" and key_b["project"] == "B" and key_a["key"] != key_b["key"]

    port = free_port()
    procs: dict[str, subprocess.Popen] = {}
    logs = {n: tmp_path / f"{n}.log" for n in ("serve", "w1", "w2")}

    def all_logs() -> str:
        return "\n".join(f"--- {n}\n{tail(p, 4000)}" for n, p in logs.items())

    try:
        procs["serve"] = start_evoforge(["serve", "--host", "127.0.0.1", "--port", str(port)],
                                        env, logs["serve"])
        for n in ("w1", "w2"):
            procs[n] = start_evoforge(["worker", "--hostname", f"{n}@%h"], env, logs[n])
        wait_port(port, 60, proc=procs["serve"])
        for n in ("w1", "w2"):
            wait_for(lambda: "ready." in tail(logs[n], 100_000), 60, what=f"worker {n} ready")

        base = f"http://127.0.0.1:{port}/api/v1"
        auth_a = {"Authorization": f"Bearer {key_a['key']}"}
        auth_b = {"Authorization": f"Bearer {key_b['key']}"}
        http = httpx.Client(base_url=base, timeout=30)
        r = http.post("/campaigns", json=BODY, headers=auth_a)
        assert r.status_code == 201, r.text
        cid = r.json()["id"]
        sessions = session_factory(db_url)

        def state() -> Campaign:
            with sessions() as s:
                return s.get(Campaign, cid)

        def leased_by(pid: int) -> set[int]:
            """Uncommitted iterations this worker process holds a lease on."""
            with sessions() as s:
                done = set(s.scalars(select(Program.iteration).where(Program.campaign_id == cid)))
                return {it for wid, it in s.execute(select(WorkerLease.worker_id,
                                                           WorkerLease.iteration)
                                                    .where(WorkerLease.campaign_id == cid))
                        if wid.split(":")[1] == str(pid) and it not in done}

        # Part-way, kill a worker that is running an iteration right now. It is frozen first
        # (SIGSTOP) and its lease checked again, so it cannot commit between the check and
        # the kill; a worker that finished meanwhile is thawed and another moment is awaited.
        def victim() -> str | None:
            if state().evaluations < KILL_AFTER:
                return None
            for n in ("w1", "w2"):
                if leased_by(procs[n].pid):
                    os.killpg(procs[n].pid, signal.SIGSTOP)
                    if leased_by(procs[n].pid):
                        return n
                    os.killpg(procs[n].pid, signal.SIGCONT)
            return None

        name = wait_for(victim, 120, interval_s=0.05, what=f"{KILL_AFTER} evaluations and a "
                        "worker holding a lease")
        os.killpg(procs[name].pid, signal.SIGKILL)
        procs[name].wait(10)
        killed_at = time.monotonic()
        orphaned = leased_by(procs[name].pid)   # what the dead worker was running
        evaluations_at_kill = state().evaluations
        print(f"killed {name} at {evaluations_at_kill} evaluations running {orphaned}")
        assert evaluations_at_kill < 80, "the kill came too late to prove anything"
        assert orphaned, "the killed worker was running nothing: the kill proves nothing"

        try:
            wait_for(lambda: state().status in ("completed", "failed", "cancelled"), 150,
                     interval_s=0.5, what="the campaign to finish")
        except TimeoutError:
            c = state()
            raise AssertionError(f"stuck: {c.status} {c.evaluations}/80 reserved "
                                 f"{c.iterations_reserved}\n{all_logs()}")
        recovered_s = time.monotonic() - killed_at
        print(f"completed {recovered_s:.1f}s after the kill")

        c = state()
        assert c.status == "completed", (c.status, c.error, all_logs())
        assert c.evaluations == 80 and c.iterations_reserved == 80
        with sessions() as s:
            iterations = sorted(s.scalars(select(Program.iteration).where(Program.campaign_id == cid)))
            lingering = set(s.scalars(select(WorkerLease.iteration).where(
                WorkerLease.campaign_id == cid, WorkerLease.iteration.in_(orphaned))))
        assert iterations == list(range(80)), iterations          # each exactly once, no gap
        assert recovered_s < 150                                   # far below the 3600 s timeout
        assert not lingering, "the dead worker's leases were not swept: who re-sent them?"
        assert "of a dead worker" in tail(logs["serve"], 1_000_000), all_logs()
        # The REST view agrees with the database.
        r = http.get(f"/campaigns/{cid}", headers=auth_a)
        assert r.status_code == 200 and r.json()["status"] == "completed"
        assert r.json()["evaluations"] == 80

        # Tenancy: the owner reads the elites, another project gets 404, no key gets 401.
        r = http.get(f"/campaigns/{cid}/elites", headers=auth_a)
        assert r.status_code == 200, r.text
        assert sum(len(i["cells"]) for i in r.json()["islands"]) >= 1
        r = http.get(f"/campaigns/{cid}/elites", headers=auth_b)
        assert r.status_code == 404, r.text
        r = http.get(f"/campaigns/{cid}/elites")
        assert r.status_code == 401, r.text

        # Malformed campaigns: 4xx with a message, never 5xx.
        bad_bodies = [
            {},                                                          # no task
            {"task": "no_such_task"},
            {**BODY, "params": {"n": "many"}},
            {**BODY, "parallel": 0},
            {**BODY, "budget": {"max_evaluations": -5}},
            {**BODY, "seed": "zero"},
            [1, 2, 3],
        ]
        for body in bad_bodies:
            r = http.post("/campaigns", json=body, headers=auth_a)
            assert 400 <= r.status_code < 500, (body, r.status_code, r.text)
            assert r.json().get("detail"), (body, r.text)
        r = http.post("/campaigns", content=b"{not json", headers={**auth_a,
                                                                   "Content-Type": "application/json"})
        assert 400 <= r.status_code < 500 and r.json().get("detail"), r.text
        r = http.post("/campaigns", json=BODY, headers=auth_b)   # B may create its own
        assert r.status_code == 201
        http.post(f"/campaigns/{r.json()['id']}/cancel", headers=auth_b)
        http.close()
    finally:
        for p in procs.values():
            stop_process(p)
