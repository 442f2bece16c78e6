"""The LLM bandit's statistics per (campaign, model), in the database.

`record` adds one committed iteration's outcome to its model's row, inside the store's commit
transaction (a redelivered iteration rolls back with its program: never counted twice).
`read` returns the campaign's rows as `evolution.ensemble.ArmStats`, which the LLM mutator loads
before every choice: the bandit learns the same from every worker, thread or process.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, sessionmaker

from evoforge.db.campaign_rows import engine_of
from evoforge.db.models import ModelStat
from evoforge.evolution.ensemble import ArmStats, improvement_of
from evoforge.evolution.step import Child
from evoforge.evolution.types import OK

T = ModelStat.__table__
_UPSERTS: dict[str, Any] = {}


def _upsert(dialect_name: str) -> Any:
    """INSERT .. ON CONFLICT (campaign, model) DO UPDATE SET counter = counter + new."""
    stmt = _UPSERTS.get(dialect_name)
    if stmt is None:
        if dialect_name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        ins = insert(T)
        stmt = _UPSERTS[dialect_name] = ins.on_conflict_do_update(
            index_elements=[T.c.campaign_id, T.c.model],
            set_={k: T.c[k] + ins.excluded[k] for k in ("pulls", "valid", "improvement", "spend")})
    return stmt


def outcome_of(child: Child) -> ArmStats | None:
    """The bandit's increment for one committed child; None when no model made it."""
    m, r = child.mutation, child.result
    if not m.model:
        return None
    ok = r.status == OK
    return ArmStats.of_outcome(improvement_of(child.parent_score, r.score, ok), m.cost_usd,
                               m.prompt_tokens + m.completion_tokens, valid=ok)


def record(conn: Connection, campaign_id: int, child: Child) -> None:
    """Add `child`'s outcome to its model's row (call inside the commit transaction)."""
    inc = outcome_of(child)
    if inc is None:
        return
    conn.execute(_upsert(conn.dialect.name), dict(
        campaign_id=campaign_id, model=child.mutation.model[:200], pulls=inc.pulls,
        valid=inc.valid, improvement=inc.improvement, spend=inc.spend))


def read(sessions: sessionmaker[Session], campaign_id: int) -> dict[str, ArmStats]:
    """model -> what the campaign's bandit has learned about it."""
    with engine_of(sessions).connect() as conn:
        rows = conn.execute(select(T.c.model, T.c.pulls, T.c.valid, T.c.improvement, T.c.spend)
                            .where(T.c.campaign_id == campaign_id)).all()
    return {model: ArmStats(pulls, valid, improvement, spend)
            for model, pulls, valid, improvement, spend in rows}
