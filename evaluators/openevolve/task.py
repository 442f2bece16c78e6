"""The `openevolve` task: an OpenEvolve `evaluator.py` run unmodified inside the sandbox.

One registered task serves every OpenEvolve problem: the problem itself (the evaluator's source
and the files shipped with it (files.py), the cascade functions and thresholds, the timeout, the system
message) lives in the task's Params, which are stored with the campaign. So a resumed campaign
or a Celery worker rebuilds exactly the same task from the database, and the evaluation cache
key (task name + params + version) changes whenever the evaluator's files change.

A stored problem (`problem`: its content digest) keeps `files` empty in the campaign row; the
worker fills them in memory from the `problem` table before evaluating, so the cache key
changes with the digest and no campaign row carries the files.

Trusted side (here): which functions to call, per-stage thresholds, and the fitness computed as
OpenEvolve computes it (`merge_stages`): the metrics of every cascade stage run so far are
merged (numeric values as floats, `error` dropped, later stages win; one stage: its metrics as
returned), then `combined_score` if numeric, else the mean of the numeric, non-bool, non-NaN
metrics that are not feature dimensions. The cascade goes on as OpenEvolve's
`_passes_threshold` says. Sandbox side (driver.py): write the candidate to
`program<file_suffix>`, the problem's files beside the evaluator, import it, call (await) it.
"""
from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from evoforge.evaluators.base import FINGERPRINT_KEY, FeatureDim, Resources, Stage
from evoforge.evaluators.openevolve.files import check_files
from evoforge.evolution.novelty import MinHasher
from evoforge.evolution.types import StageResult

DRIVER_SOURCE = (Path(__file__).with_name("driver.py")).read_text()

DEFAULT_CONTEXT = ("Improve the program so that the evaluator's combined_score (higher is "
                   "better) increases. Only change code inside the EVOLVE-BLOCK.")
# A relative POSIX path: plain components (no hidden, no `..`, no absolute path), depth <= 8.
REL_PATH = r"^(?:[A-Za-z0-9_][A-Za-z0-9_.+-]{0,99}/){0,7}[A-Za-z0-9_][A-Za-z0-9_.+-]{0,99}$"
DIVERSITY, SCORE = "diversity", "score"   # OpenEvolve's built-in feature dimensions
DEFAULT_MEMORY_MB = 4096                  # OpenEvolve sets no cap; its examples need up to ~4 GB


class OpenEvolveParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    problem: str | None = Field(None, pattern=r"^[0-9a-f]{64}$",
                                description="a stored problem's digest: `files` come from it")
    evaluator: str = Field("evaluator.py", pattern=REL_PATH,
                           description="evaluator file (a key of `files`)")
    files: dict[str, str] = Field(default_factory=dict,
                                  description="the evaluator and the files it reads, shipped into the "
                                              "sandbox (no config, hidden or secret-looking files: "
                                              "docs/openevolve.md)")
    stages: list[str] = Field(default_factory=lambda: ["evaluate"],
                              description="evaluator functions called in cascade order")
    thresholds: list[float] = Field(default_factory=list,
                                    description="cascade_thresholds: stage i goes on when fitness >= thresholds[i]")
    timeout_s: float = Field(300.0, gt=0, le=86400, description="per stage (evaluator.timeout)")
    memory_mb: int = Field(DEFAULT_MEMORY_MB, ge=64, le=1 << 20)
    context: str = Field("", description="prompt.system_message")
    feature_metrics: list[str] = Field(default_factory=list, max_length=2,
                                       description="the archive's behaviour axes besides code size: "
                                                   "metric names, or 'diversity' / 'score' (built in)")
    feature_dimensions: list[str] = Field(default_factory=list, max_length=16,
                                          description="database.feature_dimensions, excluded from "
                                                      "fitness as in OpenEvolve")
    feature_bins: int = Field(10, ge=1, le=100)
    max_artifact_chars: int = Field(20480, ge=0, le=10 ** 7)
    language: str = Field("python", pattern=r"^[A-Za-z0-9_+#-]{1,32}$",
                          description="the candidates' language (only Python is syntax-checked)")
    file_suffix: str = Field(".py", pattern=r"^\.[A-Za-z0-9_+-]{1,16}$",
                             description="the candidate is written as program<file_suffix>")
    max_code_length: int | None = Field(None, ge=1, le=10 ** 7,
                                        description="longer candidates fail before they run")
    retries: int = Field(0, ge=0, le=10, description="evaluator.max_retries: calls retried on an exception")

    @model_validator(mode="after")
    def _ship_only_safe_files(self) -> "OpenEvolveParams":
        # Stored with the campaign, returned by GET /campaigns/{id}, readable by candidates:
        # a config (llm.api_key) or a credentials file must never get here (files.py).
        check_files(self.files, self.evaluator)
        return self


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def merged_metrics(stages: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """OpenEvolve's cascade merge: one stage's metrics as they are; from two stages on, the
    numeric values (bools included) of each, as floats, `error` dropped, later stages win."""
    if len(stages) == 1:
        return dict(stages[0])
    out: dict[str, Any] = {}
    for metrics in stages:
        out.update({k: float(v) for k, v in metrics.items()
                    if isinstance(v, (int, float)) and k != "error"})
    return out


def passes_threshold(metrics: dict[str, Any], threshold: float) -> bool:
    """OpenEvolve's `_passes_threshold`: combined_score when numeric, else the mean of every
    numeric value (bools included) but `error`; nothing numeric never passes."""
    score = metrics.get("combined_score")
    if isinstance(score, (int, float)):
        return float(score) >= threshold
    vals = [float(v) for k, v in metrics.items() if k != "error" and isinstance(v, (int, float))]
    return bool(vals) and sum(vals) / len(vals) >= threshold


def fitness(metrics: dict[str, Any], exclude: Sequence[str] = ()) -> float:
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
    # 3: fitness over the merged metrics of every stage, async evaluators awaited, files in
    # subdirectories, the candidate written as program<file_suffix>.
    version: ClassVar[int] = 3
    Params: ClassVar[type[BaseModel]] = OpenEvolveParams
    entrypoint: ClassVar[str] = "evaluate"
    resources: ClassVar[Resources] = Resources(timeout_s=300.0, memory_mb=DEFAULT_MEMORY_MB, gpu=False)
    # What a sandbox limit's failure tells the user to change (evaluators/pipeline.py).
    limit_hints: ClassVar[dict[str, str]] = {
        "memory": "raise it with evaluator.memory_limit_mb in config.yaml",
        "timeout": "raise it with evaluator.timeout in config.yaml"}
    driver: ClassVar[str | None] = DRIVER_SOURCE
    archive_axes: ClassVar[int] = 2  # feature_dimensions: up to two axes besides code size

    def seed_program(self, params: OpenEvolveParams) -> str:
        return ""  # the initial program comes with the campaign (`evoforge openevolve`)

    def context(self, params: OpenEvolveParams) -> str:
        return params.context.strip() or DEFAULT_CONTEXT

    def _call(self, params: OpenEvolveParams, fn: str) -> list[dict[str, Any]]:
        call = {"call": fn, "evaluator": params.evaluator, "files": params.files,
                "max_artifact_chars": params.max_artifact_chars, "suffix": params.file_suffix,
                "retries": params.retries}
        if params.max_code_length is not None:
            call["max_code_length"] = params.max_code_length
        return [call]

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
        """One stage's own result (`merge_stages` then scores every stage's metrics merged)."""
        if len(outputs) != 1 or not isinstance(outputs[0], dict):
            return StageResult(valid=False, reason="the evaluator driver returned no result")
        metrics = outputs[0].get("metrics")
        artifacts = outputs[0].get("artifacts") or {}
        if not isinstance(metrics, dict) or not isinstance(artifacts, dict):
            return StageResult(valid=False, reason="malformed evaluator result")
        return self._judge(params, metrics, dict(artifacts), stage.name)

    def merge_stages(self, params: OpenEvolveParams, code: str, stage: Stage,
                     results: list[StageResult]) -> StageResult:
        """The fitness of every stage's metrics merged, as OpenEvolve scores a cascade, and
        whether the cascade goes on (OpenEvolve's `_passes_threshold` on the same metrics)."""
        last = results[-1]
        if not last.valid:
            return last
        merged = merged_metrics([r.metrics for r in results])
        result = self._judge(params, merged, dict(last.artifacts), stage.name)
        if DIVERSITY in params.feature_metrics and len(results) == 1:
            result.artifacts[FINGERPRINT_KEY] = code_fingerprint(code)
        if stage.threshold is None or not result.valid:
            return result
        return replace(result, passed=passes_threshold(merged, stage.threshold))

    def _judge(self, params: OpenEvolveParams, metrics: dict[str, Any], artifacts: dict[str, Any],
               where: str) -> StageResult:
        fit = fitness(metrics, params.feature_dimensions or params.feature_metrics)
        if not math.isfinite(fit):
            return StageResult(valid=False, combined_score=0.0, metrics=metrics, artifacts=artifacts,
                               reason=f"non-finite fitness {fit!r} from {where}()")
        features = {}
        for name in params.feature_metrics:
            v = metrics.get(name, fit if name == SCORE else None)
            if _number(v) and math.isfinite(v):
                features[name] = float(v)
        return StageResult(valid=True, combined_score=fit, metrics=metrics, features=features,
                           artifacts=artifacts)

    def feature_dims(self, params: OpenEvolveParams) -> list[FeatureDim]:
        # OpenEvolve scales custom feature metrics adaptively; EvoForge's cells have fixed
        # edges, so a custom feature metric is binned over [0, 1] (values outside are clamped).
        # `diversity` is 1 - the mean MinHash similarity to the island's elites, in [0, 1].
        return [FeatureDim(name, 0.0, 1.0, params.feature_bins) for name in params.feature_metrics]

    def wants_relative_features(self, params: OpenEvolveParams) -> bool:
        """Only a `diversity` axis needs the elites' fingerprints at commit time."""
        return DIVERSITY in params.feature_metrics

    def relative_features(self, params: OpenEvolveParams, fingerprint: Any,
                          elite_fingerprints: list[Any]) -> dict[str, float]:
        """`diversity`, when it is a feature dimension (module doc of evolution/novelty.py)."""
        if DIVERSITY not in params.feature_metrics or not isinstance(fingerprint, list):
            return {}
        others = [f for f in elite_fingerprints if isinstance(f, list) and len(f) == len(fingerprint)]
        if not others:
            return {DIVERSITY: 0.0}
        mine = np.asarray(fingerprint, dtype=np.uint64)
        sims = [MinHasher.similarity(mine, np.asarray(f, dtype=np.uint64)) for f in others]
        return {DIVERSITY: 1.0 - sum(sims) / len(sims)}


_HASHER: MinHasher | None = None


def code_fingerprint(code: str) -> list[int]:
    """The program's MinHash signature (64 slots), for the `diversity` feature."""
    global _HASHER
    if _HASHER is None:
        _HASHER = MinHasher(num_perm=64)
    return [int(x) for x in _HASHER.signature(code)]


TASK = OpenEvolveTask()
