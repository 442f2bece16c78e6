"""The `openevolve` task: an OpenEvolve `evaluator.py` run unmodified inside the sandbox.

One registered task serves every OpenEvolve problem: the problem itself (the evaluator's source
and the files shipped with it (files.py), the cascade functions and thresholds, the timeout, the system
message) lives in the task's Params, which are stored with the campaign. So a resumed campaign
or a Celery worker rebuilds exactly the same task from the database, and the evaluation cache
key (task name + params + version) changes whenever the evaluator's files change.

Trusted side (here): which functions to call, per-stage thresholds, and the fitness computed
from the returned metrics (`combined_score`, else the mean of numeric metrics, as OpenEvolve).
Sandbox side (driver.py): write the candidate to a file, import the evaluator, call it.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from evoforge.evaluators.base import FeatureDim, Resources, Stage
from evoforge.evaluators.openevolve.files import SAFE_NAME, check_files
from evoforge.evolution.types import StageResult

DRIVER_SOURCE = (Path(__file__).with_name("driver.py")).read_text()

DEFAULT_CONTEXT = ("Improve the program so that the evaluator's combined_score (higher is "
                   "better) increases. Only change code inside the EVOLVE-BLOCK.")


class OpenEvolveParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    evaluator: str = Field("evaluator.py", pattern=SAFE_NAME.pattern,
                           description="evaluator file name (a key of `files`)")
    files: dict[str, str] = Field(default_factory=dict,
                                  description="the evaluator and the files it reads, shipped into the "
                                              "sandbox (no config, hidden or secret-looking files: "
                                              "docs/openevolve.md)")
    stages: list[str] = Field(default_factory=lambda: ["evaluate"],
                              description="evaluator functions called in cascade order")
    thresholds: list[float] = Field(default_factory=list,
                                    description="cascade_thresholds: stage i goes on when fitness >= thresholds[i]")
    timeout_s: float = Field(300.0, gt=0, le=86400, description="per stage (evaluator.timeout)")
    memory_mb: int = Field(2048, ge=64, le=1 << 20)
    context: str = Field("", description="prompt.system_message")
    feature_metrics: list[str] = Field(default_factory=list,
                                       description="custom feature dimensions (metrics), excluded from fitness")
    feature_bins: int = Field(10, ge=1, le=100)
    max_artifact_chars: int = Field(20480, ge=0, le=10 ** 7)

    @model_validator(mode="after")
    def _ship_only_safe_files(self) -> "OpenEvolveParams":
        # Stored with the campaign, returned by GET /campaigns/{id}, readable by candidates:
        # a config (llm.api_key) or a credentials file must never get here (files.py).
        check_files(self.files, self.evaluator)
        return self


def fitness(metrics: dict[str, Any], exclude: list[str] | tuple = ()) -> float:
    """OpenEvolve's fitness: `combined_score` if numeric, else the mean of the numeric
    (non-bool, non-NaN) metrics that are not feature dimensions; 0.0 when there are none."""
    if "combined_score" in metrics:
        try:
            return float(metrics["combined_score"])
        except (TypeError, ValueError):
            pass
    vals = [float(v) for k, v in metrics.items()
            if k not in exclude and isinstance(v, (int, float)) and not isinstance(v, bool)
            and not math.isnan(float(v))]
    if not vals:  # OpenEvolve falls back to all numeric metrics
        vals = [float(v) for v in metrics.values()
                if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(float(v))]
    return sum(vals) / len(vals) if vals else 0.0


class OpenEvolveTask:
    name: ClassVar[str] = "openevolve"
    # 2: the program's top-level code runs once (imported by the evaluator only), so the random
    # state a stochastic program sees differs from version 1's: cached results are not reused.
    version: ClassVar[int] = 2
    Params: ClassVar[type[BaseModel]] = OpenEvolveParams
    entrypoint: ClassVar[str] = "evaluate"
    resources: ClassVar[Resources] = Resources(timeout_s=300.0, memory_mb=2048, gpu=False)
    driver: ClassVar[str | None] = DRIVER_SOURCE

    def seed_program(self, params: OpenEvolveParams) -> str:
        return ""  # the initial program comes with the campaign (`evoforge openevolve`)

    def context(self, params: OpenEvolveParams) -> str:
        return params.context.strip() or DEFAULT_CONTEXT

    def _call(self, params: OpenEvolveParams, fn: str) -> list[dict[str, Any]]:
        return [{"call": fn, "evaluator": params.evaluator, "files": params.files,
                 "max_artifact_chars": params.max_artifact_chars}]

    def probe(self, params: OpenEvolveParams) -> list[dict[str, Any]]:
        # The probe IS the first stage: its metrics + artifacts are the functional hash, and the
        # pipeline reuses them for stage 1 instead of running it again.
        return self._call(params, params.stages[0])

    def stages(self, params: OpenEvolveParams) -> list[Stage]:
        out = []
        last = len(params.stages) - 1
        for i, fn in enumerate(params.stages):
            threshold = params.thresholds[i] if i < last and i < len(params.thresholds) else None
            out.append(Stage(name=fn, inputs=self._call(params, fn), timeout_s=params.timeout_s,
                             memory_mb=params.memory_mb, threshold=threshold))
        return out

    def score(self, params: OpenEvolveParams, stage: Stage, outputs: list[Any]) -> StageResult:
        if len(outputs) != 1 or not isinstance(outputs[0], dict):
            return StageResult(valid=False, reason="the evaluator driver returned no result")
        metrics = outputs[0].get("metrics")
        artifacts = outputs[0].get("artifacts") or {}
        if not isinstance(metrics, dict) or not isinstance(artifacts, dict):
            return StageResult(valid=False, reason="malformed evaluator result")
        fit = fitness(metrics, params.feature_metrics)
        features = {}
        for name in params.feature_metrics[:1]:
            v = metrics.get(name)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                features[name] = float(v)
        arts = dict(artifacts)  # merged over the stages, as OpenEvolve does
        if not math.isfinite(fit):
            return StageResult(valid=False, combined_score=0.0, metrics=metrics, artifacts=arts,
                               reason=f"non-finite fitness {fit!r} from {stage.name}()")
        return StageResult(valid=True, combined_score=fit, metrics=metrics, features=features,
                           artifacts=arts)

    def feature_dims(self, params: OpenEvolveParams) -> list[FeatureDim]:
        # OpenEvolve scales custom feature metrics adaptively; EvoForge's cells have fixed
        # edges, so a custom feature metric is binned over [0, 1] (values outside are clamped).
        return [FeatureDim(name, 0.0, 1.0, params.feature_bins) for name in params.feature_metrics[:1]]


TASK = OpenEvolveTask()
