"""Runners that execute untrusted candidate code (see sandbox/base.py and docs/sandbox.md)."""
from __future__ import annotations

from evoforge.sandbox.base import (ERROR, KILLED, MEMORY, OK, RUN_STATUSES, TIMEOUT, RunResult,
                                   Sandbox, SandboxUnavailable)

__all__ = ["make_sandbox", "RunResult", "Sandbox", "SandboxUnavailable", "OK", "ERROR",
           "TIMEOUT", "MEMORY", "KILLED", "RUN_STATUSES", "SCIPY_PRELOAD"]

# What a fork-server can preload for tasks whose candidates import scipy (make_sandbox("fork",
# preload=SCIPY_PRELOAD)); the default is numpy only. Kept here so callers need no internals.
SCIPY_PRELOAD = ("numpy", "scipy", "scipy.optimize", "scipy.spatial", "scipy.linalg",
                 "scipy.special", "scipy.stats", "scipy.sparse")


def make_sandbox(kind: str = "fork", **kw) -> Sandbox:
    """Build a runner: "fork" (default, warm fork-server), "subprocess" (fresh interpreter,
    bubblewrap when present) or "docker" (containers; imported lazily). Keyword arguments go
    to the runner's constructor."""
    if kind in ("fork", "forkserver"):
        from evoforge.sandbox.forkserver import ForkServerSandbox

        return ForkServerSandbox(**kw)
    if kind in ("subprocess", "bwrap"):
        from evoforge.sandbox.subprocess_runner import SubprocessSandbox

        if kind == "bwrap":
            kw.setdefault("use_bwrap", True)
        return SubprocessSandbox(**kw)
    if kind == "docker":
        from evoforge.sandbox.docker import DockerSandbox

        return DockerSandbox(**kw)
    raise ValueError(f"unknown sandbox kind {kind!r} (fork, subprocess, docker)")
