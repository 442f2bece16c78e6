"""Runners that execute untrusted candidate code (see sandbox/base.py and docs/sandbox.md)."""
from __future__ import annotations

from sandbox.base import (ERROR, KILLED, MEMORY, OK, RUN_STATUSES, TIMEOUT, RunResult,
                          Sandbox)

__all__ = ["make_sandbox", "RunResult", "Sandbox", "OK", "ERROR", "TIMEOUT", "MEMORY",
           "KILLED", "RUN_STATUSES"]


def make_sandbox(kind: str = "fork", **kw) -> Sandbox:
    """Build a runner: "fork" (default, warm fork-server), "subprocess" (fresh interpreter,
    bubblewrap when present) or "docker" (containers; imported lazily)."""
    if kind in ("fork", "forkserver"):
        from sandbox.forkserver import ForkServerSandbox

        return ForkServerSandbox(**kw)
    if kind in ("subprocess", "bwrap"):
        from sandbox.subprocess_runner import SubprocessSandbox

        if kind == "bwrap":
            kw.setdefault("use_bwrap", True)
        return SubprocessSandbox(**kw)
    if kind == "docker":
        from sandbox.docker import DockerSandbox

        return DockerSandbox(**kw)
    raise ValueError(f"unknown sandbox kind {kind!r} (fork, subprocess, docker)")
