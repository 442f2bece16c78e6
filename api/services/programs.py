"""Program services: elites, listings, one program with its diff, lineage."""
from __future__ import annotations

import difflib
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from evoforge.api.auth import Principal
from evoforge.api.services import NotFound, utc
from evoforge.api.services.project_campaigns import get_campaign, scope
from evoforge.db.campaign_config import CampaignConfig
from evoforge.db.models import Campaign, EliteCell, Evaluation, Program
from evoforge.evolution.sanitize import servable

SORTS = {
    "score": (Program.score.desc().nulls_last(), Program.id),
    "-score": (Program.score.asc().nulls_last(), Program.id),
    "iteration": (Program.iteration.asc(),),
    "-iteration": (Program.iteration.desc(),),
}
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
                  offset: int) -> tuple[list[dict[str, Any]], int]:
    return list_programs_versioned(s, principal, campaign_id, sort=sort, status=status,
                                   island=island, limit=limit, offset=offset)[1:]


def list_programs_versioned(s: Session, principal: Principal, campaign_id: int, *, sort: str,
                            status: str | None, island: int | None, limit: int,
                            offset: int) -> tuple[tuple, list[dict[str, Any]], int]:
    """(version of the archive read, items, total)."""
    c = get_campaign(s, principal, campaign_id)
    cols = [Program.id, Program.campaign_id, Program.iteration, Program.parent_id, Program.island,
            Program.generation, Program.kind, Program.model, Program.status, Program.score,
            Program.prompt_tokens, Program.completion_tokens, Program.cost_usd, Program.created_at]
    where = [Program.campaign_id == campaign_id]
    if status:
        where.append(Program.status == status)
    if island is not None:
        where.append(Program.island == island)
    total = s.scalar(select(func.count()).select_from(Program).where(*where))
    rows = s.execute(select(*cols).where(*where).order_by(*SORTS[sort]).limit(limit).offset(offset))
    # Stored values are served as they are, but never in a form a JSON encoder rejects.
    return _version(c), [servable({**r._mapping, "created_at": utc(r.created_at)}) for r in rows], total


def _scoped_program(s: Session, principal: Principal, program_id: int) -> Program:
    p = s.scalar(scope(select(Program).join(Campaign, Campaign.id == Program.campaign_id)
                       .where(Program.id == program_id), principal))
    if p is None:
        raise NotFound(f"program {program_id} not found")
    return p


def unified_diff(parent: Program | None, p: Program) -> str | None:
    if parent is None or parent.code is None or p.code is None:
        return None
    diff = "".join(difflib.unified_diff(parent.code.splitlines(keepends=True),
                                        p.code.splitlines(keepends=True),
                                        fromfile=f"program {parent.id}", tofile=f"program {p.id}"))
    if len(diff) > MAX_DIFF_CHARS:
        diff = diff[:MAX_DIFF_CHARS] + "\n... (diff truncated)\n"
    return diff


def program_detail(s: Session, principal: Principal, program_id: int) -> dict[str, Any]:
    p = _scoped_program(s, principal, program_id)
    ev = s.scalar(select(Evaluation).where(Evaluation.program_id == p.id))
    parent = s.get(Program, p.parent_id) if p.parent_id is not None else None
    out = summary_of(p)
    out.update(code=p.code, code_hash=p.code_hash, prompt=p.prompt, response=p.response,
               tokens=p.prompt_tokens + p.completion_tokens, extra=p.extra or {},
               metrics=(ev.metrics if ev else {}) or {}, diff=unified_diff(parent, p),
               evaluation=None if ev is None else {
                   "id": ev.id, "status": ev.status, "score": ev.score, "metrics": ev.metrics or {},
                   "features": ev.features or {}, "artifacts": ev.artifacts or {},
                   "duration_s": ev.duration_s, "code_hash": ev.code_hash,
                   "functional_hash": ev.functional_hash, "cache": ev.cache,
                   "source_evaluation_id": ev.source_evaluation_id, "created_at": utc(ev.created_at)})
    # Rows stored before values were cleaned (or by other tools) may hold lone surrogates or
    # NaN: escaped here, so no stored value can make the response fail.
    return servable(out)


def lineage(s: Session, principal: Principal, program_id: int, *, depth: int) -> dict[str, Any]:
    p = _scoped_program(s, principal, program_id)
    chain, seen, current = [], set(), p
    while current is not None and len(chain) < depth and current.id not in seen:
        seen.add(current.id)
        chain.append({"id": current.id, "iteration": current.iteration,
                      "generation": current.generation, "parent_id": current.parent_id,
                      "kind": current.kind, "status": current.status, "score": current.score})
        if current.parent_id is None:
            current = None
        else:
            current = s.get(Program, current.parent_id)
            if current is not None and current.campaign_id != p.campaign_id:
                current = None  # never follow a link out of the (scoped) campaign
    return {"program_id": p.id, "ancestors": chain, "truncated": current is not None}
