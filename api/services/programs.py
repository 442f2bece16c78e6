"""Program services: elites, listings, one program with its diff, lineage."""
from __future__ import annotations

import difflib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, bindparam, case, func, literal, select
from sqlalchemy.orm import Session

from evoforge.api.auth import Principal
from evoforge.api.services import NotFound, utc
from evoforge.api.services import listing
from evoforge.api.services.project_campaigns import get_campaign, scope
from evoforge.db import blobs
from evoforge.db.campaign_config import CampaignConfig
from evoforge.db.models import Campaign, EliteCell, Evaluation, Program
from evoforge.evolution.sanitize import servable

MAX_DIFF_CHARS = 200_000


def _version(c: Campaign) -> tuple:
    """The version of a campaign's archive, the key of the API's response cache (api/caches.py).
    Elite cells and programs change only in an iteration's commit (ring migration included), and
    every commit bumps `Campaign.evaluations` in the same transaction, so (id, created_at,
    evaluations) names one state of the archive; created_at tells a new campaign from a deleted
    one whose id SQLite handed out again."""
    return (c.id, c.created_at, c.evaluations)


version_of = _version


def campaign_version(s: Session, principal: Principal, campaign_id: int) -> tuple | None:
    """The version `_version` of a campaign the caller may see (None: not found or not theirs),
    read as three columns by primary key: the cheap check in front of the response caches."""
    row = s.execute(scope(select(Campaign.id, Campaign.created_at, Campaign.evaluations)
                          .where(Campaign.id == campaign_id), principal)).first()
    return None if row is None else tuple(row)


def elites(s: Session, principal: Principal, campaign_id: int) -> dict[str, Any]:
    return elites_versioned(s, principal, campaign_id)[1]


def elites_versioned(s: Session, principal: Principal, campaign_id: int) -> tuple[tuple, dict[str, Any]]:
    """(version of the archive read, elites document)."""
    c = get_campaign(s, principal, campaign_id)
    # Plain rows, not ORM objects: a full archive is hundreds of cells, and building an ORM
    # instance per cell was most of this endpoint's time.
    rows = s.execute(select(EliteCell.island, EliteCell.cell, EliteCell.score, EliteCell.program_id,
                            EliteCell.features, EliteCell.updated_at)
                     .where(EliteCell.campaign_id == campaign_id)
                     .order_by(EliteCell.island, EliteCell.cell)).all()
    by_island: dict[int, list[dict[str, Any]]] = {i: [] for i in range(c.islands)}
    for island, cell, score, program_id, features, updated_at in rows:
        by_island.setdefault(island, []).append(
            {"cell": cell, "score": score, "program_id": program_id,
             "features": servable(features or {}), "updated_at": utc(updated_at)})
    dims = [{"name": d.name, "lo": d.lo, "hi": d.hi, "bins": d.bins}
            for d in CampaignConfig.load(c).archive.dims]
    out = {"campaign_id": c.id, "dims": dims,
           "islands": [{"island": i, "cells": cells} for i, cells in sorted(by_island.items())]}
    return _version(c), out


def summary_of(p: Program) -> dict[str, Any]:
    return {"id": p.id, "campaign_id": p.campaign_id, "iteration": p.iteration,
            "parent_id": p.parent_id, "island": p.island, "generation": p.generation,
            "kind": p.kind, "model": p.model, "status": p.status, "score": p.score,
            "prompt_tokens": p.prompt_tokens, "completion_tokens": p.completion_tokens,
            "cost_usd": p.cost_usd, "created_at": utc(p.created_at)}


def list_programs(s: Session, principal: Principal, campaign_id: int, *, sort: str,
                  status: str | None, island: int | None, limit: int,
                  offset: int, after: str | None = None) -> tuple[list[dict[str, Any]], int]:
    return list_programs_versioned(s, principal, campaign_id, sort=sort, status=status,
                                   island=island, limit=limit, offset=offset, after=after)[1:3]


def list_programs_versioned(s: Session, principal: Principal, campaign_id: int, *, sort: str,
                            status: str | None, island: int | None, limit: int, offset: int,
                            after: str | None = None
                            ) -> tuple[tuple, list[dict[str, Any]], int, str | None]:
    """(version of the archive read, items, total, the `after` cursor of the next page or None).
    `after` (a cursor this function handed out; listing.BadCursor otherwise) continues right
    after an item, `offset` skips rows: one or the other. The total: `_segment_counts`."""
    cursor = listing.parse_cursor(sort, after) if after else None
    if cursor is not None and offset:
        raise listing.BadCursor("after and offset: give one or the other")
    c = get_campaign(s, principal, campaign_id)
    version = _version(c)
    where = [Program.campaign_id == campaign_id]
    if status:
        where.append(Program.status == status)
    if island is not None:
        # Both filters on a score sort: read the status index (empty at once for an unscored
        # status past a scored cursor) and check the island row by row (a quarter pass): as
        # `island + 0` no index can serve the island term, so SQLite's planner cannot pick
        # the island index and walk all its rows for a status that has none.
        column = Program.island + 0 if status and sort in ("score", "-score") else Program.island
        where.append(column == island)
    counts = _segment_counts(s, c, status, island)
    parts = listing.parts(sort, cursor) if cursor is not None else None
    rows = listing.fetch(s, _SUMMARY_COLUMNS, where, sort, counts, limit + 1, offset, parts)
    cursor = listing.cursor_of(sort, rows[limit - 1]) if len(rows) > limit else None
    # Stored values are served as they are, but never in a form a JSON encoder rejects.
    items = [servable({**r._mapping, "created_at": utc(r.created_at)}) for r in rows[:limit]]
    return version, items, sum(counts), cursor


_SUMMARY_COLUMNS = (Program.id, Program.campaign_id, Program.iteration, Program.parent_id,
                    Program.island, Program.generation, Program.kind, Program.model,
                    Program.status, Program.score, Program.prompt_tokens,
                    Program.completion_tokens, Program.cost_usd, Program.created_at)
_COUNTS: OrderedDict[tuple, "_Counts"] = OrderedDict()
_COUNTS_LOCK = threading.Lock()
CACHED_COUNTS = 1024


@dataclass(frozen=True)
class _Counts:
    evaluations: int    # the campaign's counter, read in the snapshot that was counted
    max_iteration: int  # the latest iteration counted
    total: int          # all the campaign's programs counted (no filter)
    scored: int         # under the filter: programs with a score,
    unscored: int       # and without

    @property
    def exact(self) -> bool:
        """Every commit stores one program and bumps `evaluations` in the same transaction:
        when the two agree, a later count of the newer ids alone can be checked the same way."""
        return self.total == self.evaluations


def _segment_counts(s: Session, c: Campaign, status: str | None,
                    island: int | None) -> tuple[int, int]:
    """(scored, unscored) programs of a campaign under a filter: the page total, and where the
    unscored segment starts for an offset. Never a full count on every page: kept per process,
    campaign and filter, and after new commits only the iterations after the last one counted
    are counted (a range of the (campaign, iteration) key), with the campaign's `evaluations`
    read in the same statement as the check: an iteration committed out of order (concurrent
    workers) makes the sum fall short of the counter, and then, as on the first call, the whole
    campaign is counted again."""
    key = (id(s.get_bind()), c.id, c.created_at, status, island)
    with _COUNTS_LOCK:
        entry = _COUNTS.get(key)
        if entry is not None:
            _COUNTS.move_to_end(key)
    if entry is not None and entry.evaluations == c.evaluations:
        return entry.scored, entry.unscored
    match = [Program.score.is_not(None)]
    if status:
        match.append(Program.status == status)
    if island is not None:
        match.append(Program.island == island)
    counter = select(Campaign.evaluations).where(Campaign.id == c.id).scalar_subquery()
    cols = (func.count(), func.sum(case((and_(*match), 1), else_=0)),
            func.sum(case((and_(*match[1:], Program.score.is_(None)), 1), else_=0)),
            func.max(Program.iteration), counter)
    new = None
    if entry is not None and entry.exact:
        n, scored, unscored, newest, evaluations = s.execute(
            select(*cols).where(Program.campaign_id == c.id,
                                Program.iteration > entry.max_iteration)).one()
        if entry.total + n == evaluations:
            new = _Counts(evaluations, entry.max_iteration if newest is None else newest,
                          entry.total + n,
                          entry.scored + (scored or 0), entry.unscored + (unscored or 0))
    if new is None:
        n, scored, unscored, newest, evaluations = s.execute(_full_count(c.id, match)).one()
        new = _Counts(evaluations or 0, -1 if newest is None else newest, n, scored or 0,
                      unscored or 0)
    with _COUNTS_LOCK:
        _COUNTS[key] = new
        while len(_COUNTS) > CACHED_COUNTS:
            _COUNTS.popitem(last=False)
    return new.scored, new.unscored


def _full_count(campaign_id: int, match: list) -> Any:
    """Everything `_segment_counts` needs, counted over the whole campaign in one statement
    (one snapshot): each part a scalar subquery that an index of migration 0007 answers by
    itself (the campaign's programs on its score index, the filtered ones on the index of
    their filter), instead of one pass over the table's rows."""
    mine = Program.campaign_id == campaign_id
    def count(*where):
        return select(func.count()).where(mine, *where).scalar_subquery()
    return select(count(), count(*match), count(*match[1:], Program.score.is_(None)),
                  select(func.max(Program.iteration)).where(mine).scalar_subquery(),
                  select(Campaign.evaluations).where(Campaign.id == campaign_id).scalar_subquery())


def _scoped_program(s: Session, principal: Principal, program_id: int) -> Program:
    p = s.scalar(scope(select(Program).join(Campaign, Campaign.id == Program.campaign_id)
                       .where(Program.id == program_id), principal))
    if p is None:
        raise NotFound(f"program {program_id} not found")
    return p


def unified_diff(parent: Program | None, p: Program, parent_code: str | None,
                 code: str | None) -> str | None:
    if parent is None or parent_code is None or code is None:
        return None
    diff = "".join(difflib.unified_diff(parent_code.splitlines(keepends=True),
                                        code.splitlines(keepends=True),
                                        fromfile=f"program {parent.id}", tofile=f"program {p.id}"))
    if len(diff) > MAX_DIFF_CHARS:
        diff = diff[:MAX_DIFF_CHARS] + "\n... (diff truncated)\n"
    return diff


def program_detail(s: Session, principal: Principal, program_id: int) -> dict[str, Any]:
    p = _scoped_program(s, principal, program_id)
    ev = s.scalar(select(Evaluation).where(Evaluation.program_id == p.id))
    parent = s.get(Program, p.parent_id) if p.parent_id is not None else None
    out = summary_of(p)
    # Exactly what was sent and received: rebuilt from the compact encoding (db/blobs.py).
    texts = blobs.program_texts(s, p)
    parent_code = (blobs.get_codes(s, [parent.code_hash]).get(parent.code_hash)
                   if parent is not None and parent.code_hash else None)
    out.update(code=texts.code, code_hash=p.code_hash, prompt=texts.prompt,
               response=texts.response,
               tokens=p.prompt_tokens + p.completion_tokens, extra=p.extra or {},
               metrics=(ev.metrics if ev else {}) or {},
               diff=unified_diff(parent, p, parent_code, texts.code),
               evaluation=None if ev is None else {
                   "id": ev.id, "status": ev.status, "score": ev.score, "metrics": ev.metrics or {},
                   "features": ev.features or {}, "artifacts": ev.artifacts or {},
                   "duration_s": ev.duration_s, "code_hash": ev.code_hash,
                   "functional_hash": ev.functional_hash, "cache": ev.cache,
                   "source_evaluation_id": ev.source_evaluation_id, "created_at": utc(ev.created_at)})
    # Pruned (worker/prune.py): its code, prompt and response were dropped; a code blob another
    # program still shares is not shown either, so what a pruned program shows never depends
    # on other programs.
    if p.pruned_at is not None:
        out.update(code=None, diff=None)
    out.update(pruned=p.pruned_at is not None, pruned_at=utc(p.pruned_at))
    # Rows stored before values were cleaned (or by other tools) may hold lone surrogates or
    # NaN: escaped here, so no stored value can make the response fail.
    return servable(out)


def lineage(s: Session, principal: Principal, program_id: int, *, depth: int) -> dict[str, Any]:
    """The program and up to depth - 1 of its ancestors, nearest first, in one recursive query
    (one index lookup per ancestor in the database, not one round trip each), never following
    a link out of the program's campaign. `truncated`: there are more ancestors than shown."""
    p = _scoped_program(s, principal, program_id)
    cols = ("id", "iteration", "generation", "parent_id", "kind", "status", "score")
    rows = s.execute(_LINEAGE, {"pid": p.id, "cid": p.campaign_id, "limit": depth + 1}).all()
    chain, seen = [], set()
    for row in rows:
        if row.id in seen:            # a cycle (only a hand-edited database has one)
            return {"program_id": p.id, "ancestors": chain, "truncated": True}
        seen.add(row.id)
        chain.append({k: getattr(row, k) for k in cols})
    truncated = len(chain) > depth
    return {"program_id": p.id, "ancestors": chain[:depth], "truncated": truncated}


def _lineage_query():
    """WITH RECURSIVE: the program (step 1), then each row's parent in the same campaign, until
    `limit` rows (the depth + 1, to tell a truncated lineage from a complete one)."""
    P = Program.__table__
    cols = (P.c.id, P.c.iteration, P.c.generation, P.c.parent_id, P.c.kind, P.c.status, P.c.score)
    base = select(*cols, literal(1).label("step")).where(P.c.id == bindparam("pid"))
    chain = base.cte("chain", recursive=True)
    parent = P.alias("parent")
    step = (select(*(parent.c[c.name] for c in cols), (chain.c.step + 1).label("step"))
            .select_from(chain.join(parent, parent.c.id == chain.c.parent_id))
            .where(parent.c.campaign_id == bindparam("cid"), chain.c.step < bindparam("limit")))
    chain = chain.union_all(step)
    return select(*(chain.c[c.name] for c in cols)).order_by(chain.c.step)


_LINEAGE = _lineage_query()
