"""Whether a task's evaluation cache may be shared across projects: the operator's opt-in.

By default every project (and open mode) has its own cache scope (db/store.py `cache_scope`):
another project's identical program is evaluated afresh and never learns that, or what, someone
else evaluated. An operator who runs the server for one team may set `EVOFORGE_SHARED_CACHE=1`
in the server's and workers' environment (no caller can set it) to share the entries of the
built-in tasks, whose scoring is the operator's own code. Uploaded problems (OpenEvolve
evaluators) and plugin tasks are never shared.
"""
from __future__ import annotations

import os
from typing import Any

SHARED_CACHE_ENV = "EVOFORGE_SHARED_CACHE"
BUILTIN_TASKS = frozenset({"circle_packing", "matmul", "optimizer", "alpha_factors"})


def is_builtin(task: Any) -> bool:
    """A task shipped in evaluators/ (by its defining module, not only its name: a plugin may
    register a task under a built-in's name)."""
    name = getattr(task, "name", None)
    return name in BUILTIN_TASKS and type(task).__module__.startswith(f"evoforge.evaluators.{name}.")


def shares_cache(task: Any) -> bool:
    return os.environ.get(SHARED_CACHE_ENV, "") == "1" and is_builtin(task)


def runner_id(sandbox: Any) -> str:
    """Which sandbox runner evaluates a campaign's candidates, for the code cache's key
    (evolution/hashing.py `cache_key`): the runner's class, and whether it uses bubblewrap.
    Candidates can observe the difference, so a code-cache entry answers only in its runner."""
    if sandbox is None:
        return ""
    kind = type(sandbox).__name__
    return f"{kind}+bwrap" if getattr(sandbox, "bwrap", None) else kind
