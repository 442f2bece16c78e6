"""Program services: elites, listings, one program with its diff, lineage."""
from __future__ import annotations

import difflib
import threading
from collections import OrderedDict
from functools import lru_cache
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, bindparam, case, func, literal, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, aliased

from evoforge.api.auth import Principal
from evoforge.api.services import NotFound, utc
from evoforge.api.services import listing
from evoforge.api.services.project_campaigns import Scoped, get_campaign
from evoforge.db import blobs
from evoforge.db.blobs import Reader
from evoforge.db.campaign_config import CampaignConfig
from evoforge.db.errors import campaign_not_found
from evoforge.db.models import Campaign, EliteCell, Evaluation, Program
from evoforge.evolution.sanitize import servable

MAX_DIFF_CHARS = 200_000


def _version(c: Campaign) -> tuple:
    """The version of a campaign's archive, the key of the API's response cache (api/caches.py).
    Elite cells and programs change in an iteration's commit (ring migration included), which
    bumps `Campaign.evaluations` in the same transaction, and in a prune (worker/prune.py), which
    bumps `Campaign.revision` in its own; so (id, created_at, evaluations, revision) names one
    state of the archive; created_at tells a new campaign from a deleted one whose id SQLite
    handed out again."""
    return (c.id, c.created_at, c.evaluations, c.revision)


version_of = _version


def campaign_version(s: Reader, principal: Principal, campaign_id: int) -> tuple | None:
    """The version `_version` of a campaign the caller may see (None: not found or not theirs),
    read as four columns by primary key: the cheap check in front of the response caches."""
    row = _version_row(s, principal, campaign_id)
    return None if row is None else tuple(row)


def _version_row(s: Reader, principal: Principal, campaign_id: int) -> Any:
    """The row of `campaign_version` (attributes id, created_at, evaluations, revision)."""
    return s.execute(*VERSION(principal, cid=campaign_id)).first()


# The read in front of the response caches, for every request of /elites and /programs (also
# on the event loop: api/version_reader.py): four columns by primary key, built once.
VERSION = Scoped(select(Campaign.id, Campaign.created_at, Campaign.evaluations, Campaign.revision)
                 .where(Campaign.id == bindparam("cid")))


@dataclass(frozen=True)
class Version:
    """A campaign's version (`_version`) with its parts named, as the listing reads them."""
    id: int
    created_at: Any
    evaluations: int
    revision: int


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
            "cost_usd": p.cost_usd, "created_at": utc(p.created_at),
            "pruned": p.pruned_at is not None}


def list_programs(s: Session, principal: Principal, campaign_id: int, *, sort: str,
                  status: str | None, island: int | None, limit: int,
                  offset: int, after: str | None = None) -> tuple[list[dict[str, Any]], int]:
    return list_programs_versioned(s, principal, campaign_id, sort=sort, status=status,
                                   island=island, limit=limit, offset=offset, after=after)[1:3]


def list_programs_versioned(s: Reader, principal: Principal, campaign_id: int, *, sort: str,
                            status: str | None, island: int | None, limit: int, offset: int,
                            after: str | None = None, version: tuple | None = None
                            ) -> tuple[tuple, list[dict[str, Any]], int, str | None]:
    """(version of the archive read, items, total, the `after` cursor of the next page or None).
    `after` (a cursor this function handed out; listing.BadCursor otherwise) continues right
    after an item, `offset` skips rows: one or the other. The total: `_segment_counts`.
    `version`: the campaign's version as the caller read it for this principal before this
    call (the API reads it for every request), so it is not read again; the page read after it
    is at least as new, which is all a response cached under it needs."""
    cursor = listing.parse_cursor(sort, after) if after else None
    if cursor is not None and offset:
        raise listing.BadCursor("after and offset: give one or the other")
    if version is None:
        # The version's four columns, not the whole campaign row (its config and JSON
        # columns): all a page needs of the campaign.
        version = _version_row(s, principal, campaign_id)
        if version is None:
            raise NotFound(str(campaign_not_found(campaign_id)))
    c = Version(*version)
    version = tuple(version)
    where = _filter(bool(status), island is not None)
    params = {"cid": campaign_id, "status": status, "island": island}
    counts = _segment_counts(s, c, status, island)
    parts = None
    if cursor is not None:
        parts, after_params = listing.parts(sort, cursor)
        params.update(after_params)
    rows = listing.fetch(s, _SUMMARY_COLUMNS, where, params, sort, counts, limit + 1, offset,
                         parts)
    cursor = listing.cursor_of(sort, rows[limit - 1]) if len(rows) > limit else None
    # Stored values are served as they are, but never in a form a JSON encoder rejects.
    # (dict(zip()) over the row's fields: a Row's `_mapping` cost a sixth of a page's CPU.)
    keys = rows[0]._fields if rows else ()
    items = []
    for r in rows[:limit]:
        item = dict(zip(keys, r))
        item.update(created_at=utc(r.created_at), pruned=bool(r.pruned))
        items.append(item)
    items = servable(items)
    return version, items, sum(counts), cursor


@lru_cache(maxsize=None)
def _filter(status: bool, island: bool) -> tuple:
    """A listing's conditions, with bound parameters (cid, status, island): built once per
    shape (api/services/listing.py `_statement`). Every combination of the filters, on either
    sort, has an index in the sort's order (db/models.py, migrations 0007 and 0009)."""
    where = (Program.campaign_id == bindparam("cid"),)
    if status:
        where += (Program.status == bindparam("status"),)
    if island:
        where += (Program.island == bindparam("island"),)
    return where


_SUMMARY_COLUMNS = (Program.id, Program.campaign_id, Program.iteration, Program.parent_id,
                    Program.island, Program.generation, Program.kind, Program.model,
                    Program.status, Program.score, Program.prompt_tokens,
                    Program.completion_tokens, Program.cost_usd, Program.created_at,
                    Program.pruned_at.is_not(None).label("pruned"))
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


def _segment_counts(s: Reader, c: Version, status: str | None,
                    island: int | None) -> tuple[int, int]:
    """(scored, unscored) programs of a campaign under a filter: the page total, and where the
    unscored segment starts for an offset. Never a full count on every page: kept per process,
    campaign and filter, and after new commits only the iterations after the last one counted
    are counted (a range of the (campaign, iteration) key), with the campaign's `evaluations`
    read in the same statement as the check: an iteration committed out of order (concurrent
    workers) makes the sum fall short of the counter, and then, as on the first call, the whole
    campaign is counted again."""
    key = (id(_pool_of(s)), c.id, c.created_at, status, island)
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


def _pool_of(s: Reader) -> Any:
    """The database a reader reads (its engine's pool: one per database and process, shared by
    the engines of `read_session_factory`)."""
    return s.engine.pool if isinstance(s, Connection) else s.get_bind().pool


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


def unified_diff(parent_id: int | None, program_id: int, parent_code: str | None,
                 code: str | None) -> str | None:
    if parent_id is None or parent_code is None or code is None:
        return None
    diff = "".join(difflib.unified_diff(parent_code.splitlines(keepends=True),
                                        code.splitlines(keepends=True),
                                        fromfile=f"program {parent_id}", tofile=f"program {program_id}"))
    if len(diff) > MAX_DIFF_CHARS:
        diff = diff[:MAX_DIFF_CHARS] + "\n... (diff truncated)\n"
    return diff


def _detail_query():
    """One row: the program, its evaluation and its parent's code hash (the parent only within
    the program's campaign), scoped by `Scope.where` through the campaign join. Plain columns,
    not ORM objects: building three ORM instances (the parent's compressed texts included) was
    a third of this endpoint's CPU under load."""
    E, parent = Evaluation, aliased(Program)
    return (select(*_SUMMARY_COLUMNS, Program.code_hash, Program.prompt_z, Program.response_z,
                   Program.extra, Program.pruned_at, parent.code_hash.label("parent_code_hash"),
                   E.id.label("ev_id"), E.status.label("ev_status"), E.score.label("ev_score"),
                   E.metrics.label("ev_metrics"), E.features.label("ev_features"),
                   E.artifacts.label("ev_artifacts"), E.duration_s.label("ev_duration_s"),
                   E.code_hash.label("ev_code_hash"), E.functional_hash.label("ev_functional_hash"),
                   E.cache.label("ev_cache"), E.source_evaluation_id.label("ev_source_evaluation_id"),
                   E.created_at.label("ev_created_at"))
            .join(Campaign, Campaign.id == Program.campaign_id)
            .outerjoin(E, E.program_id == Program.id)
            .outerjoin(parent, and_(parent.id == Program.parent_id,
                                    parent.campaign_id == Program.campaign_id))
            .where(Program.id == bindparam("program_id")))


_DETAIL = Scoped(_detail_query())


def program_detail(s: Reader, principal: Principal, program_id: int) -> dict[str, Any]:
    """Everything GET /programs/{id} shows, in two reads: the row (`_detail_query`), then every
    code it needs (its own, its parent's and those its prompt and reply refer to) at once."""
    r = s.execute(*_DETAIL(principal, program_id=program_id)).first()
    if r is None:
        raise NotFound(f"program {program_id} not found")
    pruned = r.pruned_at is not None
    codes = blobs.get_codes(s, [r.code_hash, r.parent_code_hash,
                                *blobs.ref_hashes(r.prompt_z), *blobs.ref_hashes(r.response_z)])
    # Exactly what was sent and received: rebuilt from the compact encoding (db/blobs.py).
    prompt, response = blobs.decode_texts(s, [r.prompt_z, r.response_z], codes=codes)
    # Pruned (worker/prune.py): its code, prompt and response were dropped; a code blob another
    # program still shares is not shown either, so what a pruned program shows never depends
    # on other programs.
    code = None if pruned or not r.code_hash else codes.get(r.code_hash)
    parent_code = codes.get(r.parent_code_hash) if r.parent_code_hash else None
    out = {c.key: getattr(r, c.key) for c in _SUMMARY_COLUMNS}
    out.update(created_at=utc(r.created_at), code=code, code_hash=r.code_hash, prompt=prompt,
               response=response, tokens=r.prompt_tokens + r.completion_tokens,
               extra=r.extra or {}, metrics=(r.ev_metrics or {}) if r.ev_id is not None else {},
               diff=unified_diff(r.parent_id if r.parent_code_hash else None, r.id,
                                 parent_code, code),
               evaluation=None if r.ev_id is None else {
                   "id": r.ev_id, "status": r.ev_status, "score": r.ev_score,
                   "metrics": r.ev_metrics or {}, "features": r.ev_features or {},
                   "artifacts": r.ev_artifacts or {}, "duration_s": r.ev_duration_s,
                   "code_hash": r.ev_code_hash, "functional_hash": r.ev_functional_hash,
                   "cache": r.ev_cache, "source_evaluation_id": r.ev_source_evaluation_id,
                   "created_at": utc(r.ev_created_at)},
               pruned=pruned, pruned_at=utc(r.pruned_at))
    # Rows stored before values were cleaned (or by other tools) may hold lone surrogates or
    # NaN: escaped here, so no stored value can make the response fail.
    return servable(out)


def lineage(s: Reader, principal: Principal, program_id: int, *, depth: int) -> dict[str, Any]:
    """The program and up to depth - 1 of its ancestors, nearest first, in one recursive query
    (one index lookup per ancestor in the database, not one round trip each), never following
    a link out of the program's campaign. `truncated`: there are more ancestors than shown."""
    rows = s.execute(*_LINEAGE(principal, pid=program_id, limit=depth + 1)).all()
    if not rows:
        raise NotFound(f"program {program_id} not found")
    chain = [dict(zip(_LINEAGE_KEYS, row)) for row in rows]
    if len({a["id"] for a in chain}) < len(chain):   # a cycle (only a hand-edited database
        seen: set[int] = set()                       # has one): up to its first repeat
        for i, a in enumerate(chain):
            if a["id"] in seen:
                return {"program_id": program_id, "ancestors": chain[:i], "truncated": True}
            seen.add(a["id"])
    truncated = len(chain) > depth
    return {"program_id": program_id, "ancestors": chain[:depth], "truncated": truncated}


_LINEAGE_KEYS = ("id", "iteration", "generation", "parent_id", "kind", "status", "score", "pruned")


def _lineage_query() -> Scoped:
    """WITH RECURSIVE: the program, if the caller may see it (step 1: scoped through its
    campaign), then each row's parent in the same campaign, until `limit` rows (the depth + 1,
    to tell a truncated lineage from a complete one). One statement: the scope check rides in
    the first step."""
    P = Program.__table__
    cols = (P.c.id, P.c.iteration, P.c.generation, P.c.parent_id, P.c.kind, P.c.status, P.c.score,
            P.c.pruned_at, P.c.campaign_id)

    def chain_of(base):
        chain = base.cte("chain", recursive=True)
        parent = P.alias("parent")
        step = (select(*(parent.c[c.name] for c in cols), (chain.c.step + 1).label("step"))
                .select_from(chain.join(parent, parent.c.id == chain.c.parent_id))
                .where(parent.c.campaign_id == chain.c.campaign_id,
                       chain.c.step < bindparam("limit")))
        chain = chain.union_all(step)
        # the answer's columns in _LINEAGE_KEYS's order, the pruned flag computed here
        return (select(*(chain.c[c.name] for c in cols[:7]),
                       chain.c.pruned_at.is_not(None).label("pruned"))
                .order_by(chain.c.step))

    base = (select(*cols, literal(1).label("step"))
            .join(Campaign.__table__, Campaign.__table__.c.id == P.c.campaign_id)
            .where(P.c.id == bindparam("pid")))
    return Scoped(base, then=chain_of)


_LINEAGE = _lineage_query()
