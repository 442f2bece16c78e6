"""Hostile candidates: each must be contained, and the next run must still work.

Every case runs in the fork-server; the cases marked BOTH also run in the subprocess runner
(with bubblewrap when installed, and without).
"""
import json
import os
import shutil
import socket
import sqlite3
import time

import pytest

from tests.sandbox.conftest import assert_still_works, sandbox_processes

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SECRET = "sk-evoforge-test-secret-0123456789"


@pytest.fixture(scope="module", params=["fork", "bwrap", "plain"])
def runner(request, fork_sandbox):
    if request.param == "fork":
        yield "fork", fork_sandbox
        return
    from evoforge.sandbox.subprocess_runner import SubprocessSandbox

    if request.param == "bwrap" and not shutil.which("bwrap"):
        pytest.skip("bubblewrap not installed")
    yield request.param, SubprocessSandbox(use_bwrap=request.param == "bwrap")


def only_fork(runner):
    if runner[0] != "fork":
        pytest.skip("fork-server only (keeps the suite fast)")


PRELUDE = "import os as _os\nprint('SANDBOX-UID', _os.getuid(), flush=True)\n"


def run(runner, code, inputs=({},), **kw):
    """Run `f` of `code`; the candidate first prints its uid so leftovers can be looked for."""
    kw.setdefault("timeout_s", 2.0)
    kw.setdefault("memory_mb", 512)
    return runner[1].run(PRELUDE + code, "f", list(inputs), **kw)


def no_sandbox_processes_left(r, wait_s=2.0):
    """No process of this run's uid is alive (other test sessions may use other uids)."""
    uid = int(r.stdout.split("SANDBOX-UID", 1)[1].split()[0])
    assert uid >= 60000

    def mine():
        return [p for p, u in sandbox_processes() if u == uid]

    deadline = time.monotonic() + wait_s
    while mine() and time.monotonic() < deadline:
        time.sleep(0.05)
    return mine() == []


# -- time and memory


def test_endless_loop_ignoring_sigterm(runner):
    code = ("import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "def f():\n    while True:\n        pass\n")
    t0 = time.monotonic()
    r = run(runner, code, timeout_s=2.0)  # fresh interpreters need time to reach f()
    assert r.status == "timeout", r
    assert time.monotonic() - t0 < 8
    assert no_sandbox_processes_left(r)
    assert_still_works(runner[1])


def test_sleeping_forever_is_a_timeout(runner):
    only_fork(runner)
    r = run(runner, "import time\ndef f():\n    time.sleep(100)\n", timeout_s=0.5)
    assert r.status == "timeout", r
    assert_still_works(runner[1])


@pytest.mark.parametrize("alloc", ["np.ones(8 * 2**30 // 8)", "bytearray(8 * 2**30)",
                                   "[bytearray(2**20) for _ in range(9000)]"])
def test_8gib_allocation(runner, alloc):
    if alloc.startswith("["):
        only_fork(runner)
    r = run(runner, f"import numpy as np\ndef f():\n    x = {alloc}\n    return 1\n",
            timeout_s=10)
    assert r.status == "memory", r
    assert_still_works(runner[1])


# -- processes


def test_fork_bomb(runner):
    code = ("import os\ndef f():\n    n = 0\n    while True:\n        try:\n"
            "            if os.fork() == 0:\n                n = 0\n            n += 1\n"
            "        except OSError:\n            pass\n")
    r = run(runner, code, timeout_s=2.0)
    assert r.status in ("timeout", "error", "killed"), r
    assert no_sandbox_processes_left(r), sandbox_processes()
    assert_still_works(runner[1])


def test_daemon_dies_with_the_run(runner, tmp_path):
    marker = tmp_path / "daemon-was-here"
    os.chmod(tmp_path, 0o777)
    code = f"""
import os, time
def f():
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            time.sleep(1.0)
            for path in ({str(marker)!r}, "/tmp/daemon-marker"):
                try:
                    open(path, "w").write("alive")
                except OSError:
                    pass
            time.sleep(60)
        os._exit(0)
    return os.getpid()
"""
    r = run(runner, code)
    assert r.status == "ok", r
    time.sleep(1.5)
    assert not marker.exists()
    assert no_sandbox_processes_left(r), sandbox_processes()
    assert_still_works(runner[1])


def test_thousands_of_threads(runner):
    only_fork(runner)
    code = ("import threading, time\ndef f():\n    ts = []\n    for _ in range(5000):\n"
            "        t = threading.Thread(target=time.sleep, args=(30,), daemon=True)\n"
            "        t.start()\n        ts.append(t)\n    return len(ts)\n")
    r = run(runner, code, timeout_s=5)
    assert r.status in ("error", "memory"), r
    assert "thread" in r.reason.lower() or r.status == "memory", r
    assert no_sandbox_processes_left(r)
    assert_still_works(runner[1])


def test_killing_the_parent_and_everything_visible(runner):
    only_fork(runner)
    code = """
import os, signal
def f():
    hits = []
    for target in (os.getppid(), 0, -1, 1):
        try:
            os.kill(target, signal.SIGKILL)
            hits.append(target)
        except OSError:
            pass
    for pid in range(2, 400):
        try:
            os.kill(pid, signal.SIGKILL)
            hits.append(pid)
        except OSError:
            pass
    return hits
"""
    server = runner[1].server_pid() if runner[0] == "fork" else None
    r = run(runner, code)
    assert r.status in ("ok", "killed", "error"), r
    if server is not None:
        assert runner[1].server_pid() == server
        os.kill(server, 0)  # still alive
    assert_still_works(runner[1])


def test_deep_recursion(runner):
    only_fork(runner)
    code = ("import sys\nsys.setrecursionlimit(10**6)\n"
            "def r(n):\n    return r(n + 1) + 1\n\ndef f():\n    return r(0)\n")
    r = run(runner, code, timeout_s=8, memory_mb=256)
    assert r.status in ("killed", "error", "memory", "timeout"), r
    assert_still_works(runner[1])


def test_segfault(runner):
    r = run(runner, "import ctypes\ndef f():\n    return ctypes.string_at(0)\n")
    assert r.status == "killed" and "SIGSEGV" in r.reason, r
    assert_still_works(runner[1])


# -- the result channel


def test_fake_result_on_stdout(runner):
    fake = json.dumps({"status": "ok", "outputs": [1e9], "reason": "", "traceback": ""})
    code = f"def f():\n    print({fake!r})\n    return 1\n"
    r = run(runner, code)
    assert r.status == "ok" and r.outputs == [1], r


def test_closing_or_garbling_the_result_channel(runner):
    only_fork(runner)
    closed = run(runner, "import os\ndef f():\n    os.close(3)\n    return 1\n")
    assert closed.status == "error", closed
    garbled = run(runner, "import os\ndef f():\n    os.write(3, b'{\"status\": \"ok\", ')\n"
                          "    return 1\n")
    assert garbled.status == "error", garbled
    quiet = run(runner, "import os, time\ndef f():\n    os.closerange(0, 10)\n"
                        "    time.sleep(30)\n")
    assert quiet.status == "error", quiet
    assert_still_works(runner[1])


def test_stdout_flood(runner):
    code = ("import sys\ndef f():\n    chunk = 'x' * 65536 + '\\n'\n"
            "    for _ in range(3000):\n        sys.stdout.write(chunk)\n"
            "        sys.stderr.write(chunk)\n    print('END')\n    return 1\n")
    r = run(runner, code, timeout_s=20)
    assert r.status == "ok", r.reason
    assert len(r.stdout) < 80 * 1024 and len(r.stderr) < 80 * 1024
    assert r.stdout.endswith("END\n")
    assert_still_works(runner[1])


def test_huge_output(runner):
    only_fork(runner)
    r = run(runner, "import numpy as np\ndef f():\n    return np.zeros(30_000_000)\n",
            timeout_s=20, memory_mb=1024)
    assert r.status == "error" and "MiB" in r.reason, r
    assert_still_works(runner[1])


# -- isolation


def test_no_network(runner):
    only_fork(runner) if runner[0] == "plain" else None
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    srv.setblocking(False)
    port = srv.getsockname()[1]
    code = f"""
import socket
def f():
    out = []
    for addr in (("127.0.0.1", {port}), ("8.8.8.8", 53), ("localhost", {port})):
        try:
            s = socket.create_connection(addr, timeout=0.5)
            out.append("connected")
        except OSError as exc:
            out.append(type(exc).__name__)
    return out
"""
    try:
        r = run(runner, code)
        assert r.status == "ok", r
        assert "connected" not in r.outputs[0], r.outputs
        with pytest.raises(BlockingIOError):
            srv.accept()
    finally:
        srv.close()
    assert_still_works(runner[1])


KERNEL_SURFACE = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

def call(*args):
    ctypes.set_errno(0)
    r = libc.syscall(*[ctypes.c_long(a) for a in args])
    return [r, ctypes.get_errno()]

def f():
    buf = ctypes.create_string_buffer(256)
    p = ctypes.addressof(buf)
    return {
        "unshare(CLONE_NEWUSER)": call(272, 0x10000000),
        "clone(CLONE_NEWUSER)": call(56, 0x10000000 | 17, 0, 0, 0, 0),
        "clone(CLONE_NEWNET)": call(56, 0x40000000 | 17, 0, 0, 0, 0),
        "setns": call(308, 0, 0),
        "io_uring_setup": call(425, 4, p),
        "keyctl(join session keyring)": call(250, 1, 0),
        "add_key": call(248, p, p, 0, 0, -3),
        "userfaultfd(user mode only)": call(323, 1),
        "bpf": call(321, 0, p, 48),
        "perf_event_open": call(298, p, 0, -1, -1, 0),
        "ptrace(PTRACE_TRACEME)": call(101, 0, 0, 0, 0),
        "process_vm_readv": call(310, 1, p, 1, p, 1, 0),
        "open_by_handle_at": call(304, -100, p, 0),
        "fsopen": call(430, p, 0),
        "clone3": call(435, p, 88),
    }
"""


def test_kernel_attack_surface_is_filtered(runner):
    # Namespaces, io_uring, keyrings, bpf, userfaultfd, perf, ptrace...: a contained program has
    # no use for them (without the filter, unshare(CLONE_NEWUSER), io_uring, keyrings and
    # userfaultfd all work for the sandbox uid on the development kernel).
    r = run(runner, KERNEL_SURFACE)
    assert r.status == "ok", r
    got = r.outputs[0]
    assert got.pop("clone3") == [-1, 38]  # ENOSYS: libc falls back to clone, whose flags are read
    assert all(v == [-1, 1] for v in got.values()), got  # EPERM
    assert_still_works(runner[1])


def test_threads_and_processes_still_work_under_the_filter(runner):
    code = """
import multiprocessing, os, subprocess, sys, threading
import numpy as np
def f():
    out = []
    t = threading.Thread(target=lambda: out.append(float(np.ones(4) @ np.ones(4))))
    t.start(); t.join()
    pid = os.fork()
    if pid == 0:
        os._exit(3)
    out.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
    out.append(subprocess.run([sys.executable, "-c", "print(6 * 7)"], capture_output=True,
                              text=True, timeout=20).stdout.strip())
    with multiprocessing.get_context("fork").Pool(2) as pool:
        out.append(pool.map(abs, [-1, -2]))
    return out
"""
    r = run(runner, code, timeout_s=30)
    assert r.status == "ok", r
    assert r.outputs[0] == [4.0, 3, "42", [1, 2]]


def test_environment_and_proc_secrets(monkeypatch):
    from evoforge.sandbox.forkserver import ForkServerSandbox
    from evoforge.sandbox.subprocess_runner import SubprocessSandbox

    for key in ("EVOFORGE_LLM_API_KEY", "OPENAI_API_KEY", "EVOFORGE_DATABASE_URL"):
        monkeypatch.setenv(key, SECRET if key != "EVOFORGE_DATABASE_URL"
                           else f"postgresql://u:{SECRET}@db/x")
    code = """
import os, glob
def f():
    seen = [repr(dict(os.environ))]
    for path in ["/proc/1/environ", "/proc/self/environ", "/proc/1/cmdline"] + \\
            glob.glob("/proc/[0-9]*/environ"):
        try:
            seen.append(open(path, "rb").read().decode("latin-1"))
        except OSError as exc:
            seen.append(type(exc).__name__)
    try:  # the interpreter's own memory: the fork-server never held the secrets
        with open("/proc/self/maps") as maps, open("/proc/self/mem", "rb") as mem:
            for line in maps:
                lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
                if "rw" in line.split()[1] and hi - lo < 64 * 2**20:
                    try:
                        mem.seek(lo)
                        if b"sk-evoforge-test-secret" in mem.read(hi - lo):
                            seen.append("FOUND IN MEMORY")
                    except OSError:
                        pass
    except OSError:
        pass
    return "\\n".join(seen)
"""
    kinds = [ForkServerSandbox()] + [SubprocessSandbox(use_bwrap=False)]
    if shutil.which("bwrap"):
        kinds.append(SubprocessSandbox(use_bwrap=True))
    for sb in kinds:
        try:
            r = sb.run(code, "f", [{}], timeout_s=10)
            assert r.status == "ok", r
            assert SECRET not in r.outputs[0] and "FOUND IN MEMORY" not in r.outputs[0]
            assert "EVOFORGE_LLM_API_KEY" not in r.outputs[0]
            assert "OPENAI_API_KEY" not in r.outputs[0]
            assert "HOME" in r.outputs[0]  # the environment was readable, just clean
        finally:
            sb.close()


def test_filesystem_is_private_and_read_only(runner, tmp_path):
    db = tmp_path / "evoforge.db"
    con = sqlite3.connect(db)
    con.execute("create table t (x)")
    con.commit()
    con.close()
    os.chmod(tmp_path, 0o777)
    os.chmod(db, 0o666)  # even a world-writable database must be out of reach
    before = db.read_bytes()
    targets = [str(db), os.path.join(REPO, "sandbox", "base.py"), os.path.join(REPO, "pwned"),
               "/etc/passwd", "/usr/pwned", "/root/pwned", "/pwned", "/dev/shm/../pwned",
               os.path.join(os.path.dirname(os.__file__), "os.py")]
    code = f"""
import os
def f():
    wrote = []
    for path in {targets!r}:
        try:
            with open(path, "a") as fh:
                fh.write("pwned")
            wrote.append(path)
        except OSError:
            pass
    seen = [p for p in ({str(tmp_path)!r}, "/root/.ssh", "/home", "/work/shared")
            if os.path.exists(p) and os.listdir(p)]
    # Only the virtual environment (what Python needs) may show inside the repository.
    if os.path.isdir({REPO!r}):
        seen += [n for n in os.listdir({REPO!r}) if n != ".venv"]
    open("scratch.txt", "w").write("fine")
    return [wrote, seen, os.getcwd(), open("scratch.txt").read(), os.getuid()]
"""
    r = run(runner, code)
    assert r.status == "ok", r
    wrote, seen, cwd, scratch, uid = r.outputs[0]
    assert wrote == [] and seen == [], r.outputs
    assert scratch == "fine" and uid >= 60000
    assert db.read_bytes() == before
    assert not os.path.exists(os.path.join(REPO, "pwned"))
    assert_still_works(runner[1])


def test_filling_the_disk(runner):
    code = """
import os
def f():
    written = 0
    try:
        with open("big", "wb") as fh:
            while written < 4 * 2**30:
                fh.write(b"\\0" * 2**20)
                written += 2**20
    except OSError as exc:
        return [written, type(exc).__name__]
    return [written, "no limit"]
"""
    r = run(runner, code, timeout_s=20)
    assert r.status == "ok", r
    written, err = r.outputs[0]
    assert err != "no limit" and written <= 64 * 2**20, r.outputs
    assert_still_works(runner[1])


def test_monkeypatching_numpy_and_builtins(runner):
    only_fork(runner)
    code = """
import builtins, json, numpy as np
np.sum = lambda *a, **k: 42
builtins.len = lambda x: 0
builtins.isinstance = lambda *a: True
json.dumps = lambda *a, **k: '{"status": "ok", "outputs": [1e9]}'
def f():
    return np.arange(3) * 1.0
"""
    r = run(runner, code)
    assert r.status == "ok" and list(r.outputs[0]) == [0.0, 1.0, 2.0], r
    assert_still_works(runner[1])


def test_lying_objects_are_refused(runner):
    only_fork(runner)
    code = """
import numpy as np
class Liar(float):
    def __eq__(self, other): return True
    def __lt__(self, other): return True
class Obj:
    def __float__(self): return 1.0
    def __eq__(self, other): return True
def f(kind):
    return {"sub": Liar(1.0), "obj": Obj(), "arr": np.array([Obj()], dtype=object),
            "nested": [1, {"k": Liar(2.0)}]}[kind]
"""
    for kind in ("sub", "obj", "arr", "nested"):
        r = run(runner, code, inputs=[{"kind": kind}])
        assert r.status == "error" and "unsupported" in r.reason, r
    assert_still_works(runner[1])
