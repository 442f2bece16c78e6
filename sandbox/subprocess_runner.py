"""SubprocessSandbox: the fallback runner, a fresh interpreter running harness.py per candidate.

With bubblewrap (`bwrap` on PATH, used by default when present):
    bwrap --unshare-pid/net/ipc/uts --die-with-parent --new-session, read-only binds of the
    system and Python directories only, --proc, --dev (with a writable tmpfs /dev/shm), a
    size-limited tmpfs /tmp as the working directory, a clean environment, the candidates'
    seccomp filter (--seccomp, see sandbox/_linux.py); the harness sets the rlimits and drops to
    the sandbox uid. The whole tree lives in bwrap's pid namespace and dies with it.
Without bubblewrap (still root): a pre-exec hook unshares mount/net/ipc namespaces, pivots into
the same read-only view as the fork-server and loads the seccomp filter; there is no pid
namespace, so the process tree is killed through the run's unique uid (kill(-1) from that uid)
after every run.

Both report through the same result channel as the fork-server: the harness writes its response
to an inherited pipe (fd 3), never to stdout.
"""
from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

from evoforge.sandbox._common import (ETC_FILES, RESULT_CAP, TAIL_BYTES, Limits, Toolchains,
                                      UidLease, build_result, encode_request, tail_text)
from evoforge.sandbox.base import RunResult, SandboxUnavailable

HARNESS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "harness.py")
_IN_VIEW = "/run/evoforge"


class SubprocessSandbox:
    def __init__(self, *, use_bwrap: bool | None = None, scratch_mb: int = 64, nproc: int = 64):
        if os.geteuid() != 0:
            raise SandboxUnavailable("SubprocessSandbox needs root to switch to unprivileged "
                                     "sandbox uids; use the Docker sandbox otherwise "
                                     "(docs/sandbox.md)")
        self.bwrap = shutil.which("bwrap") if use_bwrap in (None, True) else None
        if use_bwrap and not self.bwrap:
            raise SandboxUnavailable("bubblewrap (bwrap) is not installed")
        self._limits_kw = {"scratch_mb": scratch_mb, "nproc": nproc}
        try:  # the operator's toolchains ($EVOFORGE_SANDBOX_TOOLCHAINS), bound read-only
            self.toolchains = Toolchains.from_env()
        except ValueError as exc:
            raise SandboxUnavailable(str(exc)) from None
        self.python = sys.executable  # the venv's own path: its site-packages come with it

    def close(self) -> None:
        pass

    def run(self, code: str, entrypoint: str, inputs: list[dict[str, Any]], *, seed: int = 0,
            timeout_s: float = 10.0, memory_mb: int = 1024,
            driver: str | None = None) -> RunResult:
        limits = Limits.make(timeout_s, memory_mb, **self._limits_kw)
        request = encode_request(code, entrypoint, inputs, seed, driver)
        with UidLease() as lease, tempfile.TemporaryDirectory(prefix="evoforge-run-") as host:
            os.chmod(host, 0o700)
            with open(os.path.join(host, "request.json"), "wb") as f:
                f.write(request)
            try:
                return self._execute(host, limits, lease.uid)
            finally:
                if not self.bwrap:
                    _kill_uid(lease.uid)

    # -- process

    def _env(self, limits: Limits, uid: int) -> dict:
        return dict(self.toolchains.env(), EVOFORGE_LIMITS=json.dumps(limits.rlimits()),
                    EVOFORGE_UID=str(uid), EVOFORGE_GID=str(uid))

    def _execute(self, host: str, limits: Limits, uid: int) -> RunResult:
        shutil.copy(HARNESS, os.path.join(host, "harness.py"))
        res_r, res_w = os.pipe()
        response = f"/proc/self/fd/{res_w}" if self.bwrap else f"{_IN_VIEW}/response.json"
        harness_args = [self.python, "-I", f"{_IN_VIEW}/harness.py",
                        f"{_IN_VIEW}/request.json", response]
        filter_r = -1
        if self.bwrap:
            from evoforge.sandbox import _linux

            bpf = _linux.seccomp_program()
            if bpf is not None:  # bwrap reads the filter from a descriptor and loads it last
                filter_r, filter_w = os.pipe()
                os.write(filter_w, bpf)
                os.close(filter_w)
            argv = self._bwrap_argv(host, limits, filter_r) + harness_args
            preexec, pass_fds = None, (res_w,) + ((filter_r,) if filter_r >= 0 else ())
        else:
            argv, pass_fds = harness_args, ()
            preexec = _PreExec(host, limits, uid, self.toolchains)
            os.close(res_w)
            res_w = -1
        t0 = time.monotonic()
        try:
            proc = subprocess.Popen(argv, env=self._env(limits, uid), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    pass_fds=pass_fds, preexec_fn=preexec,
                                    start_new_session=True, cwd="/")
        finally:
            for fd in (res_w, filter_r):
                if fd >= 0:
                    os.close(fd)
        info, raw = _watch(proc, res_r, limits, t0, uid if not self.bwrap else None)
        os.close(res_r)
        if not self.bwrap:
            raw, info["raw_oversize"] = _read_capped(os.path.join(host, "response.json"))
        elif info["exit_kind"] == "code" and info["exit_value"] > 128 and not raw:
            # bubblewrap's init reports a child killed by signal N as exit code 128 + N
            info["exit_kind"], info["exit_value"] = "signal", info["exit_value"] - 128
        return build_result(limits=limits, raw=raw, **info)

    def _bwrap_argv(self, host: str, limits: Limits, seccomp_fd: int = -1) -> list[str]:
        from evoforge.sandbox._fsview import view_dirs

        argv = [self.bwrap, "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
                "--unshare-cgroup-try", "--die-with-parent", "--new-session",
                "--hostname", "sandbox"]
        for d in ("/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"):
            if os.path.islink(d):
                argv += ["--symlink", os.readlink(d), d]
        dirs = view_dirs(self.toolchains)
        parents = {os.path.dirname(p) for p in dirs + ETC_FILES + [_IN_VIEW]}
        ancestors = set()
        for p in parents:
            while p not in ("/", ""):
                ancestors.add(p)
                p = os.path.dirname(p)
        # The scratch tmpfs first, so that a checkout or venv under /tmp bound next stays visible.
        argv += ["--perms", "1777", "--size", str(limits.scratch_mb * 2 ** 20), "--tmpfs", "/tmp"]
        for p in sorted(ancestors, key=len):  # bwrap would create them 0700: unreachable
            if not os.path.islink(p):
                argv += ["--perms", "0755", "--dir", p]
        for d in dirs:
            argv += ["--ro-bind", d, d]
        for f in self.toolchains.masked:  # secret-looking files of a toolchain: hidden
            argv += ["--ro-bind", "/dev/null", f]
        for f in ETC_FILES:
            if os.path.isfile(f):
                argv += ["--ro-bind", f, f]
        # bwrap's /dev/shm is root's 0755: POSIX semaphores (multiprocessing's locks) need a
        # writable one, here a tmpfs of the scratch's size.
        argv += ["--ro-bind", host, _IN_VIEW, "--proc", "/proc", "--dev", "/dev",
                 "--perms", "1777", "--size", str(limits.scratch_mb * 2 ** 20), "--tmpfs",
                 "/dev/shm", "--chdir", "/tmp"]
        if seccomp_fd >= 0:
            argv += ["--seccomp", str(seccomp_fd)]
        return argv + ["--"]


class _PreExec:
    """Runs in the forked child before exec (no bubblewrap): namespaces and the private root."""

    def __init__(self, host: str, limits: Limits, uid: int, toolchains: Toolchains):
        from evoforge.sandbox import _fsview, _linux

        self.host, self.limits, self.uid, self.toolchains = host, limits, uid, toolchains
        self.L, self.fsview = _linux, _fsview
        self.bpf = _linux.seccomp_program()
        os.chown(host, 0, 0)

    def __call__(self) -> None:
        L = self.L
        L.unshare(L.CLONE_NEWNS | L.CLONE_NEWNET | L.CLONE_NEWIPC | L.CLONE_NEWUTS)
        self.fsview.enter_private_root(rw_binds=((self.host, _IN_VIEW),),
                                       toolchains=self.toolchains)
        self.fsview.mount_scratch(f"size={self.limits.scratch_mb}m,nr_inodes=4096,mode=0700,"
                                  f"uid={self.uid},gid={self.uid}")
        os.chdir("/tmp")
        if self.bpf is not None:  # the set-up above is done: from here on, the candidate's filter
            L.prctl(L.PR_SET_NO_NEW_PRIVS, 1)
            L.seccomp_load(self.bpf)


def _read_capped(path: str) -> tuple[bytes, bool]:
    try:
        with open(path, "rb") as f:
            data = f.read(RESULT_CAP + 1)
    except OSError:
        return b"", False
    return (b"", True) if len(data) > RESULT_CAP else (data, False)


def _kill_uid(uid: int) -> None:
    """SIGKILL every process of the sandbox uid (the run's whole tree, daemons included)."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            for _ in range(3):
                os.kill(-1, signal.SIGKILL)  # never reaches ourselves
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def _watch(proc: subprocess.Popen, res_r: int, limits: Limits, t0: float,
           uid: int | None) -> tuple[dict, bytes]:
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    streams = {out_fd: bytearray(), err_fd: bytearray(), res_r: bytearray()}
    caps = {out_fd: TAIL_BYTES, err_fd: TAIL_BYTES, res_r: RESULT_CAP}
    cut = dict.fromkeys(streams, False)
    for fd in streams:
        os.set_blocking(fd, False)
    open_fds = set(streams)
    deadline = t0 + limits.timeout_s
    timed_out = False
    exit_info: list = []

    def exited() -> bool:
        if not exit_info:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                exit_info.extend([status, usage])
        return bool(exit_info)

    while open_fds:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        ready, _, _ = select.select(list(open_fds), [], [], min(left, 0.5))
        for fd in ready:
            while True:
                try:
                    chunk = os.read(fd, 1 << 16)
                except BlockingIOError:
                    break
                if not chunk:
                    open_fds.discard(fd)
                    break
                buf = streams[fd]
                buf += chunk
                if len(buf) > caps[fd]:
                    cut[fd] = True
                    if caps[fd] == TAIL_BYTES:
                        del buf[:len(buf) - TAIL_BYTES]
                    else:
                        buf.clear()
        if not ready and exited():
            break  # exited, and whatever still holds the pipes is killed below
    if timed_out or not exited():
        _kill_tree(proc, uid)
    if not exit_info:
        exit_info.extend(os.wait4(proc.pid, 0)[1:])
    status, usage = exit_info
    proc.returncode = status
    proc.stdout.close()
    proc.stderr.close()
    if os.WIFSIGNALED(status):
        kind, value = "signal", os.WTERMSIG(status)
    else:
        kind, value = "code", os.WEXITSTATUS(status)
    info = {"timed_out": timed_out, "exit_kind": kind, "exit_value": value,
            "cpu_s": usage.ru_utime + usage.ru_stime, "duration_s": time.monotonic() - t0,
            "stdout": tail_text(streams[out_fd], cut[out_fd]),
            "stderr": tail_text(streams[err_fd], cut[err_fd]),
            "raw_oversize": cut[res_r]}
    return info, bytes(streams[res_r]) if not cut[res_r] else b""


def _kill_tree(proc: subprocess.Popen, uid: int | None) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # bwrap and its session; the pid namespace follows
    except (ProcessLookupError, PermissionError):
        pass
    if uid is not None:
        _kill_uid(uid)
