"""API read latency under load: GET /campaigns/{id}/elites and /campaigns/{id}/programs with 50
concurrent clients and 20,000 programs stored, on SQLite and PostgreSQL, side by side.

    .venv/bin/python bench/api_latency.py [--programs 20000] [--clients 50] [--requests 40]
                                          [--db sqlite,postgres] [--pg-url postgresql://...]
                                          [--client raw|httpx] [--random]

For each database: migrate, create an API key, store one campaign with `--programs` programs
(bulk inserts, as bench/selection_scaling.py) and a full archive (4 islands x 100 cells), start
a real `evoforge serve` subprocess on loopback (no broker), then per endpoint: a warm-up, then
`--clients` asyncio clients (one keep-alive connection each, all opened before the clock starts)
that each send `--requests` requests back to back. Latency is per request, measured at the
client. The default client is a minimal HTTP/1.1 one on asyncio streams (`--client httpx` for the
old one, which spends as much CPU per request as the server does). PostgreSQL is started
from the system binaries (tests/integration/services.py) unless `--pg-url` is given.
Goal: p99 under 100 ms.

By default each endpoint gets one request, repeated: the read caches answer it (the cached
figure). `--random` draws every request instead (sort, status, island, a page deep in the list
by `offset` or by keyset `after`, a program by id), so that the caches cannot answer them: the
database's figure. bench/million.py does both at a million programs.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert  # noqa: E402

from evoforge.db.apikeys import create_key  # noqa: E402
from evoforge.db.blobs import code_hash, put_codes  # noqa: E402
from evoforge.db.engine import session_factory, upgrade  # noqa: E402
from evoforge.db.models import EliteCell, Evaluation, Program  # noqa: E402
from evoforge.worker.campaign_service import create_campaign  # noqa: E402
from evoforge.db.campaign_config import CampaignSpec  # noqa: E402

ISLANDS, CELLS = 4, 100
ENDPOINTS = {"elites": "/api/v1/campaigns/{cid}/elites",
             "programs": "/api/v1/campaigns/{cid}/programs?sort=score&limit=50"}


def populate(url: str, programs: int) -> tuple[int, str]:
    upgrade(url)
    sessions = session_factory(url)
    key, project_id = create_key(sessions, "bench")
    spec = CampaignSpec(task="circle_packing", archive={"islands": ISLANDS})
    c = create_campaign(sessions, spec, project_id=project_id, status="completed")
    code = c.seed_program
    rng = random.Random(0)
    statuses = ["ok"] * 8 + ["error", "invalid"]
    with sessions.begin() as s:
        for start in range(0, programs, 5000):
            rows = [dict(id=i + 1, campaign_id=c.id, iteration=i, island=i % ISLANDS,
                         parent_id=(rng.randrange(i) + 1) if i else None, generation=1 + i // 1000,
                         code_hash=code_hash(code + f"\n# variant {i}\n"), kind="bench",
                         status=rng.choice(statuses), score=rng.random(), extra={})
                    for i in range(start, min(programs, start + 5000))]
            for r in rows:
                if r["status"] != "ok":
                    r["score"] = None
            put_codes(s, [code + f"\n# variant {i}\n" for i in range(start, start + len(rows))])
            s.execute(insert(Program), rows)
            s.execute(insert(Evaluation), [dict(program_id=r["id"], task_key=c.task_key,
                                                status=r["status"], score=r["score"],
                                                metrics={"sum_radii": r["score"]}, features={},
                                                artifacts={}, cache="miss") for r in rows])
        elites = rng.sample(range(1, programs + 1), ISLANDS * CELLS)
        s.execute(insert(EliteCell), [dict(campaign_id=c.id, island=k % ISLANDS,
                                           cell=f"{(k // ISLANDS) % 10},{(k // ISLANDS) // 10}",
                                           program_id=pid, score=rng.random(),
                                           features={"x": 0.5, "y": 0.5})
                                      for k, pid in enumerate(elites)])
    sessions.kw["bind"].dispose()
    return c.id, key


def serve(url: str, port: int, log_path: Path, *, workers: int = 1,
          broker_url: str | None = None, package: Path | None = None) -> subprocess.Popen:
    """A real `evoforge serve` subprocess; `workers` > 1 (`serve --workers N`) needs a broker,
    which nothing is sent to here: the API only reads. `package`: serve that folder's
    `evoforge` (a snapshot of another commit: bench/soak.py `snapshot`) instead of the checkout's."""
    env = dict(os.environ, EVOFORGE_DATABASE_URL=url, PYTHONPATH=str(package or ROOT))
    env.pop("EVOFORGE_BROKER_URL", None)
    if broker_url:
        env["EVOFORGE_BROKER_URL"] = broker_url
    proc = subprocess.Popen([sys.executable, "-m", "evoforge.cli", "serve", "--host", "127.0.0.1",
                             "--port", str(port), "--log-level", "warning",
                             "--workers", str(workers)],
                            env=env, cwd=str(package or ROOT), stdout=open(log_path, "ab"),
                            stderr=subprocess.STDOUT)
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"evoforge serve exited:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v1/healthz", timeout=1).status_code < 500:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    raise TimeoutError("evoforge serve did not come up")


class RawClient:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams: GET, read the status line, the
    headers and exactly Content-Length bytes of body. httpx costs ~1 ms of CPU per request, as
    much as the server, and client and server share the machine's cores here; this one costs a
    tenth of that, so the figures measure the server rather than the load generator."""

    def __init__(self, host: str, port: int, key: str):
        self.host, self.port = host, port
        self.head = f"Host: {host}:{port}\r\nAuthorization: Bearer {key}\r\n\r\n".encode()

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def get(self, path: str) -> tuple[int, bytes]:
        self.writer.write(b"GET " + path.encode() + b" HTTP/1.1\r\n" + self.head)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        self.writer.close()


class HttpxClient:
    def __init__(self, host: str, port: int, key: str):
        import httpx

        self.http = httpx.AsyncClient(base_url=f"http://{host}:{port}",
                                      headers={"Authorization": f"Bearer {key}"}, timeout=60)

    async def open(self) -> None:
        (await self.http.get("/api/v1/healthz")).raise_for_status()

    async def get(self, path: str) -> tuple[int, bytes]:
        r = await self.http.get(path)
        return r.status_code, r.content

    async def close(self) -> None:
        await self.http.aclose()


CLIENTS = {"raw": RawClient, "httpx": HttpxClient}


async def timed_get(client, path: str, latencies: list[float]) -> None:
    """One GET on `client`, timed at the client: its latency is appended to `latencies`, and
    any status but 200 stops the bench (the path, the status and the body's first bytes)."""
    t0 = time.perf_counter()
    status, body = await client.get(path)
    latencies.append(time.perf_counter() - t0)
    if status != 200:
        raise RuntimeError(f"{path}: {status} {body[:300]!r}")


def random_paths(cid: int, programs: int) -> dict[str, Callable[[random.Random], str]]:
    """--random: request generators (ids are 1..programs, as `populate` stores them)."""
    def page(rng: random.Random) -> str:
        sort = rng.choice(["score", "-score", "iteration", "-iteration"])
        q = f"/api/v1/campaigns/{cid}/programs?sort={sort}&limit=50"
        if rng.random() < 0.5:
            q += f"&status={rng.choice(['ok', 'error', 'invalid'])}"
        if rng.random() < 0.5:
            q += f"&island={rng.randrange(ISLANDS)}"
        if "iteration" in sort:   # iteration i is program i + 1: any iteration is a cursor
            return q + f"&after=i:{rng.randrange(programs)}"
        return q + f"&offset={rng.randrange(min(100_000, programs // 4))}"
    return {"programs": page,
            "program": lambda rng: f"/api/v1/programs/{rng.randrange(programs) + 1}"}


async def load(port: int, path: str | Callable[[random.Random], str], key: str, clients: int,
               requests: int, kind: str = "raw") -> tuple[list[float], float]:
    """`path`: one request repeated, or a function drawing each request."""
    rng = random.Random(0)
    draw = path if callable(path) else (lambda _rng: path)
    make = CLIENTS[kind]
    lat: list[float] = []

    async def get_ok(c, path: str) -> None:
        status, body = await c.get(path)
        if status != 200:
            raise RuntimeError(f"{path}: {status} {body[:200]!r}")

    c = make("127.0.0.1", port, key)
    await c.open()
    for _ in range(20):  # warm-up: caches, query plans
        await get_ok(c, draw(rng))
    serial = []
    for _ in range(100):  # one client alone: the service time without queueing
        await timed_get(c, draw(rng), serial)
    await c.close()
    load.serial_p50 = statistics.median(serial) * 1e3

    # Every client opens its keep-alive connection first; the clock starts when all are open.
    conns = [make("127.0.0.1", port, key) for _ in range(clients)]
    await asyncio.gather(*(c.open() for c in conns))

    async def client(c) -> None:
        for _ in range(requests):
            await timed_get(c, draw(rng), lat)

    t0 = time.perf_counter()
    await asyncio.gather(*(client(c) for c in conns))
    wall = time.perf_counter() - t0
    await asyncio.gather(*(c.close() for c in conns))
    return lat, wall


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))] * 1e3


def bench_db(name: str, url: str, a, tmp: Path) -> dict[str, dict[str, float]]:
    from tests.integration.services import free_port

    t0 = time.perf_counter()
    cid, key = populate(url, a.programs)
    print(f"[{name}] stored {a.programs} programs in {time.perf_counter() - t0:.1f}s", flush=True)
    port = free_port()
    proc = serve(url, port, tmp / f"serve-{name}.log")
    out = {}
    try:
        paths = ({**{ep: p.format(cid=cid) for ep, p in ENDPOINTS.items()},
                  **random_paths(cid, a.programs)} if a.random
                 else {ep: p.format(cid=cid) for ep, p in ENDPOINTS.items()})
        for ep, path in paths.items():
            lat, wall = asyncio.run(load(port, path, key, a.clients, a.requests, a.client))
            out[ep] = {"p50": pct(lat, 50), "p99": pct(lat, 99), "mean": statistics.mean(lat) * 1e3,
                       "rps": len(lat) / wall, "n": len(lat), "serial": load.serial_p50}
            print(f"[{name}] {ep}: 1 client p50 {load.serial_p50:.1f} ms; {a.clients} clients: "
                  f"p50 {out[ep]['p50']:.1f} ms, p99 {out[ep]['p99']:.1f} ms, "
                  f"{out[ep]['rps']:.0f} req/s", flush=True)
    finally:
        proc.terminate()
        proc.wait(20)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--programs", type=int, default=20_000)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--requests", type=int, default=40, help="per client and endpoint")
    ap.add_argument("--db", default="sqlite,postgres")
    ap.add_argument("--pg-url", default=None, help="an empty PostgreSQL database to use")
    ap.add_argument("--client", choices=sorted(CLIENTS), default="raw",
                    help="load generator: raw asyncio HTTP/1.1 (default, ~0.1 ms CPU a request) "
                         "or httpx (~1 ms, competes with the server for the shared cores)")
    ap.add_argument("--random", action="store_true",
                    help="draw every /programs request (and add GET /programs/{id}): uncached")
    a = ap.parse_args()
    results: dict[str, dict] = {}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for name in a.db.split(","):
            if name == "sqlite":
                results[name] = bench_db(name, f"sqlite:///{tmp}/api.db", a, tmp)
            elif name == "postgres":
                pg = None
                url = a.pg_url
                if url is None:
                    from tests.integration.services import PostgresServer, pg_bindir

                    if pg_bindir() is None:
                        print("[postgres] skipped: PostgreSQL is not installed")
                        continue
                    pg = PostgresServer(pg_bindir()).start()
                    url = pg.createdb("bench")
                try:
                    results[name] = bench_db(name, url, a, tmp)
                finally:
                    if pg is not None:
                        pg.stop()
    print(f"\n{a.programs} programs, {a.clients} concurrent clients x {a.requests} requests "
          f"per endpoint ({a.client} client); latency in ms at the client; load average "
          f"{' '.join(f'{x:.2f}' for x in load_before)} before, "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} after ({os.cpu_count()} CPUs)")
    names = list(results)
    print(f"{'endpoint':<10} " + " ".join(f"{n + ' ' + k:>16}" for n in names
                                          for k in ("1-client p50", "p50", "p99", "req/s")))
    for ep in results[names[0]] if names else ():
        cells = []
        for n in names:
            r = results[n][ep]
            cells += [f"{r['serial']:>16.1f}", f"{r['p50']:>16.1f}", f"{r['p99']:>16.1f}",
                      f"{r['rps']:>16.0f}"]
        print(f"{ep:<10} " + " ".join(cells))
    worst = max((r[ep]["p99"] for r in results.values() for ep in r), default=float("nan"))
    print(f"worst p99 {worst:.1f} ms (goal < 100 ms): {'met' if worst < 100 else 'NOT met'}")


if __name__ == "__main__":
    main()
