"""Read-only aggregates for the dashboard pages, cheap with tens of thousands of programs stored.

The campaign page needs, in one round trip: the campaign, its elites, the best score over
evaluations, island stats, failures by status, and token use by model. One narrow read of the
campaign's programs answers all of it (no code, prompts or JSON columns), kept in memory per
campaign and extended with only the new rows on later calls (the live page refetches it as
evaluations arrive).
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from evoforge.api.auth import Principal
from evoforge.api.services import project_campaigns as campaigns_svc
from evoforge.api.services import programs as programs_svc
from evoforge.db.models import Program

MAX_SCATTER_POINTS = 2000
CACHED_CAMPAIGNS = 64


class Aggregates:
    """Running totals over one campaign's programs, extended with only the rows added since the
    last call (programs are never modified once stored). The x axis of the history is the
    evaluation number in commit (id) order. A count check catches rows that committed out of id
    order (possible with concurrent writers): then everything is recomputed."""

    def __init__(self) -> None:
        self.last_id = 0
        self.programs = 0
        self.islands: dict[int, dict[str, Any]] = {}
        self.statuses: dict[str, int] = {}
        self.models: dict[str, dict[str, Any]] = {}
        self.best: float | None = None
        self.best_x: list[int] = []
        self.best_y: list[float] = []
        self.scores: list[tuple[int, float]] = []

    def add(self, rows) -> None:
        for pid, island, status, model, score, ptok, ctok, cost in rows:
            self.programs += 1
            self.last_id = max(self.last_id, pid)
            st = self.islands.setdefault(island, _island(island))
            st["programs"] += 1
            st["ok" if status == "ok" else "failures"] += 1
            status = status or "unknown"
            self.statuses[status] = self.statuses.get(status, 0) + 1
            name = model or "local"
            m = self.models.setdefault(name, {"model": name, "programs": 0, "prompt_tokens": 0,
                                              "completion_tokens": 0, "cost_usd": 0.0})
            m["programs"] += 1
            m["prompt_tokens"] += int(ptok or 0)
            m["completion_tokens"] += int(ctok or 0)
            m["cost_usd"] += float(cost or 0.0)
            if score is None:
                continue
            self.scores.append((self.programs, score))
            if st["best_score"] is None or score > st["best_score"]:
                st["best_score"] = score
            if self.best is None or score > self.best:
                self.best = score
                self.best_x.append(self.programs)
                self.best_y.append(score)


def _island(i: int) -> dict[str, Any]:
    return {"island": i, "programs": 0, "ok": 0, "failures": 0, "best_score": None, "elites": 0}


_COLS = (Program.id, Program.island, Program.status, Program.model, Program.score,
         Program.prompt_tokens, Program.completion_tokens, Program.cost_usd)
_cache: OrderedDict[tuple, Aggregates] = OrderedDict()
_lock = threading.Lock()


def aggregates(s: Session, c) -> Aggregates:
    key = (id(s.get_bind()), c.id, str(c.created_at))
    with _lock:
        agg = _cache.pop(key, None) or Aggregates()
    total = s.scalar(select(func.count()).select_from(Program).where(Program.campaign_id == c.id))
    rows = s.execute(select(*_COLS).where(Program.campaign_id == c.id, Program.id > agg.last_id)
                     .order_by(Program.id)).all()
    if agg.programs + len(rows) != total:          # a row committed behind last_id: start over
        agg = Aggregates()
        rows = s.execute(select(*_COLS).where(Program.campaign_id == c.id).order_by(Program.id)).all()
    agg.add(rows)
    with _lock:
        _cache[key] = agg
        while len(_cache) > CACHED_CAMPAIGNS:
            _cache.popitem(last=False)
    return agg


def score_history(agg: Aggregates) -> dict[str, Any]:
    """The running best score (the points where it improved, plus the latest evaluation), and
    the scored programs as a scatter thinned to at most MAX_SCATTER_POINTS."""
    best_x, best_y = list(agg.best_x), list(agg.best_y)
    if best_x and best_x[-1] != agg.programs:
        best_x.append(agg.programs)   # the flat tail up to the latest evaluation
        best_y.append(best_y[-1])
    stride = max(1, -(-len(agg.scores) // MAX_SCATTER_POINTS))
    sample = agg.scores[::stride]
    return {"best": {"x": best_x, "y": best_y},
            "scores": {"x": [x for x, _ in sample], "y": [y for _, y in sample],
                       "stride": stride, "total": len(agg.scores)},
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
