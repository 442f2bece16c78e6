"""Pydantic schemas of the REST API (`XCreate` in, `XPublic` out).

The campaign request body is the engine's own `CampaignSpec` (one model for the CLI, the API and
the workers), so the API can never drift from what the engine accepts.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Generic, Literal, TypeVar

import math

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import to_json

from evoforge.db.campaign_config import CampaignSpec, Schedule

# The id columns are INTEGER on both databases: PostgreSQL's holds 2**31 - 1 at most, and a
# larger value in a query is an error there ("integer out of range"), so the API refuses it.
MAX_ID = 2**31 - 1
CampaignStatus = Literal["queued", "running", "paused", "completed", "cancelled", "failed"]
T = TypeVar("T")
MAX_DEPTH = 32


def check_plain_json(value: Any, depth: int = 0) -> None:
    """Reject what a JSON column or response could not hold, before it gets near the database:
    NaN/Infinity, integers beyond 64 bits, NUL characters and lone surrogates, deep nesting."""
    if depth > MAX_DEPTH:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("numbers must be finite (no NaN or Infinity)")
    elif isinstance(value, int):
        if not -(2**63) <= value <= 2**63 - 1:
            raise ValueError("integers must fit in 64 bits")
    elif isinstance(value, str):
        if "\x00" in value:
            raise ValueError("strings must not contain NUL characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("strings must be valid Unicode (no lone surrogates)") from None
    elif isinstance(value, dict):
        for k, v in value.items():
            check_plain_json(k, depth + 1)
            check_plain_json(v, depth + 1)
    elif isinstance(value, (list, tuple)):
        for v in value:
            check_plain_json(v, depth + 1)


def _integral_floats_as_ints(value: Any) -> Any:
    """5.0 is an integer to JSON Schema (and what Python's json sends for a float that is whole).
    Not beyond 64 bits, where no integer field reaches (1e308 would be a 309-digit integer)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    if isinstance(value, dict):
        return {k: _integral_floats_as_ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral_floats_as_ints(v) for v in value]
    return value


class StrictBody(BaseModel):
    """A request body: unknown fields are errors, values must be plain, finite JSON, and each must
    have the JSON type the schema gives it, at any depth: `"5"` and `true` are not integers,
    `"yes"` is not a boolean, `"0.5"` is not a number (pydantic's lax mode reads them as 5, 1,
    True and 0.5). A whole float such as 5.0 is an integer, as in JSON Schema.

    A body built on an engine model (`typed_as`: `CampaignSpec`, `Schedule`) leaves that model lax,
    for config files written by hand: the body's types are checked by one extra pass of the
    engine model in pydantic's strict JSON mode, then the body is validated as before, so a body
    that passes is read exactly as it was. (The pass must use the engine model: a model with a
    "before" validator, as this one, sees Python values, and strict Python mode refuses a JSON
    array for a tuple.) A body of its own sets `strict=True` in its config instead."""

    model_config = ConfigDict(extra="forbid")
    typed_as: ClassVar[type[BaseModel] | None] = None
    untyped: ClassVar[tuple[str, ...]] = ()  # dict fields of any values: left out of the pass

    @model_validator(mode="before")
    @classmethod
    def _plain(cls, data: Any) -> Any:
        check_plain_json(data)
        if cls.typed_as is not None and isinstance(data, dict):
            typed = {k: {} if k in cls.untyped and isinstance(v, dict) else v
                     for k, v in data.items()}
            cls.typed_as.model_validate_json(to_json(_integral_floats_as_ints(typed)), strict=True)
        return data


class CampaignCreate(StrictBody, CampaignSpec):
    """A new campaign: the task, its params, the seed program (default: the task's), or instead a
    stored `problem` (its id; its config gives the defaults of the fields not given), the mutator
    (`local` AST mutator, or `llm` with an OpenAI-compatible base URL and weighted models), the
    MAP-Elites archive, the budget and an optional cron schedule."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"task": "circle_packing", "params": {"n": 26}, "seed": 0, "parallel": 4,
         "budget": {"max_evaluations": 80}},
        {"problem": "5f0c" + "0" * 60, "budget": {"max_evaluations": 21}}]})
    typed_as = CampaignSpec
    untyped = ("params",)  # the task's own params, checked by the task (its Params model)


class ScheduleUpdate(StrictBody, Schedule):
    """A cron schedule (five fields, UTC) and the evaluations each triggered run may add."""

    typed_as = Schedule


class ErrorPublic(BaseModel):
    detail: Any


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


class CampaignPublic(BaseModel):
    id: int
    name: str
    task: str
    params: dict[str, Any]
    problem: str | None = Field(None, description="The stored problem it runs (its id), or null.")
    status: CampaignStatus
    seed: int
    parallel: int
    islands: int
    sandbox: str | None = None
    mutator: dict[str, Any] = Field(default_factory=dict)
    archive: dict[str, Any] = Field(default_factory=dict)
    budget: dict[str, Any] = Field(default_factory=dict)
    schedule: dict[str, Any] | None = None
    evaluations: int
    max_evaluations: int | None
    best_score: float | None
    seed_score: float | None
    best_program_id: int | None
    cache_hits: int
    sandbox_runs: int
    failures: int
    rejected: int
    tokens: int
    cost_usd: float
    eval_seconds: float
    elapsed_s: float | None
    error: str | None
    stop_reason: str | None = Field(None, description="Which budget ended a completed campaign: "
                                    "max_evaluations, max_tokens, max_cost_usd, max_seconds or "
                                    "patience (early stopping).")
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None


class EliteCellPublic(BaseModel):
    cell: str = Field(description='Bin indices along the archive dims, e.g. "3,7".')
    score: float
    program_id: int
    features: dict[str, Any]
    updated_at: datetime | None


class IslandElitesPublic(BaseModel):
    island: int
    cells: list[EliteCellPublic]


class FeatureDimPublic(BaseModel):
    name: str
    lo: float
    hi: float
    bins: int


class ElitesPublic(BaseModel):
    campaign_id: int
    dims: list[FeatureDimPublic]
    islands: list[IslandElitesPublic]


class ProgramSummaryPublic(BaseModel):
    id: int
    campaign_id: int
    iteration: int
    parent_id: int | None
    island: int
    generation: int
    kind: str
    model: str | None
    status: str
    score: float | None
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    created_at: datetime | None
    pruned: bool = Field(False, description="Its code, prompt and response were dropped by a prune "
                                            "(POST /campaigns/{id}/prune); hashes, scores and the "
                                            "evaluation are kept.")


class ProgramPage(Page[ProgramSummaryPublic]):
    """A page of a campaign's programs. `next_after` continues the list from its last item
    (keyset pagination: as fast a million programs deep as on the first page); `offset` pages
    cost as much as the rows they skip."""
    next_after: str | None = Field(None, description="Pass as `after` for the next page; null on "
                                   "the last page.")


class EvaluationPublic(BaseModel):
    id: int
    status: str
    score: float | None
    metrics: dict[str, Any]
    features: dict[str, Any]
    artifacts: dict[str, Any]
    duration_s: float
    code_hash: str | None
    functional_hash: str | None
    cache: str
    source_evaluation_id: int | None
    created_at: datetime | None


class ProgramPublic(ProgramSummaryPublic):
    code: str | None
    code_hash: str | None
    prompt: str | None
    response: str | None
    tokens: int
    extra: dict[str, Any]
    metrics: dict[str, Any]
    evaluation: EvaluationPublic | None
    diff: str | None = Field(description="Unified diff against the parent program (None for a seed).")
    pruned_at: datetime | None = Field(None, description="When it was pruned.")


class LineageEntryPublic(BaseModel):
    id: int
    iteration: int
    generation: int
    parent_id: int | None
    kind: str
    status: str
    score: float | None
    pruned: bool = Field(False, description="Its code, prompt and response were dropped by a prune.")


class LineagePublic(BaseModel):
    program_id: int
    ancestors: list[LineageEntryPublic] = Field(
        description="The program itself first, then its parent, ... up to the seed or the depth limit.")
    truncated: bool


class ProblemFilePublic(BaseModel):
    path: str = Field(description="Relative POSIX path in the problem directory.")
    bytes: int


class ProblemFileTextPublic(ProblemFilePublic):
    text: str


class ProblemSummaryPublic(BaseModel):
    id: str = Field(description="The problem's id: the sha256 of its content (64 hex digits).")
    name: str
    layout: Literal["openevolve", "native"]
    seed: str = Field(description="The seed program's path.")
    evaluator: str = Field(description="The evaluator's path.")
    requirements: list[str]
    file_count: int
    size_bytes: int
    created_at: datetime | None


class ProblemPublic(ProblemSummaryPublic):
    files: list[ProblemFilePublic]
    config: dict[str, Any] = Field(description="OpenEvolve-shaped config (secret keys dropped unread).")
    stages: list[str] | None = Field(description="The native layout's cascade (null: by the "
                                                 "functions the evaluator defines).")
    report: dict[str, Any] = Field(description="skipped files, ignored_secrets, unsupported "
                                               "config keys and notes.")
    campaigns: int = Field(description="Campaigns that run it (it cannot be deleted while any do).")


class TaskPublic(BaseModel):
    name: str
    version: int
    entrypoint: str
    params_schema: dict[str, Any]
    defaults: dict[str, Any]
    resources: dict[str, Any]


class EvaluationCreate(StrictBody):
    # strict: the schema says `seed` is an integer, so `true` and `"5"` are refused, not read as
    # 1 and 5 (pydantic's lax mode would; schemathesis's negative checks send exactly those).
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [
        {"task": "circle_packing", "params": {"n": 26},
         "code": "def pack_circles(n):\n    ...\n"}]})
    task: str = Field(min_length=1, max_length=100)
    params: dict[str, Any] = Field(default_factory=dict)
    code: str = Field(min_length=1, max_length=1_000_000)
    seed: int = Field(0, ge=0, le=2**31 - 1)

    @field_validator("seed", mode="before")
    @classmethod
    def _integral_float(cls, value: Any) -> Any:
        """5.0 is an integer to JSON Schema (and what some clients send for 5): keep it."""
        return int(value) if isinstance(value, float) and value.is_integer() else value


class EvaluationResultPublic(BaseModel):
    status: str
    score: float | None
    metrics: dict[str, Any]
    features: dict[str, Any]
    code_hash: str
    functional_hash: str | None
    cache: str
    reason: str | None
    stderr: str | None
    duration_s: float
    program_id: int
    task_key: str


class HealthPublic(BaseModel):
    status: Literal["ok"]
    database: Literal["ok"]
    mode: Literal["embedded", "broker"]


class PrunePublic(BaseModel):
    campaign_id: int
    pruned: int = Field(description="Programs pruned by this call.")
    kept: int = Field(description="Programs kept in full: the elites, the best, with lineage their "
                                  "ancestors.")
    already_pruned: int
    code_blobs_deleted: int
    database: str
    reclaim: str = Field(description="How the freed space is given back (nothing is vacuumed "
                                     "by the server).")
