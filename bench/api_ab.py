"""The API's uncached reads at a million programs, a commit's code against the checkout's, side
by side in one run: two `evoforge serve` processes (one each) on the same bench/million.py
database, driven alternately, endpoint by endpoint and round by round, so that both see the
same machine load.

    .venv/bin/python bench/api_ab.py REV [--state /work/pg1m/state.json] [--seconds 8]
        [--rounds 2] [--clients 50] [--endpoints "program,programs keyset,lineage 10,lineage"]

REV's code is `git archive`d and laid out as the installed package (bench/soak.py `snapshot`).
Each line is bench/api_drive.py's: requests/s, p50/p99 at the client, and the server's user +
system CPU per request; then the requests/s ratio (checkout / REV) per endpoint. The database
is only read; the checkout's newer migrations are added to REV's copy, so that REV starts on the
database the checkout migrated (they must only add what REV never reads: indexes, columns).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import api_drive  # noqa: E402
import million as M  # noqa: E402
from api_latency import serve  # noqa: E402
from soak import snapshot  # noqa: E402
from tests.integration.services import free_port  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("rev")
    ap.add_argument("--state", default="/work/pg1m/state.json")
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--endpoints", default="program,programs keyset,lineage 10,lineage")
    a = ap.parse_args()
    state = json.loads(Path(a.state).read_text())
    target = M.Target(*state["targets"]["big"])
    with tempfile.TemporaryDirectory(prefix="api_ab_") as tmp:
        commit, package = snapshot(a.rev, Path(tmp) / "rev")
        newer_migrations(package)
        servers = {}
        try:
            for name, pkg in ((commit[:10], package), ("checkout", None)):
                port = free_port()
                servers[name] = (port, serve(state["url"], port, Path(tmp) / f"{name}.log",
                                             package=pkg))
            for port, _ in servers.values():   # each process counts every filter once
                api_drive.measure(port, state["key"], M.endpoints(target)["programs keyset"][1],
                                  a.seconds, a.clients, [])
            rps: dict[tuple[str, str], list[float]] = {}
            for endpoint in a.endpoints.split(","):
                make = M.endpoints(target)[endpoint][1]
                for _ in range(a.rounds):
                    for name, (port, proc) in servers.items():
                        r = api_drive.measure(port, state["key"], make, a.seconds, a.clients,
                                              [proc.pid])
                        rps.setdefault((endpoint, name), []).append(r["rps"])
                        print(f"{name:10} {api_drive.line(endpoint, 'big', r)}", flush=True)
            for endpoint in a.endpoints.split(","):
                ratio = (statistics.median(rps[endpoint, "checkout"])
                         / statistics.median(rps[endpoint, commit[:10]]))
                print(f"{endpoint:16} req/s checkout / {commit[:10]}: {ratio:.2f}")
        finally:
            for _, proc in servers.values():
                proc.terminate()
                proc.wait(30)


def newer_migrations(package: Path) -> None:
    """The checkout's migrations that REV lacks, added to REV's copy: the database is at the
    checkout's head, which REV's Alembic must know to start (it then finds nothing to do). Only
    for migrations that add (indexes, columns with defaults) what REV's code never reads."""
    import shutil

    ours = Path(__file__).resolve().parent.parent / "migrations" / "versions"
    theirs = package / "evoforge" / "migrations" / "versions"
    for f in ours.glob("*.py"):
        if not (theirs / f.name).exists():
            shutil.copy(f, theirs / f.name)
            (theirs / f.name).chmod(0o644)


if __name__ == "__main__":
    main()
