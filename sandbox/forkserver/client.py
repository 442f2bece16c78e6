"""The fork-server's client: runs in the worker process, starts the server, hands it each run.

Requests travel over a per-run socketpair whose end is passed with SCM_RIGHTS, so concurrent
run() calls from threads are independent. The server itself starts with a scrubbed environment
(no secrets in its memory). If the server dies, its candidates die with it and the next run()
starts a new one.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from typing import Any

import evoforge
from evoforge.sandbox._common import (CLEAN_ENV, RESULT_CAP, TAIL_BYTES, TOOLCHAINS_ENV, Limits,
                                      Toolchains, UidLease, build_result, encode_request)
from evoforge.sandbox.base import ERROR, RunResult, SandboxUnavailable
from evoforge.sandbox.forkserver.wire import ANSWER_HEADER, recv_all

# The folder that holds the `evoforge` package (the checkout, or site-packages): the server is
# started isolated (-I) and imports the package from there.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(evoforge.__file__)))
_BOOT = ("import sys; sys.path.insert(0, sys.argv[2]); "
         "from evoforge.sandbox.forkserver.server import serve; serve(int(sys.argv[1]))")
# What the warm server imports. numpy only by default: every preloaded module enlarges the
# server and so the cost of each fork (scipy's common submodules double it, see docs/sandbox.md).
_PRELOAD = ("numpy",)


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
        if os.geteuid() != 0:
            raise SandboxUnavailable(
                "ForkServerSandbox needs root (to switch to unprivileged sandbox uids and "
                "create namespaces); use the Docker sandbox.")
        try:  # the operator's setting, checked here so that a refusal says why
            toolchains = Toolchains.from_env()
        except ValueError as exc:
            raise SandboxUnavailable(str(exc)) from None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = dict(CLEAN_ENV, EVOFORGE_PRELOAD=",".join(self._preload))
        env[TOOLCHAINS_ENV] = ":".join(toolchains.dirs)
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
        request = encode_request(code, entrypoint, inputs, seed, driver)
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
                blob = recv_all(ours, RESULT_CAP + 4 * TAIL_BYTES + 65536)
            except (OSError, socket.timeout):
                return None
        if len(blob) < ANSWER_HEADER.size:
            return None
        (n,) = ANSWER_HEADER.unpack_from(blob)
        info = json.loads(blob[ANSWER_HEADER.size:ANSWER_HEADER.size + n])
        return build_result(limits=limits, raw=blob[ANSWER_HEADER.size + n:], **info)
