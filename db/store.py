"""`CampaignStore`: the step's `Store` protocol on SQLAlchemy (SQLite and PostgreSQL).

Every write happens in one short transaction: insert the program and its evaluation (the unique
(campaign, iteration) key makes a redelivered iteration a no-op), record the cache entry, bump
the campaign counters, and offer the program to its MAP-Elites cell with a compare-and-set
UPDATE (`... WHERE score < :new`), so concurrent workers on PostgreSQL never lose a better elite.
Programs are immutable, so the store keeps an in-memory cache of the ones it has loaded.
"""
from __future__ import annotations

import random
import threading
from dataclasses import replace
from collections import OrderedDict
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased, sessionmaker

from db.models import Campaign, EliteCell, EvalCache, Evaluation, Program, utcnow
from db import sql
from evolution import archive as cells
from evolution.meta import Outcome, build_meta_note
from evolution.novelty import MinHasher
from evolution.selection import SelectionConfig, choose
from evolution.step import CACHE_MISS, Child, Committed, Selection
from evolution.types import ERROR, INVALID, OK, REJECTED, EvalResult, FeatureDim, ProgramRef

CACHEABLE = (OK, INVALID, ERROR)  # deterministic outcomes; timeouts and kills may be flukes


def result_of(ev: Evaluation) -> EvalResult:
    return EvalResult(status=ev.status, score=ev.score, metrics=ev.metrics or {},
                      features=ev.features or {}, artifacts=ev.artifacts or {},
                      duration_s=ev.duration_s, functional_hash=ev.functional_hash)


def ref_of(p: Program, ev: Evaluation | None) -> ProgramRef:
    return ProgramRef(id=p.id, code=p.code or "", score=p.score, status=p.status, island=p.island,
                      generation=p.generation, metrics=(ev.metrics if ev else {}) or {},
                      features=(ev.features if ev else {}) or {},
                      artifacts=(ev.artifacts if ev else {}) or {})


def dims_from_config(config: dict[str, Any]) -> list[FeatureDim]:
    return [FeatureDim(**d) for d in config.get("archive", {}).get("dims", [])]


class CampaignStore:
    def __init__(self, sessions: sessionmaker[Session], campaign_id: int, *, cache_size: int = 4096):
        self.sessions = sessions
        self.campaign_id = campaign_id
        with sessions() as s:
            c = s.get(Campaign, campaign_id)
            if c is None:
                raise KeyError(f"campaign {campaign_id} not found")
            self.task_key = c.task_key
            self.islands = c.islands
            self.dims = dims_from_config(c.config)
            archive_cfg = c.config.get("archive", {})
            self.migration_interval = int(archive_cfg.get("migration_interval", 0) or 0)
            self.selection_config = SelectionConfig(**archive_cfg.get("selection", {}))
            self.novelty_threshold = archive_cfg.get("novelty_threshold")
            self.meta_interval = int(c.config.get("mutator", {}).get("meta_interval", 0) or 0)
        self._hasher = MinHasher()
        self._signatures: dict[int, Any] = {}
        self._refs: OrderedDict[int, ProgramRef] = OrderedDict()
        self._refs_lock = threading.Lock()
        self._cache_size = cache_size

    # -- select ---------------------------------------------------------------------------
    def _refs_for(self, s: Session, ids: list[int]) -> dict[int, ProgramRef]:
        with self._refs_lock:
            found = {i: self._refs[i] for i in ids if i in self._refs}
        missing = [i for i in ids if i not in found]
        if missing:
            rows = s.execute(select(Program, Evaluation).join(Evaluation, Evaluation.program_id == Program.id,
                                                              isouter=True)
                             .where(Program.id.in_(missing))).all()
            with self._refs_lock:
                for p, ev in rows:
                    ref = ref_of(p, ev)
                    found[p.id] = ref
                    self._refs[p.id] = ref
                while len(self._refs) > self._cache_size:
                    self._refs.popitem(last=False)
        return found

    def elites(self, s: Session) -> dict[int, list[tuple[int, float, str]]]:
        rows = s.execute(select(EliteCell.island, EliteCell.program_id, EliteCell.score, EliteCell.cell)
                         .where(EliteCell.campaign_id == self.campaign_id)).all()
        out: dict[int, list[tuple[int, float, str]]] = {i: [] for i in range(self.islands)}
        for island, pid, score, cell in rows:
            out.setdefault(island, []).append((pid, score, cell))
        return out

    def select(self, island: int, rng: random.Random) -> Selection:
        with self.sessions() as s:
            elites = self.elites(s)
            ids = list(dict.fromkeys(pid for rows in elites.values() for pid, _, _ in rows))
            refs = self._refs_for(s, ids)
            if not refs:  # no valid program yet: repair the newest program (the seed at first)
                pid = s.scalar(select(Program.id).where(Program.campaign_id == self.campaign_id,
                                                         Program.code.is_not(None))
                               .order_by(Program.iteration.desc()).limit(1))
                if pid is None:
                    return Selection(island=island, parent=None)
                return Selection(island=island, parent=self._refs_for(s, [pid])[pid])
            note = s.scalar(select(Campaign.meta_note).where(Campaign.id == self.campaign_id)) or ""
        island_elites = [refs[pid] for pid, _, _ in elites.get(island, []) if pid in refs]
        chosen = choose(island, island_elites, list(refs.values()), rng, self.selection_config,
                        meta_note=note)
        if chosen.parent is None:
            return chosen
        errors = self.recent_failures(chosen.parent.id)
        if not errors:
            return chosen
        parent = replace(chosen.parent, artifacts={**chosen.parent.artifacts, "edit_errors": errors})
        return replace(chosen, parent=parent)

    def recent_failures(self, parent_id: int, limit: int = 3) -> list[str]:
        """Why the parent's latest children failed, so the next prompt can avoid repeating it."""
        with self.sessions() as s:
            rows = s.execute(select(Program.status, Evaluation.artifacts)
                             .join(Evaluation, Evaluation.program_id == Program.id)
                             .where(Program.parent_id == parent_id, Program.status != OK)
                             .order_by(Program.id.desc()).limit(limit)).all()
        return [f"{status}: {str((art or {}).get('reason', ''))[:300]}" for status, art in rows]

    def rebuild_elites(self) -> dict[tuple[int, str], tuple[int, float]]:
        """Recompute every elite cell from the stored programs and evaluations alone, replaying
        them in commit order with the same placement and migration rules (exact for campaigns
        run with one worker; with several, commit order is the program id order)."""
        archive = cells.Archive(self.islands)
        with self.sessions() as s:
            rows = s.execute(select(Program.id, Program.iteration, Program.island, Program.parent_id,
                                    Program.status, Program.code, Program.score, Evaluation.features)
                             .join(Evaluation, Evaluation.program_id == Program.id)
                             .where(Program.campaign_id == self.campaign_id)
                             .order_by(Program.id)).all()
        for pid, iteration, island, parent_id, status, code, score, features in rows:
            if status == OK and score is not None and code is not None:
                cell = cells.parse_cell_key(self.cell_of(code, features or {}))
                for i in (range(self.islands) if parent_id is None else [island]):
                    archive.offer(i, cell, pid, score, features or {})
            if self.migration_interval and iteration and iteration % self.migration_interval == 0:
                archive.migrate(iteration, force=True)
        return {(i, cells.cell_key(c)): (e.program_id, e.score) for i, c, e in archive.elites()}

    def near_duplicate(self, island: int, code: str) -> str | None:
        """The novelty gate: MinHash similarity against the island's elites (cost O(elites))."""
        if not self.novelty_threshold:
            return None
        with self.sessions() as s:
            ids = [pid for pid, _, _ in self.elites(s).get(island, [])]
            refs = self._refs_for(s, ids)
        if not refs:
            return None
        sig = self._hasher.signature(code)
        best, best_id = 0.0, None
        for pid, ref in refs.items():
            other = self._signatures.get(pid)
            if other is None:
                other = self._signatures[pid] = self._hasher.signature(ref.code)
            sim = MinHasher.similarity(sig, other)
            if sim > best:
                best, best_id = sim, pid
        if best >= self.novelty_threshold:
            return f"novelty gate: {best:.3f} similar to program {best_id} on island {island}"
        return None

    # -- lookup ---------------------------------------------------------------------------
    def lookup(self, *, code_hash: str | None = None,
               functional_hash: str | None = None) -> tuple[int, EvalResult] | None:
        kind, h = ("code", code_hash) if code_hash else ("functional", functional_hash)
        if not h:
            return None
        with self.sessions() as s:
            ev = s.scalar(select(Evaluation).join(EvalCache, EvalCache.evaluation_id == Evaluation.id)
                          .where(EvalCache.task_key == self.task_key, EvalCache.kind == kind,
                                 EvalCache.hash == h))
            return (ev.id, result_of(ev)) if ev is not None else None

    # -- commit ---------------------------------------------------------------------------
    def commit(self, child: Child) -> Committed:
        r, m = child.result, child.mutation
        try:
            with self.sessions.begin() as s:
                program = Program(
                    campaign_id=self.campaign_id, iteration=child.iteration, parent_id=child.parent_id,
                    island=child.island, generation=child.generation, code=child.code,
                    code_hash=child.code_hash, kind=m.kind, model=m.model, prompt=m.prompt,
                    response=m.response, prompt_tokens=m.prompt_tokens,
                    completion_tokens=m.completion_tokens, cost_usd=m.cost_usd,
                    extra=m.extra or {}, status=r.status, score=r.score)
                artifacts = dict(r.artifacts)
                if m.error and r.status == REJECTED:
                    artifacts.setdefault("reason", m.error)
                program.evaluation = Evaluation(
                    task_key=self.task_key, status=r.status, score=r.score, metrics=r.metrics,
                    features=r.features, artifacts=artifacts, duration_s=r.duration_s,
                    code_hash=child.code_hash, functional_hash=r.functional_hash, cache=child.cache,
                    source_evaluation_id=child.cache_source_id)
                s.add(program)
                s.flush()
                self._record_cache(s, child, program.evaluation.id)
                # Lock order: the campaign row first (counters), then elite cells, so concurrent
                # commits (and ring migration, which touches other islands' cells) cannot
                # deadlock on PostgreSQL.
                self._count(s, child)
                improved, new_best = self._place(s, program, child)
                if self.migration_interval and child.iteration and child.iteration % self.migration_interval == 0:
                    migrate(s, self.campaign_id, self.islands)
                if self.meta_interval and child.iteration and child.iteration % self.meta_interval == 0:
                    self._refresh_meta_note(s)
                return Committed(program_id=program.id, improved_cell=improved, new_best=new_best,
                                 result=r, cache=child.cache)
        except IntegrityError:
            # This iteration was committed before (a redelivered task): report the stored one.
            with self.sessions() as s:
                p = s.scalar(select(Program).where(Program.campaign_id == self.campaign_id,
                                                   Program.iteration == child.iteration))
                if p is None:
                    raise
                return Committed(program_id=p.id, improved_cell=False, new_best=False,
                                 result=result_of(p.evaluation), cache=p.evaluation.cache)

    def _refresh_meta_note(self, s: Session) -> None:
        parent = aliased(Program)
        rows = s.execute(select(Program.status, Program.score, parent.score, Program.kind,
                                Evaluation.artifacts)
                         .join(Evaluation, Evaluation.program_id == Program.id)
                         .join(parent, parent.id == Program.parent_id)
                         .where(Program.campaign_id == self.campaign_id)
                         .order_by(Program.iteration.desc()).limit(self.meta_interval)).all()
        note = build_meta_note([Outcome(st, sc, ps, kind, str((art or {}).get("reason", "")))
                                for st, sc, ps, kind, art in rows])
        s.execute(update(Campaign).where(Campaign.id == self.campaign_id).values(meta_note=note))

    def _record_cache(self, s: Session, child: Child, evaluation_id: int) -> None:
        r = child.result
        if child.cache != CACHE_MISS:
            s.execute(update(EvalCache).where(EvalCache.task_key == self.task_key,
                                              EvalCache.kind == child.cache,
                                              EvalCache.hash == (child.code_hash if child.cache == "code"
                                                                 else r.functional_hash))
                      .values(hits=EvalCache.hits + 1))
        if r.status not in CACHEABLE:
            return
        for kind, h in (("code", child.code_hash), ("functional", r.functional_hash)):
            if h:
                sql.insert_ignore(s, EvalCache, task_key=self.task_key, kind=kind, hash=h,
                                  evaluation_id=evaluation_id)

    def cell_of(self, code: str, features: dict[str, Any]) -> str:
        values = {"code_size": cells.code_size_feature(code), **features}
        return cells.cell_key(cells.cell_index(values, self.dims))

    def _place(self, s: Session, program: Program, child: Child) -> tuple[bool, bool]:
        r = child.result
        if r.status != OK or r.score is None or program.code is None:
            return False, False
        cell = self.cell_of(program.code, r.features)
        islands = range(self.islands) if child.parent_id is None else [child.island]
        improved = False
        for island in islands:
            improved |= offer(s, self.campaign_id, island, cell, program.id, r.score, r.features)
        res = s.execute(update(Campaign).where(
            Campaign.id == self.campaign_id,
            (Campaign.best_score.is_(None)) | (Campaign.best_score < r.score))
            .values(best_score=r.score, best_program_id=program.id))
        return improved, bool(res.rowcount)

    def _count(self, s: Session, child: Child) -> None:
        r, m = child.result, child.mutation
        values: dict[str, Any] = dict(
            evaluations=Campaign.evaluations + 1,
            cache_hits=Campaign.cache_hits + int(child.cache != CACHE_MISS),
            failures=Campaign.failures + int(r.status != OK),
            rejected=Campaign.rejected + int(r.status == REJECTED),
            novelty_skips=Campaign.novelty_skips + int(bool(r.artifacts.get("novelty"))),
            sandbox_runs=Campaign.sandbox_runs + int(child.cache == CACHE_MISS and r.status != REJECTED),
            tokens=Campaign.tokens + m.prompt_tokens + m.completion_tokens,
            cost_usd=Campaign.cost_usd + m.cost_usd,
            eval_seconds=Campaign.eval_seconds + (r.duration_s if child.cache == CACHE_MISS else 0.0),
        )
        if child.parent_id is None and m.kind == "seed":
            values["seed_score"] = r.score
        s.execute(update(Campaign).where(Campaign.id == self.campaign_id).values(**values))


def offer(s: Session, campaign_id: int, island: int, cell: str, program_id: int, score: float,
          features: dict[str, Any]) -> bool:
    """Atomic replace-if-better of one elite cell. True when the program now holds the cell.

    One INSERT .. ON CONFLICT DO UPDATE .. WHERE score < new: an UPDATE-then-INSERT-IGNORE pair
    loses the better program when two writers both find the cell empty and the worse one inserts
    first."""
    return sql.upsert_if_greater(s, EliteCell, ("campaign_id", "island", "cell"), "score",
                                 campaign_id=campaign_id, island=island, cell=cell,
                                 program_id=program_id, score=score, features=features,
                                 updated_at=utcnow())


def migrate(s: Session, campaign_id: int, islands: int) -> int:
    """Ring migration: each island's best elite is offered to the next island's same cell."""
    if islands < 2:
        return 0
    best = {}
    for island, cell, pid, score, feats in s.execute(
            select(EliteCell.island, EliteCell.cell, EliteCell.program_id, EliteCell.score,
                   EliteCell.features).where(EliteCell.campaign_id == campaign_id)
            .order_by(EliteCell.program_id)):
        if island not in best or score > best[island][2]:
            best[island] = (cell, pid, score, feats)
    moved = 0
    for island, (cell, pid, score, feats) in best.items():
        moved += offer(s, campaign_id, (island + 1) % islands, cell, pid, score, feats)
    return moved
