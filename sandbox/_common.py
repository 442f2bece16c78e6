"""Pieces shared by the runners: sandbox uids, limits, the filesystem view, result mapping."""
from __future__ import annotations

import base64
import fcntl
import functools
import importlib.util
import json
import marshal
import math
import os
import random
import re
import signal
import sys
from dataclasses import dataclass

from evoforge.sandbox.base import ERROR, KILLED, MEMORY, OK, TIMEOUT, RunResult
from evoforge.sandbox.harness import OutputError, decode_outputs

UID_BASE = 60000
UID_COUNT = 1000
LOCK_DIR = "/tmp/.evoforge-sandbox-uids"
TAIL_BYTES = 64 * 1024
SCRATCH_MB = 64
NPROC = 64          # processes + threads of the sandbox uid
NOFILE = 256
FSIZE_MB = 32
RESULT_CAP = 64 * 1024 * 1024 + 65536

CLEAN_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/tmp",
    "TMPDIR": "/tmp",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONHASHSEED": "0",
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
    "VECLIB_MAXIMUM_THREADS": "1",
    # glibc reserves 64 MiB of address space per malloc arena (up to 8 per CPU); RLIMIT_AS
    # counts reservations, so a threaded evaluator would hit its memory limit on address space
    # it never uses. Two arenas keep RLIMIT_AS close to what is really allocated.
    "MALLOC_ARENA_MAX": "2",
}
CPU_SLACK_S = 2     # RLIMIT_CPU = ceil(timeout_s x usable CPUs) + this


def usable_cpus() -> int:
    """CPUs this process (and so a candidate forked or started from it) may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def cpu_limit_s(timeout_s: float, cpus: float) -> int:
    """RLIMIT_CPU for a wall-clock `timeout_s`: what `cpus` busy threads can burn in that time,
    plus slack. The wall clock is the limit (the supervisor enforces it); RLIMIT_CPU is only a
    runaway bound in case the supervisor cannot act, so it must never fire first."""
    return int(math.ceil(float(timeout_s) * max(float(cpus), 1.0))) + CPU_SLACK_S


@dataclass(frozen=True)
class Limits:
    timeout_s: float
    memory_mb: int
    cpu_s: int
    nproc: int = NPROC
    nofile: int = NOFILE
    fsize_mb: int = FSIZE_MB
    scratch_mb: int = SCRATCH_MB

    @classmethod
    def make(cls, timeout_s: float, memory_mb: int, **kw) -> "Limits":
        return cls(timeout_s=float(timeout_s), memory_mb=int(memory_mb),
                   cpu_s=cpu_limit_s(timeout_s, usable_cpus()), **kw)

    def rlimits(self) -> dict:
        return {"memory_mb": self.memory_mb, "cpu_s": self.cpu_s, "nproc": self.nproc,
                "nofile": self.nofile, "fsize_mb": self.fsize_mb}


def encode_request(code: str, entrypoint: str, inputs: list, seed: int, driver: str | None) -> bytes:
    """The harness's REQUEST (see sandbox/harness.py), as the runners send it. A driver also
    travels compiled (`driver_code`), so each run skips compiling it (~1 ms for OpenEvolve's)."""
    req = {"code": code, "entrypoint": entrypoint, "inputs": inputs, "seed": seed,
           "driver": driver}
    if driver is not None:
        req["driver_code"] = compiled_driver(driver)
    return json.dumps(req).encode()


@functools.lru_cache(maxsize=32)
def compiled_driver(source: str) -> dict[str, str] | None:
    """{"magic": the interpreter's bytecode magic, "marshal": base64 of the code object}, or None
    when the source does not compile (the harness then reports the SyntaxError itself). Trusted
    code compiles it here; the harness uses it only when its own magic number is the same."""
    try:
        code = compile(source, "driver.py", "exec")
    except (SyntaxError, ValueError):
        return None
    return {"magic": importlib.util.MAGIC_NUMBER.hex(),
            "marshal": base64.b64encode(marshal.dumps(code)).decode("ascii")}


class UidLease:
    """An unprivileged uid used by exactly one run at a time, across all processes on the host.

    Unique uids make RLIMIT_NPROC a per-run limit and keep concurrent candidates from signalling
    or reading each other. Uniqueness is an exclusive flock on LOCK_DIR/<uid>.
    """

    _next = random.randrange(UID_COUNT)  # processes start apart: fewer lock collisions

    def __init__(self, base: int = UID_BASE, count: int = UID_COUNT):
        os.makedirs(LOCK_DIR, mode=0o700, exist_ok=True)
        start = UidLease._next
        for i in range(count):
            uid = base + (start + i) % count
            fd = os.open(f"{LOCK_DIR}/{uid}", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            UidLease._next = (start + i + 1) % count
            self.uid, self._fd = uid, fd
            return
        raise RuntimeError(f"all {count} sandbox uids from {base} are in use")

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "UidLease":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def python_dirs() -> list[str]:
    """Directories the interpreter needs, read-only, for the candidate's filesystem view."""
    dirs = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
    # Only package directories from sys.path: never a script directory, the working directory
    # or an editable checkout (that would expose the repository).
    dirs += [p for p in sys.path if p and os.path.isabs(p)
             and os.path.basename(p.rstrip("/")) in ("site-packages", "dist-packages")]
    exe = os.path.realpath(sys.executable)
    dirs.append(os.path.dirname(os.path.dirname(exe)))
    out: list[str] = []
    for d in sorted({os.path.realpath(d) for d in dirs if os.path.isdir(d)}, key=len):
        if d == "/" or any(d == o or d.startswith(o + "/") for o in out):
            continue
        out.append(d)
    return out


TOOLCHAINS_ENV = "EVOFORGE_SANDBOX_TOOLCHAINS"
# A toolchain directory with one of these names also sets the variable its tools read.
_HOME_VARS = {".cargo": "CARGO_HOME", "cargo": "CARGO_HOME",
              ".rustup": "RUSTUP_HOME", "rustup": "RUSTUP_HOME"}
# Never a toolchain: the root, trees that hold the host's state or secrets, and (below) any
# directory that is or holds a home directory. Inside /proc, /sys, /dev, /run, /etc: never.
_NOT_TOOLCHAINS = {"/", "/etc", "/proc", "/sys", "/dev", "/run", "/var", "/tmp", "/boot",
                   "/home", "/root", "/mnt", "/media", "/srv", "/opt", "/usr", "/usr/local"}
_NOT_INSIDE = ("/proc/", "/sys/", "/dev/", "/run/", "/etc/", "/var/lib/", "/var/run/")
# Files inside a toolchain (its top two levels) that may hold a credential, e.g.
# ~/.cargo/credentials.toml: hidden in the view (bound over by /dev/null).
_SECRET_FILE = re.compile(r"(?i)(credential|secret|token|passw|netrc|npmrc|pypirc|id_rsa|"
                          r"id_ecdsa|id_ed25519|\.pem$|\.key$|\.p12$|^\.env)")


@dataclass(frozen=True)
class Toolchains:
    """Host toolchains the operator exposes read-only to candidates ($EVOFORGE_SANDBOX_TOOLCHAINS,
    e.g. `/root/.cargo:/root/.rustup`): each directory is bound at its own path, its `bin/` goes
    first on PATH, and a `.cargo`/`.rustup` directory sets CARGO_HOME/RUSTUP_HOME."""

    dirs: tuple[str, ...] = ()
    masked: tuple[str, ...] = ()   # secret-looking files inside them, hidden in the view

    @classmethod
    def from_env(cls, spec: str | None = None) -> "Toolchains":
        """Parse and check the setting; ValueError (one line) names a refused entry."""
        spec = os.environ.get(TOOLCHAINS_ENV, "") if spec is None else spec
        dirs: list[str] = []
        for raw in filter(None, (part.strip() for part in spec.split(":"))):
            path = _checked_toolchain(raw)
            if path not in dirs:
                dirs.append(path)
        masked = [f for d in dirs for f in _secret_files(d)]
        return cls(tuple(dirs), tuple(masked))

    def env(self) -> dict[str, str]:
        """The candidates' environment: CLEAN_ENV plus the toolchains' PATH and homes."""
        env = dict(CLEAN_ENV)
        bins = [os.path.join(d, "bin") for d in self.dirs if os.path.isdir(os.path.join(d, "bin"))]
        env["PATH"] = ":".join(bins + [CLEAN_ENV["PATH"]])
        for d in self.dirs:
            var = _HOME_VARS.get(os.path.basename(d))
            if var:
                env[var] = d
        return env


def _home_dirs() -> set[str]:
    import pwd

    homes = {"/root"}
    for entry in pwd.getpwall():
        if entry.pw_dir and entry.pw_dir.startswith("/"):
            homes.add(os.path.realpath(entry.pw_dir))
    return homes


def _checked_toolchain(raw: str) -> str:
    if not os.path.isabs(raw):
        raise ValueError(f"{TOOLCHAINS_ENV}: {raw!r} is not an absolute path")
    path = os.path.realpath(raw)
    if not os.path.isdir(path):
        raise ValueError(f"{TOOLCHAINS_ENV}: {raw!r} is not a directory")
    for home in _home_dirs():
        if path != "/" and (home == path or home.startswith(path + "/")):
            raise ValueError(f"{TOOLCHAINS_ENV}: {raw!r} is or holds a home directory; name "
                             "the toolchain's own directories (e.g. /root/.cargo)")
    if path in _NOT_TOOLCHAINS or path.startswith(_NOT_INSIDE) or path.startswith(LOCK_DIR):
        raise ValueError(f"{TOOLCHAINS_ENV}: {raw!r} is a system directory, not a toolchain")
    return path


def _secret_files(top: str) -> list[str]:
    found = []
    for depth_dir in [top] + [os.path.join(top, n) for n in sorted(os.listdir(top))]:
        if not os.path.isdir(depth_dir) or os.path.islink(depth_dir):
            continue
        for name in sorted(os.listdir(depth_dir)):
            path = os.path.join(depth_dir, name)
            if _SECRET_FILE.search(name) and os.path.isfile(path) and not os.path.islink(path):
                found.append(path)
    return found


# /etc/alternatives: Debian's links behind /usr/bin/cc, c++, java... (links only, no secrets)
SYSTEM_DIRS = ["/usr", "/lib", "/lib64", "/lib32", "/libx32", "/bin", "/sbin", "/etc/alternatives"]
ETC_FILES = ["/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/localtime", "/etc/nsswitch.conf",
             "/etc/passwd", "/etc/group", "/etc/hosts", "/etc/os-release"]
DEV_NODES = ["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom"]


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


_SIGNAL_HINTS = {"SIGSEGV": "segmentation fault", "SIGBUS": "bus error",
                 "SIGABRT": "aborted", "SIGILL": "illegal instruction",
                 "SIGFPE": "arithmetic fault", "SIGKILL": "killed"}


def build_result(*, timed_out: bool, exit_kind: str, exit_value: int, cpu_s: float,
                 limits: Limits, stdout: str, stderr: str, duration_s: float,
                 raw: bytes, raw_oversize: bool = False, oom_reason: str = "") -> RunResult:
    """Map what the supervisor observed plus the harness's response to one RunResult (every
    runner: fork-server, subprocess, Docker). `oom_reason`, from a supervisor that can see an
    out-of-memory kill (a container's cgroup), makes a run without a response a `memory` one.
    A `memory` reason always names the limit: "memory limit of 4096 MB exceeded (...)"."""
    def res(status: str, reason: str, outputs=None, err: str = stderr) -> RunResult:
        return RunResult(status=status, outputs=outputs or [], stdout=stdout, stderr=err,
                         duration_s=round(duration_s, 6), reason=reason)

    if timed_out:
        return res(TIMEOUT, f"wall-clock limit of {limits.timeout_s:g} s exceeded; "
                            "the process tree was killed")
    if oom_reason and not raw:
        return res(MEMORY, memory_reason(limits, oom_reason))
    if exit_kind == "signal":
        name = signal_name(exit_value)
        if name == "SIGXCPU" or (name == "SIGKILL" and cpu_s >= limits.cpu_s - 0.05):
            return res(TIMEOUT, f"CPU time limit of {limits.cpu_s} s exceeded (a runaway bound: "
                                f"the wall-clock limit of {limits.timeout_s:g} s times the CPUs "
                                "the run may use)")
        hint = _SIGNAL_HINTS.get(name)
        return res(KILLED, f"killed by {name}" + (f" ({hint})" if hint else ""))
    if raw_oversize:
        return res(ERROR, "the result exceeded the output size limit")
    response = None
    if raw and exit_value == 0:
        try:
            response = json.loads(raw)
        except (ValueError, RecursionError):
            return res(ERROR, "malformed result from the sandbox")
    if not isinstance(response, dict) or response.get("status") not in (OK, ERROR, MEMORY):
        if "MemoryError" in stderr[-2000:]:
            return res(MEMORY, memory_reason(limits, "MemoryError"))
        if exit_kind == "code" and exit_value == 0:
            return res(ERROR, "the program exited or closed its result channel "
                              "without returning a result")
        return res(ERROR, f"the process exited with code {exit_value} without a result")
    status = response["status"]
    reason = str(response.get("reason", ""))[:500]
    if status != OK:
        tb = str(response.get("traceback", ""))
        err = (stderr + ("\n" if stderr and tb else "") + tb)[-TAIL_BYTES:]
        if status == MEMORY:
            reason = memory_reason(limits, reason or "MemoryError")
        return res(status, reason or status, err=err)
    try:
        outputs = decode_outputs(response.get("outputs"))
    except (OutputError, RecursionError, TypeError, ValueError) as exc:
        return res(ERROR, f"malformed outputs: {exc}")
    return res(OK, "", outputs=outputs)


def memory_reason(limits: Limits, how: str) -> str:
    """One line for a memory kill that names the limit it hit (what raises it is the caller's
    to add: a task knows its configuration key, the sandbox does not)."""
    return f"memory limit of {limits.memory_mb} MB exceeded ({how})"[:500]


def tail_text(buf: bytes | bytearray, truncated: bool) -> str:
    text = bytes(buf).decode("utf-8", errors="replace")
    return ("[...truncated...]\n" + text) if truncated else text
