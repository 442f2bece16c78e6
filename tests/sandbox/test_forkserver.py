"""Fork-server correctness: outputs, seeds, concurrency, statuses, restart."""
import os
import signal
import threading
import time

import numpy as np
import pytest

from tests.sandbox.conftest import NORMAL, assert_still_works

SEEDED = ("import random\nimport numpy as np\n\n"
          "def f(k):\n    return [random.random(), np.random.rand(3), k]\n")


def test_outputs_roundtrip(fork_sandbox):
    code = ("import numpy as np\n\ndef f(n):\n    print('working', n)\n"
            "    return {'centers': np.zeros((n, 2)), 'radii': np.full(n, 0.5, dtype=np.float32),\n"
            "            'ok': True, 'name': 'x', 'nan': float('nan'), 'pair': (1, 2)}\n")
    r = fork_sandbox.run(code, "f", [{"n": 3}, {"n": 0}])
    assert r.status == "ok", r
    out = r.outputs[0]
    assert out["centers"].shape == (3, 2) and out["radii"].dtype == np.float32
    assert out["ok"] is True and out["pair"] == [1, 2] and np.isnan(out["nan"])
    assert r.outputs[1]["centers"].shape == (0, 2)
    assert r.stdout == "working 3\nworking 0\n" and r.duration_s > 0


def test_seed_determinism(fork_sandbox):
    a = fork_sandbox.run(SEEDED, "f", [{"k": 1}], seed=7)
    b = fork_sandbox.run(SEEDED, "f", [{"k": 1}], seed=7)
    c = fork_sandbox.run(SEEDED, "f", [{"k": 1}], seed=8)
    assert a.ok and b.ok and c.ok
    assert a.outputs[0][0] == b.outputs[0][0] and np.array_equal(a.outputs[0][1], b.outputs[0][1])
    assert a.outputs[0][0] != c.outputs[0][0]


def test_concurrent_runs_from_threads(fork_sandbox):
    expected = {s: fork_sandbox.run(SEEDED, "f", [{"k": s}], seed=s).outputs for s in range(6)}
    results, errors = {}, []

    def worker(s):
        try:
            results[s] = fork_sandbox.run(SEEDED, "f", [{"k": s}], seed=s)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(s % 6,)) for s in range(12)]
    slow = threading.Thread(target=lambda: results.setdefault(
        "slow", fork_sandbox.run("import time\ndef f():\n    time.sleep(1.0)\n    return 1\n",
                                 "f", [{}])))
    slow.start()
    for t in threads:
        t.start()
    for t in threads + [slow]:
        t.join(60)
    assert not errors
    assert results["slow"].outputs == [1]
    for s in range(6):
        r = results[s]
        assert r.ok, r
        assert r.outputs[0][0] == expected[s][0][0] and r.outputs[0][2] == s


def test_driver(fork_sandbox):
    driver = ("def drive(module, inputs, seed):\n"
              "    return [module.f(**kw) * 10 + seed for kw in inputs]\n")
    r = fork_sandbox.run("def f(x):\n    return x\n", "f", [{"x": 1}, {"x": 2}], seed=3,
                         driver=driver)
    assert r.ok and r.outputs == [13, 23]


@pytest.mark.parametrize("code,status,reason", [
    ("def f(:\n", "error", "SyntaxError"),
    ("x = 1\n", "error", "does not define f"),
    ("def f():\n    raise KeyError('nope')\n", "error", "KeyError"),
    ("import sys\ndef f():\n    sys.exit(3)\n", "error", "SystemExit"),
    ("import os\ndef f():\n    os._exit(0)\n", "error", "without"),
    ("def f():\n    return object()\n", "error", "unsupported type"),
    ("def f():\n    return [0] * (4 * 10**9)\n", "memory", "memory"),
])
def test_failure_statuses(fork_sandbox, code, status, reason):
    r = fork_sandbox.run(code, "f", [{}], timeout_s=5, memory_mb=512)
    assert r.status == status, r
    assert reason in r.reason, r


def test_error_carries_traceback_tail(fork_sandbox):
    r = fork_sandbox.run("def g():\n    1 / 0\n\ndef f():\n    g()\n", "f", [{}])
    assert r.status == "error" and "ZeroDivisionError" in r.reason
    assert 'candidate.py", line 2, in g' in r.stderr


def test_server_restarts_after_it_dies():
    from evoforge.sandbox.forkserver import ForkServerSandbox

    with ForkServerSandbox() as sb:
        assert_still_works(sb)
        pid = sb.server_pid()
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
        assert_still_works(sb)
        assert sb.server_pid() != pid


def test_factory_kinds():
    from evoforge.sandbox import make_sandbox
    from evoforge.sandbox.forkserver import ForkServerSandbox
    from evoforge.sandbox.subprocess_runner import SubprocessSandbox

    assert isinstance(make_sandbox(), ForkServerSandbox)
    assert isinstance(make_sandbox("subprocess", use_bwrap=False), SubprocessSandbox)
    with pytest.raises(ValueError):
        make_sandbox("nope")
