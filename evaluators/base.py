"""The Task contract (trusted code) and the task registry.

A task describes one problem: how a candidate is called (`entrypoint`, `probe`, `stages`), how
its returned data is judged (`score`, run outside the sandbox on plain data), what the LLM is told
(`context`) and where evolution starts (`seed_program`). Bump `version` when scoring changes:
the evaluation cache is keyed by task name + params + version.

The registry holds the built-in tasks (one package each under `evaluators/`, imported only when
asked for) and the plugins of other installed distributions: an entry point in the group
`evoforge.tasks` whose name is the task's name and whose value, `module:attribute`, is the Task
object itself (an instance, not its class). The loader registers it; the module need not call
`register`. A plugin that fails to import, is not a Task, or takes a name already taken is
skipped with a logged warning: an installed package can never break `evoforge tasks`, the API or
a worker. See docs/tasks/writing-a-task.md (`evoforge new-task` writes one).
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
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
    # A task whose params may leave the relative feature out also defines
    #     wants_relative_features(params) -> bool
    # and the hook is wired only where it answers True (no fingerprints read on commit).
    # Optional too: `archive_axes: ClassVar[int]`, how many of `feature_dims` (1 by default, at
    # most 2) the archive bins besides code size (worker/campaign_service.py archive_dims).


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
PLUGIN_GROUP = "evoforge.tasks"
TASK_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")  # what a plugin's task may be called
_log = logging.getLogger(__name__)


def register(task: Task) -> Task:
    name, module = getattr(task, "name", None), type(task).__module__
    if name in _BUILTINS and module.partition(".")[2].split(".")[:2] != ["evaluators", name]:
        raise ValueError(f"task name {name!r} belongs to a built-in task")
    _REGISTRY[name] = task
    return task


def get_task(name: str) -> Task:
    if name not in _REGISTRY and name in _BUILTINS:  # import only the package asked for:
        _load_builtins((name,))                      # all of them costs seconds (scipy, skfolio)
    if name not in _REGISTRY:
        _load_plugins()
    if name not in _REGISTRY:
        _load_builtins()  # for the list of known names below
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise KeyError(f"unknown task {name!r} (known: {known})") from None


def all_tasks() -> dict[str, Task]:
    """Every task: the built-ins and the installed plugins (the CLI, the API and the dashboard
    list these)."""
    _load_builtins()
    _load_plugins()
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


def builtin_names() -> tuple[str, ...]:
    """The names of the tasks shipped in evaluators/ (no plugin may take one)."""
    return _BUILTINS


def _load_builtins(names: tuple[str, ...] = _BUILTINS) -> None:
    """Import the built-in task packages asked for (each registers its task on import)."""
    import importlib

    for mod in names:
        importlib.import_module(f"evoforge.evaluators.{mod}")


_plugins_loaded = False
_plugins_loading = False             # in this thread, further up the stack (a plugin's import)
_plugins_lock = threading.RLock()    # threads wait for the first load, never see half of it
_PLUGIN_OWNERS: dict[str, str] = {}  # task name -> the entry point that registered it


def _load_plugins() -> None:
    """Register the installed plugins, once per process (a newly installed plugin is seen by
    processes started after it). Each one is checked on its own; a bad one is skipped."""
    global _plugins_loaded, _plugins_loading
    if _plugins_loaded:
        return
    with _plugins_lock:
        if _plugins_loaded or _plugins_loading:
            return
        _plugins_loading = True
        try:
            _register_plugins()
        finally:
            _plugins_loaded, _plugins_loading = True, False


def _register_plugins() -> None:
    from importlib.metadata import entry_points

    try:
        found = list(entry_points(group=PLUGIN_GROUP))
    except Exception as exc:  # a broken installed distribution's metadata
        _log.warning("task plugins not loaded: reading entry points failed: %s", _one_line(exc))
        return
    seen: set[tuple[str, str]] = set()
    for ep in found:
        if (ep.name, ep.value) in seen:  # one distribution seen twice on sys.path
            continue
        seen.add((ep.name, ep.value))
        label = f"{ep.name} = {ep.value}" + (f" (from {ep.dist.name})" if ep.dist else "")
        before = dict(_REGISTRY)
        try:
            task = _plugin_task(ep)
        except Exception as exc:
            _log.warning("task plugin %s skipped: %s", label, _one_line(exc))
            task = None
        for name in list(_REGISTRY):  # what its import registered on its own, unchecked, goes
            if name not in _BUILTINS and _REGISTRY[name] is not before.get(name):
                if name in before:
                    _REGISTRY[name] = before[name]
                else:
                    del _REGISTRY[name]
        if task is not None:
            _REGISTRY[task.name] = task
            _PLUGIN_OWNERS[task.name] = label


def _plugin_task(ep: Any) -> Task:
    if ep.name in _BUILTINS:
        raise ValueError(f"{ep.name!r} is a built-in task's name")
    if ep.name in _PLUGIN_OWNERS:
        raise ValueError(f"{ep.name!r} is already registered by {_PLUGIN_OWNERS[ep.name]}")
    if not TASK_NAME.fullmatch(ep.name):
        raise ValueError(f"{ep.name!r} is not a task name (lowercase letters, digits, _; 1-64)")
    try:
        task = ep.load()
    except Exception as exc:
        raise ValueError(f"import failed: {type(exc).__name__}: {exc}") from None
    problem = task_problem(task)
    if problem:
        raise ValueError(f"not a Task: {problem}")
    if task.name != ep.name:
        raise ValueError(f"the entry point is named {ep.name!r} but its task is {task.name!r}")
    return task


_METHODS = ("seed_program", "context", "probe", "stages", "score", "feature_dims")


def task_problem(task: Any) -> str:
    """Why `task` does not satisfy the Task protocol ("" when it does): the attributes are
    checked, and `Params()` must build (the defaults are what a campaign starts from)."""
    if isinstance(task, type):
        return f"{task.__name__} is a class; name an instance of it"
    for attr, kind in (("name", str), ("version", int), ("entrypoint", str),
                       ("resources", Resources)):
        value = getattr(task, attr, None)
        if not isinstance(value, kind) or isinstance(value, bool):
            return f"{attr} must be a {kind.__name__}, got {type(value).__name__}"
    if not task.entrypoint.isidentifier():
        return f"entrypoint {task.entrypoint!r} is not a Python name"
    if not hasattr(task, "driver") or not isinstance(task.driver, (str, type(None))):
        return "driver must be a str or None"
    params = getattr(task, "Params", None)
    if not (isinstance(params, type) and issubclass(params, BaseModel)):
        return "Params must be a pydantic BaseModel class"
    missing = [m for m in _METHODS if not callable(getattr(task, m, None))]
    if missing:
        return "missing method(s): " + ", ".join(missing)
    try:
        params()
    except Exception as exc:
        return f"Params() fails without arguments ({type(exc).__name__}): give every field a default"
    try:
        params.model_json_schema()  # what the API and the dashboard's form show
    except Exception as exc:
        return f"Params has no JSON schema ({type(exc).__name__})"
    return ""


def task_source(name: str) -> str:
    """Where a registered task comes from: "built-in", or its plugin's entry point."""
    return _PLUGIN_OWNERS.get(name, "built-in")


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())[:300]
