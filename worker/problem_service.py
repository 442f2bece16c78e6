"""Stored problems: a user's problem directory kept once per project and content, and the
campaigns that run it. One meaning for the REST API (api/services/problems.py), the Python API
and the CLI.

- `store_problem` keeps an `evaluators.openevolve.package.ProblemPackage` for a project. Its
  digest is its id: the same content uploaded again finds the same row (the unique index on
  (project, digest) settles two uploads racing each other). Before anything is stored the
  package is mapped as a campaign would map it (`map_problem`), so an evaluator without
  `evaluate()` is refused at upload, not at its first campaign.
- `spec_for_campaign` turns `{"problem": ID, ...}` into the `openevolve` task's spec: the
  problem's config gives the defaults, the fields the request sets (`model_fields_set`, at every
  level) override them. Its params carry `problem=<digest>` and `files={}`: a campaign row never
  holds the files, the worker reads them from the problem row (`problem_files`, called by
  worker/runtime.py), and the evaluation cache key (task_key over the params) follows the content.
- The config's `llm.api_base` is not a URL anyone but the operator may send to: a campaign made
  here uses it only when the caller says it is the operator's (`config_url=True`, the local
  Python API); otherwise, without a mutator in the request, the local mutator runs.
- A problem's requirements are checked in the sandbox the campaign will use
  (worker/requirements.py) at upload and at campaign creation; missing ones refuse it.
- A problem that a campaign uses cannot be deleted (`ProblemInUse`; the foreign key is RESTRICT).

Whose problems a call sees is the campaign service's `Scope`; another project's problem is
`ProblemNotFound`, like one that does not exist.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from evoforge.db.campaign_config import CampaignSpec
from evoforge.db.models import Campaign, Problem
from evoforge.worker.campaign_service import Scope, SpecError, _without_input

if TYPE_CHECKING:
    from evoforge.evaluators.openevolve.package import ProblemPackage

__all__ = ["ProblemNotFound", "ProblemInUse", "MissingRequirements", "Stored", "ProblemCampaign",
           "store_problem", "get_problem", "list_problems", "delete_problem", "package_of",
           "spec_for_campaign", "problem_files", "check_requirements", "describe", "file_listing",
           "campaign_count"]

REST_URL_NOTE = ("llm.api_base is not used by campaigns created over REST (LLM endpoints are the "
                 "operator's): give mutator.endpoint, else the local mutator runs")
DEFAULT_ITERATIONS = 100  # as `evoforge openevolve`


class ProblemNotFound(LookupError):
    """No such problem in the caller's scope."""


class ProblemInUse(Exception):
    """A campaign runs the problem: it cannot be deleted."""


class MissingRequirements(SpecError):
    """The problem's requirements do not import in the sandbox the campaign would use."""

    def __init__(self, missing: list[str], sandbox: str):
        self.missing, self.sandbox = missing, sandbox
        where, how = _HOW_TO.get(sandbox, _HOW_TO["fork"])
        super().__init__(f"missing in the {sandbox} sandbox's {where}: {', '.join(missing)} ({how})")


_HOW_TO = {
    "fork": ("Python", "install it into the server's venv, or use sandbox=docker with an image "
                       "that has it"),
    "subprocess": ("Python", "install it into the server's and the workers' venv, or use "
                             "sandbox=docker with an image that has it"),
    "docker": ("image", "build an image that has it and name it in EVOFORGE_SANDBOX_IMAGE, or "
                        "EVOFORGE_SANDBOX_IMAGES=openevolve=IMAGE"),
}


def sandbox_kind(requested: str) -> str:
    """The sandbox a campaign asking for `requested` runs in (worker/runtime.py's choice)."""
    return os.environ.get("EVOFORGE_SANDBOX") or requested


def check_requirements(requirements: list[str], sandbox: str) -> None:
    """MissingRequirements unless every requirement imports in `sandbox` (may take a second:
    call it off an event loop)."""
    if not requirements:
        return
    from evoforge.worker.requirements import check_requirements as missing_in

    kind = sandbox_kind(sandbox)
    missing = missing_in(list(requirements), kind)
    if missing:
        raise MissingRequirements(missing, kind)


# -- store -------------------------------------------------------------------------------------
def _scoped(q, scope: Scope):
    if scope.everything:
        return q
    if scope.project_id is None:
        return q.where(Problem.project_id.is_(None))
    return q.where(Problem.project_id == scope.project_id)


def _find(s: Session, project_id: int | None, digest: str) -> Problem | None:
    return s.scalar(_scoped(select(Problem).where(Problem.digest == digest), Scope(project_id)))


@dataclass(frozen=True)
class Stored:
    problem: Problem
    created: bool  # False: the same content was stored already (this is that row)


def store_problem(sessions: sessionmaker[Session], pkg: "ProblemPackage", *,
                  project_id: int | None = None, name: str = "",
                  sandbox: str | None = "fork") -> Stored:
    """Keep `pkg` for the project, or find the row of the same content. SpecError when it cannot
    run (no evaluate(), a config it cannot map) or, with `sandbox`, MissingRequirements; nothing
    is stored then."""
    with sessions() as s:
        row = _find(s, project_id, pkg.digest)
    if row is not None:
        return Stored(row, False)
    mapped = _map(pkg)
    if sandbox is not None:
        check_requirements(pkg.requirements, sandbox)
    notes = list(mapped.notes)
    if _names_url(pkg.config):
        notes.append(REST_URL_NOTE)
    sizes = [len(text.encode()) for text in pkg.files.values()]
    row = Problem(project_id=project_id, digest=pkg.digest, name=(name or pkg.name)[:200],
                  layout=pkg.layout, seed_path=pkg.seed_path, evaluator_path=pkg.evaluator_path,
                  files=dict(pkg.files), config=pkg.config, stages=pkg.stages,
                  requirements=list(pkg.requirements),
                  report={"skipped": list(pkg.skipped), "ignored_secrets": list(pkg.ignored_secrets),
                          "unsupported": list(mapped.unsupported), "notes": notes},
                  size_bytes=sum(sizes), file_count=len(sizes))
    try:
        with sessions.begin() as s:
            s.add(row)
    except IntegrityError:  # the same content stored by a racing upload: that row
        with sessions() as s:
            existing = _find(s, project_id, pkg.digest)
        if existing is None:
            raise
        return Stored(existing, False)
    return Stored(row, True)


def _names_url(config: dict[str, Any]) -> bool:
    llm = config.get("llm")
    if not isinstance(llm, dict):
        return False
    models = [m for m in llm.get("models") or [] if isinstance(m, dict)]
    return bool(llm.get("api_base") or any(m.get("api_base") for m in models))


def _map(pkg: "ProblemPackage", *, llm_base_url: str | None = None):
    from evoforge.evaluators.openevolve.config import map_problem

    try:
        return map_problem(pkg, llm_base_url=llm_base_url)
    except SyntaxError as exc:
        raise SpecError(f"{pkg.evaluator_path}: not valid Python (line {exc.lineno}: {exc.msg})") from None
    except ValueError as exc:
        raise SpecError(f"cannot use the problem: {exc}") from None


# -- read --------------------------------------------------------------------------------------
def get_problem(s: Session, scope: Scope, digest: str) -> Problem:
    row = s.scalar(_scoped(select(Problem).where(Problem.digest == digest), scope)
                   .order_by(Problem.id).limit(1))
    if row is None:
        raise ProblemNotFound(f"problem {digest} not found")
    return row


def list_problems(s: Session, scope: Scope, *, limit: int = 50,
                  offset: int = 0) -> tuple[list[Problem], int]:
    """The scope's problems, newest first, and how many there are."""
    q = _scoped(select(Problem), scope)
    total = s.scalar(select(func.count()).select_from(q.subquery()))
    rows = s.scalars(q.order_by(Problem.id.desc()).limit(limit).offset(offset))
    return list(rows), total


def campaign_count(s: Session, problem_id: int) -> int:
    return s.scalar(select(func.count()).where(Campaign.problem_id == problem_id)) or 0


def package_of(row: Problem) -> "ProblemPackage":
    """The stored problem as the package it was made from."""
    from evoforge.evaluators.openevolve.package import ProblemPackage

    report = row.report or {}
    return ProblemPackage(digest=row.digest, layout=row.layout, name=row.name,
                          seed_path=row.seed_path, evaluator_path=row.evaluator_path,
                          files=dict(row.files or {}), config=dict(row.config or {}),
                          stages=row.stages, requirements=list(row.requirements or []),
                          skipped=list(report.get("skipped", [])),
                          ignored_secrets=list(report.get("ignored_secrets", [])))


def problem_files(sessions: sessionmaker[Session], problem_id: int, digest: str) -> dict[str, str]:
    """The files of a campaign's problem (worker/runtime.py fills the evaluator's params with
    them, in memory). ValueError when the row is gone or holds other content than the params
    name: a campaign never evaluates with files other than those its cache key was made for."""
    with sessions() as s:
        row = s.get(Problem, problem_id)
        if row is None or row.digest != digest:
            raise ValueError(f"the campaign's problem {digest[:12]} is not stored (problem_id "
                             f"{problem_id})")
        return dict(row.files or {})


# -- delete ------------------------------------------------------------------------------------
def delete_problem(sessions: sessionmaker[Session], scope: Scope, digest: str) -> None:
    """ProblemNotFound, or ProblemInUse while a campaign (of any status) runs it."""
    try:
        with sessions.begin() as s:
            row = get_problem(s, scope, digest)
            used = campaign_count(s, row.id)
            if used:
                raise ProblemInUse(_in_use(digest, used))
            s.delete(row)
    except IntegrityError:  # a campaign was created meanwhile (the foreign key is RESTRICT)
        raise ProblemInUse(_in_use(digest, 1)) from None


def _in_use(digest: str, n: int) -> str:
    return (f"problem {digest[:12]} is used by {n} campaign{'s' * (n != 1)}: delete "
            f"{'them' if n != 1 else 'it'} first")


# -- campaigns ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProblemCampaign:
    spec: CampaignSpec            # the openevolve task's spec, ready for create_campaign
    problem_id: int
    digest: str
    notes: list[str] = field(default_factory=list)


def explicit(model: Any) -> Any:
    """What a request set, at every level: the fields in `model_fields_set`, nested models
    likewise (a default is not an override)."""
    from pydantic import BaseModel

    if not isinstance(model, BaseModel):
        return model
    return {k: explicit(getattr(model, k)) if isinstance(getattr(model, k), BaseModel)
            else _plain(getattr(model, k)) for k in model.model_fields_set}


def _plain(value: Any) -> Any:
    from pydantic import BaseModel

    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` on `base`: mappings merge key by key, anything else replaces."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def spec_for_campaign(sessions: sessionmaker[Session], scope: Scope, spec: CampaignSpec, *,
                      llm_base_url: str | None = None, config_url: bool = False,
                      check: bool = True) -> ProblemCampaign:
    """The spec of a campaign on the stored problem `spec.problem` (see the module doc).

    llm_base_url: the operator's LLM URL (overrides the config's); config_url: the config's
    `llm.api_base` may be used (only where the caller is the operator). check: re-check the
    requirements for the campaign's sandbox. Raises ProblemNotFound, SpecError,
    MissingRequirements."""
    if spec.problem is None:
        raise SpecError("no problem given")
    with sessions() as s:
        row = get_problem(s, scope, spec.problem)
        pkg, problem_id, digest, title = package_of(row), row.id, row.digest, row.name
        requirements = list(row.requirements or [])
    mapped = _map(pkg, llm_base_url=llm_base_url)
    notes = list(mapped.notes)
    over = {k: v for k, v in explicit(spec).items() if k != "problem"}
    for key in ("files", "problem"):
        if key in (over.get("params") or {}):
            raise SpecError(f"params.{key} cannot be given with a problem: the problem's are used")
    mutator = dict(mapped.mutator)
    if not (config_url or llm_base_url) and mutator.get("base_url"):
        notes.append(REST_URL_NOTE)
        mutator = {k: v for k, v in mutator.items() if k not in ("base_url", "models", "prices")}
        mutator["kind"] = "local"
    asked = over.get("mutator") or {}
    if asked.get("endpoint") or asked.get("base_url"):  # the request's target, not the config's
        mutator.pop("base_url", None)
        mutator.pop("endpoint", None)
    iterations = mapped.max_iterations if mapped.max_iterations is not None else DEFAULT_ITERATIONS
    defaults = {
        "task": "openevolve", "params": {**mapped.task_params, "problem": digest, "files": {}},
        "program": mapped.seed_program, "seed": mapped.seed or 0, "parallel": mapped.parallel or 1,
        "mutator": mutator, "archive": mapped.archive,
        "budget": {**mapped.budget, "max_evaluations": iterations + 1}}
    raw = merged(defaults, over)
    if not raw.get("name"):
        raw["name"] = f"{title or 'problem ' + digest[:12]} #{raw['seed']}"
    try:
        resolved = CampaignSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(f"invalid campaign: {_without_input(exc)}") from None
    if check:
        check_requirements(requirements, resolved.sandbox)
    return ProblemCampaign(resolved, problem_id, digest, notes)


# -- describe ----------------------------------------------------------------------------------
def file_listing(row: Problem) -> list[dict[str, Any]]:
    return [{"path": p, "bytes": len(t.encode())} for p, t in sorted((row.files or {}).items())]


def describe(row: Problem, *, campaigns: int | None = None, detail: bool = False) -> dict[str, Any]:
    """The problem as the API and the clients show it (the summary, or with `detail` its files,
    config, report and how many campaigns run it)."""
    from evoforge.db.campaign_rows import utc

    out: dict[str, Any] = {
        "id": row.digest, "name": row.name, "layout": row.layout, "seed": row.seed_path,
        "evaluator": row.evaluator_path, "requirements": list(row.requirements or []),
        "file_count": row.file_count, "size_bytes": row.size_bytes,
        "created_at": utc(row.created_at).isoformat() if row.created_at else None}
    if detail:
        out.update(files=file_listing(row), config=row.config or {}, stages=row.stages,
                   report=row.report or {}, campaigns=campaigns or 0)
    return out
