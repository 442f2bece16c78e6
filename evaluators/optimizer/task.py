"""The optimizer task: evolve an elementwise update rule, scored against tuned Adam."""
from __future__ import annotations

import math
import time
import types
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, Field

from evoforge.evaluators.base import FeatureDim, Resources, Stage
import evoforge.evaluators.optimizer.harness as harness
import evoforge.evaluators.optimizer.problems as problems
from evoforge.evolution.types import StageResult

HERE = Path(__file__).parent
DRIVER_SOURCE = (HERE / "harness.py").read_text()
BASELINES = ("adam", "sgd", "lion")
MAX_LOG10_RATIO = 2.0  # one problem moves the score by at most 100x either way

SEED_PROGRAM = '''"""Optimizer candidate: init(param) -> state, update(param, grad, state, t, lr) -> (param, state)."""
import numpy as np

# EVOLVE-BLOCK-START
MOMENTUM = 0.9
NESTEROV = False


def init(param):
    return np.zeros_like(param)


def update(param, grad, state, t, lr):
    velocity = MOMENTUM * state + grad
    step = grad + MOMENTUM * velocity if NESTEROV else velocity
    return param - lr * step, velocity
# EVOLVE-BLOCK-END
'''

CONTEXT = """Task: invent a better first-order optimizer (like Adam, Lion or Adafactor).

Define, in plain Python with numpy only:
    init(param) -> state
    update(param, grad, state, t, lr) -> (new_param, new_state)
`param` and `grad` are float64 numpy arrays of the same shape (a vector, a weight matrix or a
bias); `init` and `update` are called separately for every parameter tensor, so keep all memory
in `state` (any Python object), never in globals. `t` counts steps from 1. `lr` is the base
learning rate of the run times a cosine decay (lr -> 0 at the last step). `new_param` must have
the same shape as `param`; non-finite values end that run as diverged.

The harness trains fixed-seed CPU proxy problems, each over the learning-rate grid
{lrs} and keeps, per problem, the learning rate with the best validation loss:
  - rosenbrock: chained 6-D Rosenbrock from (-1.2, 1, ...), {rosenbrock_steps} full-batch steps;
  - quadratic: 40-D quadratic, condition number 1e3, random rotation, {quadratic_steps} steps;
  - logistic: logistic regression on breast_cancer (standardised), batch 32, {logistic_steps} steps;
  - mlp: 64-32-10 tanh MLP on digits, batch 64, {mlp_steps} steps.
Score = 10 ** mean over problems of clip(log10((adam_loss + floor) / (your_loss + floor)), -2, 2),
with held-out test loss for logistic and mlp, the objective for rosenbrock and quadratic.
Tuned Adam (default betas) scores 1.0; plain SGD about {sgd_score:.3g}; Lion about {lion_score:.3g}.
A run that diverges at one learning rate is fine; diverging at every learning rate of a problem
makes the program invalid. The whole suite must finish in well under a minute on one CPU core:
keep update() vectorised (no Python loops over elements).
"""


class OptimizerParams(BaseModel):
    steps_scale: float = Field(1.0, ge=0.25, le=4.0, description="multiplies every problem's step count")


class OptimizerTask:
    name: ClassVar[str] = "optimizer"
    version: ClassVar[int] = 1
    Params: ClassVar[type[BaseModel]] = OptimizerParams
    entrypoint: ClassVar[str] = "update"
    resources: ClassVar[Resources] = Resources(timeout_s=60.0, memory_mb=1024, gpu=False)
    driver: ClassVar[str | None] = DRIVER_SOURCE

    # ------------------------------------------------------------------ what the LLM sees
    def seed_program(self, params: BaseModel) -> str:
        return SEED_PROGRAM

    def context(self, params: BaseModel) -> str:
        specs = self._specs(params)
        steps = {f"{s['problem']}_steps": s["steps"] for s in specs}
        base = baseline_scores(params.steps_scale)
        return CONTEXT.format(lrs=list(problems.LR_GRID), sgd_score=base["sgd"], lion_score=base["lion"], **steps)

    # ------------------------------------------------------------------ what runs
    def probe(self, params: BaseModel) -> list[dict[str, Any]]:
        return problems.probe_specs()

    def stages(self, params: BaseModel) -> list[Stage]:
        return [
            Stage("probe", self.probe(params), timeout_s=10.0, memory_mb=512),
            Stage("suite", self._specs(params), timeout_s=self.resources.timeout_s,
                  memory_mb=self.resources.memory_mb),
        ]

    def feature_dims(self, params: BaseModel) -> list[FeatureDim]:
        return [
            # > 0: relatively better on the ill-conditioned quadratic than on the MLP
            FeatureDim("quad_vs_mlp", -3.0, 3.0, 10),
            # mean log10 of the chosen learning rates: the optimizer's step-size scale
            FeatureDim("log10_lr", -4.0, 0.5, 9),
        ]

    # ------------------------------------------------------------------ trusted scoring
    def score(self, params: BaseModel, stage: Stage, outputs: list[Any]) -> StageResult:
        try:
            return self._score(params, stage, outputs)
        except Exception as exc:  # malformed outputs of any kind: invalid, never a crash
            return StageResult(valid=False, reason=f"unusable outputs: {type(exc).__name__}: {exc}"[:300])

    def _score(self, params: BaseModel, stage: Stage, outputs: list[Any]) -> StageResult:
        specs = stage.inputs
        picked = assess(specs, outputs)
        if isinstance(picked, str):
            return StageResult(valid=False, reason=picked)
        probe_stage = stage.name == "probe"
        adam = baseline_results("probe" if probe_stage else "suite", params.steps_scale)["adam"]
        logs = {p: log10_ratio(p, adam[p]["loss"], r["loss"]) for p, r in picked.items()}
        combined = 10.0 ** float(np.mean(list(logs.values())))
        metrics: dict[str, Any] = {"score_vs_adam": combined}
        for p, r in picked.items():
            metrics[f"{p}_loss"] = r["loss"]
            metrics[f"{p}_best_lr"] = r["lr"]
            metrics[f"{p}_vs_adam"] = 10.0 ** logs[p]
            metrics[f"{p}_diverged_lrs"] = r["diverged"]
            if "accuracy" in r:
                metrics[f"{p}_accuracy"] = r["accuracy"]
            metrics[f"adam_{p}_loss"] = adam[p]["loss"]
        if probe_stage:
            return StageResult(valid=True, combined_score=combined, metrics=metrics)
        base = baseline_scores(params.steps_scale)
        metrics.update({f"{b}_score": base[b] for b in BASELINES})
        features = {
            "quad_vs_mlp": logs["quadratic"] - logs["mlp"],
            "log10_lr": float(np.mean([math.log10(r["lr"]) for r in picked.values()])),
        }
        return StageResult(valid=True, combined_score=combined, metrics=metrics, features=features)

    def _specs(self, params: BaseModel) -> list[dict[str, Any]]:
        return _suite_specs(params.steps_scale)


# ---------------------------------------------------------------------- helpers (trusted)
@lru_cache(maxsize=4)
def _suite_specs(steps_scale: float) -> list[dict[str, Any]]:
    return problems.problem_specs(steps_scale)


def log10_ratio(problem: str, adam_loss: float, loss: float) -> float:
    floor = problems.LOSS_FLOOR[problem]
    value = math.log10((adam_loss + floor) / (loss + floor))
    return max(-MAX_LOG10_RATIO, min(MAX_LOG10_RATIO, value))


def assess(specs: list[dict[str, Any]], outputs: list[Any]) -> dict[str, dict[str, Any]] | str:
    """Per problem: the learning rate with the best validation loss and its trusted losses.
    Returns a reason string when the outputs are malformed or every run of a problem diverged."""
    if not isinstance(outputs, (list, tuple)) or len(outputs) != len(specs):
        return f"expected {len(specs)} outputs, got {type(outputs).__name__}"
    picked: dict[str, dict[str, Any]] = {}
    for spec, row in zip(specs, outputs):
        name = spec["problem"]
        if not isinstance(row, dict) or not isinstance(row.get("params"), (list, tuple)):
            return f"{name}: output is not a harness result"
        if len(row["params"]) != len(spec["lrs"]):
            return f"{name}: expected {len(spec['lrs'])} runs, got {len(row['params'])}"
        shapes = problems.param_shapes(spec)
        best: dict[str, Any] | None = None
        diverged = 0
        for lr, raw in zip(spec["lrs"], row["params"]):
            arrays = _as_params(raw, shapes)
            if arrays is None:
                diverged += 1
                continue
            losses = problems.evaluate_params(spec, arrays)
            if not all(math.isfinite(v) for v in losses.values()):
                diverged += 1
                continue
            if best is None or losses["val_loss"] < best["val_loss"]:
                best = {"lr": float(lr), **losses}
        if best is None:
            return (f"{name}: no usable run: parameters were non-finite, malformed or gave a non-finite "
                    f"loss at every learning rate {list(spec['lrs'])}")
        best["diverged"] = diverged
        picked[name] = best
    return picked


def _as_params(raw: Any, shapes: list[tuple[int, ...]]) -> list[np.ndarray] | None:
    """The returned tensors as finite float arrays of the expected shapes, else None."""
    if raw is None or not isinstance(raw, (list, tuple)) or len(raw) != len(shapes):
        return None
    out = []
    for value, shape in zip(raw, shapes):
        arr = np.asarray(value, dtype=np.float64)
        if arr.shape != shape or not np.all(np.isfinite(arr)):
            return None
        out.append(arr)
    return out


def baseline_source(name: str) -> str:
    return (HERE / "baselines" / f"{name}.py").read_text()


def run_in_process(code: str, specs: list[dict[str, Any]], seed: int = 0) -> list[Any]:
    """Runs trusted code (the baselines) through the harness here, without a sandbox."""
    module = types.ModuleType("baseline")
    exec(compile(code, "<baseline>", "exec"), module.__dict__)
    return harness.drive(module, specs, seed)


@lru_cache(maxsize=8)
def baseline_results(stage: str, steps_scale: float) -> dict[str, dict[str, dict[str, Any]]]:
    specs = problems.probe_specs() if stage == "probe" else _suite_specs(steps_scale)
    out = {}
    for name in BASELINES:
        picked = assess(specs, run_in_process(baseline_source(name), specs))
        if isinstance(picked, str):  # a harness change broke a baseline: fail loudly
            raise RuntimeError(f"baseline {name} failed: {picked}")
        out[name] = picked
    return out


@lru_cache(maxsize=8)
def baseline_scores(steps_scale: float) -> dict[str, float]:
    res = baseline_results("suite", steps_scale)
    adam = res["adam"]
    return {name: 10.0 ** float(np.mean([log10_ratio(p, adam[p]["loss"], r["loss"])
                                          for p, r in picked.items()]))
            for name, picked in res.items()}


def timed_baselines(steps_scale: float = 1.0) -> dict[str, float]:
    """Seconds each baseline takes through the harness in-process (for docs and bench)."""
    specs = _suite_specs(steps_scale)
    out = {}
    for name in BASELINES:
        t0 = time.perf_counter()
        run_in_process(baseline_source(name), specs)
        out[name] = time.perf_counter() - t0
    return out
