"""Drive a running `evoforge serve` with one endpoint's uncached requests for a while, as
bench/million.py draws them, and print requests/s, p50/p99 and the server's CPU per request.

    .venv/bin/python bench/api_drive.py PORT ENDPOINT big|small SECONDS [CLIENTS] [PIDS]

ENDPOINT is a name of bench/million.py's `endpoints` ("program", "programs keyset", "lineage 10",
...), the campaigns those of a `million.py --state` file ($MILLION_STATE, default
/work/pg1m/state.json), PIDS a comma list of the server's processes (their user + system CPU is
read from /proc before and after). For A/B runs of two servers on one database, e.g. a commit's
code against the checkout's, one after the other on the same quiet machine.
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import million as M  # noqa: E402
from api_latency import RawClient, timed_get  # noqa: E402


def cpu_s(pids: list[int]) -> float:
    total = 0
    for p in pids:
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


async def drive(port: int, key: str, make, seconds: float, clients: int) -> list[float]:
    rng, lat = random.Random(1), []
    conns = [RawClient("127.0.0.1", port, key) for _ in range(clients)]
    await asyncio.gather(*(c.open() for c in conns))
    stop = time.perf_counter() + seconds

    async def one(c) -> None:
        while time.perf_counter() < stop:
            await timed_get(c, make(rng), lat)
    await asyncio.gather(*(one(c) for c in conns))
    await asyncio.gather(*(c.close() for c in conns))
    return lat


def measure(port: int, key: str, make, seconds: float, clients: int,
            pids: list[int]) -> dict[str, float]:
    """Drive for `seconds`: requests, requests/s, p50 and p99 (ms), and the server processes'
    CPU per request (ms; None without `pids`)."""
    c0, t0 = cpu_s(pids), time.perf_counter()
    lat = sorted(asyncio.run(drive(port, key, make, seconds, clients)))
    wall, c1 = time.perf_counter() - t0, cpu_s(pids)
    return {"n": len(lat), "rps": len(lat) / wall, "p50": lat[len(lat) // 2] * 1e3,
            "p99": lat[int(len(lat) * .99)] * 1e3,
            "cpu": (c1 - c0) / len(lat) * 1e3 if pids else None}


def line(endpoint: str, label: str, r: dict[str, float]) -> str:
    cpu = f"  server cpu/req={r['cpu']:.2f} ms" if r["cpu"] is not None else ""
    return (f"{endpoint:16} {label:6} n={r['n']} rps={r['rps']:.0f} "
            f"p50={r['p50']:.1f} p99={r['p99']:.1f} ms{cpu}")


def main() -> None:
    port, endpoint, label, seconds = int(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4])
    clients = int(sys.argv[5]) if len(sys.argv) > 5 else 50
    pids = [int(p) for p in sys.argv[6].split(",") if p] if len(sys.argv) > 6 else []
    state = json.loads(Path(os.environ.get("MILLION_STATE", "/work/pg1m/state.json")).read_text())
    make = M.endpoints(M.Target(*state["targets"][label]))[endpoint][1]
    print(line(endpoint, label, measure(port, state["key"], make, seconds, clients, pids)))


if __name__ == "__main__":
    main()
