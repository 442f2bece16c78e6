"""GPU-aware evaluation through the real fork-server sandbox, with a small GPU task."""
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel

from evoforge.evaluators.base import Resources, Stage
from evoforge.evaluators.devices import gpu_available
from evoforge.evaluators.pipeline import CascadeEvaluator
from evoforge.evolution.types import FeatureDim, StageResult

CANDIDATE = "def run(x, device):\n    return {'device': device, 'y': 2 * x}\n"


class _P(BaseModel):
    x: int = 3


class GpuTask:
    name: ClassVar[str] = "gpu_echo"
    version: ClassVar[int] = 1
    Params = _P
    entrypoint: ClassVar[str] = "run"
    driver: ClassVar[str | None] = None

    def __init__(self, fallback: bool):
        self.resources = Resources(timeout_s=10, memory_mb=512, gpu=True, cpu_fallback=fallback)

    def seed_program(self, params): return CANDIDATE
    def context(self, params): return ""
    def probe(self, params): return [{"x": params.x}]
    def stages(self, params): return [Stage("probe", self.probe(params), timeout_s=10, memory_mb=512)]
    def feature_dims(self, params): return [FeatureDim("y", 0, 10)]

    def score(self, params, stage, outputs: list[Any]) -> StageResult:
        out = outputs[0]
        return StageResult(valid=out["y"] == 2 * params.x, combined_score=float(out["y"]),
                           metrics={"device": out["device"]})


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setenv("EVOFORGE_GPU", "0")
    gpu_available.cache_clear()
    yield
    gpu_available.cache_clear()


def test_gpu_task_without_gpu_fails_clearly(no_gpu, fork_sandbox):
    ev = CascadeEvaluator(GpuTask(fallback=False), _P(), fork_sandbox)
    probe = ev.probe(CANDIDATE, 0)
    assert probe.failure is not None and probe.failure.status == "error"
    assert "needs a GPU" in probe.failure.artifacts["reason"]
    assert "gpu" in probe.failure.artifacts["reason"]


def test_gpu_task_falls_back_to_cpu_where_allowed(no_gpu, fork_sandbox):
    ev = CascadeEvaluator(GpuTask(fallback=True), _P(), fork_sandbox)
    probe = ev.probe(CANDIDATE, 0)
    assert probe.failure is None
    result = ev.evaluate(CANDIDATE, 0, probe)
    assert result.ok and result.metrics["device"] == "cpu" and result.score == 6.0


def test_gpu_is_handed_over_when_present(monkeypatch, fork_sandbox):
    monkeypatch.setenv("EVOFORGE_GPU", "1")
    gpu_available.cache_clear()
    try:
        ev = CascadeEvaluator(GpuTask(fallback=False), _P(), fork_sandbox)
        probe = ev.probe(CANDIDATE, 0)
        assert ev.evaluate(CANDIDATE, 0, probe).metrics["device"] == "cuda"
    finally:
        gpu_available.cache_clear()
