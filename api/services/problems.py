"""Problems as an API key's project sees them (worker/problem_service.py holds the meaning):
an upload parsed by its content type, checked, and stored in the caller's project; reads and
deletes scoped to it. Everything here may take a while (archives, the requirements check in the
sandbox): the routes call it in a worker thread, never on the event loop."""
from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from evoforge.api.auth import Principal
from evoforge.api.services import Conflict, NotFound
from evoforge.worker import problem_service as service
from evoforge.worker.campaign_service import Scope, SpecError

# Content type (without parameters) -> the archive kind `read_upload` is given.
UPLOAD_TYPES = {
    "application/zip": "application/zip",
    "application/x-zip-compressed": "application/zip",
    "application/x-tar": "application/x-tar",
    "application/gzip": "application/gzip",
    "application/x-gzip": "application/gzip",
    "application/x-compressed-tar": "application/gzip",
    "application/json": "application/json",
}


class UnsupportedType(Exception):
    """415: a body the upload cannot parse by its content type."""


def upload_kind(content_type: str | None) -> str:
    kind = UPLOAD_TYPES.get((content_type or "").split(";", 1)[0].strip().lower())
    if kind is None:
        raise UnsupportedType(
            f"unsupported content type {(content_type or 'none')[:100]!r}: send the problem "
            f"directory as {', '.join(sorted(set(UPLOAD_TYPES.values())))} ({{path: text}})")
    return kind


def scope_of(principal: Principal) -> Scope:
    return Scope(principal.project_id)


def upload(sessions: sessionmaker[Session], principal: Principal, body: bytes, kind: str, *,
           name: str | None, sandbox: str) -> tuple[dict[str, Any], bool]:
    """Parse, check and store; (the problem's detail, created). SpecError (422) on anything
    refused (a bad path or link, a limit, no evaluator, a missing requirement): nothing stored."""
    from evoforge.evaluators.openevolve.package import PackageError, package_from_files, read_upload

    try:
        pkg = package_from_files(read_upload(body, kind), name=name or "")
    except PackageError as exc:
        raise SpecError(str(exc)) from None
    stored = service.store_problem(sessions, pkg, project_id=principal.project_id,
                                   name=name or "", sandbox=sandbox)
    return detail(sessions, principal, stored.problem.digest), stored.created


def _get(s: Session, principal: Principal, problem_id: str):
    try:
        return service.get_problem(s, scope_of(principal), problem_id)
    except service.ProblemNotFound as exc:
        raise NotFound(str(exc)) from None


def detail(sessions: sessionmaker[Session], principal: Principal, problem_id: str) -> dict[str, Any]:
    with sessions() as s:
        row = _get(s, principal, problem_id)
        return service.describe(row, campaigns=service.campaign_count(s, row.id), detail=True)


def listing(sessions: sessionmaker[Session], principal: Principal, *, limit: int,
            offset: int) -> dict[str, Any]:
    with sessions() as s:
        rows, total = service.list_problems(s, scope_of(principal), limit=limit, offset=offset)
        return {"items": [service.describe(r) for r in rows], "total": total, "limit": limit,
                "offset": offset}


def files(sessions: sessionmaker[Session], principal: Principal, problem_id: str) -> list[dict]:
    with sessions() as s:
        return service.file_listing(_get(s, principal, problem_id))


def read_file(sessions: sessionmaker[Session], principal: Principal, problem_id: str,
              path: str) -> dict[str, Any]:
    with sessions() as s:
        text = (_get(s, principal, problem_id).files or {}).get(path)
    if text is None:
        raise NotFound(f"problem {problem_id[:12]} has no file {path[:200]!r}")
    return {"path": path, "text": text, "bytes": len(text.encode())}


def delete(sessions: sessionmaker[Session], principal: Principal, problem_id: str) -> None:
    try:
        service.delete_problem(sessions, scope_of(principal), problem_id)
    except service.ProblemNotFound as exc:
        raise NotFound(str(exc)) from None
    except service.ProblemInUse as exc:
        raise Conflict(str(exc)) from None
