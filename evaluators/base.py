"""The Task contract (trusted code) and the task registry.

A task describes one problem: how a candidate is called (`entrypoint`, `probe`, `stages`), how
its returned data is judged (`score`, run outside the sandbox on plain data), what the LLM is told
(`context`) and where evolution starts (`seed_program`). Bump `version` when scoring changes:
the evaluation cache is keyed by task name + params + version.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel

from evoforge.evolution.types import FeatureDim, StageResult  # noqa: F401  (FeatureDim re-exported)


@dataclass(frozen=True)
class Resources:
    timeout_s: float = 10.0
    memory_mb: int = 1024
    gpu: bool = False            # calls get a `device` argument; Celery routes work to the gpu queue
    cpu_fallback: bool = False   # without a GPU, run on "cpu" instead of failing


@dataclass(frozen=True)
class Stage:
    """One cascade stage: calls to make in the sandbox, limits, and the score needed to go on."""

    name: str
    inputs: list[dict[str, Any]]
    timeout_s: float = 10.0
    memory_mb: int = 1024
    threshold: float | None = None  # stop the cascade when combined_score is below this


class Task(Protocol):
    name: ClassVar[str]
    version: ClassVar[int]
    Params: ClassVar[type[BaseModel]]
    entrypoint: ClassVar[str]
    resources: ClassVar[Resources]
    # Trusted source defining drive(module, inputs, seed) -> list, run in the sandbox; None = call entrypoint.
    driver: ClassVar[str | None]

    def seed_program(self, params: BaseModel) -> str: ...
    def context(self, params: BaseModel) -> str: ...
    def probe(self, params: BaseModel) -> list[dict[str, Any]]: ...
    def stages(self, params: BaseModel) -> list[Stage]: ...
    def score(self, params: BaseModel, stage: Stage, outputs: list[Any]) -> StageResult: ...
    def feature_dims(self, params: BaseModel) -> list[FeatureDim]: ...

    # Optional hook, for behaviour features relative to the campaign's archive (a task sees one
    # program at a time; the store sees the elites). A task that defines it puts a compact,
    # JSON-able fingerprint of the program's behaviour in `StageResult.artifacts[FINGERPRINT_KEY]`
    # and names the relative feature in `feature_dims`. When the store commits a valid program
    # it calls, trusted and outside the sandbox,
    #     relative_features(params, fingerprint, elite_fingerprints) -> dict[str, float]
    # with the fingerprints of the current elites of the program's island (all islands for a
    # program without parent; [] when there are none), merges the answer into the stored
    # `EvalResult.features` and only then computes the MAP-Elites cell. It must be pure and
    # cheap (it runs in the commit transaction); `fingerprint` may be None. Tasks without the
    # hook are unaffected. Wired by worker/runtime.py (db/ never imports evaluators/).


# The artifacts key under which a task with `relative_features` reports its fingerprint.
FINGERPRINT_KEY = "behaviour_fingerprint"


def task_key(task: Task, params: BaseModel) -> str:
    """Cache key: the same program under the same key always scores the same."""
    blob = json.dumps(
        {"task": task.name, "version": task.version, "params": params.model_dump(mode="json")},
        sort_keys=True,
    )
    return f"{task.name}@{task.version}:" + hashlib.sha256(blob.encode()).hexdigest()[:16]


_REGISTRY: dict[str, Task] = {}


def register(task: Task) -> Task:
    _REGISTRY[task.name] = task
    return task


def get_task(name: str) -> Task:
    if name not in _REGISTRY and name in _BUILTINS:  # import only the package asked for:
        _load_builtins((name,))                      # all of them costs seconds (scipy, skfolio)
    if name not in _REGISTRY:
        _load_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise KeyError(f"unknown task {name!r} (known: {known})") from None


def all_tasks() -> dict[str, Task]:
    _load_builtins()
    return dict(sorted(_REGISTRY.items()))


class UnknownParams(ValueError):
    """Params the task does not have (the one check, for every entry point)."""


def parse_params(task: Task, raw: dict[str, Any]) -> BaseModel:
    """Validate user params (strings from the CLI are coerced by Pydantic). Unknown names are
    an error, never silently dropped, even for a Params model that would ignore extras."""
    unknown = sorted(set(raw) - set(task.Params.model_fields))
    if unknown:
        known = ", ".join(task.Params.model_fields) or "none"
        raise UnknownParams(f"unknown params for task {task.name!r}: {', '.join(unknown)} (known: {known})")
    return task.Params.model_validate(raw)


_BUILTINS = ("circle_packing", "matmul", "optimizer", "alpha_factors", "openevolve")


def _load_builtins(names: tuple[str, ...] = _BUILTINS) -> None:
    """Import the built-in task packages asked for (each registers its task on import)."""
    import importlib

    for mod in names:
        importlib.import_module(f"evoforge.evaluators.{mod}")
