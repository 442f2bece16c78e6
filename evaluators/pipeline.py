"""`CascadeEvaluator`: the step's `Evaluator` protocol for any Task on any sandbox.

The candidate runs only inside the sandbox; its returned data comes back as plain values and is
judged here, by the task's trusted `score()`. A stage whose inputs equal the probe's inputs
reuses the probe's outputs instead of running again.
"""
from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel

from evaluators.base import Resources, Stage, Task, task_key
from evaluators.devices import DeviceUnavailable, resolve_device
from evolution import hashing
from evolution.types import ERROR, INVALID, OK, EvalResult, ProbeResult

TAIL_CHARS = 2000


def _tail(text: str, n: int = TAIL_CHARS) -> str:
    return text[-n:] if text else ""


def run_artifacts(run: Any, stage: str) -> dict[str, Any]:
    art: dict[str, Any] = {"stage": stage}
    if run.reason:
        art["reason"] = run.reason[:500]
    if run.stderr:
        art["stderr"] = _tail(run.stderr)
    if run.stdout:
        art["stdout"] = _tail(run.stdout, 500)
    return art


class CascadeEvaluator:
    def __init__(self, task: Task, params: BaseModel, sandbox: Any):
        self.task, self.params, self.sandbox = task, params, sandbox
        self.key = task_key(task, params)
        self.stages: list[Stage] = task.stages(params)
        self.probe_inputs = task.probe(params)
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
            return ProbeResult(None, failure=EvalResult(status=run.status, score=None,
                                                        artifacts=run_artifacts(run, "probe"),
                                                        duration_s=took), duration_s=took)
        fh = hashing.functional_hash(self.key, run.outputs)
        return ProbeResult(fh, duration_s=took, inputs=self.probe_inputs, outputs=run.outputs)

    def evaluate(self, code: str, seed: int, probe: ProbeResult) -> EvalResult:
        total_s = probe.duration_s
        metrics: dict[str, Any] = {}
        result = None
        artifacts: dict[str, Any] = {}
        for stage in self.stages:
            if stage.inputs == probe.inputs:
                outputs = probe.outputs
            else:
                t0 = time.perf_counter()
                run = self._run(code, stage.inputs, seed, stage.timeout_s, stage.memory_mb)
                total_s += time.perf_counter() - t0
                if not run.ok:
                    return EvalResult(status=run.status, score=None, metrics=metrics,
                                      artifacts=run_artifacts(run, stage.name), duration_s=total_s,
                                      functional_hash=probe.functional_hash)
                outputs = run.outputs
                if run.stderr:
                    artifacts["stderr"] = _tail(run.stderr)
            try:
                result = self.task.score(self.params, stage, outputs)
            except Exception as exc:  # a scoring bug on hostile data is still a recorded failure
                return EvalResult(status=INVALID, score=None, metrics=metrics,
                                  artifacts={"stage": stage.name, "reason": f"scorer raised {exc!r}"[:500]},
                                  duration_s=total_s, functional_hash=probe.functional_hash)
            metrics.update(result.metrics)
            artifacts.update(result.artifacts)
            if not result.valid:
                return EvalResult(status=INVALID, score=result.combined_score, metrics=metrics,
                                  features=result.features,
                                  artifacts={**artifacts, "stage": stage.name, "reason": result.reason},
                                  duration_s=total_s, functional_hash=probe.functional_hash)
            if stage.threshold is not None and result.combined_score < stage.threshold:
                artifacts["cascade_stopped_at"] = stage.name
                break
        if result is None:
            return EvalResult(status=INVALID, score=None, artifacts={"reason": "task has no stages"},
                              duration_s=total_s, functional_hash=probe.functional_hash)
        return EvalResult(status=OK, score=float(result.combined_score), metrics=metrics,
                          features=result.features, artifacts=artifacts, duration_s=total_s,
                          functional_hash=probe.functional_hash)
