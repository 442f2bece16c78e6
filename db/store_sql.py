"""The prepared SQL of `CampaignStore` (db/store.py) and the elite table (db/elites.py).

Hot-path statements are SQLAlchemy Core, built once at import and run on a pooled Connection: no
ORM unit of work, no identity map, no statement construction per call (only the cache-key lookup).
The two ON CONFLICT statements differ by dialect and are built once per dialect.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import Float, bindparam, case, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from evoforge.db.models import Campaign, CodeBlob, EliteCell, EvalCache, Evaluation, Program
from evoforge.evolution.types import OK, EvalResult

P, E, C = Program.__table__, Evaluation.__table__, Campaign.__table__
EC, K, CB = EliteCell.__table__, EvalCache.__table__, CodeBlob.__table__

INSERT_PROGRAM = P.insert().returning(P.c.id)
INSERT_EVALUATION = E.insert().returning(E.c.id)
ELITES = (select(EC.c.island, EC.c.program_id, EC.c.score, EC.c.cell)
           .where(EC.c.campaign_id == bindparam("cid")))
# The code comes as its code_blob frame (db/blobs.py decodes it); a pruned program's may be gone.
REF_COLUMNS = (P.c.id, CB.c.data, P.c.score, P.c.status, P.c.island, P.c.generation,
                E.c.metrics, E.c.features, E.c.artifacts, P.c.code_hash)
REFS = (select(*REF_COLUMNS)
         .select_from(P.outerjoin(E, E.c.program_id == P.c.id)
                      .outerjoin(CB, CB.c.hash == P.c.code_hash))
         .where(P.c.id.in_(bindparam("ids", expanding=True))))
NEWEST_WITH_CODE = (select(P.c.id).where(P.c.campaign_id == bindparam("cid"),
                                         P.c.code_hash.is_not(None), P.c.pruned_at.is_(None))
                     .order_by(P.c.iteration.desc()).limit(1))
ARTIFACTS = (select(E.c.program_id, E.c.artifacts)
              .where(E.c.program_id.in_(bindparam("ids", expanding=True))))
META_NOTE = select(C.c.meta_note).where(C.c.id == bindparam("cid"))
RECENT_FAILURES = (select(P.c.status, E.c.artifacts).select_from(P.join(E, E.c.program_id == P.c.id))
                    .where(P.c.parent_id == bindparam("pid"), P.c.status != OK)
                    .order_by(P.c.id.desc()).limit(bindparam("limit")))
RESULT_COLUMNS = (E.c.id, E.c.status, E.c.score, E.c.metrics, E.c.features, E.c.artifacts,
                   E.c.duration_s, E.c.functional_hash)
HAS_CODE = (select(P.c.id).where(P.c.code_hash == bindparam("h"), P.c.campaign_id == bindparam("cid"))
             .limit(1))
LOOKUP = (select(*RESULT_COLUMNS).select_from(K.join(E, E.c.id == K.c.evaluation_id))
           .where(K.c.task_key == bindparam("tk"), K.c.kind == bindparam("kind"),
                  K.c.hash == bindparam("h")))
STORED_ITERATION = (select(P.c.id, E.c.cache, *RESULT_COLUMNS[1:])
                     .select_from(P.join(E, E.c.program_id == P.c.id))
                     .where(P.c.campaign_id == bindparam("cid"), P.c.iteration == bindparam("it")))
CACHE_HIT = (update(K).where(K.c.task_key == bindparam("b_tk"), K.c.kind == bindparam("b_kind"),
                              K.c.hash == bindparam("b_h"))
              .values(hits=K.c.hits + 1))


def counters(seed: bool, best: bool) -> Any:
    """UPDATE campaign SET <counters> [, seed_score] [, best_score/best_program_id if better]:
    the campaign row is written (and, on PostgreSQL, locked) once per commit, before any elite
    cell. `RETURNING best_program_id` tells whether this program became the best."""
    values: dict[str, Any] = dict(
        evaluations=C.c.evaluations + 1,
        cache_hits=C.c.cache_hits + bindparam("d_hits"),
        failures=C.c.failures + bindparam("d_failures"),
        rejected=C.c.rejected + bindparam("d_rejected"),
        novelty_skips=C.c.novelty_skips + bindparam("d_novelty"),
        sandbox_runs=C.c.sandbox_runs + bindparam("d_sandbox"),
        tokens=C.c.tokens + bindparam("d_tokens"),
        cost_usd=C.c.cost_usd + bindparam("d_cost", type_=Float),
        eval_seconds=C.c.eval_seconds + bindparam("d_eval_s", type_=Float),
    )
    if seed:
        values["seed_score"] = bindparam("b_seed_score", type_=Float)
    stmt = update(C).where(C.c.id == bindparam("cid"))
    if best:
        # SET expressions all see the row as it was, so both CASEs take the same branch.
        better = C.c.best_score.is_(None) | (C.c.best_score < bindparam("score", type_=Float))
        values["best_score"] = case((better, bindparam("score", type_=Float)), else_=C.c.best_score)
        values["best_program_id"] = case((better, bindparam("pid")), else_=C.c.best_program_id)
        stmt = stmt.returning(C.c.best_program_id)
    return stmt.values(**values)


COUNTERS = {(seed, best): counters(seed, best) for seed in (False, True) for best in (False, True)}
_DIALECT_STMTS: dict[str, dict[str, Any]] = {}


def dialect_statements(name: str) -> dict[str, Any]:
    """The two ON CONFLICT statements, spelled for the dialect `name` (PostgreSQL or SQLite)."""
    stmts = _DIALECT_STMTS.get(name)
    if stmts is None:
        if name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        upsert = insert(EC)
        # Atomic replace-if-better: one INSERT .. ON CONFLICT
        # DO UPDATE .. WHERE score < new.
        upsert = upsert.on_conflict_do_update(
            index_elements=[EC.c.campaign_id, EC.c.island, EC.c.cell],
            set_={k: upsert.excluded[k] for k in ("program_id", "score", "features", "updated_at")},
            where=EC.c.score < upsert.excluded.score)
        stmts = _DIALECT_STMTS[name] = {
            "upsert_elite": upsert, "insert_cache": insert(K).on_conflict_do_nothing()}
    return stmts


def dialect_name(s: Session | Connection) -> str:
    return s.dialect.name if isinstance(s, Connection) else s.get_bind().dialect.name


def result_of(row: Any) -> EvalResult:
    """An EvalResult from a row of RESULT_COLUMNS (the evaluation id first)."""
    _, status, score, metrics, features, artifacts, duration_s, fhash = row
    return EvalResult(status=status, score=score, metrics=metrics or {}, features=features or {},
                      artifacts=artifacts or {}, duration_s=duration_s, functional_hash=fhash)
