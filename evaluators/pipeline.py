"""`CascadeEvaluator`: the step's `Evaluator` protocol for any Task on any sandbox.

The candidate runs only inside the sandbox; its returned data comes back as plain values and is
judged here, by the task's trusted `score()`. A stage whose inputs equal the probe's inputs
reuses the probe's outputs instead of running again.

A task may define `merge_stages(params, code, stage, results) -> StageResult`: called after each
stage with the StageResults of the stages run so far, its answer replaces the stage's (the
OpenEvolve task scores the merged metrics of every stage, as OpenEvolve does). Its `passed`, when
not None, decides whether the cascade goes on instead of the stage's threshold.

`functional_reuse`: only when every stage's inputs equal the probe's is the score a function of
the probe's outputs alone, so only then may an equal functional hash answer for the score.
Where the probe is a cheap subset (alpha_factors, optimizer, multi-stage OpenEvolve problems) a
candidate could behave on the probe and differently on what is scored.

Artifacts have two owners. EvoForge writes the top-level keys (`stage`, `reason`, `stderr`,
`stdout` as the sandbox captured them, `cascade_stopped_at`, ...). What a task's `score()`
reports (an OpenEvolve evaluator's artifacts, which its uploaded, untrusted code chooses) lives
under `artifacts["evaluator"]`, so an artifact named `stderr` or `reason` can never replace
what the sandbox captured or why EvoForge failed a program.
"""
from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel

from evoforge.evaluators.base import FINGERPRINT_KEY, Resources, Stage, Task, task_key
from evoforge.evaluators.devices import DeviceUnavailable, resolve_device
from evoforge.evolution import hashing
from evoforge.evolution.types import ERROR, INVALID, OK, EvalResult, ProbeResult

TAIL_CHARS = 2000
EVALUATOR = "evaluator"  # the artifacts key under which a task's own artifacts are kept


def _tail(text: str, n: int = TAIL_CHARS) -> str:
    return text[-n:] if text else ""


def run_artifacts(run: Any, stage: str, task: Any = None) -> dict[str, Any]:
    """What EvoForge keeps of a failed run. A limit the run hit (`memory`, `timeout`) names the
    setting that raises it when the task says which one (`limit_hints`, e.g. OpenEvolve's
    "raise it with evaluator.memory_limit_mb in config.yaml")."""
    art: dict[str, Any] = {"stage": stage}
    hint = (getattr(task, "limit_hints", None) or {}).get(run.status, "")
    if run.reason or hint:
        art["reason"] = "; ".join(filter(None, (run.reason[:500], hint)))
    if run.stderr:
        art["stderr"] = _tail(run.stderr)
    if run.stdout:
        art["stdout"] = _tail(run.stdout, 500)
    return art


def captured(run: Any) -> dict[str, Any]:
    """What EvoForge keeps of a successful run's output: the tail of its stderr."""
    return {"stderr": _tail(run.stderr)} if run.stderr else {}


def add_task_artifacts(artifacts: dict[str, Any], reported: dict[str, Any], task: Task) -> None:
    """Merge one stage's task-reported artifacts into `artifacts["evaluator"]` (later stages
    win, as in OpenEvolve). Only the fingerprint of a task with `relative_features` goes to the
    top level, where the store reads it."""
    reported = dict(reported or {})
    if hasattr(task, "relative_features") and FINGERPRINT_KEY in reported:
        artifacts[FINGERPRINT_KEY] = reported.pop(FINGERPRINT_KEY)
    if reported:
        artifacts[EVALUATOR] = {**artifacts.get(EVALUATOR, {}), **reported}


class CascadeEvaluator:
    def __init__(self, task: Task, params: BaseModel, sandbox: Any):
        self.task, self.params, self.sandbox = task, params, sandbox
        self.key = task_key(task, params)
        self.stages: list[Stage] = task.stages(params)
        self.probe_inputs = task.probe(params)
        self.functional_reuse = bool(self.stages) and all(
            stage.inputs == self.probe_inputs for stage in self.stages)
        self.resources = getattr(task, "resources", Resources())

    def _run(self, code: str, inputs: list[dict[str, Any]], seed: int, timeout_s: float,
             memory_mb: int) -> Any:
        device = resolve_device(self.task.name, self.resources.gpu, self.resources.cpu_fallback)
        if device is not None:  # the trusted side picks the device; the candidate is handed it
            inputs = [{**call, "device": device} for call in inputs]
        return self.sandbox.run(code, self.task.entrypoint, inputs, seed=seed, timeout_s=timeout_s,
                                memory_mb=memory_mb, driver=self.task.driver)

    def probe(self, code: str, seed: int) -> ProbeResult:
        first = self.stages[0] if self.stages else None
        timeout_s = first.timeout_s if first else self.task.resources.timeout_s
        memory_mb = first.memory_mb if first else self.task.resources.memory_mb
        t0 = time.perf_counter()
        try:
            run = self._run(code, self.probe_inputs, seed, timeout_s, memory_mb)
        except DeviceUnavailable as exc:  # this worker cannot run the task: a clear, recorded failure
            return ProbeResult(None, failure=EvalResult(status=ERROR, score=None,
                                                        artifacts={"stage": "probe", "reason": str(exc)}))
        took = time.perf_counter() - t0
        if not run.ok:
            failure = EvalResult(status=run.status, score=None, duration_s=took,
                                 artifacts=run_artifacts(run, "probe", self.task))
            return ProbeResult(None, failure=failure, duration_s=took)
        fh = hashing.functional_hash(self.key, run.outputs)
        return ProbeResult(fh, duration_s=took, inputs=self.probe_inputs, outputs=run.outputs,
                           artifacts=captured(run))

    def evaluate(self, code: str, seed: int, probe: ProbeResult) -> EvalResult:
        total_s = probe.duration_s
        metrics: dict[str, Any] = {}
        result = None
        artifacts: dict[str, Any] = {}
        merge = getattr(self.task, "merge_stages", None)
        results: list[Any] = []
        for stage in self.stages:
            if stage.inputs == probe.inputs:
                outputs = probe.outputs
                artifacts.update(probe.artifacts)
            else:
                t0 = time.perf_counter()
                run = self._run(code, stage.inputs, seed, stage.timeout_s, stage.memory_mb)
                total_s += time.perf_counter() - t0
                if not run.ok:
                    return EvalResult(status=run.status, score=None, metrics=metrics,
                                      artifacts=run_artifacts(run, stage.name, self.task),
                                      duration_s=total_s,
                                      functional_hash=probe.functional_hash)
                outputs = run.outputs
                artifacts.update(captured(run))
            try:
                result = self.task.score(self.params, stage, outputs)
                if merge is not None:
                    results.append(result)
                    result = merge(self.params, code, stage, results)
            except Exception as exc:  # a scoring bug on hostile data is still a recorded failure
                return EvalResult(status=INVALID, score=None, metrics=metrics,
                                  artifacts={"stage": stage.name, "reason": f"scorer raised {exc!r}"[:500]},
                                  duration_s=total_s, functional_hash=probe.functional_hash)
            metrics.update(result.metrics)
            add_task_artifacts(artifacts, result.artifacts, self.task)
            if not result.valid:
                return EvalResult(status=INVALID, score=result.combined_score, metrics=metrics,
                                  features=result.features,
                                  artifacts={**artifacts, "stage": stage.name, "reason": result.reason},
                                  duration_s=total_s, functional_hash=probe.functional_hash)
            stop = (not result.passed if result.passed is not None else
                    stage.threshold is not None and result.combined_score < stage.threshold)
            if stop:
                artifacts["cascade_stopped_at"] = stage.name
                break
        if result is None:
            return EvalResult(status=INVALID, score=None, artifacts={"reason": "task has no stages"},
                              duration_s=total_s, functional_hash=probe.functional_hash)
        return EvalResult(status=OK, score=float(result.combined_score), metrics=metrics,
                          features=result.features, artifacts=artifacts, duration_s=total_s,
                          functional_hash=probe.functional_hash)
