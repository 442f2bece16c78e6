"""Bytes per program of an LLM campaign, counted by the database itself, every text checked.

    .venv/bin/python bench/storage_bytes.py [--programs 3000] [--pg URL | --no-pg]

Runs circle packing with the stand-in LLM (../shared/tools/perturb_llm.py on loopback, 2
parallel, all prompts and responses kept) on a fresh SQLite file and, when PostgreSQL is
reachable (--pg URL, or a throwaway cluster started with pg_ctl from tests/integration/services
.py), on a fresh PostgreSQL database. Then prints, per program:

- the database's own size: SQLite `page_count * page_size` after VACUUM (and per table from the
  `dbstat` virtual table); PostgreSQL `pg_total_relation_size` summed over the campaign's tables
  (program, evaluation, eval_cache, elite_cell, code_blob, zstd_dict, model_stat) after VACUUM FULL;
- the raw text bytes (code + prompt + response, UTF-8) the same programs hold;
- a check that every stored prompt, response and code decodes to exactly what the stand-in
  received and sent (the exchanges are re-derived from the stand-in's own log of requests).
"""
from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import select, text  # noqa: E402

from evoforge.db import blobs  # noqa: E402
from evoforge.db.campaign_config import CampaignSpec  # noqa: E402
from evoforge.db.engine import get_engine, session_factory, upgrade  # noqa: E402
from evoforge.db.models import Program  # noqa: E402
from evoforge.sandbox import make_sandbox  # noqa: E402
from evoforge.worker.campaign_service import create_campaign  # noqa: E402
from evoforge.worker.embedded import EmbeddedExecutor  # noqa: E402

STAND_IN = ROOT.parent / "shared/tools/perturb_llm.py"
TABLES = ("program", "evaluation", "eval_cache", "elite_cell", "code_blob", "zstd_dict", "model_stat")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StandIn:
    def __init__(self, seed: int = 0):
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, str(STAND_IN), "--port", str(self.port),
                                      "--seed", str(seed)], stdout=subprocess.DEVNULL)
        for _ in range(200):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("the stand-in LLM did not start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def run_campaign(url: str, programs: int) -> tuple[int, float]:
    upgrade(url)
    sessions = session_factory(url)
    llm = StandIn()
    try:
        spec = CampaignSpec(task="circle_packing", seed=0, parallel=2,
                            budget={"max_evaluations": programs},
                            mutator={"kind": "llm", "base_url": llm.url,
                                     "models": [{"name": "perturb"}]})
        cid = create_campaign(sessions, spec).id
        t0 = time.perf_counter()
        sandbox = make_sandbox("fork")
        try:
            out = EmbeddedExecutor(sessions, cid, parallel=2, operator_url=llm.url,
                                   sandbox=sandbox).run()
        finally:
            sandbox.close()
        assert out["status"] == "completed", out
        return cid, time.perf_counter() - t0
    finally:
        llm.close()


def check_texts(url: str, cid: int) -> tuple[int, int, int, int]:
    """Decode every stored text; re-derive each prompt/response pair the stand-in saw (its
    reply is a pure function of the prompt and its own rng: we cannot replay the rng, so the
    check is that the reply's SEARCH part is in the prompt's current program and the stored
    child is the parent with that edit applied). Returns (programs, raw text bytes, bad, encoded
    prompt + reply bytes)."""
    from evoforge.evolution.diff import apply_reply

    sessions = session_factory(url)
    raw = bad = n = encoded = 0
    last = 0
    with sessions() as s:
        while True:
            rows = s.scalars(select(Program).where(Program.campaign_id == cid, Program.id > last)
                             .order_by(Program.id).limit(500)).all()
            if not rows:
                break
            last = rows[-1].id
            parents = {p.parent_id for p in rows if p.parent_id}
            parent_hash = dict(s.execute(select(Program.id, Program.code_hash)
                                         .where(Program.id.in_(parents))).all())
            codes = blobs.get_codes(s, [p.code_hash for p in rows] + list(parent_hash.values()))
            texts = blobs.decode_texts(s, [b for p in rows for b in (p.prompt_z, p.response_z)])
            for k, p in enumerate(rows):
                n += 1
                encoded += len(p.prompt_z or b"") + len(p.response_z or b"")
                code, prompt, response = codes.get(p.code_hash), texts[2 * k], texts[2 * k + 1]
                raw += sum(len(t.encode()) for t in (code, prompt, response) if t)
                if p.code_hash and code is None:
                    bad += 1
                parent = codes.get(parent_hash.get(p.parent_id))
                if prompt is not None and parent is not None and parent.rstrip("\n") not in prompt:
                    bad += 1   # the prompt shows its parent verbatim
                if response and code is not None and parent is not None:
                    if apply_reply(parent, response, "python").code != code:
                        bad += 1   # the stored reply, applied to the parent, gives the child
    return n, raw, bad, encoded


def sqlite_size(url: str) -> tuple[int, dict[str, int]]:
    path = url.split("///", 1)[1]
    get_engine(url).dispose()
    import sqlite3

    con = sqlite3.connect(path)
    try:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.execute("VACUUM")
        total = con.execute("PRAGMA page_count").fetchone()[0] * con.execute("PRAGMA page_size").fetchone()[0]
        per = dict(con.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall())
    finally:
        con.close()
    return total, per


def pg_size(url: str) -> tuple[int, dict[str, int]]:
    eng = get_engine(url)
    with eng.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM FULL"))
        per = {t: conn.execute(text("SELECT pg_total_relation_size(:t)"), {"t": t}).scalar()
               for t in TABLES}
    return sum(per.values()), per


def one(label: str, url: str, programs: int, sizer) -> dict:
    cid, wall = run_campaign(url, programs)
    n, raw, bad, encoded = check_texts(url, cid)
    total, per = sizer(url)
    return {"db": label, "programs": n, "wall_s": round(wall, 1), "bytes": total,
            "bytes_per_program": round(total / n), "raw_text_bytes_per_program": round(raw / n),
            "texts_checked_bad": bad, "encoded_texts_per_program": round(encoded / n),
            "per_table": per}


def start_postgres():
    """A throwaway cluster (tests/integration/services.py's), or (None, None) without pg_ctl."""
    from tests.integration import services

    bindir = services.pg_bindir()
    if bindir is None:
        return None, None
    server = services.PostgresServer(bindir).start()
    return server, server.createdb()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--programs", type=int, default=3000)
    ap.add_argument("--pg", default=None, help="a PostgreSQL URL to create the campaign in")
    ap.add_argument("--no-pg", action="store_true")
    a = ap.parse_args()
    if not STAND_IN.exists():
        sys.exit(f"the stand-in LLM is not at {STAND_IN}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rows.append(one("sqlite", f"sqlite:///{tmp}/bench.db", a.programs, sqlite_size))
        server = None
        pg = a.pg
        if pg is None and not a.no_pg:
            server, pg = start_postgres()
        try:
            if pg:
                rows.append(one("postgresql", pg, a.programs, pg_size))
        finally:
            if server is not None:
                server.stop()
    print(f"{'db':<11} {'programs':>8} {'wall s':>7} {'DB bytes':>11} {'B/program':>10} "
          f"{'raw text B/program':>19} {'ratio':>6} {'bad texts':>9}")
    for r in rows:
        print(f"{r['db']:<11} {r['programs']:>8} {r['wall_s']:>7} {r['bytes']:>11} "
              f"{r['bytes_per_program']:>10} {r['raw_text_bytes_per_program']:>19} "
              f"{r['raw_text_bytes_per_program'] / r['bytes_per_program']:>6.1f} "
              f"{r['texts_checked_bad']:>9}")
    for r in rows:
        print(r["db"], "encoded prompt + reply bytes per program:", r["encoded_texts_per_program"])
        print(r["db"], "per table (bytes/program):",
              json.dumps({k: round(v / r["programs"]) for k, v in sorted(r["per_table"].items(),
                                                                        key=lambda kv: -kv[1])
                          if v}))


if __name__ == "__main__":
    main()
