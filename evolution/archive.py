"""MAP-Elites cell math and an in-memory archive of islands.

Cells come from fixed bin edges (`FeatureDim`: `bins` equal bins over [lo, hi]); values outside
are clamped to the first/last bin, and a missing or NaN feature falls in bin 0. Bin edges never
move with the data, so a program's cell never changes and the archive can be rebuilt from
stored rows.

`Archive` keeps, per island, the best program of every filled cell. Replacement is strict: an
equal score keeps the incumbent (first come wins; `rebuild` replays rows in program-id order so
the result does not depend on row order). Every operation costs O(cells), never O(programs).

This module is the one statement of the archive's rules: a program's cell (`program_cell`),
the islands it is offered to (`target_islands`), replace-if-strictly-better (`replaces`), when
migration happens (`migration_due`) and what moves (`migrants`). db/store.py applies the same
functions to the elite table, with replace-if-better as one SQL upsert (`... WHERE score <
new`); tests/evolution/test_archive_sql.py commits random programs through it and checks that
the table equals this archive's result.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from evoforge.evolution.hashing import UNPARSABLE, normalize_code
from evoforge.evolution.types import FeatureDim

Cell = tuple[int, ...]


def bin_index(value: Any, dim: FeatureDim) -> int:
    """The bin of one feature value: clamped to [0, bins-1]; None/NaN/non-numbers -> 0."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return 0
    if math.isnan(v) or dim.bins <= 1 or not dim.hi > dim.lo:
        return 0
    if v <= dim.lo:
        return 0
    if v >= dim.hi:
        return dim.bins - 1
    return min(int((v - dim.lo) / (dim.hi - dim.lo) * dim.bins), dim.bins - 1)


def cell_index(features: Mapping[str, Any], dims: list[FeatureDim]) -> Cell:
    return tuple(bin_index(features.get(d.name), d) for d in dims)


def cell_key(cell: Cell) -> str:
    """A stable string for storage: (3, 5) -> "3,5"."""
    return ",".join(str(int(c)) for c in cell)


def parse_cell_key(key: str) -> Cell:
    return tuple(int(p) for p in key.split(",")) if key else ()


def code_size_feature(code: str) -> float:
    """Program size as the length of its normalised text (comments, docstrings and formatting do
    not count). normalize_code is cached, so the novelty gate and placement share one parse.
    Text that does not parse counts whitespace-separated tokens instead."""
    norm = normalize_code(code)
    if norm.startswith(UNPARSABLE):
        return float(len(code.split()))
    return float(len(norm))


CODE_SIZE = "code_size"


def code_size_dim(lo: float = 0.0, hi: float = 2000.0, bins: int = 10) -> FeatureDim:
    return FeatureDim(CODE_SIZE, lo, hi, bins)


# -- the archive's rules ---------------------------------------------------------------------

def program_cell(code: str, features: Mapping[str, Any], dims: list[FeatureDim]) -> Cell:
    """The cell of an evaluated program: its code size, unless the evaluator reports one, and
    the evaluator's features, binned on the campaign's dims."""
    return cell_index({CODE_SIZE: code_size_feature(code), **features}, dims)


def target_islands(parent_id: int | None, island: int, num_islands: int) -> range:
    """The islands a program is offered to: a program without a parent (the seed) to every
    island, a child only to its own."""
    return range(num_islands) if parent_id is None else range(island, island + 1)


def replaces(score: float, incumbent_score: float | None) -> bool:
    """Replace-if-strictly-better: an equal score keeps the incumbent."""
    return incumbent_score is None or score > incumbent_score


def migration_due(iteration: int, interval: int) -> bool:
    """Migration runs after the commit of every `interval`-th iteration (0: never)."""
    return interval > 0 and iteration > 0 and iteration % interval == 0


def migrants(elites: Iterable[tuple[int, Any, int, float, Any]], num_islands: int
             ) -> list[tuple[int, Any, int, float, Any]]:
    """Ring migration's copies: each island's best elite (ties: lowest program id) goes to the
    same cell of the next island (i -> i+1 mod n). `elites` are (island, cell, program_id,
    score, features) rows; returns (target island, cell, program_id, score, features). The
    bests are all taken before any copy, so one round moves each program one step."""
    if num_islands < 2:
        return []
    best: dict[int, tuple[int, Any, int, float, Any]] = {}
    for row in elites:
        island, _, pid, score, _ = row
        incumbent = best.get(island)
        if incumbent is None or (score, -pid) > (incumbent[3], -incumbent[2]):
            best[island] = row
    return [((island + 1) % num_islands, cell, pid, score, features)
            for island, (_, cell, pid, score, features) in sorted(best.items())]


@dataclass(frozen=True)
class Elite:
    program_id: int
    score: float
    features: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Migration:
    generation: int
    source_island: int
    target_island: int
    cell: Cell
    program_id: int
    score: float


def _better(score: float, incumbent: Elite | None) -> bool:
    return replaces(score, None if incumbent is None else incumbent.score)


def _valid_score(score: Any) -> bool:
    try:
        return not math.isnan(float(score))
    except (TypeError, ValueError):
        return False


class Archive:
    """Islands -> {cell: Elite}, with replace-if-strictly-better and ring migration."""

    def __init__(self, num_islands: int = 1, migration_interval: int = 0,
                 dims: list[FeatureDim] | None = None):
        if num_islands < 1:
            raise ValueError("num_islands must be >= 1")
        self.num_islands = num_islands
        self.migration_interval = migration_interval  # 0 disables migration
        self.dims = list(dims or [])
        self.islands: list[dict[Cell, Elite]] = [{} for _ in range(num_islands)]

    # -- placing programs --------------------------------------------------------------------

    def offer(self, island: int, cell: Cell, program_id: int, score: float,
              features: Mapping[str, float] | None = None) -> bool:
        """Put the program in the cell if it beats the incumbent strictly. None/NaN never do."""
        if not _valid_score(score):
            return False
        grid = self.islands[island]
        cell = tuple(cell)
        if not _better(float(score), grid.get(cell)):
            return False
        grid[cell] = Elite(program_id, float(score), dict(features or {}))
        return True

    def offer_features(self, island: int, features: Mapping[str, float], program_id: int,
                       score: float) -> tuple[bool, Cell]:
        cell = cell_index(features, self.dims)
        return self.offer(island, cell, program_id, score, features), cell

    def get(self, island: int, cell: Cell) -> Elite | None:
        return self.islands[island].get(tuple(cell))

    # -- reading -----------------------------------------------------------------------------

    def elites(self, island: int | None = None) -> list[tuple[int, Cell, Elite]]:
        """(island, cell, elite) for one island or all, sorted by island then cell."""
        islands = range(self.num_islands) if island is None else [island]
        return [(i, c, self.islands[i][c]) for i in islands for c in sorted(self.islands[i])]

    def best(self, island: int | None = None) -> tuple[int, Cell, Elite] | None:
        """The best elite (ties: lowest program id) of one island or of all."""
        entries = self.elites(island)
        if not entries:
            return None
        return max(entries, key=lambda e: (e[2].score, -e[2].program_id))

    def filled(self, island: int | None = None) -> int:
        if island is not None:
            return len(self.islands[island])
        return sum(len(g) for g in self.islands)

    def total_cells(self) -> int | None:
        if not self.dims:
            return None
        n = 1
        for d in self.dims:
            n *= max(d.bins, 1)
        return n

    def stats(self) -> dict[str, Any]:
        total = self.total_cells()
        per_island = []
        for i, grid in enumerate(self.islands):
            best = self.best(i)
            per_island.append({
                "island": i,
                "filled": len(grid),
                "coverage": (len(grid) / total) if total else None,
                "best_score": best[2].score if best else None,
                "best_program_id": best[2].program_id if best else None,
                "mean_score": (sum(e.score for e in grid.values()) / len(grid)) if grid else None,
            })
        best = self.best()
        return {
            "islands": per_island,
            "filled": self.filled(),
            "cells_per_island": total,
            "best_score": best[2].score if best else None,
            "best_program_id": best[2].program_id if best else None,
            "best_island": best[0] if best else None,
        }

    # -- migration ---------------------------------------------------------------------------

    def due_for_migration(self, generation: int) -> bool:
        return self.num_islands > 1 and migration_due(generation, self.migration_interval)

    def migrate(self, generation: int, force: bool = False) -> list[Migration]:
        """Ring migration: every `migration_interval` generations, each island's best elite is
        offered to the same cell of the next island (i -> i+1 mod n), replacing only a worse
        incumbent. The bests are taken before any copy, so one round moves each program one
        step along the ring. Returns the copies that were made."""
        if not (force or self.due_for_migration(generation)) or self.num_islands < 2:
            return []
        rows = [(i, c, e.program_id, e.score, e.features) for i, c, e in self.elites()]
        moved = []
        for target, cell, pid, score, features in migrants(rows, self.num_islands):
            if self.offer(target, cell, pid, score, features):
                source = (target - 1) % self.num_islands
                moved.append(Migration(generation, source, target, cell, pid, score))
        return moved

    # -- persistence -------------------------------------------------------------------------

    @classmethod
    def rebuild(cls, rows: Iterable[Any], num_islands: int | None = None,
                migration_interval: int = 0, dims: list[FeatureDim] | None = None) -> "Archive":
        """Rebuild from stored rows: elite-cell rows or every evaluated program.

        A row is a mapping or an object with `island`, `program_id` (or `id`), `score` and
        either `cell` (a tuple or a "3,5" key) or `features` (then `dims` give the cell).
        Rows are replayed in program-id order, so equal scores resolve as they did live.
        """
        parsed = []
        for row in rows:
            get = (row.get if isinstance(row, Mapping) else
                   lambda k, default=None, _r=row: getattr(_r, k, default))
            pid = get("program_id", None)
            if pid is None:
                pid = get("id", None)
            features = get("features", None) or {}
            cell = get("cell", None)
            if isinstance(cell, str):
                cell = parse_cell_key(cell)
            elif cell is None:
                if dims is None:
                    raise ValueError("row without a cell needs dims")
                cell = cell_index(features, dims)
            parsed.append((int(pid), int(get("island", 0) or 0), tuple(cell),
                           get("score", None), dict(features)))
        n = num_islands or (max((p[1] for p in parsed), default=0) + 1)
        archive = cls(n, migration_interval, dims)
        for pid, island, cell, score, features in sorted(parsed, key=lambda p: p[0]):
            if 0 <= island < n:
                archive.offer(island, cell, pid, score, features)
        return archive
