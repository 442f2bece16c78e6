"""ForkServerSandbox: the default runner. A warm server forks one isolated child per candidate.

    client (worker process)          server (warm, numpy imported, private root, supervisor of
                                             every run in one poll loop)
    run() --socketpair end + limits--> unshare(pid); fork C ahead of time; setns(own pid ns)
                                        C: PID 1 of the new pid namespace; closes the server's
                                           fds; unshare(mount, ipc, net); /proc; waits for a job
                                        job -> C: reads the request from the client's socket,
                                           tmpfs /tmp, rlimits, drop to uid 600xx,
                                           no_new_privs, seccomp filter,
                                           harness.run_request -> fd 3
                                        server: wall clock (SIGKILL C = kill the namespace),
                                           64 KiB stdout/stderr tails, result from fd 3
    <---------- header JSON + raw result over the socketpair --------------
    build_result() -> RunResult (outputs decoded by trusted code)

One module per process: client.py (the worker side), server.py (the warm server and
supervisor), child.py (the candidate process C); wire.py holds what they exchange.
See docs/sandbox.md for the isolation and the measurements.
"""
from __future__ import annotations

from evoforge.sandbox import SCIPY_PRELOAD
from evoforge.sandbox.forkserver.client import ForkServerSandbox

__all__ = ["ForkServerSandbox", "SCIPY_PRELOAD"]
