"""Best known ranks of <n,m,p> for n, m, p in 1..5, per field (data and sources: best_ranks.json)."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

DATA_FILE = Path(__file__).parent / "best_ranks.json"


@lru_cache(maxsize=1)
def load_table() -> dict[str, Any]:
    return json.loads(DATA_FILE.read_text())


@lru_cache(maxsize=1)
def _index() -> dict[tuple[int, int, int], dict[str, Any]]:
    return {tuple(row["shape"]): row for row in load_table()["ranks"]}


def best_known_entry(n: int, m: int, p: int) -> dict[str, Any]:
    try:
        return _index()[(n, m, p)]
    except KeyError:
        raise KeyError(f"no best-known rank stored for <{n},{m},{p}>") from None


def best_known_rank(n: int, m: int, p: int, field: str) -> int:
    return int(best_known_entry(n, m, p)[field])
