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

from evoforge.db import blobs
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


REBUILD_BATCH = 5000
MAX_CACHED_SIZES = 200_000


def rebuild(s: Session, campaign_id: int, islands: int, dims: list[FeatureDim],
            migration_interval: int) -> dict[tuple[int, str], tuple[int, float]]:
    """Recompute every elite cell from the stored programs and evaluations alone, replaying
    them in commit order through evolution/archive.py, the rules the commit applies in SQL
    (exact for campaigns run with one worker; with several, commit order is the program id
    order). Returns {(island, cell key): (program_id, score)}.

    At a million programs: streamed in keyset batches of program ids (memory stays flat), and a
    program's code is read and measured (`archive.code_size_feature`, a parse: the cost of a
    rebuild) only when its size can matter: when some cell it could fall in, on an island it is
    offered to, is empty or held by a lower score. Replace-if-strictly-better makes skipping the
    others exact. A program whose code is no longer stored (pruned, then collected) cannot be
    placed: its size is unknown."""
    archive = cells.Archive(islands)
    sizes = _CodeSizes(s)
    last = 0
    while True:
        rows = s.execute(select(Program.id, Program.iteration, Program.island, Program.parent_id,
                                Program.status, Program.code_hash, Program.score,
                                Evaluation.features)
                         .join(Evaluation, Evaluation.program_id == Program.id)
                         .where(Program.campaign_id == campaign_id, Program.id > last)
                         .order_by(Program.id).limit(REBUILD_BATCH)).all()
        if not rows:
            break
        last = rows[-1][0]
        placeable = [(r, _targets(r, islands)) for r in rows
                     if r.status == OK and r.score is not None and r.code_hash]
        # Codes of the programs that can win against the archive as it is now (it only gets
        # harder to win later in the batch), read in one go; measured below only when needed.
        sizes.prefetch(r.code_hash for r, targets in placeable
                       if _may_place(archive, r, targets, dims))
        for pid, iteration, island, parent_id, status, chash, score, features in rows:
            features = features or {}
            if status == OK and score is not None and chash:
                targets = cells.target_islands(parent_id, island, islands)
                size = features.get(cells.CODE_SIZE)
                if size is None and _may_place(archive, _Scored(score, features), targets, dims):
                    size = sizes.get(chash)
                if size is not None:
                    cell = cells.cell_index({cells.CODE_SIZE: size, **features}, dims)
                    for i in targets:
                        archive.offer(i, cell, pid, score, features)
            if cells.migration_due(iteration, migration_interval):
                archive.migrate(iteration, force=True)
    return {(i, cells.cell_key(c)): (e.program_id, e.score) for i, c, e in archive.elites()}


class _Scored:
    """The two fields `_may_place` reads, for a row already unpacked."""
    __slots__ = ("score", "features")

    def __init__(self, score: float, features: dict):
        self.score, self.features = score, features


def _targets(row: Any, islands: int) -> range:
    return cells.target_islands(row.parent_id, row.island, islands)


def _may_place(archive: cells.Archive, row: Any, targets: range, dims: list[FeatureDim]) -> bool:
    """Whether the program could take a cell whatever its code size: some cell of its other
    features' bins, along the code-size axis, on one of its target islands, is empty or held by
    a lower score. True when its features give its code size (then its cell is known)."""
    features = row.features or {}
    axis = next((k for k, d in enumerate(dims) if d.name == cells.CODE_SIZE), None)
    if axis is None or cells.CODE_SIZE in features:
        return True
    cell = list(cells.cell_index({cells.CODE_SIZE: None, **features}, dims))
    for b in range(max(dims[axis].bins, 1)):
        cell[axis] = b
        for i in targets:
            held = archive.get(i, tuple(cell))
            if held is None or row.score > held.score:
                return True
    return False


class _CodeSizes:
    """code_size_feature per code hash, from the code blobs (db/blobs.py), each parsed once;
    at most MAX_CACHED_SIZES kept."""

    def __init__(self, s: Session):
        self.s = s
        self.codes: dict[str, str] = {}
        self.sizes: dict[str, float | None] = {}

    def prefetch(self, hashes) -> None:
        want = {h for h in hashes if h not in self.sizes and h not in self.codes}
        self.codes = {h: c for h, c in self.codes.items() if h not in self.sizes}
        if want:
            self.codes.update(blobs.get_codes(self.s, want))

    def get(self, chash: str) -> float | None:
        if chash not in self.sizes:
            code = self.codes.pop(chash, None)
            if code is None:
                code = blobs.get_codes(self.s, [chash]).get(chash)
            if len(self.sizes) >= MAX_CACHED_SIZES:
                self.sizes.clear()
            self.sizes[chash] = None if code is None else cells.code_size_feature(code)
        return self.sizes[chash]
