"""The fork-server itself: a warm interpreter that forks candidates and supervises every run.

It starts with a scrubbed environment, imports numpy (and whatever else is preloaded), unshares
its mount namespace and pivot_roots once into a read-only view holding only what Python needs.
Then one poll loop, no threads: it keeps candidates forked ahead (child.py), hands each job to
one, enforces the wall clock, keeps capped stdout/stderr tails, reads the result and answers the
client (client.py). One fork per run (see docs/sandbox.md for the measurements).
"""
from __future__ import annotations

import gc
import json
import os
import select
import signal
import socket
import time
from typing import Any

from evoforge.sandbox._common import RESULT_CAP, TAIL_BYTES, Limits, Toolchains, tail_text
from evoforge.sandbox.forkserver import child
from evoforge.sandbox.forkserver.wire import ANSWER_HEADER

POOL_SIZE = 2            # candidates forked ahead, waiting for a job
_GRACE_S = 0.25          # a candidate that closed its channels without a result may still exit


def serve(ctl_fd: int) -> None:
    """Server main: runs in its own interpreter with a scrubbed environment."""
    from evoforge.sandbox import _linux as L

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
        # The operator's toolchains (checked by the client), bound read-only into the view.
        toolchains = Toolchains.from_env()
        # Children inherit exactly this environment: set once here, not in every child.
        os.environ.clear()
        os.environ.update(toolchains.env())
        import resource  # noqa: F401 - needed after the pivot
        from evoforge.sandbox import harness  # noqa: F401
        from evoforge.sandbox import _fsview

        # Our own pid namespace, to return to after each per-candidate unshare(CLONE_NEWPID).
        own_pidns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        statm = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)  # kept past the pivot
        L.unshare(L.CLONE_NEWNS)
        _fsview.enter_private_root(toolchains=toolchains)
        harness.run_request({"code": "def f():\n    return 1\n", "entrypoint": "f",
                             "inputs": [{}]})  # warm up lazy imports and caches
        seccomp = L.seccomp_program()  # built once; every child loads it before the candidate
        server = _Server(ctl, own_pidns, statm, seccomp)
        gc.collect()
        gc.freeze()  # children's GC never touches (copies) the server's objects
        gc.disable()
    except BaseException as exc:  # noqa: BLE001 - reported to the client, then exit
        ctl.send(json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode())
        os._exit(1)
    ctl.send(json.dumps({"ready": True, "pid": os.getpid()}).encode())
    server.loop()


class _Candidate:
    """A candidate process C forked ahead: PID 1 of its own pid namespace, waiting for a job."""

    __slots__ = ("pid", "pidfd", "job", "out_r", "err_r", "res_r")

    def __init__(self, pid, pidfd, job, out_r, err_r, res_r):
        self.pid, self.pidfd, self.job = pid, pidfd, job
        self.out_r, self.err_r, self.res_r = out_r, err_r, res_r

    def close_pipes(self) -> None:
        for fd in (self.out_r, self.err_r, self.res_r):
            try:
                os.close(fd)
            except OSError:
                pass


class _Run:
    """One job in flight: its candidate, the client's socket, the clock and capped buffers."""

    def __init__(self, cand: _Candidate, client: socket.socket, limits: Limits):
        self.cand, self.client, self.limits = cand, client, limits
        self.t0 = time.monotonic()
        self.deadline = self.t0 + limits.timeout_s
        self.bufs = {cand.out_r: bytearray(), cand.err_r: bytearray(), cand.res_r: bytearray()}
        self.caps = {cand.out_r: TAIL_BYTES, cand.err_r: TAIL_BYTES, cand.res_r: RESULT_CAP}
        self.cut = {cand.out_r: False, cand.err_r: False, cand.res_r: False}
        self.open_fds = set(self.bufs)
        self.timed_out = self.exited = self.closed = False
        self.grace_until: float | None = None
        self.status, self.cpu_s = 0, 0.0
        self.answer: memoryview | None = None  # header + result, being written to the client


class _Server:
    """The server is also every run's supervisor: one poll loop, no thread and no extra fork.

    Per run it forks exactly one process (C, forked ahead of time); C creates its own mount, ipc
    and network namespaces and mounts its /proc before it waits for a job. The server enforces
    the wall clock, keeps capped stdout/stderr tails, reads the result from C's private pipe,
    answers the client and SIGKILLs C (= the whole pid namespace).
    """

    def __init__(self, ctl: socket.socket, own_pidns: int, statm: int, seccomp: bytes | None):
        self.ctl, self.own_pidns, self.statm, self.seccomp = ctl, own_pidns, statm, seccomp
        self.poller = select.poll()
        self.poller.register(ctl, select.POLLIN)
        self.idle: list[_Candidate] = []
        self.by_fd: dict[int, tuple[str, Any]] = {}   # polled fd -> (kind, run or candidate)
        self.runs: set[_Run] = set()
        self.served = 0

    # -- main loop

    def loop(self) -> None:
        while True:
            timeout_ms = self._next_timeout_ms()
            if len(self.idle) < POOL_SIZE:
                timeout_ms = 0  # refill the pool, but only once nothing else is waiting
            events = self.poller.poll(timeout_ms)
            if not events and len(self.idle) < POOL_SIZE:
                try:
                    self._fork_candidate()
                except OSError:
                    time.sleep(0.05)  # out of processes or memory: try again later
            # Snapshot what each fd meant when poll answered: handling one event may close an
            # fd and a later one in this batch may reuse its number for something else.
            batch = [(fd, self.by_fd.get(fd)) for fd, _ev in events]
            for fd, entry in batch:
                if fd == self.ctl.fileno():
                    self._accept()
                elif entry is not None and self.by_fd.get(fd) is entry:
                    self._event(fd, *entry)
            self._check_clocks()

    def _next_timeout_ms(self) -> int:
        if not self.runs:
            return 60_000
        nxt = None
        for run in self.runs:
            if run.answer is not None:
                continue
            for t in (run.deadline if not run.timed_out else None, run.grace_until):
                if t is not None and not run.closed and (nxt is None or t < nxt):
                    nxt = t
        if nxt is None:
            return 1000
        return max(0, int((nxt - time.monotonic()) * 1000) + 1)

    def _event(self, fd: int, kind: str, obj: Any) -> None:
        if kind == "idle":  # an idle candidate died (killed from outside?): forget it
            self._unwatch(fd)
            self.idle.remove(obj)
            obj.job.close()
            obj.close_pipes()
            self._reap_now(obj)
        elif kind == "exit":
            obj.exited = True
            self._unwatch(fd)
            self._progress(obj)
        elif kind == "pipe":
            self._drain(obj, fd)
            self._progress(obj)
        elif kind == "client":
            self._send_answer(obj)
        elif kind == "dying":  # a namespace we killed after answering is gone: reap it
            self._unwatch(fd)
            try:
                os.waitpid(obj, os.WNOHANG)
            except ChildProcessError:
                pass
            os.close(fd)

    def _watch(self, fd: int, kind: str, obj: Any, events: int = select.POLLIN) -> None:
        self.by_fd[fd] = (kind, obj)
        self.poller.register(fd, events)

    def _unwatch(self, fd: int) -> None:
        if self.by_fd.pop(fd, None) is not None:
            self.poller.unregister(fd)

    # -- candidates

    def _fork_candidate(self) -> None:
        from evoforge.sandbox import _linux as L, harness

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pipes = [os.pipe() for _ in range(3)]  # stdout, stderr, result
        harness.note_address_space(self.statm)  # the child's RLIMIT_AS baseline
        try:
            L.unshare(L.CLONE_NEWPID)  # only our next child enters the new pid namespace
            pid = os.fork()
        except BaseException:
            L.setns(self.own_pidns, L.CLONE_NEWPID)
            for fd in [ours.detach(), theirs.detach()] + [fd for p in pipes for fd in p]:
                os.close(fd)
            raise
        if pid == 0:
            try:
                child.main(theirs.detach(), [w for _r, w in pipes], self.seccomp)
            finally:
                os._exit(70)
        L.setns(self.own_pidns, L.CLONE_NEWPID)  # later children: back in our pid namespace
        theirs.close()
        for _r, w in pipes:
            os.close(w)
        for r, _w in pipes:
            os.set_blocking(r, False)
        pidfd = os.pidfd_open(pid)
        cand = _Candidate(pid, pidfd, ours, *(r for r, _w in pipes))
        self.idle.append(cand)
        self._watch(pidfd, "idle", cand)

    def _reap_now(self, cand: _Candidate) -> None:
        try:
            os.waitpid(cand.pid, 0)
        except ChildProcessError:
            pass
        os.close(cand.pidfd)

    # -- jobs

    def _accept(self) -> None:
        try:
            msg, fds, _flags, _addr = socket.recv_fds(self.ctl, 65536, 4)
        except OSError:
            os._exit(0)
        if not msg:
            os._exit(0)  # the client went away: our candidates follow (PDEATHSIG)
        if len(fds) != 1:
            for fd in fds:
                os.close(fd)
            return
        client = socket.socket(fileno=fds[0])
        try:
            limits = Limits(**json.loads(msg)["limits"])
        except (ValueError, TypeError, KeyError):
            client.close()
            return
        while True:
            if not self.idle:
                try:
                    self._fork_candidate()
                except OSError:
                    client.close()  # the client sees no answer and retries once
                    return
            cand = self.idle.pop(0)
            self._unwatch(cand.pidfd)
            try:  # the job: header + the client's socket, from which C reads the request
                socket.send_fds(cand.job, [msg], [client.fileno()])
                break
            except OSError:  # it died while idle: use another
                cand.job.close()
                cand.close_pipes()
                self._reap_now(cand)
        cand.job.close()
        run = _Run(cand, client, limits)
        self.runs.add(run)
        self._watch(cand.pidfd, "exit", run)
        for fd in run.bufs:
            self._watch(fd, "pipe", run)
        self.served += 1
        if self.served % 256 == 0:
            gc.collect()  # the server runs with gc disabled; collect its own cycles now and then

    def _drain(self, run: _Run, fd: int) -> None:
        buf, cap = run.bufs[fd], run.caps[fd]
        while True:
            try:
                chunk = os.read(fd, 1 << 16)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if not chunk:
                run.open_fds.discard(fd)
                self._unwatch(fd)
                return
            buf += chunk
            if len(buf) > cap:
                run.cut[fd] = True
                if cap == TAIL_BYTES:
                    del buf[:len(buf) - cap]  # keep the tail of stdout/stderr
                else:
                    buf.clear()  # an oversized result is discarded entirely

    def _check_clocks(self) -> None:
        now = time.monotonic()
        for run in list(self.runs):
            if run.answer is not None:
                continue
            if not run.timed_out and not run.exited and now >= run.deadline:
                run.timed_out = True
                os.kill(run.cand.pid, signal.SIGKILL)
            if run.grace_until is not None and not run.closed and now >= run.grace_until:
                os.kill(run.cand.pid, signal.SIGKILL)
                run.closed = True
            self._progress(run)

    def _progress(self, run: _Run) -> None:
        """Decide whether `run` is complete; if so, answer its client."""
        if run.answer is not None:
            return
        if run.open_fds and not run.exited:
            return
        if not run.open_fds and not run.exited and not run.closed:
            # Every channel is closed: C is exiting, or closed them itself. With a result in
            # hand, kill the namespace and answer without waiting for the teardown; without
            # one, give C a moment to exit by itself so a crash is reported as such.
            if run.bufs[run.cand.res_r]:
                os.kill(run.cand.pid, signal.SIGKILL)
                run.closed = True
            elif run.grace_until is None:
                run.grace_until = time.monotonic() + _GRACE_S
                return
            else:
                return
        if run.exited:
            for fd in list(run.open_fds):  # the namespace is dead: only leftovers remain
                self._drain(run, fd)
                run.open_fds.discard(fd)
                self._unwatch(fd)
        elif run.open_fds:
            return
        self._finish(run)

    def _finish(self, run: _Run) -> None:
        cand, duration_s = run.cand, time.monotonic() - run.t0
        status, cpu_s = 0, 0.0
        if run.exited:
            try:
                _, status, usage = os.wait4(cand.pid, 0)
                cpu_s = usage.ru_utime + usage.ru_stime
            except ChildProcessError:
                pass
            os.close(cand.pidfd)
        else:  # answered early: killed above; reaped when the namespace is gone
            self._unwatch(cand.pidfd)
            self._watch(cand.pidfd, "dying", cand.pid)
        if run.closed and not run.bufs[cand.res_r] and not run.timed_out:
            status = 0  # killed by us because it closed its channels: report that, not SIGKILL
        for fd in run.bufs:
            self._unwatch(fd)
        cand.close_pipes()
        if os.WIFSIGNALED(status):
            exit_kind, exit_value = "signal", os.WTERMSIG(status)
        else:
            exit_kind, exit_value = "code", os.WEXITSTATUS(status)
        out_r, err_r, res_r = cand.out_r, cand.err_r, cand.res_r
        info = {"timed_out": run.timed_out, "exit_kind": exit_kind, "exit_value": exit_value,
                "cpu_s": cpu_s, "duration_s": duration_s,
                "stdout": tail_text(run.bufs[out_r], run.cut[out_r]),
                "stderr": tail_text(run.bufs[err_r], run.cut[err_r]),
                "raw_oversize": run.cut[res_r]}
        raw = bytes(run.bufs[res_r]) if not run.cut[res_r] else b""
        head = json.dumps(info).encode()
        run.answer = memoryview(ANSWER_HEADER.pack(len(head)) + head + raw)
        run.bufs = {}
        run.client.setblocking(False)
        self._watch(run.client.fileno(), "client", run, select.POLLOUT)
        self._send_answer(run)

    def _send_answer(self, run: _Run) -> None:
        try:
            while run.answer:
                run.answer = run.answer[run.client.send(run.answer):]
        except BlockingIOError:
            return
        except OSError:
            pass  # the client gave up waiting
        self._unwatch(run.client.fileno())
        run.client.close()
        self.runs.discard(run)
