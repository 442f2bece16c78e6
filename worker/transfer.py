"""Export a campaign to a portable file, and import such a file into another database.

The file (docs/export.md) is one zstd stream of JSON Lines, one record per line, in this order:

    header      {"type": "header", "format": "evoforge-campaign", "version": 1, ...}
    campaign    its columns: name, task, params, config document, seed program, counters
    problem     (only a campaign on a stored problem) its files, config, requirements
    code        each distinct program text once: {"hash", "code"}, by hash
    program     by id: lineage (old ids), iteration, island, ..., prompt and response as text,
                and its evaluation inline
    elite       the MAP-Elites cells (old program ids)
    model_stat  the LLM bandit's rows
    end         how many records of each kind, so a cut file is never taken for a whole one

Export streams: one read transaction (a snapshot: a running campaign exports as it was at one
moment), programs in id order, prompts and responses decoded through
db/blobs.py a batch at a time (one streamed query each for codes and programs). Nothing grows with the campaign but the compressor's window.

Import takes the file as untrusted input: every line is bounded, parsed by a strict model
(unknown fields and record types refused, with the line number), and every value goes through
evolution/sanitize.py's rules (the same as a commit's); a code record must hash to its hash.
New ids are given and the lineage is mapped old -> new (parents come before children: ids grow
in commit order, and the exporter writes in id order, which the importer checks). Everything
(problem, campaign, programs, evaluations, elites, bandit) is written in ONE transaction: a
failed import leaves nothing of the campaign behind. Imported evaluations never enter the
evaluation cache: their scores are the file's claims, not this server's evaluations.

Code blobs are content-addressed and shared by every campaign, and come first in the file. A
failed import must not leave the ones it brought behind either: a key holder could otherwise fill
the database with blobs nothing refers to by uploading files that fail at their last line.

- SQLite: they are written in the one transaction (it holds the only write lock from its first
  code batch on), so a failure rolls them back with the rest.
- PostgreSQL: each batch is written in a short transaction of its own (INSERT .. ON CONFLICT DO
  NOTHING RETURNING: this import remembers the hashes it *created*, 32 bytes each) and at once
  held by the one transaction (FOR KEY SHARE until it ends, as db/blobs.py `hold_codes`).
  Written in the long transaction instead, an uncommitted blob would make every commit of the
  same text, in any campaign, wait for the whole import. On failure, once the transaction is
  rolled back, the blobs this import created go through `gc_code_blobs(only=...)`: its
  lock-then-look deletes only those that no committed program or kept text refers to and that
  no open writer holds (another import or a commit that refers to one holds it, as this one
  did), so nothing that existed before or that anyone else needs is taken. Should that clean-up
  itself fail (the database went away), a prune's gc collects what is left.
"""
from __future__ import annotations

import hashlib
import json
import logging
from array import array
from bisect import bisect_left
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import IO, Any, Callable, Iterable, Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import Engine, bindparam, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, sessionmaker

from evoforge.db import blobs
from evoforge.db.campaign_config import CampaignConfig
from evoforge.db.campaign_rows import engine_of, utc
from evoforge.db.models import (Campaign, CodeBlob, EliteCell, Evaluation, ModelStat, Problem, Program,
                                Project)
from evoforge.evolution import hashing
from evoforge.evolution.sanitize import (MAX_NAME_CHARS, MAX_PROGRAM_CHARS, Sanitizer, clean_child,
                                         servable)
from evoforge.evolution.step import Child
from evoforge.evolution.types import EVAL_STATUSES, EvalResult, Mutation
from evoforge.worker.campaign_service import Scope, SpecError, get_campaign, resolve_task

__all__ = ["FORMAT", "VERSION", "TransferError", "ExportSummary", "ImportSummary",
           "export_chunks", "export_campaign", "import_campaign", "MAX_LINE_BYTES"]

FORMAT = "evoforge-campaign"
VERSION = 1
MAX_LINE_BYTES = 16 << 20     # one record: a program with a 1M-char prompt and response, escaped
BATCH = 500                   # programs per query (export) and per insert (import)
CODE_BATCH_BYTES = 8 << 20    # code texts per put_codes transaction on import
GC_CHUNK = 50_000             # created blobs per gc of a failed import (each reads kept texts once)
ZSTD_LEVEL = 6
MAX_WINDOW = 1 << 27          # a frame asking the decoder for a larger window is refused
CAMPAIGN_STATUSES = ("queued", "running", "paused", "completed", "cancelled", "failed")
CELL = r"^-?[0-9]{1,9}(,-?[0-9]{1,9}){0,7}$"
HASH = r"^[0-9a-f]{64}$"

P, E, C = Program.__table__, Evaluation.__table__, Campaign.__table__
EC, MS, PR = EliteCell.__table__, ModelStat.__table__, Problem.__table__
log = logging.getLogger(__name__)


class TransferError(SpecError):
    """A file that cannot be imported (or a campaign that cannot be exported), in one line; for
    a file, with the line number. Nothing was written."""

    def __init__(self, message: str, line: int | None = None):
        self.line = line
        super().__init__(f"line {line}: {message}" if line else message)


def _version() -> str:
    from evoforge import __version__
    return __version__


def _iso(t: datetime | None) -> str | None:
    return None if t is None else utc(t).isoformat()


def _line(record: dict[str, Any]) -> bytes:
    """One JSON line; stored values that JSON cannot carry (NaN, lone surrogates) are made
    servable first, as the API serves them."""
    return json.dumps(servable(record), ensure_ascii=False, allow_nan=False,
                      separators=(",", ":")).encode("utf-8") + b"\n"


# ==============================================================================================
# Export
# ==============================================================================================

@dataclass
class ExportSummary:
    campaign_id: int
    programs: int = 0
    codes: int = 0
    elites: int = 0
    model_stats: int = 0
    bytes_written: int = 0


def _read_transaction(engine: Engine) -> Connection:
    """A connection in one read transaction that sees one snapshot throughout: REPEATABLE READ
    on PostgreSQL; on SQLite (WAL) a read transaction is a snapshot already."""
    conn = engine.connect()
    if engine.dialect.name == "postgresql":
        conn = conn.execution_options(isolation_level="REPEATABLE READ")
    conn.begin()
    return conn


def campaign_record(c: Any) -> dict[str, Any]:
    return {
        "type": "campaign", "id": c.id, "name": c.name, "task": c.task, "params": c.params or {},
        "task_key": c.task_key, "status": c.status, "seed": c.seed, "parallel": c.parallel,
        "islands": c.islands, "config": c.config or {}, "seed_program": c.seed_program,
        "error": c.error, "meta_note": c.meta_note, "created_at": _iso(c.created_at),
        "started_at": _iso(c.started_at), "finished_at": _iso(c.finished_at),
        "max_evaluations": c.max_evaluations, "iterations_reserved": c.iterations_reserved,
        "tokens_reserved": c.tokens_reserved, "cost_reserved_usd": c.cost_reserved_usd,
        "evaluations": c.evaluations, "sandbox_runs": c.sandbox_runs, "cache_hits": c.cache_hits,
        "failures": c.failures, "rejected": c.rejected, "novelty_skips": c.novelty_skips,
        "tokens": c.tokens, "cost_usd": c.cost_usd, "eval_seconds": c.eval_seconds,
        "best_score": c.best_score, "best_program_id": c.best_program_id,
        "seed_score": c.seed_score}


def problem_record(p: Any) -> dict[str, Any]:
    return {"type": "problem", "digest": p.digest, "name": p.name, "layout": p.layout,
            "seed_path": p.seed_path, "evaluator_path": p.evaluator_path, "files": p.files or {},
            "config": p.config or {}, "stages": p.stages, "requirements": p.requirements or [],
            "report": p.report or {}}


_SP = P.alias("source_program")
_SE = E.alias("source_evaluation")
PROGRAM_COLUMNS = (P.c.id, P.c.parent_id, P.c.iteration, P.c.island, P.c.generation, P.c.kind,
                   P.c.model, P.c.code_hash, P.c.prompt_z, P.c.response_z, P.c.prompt_tokens,
                   P.c.completion_tokens, P.c.cost_usd, P.c.extra, P.c.status, P.c.score,
                   P.c.created_at, P.c.pruned_at,
                   E.c.id.label("e_id"), E.c.task_key, E.c.status.label("e_status"),
                   E.c.score.label("e_score"), E.c.metrics, E.c.features, E.c.artifacts,
                   E.c.duration_s, E.c.code_hash.label("e_code_hash"), E.c.functional_hash,
                   E.c.cache, _SP.c.id.label("source_program_id"),
                   E.c.created_at.label("e_created_at"))


def _programs_query(campaign_id: int) -> Any:
    """The campaign's programs in id order, each with its evaluation and the id of the program
    whose evaluation a cache hit reused (only when it is in this campaign)."""
    return (select(*PROGRAM_COLUMNS)
            .select_from(P.outerjoin(E, E.c.program_id == P.c.id)
                         .outerjoin(_SE, _SE.c.id == E.c.source_evaluation_id)
                         .outerjoin(_SP, (_SP.c.id == _SE.c.program_id)
                                    & (_SP.c.campaign_id == campaign_id)))
            .where(P.c.campaign_id == campaign_id).order_by(P.c.id))


def _streamed(conn: Connection, query: Any, size: int = BATCH) -> Iterator[list[Any]]:
    """One query, read `size` rows at a time through a server-side cursor (PostgreSQL) or the
    driver's lazy cursor (SQLite): the database sorts once. A keyset re-query per batch would
    re-sort the campaign's rows each time on SQLite (its planner picks a campaign index), which
    made a 80,000-program export quadratic."""
    result = conn.execute(query.execution_options(stream_results=True, yield_per=size))
    try:
        yield from result.partitions(size)
    finally:
        result.close()


def program_record(r: Any, prompt: str | None, response: str | None) -> dict[str, Any]:
    evaluation = None
    if r.e_id is not None:
        evaluation = {"task_key": r.task_key, "status": r.e_status, "score": r.e_score,
                      "metrics": r.metrics or {}, "features": r.features or {},
                      "artifacts": r.artifacts or {}, "duration_s": r.duration_s,
                      "code_hash": r.e_code_hash, "functional_hash": r.functional_hash,
                      "cache": r.cache, "source_program_id": r.source_program_id,
                      "created_at": _iso(r.e_created_at)}
    return {"type": "program", "id": r.id, "parent_id": r.parent_id, "iteration": r.iteration,
            "island": r.island, "generation": r.generation, "kind": r.kind, "model": r.model,
            "code_hash": r.code_hash, "prompt": prompt, "response": response,
            "prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens,
            "cost_usd": r.cost_usd, "extra": r.extra or {}, "status": r.status, "score": r.score,
            "created_at": _iso(r.created_at), "pruned_at": _iso(r.pruned_at),
            "evaluation": evaluation}


def _code_hashes_query(campaign_id: int) -> Any:
    return (select(P.c.code_hash).where(P.c.campaign_id == campaign_id, P.c.code_hash.is_not(None))
            .group_by(P.c.code_hash).order_by(P.c.code_hash))


def _records(conn: Connection, s: Session, c: Any, problem: Any,
             progress: Callable[[int], None] | None, summary: ExportSummary
             ) -> Iterator[dict[str, Any]]:
    yield {"type": "header", "format": FORMAT, "version": VERSION,
           "exported_at": datetime.now(timezone.utc).isoformat(), "evoforge": _version(),
           "source": {"campaign_id": c.id, "database": conn.dialect.name}}
    yield campaign_record(c)
    if problem is not None:
        yield problem_record(problem)
    # Each distinct code once, by hash: the database sorts, nothing is remembered here.
    for rows in _streamed(conn, _code_hashes_query(c.id)):
        hashes = [r[0] for r in rows]
        codes = blobs.get_codes(s, hashes)
        for h in hashes:
            if h in codes:  # a pruned program's code may be gone: its program says pruned
                summary.codes += 1
                yield {"type": "code", "hash": h, "code": codes[h]}
    for rows in _streamed(conn, _programs_query(c.id)):
        texts = blobs.decode_texts(s, [b for r in rows for b in (r.prompt_z, r.response_z)])
        for i, r in enumerate(rows):
            summary.programs += 1
            yield program_record(r, texts[2 * i], texts[2 * i + 1])
        if progress is not None:
            progress(len(rows))
    for r in conn.execute(select(EC.c.island, EC.c.cell, EC.c.program_id, EC.c.score,
                                 EC.c.features, EC.c.updated_at)
                          .where(EC.c.campaign_id == c.id).order_by(EC.c.island, EC.c.cell)):
        summary.elites += 1
        yield {"type": "elite", "island": r.island, "cell": r.cell, "program_id": r.program_id,
               "score": r.score, "features": r.features or {}, "updated_at": _iso(r.updated_at)}
    for r in conn.execute(select(MS.c.model, MS.c.pulls, MS.c.valid, MS.c.improvement, MS.c.spend)
                          .where(MS.c.campaign_id == c.id).order_by(MS.c.model)):
        summary.model_stats += 1
        yield {"type": "model_stat", "model": r.model, "pulls": r.pulls, "valid": r.valid,
               "improvement": r.improvement, "spend": r.spend}
    yield {"type": "end", "records": {"code": summary.codes, "program": summary.programs,
                                      "elite": summary.elites, "model_stat": summary.model_stats}}


def count_programs(sessions: sessionmaker[Session], campaign_id: int) -> int:
    with sessions() as s:
        return s.scalar(select(func.count()).select_from(Program)
                        .where(Program.campaign_id == campaign_id)) or 0


def export_chunks(sessions: sessionmaker[Session], campaign_id: int, *, scope: Scope | None = None,
                  progress: Callable[[int], None] | None = None,
                  summary: ExportSummary | None = None) -> Iterator[bytes]:
    """The export file of a campaign in `scope` (default: every campaign), as compressed chunks.
    CampaignNotFound is raised at the first `next()`; the REST route checks before it streams."""
    summary = summary if summary is not None else ExportSummary(campaign_id)
    engine = engine_of(sessions)
    conn = _read_transaction(engine)
    try:
        s = Session(bind=conn)
        c = get_campaign(s, scope or Scope.operator(), campaign_id)
        problem = s.get(Problem, c.problem_id) if c.problem_id is not None else None
        compressor = __import__("zstandard").ZstdCompressor(level=ZSTD_LEVEL).compressobj()
        pending: list[bytes] = []
        size = 0
        for record in _records(conn, s, c, problem, progress, summary):
            line = _line(record)
            pending.append(line)
            size += len(line)
            if size >= 1 << 20:
                out = compressor.compress(b"".join(pending))
                pending, size = [], 0
                if out:
                    summary.bytes_written += len(out)
                    yield out
        out = compressor.compress(b"".join(pending)) + compressor.flush()
        summary.bytes_written += len(out)
        yield out
    finally:
        conn.rollback()
        conn.close()


def export_campaign(sessions: sessionmaker[Session], campaign_id: int, out: IO[bytes], *,
                    scope: Scope | None = None,
                    progress: Callable[[int], None] | None = None) -> ExportSummary:
    """Write the export file of a campaign to the binary stream `out`."""
    summary = ExportSummary(campaign_id)
    for chunk in export_chunks(sessions, campaign_id, scope=scope, progress=progress,
                               summary=summary):
        out.write(chunk)
    return summary


# ==============================================================================================
# Reading a file: bounded lines, strict records
# ==============================================================================================

def _lines(source: IO[bytes], max_bytes: int | None) -> Iterator[tuple[int, bytes]]:
    """(line number, line) of the decompressed stream. A line over MAX_LINE_BYTES, more than
    `max_bytes` decompressed in all, or a frame that is not zstd is a TransferError."""
    import zstandard

    reader = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW).stream_reader(
        source, read_across_frames=True)
    buf = b""
    lineno, total = 0, 0
    try:
        while True:
            chunk = reader.read(1 << 16)
            if not chunk:
                break
            total += len(chunk)
            if max_bytes is not None and total > max_bytes:
                raise TransferError(f"the file expands to more than {max_bytes} bytes, the limit "
                                    "of an import here", lineno + 1)
            buf += chunk
            start = 0
            while True:
                nl = buf.find(b"\n", start)
                if nl < 0:
                    break
                lineno += 1
                if nl - start > MAX_LINE_BYTES:
                    raise TransferError(f"a record longer than {MAX_LINE_BYTES >> 20} MiB", lineno)
                yield lineno, buf[start:nl]
                start = nl + 1
            buf = buf[start:]
            if len(buf) > MAX_LINE_BYTES:
                raise TransferError(f"a record longer than {MAX_LINE_BYTES >> 20} MiB", lineno + 1)
    except zstandard.ZstdError as exc:
        raise TransferError(f"not a readable zstd stream ({exc})", lineno + 1) from None
    if buf.strip():
        raise TransferError("the file ends inside a record (cut short?)", lineno + 1)


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


Id = Field(ge=1, le=2**63 - 1)
Count = Field(ge=0, le=2**63 - 1)
JsonDoc = dict[str, Any]


class HeaderRecord(_Record):
    type: Literal["header"]
    format: str = Field(max_length=100)
    version: int
    exported_at: str | None = Field(None, max_length=100)
    evoforge: str | None = Field(None, max_length=100)
    source: JsonDoc = {}


class CampaignRecord(_Record):
    type: Literal["campaign"]
    id: int = Id
    name: str = Field("", max_length=200)
    task: str = Field(min_length=1, max_length=100)
    params: JsonDoc = {}
    task_key: str = Field("", max_length=120)
    status: Literal[CAMPAIGN_STATUSES]  # type: ignore[valid-type]
    seed: int = Field(0, ge=-2**31, le=2**31 - 1)
    parallel: int = Field(1, ge=1, le=256)
    islands: int = Field(4, ge=1, le=64)
    config: JsonDoc = {}
    seed_program: str = Field(max_length=MAX_PROGRAM_CHARS)
    error: str = Field("", max_length=100_000)
    meta_note: str = Field("", max_length=100_000)
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    max_evaluations: int | None = Field(None, ge=1, le=2**31 - 1)
    iterations_reserved: int = Field(0, ge=0, le=2**31 - 1)
    tokens_reserved: int = Count
    cost_reserved_usd: float = Field(0.0, ge=0, le=1e12)
    evaluations: int = Field(0, ge=0, le=2**31 - 1)
    sandbox_runs: int = Field(0, ge=0, le=2**31 - 1)
    cache_hits: int = Field(0, ge=0, le=2**31 - 1)
    failures: int = Field(0, ge=0, le=2**31 - 1)
    rejected: int = Field(0, ge=0, le=2**31 - 1)
    novelty_skips: int = Field(0, ge=0, le=2**31 - 1)
    tokens: int = Count
    cost_usd: float = Field(0.0, ge=0, le=1e12)
    eval_seconds: float = Field(0.0, ge=0, le=1e12)
    best_score: float | None = Field(None, allow_inf_nan=False)
    best_program_id: int | None = Id
    seed_score: float | None = Field(None, allow_inf_nan=False)


class ProblemRecord(_Record):
    type: Literal["problem"]
    digest: str = Field(pattern=HASH)
    name: str = Field("", max_length=200)
    layout: Literal["openevolve", "native"]
    seed_path: str = Field(max_length=500)
    evaluator_path: str = Field(max_length=500)
    files: dict[str, str]
    config: JsonDoc = {}
    stages: list[str] | None = None
    requirements: list[str] = []
    report: JsonDoc = {}


class CodeRecord(_Record):
    type: Literal["code"]
    hash: str = Field(pattern=HASH)
    code: str = Field(max_length=MAX_PROGRAM_CHARS)


class EvaluationRecord(_Record):
    task_key: str = Field(max_length=120)
    status: Literal[EVAL_STATUSES]  # type: ignore[valid-type]
    score: float | None = None
    metrics: JsonDoc = {}
    features: JsonDoc = {}
    artifacts: JsonDoc = {}
    duration_s: float = 0.0
    code_hash: str | None = Field(None, pattern=HASH)
    functional_hash: str | None = Field(None, pattern=HASH)
    cache: Literal["miss", "code", "functional"] = "miss"
    source_program_id: int | None = Id
    created_at: datetime | None = None


class ProgramRecord(_Record):
    type: Literal["program"]
    id: int = Id
    parent_id: int | None = Id
    iteration: int = Field(ge=0, le=2**31 - 1)
    island: int = Field(0, ge=0, le=63)
    generation: int = Field(0, ge=0, le=2**31 - 1)
    kind: str = Field("", max_length=MAX_NAME_CHARS["kind"])
    model: str | None = Field(None, max_length=MAX_NAME_CHARS["model"])
    code_hash: str | None = Field(None, pattern=HASH)
    prompt: str | None = Field(None, max_length=MAX_PROGRAM_CHARS)
    response: str | None = Field(None, max_length=MAX_PROGRAM_CHARS)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    extra: JsonDoc = {}
    status: Literal[EVAL_STATUSES]  # type: ignore[valid-type]
    score: float | None = None
    created_at: datetime | None = None
    pruned_at: datetime | None = None
    evaluation: EvaluationRecord | None = None


class EliteRecord(_Record):
    type: Literal["elite"]
    island: int = Field(ge=0, le=63)
    cell: str = Field(pattern=CELL, max_length=64)
    program_id: int = Id
    score: float = Field(allow_inf_nan=False)
    features: JsonDoc = {}
    updated_at: datetime | None = None


class ModelStatRecord(_Record):
    type: Literal["model_stat"]
    model: str = Field(min_length=1, max_length=200)
    pulls: int = Field(ge=0, le=2**31 - 1)
    valid: int = Field(ge=0, le=2**31 - 1)
    improvement: float = Field(allow_inf_nan=False)
    spend: float = Field(ge=0, allow_inf_nan=False)


class EndRecord(_Record):
    type: Literal["end"]
    records: dict[Literal["code", "program", "elite", "model_stat"], int]


RECORDS: dict[str, type[_Record]] = {
    "header": HeaderRecord, "campaign": CampaignRecord, "problem": ProblemRecord,
    "code": CodeRecord, "program": ProgramRecord, "elite": EliteRecord,
    "model_stat": ModelStatRecord, "end": EndRecord}
# Which record may follow which: the file's order is part of the format.
ORDER = ["header", "campaign", "problem", "code", "program", "elite", "model_stat", "end"]


def _parse(lineno: int, line: bytes) -> _Record:
    """One line as its record model; TransferError naming the line and the field otherwise.
    Never echoes the value it refused."""
    try:
        head = json.loads(line)
    except (ValueError, RecursionError):
        raise TransferError("not a JSON object", lineno) from None
    if not isinstance(head, dict):
        raise TransferError("not a JSON object", lineno)
    kind = head.get("type")
    model = RECORDS.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise TransferError(f"unknown record type {str(kind)[:40]!r} (known: "
                            f"{', '.join(RECORDS)})", lineno)
    try:
        return model.model_validate_json(line)
    except ValidationError as exc:
        where = "; ".join(f"{'.'.join(map(str, e['loc'])) or kind}: {e['msg']}"
                          for e in exc.errors(include_url=False, include_input=False)[:3])
        raise TransferError(f"invalid {kind} record: {where}", lineno) from None


# ==============================================================================================
# Import
# ==============================================================================================

@dataclass
class ImportSummary:
    campaign_id: int = 0
    status: str = ""
    programs: int = 0
    codes: int = 0
    elites: int = 0
    model_stats: int = 0
    problem: str | None = None
    notes: list[str] = field(default_factory=list)


class IdMap:
    """old id -> new id, for ids that arrive in increasing order: two arrays and a binary search
    (16 bytes a program; a dict would be ~10 times that at a million programs)."""

    def __init__(self) -> None:
        self.old, self.new = array("q"), array("q")

    def add(self, old: int, new: int) -> None:
        if self.old and old <= self.old[-1]:
            raise ValueError("ids must increase")
        self.old.append(old)
        self.new.append(new)

    def get(self, old: int | None) -> int | None:
        if old is None:
            return None
        i = bisect_left(self.old, old)
        return self.new[i] if i < len(self.old) and self.old[i] == old else None

    def __contains__(self, old: int) -> bool:
        return self.get(old) is not None

    @property
    def last(self) -> int:
        return self.old[-1] if self.old else 0


def arrival_status(status: str) -> str:
    """An imported campaign never runs by itself: one that was queued, running or paused
    arrives paused (resume it); a finished one keeps its final status."""
    return "paused" if status in ("queued", "running", "paused") else status


def problem_digest(r: ProblemRecord) -> str:
    """The digest of a problem's content, as evaluators/openevolve/package.py computes it."""
    content = {"layout": r.layout, "seed": r.seed_path, "evaluator": r.evaluator_path,
               "files": r.files, "config": r.config, "stages": r.stages,
               "requirements": r.requirements}
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":"),
                                     ensure_ascii=False).encode()).hexdigest()


Admit = Callable[[CampaignConfig], None]


class _Importer:
    """One import: reads records in order and writes them (see the module doc)."""

    def __init__(self, sessions: sessionmaker[Session], *, project_id: int | None,
                 admit: Admit | None):
        self.sessions = sessions
        self.engine = engine_of(sessions)
        self.project_id = project_id
        self.admit = admit
        self.summary = ImportSummary()
        self.campaign: dict[str, Any] | None = None
        self.best_old: int | None = None
        self.problem: ProblemRecord | None = None
        self.conn: Connection | None = None
        self.session: Session | None = None
        self.ids = IdMap()
        self.codes_pending: list[str] = []
        self.codes_bytes = 0
        self.created = bytearray()   # PostgreSQL: the code blobs this import created (sha256s)
        self.programs_pending: list[tuple[int, ProgramRecord]] = []
        self.pending_ids: set[int] = set()
        self.elites_pending: list[dict[str, Any]] = []
        self.seen_kinds: dict[str, int] = {}
        self.last_code = ""

    # -- the record stream ----------------------------------------------------------------------
    def run(self, lines: Iterable[tuple[int, bytes]]) -> ImportSummary:
        stage, lineno = -1, 0
        try:
            for lineno, line in lines:
                if not line.strip():
                    raise TransferError("an empty line", lineno)
                rec = _parse(lineno, line)
                at = ORDER.index(rec.type)
                if at < stage or (at == stage and rec.type in ("header", "campaign", "problem",
                                                                "end")):
                    raise TransferError(f"a {rec.type} record after a {ORDER[stage]} record "
                                        "(out of order)", lineno)
                if stage < 0 and rec.type != "header":
                    raise TransferError("the file does not start with a header: not an EvoForge "
                                        "campaign export", lineno)
                if stage == ORDER.index("end"):
                    raise TransferError("records after the end record", lineno)
                if stage < ORDER.index("campaign") <= at and rec.type != "campaign":
                    raise TransferError("no campaign record after the header", lineno)
                stage = at
                self.seen_kinds[rec.type] = self.seen_kinds.get(rec.type, 0) + 1
                getattr(self, f"_on_{rec.type}")(lineno, rec)
            if stage != ORDER.index("end"):
                raise TransferError("the file ends without its end record (cut short?)", lineno + 1)
            self._commit()
            self.created = bytearray()
            return self.summary
        finally:
            self._close()
            self._collect()

    def _on_header(self, lineno: int, rec: HeaderRecord) -> None:
        if rec.format != FORMAT:
            raise TransferError(f"format {rec.format[:40]!r} is not {FORMAT!r}", lineno)
        if rec.version != VERSION:
            newer = " (written by a newer EvoForge)" if rec.version > VERSION else ""
            raise TransferError(f"format version {rec.version}{newer}: this EvoForge reads "
                                f"version {VERSION}", lineno)

    def _on_campaign(self, lineno: int, rec: CampaignRecord) -> None:
        s = Sanitizer()
        try:
            task, params = resolve_task(rec.task, s.json(rec.params, "params"))
        except SpecError as exc:
            raise TransferError(f"campaign: {exc}", lineno) from None
        from evoforge.evaluators.base import task_key

        row = dict(
            project_id=self.project_id, name=s.text(rec.name, "name", max_chars=200),
            task=task.name, params=params.model_dump(mode="json"),
            task_key=task_key(task, params), status=arrival_status(rec.status), seed=rec.seed,
            parallel=rec.parallel, islands=rec.islands, config=s.json(rec.config, "config"),
            seed_program=s.text(rec.seed_program, "seed_program", max_chars=MAX_PROGRAM_CHARS),
            error=s.text(rec.error, "error", max_chars=2000),
            meta_note=s.text(rec.meta_note, "meta_note", max_chars=20_000),
            created_at=rec.created_at or datetime.now(timezone.utc), started_at=rec.started_at,
            finished_at=rec.finished_at, max_evaluations=rec.max_evaluations,
            iterations_reserved=rec.iterations_reserved, tokens_reserved=rec.tokens_reserved,
            cost_reserved_usd=rec.cost_reserved_usd, evaluations=rec.evaluations,
            sandbox_runs=rec.sandbox_runs, cache_hits=rec.cache_hits, failures=rec.failures,
            rejected=rec.rejected, novelty_skips=rec.novelty_skips, tokens=rec.tokens,
            cost_usd=rec.cost_usd, eval_seconds=rec.eval_seconds, best_score=rec.best_score,
            best_program_id=None, seed_score=rec.seed_score, adhoc=False)
        try:  # the config document must load as this version's CampaignConfig does
            config = CampaignConfig.load(Campaign(**{k: row[k] for k in (
                "config", "islands", "task", "params", "name", "seed", "parallel")}))
        except (ValidationError, ValueError, TypeError) as exc:
            raise TransferError(f"campaign: its config is not one this EvoForge can run "
                                f"({_short(exc)})", lineno) from None
        if config.schedule is not None:
            self.summary.notes.append("its schedule was kept: the scheduler opens its runs "
                                      "once it is resumed")
        if self.admit is not None:
            self.admit(config)
        self.summary.notes.extend(s.notes)
        self.campaign, self.best_old = row, rec.best_program_id
        self.summary.status = row["status"]

    def _on_problem(self, lineno: int, rec: ProblemRecord) -> None:
        if self.campaign is None or self.campaign["task"] != "openevolve":
            raise TransferError("a problem record for a campaign that runs no problem", lineno)
        self._check_problem(lineno, rec)
        if self.campaign["params"].get("problem") != rec.digest:
            raise TransferError("the problem is not the one the campaign's params name", lineno)
        self.problem = rec
        self.summary.problem = rec.digest

    def _check_problem(self, lineno: int, rec: ProblemRecord) -> None:
        """The same limits and path rules as an upload; its content must hash to its digest."""
        from evoforge.evaluators.openevolve.files import path_refusal, refusal
        from evoforge.evaluators.openevolve.package import MAX_FILE_BYTES, MAX_FILES, MAX_TOTAL_BYTES

        if len(rec.files) > MAX_FILES:
            raise TransferError(f"problem: more than {MAX_FILES} files", lineno)
        total = 0
        for path, text in rec.files.items():
            size = len(text.encode("utf-8", "surrogatepass"))
            total += size
            why = path_refusal(path) or (f"over {MAX_FILE_BYTES} bytes" if size > MAX_FILE_BYTES
                                         else None) or refusal(path, text)
            if why:
                raise TransferError(f"problem file {path[:100]!r}: {why}", lineno)
        if total > MAX_TOTAL_BYTES:
            raise TransferError(f"problem: more than {MAX_TOTAL_BYTES} bytes of files", lineno)
        for role, path in (("seed", rec.seed_path), ("evaluator", rec.evaluator_path)):
            if path not in rec.files:
                raise TransferError(f"problem: its {role} {path[:100]!r} is not among its files",
                                    lineno)
        if problem_digest(rec) != rec.digest:
            raise TransferError("problem: its files and config do not hash to its digest", lineno)
        s = Sanitizer()
        if s.json(rec.config, "config") != rec.config:
            raise TransferError("problem: its config holds values no stored problem has", lineno)

    def _on_code(self, lineno: int, rec: CodeRecord) -> None:
        if rec.hash <= self.last_code:
            raise TransferError("code records must come in increasing hash order, each once",
                                lineno)
        self.last_code = rec.hash
        if hashing.code_hash(rec.code) != rec.hash:
            raise TransferError("a code record whose text does not hash to its hash", lineno)
        if Sanitizer().text(rec.code, "code", max_chars=MAX_PROGRAM_CHARS) != rec.code:
            raise TransferError("a code record with text no stored program has (NUL or a lone "
                                "surrogate)", lineno)
        self.codes_pending.append(rec.code)
        self.codes_bytes += len(rec.code)
        self.summary.codes += 1
        if self.codes_bytes >= CODE_BATCH_BYTES or len(self.codes_pending) >= 5 * BATCH:
            self._flush_codes()

    def _flush_codes(self) -> None:
        """A batch of code blobs, so that a failed import leaves none it created (module doc):
        SQLite, in the one transaction; PostgreSQL, committed in a short transaction of its own
        (remembering the hashes it created), then held by the one transaction."""
        if not self.codes_pending:
            return
        codes, self.codes_pending, self.codes_bytes = self.codes_pending, [], 0
        self._open()
        if self.conn.dialect.name != "postgresql":
            blobs.put_codes(self.conn, codes)
            return
        rows = [blobs.code_row(c) for c in codes]   # compressed outside any transaction
        with self.engine.begin() as short:
            created = blobs.insert_new_code_rows(short, rows)
        self.created += b"".join(bytes.fromhex(h) for h in sorted(created))
        # held FOR KEY SHARE until the import's transaction ends; one that a concurrent gc
        # took between the two transactions is put back, in this one
        blobs.hold_codes(self.conn, {r["hash"]: c for r, c in zip(rows, codes)})

    def _collect(self) -> None:
        """After a failure (the transaction rolled back): the code blobs this import created
        that nothing refers to are deleted by the gc's lock-then-look (db/blobs.py), a chunk at
        a time. Never raises: the import's own error is the one to report."""
        created, self.created = self.created, bytearray()
        step = 32 * GC_CHUNK
        for i in range(0, len(created), step):
            chunk = [created[j:j + 32].hex() for j in range(i, min(len(created), i + step), 32)]
            try:
                with self.engine.begin() as conn, Session(bind=conn) as s:
                    blobs.gc_code_blobs(s, only=chunk)
            except Exception:
                log.warning("a failed import's %d code blob(s) were not collected (a prune's gc "
                            "will)", (len(created) - i) // 32, exc_info=True)
                return

    # -- the one transaction --------------------------------------------------------------------
    def _open(self) -> None:
        """The one transaction; on SQLite it takes the write lock at BEGIN (IMMEDIATE): it reads
        before it writes when the file has no code, and a deferred transaction would then fail
        at once on a concurrent commit instead of waiting on busy_timeout."""
        if self.conn is None:
            self.conn = self.engine.connect().execution_options(sqlite_begin_immediate=True)
            self.conn.begin()
            self.session = Session(bind=self.conn)

    def _begin(self) -> None:
        if self.summary.campaign_id:
            return
        self._flush_codes()
        if self.campaign["params"].get("problem") and self.problem is None:
            raise TransferError("the campaign runs a stored problem that the file does not hold")
        self._open()
        problem_id = self._insert_problem() if self.problem is not None else None
        row = dict(self.campaign, problem_id=problem_id)
        self.summary.campaign_id = self.conn.execute(
            insert(C).returning(C.c.id), row).scalar_one()

    def _insert_problem(self) -> int:
        r = self.problem
        found = self.conn.scalar(select(PR.c.id).where(
            PR.c.digest == r.digest, (PR.c.project_id == self.project_id)
            if self.project_id is not None else PR.c.project_id.is_(None)))
        if found is not None:
            return found
        s = Sanitizer()
        report = s.json(r.report, "report")
        sizes = [len(t.encode()) for t in r.files.values()]
        return self.conn.execute(insert(PR).returning(PR.c.id), dict(
            project_id=self.project_id, digest=r.digest, name=s.text(r.name, "name", max_chars=200),
            layout=r.layout, seed_path=r.seed_path, evaluator_path=r.evaluator_path,
            files=dict(r.files), config=r.config, stages=r.stages,
            requirements=list(r.requirements), report=report if isinstance(report, dict) else {},
            size_bytes=sum(sizes), file_count=len(sizes),
            created_at=datetime.now(timezone.utc))).scalar_one()

    def _on_program(self, lineno: int, rec: ProgramRecord) -> None:
        self._begin()
        last = self.programs_pending[-1][1].id if self.programs_pending else self.ids.last
        if rec.id <= last:
            raise TransferError("program records must come in increasing id order", lineno)
        if rec.parent_id is not None:
            if rec.parent_id >= rec.id:
                raise TransferError("a program's parent must come before it", lineno)
            if rec.parent_id not in self.ids and rec.parent_id not in self.pending_ids:
                raise TransferError(f"program {rec.id}'s parent {rec.parent_id} is not in the "
                                    "file (lineage broken)", lineno)
        self.programs_pending.append((lineno, rec))
        self.pending_ids.add(rec.id)
        if len(self.programs_pending) >= BATCH:
            self._flush_programs()

    def _clean(self, rec: ProgramRecord) -> tuple[Child, dict[str, Any]]:
        """The program and its evaluation through clean_child: the commit's rules."""
        ev = rec.evaluation
        result = EvalResult(status=ev.status if ev else rec.status,
                            score=ev.score if ev else rec.score,
                            metrics=ev.metrics if ev else {}, features=ev.features if ev else {},
                            artifacts=ev.artifacts if ev else {},
                            duration_s=ev.duration_s if ev else 0.0,
                            functional_hash=ev.functional_hash if ev else None)
        mutation = Mutation(code=None, kind=rec.kind, prompt=rec.prompt, response=rec.response,
                            model=rec.model, prompt_tokens=rec.prompt_tokens,
                            completion_tokens=rec.completion_tokens, cost_usd=rec.cost_usd,
                            extra=rec.extra)
        child = clean_child(Child(iteration=rec.iteration, island=rec.island, parent_id=None,
                                  generation=rec.generation, code=None, code_hash=rec.code_hash,
                                  mutation=mutation, result=result))
        return child, child.result.artifacts

    def _flush_programs(self) -> None:
        batch, self.programs_pending = self.programs_pending, []
        self.pending_ids = set()
        if not batch:
            return
        islands = self.campaign["islands"]
        for lineno, rec in batch:
            if rec.island >= islands:
                raise TransferError(f"program {rec.id} is on island {rec.island} of {islands}",
                                    lineno)
        cleaned = [self._clean(rec) for _, rec in batch]
        codes, parent_hash = self._refs(batch, cleaned)
        rows, referred = [], {}
        for (_, rec), (child, _) in zip(batch, cleaned):
            m, r = child.mutation, child.result
            parent = {h: codes[h] for h in (parent_hash.get(rec.parent_id),) if h in codes}
            quoted = {h: codes[h] for h in blobs.quoted_hashes(m.prompt or "") if h in codes}
            own = {h: codes[h] for h in (rec.code_hash,) if h in codes}
            prompt = None if m.prompt is None else blobs.encode_text(m.prompt, {**parent, **quoted})
            response = (None if m.response is None
                        else blobs.encode_text(m.response, {**parent, **own}))
            referred.update((h, codes[h])
                            for h in blobs.ref_hashes(prompt) + blobs.ref_hashes(response))
            rows.append(dict(
                campaign_id=self.summary.campaign_id, iteration=rec.iteration,
                parent_id=self.ids.get(rec.parent_id), island=rec.island,
                generation=rec.generation, code_hash=rec.code_hash, kind=m.kind, model=m.model,
                prompt_z=prompt, response_z=response,
                prompt_tokens=m.prompt_tokens, completion_tokens=m.completion_tokens,
                cost_usd=m.cost_usd, extra=m.extra, status=r.status, score=r.score,
                created_at=rec.created_at or datetime.now(timezone.utc), pruned_at=rec.pruned_at))
        new_ids = list(self.conn.execute(
            insert(P).returning(P.c.id, sort_by_parameter_order=True), rows).scalars())
        blobs.hold_codes(self.conn, referred)   # a concurrent prune's gc cannot take them now
        late = []  # parents inside this batch: their new ids are known only now
        for (_, rec), row, new in zip(batch, rows, new_ids):
            self.ids.add(rec.id, new)
            if rec.parent_id is not None and row["parent_id"] is None:
                late.append({"c": new, "p": self.ids.get(rec.parent_id)})
        if late:
            self.conn.execute(update(P).where(P.c.id == bindparam("c"))
                              .values(parent_id=bindparam("p")), late)
        self._insert_evaluations(batch, cleaned, new_ids)
        self.summary.programs += len(batch)

    def _refs(self, batch: list[tuple[int, ProgramRecord]], cleaned: list[tuple[Child, Any]]
              ) -> tuple[dict[str, str], dict[int, str | None]]:
        """What the batch's prompts and responses may refer to, as the store's commit encodes
        them (db/store.py `_encode_texts`): each program's own code, its parent's, and the stored
        programs its prompt quotes ({hash: code}); and each parent's code hash by its old id."""
        parent_hash: dict[int, str | None] = {rec.id: rec.code_hash for _, rec in batch}
        outside = {rec.parent_id: self.ids.get(rec.parent_id) for _, rec in batch
                   if rec.parent_id is not None and rec.parent_id not in parent_hash}
        if outside:
            by_new = dict(self.conn.execute(select(P.c.id, P.c.code_hash)
                                            .where(P.c.id.in_(set(outside.values())))).all())
            parent_hash.update({old: by_new.get(new) for old, new in outside.items()})
        wanted = {h for h in parent_hash.values() if h}
        for child, _ in cleaned:
            if child.mutation.prompt:
                wanted.update(blobs.quoted_hashes(child.mutation.prompt))
        return (blobs.get_codes(self.session, wanted) if wanted else {}), parent_hash

    def _insert_evaluations(self, batch, cleaned, new_ids: list[int]) -> None:
        rows, sources = [], []
        for (lineno, rec), (child, artifacts), new in zip(batch, cleaned, new_ids):
            ev = rec.evaluation
            if ev is None:
                continue
            r = child.result
            rows.append(dict(
                program_id=new, task_key=ev.task_key, status=r.status, score=r.score,
                metrics=r.metrics, features=r.features, artifacts=artifacts,
                duration_s=r.duration_s, code_hash=ev.code_hash, functional_hash=ev.functional_hash,
                cache=ev.cache, source_evaluation_id=None,
                created_at=ev.created_at or datetime.now(timezone.utc)))
            source = self.ids.get(ev.source_program_id)
            if source is not None and source != new:
                sources.append({"p": new, "sp": source})
        if rows:
            self.conn.execute(insert(E), rows)
        if sources:
            src = E.alias("src")
            self.conn.execute(
                update(E).where(E.c.program_id == bindparam("p"))
                .values(source_evaluation_id=select(src.c.id).where(
                    src.c.program_id == bindparam("sp")).scalar_subquery()), sources)

    def _on_elite(self, lineno: int, rec: EliteRecord) -> None:
        self._begin()
        self._flush_programs()
        if rec.island >= self.campaign["islands"]:
            raise TransferError(f"an elite on island {rec.island} of {self.campaign['islands']}",
                                lineno)
        new = self.ids.get(rec.program_id)
        if new is None:
            raise TransferError(f"an elite whose program {rec.program_id} is not in the file",
                                lineno)
        s = Sanitizer()
        features = s.json(rec.features, "features")
        self.elites_pending.append(dict(
            campaign_id=self.summary.campaign_id, island=rec.island, cell=rec.cell,
            program_id=new, score=rec.score, features=features if isinstance(features, dict) else {},
            updated_at=rec.updated_at or datetime.now(timezone.utc)))
        self.summary.elites += 1
        if len(self.elites_pending) >= BATCH:
            self._flush_elites()

    def _flush_elites(self) -> None:
        if self.elites_pending:
            self.conn.execute(insert(EC), self.elites_pending)
            self.elites_pending = []

    def _on_model_stat(self, lineno: int, rec: ModelStatRecord) -> None:
        self._begin()
        self._flush_programs()
        self._flush_elites()
        model = Sanitizer().text(rec.model, "model", max_chars=200)
        self.conn.execute(insert(MS), dict(campaign_id=self.summary.campaign_id, model=model,
                                           pulls=rec.pulls, valid=rec.valid,
                                           improvement=rec.improvement, spend=rec.spend))
        self.summary.model_stats += 1

    def _on_end(self, lineno: int, rec: EndRecord) -> None:
        self._begin()
        self._flush_programs()
        self._flush_elites()
        counted = {"code": self.summary.codes, "program": self.summary.programs,
                   "elite": self.summary.elites, "model_stat": self.summary.model_stats}
        for kind, n in rec.records.items():
            if counted[kind] != n:
                raise TransferError(f"the end record counts {n} {kind} records, the file has "
                                    f"{counted[kind]}", lineno)
        self._end_line = lineno

    def _commit(self) -> None:
        cid = self.summary.campaign_id
        lineno = getattr(self, "_end_line", None)
        if self.conn.dialect.name == "postgresql":  # held until the commit (db/blobs.py)
            self.conn.execute(select(CODE_BLOB.c.hash).where(CODE_BLOB.c.hash.in_(
                select(P.c.code_hash).where(P.c.campaign_id == cid, P.c.pruned_at.is_(None))))
                .with_for_update(key_share=True, read=True)).all()   # FOR KEY SHARE
        missing = self.conn.scalar(
            select(func.count(func.distinct(P.c.code_hash)))
            .where(P.c.campaign_id == cid, P.c.code_hash.is_not(None), P.c.pruned_at.is_(None),
                   ~select(CODE_BLOB.c.hash).where(CODE_BLOB.c.hash == P.c.code_hash).exists()))
        if missing:
            raise TransferError(f"{missing} program text(s) that are not pruned are missing from "
                                "the file (or were collected meanwhile: import again)", lineno)
        best = self.ids.get(self.best_old)
        if self.best_old is not None and best is None:
            raise TransferError(f"the campaign's best program {self.best_old} is not in the file",
                                lineno)
        if best is not None:
            self.conn.execute(update(C).where(C.c.id == cid).values(best_program_id=best))
        self.conn.commit()

    def _close(self) -> None:
        if self.session is not None:
            self.session.close()
        if self.conn is not None:
            if self.conn.in_transaction():
                self.conn.rollback()
            self.conn.close()


CODE_BLOB = CodeBlob.__table__


def _short(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                         for e in exc.errors(include_url=False, include_input=False)[:3])
    return str(exc)[:300]


def project_id_of(sessions: sessionmaker[Session], name: str) -> int:
    with sessions() as s:
        pid = s.scalar(select(Project.id).where(Project.name == name))
    if pid is None:
        raise SpecError(f"no project named {name[:200]!r}")
    return pid


def import_campaign(sessions: sessionmaker[Session], source: IO[bytes], *,
                    project_id: int | None = None, max_bytes: int | None = None,
                    admit: Admit | None = None) -> ImportSummary:
    """Restore an export file (a binary stream) as a new campaign of `project_id`.

    `max_bytes`: the most the file may expand to (None: no limit, the operator's file).
    `admit(config)`: called with the campaign's config before anything is written; raises to
    refuse it (the REST API checks the mutator's LLM endpoint there). TransferError on a file
    that cannot be imported; nothing of the campaign is written then."""
    return _Importer(sessions, project_id=project_id, admit=admit).run(_lines(source, max_bytes))
