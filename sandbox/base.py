"""The sandbox contract: run untrusted candidate code, get plain data back.

    run(code, entrypoint, inputs, *, seed, timeout_s, memory_mb, driver=None) -> RunResult

`inputs` is a list of calls. A call holds the entrypoint's arguments in the order the task
documents them, and they are passed positionally: a dict (its names serve the trusted side,
e.g. `{"n": 26}` for `pack_circles(n)`; a program may name its parameters as it likes) or a
list. A GPU task's calls get `device` appended, so it is the last parameter. `outputs`
holds one plain-data value per call (numbers, strings, lists, dicts; numpy arrays come back as
numpy arrays). A task that needs more than "call the entrypoint" supplies `driver`: trusted
Python source defining `drive(module, inputs, seed) -> list`, executed inside the sandbox next
to the candidate (the OpenEvolve adapter and the optimizer harness use this).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

OK = "ok"
ERROR = "error"
TIMEOUT = "timeout"
MEMORY = "memory"
KILLED = "killed"
RUN_STATUSES = (OK, ERROR, TIMEOUT, MEMORY, KILLED)


class SandboxUnavailable(RuntimeError):
    """The host cannot provide what a runner promises: the isolation it needs (root, namespaces),
    a container engine, an image or a requested device. Raised by run() and start(), never for
    anything the candidate did (that is a RunResult)."""


@dataclass(frozen=True)
class RunResult:
    status: str
    outputs: list[Any] = field(default_factory=list)
    stdout: str = ""
    stderr: str = ""
    duration_s: float = 0.0
    reason: str = ""  # one line: exception summary, signal name, limit hit

    @property
    def ok(self) -> bool:
        return self.status == OK


class Sandbox(Protocol):
    def run(
        self,
        code: str,
        entrypoint: str,
        inputs: list[dict[str, Any]],
        *,
        seed: int = 0,
        timeout_s: float = 10.0,
        memory_mb: int = 1024,
        driver: str | None = None,
    ) -> RunResult: ...

    def close(self) -> None: ...
