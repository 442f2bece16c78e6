"""The query shapes of a campaign's program listing: every page an index range scan.

A sort is read as segments, each one ORDER BY that an index of migration 0007 holds as it is
(db/models.py): `score` is the scored programs best first (ties: oldest first), then the
unscored ones oldest first; `-score` the scored ones worst first (ties: newest first), then the
unscored ones oldest first; `iteration` / `-iteration` one segment. Splitting on NULL is what
lets one index serve both databases, which keep NULLs at opposite ends of a DESC index, and
both directions of the score sort.

Keyset pagination (`after`): a cursor names the last item of a page (`s:<id>:<score>`,
`n:<id>`, `i:<iteration>`), and the next page starts right after it with range conditions on
the index's columns, so page 20,000 costs what page 1 costs. `offset` still works: it skips
whole segments by their cached counts, then rows, and costs as many index entries as it
skips (a deferred join: `_deferred`).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from functools import lru_cache

from sqlalchemy import Integer, bindparam, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from evoforge.db.models import Program

SORTS = ("score", "-score", "iteration", "-iteration")
CURSOR_PATTERN = r"^[sni]:[0-9]{1,19}(:[-+0-9.eEinf]{1,32})?$"
_CURSOR = re.compile(CURSOR_PATTERN)
MAX_ID = 2**31 - 1   # ids and iterations are INTEGER columns (api/schemas.py MAX_ID)


class BadCursor(ValueError):
    """An `after` that this service did not hand out for this sort."""


@dataclass(frozen=True)
class Part:
    """One range of the listing: extra conditions and the ORDER BY an index serves."""
    where: tuple
    order: tuple


@dataclass(frozen=True)
class Cursor:
    kind: str                 # s: a scored program, n: an unscored one, i: an iteration
    key: int                  # the program id (s, n) or the iteration (i)
    score: float | None = None


def _scored_order(sort: str) -> tuple:
    if sort == "score":
        return (Program.score.desc(), Program.id.asc())
    return (Program.score.asc(), Program.id.desc())   # the index read backwards


_UNSCORED_ORDER = (Program.score.desc(), Program.id.asc())


def segments(sort: str) -> tuple[Part, ...]:
    """The sort as its segments, in order (see the module doc)."""
    if sort not in SORTS:
        raise BadCursor(f"unknown sort {sort!r}")
    return _segments(sort)


@lru_cache(maxsize=None)
def _segments(sort: str) -> tuple[Part, ...]:
    if sort == "iteration":
        return (Part((), (Program.iteration.asc(),)),)
    if sort == "-iteration":
        return (Part((), (Program.iteration.desc(),)),)
    return (Part((Program.score.is_not(None),), _scored_order(sort)),
            Part((Program.score.is_(None),), _UNSCORED_ORDER))


def parse_cursor(sort: str, after: str) -> Cursor:
    """A cursor of `cursor_of` for this sort, or BadCursor (never a database error)."""
    if not isinstance(after, str) or len(after) > 64 or not _CURSOR.match(after):
        raise BadCursor("after: not a cursor this listing handed out")
    kind, key, *rest = after.split(":")
    number = int(key)
    if number > MAX_ID:
        raise BadCursor("after: out of range")
    by_iteration = sort in ("iteration", "-iteration")
    if by_iteration != (kind == "i") or (kind == "s") != bool(rest):
        raise BadCursor(f"after: a cursor of another sort than {sort!r}")
    if kind != "s":
        return Cursor(kind, number)
    try:
        score = float(rest[0])
    except ValueError:
        raise BadCursor("after: not a number") from None
    if math.isnan(score):
        raise BadCursor("after: not a number")
    return Cursor(kind, number, score)


def cursor_of(sort: str, row: Any) -> str:
    """The cursor that continues the listing right after `row` (a summary row)."""
    if sort in ("iteration", "-iteration"):
        return f"i:{row.iteration}"
    if row.score is None:
        return f"n:{row.id}"
    return f"s:{row.id}:{row.score!r}"


def parts(sort: str, cursor: Cursor) -> tuple[tuple[Part, ...], dict[str, Any]]:
    """What is left of the listing after `cursor`: each part a range of one index; and the
    cursor's values, the parameters of the parts' conditions."""
    return _parts(sort, cursor.kind), {"after_key": cursor.key, "after_score": cursor.score}


@lru_cache(maxsize=None)
def _parts(sort: str, kind: str) -> tuple[Part, ...]:
    P, key, s = Program, bindparam("after_key"), bindparam("after_score")
    if kind == "i":
        after = P.iteration > key if sort == "iteration" else P.iteration < key
        return (Part((after,), segments(sort)[0].order),)
    unscored = segments(sort)[1]
    if kind == "n":
        return (Part(unscored.where + (P.id > key,), unscored.order),)
    order = _scored_order(sort)
    if sort == "score":   # ties oldest first, then lower scores
        ties, rest = P.id > key, P.score < s
    else:                 # ties newest first, then higher scores
        ties, rest = P.id < key, P.score > s
    return (Part((P.score == s, ties), order), Part((rest,), order), unscored)


def fetch(s: Session | Connection, columns: tuple, where: tuple, params: dict[str, Any],
          sort: str, counts: tuple[int, int], limit: int, offset: int,
          todo: tuple[Part, ...] | None) -> list[Any]:
    """Up to `limit` rows: from the parts after a cursor (`todo`), or from the sort's segments
    after skipping `offset` rows (whole segments by their counts: (scored, unscored)).
    `where` and the parts hold bound parameters, `params` their values: the statements are
    built once per shape (`_statement`), not per request."""
    if todo is None:
        todo = segments(sort)
        sizes = [sum(counts)] if len(todo) == 1 else list(counts)
        while len(todo) > 1 and offset >= sizes[0]:
            offset -= sizes.pop(0)
            todo = todo[1:]
    rows: list[Any] = []
    for part in todo:
        q = _statement(columns, where, part, sort, deferred=bool(offset))
        rows += s.execute(q, {**params, "page_limit": limit - len(rows),
                              "page_offset": offset}).all()
        offset = 0
        if len(rows) >= limit:
            break
    return rows


# (columns, where, part, sort, deferred) -> statement. Keyed by the ids of the caller's
# module-level column and condition tuples and of the cached parts, which all live as long as
# the process: a few dozen shapes. A statement built per request cost a fifth of a page's CPU
# (the expressions, then SQLAlchemy's cache key and result map for a new statement object).
_STATEMENTS: dict[tuple, Any] = {}


def _statement(columns: tuple, where: tuple, part: Part, sort: str, deferred: bool) -> Any:
    key = (id(columns), id(where), id(part), sort, deferred)
    q = _STATEMENTS.get(key)
    if q is None:
        limit = bindparam("page_limit", type_=Integer)
        offset = bindparam("page_offset", type_=Integer)
        if deferred:
            q = _deferred(columns, where, part, sort, limit, offset)
        else:
            q = select(*columns).where(*where, *part.where).order_by(*part.order).limit(limit)
        _STATEMENTS[key] = q
    return q


def _deferred(columns: tuple, where: tuple, part: Part, sort: str, limit: Any,
              offset: Any) -> Any:
    """A page past `offset` rows as a deferred join: the rows are skipped in a subquery that
    reads only the index's own columns (an index-only scan: no table row fetched for a skipped
    one), then the page's rows alone are read by key. At offset 90,000 of a million-program
    campaign on PostgreSQL: 17 ms instead of 206 (docs/benchmarks.md). The key is what the
    sort's index holds besides the campaign: the id for the score sorts, the iteration for the
    iteration sorts (unique per campaign); the order is the same total order either way."""
    key = Program.iteration if sort in ("iteration", "-iteration") else Program.id
    keys = (select(key.label("k")).where(*where, *part.where).order_by(*part.order)
            .limit(limit).offset(offset).subquery())
    return (select(*columns).select_from(Program).join(keys, key == keys.c.k)
            .where(*where).order_by(*part.order))
