"""Parent and inspiration sampling over MAP-Elites elites.

The inputs are elites only (one program per filled cell per island), never the full program
history, so the cost grows with the number of filled cells, not with the programs stored.

Parent (one draw, ratios configurable, default 0.7 / 0.2 / 0.1):
- exploitation: fitness-weighted over the island's elites (softmax of min-max normalised score
  with `temperature`; programs without a score are skipped);
- exploration: uniform over the island's filled cells;
- global top: uniform over the best `global_top_k` elites of all islands.
A mode with nothing to draw from falls through to the next that has something.

Inspirations: the island's top-k (parent excluded), then `diverse` draws from other cells and
islands, deduplicated by program id and by normalised-code hash, never the parent.

Inputs are sorted by program id first, so the same rng gives the same choice whatever order a
database returned the rows in.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

from evoforge.evolution.hashing import normalized_hash
from evoforge.evolution.step import Selection
from evoforge.evolution.types import ProgramRef


@dataclass(frozen=True)
class SelectionConfig:
    exploit: float = 0.7
    explore: float = 0.2
    top: float = 0.1
    temperature: float = 0.25     # softmax temperature on scores normalised to [0, 1]
    global_top_k: int = 3
    top_k: int = 3                # island top programs shown as inspirations
    diverse: int = 2              # inspirations drawn from other cells / islands

    def __post_init__(self) -> None:
        ratios = (self.exploit, self.explore, self.top)
        if any(r < 0 for r in ratios) or sum(ratios) <= 0:
            raise ValueError("selection ratios must be >= 0 and not all 0")
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0")


def _scored(refs: list[ProgramRef]) -> list[ProgramRef]:
    return [r for r in refs if r.score is not None and not math.isnan(r.score)]


def _by_score(refs: list[ProgramRef]) -> list[ProgramRef]:
    return sorted(_scored(refs), key=lambda r: (-r.score, r.id))


def _dedupe_ids(refs: list[ProgramRef]) -> list[ProgramRef]:
    seen, out = set(), []
    for r in sorted(refs, key=lambda r: (r.id, r.island)):
        if r.id not in seen:
            seen.add(r.id)
            out.append(r)
    return out


def fitness_weighted(refs: list[ProgramRef], rng: random.Random,
                     temperature: float = 0.25) -> ProgramRef | None:
    scored = _scored(refs)
    if not scored:
        return None
    lo = min(r.score for r in scored)
    hi = max(r.score for r in scored)
    span = hi - lo
    if span <= 0 or not math.isfinite(span):
        return rng.choice(scored)
    weights = [math.exp(((r.score - lo) / span - 1.0) / temperature) for r in scored]
    return rng.choices(scored, weights)[0]


def select_parent(island_elites: list[ProgramRef], all_elites: list[ProgramRef],
                  rng: random.Random, config: SelectionConfig = SelectionConfig()
                  ) -> tuple[ProgramRef | None, str]:
    """(parent, mode) where mode is "exploit", "explore", "top" or "none"."""
    island = sorted(island_elites, key=lambda r: r.id)
    everyone = _dedupe_ids(list(all_elites) + island)
    roll = rng.random() * (config.exploit + config.explore + config.top)
    if roll < config.exploit:
        order = ("exploit", "explore", "top")
    elif roll < config.exploit + config.explore:
        order = ("explore", "exploit", "top")
    else:
        order = ("top", "exploit", "explore")
    for mode in order:
        if mode == "exploit":
            parent = fitness_weighted(island, rng, config.temperature)
        elif mode == "explore":
            parent = rng.choice(island) if island else None
        else:
            best = _by_score(everyone)[:max(config.global_top_k, 1)]
            parent = rng.choice(best) if best else None
        if parent is not None:
            return parent, mode
    # nothing scored anywhere: any program at all (e.g. only failed seeds)
    if everyone:
        return rng.choice(everyone), "explore"
    return None, "none"


def select_inspirations(parent: ProgramRef | None, island_elites: list[ProgramRef],
                        all_elites: list[ProgramRef], rng: random.Random,
                        config: SelectionConfig = SelectionConfig()
                        ) -> tuple[list[ProgramRef], list[ProgramRef]]:
    """(inspirations, island top). Inspirations = island top-k + `diverse` others, deduplicated."""
    seen_ids = {parent.id} if parent is not None else set()
    seen_code = {normalized_hash(parent.code)} if parent is not None else set()

    def fresh(ref: ProgramRef) -> bool:
        if ref.id in seen_ids:
            return False
        h = normalized_hash(ref.code)
        if h in seen_code:
            return False
        seen_ids.add(ref.id)
        seen_code.add(h)
        return True

    top_all = _by_score(island_elites)
    top = [r for r in top_all if r.id != (parent.id if parent else None)][:config.top_k]
    chosen = [r for r in top if fresh(r)]
    # one elite per cell and island: every elite but the parent lies in another cell or island
    pool = _dedupe_ids(list(all_elites) + list(island_elites))
    rng.shuffle(pool)
    extra = 0
    for ref in pool:
        if extra >= config.diverse:
            break
        if fresh(ref):
            chosen.append(ref)
            extra += 1
    return chosen, top


def choose(island: int, island_elites: list[ProgramRef], all_elites: list[ProgramRef],
           rng: random.Random, config: SelectionConfig = SelectionConfig(),
           meta_note: str = "") -> Selection:
    """A full `Selection` for the step: parent, inspirations and the island's top programs."""
    parent, _ = select_parent(island_elites, all_elites, rng, config)
    inspirations, top = select_inspirations(parent, island_elites, all_elites, rng, config)
    return Selection(island=island, parent=parent, inspirations=inspirations, top=top,
                     meta_note=meta_note)
