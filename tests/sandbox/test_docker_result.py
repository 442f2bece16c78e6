"""DockerSandbox's report goes through the shared build_result (no container engine needed)."""
from __future__ import annotations

import json
import signal

import numpy as np

from evoforge.sandbox._common import Limits, build_result
from evoforge.sandbox.base import ERROR, KILLED, MEMORY, OK, TIMEOUT
from evoforge.sandbox.docker import _result
from evoforge.sandbox.harness import encode_outputs

LIMITS = Limits.make(2.0, 128)


def report(exit_code, files=None, state=None, timed_out=False, stderr=""):
    return _result(exit_code, timed_out, files or {}, state or {}, "out", stderr, 0.5, LIMITS)


def response(status="ok", outputs=(), reason=""):
    return json.dumps({"status": status, "outputs": encode_outputs(list(outputs)),
                       "reason": reason, "traceback": ""}).encode()


def test_outputs_and_statuses_read_as_the_other_runners_report_them():
    ok = report(0, {"response.json": response(outputs=[np.arange(3.0), 7])})
    assert ok.status == OK and ok.stdout == "out"
    assert np.array_equal(ok.outputs[0], np.arange(3.0)) and ok.outputs[1] == 7
    err = report(0, {"response.json": response("error", reason="ValueError: bad")})
    assert (err.status, err.reason) == (ERROR, "ValueError: bad")
    same = dict(exit_kind="code", exit_value=0, cpu_s=0.0, limits=LIMITS, stdout="out",
                stderr="", duration_s=0.5)
    assert report(None, timed_out=True) == build_result(timed_out=True, raw=b"", **same)
    assert report(0) == build_result(timed_out=False, raw=b"", **same)
    assert report(0, {"__too_large__": b""}).reason == \
        build_result(timed_out=False, raw=b"", raw_oversize=True, **same).reason
    assert report(None, timed_out=True).status == TIMEOUT


def test_signals_and_memory_kills():
    segv = report(128 + signal.SIGSEGV, {"cgroup.txt": b"oom_kill 0\n"})
    assert segv.status == KILLED and "SIGSEGV" in segv.reason
    cpu = report(128 + signal.SIGXCPU, {"cgroup.txt": b"oom_kill 0\n"})
    assert cpu.status == TIMEOUT and "CPU time" in cpu.reason
    oom = report(128 + signal.SIGKILL, {"cgroup.txt": b"low 0\noom_kill 1\n"})
    assert oom.status == MEMORY and "out-of-memory" in oom.reason
    assert report(1, state={"OOMKilled": True}).status == MEMORY
    unknown = report(128 + signal.SIGKILL)  # the wrapper died too: the counter is unknown
    assert unknown.status == MEMORY and "128 MB" in unknown.reason
    killed = report(128 + signal.SIGKILL, {"cgroup.txt": b"oom_kill 0\n"})
    assert killed.status == KILLED
    # A response wins over an OOM kill of some other process of the candidate's.
    survived = report(0, {"response.json": response(outputs=[1]), "cgroup.txt": b"oom_kill 1\n"})
    assert survived.status == OK and survived.outputs == [1]
