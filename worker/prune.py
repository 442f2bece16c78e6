"""Retention: drop what a team no longer needs from a campaign, keep what it still runs on.

`prune_campaign` drops the prompt, the response and the code reference of every program that is
not kept: it sets `program.pruned_at` and clears `prompt_z` / `response_z` in one UPDATE, then
`db.blobs.gc_code_blobs` deletes the code blobs that no unpruned program and no kept text needs.
Kept in full, always: the elites (what selection, inspirations and `best` read) and the best
program; with `lineage`, every ancestor of an elite too (its whole path from the seed). Never
touched: program rows (lineage, scores, tokens), their `code_hash`, the evaluations and the
evaluation cache rows, so a pruned program's code proposed again is still a cache hit and is
never run in the sandbox again (tests/engine/test_transfer.py proves it).

A running campaign is refused (`CampaignBusy`: the CLI exits 1, REST answers 409) unless the
operator forces it: status `running` or `queued` (a dispatcher may start it at any moment). A
forced prune is still consistent: the keep set and the UPDATE are one statement on one
snapshot, a program that is not an elite then can never become one later (a commit places only
the program it inserts; migration copies elites), a program committed meanwhile is not in the
snapshot, and the running store never selects a pruned program (db/store_sql.py). The code-blob
gc cannot take a blob from under a commit of any campaign (db/blobs.py: writers hold what they
refer to, the gc locks before it looks). What forcing costs: on SQLite both transactions hold
the write lock (BEGIN IMMEDIATE), so the campaign's commits wait while the gc reads every kept
text's header (they wait up to busy_timeout, 30 s).

The prune bumps `campaign.revision` in its transaction when it pruned anything: the version the
API's response caches are keyed by (api/services/programs.py `_version`), so a cached listing
shows the new `pruned` flags at once, in every API process.

The space: SQLite reuses freed pages but the file only shrinks with VACUUM (`vacuum_sqlite`:
rewrites the whole file, takes a while, needs about the file's size free on disk, and blocks
writers meanwhile). PostgreSQL marks the rows dead; autovacuum makes the space reusable and
`VACUUM (ANALYZE) program, code_blob;` does it now; only VACUUM FULL or pg_repack give it back
to the operating system, and VACUUM FULL locks the tables for its duration, so it is never run
here: `reclaim_advice` says what to run.
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Iterator

from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from evoforge.db import blobs
from evoforge.db.campaign_rows import engine_of
from evoforge.db.models import Campaign, EliteCell, Program
from evoforge.worker.campaign_service import Scope, SpecError, TransitionRefused, get_campaign

__all__ = ["KEEP", "BUSY", "CampaignBusy", "PruneResult", "parse_keep", "parse_age",
           "prune_campaign", "reclaim_advice",
           "vacuum_sqlite"]

KEEP = ("elites", "lineage")
_AGE = re.compile(r"^\s*([0-9]{1,6})\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
P, EC, C = Program.__table__, EliteCell.__table__, Campaign.__table__


@dataclass
class PruneResult:
    campaign_id: int
    pruned: int                 # programs pruned now
    kept: int                   # programs kept in full (elites, best, lineage)
    already_pruned: int         # programs pruned before
    code_blobs_deleted: int
    database: str               # sqlite, postgresql
    reclaim: str                # how the space is given back

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def parse_keep(value: str | list[str] | tuple[str, ...] | None) -> frozenset[str]:
    """`elites,lineage` -> {"elites", "lineage"}. Elites are always kept (selection and `best`
    read them), so `elites` may be left out; anything else is refused."""
    names = value.split(",") if isinstance(value, str) else list(value or [])
    out = {n.strip().lower() for n in names if n.strip()}
    unknown = sorted(out - set(KEEP))
    if unknown:
        raise SpecError(f"unknown --keep value {unknown[0][:40]!r} (known: {', '.join(KEEP)})")
    return frozenset(out | {"elites"})


def parse_age(value: str | None) -> timedelta | None:
    """`7d`, `12h`, `30m`, `2w`, `90s` -> a timedelta (None stays None)."""
    if value is None or value == "":
        return None
    m = _AGE.match(value)
    if m is None:
        raise SpecError(f"not an age: {value[:40]!r} (write it like 7d, 12h, 30m, 2w)")
    return timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])


def _kept_ids(campaign_id: int, best_id: int | None, lineage: bool):
    """The ids kept in full, as a (recursive) CTE: the elites and the best program, and with
    `lineage` their ancestors."""
    elites = select(EC.c.program_id).where(EC.c.campaign_id == campaign_id)
    seeds = select(P.c.id.label("id")).where(P.c.id.in_(elites) | (P.c.id == (best_id or 0)))
    if not lineage:
        return seeds.cte("kept")
    kept = seeds.cte("kept", recursive=True)
    step = (select(P.c.parent_id.label("id")).select_from(P.join(kept, P.c.id == kept.c.id))
            .where(P.c.parent_id.is_not(None)))
    return kept.union(step)


class CampaignBusy(TransitionRefused):
    """The campaign may be running: prune it with force=True (`--force`) if that is meant."""


BUSY = ("running", "queued")


@contextmanager
def _write_session(engine: Engine) -> Iterator[Session]:
    """A session in one transaction that, on SQLite, takes the write lock at BEGIN (IMMEDIATE):
    it reads before it writes, and a deferred transaction would fail at once when a commit
    landed in between instead of waiting on busy_timeout."""
    with engine.connect().execution_options(sqlite_begin_immediate=True) as conn, conn.begin():
        s = Session(bind=conn)
        try:
            yield s
            s.flush()
        finally:
            s.close()


def prune_campaign(sessions: sessionmaker[Session], campaign_id: int, *,
                   keep: frozenset[str] = frozenset({"elites"}),
                   older_than: timedelta | None = None, scope: Scope | None = None,
                   now: datetime | None = None, force: bool = False) -> PruneResult:
    """Prune the programs of a campaign in `scope` (default: any) that are not kept, and older
    than `older_than` when given. CampaignNotFound when it is not in the scope, CampaignBusy
    when it is running or queued and not `force`."""
    now = now or datetime.now(timezone.utc)
    engine = engine_of(sessions)
    with _write_session(engine) as s:
        c = get_campaign(s, scope or Scope.operator(), campaign_id)
        if c.status in BUSY and not force:
            raise CampaignBusy(f"campaign {campaign_id} is {c.status}: pause it first (or force "
                               "the prune: --force, force=true)")
        kept = _kept_ids(campaign_id, c.best_program_id, "lineage" in keep)
        where = [P.c.campaign_id == campaign_id, P.c.pruned_at.is_(None),
                 P.c.id.not_in(select(kept.c.id))]
        if older_than is not None:
            where.append(P.c.created_at < now - older_than)
        s.execute(update(P).where(*where).values(pruned_at=now, prompt_z=None, response_z=None)
                  .execution_options(synchronize_session=False))
        # Counted, not the UPDATE's rowcount: SQLite's driver has none for a WITH statement.
        pruned = s.scalar(select(func.count()).select_from(P).where(
            P.c.campaign_id == campaign_id, P.c.pruned_at == now)) or 0
        if pruned:  # the API's cached pages of this campaign are stale now (module docstring)
            s.execute(update(C).where(C.c.id == campaign_id).values(revision=C.c.revision + 1))
        n_kept = s.scalar(select(func.count()).select_from(
            select(kept.c.id).join(P, P.c.id == kept.c.id)
            .where(P.c.campaign_id == campaign_id).subquery())) or 0
        before = s.scalar(select(func.count()).select_from(P).where(
            P.c.campaign_id == campaign_id, P.c.pruned_at.is_not(None), P.c.pruned_at != now)) or 0
    with _write_session(engine) as s:  # its own transaction: it reads every kept text's header
        deleted = blobs.gc_code_blobs(s)
    return PruneResult(campaign_id=campaign_id, pruned=pruned, kept=n_kept, already_pruned=before,
                       code_blobs_deleted=deleted, database=engine.dialect.name,
                       reclaim=reclaim_advice(engine))


def reclaim_advice(engine: Engine) -> str:
    if engine.dialect.name == "sqlite":
        return ("SQLite reuses the freed pages for new rows; to shrink the file run "
                "`evoforge prune ... --vacuum` (VACUUM: rewrites the whole file, may take a "
                "while, needs about the file's size free on disk, and blocks writers meanwhile)")
    return ("PostgreSQL: autovacuum makes the space reusable; to do it now run "
            "`VACUUM (ANALYZE) program, code_blob;`. To give the space back to the operating "
            "system use pg_repack (online) or VACUUM FULL (locks the tables while it runs), "
            "which EvoForge never runs by itself")


def vacuum_sqlite(engine: Engine) -> tuple[int, int]:
    """VACUUM a SQLite database: (bytes before, bytes after) of the file. ValueError on another
    database (say `reclaim_advice` instead)."""
    if engine.dialect.name != "sqlite":
        raise ValueError("VACUUM is run here only on SQLite; " + reclaim_advice(engine))
    raw = engine.raw_connection()  # the driver's connection: no BEGIN around VACUUM
    try:
        cur = raw.driver_connection.cursor()
        before = _sqlite_bytes(cur)
        cur.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        cur.execute("VACUUM")
        cur.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return before, _sqlite_bytes(cur)
    finally:
        raw.close()


def _sqlite_bytes(cur) -> int:
    pages = cur.execute("PRAGMA page_count").fetchone()[0]
    size = cur.execute("PRAGMA page_size").fetchone()[0]
    return int(pages) * int(size)
