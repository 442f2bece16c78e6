"""Limits that mean what OpenEvolve's mean: the timeout is wall-clock (a multithreaded candidate
is not killed by RLIMIT_CPU first), a memory kill names its limit, and the operator's toolchains
($EVOFORGE_SANDBOX_TOOLCHAINS) are reachable read-only while the rest of a home stays hidden."""
import math
import os
import shutil
import signal
from types import SimpleNamespace

import pytest

from evoforge.sandbox._common import (Limits, Toolchains, build_result, cpu_limit_s,
                                      usable_cpus)
from evoforge.sandbox.base import MEMORY, OK, SandboxUnavailable, TIMEOUT
from tests.sandbox.conftest import assert_still_works, requires_root

# Every usable CPU busy (hashlib releases the GIL on large buffers) until the run has used more
# CPU time than the old RLIMIT_CPU, ceil(3) + 1 = 4 s, which killed it, or 2.7 s of a 3 s limit.
BURN = """
import hashlib, threading, time

def f(threads, wall_s, cpu_s):
    t0 = time.monotonic()
    data = b"x" * (1 << 20)

    def burn():
        while time.monotonic() - t0 < wall_s and time.process_time() < cpu_s:
            hashlib.sha256(data).digest()

    pool = [threading.Thread(target=burn) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return [time.process_time(), time.monotonic() - t0]
"""


def test_cpu_limit_is_a_runaway_bound_above_the_wall_clock():
    cpus = usable_cpus()
    assert Limits.make(3, 100).cpu_s == cpu_limit_s(3, cpus) >= 3 * cpus + 1
    assert cpu_limit_s(60, 16) == 962  # ae matmul: 60 s on 16 CPUs, never cut at 39 s
    from evoforge.sandbox.docker import DockerSandbox

    docker = SimpleNamespace(cpus=4.0, startup_grace_s=1.0)
    assert DockerSandbox._cpu_s(docker, 9.0) == cpu_limit_s(10.0, 4.0) == 42
    r = build_result(timed_out=False, exit_kind="signal", exit_value=signal.SIGXCPU, cpu_s=9.0,
                     limits=Limits.make(3, 100), stdout="", stderr="", duration_s=1.0, raw=b"")
    assert r.status == TIMEOUT and "wall-clock limit of 3 s" in r.reason, r.reason


@requires_root
def test_threads_burning_cpu_are_not_killed_before_the_wall_clock(fork_sandbox):
    threads = max(2, usable_cpus())
    if usable_cpus() < 2:
        pytest.skip("needs 2 CPUs to burn more CPU time than wall time")
    old_cpu_s = math.ceil(3) + 1
    r = fork_sandbox.run(BURN, "f", [{"threads": threads, "wall_s": 2.7, "cpu_s": old_cpu_s + 0.5}],
                         timeout_s=3)
    assert r.status == OK, r
    cpu_s, wall_s = r.outputs[0]
    assert wall_s < 3
    if cpu_s <= old_cpu_s:  # the limit itself is checked above; this run shows it in action
        pytest.skip(f"the host gave the run {cpu_s:.1f} s of CPU in {wall_s:.1f} s: too busy to "
                    f"exceed the old {old_cpu_s} s limit")


@requires_root
def test_a_memory_kill_names_the_limit(fork_sandbox):
    r = fork_sandbox.run("def f():\n    return len(bytearray(6 << 30))\n", "f", [{}],
                         timeout_s=10, memory_mb=256)
    assert r.status == MEMORY, r
    assert r.reason.startswith("memory limit of 256 MB exceeded (MemoryError"), r.reason
    assert_still_works(fork_sandbox)


def test_the_openevolve_task_says_which_key_raises_a_limit():
    from evoforge.evaluators.base import get_task
    from evoforge.evaluators.pipeline import run_artifacts

    task = get_task("openevolve")
    run = SimpleNamespace(status=MEMORY, reason="memory limit of 4096 MB exceeded (MemoryError)",
                          stderr="", stdout="")
    reason = run_artifacts(run, "evaluate", task)["reason"]
    assert reason == ("memory limit of 4096 MB exceeded (MemoryError); raise it with "
                      "evaluator.memory_limit_mb in config.yaml")
    run.status, run.reason = TIMEOUT, "wall-clock limit of 30 s exceeded"
    assert "evaluator.timeout" in run_artifacts(run, "evaluate", task)["reason"]


# Many threads each calling BLAS at once: OpenBLAS takes a buffer per concurrent caller and
# glibc an arena per thread, all counted by RLIMIT_AS (see docs/sandbox.md).
BLAS_THREADS = """
import threading
import numpy as np

def f(threads):
    a = np.random.rand(600, 600)
    out = []
    def work():
        out.append(float((a @ a).sum()))
    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return len(out)
"""


@requires_root
def test_threaded_numpy_runs_under_the_4096_mb_default(fork_sandbox):
    r = fork_sandbox.run(BLAS_THREADS, "f", [{"threads": 32}], timeout_s=60, memory_mb=4096)
    assert r.status == OK and r.outputs == [32], r


# ---------------------------------------------------------------- toolchains

PROBE = """
import os, subprocess

def f(tool, secret, credentials):
    out = {"tool": subprocess.run([tool, "hello"], capture_output=True, text=True).stdout,
           "path": os.environ["PATH"]}
    for key, path in (("secret", secret), ("credentials", credentials)):
        try:
            with open(path) as fh:
                out[key] = fh.read()
        except OSError as exc:
            out[key] = type(exc).__name__
    return out
"""


@pytest.fixture
def fake_home(tmp_path, monkeypatch):
    """A home with a toolchain (`.mytc/bin/mytool`, a credentials file inside) and a secret."""
    home = tmp_path / "home"
    bin_dir = home / ".mytc" / "bin"
    bin_dir.mkdir(parents=True)
    tool = bin_dir / "mytool"
    tool.write_text('#!/bin/sh\necho "mytool ran: $1"\n')
    (home / ".mytc" / "credentials.toml").write_text("token = 'tc-secret'\n")
    (home / "secret.txt").write_text("home-secret\n")
    for p in (tmp_path, home, home / ".mytc", bin_dir):
        p.chmod(0o755)
    tool.chmod(0o755)
    (home / "secret.txt").chmod(0o644)
    (home / ".mytc" / "credentials.toml").chmod(0o644)
    monkeypatch.setenv("EVOFORGE_SANDBOX_TOOLCHAINS", str(home / ".mytc"))
    return home


def _runners():
    from evoforge.sandbox.forkserver import ForkServerSandbox
    from evoforge.sandbox.subprocess_runner import SubprocessSandbox

    yield "fork", ForkServerSandbox
    yield "plain", lambda: SubprocessSandbox(use_bwrap=False)
    if shutil.which("bwrap"):
        yield "bwrap", lambda: SubprocessSandbox(use_bwrap=True)


@requires_root
@pytest.mark.parametrize("kind", ["fork", "plain", "bwrap"])
def test_a_toolchain_is_reachable_and_the_rest_of_the_home_is_not(fake_home, kind):
    make = dict(_runners()).get(kind)
    if make is None:
        pytest.skip("bubblewrap is not installed")
    sb = make()
    try:
        args = {"tool": "mytool", "secret": str(fake_home / "secret.txt"),
                "credentials": str(fake_home / ".mytc" / "credentials.toml")}
        r = sb.run(PROBE, "f", [args], timeout_s=20)
    finally:
        sb.close()
    assert r.status == OK, r
    out = r.outputs[0]
    assert out["tool"] == "mytool ran: hello\n"
    assert out["path"].split(":")[0] == str(fake_home / ".mytc" / "bin")
    assert out["secret"] == "FileNotFoundError"       # beside the toolchain: not in the view
    # inside it, secret-looking: masked by /dev/null (unreadable on bwrap's nodev bind)
    assert out["credentials"] in ("", "PermissionError"), out


COMPILE = """
import os, subprocess

def f():
    with open("t.cpp", "w") as fh:
        fh.write("#include <cstdio>\\nint main() { std::puts(\\"built\\"); }\\n")
    subprocess.run(["g++", "-O0", "-o", "t", "t.cpp"], check=True, capture_output=True)
    cc = subprocess.run(["cc", "--version"], capture_output=True).returncode
    return [subprocess.run(["./t"], capture_output=True, text=True).stdout, cc]
"""


@requires_root
@pytest.mark.skipif(not shutil.which("g++"), reason="g++ is not installed")
def test_system_compilers_build_and_run_in_the_scratch(fork_sandbox):
    r = fork_sandbox.run(COMPILE, "f", [{}], timeout_s=60, memory_mb=2048)
    assert r.status == OK and r.outputs == [["built\n", 0]], r


def test_toolchain_setting_is_checked(tmp_path, monkeypatch):
    tc = tmp_path / "tc"
    (tc / "bin").mkdir(parents=True)
    (tmp_path / ".cargo" / "bin").mkdir(parents=True)
    got = Toolchains.from_env(f"{tc}: {tmp_path / '.cargo'}")
    env = got.env()
    assert env["PATH"].startswith(f"{tc}/bin:{tmp_path}/.cargo/bin:")
    assert env["CARGO_HOME"] == str(tmp_path / ".cargo") and "RUSTUP_HOME" not in env
    for bad, why in (("relative/bin", "absolute"), ("/", "system"), ("/etc", "system"),
                     ("/root", "home"), (str(tmp_path / "missing"), "not a directory"),
                     ("/proc/self", "system")):
        with pytest.raises(ValueError, match=why):
            Toolchains.from_env(bad)
    home = os.path.expanduser("~")
    if home not in ("/", "") and os.path.isdir(home):
        with pytest.raises(ValueError, match="home"):
            Toolchains.from_env(os.path.dirname(home) if home != "/root" else home)


@requires_root
def test_a_refused_toolchain_setting_stops_the_sandbox_with_the_reason(monkeypatch):
    from evoforge.sandbox.forkserver import ForkServerSandbox

    monkeypatch.setenv("EVOFORGE_SANDBOX_TOOLCHAINS", "/root")
    with pytest.raises(SandboxUnavailable, match="home directory"):
        ForkServerSandbox().start()
