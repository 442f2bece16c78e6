"""Fork-server isolation between concurrent runs, and the limits as the candidate sees them.

The fork-server supervises every run from one process that also holds the other runs' sockets
and pipes, so these tests check what a candidate can reach while other runs are in flight.
"""
import math
import threading
import time

from evoforge.sandbox._common import cpu_limit_s, usable_cpus
from tests.sandbox.conftest import assert_still_works

# Each run reports its uid, what it finds in /tmp and /proc/self/fd, then (role "listen")
# binds an abstract unix socket and waits, or (role "probe") tries to reach it.
PEER = """
import os, socket, time
def f(role, name, hold_s):
    open("mine-" + role, "w").write(role)
    out = {"uid": os.getuid(), "tmp": sorted(os.listdir("/tmp")),
           "fds": sorted(int(x) for x in os.listdir("/proc/self/fd")),
           "procs": sorted(int(x) for x in os.listdir("/proc") if x.isdigit())}
    if role == "listen":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind("\\0" + name)
        s.listen(4)
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect("\\0" + name)  # abstract sockets work inside one run: the probe is meaningful
        out["self_connect"] = "ok"
        s.settimeout(hold_s)
        try:
            s.accept()  # our own connection
            s.accept()  # a connection from another run would be a channel between candidates
            out["accepted_foreign"] = True
        except OSError:
            out["accepted_foreign"] = False
    else:
        deadline, got = time.monotonic() + hold_s, []
        while time.monotonic() < deadline:
            try:
                c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                c.connect("\\0" + name)
                got.append("connected")
                break
            except OSError as exc:
                got.append(type(exc).__name__)
                time.sleep(0.05)
        out["probe"] = sorted(set(got))
        try:
            nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 2)  # NETLINK_USERSOCK
            nl.bind((0, 0))
            out["netlink"] = "bound"
        except OSError as exc:
            out["netlink"] = type(exc).__name__
    return out
"""


def test_concurrent_runs_are_isolated_from_each_other(fork_sandbox):
    name = f"evoforge-probe-{time.time_ns()}"
    results = {}

    def go(role, hold_s):
        results[role] = fork_sandbox.run(PEER, "f", [{"role": role, "name": name,
                                                      "hold_s": hold_s}], timeout_s=10)

    listener = threading.Thread(target=go, args=("listen", 2.5))
    listener.start()
    time.sleep(0.5)  # the listener is bound by now
    go("probe", 1.5)
    listener.join(20)
    lst, prb = results["listen"], results["probe"]
    assert lst.status == "ok" and prb.status == "ok", (lst, prb)
    a, b = lst.outputs[0], prb.outputs[0]
    assert a["self_connect"] == "ok"
    assert a["accepted_foreign"] is False and "connected" not in b["probe"], (a, b)
    # Unique unprivileged uids, private scratch, a private pid namespace, and only the run's
    # own channels (0-3) open: none of the server's fds for the other run leak into a child.
    assert a["uid"] != b["uid"] and a["uid"] >= 60000 and b["uid"] >= 60000
    # Only its own file in its scratch (plus the mount point of a checkout/venv living under /tmp).
    from evoforge.sandbox._common import python_dirs

    python_under_tmp = {d.split("/")[2] for d in python_dirs() if d.startswith("/tmp/")}
    assert [f for f in a["tmp"] if f not in python_under_tmp] == ["mine-listen"]
    assert [f for f in b["tmp"] if f not in python_under_tmp] == ["mine-probe"]
    assert a["procs"] == [1] and b["procs"] == [1]
    for out in (a, b):
        assert set(out["fds"]) - {0, 1, 2, 3} <= {max(out["fds"])}, out["fds"]  # + listdir's fd
    assert_still_works(fork_sandbox)


LIMITS = """
import resource
def f():
    names = ["RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_NOFILE", "RLIMIT_NPROC", "RLIMIT_FSIZE",
             "RLIMIT_CORE"]
    out = {n: list(resource.getrlimit(getattr(resource, n))) for n in names}
    with open("/proc/self/statm") as fh:
        out["vm_bytes"] = int(fh.read().split()[0]) * resource.getpagesize()
    return out
"""


def test_rlimits_as_the_candidate_sees_them(fork_sandbox):
    r = fork_sandbox.run(LIMITS, "f", [{}], timeout_s=3.5, memory_mb=300)
    assert r.status == "ok", r
    lim = r.outputs[0]
    # a runaway bound only: what every usable CPU can burn in the wall-clock limit, + slack
    assert lim["RLIMIT_CPU"][0] == cpu_limit_s(3.5, usable_cpus())
    assert cpu_limit_s(3.5, usable_cpus()) == math.ceil(3.5 * usable_cpus()) + 2
    assert lim["RLIMIT_NOFILE"] == [256, 256]
    assert lim["RLIMIT_NPROC"] == [64, 64]
    assert lim["RLIMIT_FSIZE"] == [32 * 2**20] * 2
    assert lim["RLIMIT_CORE"] == [0, 0]
    soft, hard = lim["RLIMIT_AS"]
    assert soft == hard and 300 * 2**20 < soft < 300 * 2**20 + 2 * 2**30
    # The baseline is the candidate's own address space when it starts (the server's at fork
    # time): memory_mb is what the candidate may add to it.
    assert abs(soft - 300 * 2**20 - lim["vm_bytes"]) < 64 * 2**20, (soft, lim["vm_bytes"])
    raised = fork_sandbox.run("import resource\ndef f():\n    resource.setrlimit("
                              "resource.RLIMIT_NPROC, (10**6, 10**6))\n    return 1\n",
                              "f", [{}])
    assert raised.status == "error", raised  # not root any more: hard limits stay


def test_environment_is_exactly_the_clean_one(fork_sandbox):
    from evoforge.sandbox._common import CLEAN_ENV

    r = fork_sandbox.run("import os\ndef f():\n    return dict(os.environ)\n", "f", [{}])
    assert r.status == "ok", r
    assert r.outputs[0] == CLEAN_ENV  # nothing of the worker's or the server's set-up


def test_too_many_open_files(fork_sandbox):
    r = fork_sandbox.run("import os\ndef f():\n    fds = []\n    try:\n        while True:\n"
                         "            fds.append(os.open('/dev/null', os.O_RDONLY))\n"
                         "    except OSError as exc:\n        return [len(fds), exc.errno]\n",
                         "f", [{}])
    assert r.status == "ok", r
    count, errno_ = r.outputs[0]
    assert errno_ == 24 and count < 256  # EMFILE


def _children_with_sandbox_uid(ppid: int) -> list[int]:
    from tests.sandbox.conftest import sandbox_processes

    found = []
    for pid, _uid in sandbox_processes():
        try:
            with open(f"/proc/{pid}/stat") as fh:
                if int(fh.read().rsplit(")", 1)[1].split()[1]) == ppid:
                    found.append(pid)
        except OSError:
            continue
    return found


def test_running_candidate_dies_with_the_server():
    import os
    import signal

    from evoforge.sandbox.forkserver import ForkServerSandbox

    with ForkServerSandbox() as sb:
        sb.start()
        server = sb.server_pid()
        box = {}
        t = threading.Thread(target=lambda: box.setdefault("r", sb.run(
            "import time\ndef f():\n    time.sleep(30)\n", "f", [{}], timeout_s=3)))
        t.start()
        deadline = time.monotonic() + 5
        while not (running := _children_with_sandbox_uid(server)):
            assert time.monotonic() < deadline, "the candidate never started"
            time.sleep(0.05)
        os.kill(server, signal.SIGKILL)
        time.sleep(1.0)
        for pid in running:  # PDEATHSIG: C (and with it its pid namespace) died too
            assert not os.path.exists(f"/proc/{pid}") or _is_zombie_or_other(pid, server)
        t.join(30)
        assert box["r"].status == "timeout"  # retried once on a fresh server, then cut off
        assert sb.server_pid() != server


def _is_zombie_or_other(pid: int, server: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return True
    return fields[0] in ("Z", "X") or int(fields[1]) != server
