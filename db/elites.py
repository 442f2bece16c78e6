"""The MAP-Elites archive on the elite table: evolution/archive.py's pure rules spelled in SQL.

Placement offers a program to its cell on each target island with one atomic replace-if-better
statement (`offer`), ring migration offers each island's best elite to the next island (`migrate`),
and `rebuild` recomputes every cell from the stored programs alone through the pure rules, which
tests/evolution/test_archive_sql.py holds equal to what the SQL path stored.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from evoforge.db.models import Evaluation, Program, utcnow
from evoforge.db.store_sql import EC, ELITES, dialect_name, dialect_statements
from evoforge.evolution import archive as cells
from evoforge.evolution.types import OK, FeatureDim

# {island: [(program_id, score, cell key)]}
ElitesByIsland = dict[int, list[tuple[int, float, str]]]


def read(s: Session | Connection, campaign_id: int, islands: int) -> ElitesByIsland:
    """The campaign's elites per island, read fresh (other workers replace them)."""
    out: ElitesByIsland = {i: [] for i in range(islands)}
    for island, pid, score, cell in s.execute(ELITES, {"cid": campaign_id}):
        out.setdefault(island, []).append((pid, score, cell))
    return out


def offer(s: Session | Connection, campaign_id: int, island: int, cell: str, program_id: int,
          score: float, features: dict[str, Any]) -> bool:
    """Atomic replace-if-better of one elite cell (`evolution.archive.replaces`, spelled in SQL).
    True when the program now holds the cell.

    One INSERT .. ON CONFLICT DO UPDATE .. WHERE score < new: an UPDATE-then-INSERT-IGNORE pair
    loses the better program when two writers both find the cell empty and the worse one inserts
    first."""
    stmt = dialect_statements(dialect_name(s))["upsert_elite"]
    res = s.execute(stmt, dict(campaign_id=campaign_id, island=island, cell=cell,
                               program_id=program_id, score=score, features=features,
                               updated_at=utcnow()))
    return bool(res.rowcount)


def place(conn: Connection, campaign_id: int, islands: int, *, cell: str, program_id: int,
          parent_id: int | None, island: int, score: float, features: dict[str, Any]) -> bool:
    """evolution/archive.py's placement: the program's cell on its target islands, each through
    `offer`. True when it now holds the cell on at least one island."""
    improved = False
    for target in cells.target_islands(parent_id, island, islands):
        improved |= offer(conn, campaign_id, target, cell, program_id, score, features)
    return improved


def migrate(s: Session | Connection, campaign_id: int, islands: int) -> int:
    """Ring migration (`evolution.archive.migrants`) on the elite table: each island's best elite
    is offered to the next island's same cell. Returns the number of copies made."""
    if islands < 2:
        return 0
    rows = s.execute(select(EC.c.island, EC.c.cell, EC.c.program_id, EC.c.score, EC.c.features)
                     .where(EC.c.campaign_id == campaign_id)).all()
    moved = 0
    for target, cell, pid, score, feats in cells.migrants(rows, islands):
        moved += offer(s, campaign_id, target, cell, pid, score, feats)
    return moved


def rebuild(s: Session, campaign_id: int, islands: int, dims: list[FeatureDim],
            migration_interval: int) -> dict[tuple[int, str], tuple[int, float]]:
    """Recompute every elite cell from the stored programs and evaluations alone, replaying
    them in commit order through evolution/archive.py, the rules the commit applies in SQL
    (exact for campaigns run with one worker; with several, commit order is the program id
    order). Returns {(island, cell key): (program_id, score)}."""
    archive = cells.Archive(islands)
    rows = s.execute(select(Program.id, Program.iteration, Program.island, Program.parent_id,
                            Program.status, Program.code, Program.score, Evaluation.features)
                     .join(Evaluation, Evaluation.program_id == Program.id)
                     .where(Program.campaign_id == campaign_id)
                     .order_by(Program.id)).all()
    for pid, iteration, island, parent_id, status, code, score, features in rows:
        if status == OK and score is not None and code is not None:
            cell = cells.program_cell(code, features or {}, dims)
            for i in cells.target_islands(parent_id, island, islands):
                archive.offer(i, cell, pid, score, features or {})
        if cells.migration_due(iteration, migration_interval):
            archive.migrate(iteration, force=True)
    return {(i, cells.cell_key(c)): (e.program_id, e.score) for i, c, e in archive.elites()}
