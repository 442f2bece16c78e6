"""ForkServerSandbox: the default runner. A warm server forks one isolated child per candidate.

    client (worker process)          server (warm, numpy imported, private root)
    run() --socketpair end + limits--> fork supervisor S (per run)
                                        S: unshare(mount, pid, net, ipc); tmpfs /tmp
                                        S: fork C = PID 1 of the new pid namespace
                                           C: /proc, rlimits, clean env, drop to uid 600xx,
                                              no_new_privs, harness.run_request -> fd 3
                                        S: wall clock (SIGKILL C = kill the namespace),
                                           64 KiB stdout/stderr tails, result from fd 3
    <---------- header JSON + raw result over the socketpair --------------
    build_result() -> RunResult (outputs decoded by trusted code)

Requests travel over a per-run socketpair whose end is passed with SCM_RIGHTS, so concurrent
run() calls from threads are independent. The server itself starts with a scrubbed environment
(no secrets in its memory) and pivot_roots once into a read-only view holding only what Python
needs. If the server dies, the next run() starts a new one.
"""
from __future__ import annotations

import fcntl
import gc
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from typing import Any

from sandbox._common import (CLEAN_ENV, RESULT_CAP, TAIL_BYTES, Limits, UidLease,
                             build_result, tail_text)
from sandbox.base import ERROR, RunResult

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_BOOT = ("import sys; sys.path.insert(0, sys.argv[2]); "
         "from sandbox.forkserver import serve; serve(int(sys.argv[1]))")
_HDR = struct.Struct("!I")
# What the warm server imports. numpy only by default: every preloaded module enlarges the
# server and so the cost of each fork (scipy's common submodules double it, see docs/sandbox.md).
_PRELOAD = ("numpy",)
SCIPY_PRELOAD = ("numpy", "scipy", "scipy.optimize", "scipy.spatial", "scipy.linalg",
                 "scipy.special", "scipy.stats", "scipy.sparse")


class SandboxUnavailable(RuntimeError):
    """The host cannot provide the isolation this runner promises."""


# =============================================================================== client


class ForkServerSandbox:
    """Warm fork-server runner; thread-safe; one server process per instance."""

    def __init__(self, *, scratch_mb: int = 64, nproc: int = 64, preload: tuple = _PRELOAD,
                 start_timeout_s: float = 120.0):
        self._limits_kw = {"scratch_mb": scratch_mb, "nproc": nproc}
        self._preload = preload
        self._start_timeout_s = start_timeout_s
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._ctl: socket.socket | None = None

    # -- server lifecycle

    def _start(self) -> None:
        if os.geteuid() != 0 and not _userns_available():
            raise SandboxUnavailable(
                "ForkServerSandbox needs root (to switch to unprivileged sandbox uids) or "
                "unprivileged user namespaces; neither is available. Use the Docker sandbox.")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = dict(CLEAN_ENV, EVOFORGE_PRELOAD=",".join(self._preload))
        self._proc = subprocess.Popen(
            [sys.executable, "-I", "-c", _BOOT, str(theirs.fileno()), _ROOT],
            pass_fds=[theirs.fileno()], env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, close_fds=True)
        theirs.close()
        ours.settimeout(self._start_timeout_s)
        try:
            msg = ours.recv(65536)
        except socket.timeout:
            msg = b'{"error": "the sandbox server did not start in time"}'
        ours.settimeout(None)
        info = json.loads(msg or b'{"error": "the sandbox server exited during start-up"}')
        if "error" in info:
            ours.close()
            self._kill_server()
            raise SandboxUnavailable(f"fork-server failed to start: {info['error']}")
        self._ctl = ours

    def _kill_server(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def _dispatch(self, header: bytes, fd: int) -> None:
        """Hand one request socket to the server, (re)starting it when needed."""
        with self._lock:
            for attempt in (1, 2):
                if self._ctl is None or self._proc is None or self._proc.poll() is not None:
                    if self._ctl is not None:
                        self._ctl.close()
                        self._ctl = None
                    self._kill_server()
                    self._start()
                try:
                    socket.send_fds(self._ctl, [header], [fd])
                    return
                except OSError:
                    if attempt == 2:
                        raise
                    self._ctl.close()
                    self._ctl = None

    def server_pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> "ForkServerSandbox":
        """Start the server now (otherwise the first run() does)."""
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._start()
        return self

    def close(self) -> None:
        with self._lock:
            if self._ctl is not None:
                self._ctl.close()
                self._ctl = None
            self._kill_server()

    def __enter__(self) -> "ForkServerSandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- one run

    def run(self, code: str, entrypoint: str, inputs: list[dict[str, Any]], *, seed: int = 0,
            timeout_s: float = 10.0, memory_mb: int = 1024,
            driver: str | None = None) -> RunResult:
        limits = Limits.make(timeout_s, memory_mb, **self._limits_kw)
        request = json.dumps({"code": code, "entrypoint": entrypoint, "inputs": inputs,
                              "seed": seed, "driver": driver}).encode()
        for attempt in (1, 2):
            with UidLease() as lease:
                got = self._run_once(request, limits, lease.uid)
            if got is not None:
                return got
            # The server or supervisor vanished before answering: retry once on a fresh server.
        return RunResult(status=ERROR, reason="the sandbox supervisor died without an answer")

    def _run_once(self, request: bytes, limits: Limits, uid: int) -> RunResult | None:
        header = json.dumps({"uid": uid, "limits": limits.__dict__}).encode()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with ours:
            try:
                self._dispatch(header, theirs.fileno())
            finally:
                theirs.close()
            ours.settimeout(limits.timeout_s + 60.0)
            try:
                ours.sendall(request)
                ours.shutdown(socket.SHUT_WR)
                blob = _recv_all(ours, RESULT_CAP + 4 * TAIL_BYTES + 65536)
            except (OSError, socket.timeout):
                return None
        if len(blob) < _HDR.size:
            return None
        (n,) = _HDR.unpack_from(blob)
        info = json.loads(blob[_HDR.size:_HDR.size + n])
        return build_result(limits=limits, raw=blob[_HDR.size + n:], **info)


def _recv_all(sock: socket.socket, cap: int) -> bytes:
    chunks, total = [], 0
    while True:
        chunk = sock.recv(1 << 20)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > cap:
            raise OSError("sandbox answer too large")
        chunks.append(chunk)


def _userns_available() -> bool:
    return False  # see docs/sandbox.md: the non-root mode is not implemented yet


# =============================================================================== server


def serve(ctl_fd: int) -> None:
    """Server main: runs in its own interpreter with a scrubbed environment."""
    from sandbox import _linux as L

    ctl = socket.socket(fileno=ctl_fd)
    try:
        L.prctl(L.PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() == 1:
            os._exit(0)
        import importlib

        for mod in filter(None, os.environ.get("EVOFORGE_PRELOAD", "").split(",")):
            try:
                importlib.import_module(mod)
            except ImportError:
                pass
        import resource  # noqa: F401 - needed after the pivot
        from sandbox import harness  # noqa: F401
        from sandbox import _fsview

        L.unshare(L.CLONE_NEWNS)
        _fsview.enter_private_root()
        harness.run_request({"code": "def f():\n    return 1\n", "entrypoint": "f",
                             "inputs": [{}]})  # warm up lazy imports and caches
        gc.collect()
        gc.freeze()  # children's GC never touches (copies) the server's objects
        gc.disable()
    except BaseException as exc:  # noqa: BLE001 - reported to the client, then exit
        ctl.send(json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode())
        os._exit(1)
    ctl.send(json.dumps({"ready": True, "pid": os.getpid()}).encode())
    children: set[int] = set()
    pool: list[tuple[int, socket.socket]] = []  # pre-forked, idle supervisors
    while True:
        while len(pool) < POOL_SIZE:
            try:
                pool.append(_spawn_supervisor(ctl, pool))
            except OSError:
                break
            children.add(pool[-1][0])
        ready, _, _ = select.select([ctl], [], [], 1.0)
        _reap(children)
        pool = [(pid, sock) for pid, sock in pool if pid in children or sock.close()]
        if not ready:
            continue
        try:
            msg, fds, _flags, _addr = socket.recv_fds(ctl, 65536, 4)
        except OSError:
            os._exit(0)
        if not msg:
            os._exit(0)  # the client went away
        if len(fds) != 1:
            for fd in fds:
                os.close(fd)
            continue
        while True:
            if not pool:
                try:
                    pool.append(_spawn_supervisor(ctl, pool))
                    children.add(pool[-1][0])
                except OSError:
                    break
            pid, sock = pool.pop(0)
            try:
                socket.send_fds(sock, [msg], fds)
                sock.close()
                break
            except OSError:  # that supervisor died while idle: use another
                sock.close()
        os.close(fds[0])


POOL_SIZE = 2


def _spawn_supervisor(ctl: socket.socket, pool: list) -> tuple[int, socket.socket]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            ctl.close()
            ours.close()
            for _pid, sock in pool:
                sock.close()
            _supervise(theirs)
            code = 0
        finally:
            os._exit(code)
    theirs.close()
    return pid, ours


def _reap(children: set[int]) -> None:
    for pid in list(children):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            children.discard(pid)


# =============================================================================== supervisor


def _supervise(job: socket.socket) -> None:
    """S: prepares namespaces and a waiting C ahead of time, then serves exactly one run."""
    from sandbox import _linux as L

    L.prctl(L.PR_SET_PDEATHSIG, signal.SIGKILL)
    L.unshare(L.CLONE_NEWNS | L.CLONE_NEWPID | L.CLONE_NEWNET | L.CLONE_NEWIPC)
    go_r, go_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    res_r, res_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            job.close()
            # Lift the sources above 4 first so no dup2 below clobbers another source.
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in (out_w, err_w, res_w, go_r)]
            for target, fd in zip((1, 2, 3, 4), high):
                os.dup2(fd, target)
            _candidate_wait()
        except BaseException:  # noqa: BLE001 - set-up failed: say why on stderr
            try:
                import traceback

                os.write(2, traceback.format_exc().encode()[-2000:])
            except BaseException:  # noqa: BLE001
                pass
        finally:
            os._exit(70)
    for fd in (out_w, err_w, res_w, go_r):
        os.close(fd)
    try:
        msg, fds, _flags, _addr = socket.recv_fds(job, 65536, 4)
    except OSError:
        msg, fds = b"", []
    if not msg or len(fds) != 1:
        os.kill(pid, signal.SIGKILL)
        return  # the server went away while we were idle
    job.close()
    sock = socket.socket(fileno=fds[0])
    header = json.loads(msg)
    limits = Limits(**header["limits"])
    uid = int(header["uid"])
    signal.alarm(int(limits.timeout_s) + 120)  # last resort: S dies, C follows (PDEATHSIG)
    request = _recv_all(sock, 1 << 30)
    L.mount("evoforge-scratch", "/tmp", "tmpfs", L.MS_NOSUID | L.MS_NODEV | L.MS_NOEXEC,
            f"size={limits.scratch_mb}m,nr_inodes=4096,mode=0700,uid={uid},gid={uid}")
    t0 = time.monotonic()
    head = json.dumps({"uid": uid, "limits": header["limits"]}).encode()
    try:
        _write_all(go_w, _HDR.pack(len(head)) + head + request)
    except OSError:
        pass  # C died; _watch reports it
    os.close(go_w)
    del request
    info, raw = _watch(pid, out_r, err_r, res_r, limits, t0)
    head = json.dumps(info).encode()
    try:
        sock.sendall(_HDR.pack(len(head)) + head + raw)
    except OSError:
        pass
    sock.close()
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _candidate_wait() -> None:
    """C before its job: PID 1 of the new namespaces, /proc mounted, waiting on fd 4."""
    from sandbox import _linux as L
    from sandbox import harness

    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.closerange(5, 1 << 16)
    os.setsid()
    L.prctl(L.PR_SET_PDEATHSIG, signal.SIGKILL)
    L.mount("proc", "/proc", "proc", L.MS_NOSUID | L.MS_NODEV | L.MS_NOEXEC)
    for sig in (signal.SIGALRM, signal.SIGCHLD, signal.SIGPIPE, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    signal.alarm(0)
    os.environ.clear()
    os.environ.update(CLEAN_ENV)
    harness.address_space_bytes()  # measured now, off the critical path
    blob = bytearray()
    while True:
        chunk = os.read(4, 1 << 20)
        if not chunk:
            break
        blob += chunk
    os.close(4)
    if len(blob) < _HDR.size:
        os._exit(0)
    (n,) = _HDR.unpack_from(blob)
    header = json.loads(bytes(blob[_HDR.size:_HDR.size + n]))
    request = bytes(blob[_HDR.size + n:])
    del blob
    _candidate(request, Limits(**header["limits"]), int(header["uid"]))


def _candidate(request: bytes, limits: Limits, uid: int) -> None:
    """C: PID 1 of a fresh pid namespace. Trusted set-up, then the harness runs the candidate."""
    from sandbox import _linux as L
    from sandbox import harness

    os.chdir("/tmp")  # the scratch tmpfs S mounted for this run
    harness.apply_limits(limits.rlimits())
    harness.drop_privileges(uid, uid)
    L.prctl(L.PR_SET_NO_NEW_PRIVS, 1)
    L.prctl(L.PR_SET_PDEATHSIG, signal.SIGKILL)  # cleared by the uid change: set it again
    L.prctl(L.PR_SET_DUMPABLE, 0)
    try:
        req = json.loads(request)
        del request
        blob = harness.dump_response(harness.run_request(req))
    except MemoryError:
        blob = b'{"status": "memory", "outputs": [], "reason": "memory limit", "traceback": ""}'
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001 - the candidate may have replaced or closed it
            pass
    view = memoryview(blob)
    while view:
        try:
            view = view[os.write(3, view):]
        except OSError:
            break
    os.closerange(0, 4)  # EOF on every channel tells the supervisor the answer is complete
    os._exit(0)


def _watch(pid: int, out_r: int, err_r: int, res_r: int, limits: Limits,
           t0: float) -> tuple[dict, bytes]:
    """Wait for C with the wall-clock limit; drain its pipes into capped buffers."""
    pidfd = os.pidfd_open(pid)
    bufs = {out_r: bytearray(), err_r: bytearray(), res_r: bytearray()}
    cut = {out_r: False, err_r: False, res_r: False}
    caps = {out_r: TAIL_BYTES, err_r: TAIL_BYTES, res_r: RESULT_CAP}
    poller = select.poll()
    for fd in bufs:
        os.set_blocking(fd, False)
        poller.register(fd, select.POLLIN)
    poller.register(pidfd, select.POLLIN)
    open_fds, timed_out, exited, closed = set(bufs), False, False, False
    grace_until: float | None = None
    deadline = t0 + limits.timeout_s
    while open_fds or not exited:
        if not open_fds and not exited and not closed:
            # Every channel is closed: C is exiting, or closed them itself. With a result in
            # hand, kill the namespace and answer without waiting for the teardown; without
            # one, give C a moment to exit by itself so a crash is reported as such.
            if bufs[res_r]:
                os.kill(pid, signal.SIGKILL)
                closed = True
                break
            if grace_until is None:
                grace_until = time.monotonic() + 0.25
            elif time.monotonic() >= grace_until:
                os.kill(pid, signal.SIGKILL)
                closed = True
        wait_ms = max(0.0, deadline - time.monotonic()) * 1000 if not timed_out else 1000
        if grace_until is not None and not closed:
            wait_ms = min(wait_ms, max(0.0, grace_until - time.monotonic()) * 1000)
        if exited:
            wait_ms = 0  # the namespace is dead: only leftovers in the pipes remain
        events = poller.poll(wait_ms)
        if not events:
            if exited:
                break
            if grace_until is not None and not closed:
                continue
            if not timed_out and time.monotonic() >= deadline:
                timed_out = True
                os.kill(pid, signal.SIGKILL)
            continue
        for fd, _ev in events:
            if fd == pidfd:
                exited = True
                poller.unregister(pidfd)
                continue
            _drain(fd, bufs[fd], caps[fd], cut, open_fds, poller)
    duration_s = time.monotonic() - t0
    if exited:
        _, status, usage = os.wait4(pid, 0)
        cpu_s = usage.ru_utime + usage.ru_stime
    else:
        status, cpu_s = 0, 0.0  # answered early; the caller reaps C after sending
    if closed and not bufs[res_r] and not timed_out:
        status = 0  # killed by us because it closed its channels: report that, not SIGKILL
    os.close(pidfd)
    for fd in bufs:
        os.close(fd)
    if os.WIFSIGNALED(status):
        exit_kind, exit_value = "signal", os.WTERMSIG(status)
    else:
        exit_kind, exit_value = "code", os.WEXITSTATUS(status)
    info = {"timed_out": timed_out, "exit_kind": exit_kind, "exit_value": exit_value,
            "cpu_s": cpu_s, "duration_s": duration_s,
            "stdout": tail_text(bufs[out_r], cut[out_r]),
            "stderr": tail_text(bufs[err_r], cut[err_r]), "raw_oversize": cut[res_r]}
    return info, bytes(bufs[res_r]) if not cut[res_r] else b""


def _drain(fd: int, buf: bytearray, cap: int, cut: dict, open_fds: set,
           poller: select.poll) -> None:
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            return
        if not chunk:
            open_fds.discard(fd)
            poller.unregister(fd)
            return
        buf += chunk
        if len(buf) > cap:
            cut[fd] = True
            if cap == TAIL_BYTES:
                del buf[:len(buf) - cap]  # keep the tail of stdout/stderr
            else:
                buf.clear()  # an oversized result is discarded entirely
