"""Which accelerator a GPU task's candidate gets, decided on the trusted side of the worker.

A task declares `resources.gpu`; its calls then receive a `device` argument ("cuda" or "cpu").
Without a GPU, a task that allows it (`resources.cpu_fallback`) runs on "cpu"; otherwise the
evaluation fails with a message that says what is missing and where such work should run.
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
from functools import lru_cache


class DeviceUnavailable(RuntimeError):
    pass


@lru_cache(maxsize=1)
def gpu_available() -> bool:
    """True when this machine exposes an NVIDIA GPU (device nodes, or nvidia-smi lists one).
    EVOFORGE_GPU=0/1 overrides the detection (e.g. a worker told not to use its GPU)."""
    forced = os.environ.get("EVOFORGE_GPU")
    if forced in ("0", "1"):
        return forced == "1"
    if not glob.glob("/dev/nvidia[0-9]*"):
        return False
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return True
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


def resolve_device(task_name: str, gpu: bool, cpu_fallback: bool) -> str | None:
    """None for CPU-only tasks; "cuda" or "cpu" for GPU tasks; DeviceUnavailable otherwise."""
    if not gpu:
        return None
    if gpu_available():
        return "cuda"
    if cpu_fallback:
        return "cpu"
    raise DeviceUnavailable(
        f"task {task_name!r} needs a GPU and this worker has none (no /dev/nvidia* device or "
        f"nvidia-smi lists no GPU). Run it on a worker serving the 'gpu' queue "
        f"(`evoforge worker --queues gpu` on a GPU machine), or use a task that allows CPU fallback.")
