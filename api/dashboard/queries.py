"""Read-only aggregates for the dashboard pages, cheap with a million programs stored.

The campaign page needs, in one round trip: the campaign, its elites, the best score over
evaluations, island stats, failures by status, and token use by model. None of it reads the
programs into Python one by one (that took 5-6 s per campaign at a million programs, and kept
every score in memory): the database aggregates, and the process keeps per campaign only
totals and a few thousand points, extended on later calls with the rows added since (the live
page refetches as evaluations arrive). Per call, over the ids not yet seen:

- one GROUP BY island, status, model: counts, tokens, cost, best score, first and last id;
- one GROUP BY id bucket (`width` ids, a power of two, at most MAX_SCATTER_POINTS buckets across
  the campaign's ids): count, best score and first id of each bucket, from the (campaign, score,
  id) index alone. Its counts place every bucket on the x axis (the evaluation number, in
  commit/id order); the scatter is each bucket's first program, at exactly its x, when scored;
- the running best changes only inside buckets whose best beats every earlier bucket: only
  those buckets' rows are read, so the history keeps exactly the improvements.

Programs are never modified once stored, but a row can commit behind ids already read (two
writers): a count of the campaign's rows catches that, and everything is recomputed.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from sqlalchemy import func, literal_column, or_, select
from sqlalchemy.orm import Session

from evoforge.api.auth import Principal
from evoforge.api.services import project_campaigns as campaigns_svc
from evoforge.api.services import programs as programs_svc
from evoforge.db.models import Program

MAX_SCATTER_POINTS = 2000
CACHED_CAMPAIGNS = 64
_ATTEMPTS = 3            # reads that raced a late commit are redone, from scratch, this often
_IDS_PER_QUERY = 500     # ids in one IN list (SQLite's old limit is 999 variables)
_RANGES_PER_QUERY = 50   # id ranges OR-ed in one read of the record buckets
_INT_MIN = -2 ** 31      # below every iteration (a 32-bit integer)


class Aggregates:
    """Totals over one campaign's programs with ids up to `seen` (a table-wide id: the next call
    reads only ids above it), and the running best and the scatter, both bounded by the page
    they draw: `best_x`/`best_y` hold only improvements, `scatter` at most MAX_SCATTER_POINTS
    buckets (bucket -> the x and score of its first program)."""

    def __init__(self) -> None:
        self.seen = 0
        self.first_id: int | None = None
        self.last_id = 0
        self.programs = 0
        self.scored = 0
        self.islands: dict[int, dict[str, Any]] = {}
        self.statuses: dict[str, int] = {}
        self.models: dict[str, dict[str, Any]] = {}
        self.best: float | None = None
        self.best_x: list[int] = []
        self.best_y: list[float] = []
        self.width = 1
        self.scatter: dict[int, tuple[int, float | None]] = {}

    def add_groups(self, groups) -> int:
        """Merge one GROUP BY island, status, model; return how many programs it counted."""
        added = 0
        for island, status, model, n, scored, best, ptok, ctok, cost, lo, hi in groups:
            added += n
            self.programs += n
            self.scored += scored
            self.first_id = lo if self.first_id is None else min(self.first_id, lo)
            self.last_id = max(self.last_id, hi)
            st = self.islands.setdefault(island, _island(island))
            st["programs"] += n
            st["ok" if status == "ok" else "failures"] += n
            if best is not None and (st["best_score"] is None or best > st["best_score"]):
                st["best_score"] = best
            status = status or "unknown"
            self.statuses[status] = self.statuses.get(status, 0) + n
            name = model or "local"
            m = self.models.setdefault(name, {"model": name, "programs": 0, "prompt_tokens": 0,
                                              "completion_tokens": 0, "cost_usd": 0.0})
            m["programs"] += n
            m["prompt_tokens"] += int(ptok or 0)
            m["completion_tokens"] += int(ctok or 0)
            m["cost_usd"] += float(cost or 0.0)
        return added

    def widen(self) -> None:
        """Double the bucket width until the campaign's ids span at most MAX_SCATTER_POINTS
        buckets, merging the scatter's buckets pairwise (the first program of the pair stays)."""
        if self.first_id is None:
            return
        width = self.width
        while self.last_id // width - self.first_id // width + 1 > MAX_SCATTER_POINTS:
            width *= 2
        if width != self.width:
            factor, merged = width // self.width, {}
            for b in sorted(self.scatter):
                merged.setdefault(b // factor, self.scatter[b])
            self.width, self.scatter = width, merged


def _island(i: int) -> dict[str, Any]:
    return {"island": i, "programs": 0, "ok": 0, "failures": 0, "best_score": None, "elites": 0}


_cache: OrderedDict[tuple, Aggregates] = OrderedDict()
_lock = threading.Lock()


def aggregates(s: Session, c) -> Aggregates:
    """The campaign's aggregates: the cached ones extended with the rows added since, or, the
    first time (or after a late commit), computed over all its rows."""
    key = (id(s.get_bind()), c.id, str(c.created_at))
    with _lock:
        agg = _cache.pop(key, None)
    for _ in range(_ATTEMPTS):
        agg = agg or Aggregates()
        warm = agg.seen > 0
        hi = s.scalar(select(func.max(Program.id))) or 0
        ok = _extend(s, c, agg, hi) if hi > agg.seen else True
        if ok and warm:     # a row committed behind `seen` since the last call: start over
            ok = s.scalar(select(func.count()).select_from(Program).where(
                Program.campaign_id == c.id, Program.id + 0 <= hi)) == agg.programs
        if ok:
            with _lock:
                _cache[key] = agg
                while len(_cache) > CACHED_CAMPAIGNS:
                    _cache.popitem(last=False)
            return agg
        agg = None
    # Commits kept racing these reads: one more, not cached (the next call starts over).
    agg = Aggregates()
    _extend(s, c, agg, s.scalar(select(func.max(Program.id))) or 0)
    return agg


def _extend(s: Session, c, agg: Aggregates, hi: int) -> bool:
    """Add the campaign's programs with `agg.seen` < id <= `hi`; False when the reads disagree
    (a row committed between them): `agg` is then to be thrown away."""
    # The first read walks the campaign's rows (on SQLite through its (campaign, iteration)
    # index: in about id order, so the table is read nearly in sequence, where the other
    # campaign indexes would jump around it), later ones the id range (the rows since the last
    # call, of every campaign). `+ 0` hides a column from the planner: SQLite's would walk the
    # whole table by id for a small campaign's first read, or the big campaign's index for a
    # few new rows.
    if agg.seen == 0:
        where = (Program.campaign_id == c.id, Program.iteration >= _INT_MIN, Program.id + 0 <= hi)
    else:
        where = (Program.campaign_id + 0 == c.id, Program.id > agg.seen, Program.id <= hi)
    lo, offset = agg.seen, agg.programs
    added = agg.add_groups(s.execute(
        select(Program.island, Program.status, Program.model, func.count(), func.count(Program.score),
               func.max(Program.score), func.sum(Program.prompt_tokens), func.sum(Program.completion_tokens),
               func.sum(Program.cost_usd), func.min(Program.id), func.max(Program.id))
        .where(*where).group_by(Program.island, Program.status, Program.model)).all())
    if not added:
        agg.seen = hi
        return True
    agg.widen()
    w = agg.width
    # Integer division. The subquery (kept apart by its OFFSET) hides from PostgreSQL's planner
    # that the buckets come from `id`, so it expects few groups and hashes them, instead of
    # expecting a group per id and sorting a million rows (twice as long).
    rows = (select(Program.id.op("/")(literal_column(str(w))).label("b"), Program.score, Program.id)
            .where(*where).offset(0).subquery())
    buckets = sorted(s.execute(select(rows.c.b, func.count(), func.max(rows.c.score), func.min(rows.c.id))
                               .group_by(rows.c.b)).tuples().all())
    if sum(n for _, n, _, _ in buckets) != added:
        return False
    firsts: dict[int, tuple[int, int]] = {}      # new bucket -> (its first id, its x)
    records: list[tuple[int, int, int, float]] = []   # bucket, its x offset, its size, its best
    running = agg.best
    for b, n, top, first in buckets:
        if b not in agg.scatter:
            if n == 1:                           # one program: its score is the bucket's best
                agg.scatter[b] = (offset + 1, top)
            else:
                firsts[b] = (first, offset + 1)
        if top is not None and (running is None or top > running):
            records.append((b, offset, n, top))
            running = top
        offset += n
    scores = _scores(s, c, [first for first, _ in firsts.values()])
    if len(scores) != len(firsts):
        return False
    for b, (first, x) in firsts.items():
        agg.scatter[b] = (x, scores[first])
    if not _improvements(s, c, agg, records, lo, hi):
        return False
    agg.seen = hi
    return True


def _scores(s: Session, c, ids: list[int]) -> dict[int, float | None]:
    out: dict[int, float | None] = {}
    for i in range(0, len(ids), _IDS_PER_QUERY):
        out.update(s.execute(select(Program.id, Program.score).where(
            Program.campaign_id + 0 == c.id, Program.id.in_(ids[i:i + _IDS_PER_QUERY]))).tuples().all())
    return out


def _improvements(s: Session, c, agg: Aggregates, records: list[tuple[int, int, int, float]],
                  lo: int, hi: int) -> bool:
    """Walk the rows of the buckets whose best beats every earlier one, in id order, appending
    each improvement of the running best at its evaluation number. (A campaign whose every
    bucket improves, scores rising without a pause, has all its rows read, as before.)"""
    w = agg.width
    for i in range(0, len(records), _RANGES_PER_QUERY):
        chunk = records[i:i + _RANGES_PER_QUERY]
        ranges = [Program.id.between(max(b * w, lo + 1), min(b * w + w - 1, hi))
                  for b, _, n, _ in chunk if n > 1]
        rows = s.execute(select(Program.score).where(Program.campaign_id + 0 == c.id, or_(*ranges))
                         .order_by(Program.id)).scalars().all() if ranges else []
        if len(rows) != sum(n for _, _, n, _ in chunk if n > 1):
            return False
        k = 0
        for _, offset, n, top in chunk:
            scores = rows[k:k + n] if n > 1 else [top]
            k += n if n > 1 else 0
            for pos, score in enumerate(scores):
                if score is not None and (agg.best is None or score > agg.best):
                    agg.best = score
                    agg.best_x.append(offset + pos + 1)
                    agg.best_y.append(score)
    return True


def score_history(agg: Aggregates) -> dict[str, Any]:
    """The running best score (the points where it improved, plus the latest evaluation), and
    the scored programs as a scatter thinned to at most MAX_SCATTER_POINTS: the first program of
    every `stride` ids (a bucket), at its evaluation number, when it has a score."""
    best_x, best_y = list(agg.best_x), list(agg.best_y)
    if best_x and best_x[-1] != agg.programs:
        best_x.append(agg.programs)   # the flat tail up to the latest evaluation
        best_y.append(best_y[-1])
    sample = [agg.scatter[b] for b in sorted(agg.scatter) if agg.scatter[b][1] is not None]
    return {"best": {"x": best_x, "y": best_y},
            "scores": {"x": [x for x, _ in sample], "y": [y for _, y in sample],
                       "stride": agg.width, "total": agg.scored},
            "programs": agg.programs}


def breakdown(agg: Aggregates, islands: int) -> dict[str, Any]:
    """Island stats, programs by evaluation status, and tokens/cost by model."""
    isl = {i: _island(i) for i in range(islands)}
    isl.update({k: dict(v) for k, v in agg.islands.items()})
    return {"islands": [isl[k] for k in sorted(isl)],
            "statuses": dict(sorted(agg.statuses.items(), key=lambda kv: -kv[1])),
            "models": [dict(m) for m in sorted(agg.models.values(), key=lambda m: -m["programs"])]}


def campaign_overview(s: Session, principal: Principal, campaign_id: int) -> dict[str, Any]:
    c = campaigns_svc.get_campaign(s, principal, campaign_id)  # 404 if not the caller's
    campaign = campaigns_svc.public(c)
    elites = programs_svc.elites(s, principal, campaign_id)
    agg = aggregates(s, c)
    parts = breakdown(agg, c.islands)
    for island in elites["islands"]:
        i = island["island"]
        if i < len(parts["islands"]) and parts["islands"][i]["island"] == i:
            parts["islands"][i]["elites"] = len(island["cells"])
    return {"campaign": campaign, "elites": elites, "history": score_history(agg), **parts}


def program_page(s: Session, principal: Principal, program_id: int, *, depth: int = 50) -> dict[str, Any]:
    """The program (as GET /api/v1/programs/{id}), its lineage, and highlighted code and diff."""
    from evoforge.api.dashboard.highlight import highlight_diff, highlight_python

    program = programs_svc.program_detail(s, principal, program_id)
    lineage = programs_svc.lineage(s, principal, program_id, depth=depth)
    c = campaigns_svc.get_campaign(s, principal, program["campaign_id"])
    return {"program": program, "lineage": lineage,
            "campaign": {"id": c.id, "name": c.name, "task": c.task, "status": c.status,
                         "best_score": c.best_score, "best_program_id": c.best_program_id},
            "code_html": highlight_python(program["code"]),
            "diff_html": highlight_diff(program["diff"])}


def problem_page(sessions, principal: Principal, problem_id: str) -> dict[str, Any]:
    """The problem (as GET /api/v1/problems/{id}) and its config as highlighted YAML and JSON."""
    from evoforge.api.dashboard.highlight import highlight_config
    from evoforge.api.services import problems as problems_svc

    problem = problems_svc.detail(sessions, principal, problem_id)   # 404 if not the caller's
    return {"problem": problem, "config_html": highlight_config(problem["config"])}


def problem_file(sessions, principal: Principal, problem_id: str, path: str) -> dict[str, Any]:
    """One file of the problem (as GET /api/v1/problems/{id}/files/{path}), highlighted by the
    lexer its name implies, without its raw text (the page shows the HTML)."""
    from evoforge.api.dashboard.highlight import highlight_file
    from evoforge.api.services import problems as problems_svc

    f = problems_svc.read_file(sessions, principal, problem_id, path)
    html, language = highlight_file(f["path"], f["text"])
    return {"path": f["path"], "bytes": f["bytes"], "lines": len(f["text"].splitlines()),
            "language": language, "html": html}
