"""The candidate process C: forked ahead by the server as PID 1 of a new pid namespace.

It sets up its own namespaces while idle, then for one job: reads the request from the client's
socket, mounts its scratch, applies the limits, drops to the run's uid, loads the seccomp filter
and lets the harness run the candidate; the response goes to fd 3, read by the server.
"""
from __future__ import annotations

import fcntl
import gc
import json
import os
import signal
import socket
import sys

from evoforge.sandbox._common import Limits
from evoforge.sandbox.forkserver.wire import recv_all


def main(job_fd: int, writers: list[int], seccomp: bytes | None) -> None:
    """C, just forked by the server as PID 1 of a new pid namespace: set up, wait for a job.
    `writers` are the write ends of stdout, stderr and the result channel; `seccomp` is the
    syscall filter the server built once (sandbox/_linux.py)."""
    from evoforge.sandbox import _linux as L

    L.prctl(L.PR_SET_PDEATHSIG, signal.SIGKILL)
    # Lift the sources above 4 first so no dup2 below clobbers another source; then keep
    # only 0-4: every other fd of the server (other runs' sockets and pipes) is closed.
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in writers + [job_fd]]
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    for target, fd in zip((1, 2, 3, 4), high):
        os.dup2(fd, target)
    os.closerange(5, 1 << 20)
    try:
        os.setsid()
        # Our own mount, ipc and network namespaces (the pid namespace came with the fork).
        L.unshare(L.CLONE_NEWNS | L.CLONE_NEWIPC | L.CLONE_NEWNET)
        L.mount("proc", "/proc", "proc", L.MS_NOSUID | L.MS_NODEV | L.MS_NOEXEC)
        for sig in (signal.SIGALRM, signal.SIGCHLD, signal.SIGPIPE, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        signal.alarm(0)
        job = socket.socket(fileno=4)
        msg, fds, _flags, _addr = socket.recv_fds(job, 65536, 1)
    except BaseException:  # noqa: BLE001 - set-up failed: say why on stderr
        import traceback

        os.write(2, traceback.format_exc().encode()[-2000:])
        os._exit(70)
    if not msg or len(fds) != 1:
        os._exit(0)  # the server went away while we were idle
    job.close()
    client = socket.socket(fileno=fds[0])
    header = json.loads(msg)
    limits = Limits(**header["limits"])
    uid = int(header["uid"])
    request = recv_all(client, 1 << 30)
    client.close()  # the answer goes back through the server only
    from evoforge.sandbox import _fsview

    _fsview.mount_scratch(f"size={limits.scratch_mb}m,nr_inodes=4096,mode=0700,uid={uid},gid={uid}")
    _run_job(request, limits, uid, seccomp)


def _run_job(request: bytes, limits: Limits, uid: int, seccomp: bytes | None) -> None:
    """C: PID 1 of a fresh pid namespace. Trusted set-up, then the harness runs the candidate."""
    from evoforge.sandbox import _linux as L
    from evoforge.sandbox import harness

    os.chdir("/tmp")  # the scratch tmpfs mounted for this run
    harness.apply_limits(limits.rlimits())
    harness.drop_privileges(uid, uid)
    L.prctl(L.PR_SET_NO_NEW_PRIVS, 1)
    L.prctl(L.PR_SET_PDEATHSIG, signal.SIGKILL)  # cleared by the uid change: set it again
    L.prctl(L.PR_SET_DUMPABLE, 0)
    if seccomp is not None:
        L.seccomp_load(seccomp)
    gc.enable()  # the server's frozen objects stay out of the candidate's collections
    try:
        req = json.loads(request)
        del request
        blob = harness.dump_response(harness.run_request(req))
    except MemoryError:
        blob = b'{"status": "memory", "outputs": [], "reason": "MemoryError", "traceback": ""}'
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
