"""Campaign configuration, typed: `CampaignSpec` is what a user asks for (CLI, REST API),
`CampaignConfig` what a stored campaign runs with (store, runtime, dispatcher, API, dashboard).

A campaign's `config` column holds one JSON document, `CampaignConfig.document()`: its
`schema_version`, `sandbox`, `mutator`, `archive` (with the feature dims fixed at creation),
`budget` and `schedule`. The facts that have a column of their own (task, params, name, seed,
parallel, archive.islands) live only there; `CampaignConfig.load(row)` puts both together.
`budget.max_evaluations` is the total asked for; the `max_evaluations` column is the run's
limit, where the current run stops (db/models.py).
"""
from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from evoforge.evolution.ensemble import ModelSpec, parse_model_spec
from evoforge.evolution.types import FeatureDim

SCHEMA_VERSION = 1


def _check_prices(v: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
    for name, pair in v.items():
        if not all(math.isfinite(x) and 0 <= x <= 1e6 for x in pair):
            raise ValueError(f"price for {name!r} must be two finite numbers in [0, 1e6]")
    return v


# USD per 1M (prompt, completion) tokens, by model name (a campaign's or an operator endpoint's).
Prices = Annotated[dict[str, tuple[float, float]], AfterValidator(_check_prices)]


def _check_http(v: str) -> str:
    if not v.startswith(("http://", "https://")):
        raise ValueError("base_url must start with http:// or https://")
    return v


HttpURL = Annotated[str, AfterValidator(_check_http)]


class Budget(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_evaluations: int | None = Field(None, ge=1, le=10_000_000,
                                        description="Evaluations in all, the seed program included.")
    max_tokens: int | None = Field(None, ge=1, le=10**12)
    max_cost_usd: float | None = Field(None, gt=0, le=1e7)
    max_seconds: float | None = Field(None, gt=0, le=10**8)
    patience: int | None = Field(
        None, ge=1, le=10_000_000,
        description="Early stopping: end the campaign (completed) once this many evaluations have "
                    "passed since the best score last improved by more than min_improvement.")
    min_improvement: float = Field(0.0, ge=0, le=1e12,
                                   description="The least gain of the best score that resets patience.")


class ModelChoice(BaseModel):
    """A model of the ensemble as a caller writes it (the engine's own is
    `evolution.ensemble.ModelSpec`, made by `spec()`)."""
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    weight: float = Field(1.0, gt=0, le=1e6)

    @classmethod
    def parse(cls, text: str) -> "ModelChoice":
        """`NAME[:WEIGHT]` from the command line (evolution.ensemble.parse_model_spec's rules)."""
        m = parse_model_spec(text)
        return cls(name=m.name, weight=m.weight)

    def spec(self) -> ModelSpec:
        return ModelSpec(self.name, self.weight)


class MutatorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["local", "llm"] = "local"
    endpoint: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$",
        description="An LLM endpoint the operator declared (GET /api/v1/endpoints): its URL, key "
                    "and prices come from the server's configuration.")
    base_url: HttpURL | None = Field(
        None, max_length=500,
        description="Your own OpenAI-compatible server, only where the operator allows it for "
                    "your project; it never gets the server's key.")
    models: list[ModelChoice] = Field(default_factory=list, max_length=32)
    temperature: float = Field(0.7, ge=0, le=2)
    max_tokens: int = Field(4096, ge=16, le=200_000)
    top_p: float | None = Field(None, gt=0, le=1, description="Nucleus sampling; sent only when set.")
    timeout_s: float | None = Field(None, ge=1, le=3600,
                                    description="Wait per LLM request (default 120 s).")
    max_retries: int | None = Field(None, ge=0, le=10,
                                    description="Retries of a 429, 5xx or timed-out request (default 4).")
    retry_delay_s: float | None = Field(None, gt=0, le=300,
                                        description="First backoff before a retry, doubled each time "
                                                    "(with jitter, default 1 s).")
    diff_mode: bool = True
    ideas: bool = False                  # AlphaResearch-style idea + review before code
    bandit: bool = Field(False, description="Choose models by improvement per cost (UCB) instead of weights.")
    meta_interval: int = Field(0, ge=0, le=10**6,
                               description="Refresh a meta note from what improved and failed every this "
                                           "many evaluations, shown in later prompts (0: off).")
    idea_threshold: float = Field(5.0, ge=0, le=10)
    prices: Prices = Field(default_factory=dict, max_length=64,
                           description="USD per 1M (prompt, completion) tokens, by model name")

    @model_validator(mode="after")
    def _one_target(self) -> "MutatorSpec":
        if self.endpoint and self.base_url:
            raise ValueError("give mutator.endpoint or mutator.base_url, not both")
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError("a model is given twice in mutator.models")
        return self


class SelectionSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    exploit: float = Field(0.7, ge=0, le=1, description="Fitness-weighted parent from the island's elites.")
    explore: float = Field(0.2, ge=0, le=1, description="Uniform parent over the island's filled cells.")
    top: float = Field(0.1, ge=0, le=1, description="Parent among the global top programs.")
    global_top_k: int = Field(3, ge=1, le=10_000,
                              description="How many of the best elites, all islands together, a "
                                          "`top` parent is drawn from.")
    top_k: int = Field(3, ge=0, le=20, description="Island top programs shown as inspirations.")
    diverse: int = Field(2, ge=0, le=20, description="Inspirations drawn from other cells and islands.")

    @model_validator(mode="after")
    def _some_ratio(self) -> "SelectionSpec":
        if self.exploit + self.explore + self.top <= 0:
            raise ValueError("exploit, explore and top cannot all be 0")
        return self


class ArchiveSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    islands: int = Field(4, ge=1, le=64)
    bins: int = Field(10, ge=1, le=100)
    migration_interval: int = Field(50, ge=0, le=10**6,
                                    description="Ring migration every this many evaluations (0: never).")
    code_size_range: tuple[float, float] | None = Field(
        None, description="Fixed code-size bin range; default 0.5x..3x the seed program's size.")
    selection: SelectionSpec = Field(default_factory=SelectionSpec)
    novelty_threshold: float | None = Field(
        None, ge=0.5, le=1.0,
        description="Skip a candidate whose MinHash similarity to an elite of its island is at least "
                    "this (off by default: single-constant edits of long programs score ~0.97).")


class Schedule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cron: str = Field(min_length=9, max_length=120, description="Five-field cron expression (UTC).")
    evaluations_per_run: int = Field(100, ge=1, le=10_000_000)

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        from croniter import croniter
        if not croniter.is_valid(v):
            raise ValueError(f"not a valid cron expression: {v!r}")
        return v


class _Settings(BaseModel):
    """The fields a request and a stored campaign share."""
    model_config = ConfigDict(extra="forbid")
    task: str = Field(min_length=1, max_length=100)
    params: dict[str, Any] = Field(default_factory=dict)
    name: str = Field("", max_length=200)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    parallel: int = Field(1, ge=1, le=256)
    sandbox: Literal["fork", "subprocess", "docker"] = "fork"
    mutator: MutatorSpec = Field(default_factory=MutatorSpec)
    budget: Budget = Field(default_factory=Budget)
    schedule: Schedule | None = None


DIGEST = r"^[0-9a-f]{64}$"


class CampaignSpec(_Settings):
    """A campaign as asked for: a task (with its params and an optional seed program), or a
    stored problem by its id (worker/problem_service.py turns it into the task's spec)."""
    task: str | None = Field(None, min_length=1, max_length=100)
    problem: str | None = Field(None, pattern=DIGEST,
                                description="A stored problem's id (POST /api/v1/problems): its "
                                            "config gives the defaults, the fields given here "
                                            "override them.")
    program: str | None = Field(None, max_length=1_000_000, description="Seed program source.")
    archive: ArchiveSpec = Field(default_factory=ArchiveSpec)

    @model_validator(mode="after")
    def _task_or_problem(self) -> "CampaignSpec":
        if (self.task is None) == (self.problem is None):
            raise ValueError("give task or problem, exactly one of them")
        if self.problem is not None and self.program is not None:
            raise ValueError("program cannot be given with problem: the problem has its seed program")
        return self


class ArchiveConfig(ArchiveSpec):
    dims: list[FeatureDim] = Field(default_factory=list,
                                   description="The archive's axes, bin edges fixed at creation.")


# What the stored document holds (the other facts have a column of their own).
_DOCUMENT_KEYS = ("sandbox", "mutator", "archive", "budget", "schedule")


class CampaignConfig(_Settings):
    """A stored campaign's configuration (validated once, at creation; see the module doc)."""
    schema_version: Literal[1] = SCHEMA_VERSION
    archive: ArchiveConfig = Field(default_factory=ArchiveConfig)

    @classmethod
    def create(cls, spec: CampaignSpec, dims: list[FeatureDim]) -> "CampaignConfig":
        if spec.task is None:
            raise ValueError("a problem's spec is resolved to its task first (worker/problem_service.py)")
        fields = spec.model_dump(exclude={"program", "archive", "problem"})
        archive = ArchiveConfig(**spec.archive.model_dump(), dims=dims)
        return cls(**fields, archive=archive)

    def document(self) -> dict[str, Any]:
        """What the `config` column stores."""
        doc = self.model_dump(mode="json", include={"schema_version", *_DOCUMENT_KEYS})
        doc["archive"].pop("islands")
        return doc

    @classmethod
    def load(cls, row: Any) -> "CampaignConfig":
        """The typed config of a `db.models.Campaign` row (its document and its columns)."""
        doc = row.config or {}
        archive = {**(doc.get("archive") or {}), "islands": row.islands}
        return cls.model_validate({
            **{k: doc[k] for k in _DOCUMENT_KEYS if doc.get(k) is not None}, "archive": archive,
            "task": row.task, "params": row.params or {}, "name": row.name or "",
            "seed": row.seed, "parallel": row.parallel})


def stored_budget(doc: dict[str, Any] | None) -> Budget:
    """The `budget` of a stored config document (the `config` column) alone, for queries that
    read that column and not the whole row (`CampaignConfig.load` needs the row)."""
    return Budget.model_validate((doc or {}).get("budget") or {})


def stored_schedule(doc: dict[str, Any] | None) -> Schedule | None:
    """The `schedule` of a stored config document, or None for an unscheduled campaign."""
    raw = (doc or {}).get("schedule")
    return Schedule.model_validate(raw) if raw else None
