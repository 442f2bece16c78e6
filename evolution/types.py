"""Messages passed between the parts of EvoForge: frozen dataclasses, plain data only.

Nothing here knows about storage, HTTP, Celery or sandboxes. Every other package builds on
these types, so they change rarely and only additively.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Outcome statuses of one evaluation. "ok" is the only success.
OK = "ok"
INVALID = "invalid"      # ran, but the trusted validator rejected the output
ERROR = "error"          # raised, or did not define the entrypoint, or returned unsupported data
TIMEOUT = "timeout"      # wall-clock or CPU limit
MEMORY = "memory"        # address-space limit
KILLED = "killed"        # died by a signal (segfault, killed by itself, ...)
REJECTED = "rejected"    # never reached the sandbox: edit did not apply, syntax error, novelty gate
EVAL_STATUSES = (OK, INVALID, ERROR, TIMEOUT, MEMORY, KILLED, REJECTED)


@dataclass(frozen=True)
class FeatureDim:
    """A MAP-Elites axis with fixed bin edges: `bins` equal bins over [lo, hi], clamped."""

    name: str
    lo: float
    hi: float
    bins: int = 10


@dataclass(frozen=True)
class StageResult:
    """What a task's trusted `score()` says about one stage's outputs."""

    valid: bool
    combined_score: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)
    features: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    artifacts: dict[str, Any] = field(default_factory=dict)  # task-reported, e.g. OpenEvolve's
    passed: bool | None = None  # the task's own cascade decision; None: combined_score >= threshold


@dataclass(frozen=True)
class EvalResult:
    """The full outcome of evaluating one program (all cascade stages)."""

    status: str
    score: float | None
    metrics: dict[str, Any] = field(default_factory=dict)
    features: dict[str, float] = field(default_factory=dict)
    artifacts: dict[str, Any] = field(default_factory=dict)  # stderr tail, reason, stage, ...
    duration_s: float = 0.0
    functional_hash: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == OK


@dataclass(frozen=True)
class ProbeResult:
    """Outcome of running the cheap probe inputs: a functional hash, or the failed evaluation."""

    functional_hash: str | None
    failure: EvalResult | None = None
    duration_s: float = 0.0
    inputs: list[Any] = field(default_factory=list)   # the probe calls ...
    outputs: list[Any] = field(default_factory=list)  # ... and what they returned (reused by stages)
    artifacts: dict[str, Any] = field(default_factory=dict)  # what the sandbox captured (stderr tail)


@dataclass(frozen=True)
class ProgramRef:
    """A stored program as the evolution logic sees it."""

    id: int
    code: str
    score: float | None
    status: str
    island: int
    generation: int
    metrics: dict[str, Any] = field(default_factory=dict)
    features: dict[str, float] = field(default_factory=dict)
    artifacts: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Mutation:
    """A proposed child program. `code` is None when the edit failed (see `error`)."""

    code: str | None
    kind: str                      # "seed", "ast:const", "ast:swap-op", "llm:diff", "llm:rewrite", ...
    error: str = ""                # why no program came out (diff did not apply, syntax error, ...)
    prompt: str | None = None
    response: str | None = None
    model: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)  # idea, review, ...
