"""A million programs: do selection, the API, lineage, the dashboard, rebuild_elites and the CLI
stay flat? Side by side with a 1,000-program campaign filled the same way, in the same database.

    .venv/bin/python bench/million.py --programs 1000000 --db URL [--db URL2]
        [--small 1000] [--clients 50] [--requests 20] [--skip dashboard,rebuild,cli,api]
        [--explain] [--keep]

URL: `sqlite:///path.db` (a new file) or a PostgreSQL database (`postgres` alone starts a
throwaway server from the system binaries, as tests/integration/services.py does).

**Fill** (direct, in bulk, never through the store): per database one campaign of `--programs`
and one of `--small` programs, generated alike. Code: 40 templates of ~1.5-3 KB, every new
program a template with its own constants (a distinct code hash), a quarter of the children a
copy of their parent's code (a cache hit: same hash, no new blob). The code goes to `code_blob`
as db/blobs.py stores it (zstd frames with the campaign's trained code dictionary); prompts
and responses as db/blobs.py's SEGMENTS layout (a template's literal text plus references to
the parent's code). 4 islands, a 10 x 10 grid (code size x radius spread), statuses ok 75% /
invalid 12% / error 13%, scores that rise with generation (rounded: many ties). Lineage: every
100th program is the child of the 100th before it, a chain 10,000 deep at a million; the others
pick a parent as selection does, mostly an elite of their island. The archive is replayed
through evolution/archive.py while filling (migration included), so `elite_cell` is exactly
what `rebuild_elites` recomputes (checked). PostgreSQL: COPY (psycopg `cursor.copy`); SQLite:
executemany in large transactions (synchronous=OFF).

**Measure**, big against small: the store's parent selection (`CampaignStore.select`, with the
LLM mutator's recent-failures read); GET elites, programs (random sort, island, status; deep
pages by keyset `after` and by `offset`), one program (random ids), lineage (the 10,000-deep
chain at random depths), each with `--clients` concurrent clients against a real `evoforge serve`:
"cached" repeats one request (the read caches answer), "uncached" draws every request at
random; `rebuild_elites`; `evoforge campaigns` / `evoforge best` (wall time of the process);
the campaign page in headless Chromium (bench/dashboard_load.py). `--explain` prints the plans of
the hot queries (EXPLAIN ANALYZE on PostgreSQL, EXPLAIN QUERY PLAN on SQLite).
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import zstandard as zstd  # noqa: E402
from sqlalchemy import func, select, update  # noqa: E402

from evoforge.api.deps import MAX_OFFSET  # noqa: E402
from evoforge.db import blobs  # noqa: E402
from evoforge.db.apikeys import create_key  # noqa: E402
from evoforge.db.campaign_config import CampaignSpec  # noqa: E402
from evoforge.db.engine import get_engine, normalize_url, session_factory, upgrade  # noqa: E402
from evoforge.db.models import (Campaign, CodeBlob, EliteCell, Evaluation, Program,  # noqa: E402
                                ZstdDict)
from evoforge.evolution import archive as cells  # noqa: E402
from evoforge.evolution.types import FeatureDim  # noqa: E402
from evoforge.worker.campaign_service import create_campaign  # noqa: E402

ISLANDS, BINS, TEMPLATES = 4, 10, 40
CHAIN_STEP = 100
BATCH = 20_000
SPREAD = 0.6                        # circle_packing's radius_spread axis
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


# -- code -----------------------------------------------------------------------------------
def _template(t: int) -> str:
    """Template t: a circle-packing-like module of 2 + t % 5 helpers and some comments. `{a}`..`{e}` take 6-digit
    constants, so every variant of a template has the same normalised size."""
    rng = random.Random(1000 + t)
    parts = [f'"""Packing heuristic family {t}: places circles greedily, then relaxes them."""\n'
             "import math\nimport numpy as np\n\nSEED_A = {a}\nSEED_B = {b}\nSTEPS = {c}\n\n"]
    parts.append("".join(f"# note {k}: tuned by hand in round {t}, keep the step schedule\n"
                         for k in range(t % 7)) + "\n")
    for k in range(2 + t % 5):
        w = rng.randint(2, 9)
        parts.append(
            f"def helper_{k}(xs, ys, r, scale={w}):\n"
            f"    # relax pass {k}: push overlapping pairs apart, clamp to the unit square\n"
            f"    out = []\n"
            f"    for i in range(len(xs)):\n"
            f"        dx = xs[i] - 0.5 * scale / (SEED_A % {w + 7} + 1)\n"
            f"        dy = ys[i] - 0.5 * scale / (SEED_B % {w + 3} + 1)\n"
            f"        d = math.hypot(dx, dy) + 1e-9\n"
            f"        out.append(min(r[i], max(0.0, 1.0 - d) * {k + 1} / (STEPS % 97 + 1)))\n"
            f"    return out\n\n")
    parts.append("def construct_packing(n={d}):\n"
                 "    rng = np.random.default_rng(SEED_A + {e})\n"
                 "    xs, ys = rng.random(26), rng.random(26)\n"
                 "    r = [0.05] * 26\n"
                 + "".join(f"    r = helper_{k}(xs, ys, r)\n" for k in range(2 + t % 5))
                 + "    return np.stack([xs, ys, np.array(r)], axis=1)\n")
    return "".join(parts).replace("{", "{{").replace("}", "}}").replace(
        "{{a}}", "{a}").replace("{{b}}", "{b}").replace("{{c}}", "{c}").replace(
        "{{d}}", "{d}").replace("{{e}}", "{e}")


def _variant(template: str, rng: random.Random) -> str:
    return template.format(**{k: rng.randint(100_000, 999_999) for k in "abcde"})


@dataclass
class Codes:
    templates: list[str]
    sizes: list[float]                 # normalised size of every variant of template t

    @classmethod
    def make(cls) -> "Codes":
        ts = [_template(t) for t in range(TEMPLATES)]
        rng = random.Random(0)
        return cls(ts, [cells.code_size_feature(_variant(t, rng)) for t in ts])


# -- rows -----------------------------------------------------------------------------------
def _code_dictionary(codes: Codes, seed: int) -> bytes:
    rng = random.Random(seed)
    samples = [_variant(codes.templates[rng.randrange(TEMPLATES)], rng).encode() for _ in range(400)]
    return zstd.train_dictionary(blobs.DICT_SIZE, samples, dict_id=seed, level=3).as_bytes()


@dataclass
class Fill:
    """What one campaign's generator produced besides the rows: the chain, the archive."""
    campaign_id: int
    first_id: int
    n: int
    chain: list[int] = field(default_factory=list)
    archive: cells.Archive | None = None
    best: tuple[float, int] | None = None
    failures: int = 0
    dups: int = 0
    blobs: int = 0
    scores: list = field(default_factory=list)     # (id, island, status, score) samples


def generate(fill: Fill, codes: Codes, dims: list[FeatureDim], task_key: str, migration: int,
             code_dict: zstd.ZstdCompressionDict, seed: int):
    """Yield batches {table: [row dicts]} of the campaign's programs, evaluations and blobs."""
    rng = random.Random(seed)
    comp = zstd.ZstdCompressor(level=3, dict_data=code_dict)
    text_comp = zstd.ZstdCompressor(level=3)
    n, base = fill.n, fill.first_id
    arch = fill.archive = cells.Archive(ISLANDS)
    gen = [0] * n
    tmpl = [0] * n
    hashes = [""] * n
    feat = [0.0] * n
    stat: list[str] = [""] * n
    score: list[float | None] = [None] * n
    by_island: list[list[int]] = [[] for _ in range(ISLANDS)]
    seen: set[str] = set()
    batch: dict[str, list[dict]] = {"code_blob": [], "program": [], "evaluation": []}
    elite_ids: list[list[int]] = [[] for _ in range(ISLANDS)]
    for i in range(n):
        pid = base + i
        if i == 0:
            parent, island = None, 0
        elif i % CHAIN_STEP == 0:
            parent, island = i - CHAIN_STEP, 0
        else:
            island = i % ISLANDS
            pool = elite_ids[island] if elite_ids[island] and rng.random() < 0.7 else by_island[island]
            parent = pool[rng.randrange(len(pool))] - base if pool else 0
        g = 0 if parent is None else gen[parent] + 1
        gen[i] = g
        dup = parent is not None and i % CHAIN_STEP and rng.random() < 0.25
        if dup:
            t, code, h = tmpl[parent], None, hashes[parent]
            status, sc, f = stat[parent], score[parent], feat[parent]
            fill.dups += 1
        else:
            t = tmpl[parent] if parent is not None and rng.random() < 0.8 else rng.randrange(TEMPLATES)
            code = _variant(codes.templates[t], rng)
            h = hashlib.sha256(code.encode()).hexdigest()
            roll = rng.random()
            status = "ok" if roll < 0.75 or i % CHAIN_STEP == 0 else ("invalid" if roll < 0.87 else "error")
            sc = (round(1.0 + 1.6 * (1 - math.exp(-g / 300)) + rng.gauss(0, 0.08), 3)
                  if status == "ok" else None)
            f = rng.uniform(0.0, SPREAD)   # behaviours spread: the archive fills early
        tmpl[i], hashes[i], stat[i], score[i], feat[i] = t, h, status, sc, f
        if code is not None and h not in seen:
            seen.add(h)
            batch["code_blob"].append({"hash": h, "data": comp.compress(code.encode()),
                                       "size": len(code)})
            fill.blobs += 1
        by_island[island].append(pid)
        parent_id = None if parent is None else base + parent
        features = {"radius_spread": round(f, 6)}
        if status == "ok" and sc is not None:
            cell = cells.cell_index({cells.CODE_SIZE: codes.sizes[t], **features}, dims)
            for target in cells.target_islands(parent_id, island, ISLANDS):
                if arch.offer(target, cell, pid, sc, features):
                    elite_ids[target] = [e.program_id for _, _, e in arch.elites(target)]
            if fill.best is None or sc > fill.best[0]:
                fill.best = (sc, pid)
        else:
            fill.failures += 1
        if cells.migration_due(i, migration):
            arch.migrate(i, force=True)
            for k in range(ISLANDS):
                elite_ids[k] = [e.program_id for _, _, e in arch.elites(k)]
        if i == 0 or i % CHAIN_STEP == 0:
            fill.chain.append(pid)
        if rng.random() < max(0.01, 10_000 / n):   # cursors to start pages from: 10,000+
            fill.scores.append((pid, island, status, sc, i))
        llm = parent is not None
        created = T0 + timedelta(seconds=i)
        prompt_z = response_z = None
        if llm and parent is not None:
            ph = bytes.fromhex(hashes[parent])
            plen = len(_variant_len_cache(codes, tmpl[parent]))
            lit = (f"Improve the program below (parent {parent_id}, score {score[parent]}). "
                   "Answer with SEARCH/REPLACE blocks.\n```python\n")
            segs = blobs._pack([lit, (0, 0, plen), "\n```\nInspirations: none.\n"])
            prompt_z = bytes([blobs.SEGMENTS, 1]) + ph + text_comp.compress(segs)
            rsegs = blobs._pack(["<<<<<<< SEARCH\n", (0, 0, min(plen, 200)),
                                 f"\n=======\nSEED_A = {rng.randint(100_000, 999_999)}\n>>>>>>> REPLACE\n"])
            response_z = bytes([blobs.SEGMENTS, 1]) + ph + text_comp.compress(rsegs)
        batch["program"].append(dict(
            id=pid, campaign_id=fill.campaign_id, iteration=i, parent_id=parent_id, island=island,
            generation=g, code_hash=h, kind="seed" if parent is None else "diff",
            model="stand-in" if llm else None, prompt_z=prompt_z, response_z=response_z,
            prompt_tokens=900 if llm else 0, completion_tokens=250 if llm else 0,
            cost_usd=0.0004 if llm else 0.0, extra={}, status=status, score=sc, created_at=created,
            pruned_at=None))
        batch["evaluation"].append(dict(
            id=pid, program_id=pid, task_key=task_key, status=status, score=sc,
            metrics={"sum_radii": sc} if sc is not None else {}, features=features,
            artifacts={} if status == "ok" else {"reason": f"{status}: overlap of circles 3 and 7"},
            duration_s=0.05, code_hash=h, functional_hash=h[::-1] if status == "ok" else None,
            cache="code" if dup else "miss", source_evaluation_id=None, created_at=created))
        if len(batch["program"]) >= BATCH:
            yield batch
            batch = {"code_blob": [], "program": [], "evaluation": []}
    if batch["program"]:
        yield batch


_LEN: dict[int, str] = {}


def _variant_len_cache(codes: Codes, t: int) -> str:
    """A variant of template t (all variants have the same length: 6-digit constants)."""
    if t not in _LEN:
        _LEN[t] = _variant(codes.templates[t], random.Random(t))
    return _LEN[t]


# -- bulk writers ---------------------------------------------------------------------------
TABLES = {"code_blob": CodeBlob.__table__, "program": Program.__table__,
          "evaluation": Evaluation.__table__}
JSON_COLS = {"extra", "metrics", "features", "artifacts"}


class Writer:
    """COPY (PostgreSQL) or executemany (SQLite) of row dicts, in the tables' column order."""

    def __init__(self, url: str):
        self.engine = get_engine(url)
        self.pg = self.engine.dialect.name == "postgresql"
        self.raw = self.engine.raw_connection()
        self.conn = self.raw.driver_connection
        if not self.pg:
            for pragma in ("synchronous=OFF", "cache_size=-262144", "temp_store=MEMORY"):
                self.conn.execute(f"PRAGMA {pragma}")

    def write(self, name: str, rows: list[dict]) -> None:
        if not rows:
            return
        if not self.pg and not self.conn.in_transaction:
            self.conn.execute("BEGIN")
        cols = [c.name for c in TABLES[name].columns]
        if name == "code_blob" and self.pg:
            # other campaigns' blobs may hold a hash already (shared across campaigns)
            self._copy_ignore(name, cols, rows)
            return
        values = [tuple(self._value(c, r.get(c)) for c in cols) for r in rows]
        if self.pg:
            with self.conn.cursor() as cur:
                with cur.copy(f"COPY {name} ({', '.join(cols)}) FROM STDIN") as cp:
                    for v in values:
                        cp.write_row(v)
        else:
            verb = "INSERT OR IGNORE" if name == "code_blob" else "INSERT"
            self.conn.executemany(f"{verb} INTO {name} ({', '.join(cols)}) VALUES "
                                  f"({', '.join('?' * len(cols))})", values)

    def _copy_ignore(self, name: str, cols: list[str], rows: list[dict]) -> None:
        with self.conn.cursor() as cur:
            cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS tmp_{name} (LIKE {name})")
            cur.execute(f"TRUNCATE tmp_{name}")
            with cur.copy(f"COPY tmp_{name} ({', '.join(cols)}) FROM STDIN") as cp:
                for r in rows:
                    cp.write_row(tuple(self._value(c, r.get(c)) for c in cols))
            cur.execute(f"INSERT INTO {name} SELECT * FROM tmp_{name} ON CONFLICT DO NOTHING")

    def _value(self, col: str, v):
        if col in JSON_COLS:
            return json.dumps(v if v is not None else {})
        if isinstance(v, datetime) and not self.pg:
            return v.strftime("%Y-%m-%d %H:%M:%S.%f")
        return v

    def commit(self) -> None:
        self.conn.commit()

    def close(self) -> None:
        if self.pg:
            with self.conn.cursor() as cur:
                for table in ("program", "evaluation"):
                    cur.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                f"(SELECT max(id) FROM {table}))")
            self.conn.commit()
            # what autovacuum does to a table this size soon after: the visibility map lets
            # counts be index-only scans
            self.conn.autocommit = True
            self.conn.execute("VACUUM ANALYZE")
            self.conn.autocommit = False
        else:
            self.conn.execute("ANALYZE")
            self.conn.commit()
        self.raw.close()


def fill_campaign(url: str, sessions, project_id: int, n: int, codes: Codes, seed: int) -> Fill:
    spec = CampaignSpec(task="circle_packing", name=f"bench {n:,}",
                        archive={"islands": ISLANDS, "bins": BINS,
                                 "code_size_range": (0.98 * min(codes.sizes), 1.02 * max(codes.sizes))},
                        budget={"max_evaluations": max(n, 1)})
    c = create_campaign(sessions, spec, project_id=project_id, status="completed")
    from evoforge.db.campaign_config import CampaignConfig
    config = CampaignConfig.load(c)
    dims, migration = config.archive.dims, config.archive.migration_interval
    with sessions() as s:
        first = (s.scalar(select(Program.id).order_by(Program.id.desc()).limit(1)) or 0) + 1
        first = max(first, (s.scalar(select(Evaluation.id).order_by(Evaluation.id.desc()).limit(1))
                            or 0) + 1)
    dict_id = 10_000 + c.id
    dict_bytes = _code_dictionary(codes, dict_id)
    with sessions.begin() as s:
        s.add(ZstdDict(id=dict_id, campaign_id=c.id, kind="code", data=dict_bytes))
    fill = Fill(c.id, first, n)
    w = Writer(url)
    t0 = time.perf_counter()
    done = 0
    for batch in generate(fill, codes, dims, c.task_key, migration,
                          zstd.ZstdCompressionDict(dict_bytes), seed):
        for name in ("code_blob", "program", "evaluation"):
            w.write(name, batch[name])
        w.commit()
        done += len(batch["program"])
        if done % 100_000 < BATCH:
            print(f"    {done:>9,} programs  {time.perf_counter() - t0:6.0f} s", flush=True)
    elite_rows = [dict(campaign_id=c.id, island=i, cell=cells.cell_key(cell), program_id=e.program_id,
                       score=e.score, features=e.features, updated_at=T0)
                  for i, cell, e in fill.archive.elites()]
    w.close()
    with sessions.begin() as s:
        if elite_rows:
            s.execute(EliteCell.__table__.insert(), elite_rows)
        s.execute(update(Campaign).where(Campaign.id == c.id).values(
            evaluations=n, iterations_reserved=n, failures=fill.failures, cache_hits=fill.dups,
            sandbox_runs=n - fill.dups, best_score=fill.best[0] if fill.best else None,
            best_program_id=fill.best[1] if fill.best else None, seed_score=1.0,
            started_at=T0, finished_at=T0 + timedelta(seconds=n)))
    return fill


# -- measurements ---------------------------------------------------------------------------
def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))] * 1e3


def time_selection(sessions, cid: int, calls: int) -> dict[str, float]:
    """CampaignStore.select: a warm store (its ProgramRef cache filled, as in a worker) and a
    fresh one per call (cold). With the LLM mutator's read of the parent's recent failures."""
    from evoforge.db.store import CampaignStore

    rng = random.Random(1)
    store = CampaignStore(sessions, cid)
    store.wants_failures = True
    store.select(0, rng)
    warm = []
    for k in range(calls):
        t = time.perf_counter()
        store.select(k % ISLANDS, rng)
        warm.append(time.perf_counter() - t)
    cold = []
    for k in range(max(5, calls // 20)):
        t = time.perf_counter()
        fresh = CampaignStore(sessions, cid)
        fresh.wants_failures = True
        fresh.select(k % ISLANDS, rng)
        cold.append(time.perf_counter() - t)
    with sessions() as s:
        elites = s.scalar(select(func.count())
                          .where(EliteCell.campaign_id == cid))
    return {"warm_p50": pct(warm, 50), "warm_p99": pct(warm, 99), "cold_p50": pct(cold, 50),
            "elites": elites}


def time_rebuild(sessions, cid: int) -> tuple[float, bool]:
    from evoforge.db.store import CampaignStore

    store = CampaignStore(sessions, cid)
    t = time.perf_counter()
    rebuilt = store.rebuild_elites()
    took = time.perf_counter() - t
    with sessions() as s:
        stored = {(i, c): (p, sc) for i, c, p, sc in s.execute(
            select(EliteCell.island, EliteCell.cell, EliteCell.program_id, EliteCell.score)
            .where(EliteCell.campaign_id == cid))}
    return took, rebuilt == stored


def time_cli(url: str, args: list[str], runs: int = 3) -> float:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    took = []
    for _ in range(runs):
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "evoforge.cli", *args, "--db", url], env=env,
                           cwd=str(ROOT), capture_output=True)
        took.append(time.perf_counter() - t)
        if r.returncode != 0:
            raise RuntimeError(f"evoforge {' '.join(args)}: {r.stderr.decode()[-500:]}")
    return statistics.median(took) * 1e3


@dataclass
class Target:
    """What the random requests of one campaign draw from."""
    cid: int
    n: int
    first_id: int
    chain: list[int]
    samples: list     # (id, island, status, score, iteration)


SORTS = ("score", "-score", "iteration", "-iteration")
STATUSES = (None, None, "ok", "invalid", "error")


def _filters(rng: random.Random) -> tuple[str, str | None, int | None]:
    status = rng.choice(STATUSES)
    island = rng.choice((None, None, rng.randrange(ISLANDS)))
    q = (f"&status={status}" if status else "") + (f"&island={island}" if island is not None else "")
    return q, status, island


def keyset_path(t: Target, rng: random.Random) -> str:
    """A page right after a random program of the list (any program is a valid cursor)."""
    sort = rng.choice(SORTS)
    q, status, island = _filters(rng)
    # a cursor this listing could have handed out: a program that passes the filter
    fits = [x for x in t.samples if (status is None or x[2] == status)
            and (island is None or x[1] == island)] or t.samples
    pid, isl, st, sc, it = rng.choice(fits)
    cursor = f"i:{it}" if "iteration" in sort else (f"n:{pid}" if sc is None else f"s:{pid}:{sc!r}")
    return f"/api/v1/campaigns/{t.cid}/programs?sort={sort}{q}&limit=50&after={cursor}"


def offset_path(t: Target, rng: random.Random) -> str:
    sort = rng.choice(SORTS)
    q, status, island = _filters(rng)
    share = (0.5 if island is not None else 1.0) * (0.3 if status else 1.0)
    # anywhere in the list, up to the deepest offset the API serves
    offset = rng.randrange(max(1, min(MAX_OFFSET, int(t.n * share * 0.9))))
    return f"/api/v1/campaigns/{t.cid}/programs?sort={sort}{q}&limit=50&offset={offset}"


def endpoints(t: Target) -> dict[str, tuple[str, callable]]:
    """name -> (the cached request, a generator of uncached ones)."""
    deep = t.chain[-1]
    progs = f"/api/v1/campaigns/{t.cid}/programs"
    return {
        # uncached: the campaign's version moves while it runs (Bumper), as in a running one
        "elites": (f"/api/v1/campaigns/{t.cid}/elites",
                   lambda rng: f"/api/v1/campaigns/{t.cid}/elites"),
        "programs keyset": (f"{progs}?sort=score&limit=50", lambda rng: keyset_path(t, rng)),
        "programs offset": (f"{progs}?sort=score&limit=50&offset=50",
                            lambda rng: offset_path(t, rng)),
        "program": (f"/api/v1/programs/{deep}",
                    lambda rng: f"/api/v1/programs/{t.first_id + rng.randrange(t.n)}"),
        # depth 10: as much as the small campaign's chain has (like for like)
        "lineage 10": (f"/api/v1/programs/{deep}/lineage?depth=10",
                       lambda rng: f"/api/v1/programs/{rng.choice(t.chain[10:] or t.chain)}"
                                   f"/lineage?depth=10"),
        "lineage": (f"/api/v1/programs/{deep}/lineage",
                    lambda rng: f"/api/v1/programs/{rng.choice(t.chain)}/lineage"),
        "lineage 1000": (f"/api/v1/programs/{deep}/lineage?depth=1000",
                         lambda rng: f"/api/v1/programs/{rng.choice(t.chain)}/lineage?depth=1000"),
    }


def _every_filter(t: Target):
    import itertools

    it = itertools.cycle([(st, isl) for st in ("ok", "invalid", "error", None)
                          for isl in (None, *range(ISLANDS))])

    def path(_rng: random.Random) -> str:
        st, isl = next(it)
        return (f"/api/v1/campaigns/{t.cid}/programs?limit=1" + (f"&status={st}" if st else "")
                + (f"&island={isl}" if isl is not None else ""))
    return path


class Bumper:
    """A running campaign's commits, as far as the read caches see them: the campaign's
    `evaluations` (its version) bumped every `every_s` from another thread; restored after."""

    def __init__(self, url: str, cid: int, every_s: float = 0.002):
        import threading

        self.url, self.cid, self.every_s = url, cid, every_s
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        engine = get_engine(self.url)
        while not self.stop.is_set():
            with engine.begin() as conn:
                conn.execute(update(Campaign).where(Campaign.id == self.cid)
                             .values(evaluations=Campaign.evaluations + 1))
            time.sleep(self.every_s)

    def __enter__(self):
        with get_engine(self.url).connect() as conn:
            self.before = conn.execute(select(Campaign.evaluations)
                                       .where(Campaign.id == self.cid)).scalar()
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        with get_engine(self.url).begin() as conn:
            conn.execute(update(Campaign).where(Campaign.id == self.cid)
                         .values(evaluations=self.before))


async def run_load(port: int, key: str, make_path, clients: int, requests: int
                   ) -> dict[str, float]:
    from api_latency import RawClient, timed_get

    rng = random.Random(5)
    lat: list[float] = []
    conns = [RawClient("127.0.0.1", port, key) for _ in range(clients)]
    await asyncio.gather(*(c.open() for c in conns))
    for c in conns[:5]:   # warm-up
        status, body = await c.get(make_path(rng))
        if status != 200:
            raise RuntimeError(f"{status} {body[:300]!r}")

    async def client(c) -> None:
        for _ in range(requests):
            await timed_get(c, make_path(rng), lat)

    t0 = time.perf_counter()
    await asyncio.gather(*(client(c) for c in conns))
    wall = time.perf_counter() - t0
    await asyncio.gather(*(c.close() for c in conns))
    return {"p50": pct(lat, 50), "p99": pct(lat, 99), "rps": len(lat) / wall}


async def warm_counts(port: int, key: str, t: Target, connections: int) -> None:
    """Every filter listed once on each of `connections` keep-alive connections: the counts are
    kept per API process, and a connection stays on the process that accepted it, so with
    `serve --workers N` a few connections per process make every process count every filter
    before the clock starts (one connection would leave the other processes to count theirs
    during the measured requests)."""
    from api_latency import RawClient

    async def one() -> None:
        c = RawClient("127.0.0.1", port, key)
        await c.open()
        path = _every_filter(t)
        for _ in range(4 * (ISLANDS + 1)):
            status, body = await c.get(path(None))
            if status != 200:
                raise RuntimeError(f"{status} {body[:300]!r}")
        await c.close()
    await asyncio.gather(*(one() for _ in range(connections)))


def measure_api(url: str, key: str, targets: dict[str, Target], a, tmp: Path) -> dict:
    from api_latency import serve
    from tests.integration.services import free_port

    port = free_port()
    redis = None
    if a.serve_workers > 1:   # `serve --workers N` refuses to start without a broker
        from tests.integration.services import RedisServer
        redis = RedisServer(tmp).start()
    proc = serve(url, port, tmp / "serve.log", workers=a.serve_workers,
                 broker_url=redis.url if redis else None)
    print(f"    evoforge serve --workers {a.serve_workers}", flush=True)
    out: dict = {}
    try:
        for label, t in targets.items():
            # a server that has listed this campaign before: one full count per filter and
            # process (docs/benchmarks.md: its plan), then only newer programs are counted
            t0 = time.perf_counter()
            asyncio.run(warm_counts(port, key, t, connections=4 * a.serve_workers))
            print(f"    {label:>6} first listing of every filter (the counts): "
                  f"{time.perf_counter() - t0:.1f} s", flush=True)
            if a.serve_workers > 1:
                # The kernel hands each new connection to whichever process accepts first: a
                # few connections can all land on one. Again, on many more, until a pass finds
                # every process's counts made (no pass slower than the first one's tenth).
                first = time.perf_counter() - t0
                for _ in range(5):
                    t1 = time.perf_counter()
                    asyncio.run(warm_counts(port, key, t, connections=16 * a.serve_workers))
                    if time.perf_counter() - t1 < max(0.5, first / 10):
                        break
            for ep, (fixed, drawn) in endpoints(t).items():
                if a.endpoints and ep not in a.endpoints.split(","):
                    continue
                for mode, make in (("cached", lambda rng, p=fixed: p), ("uncached", drawn)):
                    if ep == "elites" and mode == "uncached":
                        with Bumper(url, t.cid):
                            r = asyncio.run(run_load(port, key, make, a.clients, a.requests))
                    else:
                        r = asyncio.run(run_load(port, key, make, a.clients, a.requests))
                    out[(ep, mode, label)] = r
                    print(f"    {label:>6} {ep:<16} {mode:<8} p50 {r['p50']:7.1f} ms  "
                          f"p99 {r['p99']:7.1f} ms  {r['rps']:6.0f} req/s", flush=True)
    finally:
        proc.terminate()
        proc.wait(30)
        if redis is not None:
            redis.stop()
    return out


def measure_dashboard(url: str, key: str, targets: dict[str, Target], tmp: Path) -> dict:
    import httpx

    import dashboard_load
    from tests.dashboard import browser as B

    reason = B.missing()
    if reason:
        print(f"    dashboard skipped: {reason}")
        return {}
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    out = {}
    with B.serve(url, home) as base:
        for label, t in targets.items():
            t0 = time.perf_counter()
            r = httpx.get(f"{base}/dashboard-api/campaigns/{t.cid}/overview",
                          headers={"Authorization": f"Bearer {key}"}, timeout=900)
            r.raise_for_status()
            cold = (time.perf_counter() - t0) * 1e3
            res = dashboard_load.measure(base, t.cid, 3, key=key)
            med = {k: statistics.median(x[k] for x in res) for k in res[0]}
            out[label] = {"overview_cold_ms": cold, **med}
            print(f"    {label:>6} overview first call {cold:.0f} ms; page: FCP {med['fcp_ms']:.0f} ms, "
                  f"heatmap {med['heatmap_ms']:.0f} ms, plot {med['plot_ms']:.0f} ms", flush=True)
    return out


# -- plans ----------------------------------------------------------------------------------
def explain(url: str, t: Target) -> list[tuple[str, str, list[str]]]:
    """The plans of the hot queries, on the big campaign: [(title, SQL, plan lines)]."""
    from evoforge.api.auth import Principal
    from evoforge.api.services import listing
    from evoforge.api.services.programs import _LINEAGE, _SUMMARY_COLUMNS, _filter
    from evoforge.db.store_sql import ELITES, RECENT_FAILURES, REFS

    engine = get_engine(url)
    pg = engine.dialect.name == "postgresql"
    pid, island, status, score, it = next(x for x in t.samples if x[3] is not None)
    unscored = next((x for x in t.samples if x[3] is None), (pid,))[0]
    with engine.connect() as conn:
        project_id = conn.execute(select(Campaign.project_id).where(Campaign.id == t.cid)).scalar()

    def page(sort, status=None, island=None, cursor=None, offset=0, part=0):
        """The statement the API runs for this page (api/services/listing.py `_statement`),
        with its parameters bound."""
        where = _filter(bool(status), island is not None)
        params = {"cid": t.cid, "status": status, "island": island, "page_limit": 51,
                  "page_offset": offset}
        todo = listing.segments(sort)
        if cursor is not None:
            todo, after = listing.parts(sort, cursor)
            params.update(after)
        q = listing._statement(_SUMMARY_COLUMNS, where, todo[part], sort, deferred=bool(offset))
        return q.params(**{k: v for k, v in params.items() if v is not None})

    lineage, lineage_params = _LINEAGE(Principal(project_id), pid=t.chain[-1], limit=101)
    queries = {
        "first page, sort=score": page("score"),
        "keyset page deep in the list, sort=score: the scores below the cursor's":
            page("score", cursor=listing.Cursor("s", pid, score), part=1),
        "keyset page, sort=-score&island=N: the cursor's ties":
            page("-score", island=island, cursor=listing.Cursor("s", pid, score)),
        "keyset page, sort=score&status=invalid, in the unscored segment":
            page("score", status="invalid", cursor=listing.Cursor("n", unscored)),
        "keyset page, sort=-iteration": page("-iteration", cursor=listing.Cursor("i", it)),
        f"offset {MAX_OFFSET:,} (the deepest), sort=score: a deferred join (the skip reads the "
        "index alone)": page("score", offset=MAX_OFFSET),
        f"offset {MAX_OFFSET:,}, sort=-score&status=ok&island=N: both filters in one index":
            page("-score", status="ok", island=island, offset=MAX_OFFSET),
        f"offset {MAX_OFFSET:,}, sort=iteration&status=invalid: a deferred join":
            page("iteration", status="invalid", offset=MAX_OFFSET),
        "keyset page, sort=-iteration&status=ok&island=N":
            page("-iteration", status="ok", island=island, cursor=listing.Cursor("i", it)),
        "page total (once per campaign version and filter)":
            select(func.count(Program.score), func.count()).where(Program.campaign_id == t.cid),
        "lineage (recursive, depth 100, the scope in its first step)":
            lineage.params(**lineage_params),
        "elites of the campaign (selection)": ELITES.params(cid=t.cid),
        "ProgramRefs by id (selection)": REFS.params(ids=[t.chain[-1], pid]),
        "recent failures of a parent (selection)": RECENT_FAILURES.params(pid=t.first_id).limit(3),
    }
    out = []
    with engine.connect() as conn:
        for title, q in queries.items():
            sql = str(q.compile(dialect=engine.dialect,
                                compile_kwargs={"literal_binds": True, "render_postcompile": True}))
            prefix = "EXPLAIN (ANALYZE, COSTS OFF) " if pg else "EXPLAIN QUERY PLAN "
            rows = conn.exec_driver_sql(prefix + sql).all()
            plan = [r[0] for r in rows] if pg else [r[-1] for r in rows]
            out.append((title, " ".join(sql.split()), plan))
            print(f"\n-- {title}\n   " + "\n   ".join(plan), flush=True)
    return out


# -- main -----------------------------------------------------------------------------------
def bench_db(url: str, a, codes: Codes, tmp: Path) -> dict:
    upgrade(url)
    sessions = session_factory(url)
    key, project_id = create_key(sessions, f"bench-{time.time_ns()}")
    targets: dict[str, Target] = {}
    fills = {}
    state = Path(a.state) if a.state else None
    if state is not None and state.exists():
        saved = json.loads(state.read_text())
        if saved["url"] == url:   # the campaigns of an earlier run, measured again
            targets = {k: Target(*v) for k, v in saved["targets"].items()}
            key = saved["key"]
            print(f"  reusing the campaigns of {state}: no fill", flush=True)
    for label, n, seed in (("small", a.small, 2), ("big", a.programs, 1)):
        if label in targets:
            continue
        t0 = time.perf_counter()
        f = fill_campaign(url, sessions, project_id, n, codes, seed)
        took = time.perf_counter() - t0
        fills[label] = took
        print(f"  filled {label}: {n:,} programs ({f.blobs:,} code blobs, chain {len(f.chain):,} "
              f"deep) in {took:.0f} s", flush=True)
        targets[label] = Target(f.campaign_id, n, f.first_id, f.chain, f.scores or
                                [(f.first_id, 0, "ok", 1.0, 0)])
    if state is not None and not state.exists():
        state.write_text(json.dumps({"url": url, "key": key, "targets": {
            k: [t.cid, t.n, t.first_id, t.chain, t.samples] for k, t in targets.items()}}))
    out: dict = {"fill_s": fills}
    skip = set(a.skip.split(",")) if a.skip else set()
    if a.explain:
        explain(url, targets["big"])
    out["select"] = {}
    for label, t in targets.items():
        out["select"][label] = r = time_selection(sessions, t.cid, 300)
        print(f"  select {label} ({r['elites']} elites): warm p50 {r['warm_p50']:.2f} ms "
              f"p99 {r['warm_p99']:.2f} ms, cold p50 {r['cold_p50']:.1f} ms", flush=True)
    if "rebuild" not in skip:
        out["rebuild"] = {}
        for label, t in targets.items():
            took, same = time_rebuild(sessions, t.cid)
            out["rebuild"][label] = (took, same)
            print(f"  rebuild_elites {label}: {took:.1f} s, equal to elite_cell: {same}", flush=True)
    if "cli" not in skip:
        out["cli"] = {}
        for label, t in targets.items():
            out["cli"][label] = (time_cli(url, ["campaigns"]),
                                 time_cli(url, ["best", str(t.cid)]))
            print(f"  evoforge campaigns {out['cli'][label][0]:.0f} ms, best {label} "
                  f"{out['cli'][label][1]:.0f} ms", flush=True)
    if "api" not in skip:
        out["api"] = measure_api(url, key, targets, a, tmp)
    if "dashboard" not in skip:
        out["dashboard"] = measure_dashboard(url, key, targets, tmp)
    sessions.kw["bind"].dispose()
    return out


def report(name: str, r: dict, a) -> None:
    print(f"\n== {name}: {a.programs:,} vs {a.small:,} programs "
          f"(load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}, {os.cpu_count()} CPUs)")
    if r["fill_s"]:
        print(f"fill: big {r['fill_s']['big']:.0f} s, small {r['fill_s']['small']:.1f} s")
    s = r["select"]
    print(f"select warm p50: big {s['big']['warm_p50']:.2f} ms / small {s['small']['warm_p50']:.2f} ms "
          f"= ratio {s['big']['warm_p50'] / s['small']['warm_p50']:.2f} (goal <= 2); "
          f"cold p50 ratio {s['big']['cold_p50'] / s['small']['cold_p50']:.2f}")
    if "rebuild" in r:
        print(f"rebuild_elites: big {r['rebuild']['big'][0]:.0f} s, small {r['rebuild']['small'][0]:.2f} s"
              f" (equal to elite_cell: {r['rebuild']['big'][1]} / {r['rebuild']['small'][1]})")
    if "cli" in r:
        print(f"evoforge campaigns {r['cli']['big'][0]:.0f} ms, best (big) {r['cli']['big'][1]:.0f} ms, "
              f"best (small) {r['cli']['small'][1]:.0f} ms (wall, process start included)")
    if "api" in r:
        print(f"{'endpoint':<17}{'mode':<10}{'big p50':>9}{'big p99':>9}{'small p99':>10}{'ratio':>7}")
        eps = sorted({k[0] for k in r["api"]}, key=list(endpoints(Target(0, 1, 1, [1], [])).keys()).index)
        for ep in eps:
            for mode in ("cached", "uncached"):
                b, sm = r["api"][(ep, mode, "big")], r["api"][(ep, mode, "small")]
                print(f"{ep:<17}{mode:<10}{b['p50']:>9.1f}{b['p99']:>9.1f}{sm['p99']:>10.1f}"
                      f"{b['p99'] / sm['p99']:>7.2f}")
    for label, d in (r.get("dashboard") or {}).items():
        print(f"dashboard {label}: first paint {d['fcp_ms']:.0f} ms, heatmap {d['heatmap_ms']:.0f} ms, "
              f"plot {d['plot_ms']:.0f} ms; overview first call {d['overview_cold_ms']:.0f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--programs", type=int, default=1_000_000)
    ap.add_argument("--small", type=int, default=1_000)
    ap.add_argument("--db", action="append", required=True,
                    help="sqlite:///new.db, a PostgreSQL URL, or `postgres` (a throwaway server)")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--requests", type=int, default=20, help="per client, endpoint and mode")
    ap.add_argument("--skip", default="", help="comma list of: api, dashboard, rebuild, cli")
    ap.add_argument("--endpoints", default="",
                    help="only these (comma list of names, e.g. 'programs keyset,program')")
    ap.add_argument("--serve-workers", type=int, default=1,
                    help="API processes (`evoforge serve --workers N`; more than one starts a "
                         "throwaway redis-server, which the serve command requires)")
    ap.add_argument("--explain", action="store_true")
    ap.add_argument("--state", default=None,
                    help="a JSON file: written after the fill; when it exists (same --db), the "
                         "campaigns it names are measured again without a new fill")
    a = ap.parse_args()
    codes = Codes.make()
    print(f"templates: normalised code sizes {min(codes.sizes):.0f}..{max(codes.sizes):.0f}, "
          f"raw {min(map(len, codes.templates))}..{max(map(len, codes.templates))} chars", flush=True)
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for url in a.db:
            pg = None
            if url == "postgres":
                from tests.integration.services import PostgresServer, pg_bindir
                pg = PostgresServer(pg_bindir()).start()
                url = pg.createdb("million")
            print(f"\n[{url.split(':')[0]}] {normalize_url(url).split('@')[-1]}", flush=True)
            try:
                report(url.split(":")[0], bench_db(url, a, codes, tmp), a)
            finally:
                if pg is not None:
                    pg.stop()


if __name__ == "__main__":
    main()
