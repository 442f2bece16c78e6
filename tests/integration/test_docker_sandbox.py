"""DockerSandbox against a real container engine (podman's Docker API in CI).

Finds the engine through DOCKER_HOST, else the socket `scripts/setup_podman.sh` creates
(/run/evoforge/podman.sock). When neither exists but podman is installed and we are root, it runs
scripts/setup_podman.sh itself. Skips with the reason otherwise, or fails when
EVOFORGE_REQUIRE_SERVICES=1 (CI).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from evoforge.sandbox.base import ERROR, KILLED, MEMORY, OK, TIMEOUT

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SOCK = "/run/evoforge/podman.sock"


def _unavailable(reason: str):
    if os.environ.get("EVOFORGE_REQUIRE_SERVICES") == "1":
        pytest.fail(f"container engine required (EVOFORGE_REQUIRE_SERVICES=1): {reason}")
    pytest.skip(reason)


def _engine_url() -> str:
    if os.environ.get("DOCKER_HOST"):
        return os.environ["DOCKER_HOST"]
    if os.path.exists(DEFAULT_SOCK):
        return f"unix://{DEFAULT_SOCK}"
    if shutil.which("podman") and os.geteuid() == 0:
        proc = subprocess.run(["bash", str(ROOT / "scripts/setup_podman.sh"), DEFAULT_SOCK],
                              capture_output=True, text=True, timeout=900)
        if proc.returncode == 0:
            return f"unix://{DEFAULT_SOCK}"
        _unavailable(f"scripts/setup_podman.sh failed: {proc.stderr[-2000:]}")
    _unavailable(f"no container engine: DOCKER_HOST is unset and {DEFAULT_SOCK} does not exist "
                 "(run `sudo scripts/setup_podman.sh`)")


@pytest.fixture(scope="module")
def engine_url():
    return _engine_url()


@pytest.fixture(scope="module")
def sandbox(engine_url):
    from evoforge.sandbox.docker import DockerSandbox, SandboxUnavailable

    sb = DockerSandbox(base_url=engine_url)
    try:
        sb._check_image(sb.image)
    except SandboxUnavailable as exc:
        _unavailable(str(exc))
    # Leftovers of an earlier session whose engine died mid-run would fail every "nothing is
    # left" check below; this session's runs must leave none of their own.
    for c in _our_containers(sb):
        c.remove(force=True, v=True)
    yield sb
    sb.close()


def _our_containers(sb) -> list:
    return sb.client().containers.list(all=True, filters={"label": "evoforge.sandbox"})


def test_returns_outputs_and_numpy_arrays(sandbox):
    code = (
        "import numpy as np\n"
        "def solve(n, scale=1.0):\n"
        "    print('hello from the candidate')\n"
        "    return {'arr': np.arange(n, dtype=np.float64).reshape(2, -1) * scale,\n"
        "            'ints': np.eye(2, dtype=np.int64), 'n': n, 'r': float(np.random.rand())}\n"
    )
    r = sandbox.run(code, "solve", [{"n": 6}, {"n": 4, "scale": 0.5}], seed=7, timeout_s=20,
                    memory_mb=512)
    assert r.status == OK, (r.reason, r.stderr)
    first, second = r.outputs
    assert isinstance(first["arr"], np.ndarray) and first["arr"].dtype == np.float64
    np.testing.assert_array_equal(first["arr"], np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(second["arr"], np.arange(4.0).reshape(2, 2) * 0.5)
    assert first["ints"].dtype == np.int64 and first["n"] == 6
    assert "hello from the candidate" in r.stdout
    again = sandbox.run(code, "solve", [{"n": 6}], seed=7, timeout_s=20, memory_mb=512)
    assert again.outputs[0]["r"] == first["r"]  # seeded
    assert _our_containers(sandbox) == []


def test_exception_is_an_error_with_traceback(sandbox):
    code = "def solve():\n    return helper()\n\ndef helper():\n    raise ValueError('bad idea')\n"
    r = sandbox.run(code, "solve", [{}], timeout_s=20, memory_mb=256)
    assert r.status == ERROR
    assert "ValueError: bad idea" in r.reason
    assert "Traceback" in r.stderr and "helper" in r.stderr


def test_endless_loop_times_out_and_container_is_removed(sandbox):
    code = "import os\ndef solve():\n    os.fork()\n    while True:\n        pass\n"
    t0 = time.monotonic()
    r = sandbox.run(code, "solve", [{}], timeout_s=2, memory_mb=256)
    elapsed = time.monotonic() - t0
    assert r.status == TIMEOUT, (r.status, r.reason)
    assert elapsed < 2 + sandbox.startup_grace_s + 5, elapsed
    assert _our_containers(sandbox) == []


def test_big_allocation_is_not_ok(sandbox):
    code = "import numpy as np\ndef solve():\n    a = np.ones(400 * 2**20 // 8)\n    return float(a.sum())\n"
    r = sandbox.run(code, "solve", [{}], timeout_s=20, memory_mb=128)
    assert r.status == MEMORY, (r.status, r.reason, r.stderr)


def test_oom_kill_of_touched_pages_is_memory(sandbox):
    # grows the heap in small steps: no single allocation fails, the cgroup limit kills it
    code = (
        "def solve():\n"
        "    chunks = []\n"
        "    while True:\n"
        "        chunks.append(bytearray(8 * 2**20))\n"
    )
    r = sandbox.run(code, "solve", [{}], timeout_s=20, memory_mb=128)
    assert r.status in (MEMORY, KILLED), (r.status, r.reason)
    assert r.status == MEMORY


def test_no_network(sandbox):
    code = (
        "import socket\n"
        "def solve():\n"
        "    out = []\n"
        "    for host in [('1.1.1.1', 53), ('deb.debian.org', 80), ('10.0.2.2', 80)]:\n"
        "        try:\n"
        "            socket.create_connection(host, timeout=2).close()\n"
        "            out.append('connected')\n"
        "        except OSError as exc:\n"
        "            out.append(type(exc).__name__)\n"
        "    ifaces = [l.split(':')[0].strip() for l in open('/proc/net/dev').readlines()[2:]]\n"
        "    return {'attempts': out, 'ifaces': ifaces}\n"
    )
    r = sandbox.run(code, "solve", [{}], timeout_s=30, memory_mb=256)
    assert r.status == OK, (r.reason, r.stderr)
    assert "connected" not in r.outputs[0]["attempts"]
    assert r.outputs[0]["ifaces"] == ["lo"]


def test_read_only_root_clean_env_unprivileged(sandbox, monkeypatch):
    monkeypatch.setenv("EVOFORGE_SECRET_TOKEN", "do-not-leak")
    code = (
        "import os\n"
        "def solve():\n"
        "    res = {}\n"
        "    for path in ['/evil', '/usr/lib/evil', '/sbx/harness.py', '/sbx/new']:\n"
        "        try:\n"
        "            open(path, 'w').write('x')\n"
        "            res[path] = 'written'\n"
        "        except OSError as exc:\n"
        "            res[path] = type(exc).__name__\n"
        "    open('/tmp/scratch', 'w').write('fine')\n"
        "    return {'writes': res, 'uid': os.getuid(), 'env': sorted(os.environ),\n"
        "            'scratch': open('/tmp/scratch').read(), 'cwd': os.getcwd()}\n"
    )
    r = sandbox.run(code, "solve", [{}], timeout_s=20, memory_mb=256)
    assert r.status == OK, (r.reason, r.stderr)
    out = r.outputs[0]
    assert all(v != "written" for v in out["writes"].values()), out["writes"]
    assert out["uid"] == 65534 and out["scratch"] == "fine" and out["cwd"] == "/tmp"
    assert not [k for k in out["env"] if "SECRET" in k or "DATABASE" in k or "API_KEY" in k]
    assert "EVOFORGE_LIMITS" not in out["env"]  # the harness consumed it


def test_signal_is_killed_and_next_run_still_works(sandbox):
    code = "import os, signal\ndef solve():\n    os.kill(os.getpid(), signal.SIGSEGV)\n"
    r = sandbox.run(code, "solve", [{}], timeout_s=20, memory_mb=256)
    assert r.status == KILLED and "SIGSEGV" in r.reason, (r.status, r.reason)
    ok = sandbox.run("def f(x):\n    return x + 1\n", "f", [{"x": 41}], timeout_s=20,
                     memory_mb=256)
    assert ok.status == OK and ok.outputs == [42]
    assert _our_containers(sandbox) == []


def test_pids_limit_stops_fork_bomb(sandbox):
    code = (
        "import os\n"
        "def solve():\n"
        "    n = 0\n"
        "    try:\n"
        "        for _ in range(10000):\n"
        "            if os.fork() == 0:\n"
        "                import time; time.sleep(30); os._exit(0)\n"
        "            n += 1\n"
        "    except OSError:\n"
        "        pass\n"
        "    return n\n"
    )
    r = sandbox.run(code, "solve", [{}], timeout_s=20, memory_mb=512)
    assert r.status == OK, (r.status, r.reason)
    assert r.outputs[0] < sandbox.pids_limit


def test_missing_image_and_unreachable_engine_are_clear(engine_url, tmp_path):
    from evoforge.sandbox.docker import DockerSandbox, SandboxUnavailable

    sb = DockerSandbox(image="evoforge-no-such-image:latest", base_url=engine_url)
    with pytest.raises(SandboxUnavailable, match="setup_podman.sh|docker build"):
        sb.run("def f():\n    return 1\n", "f", [{}], timeout_s=5, memory_mb=128)
    sb.close()
    dead = DockerSandbox(base_url=f"unix://{tmp_path / 'nothing.sock'}")
    with pytest.raises(SandboxUnavailable, match="cannot reach a container engine"):
        dead.run("def f():\n    return 1\n", "f", [{}], timeout_s=5, memory_mb=128)


def test_image_per_task(sandbox):
    bound = sandbox.for_task("matmul")
    assert bound.image == sandbox.image
    from evoforge.sandbox.docker import DockerSandbox

    mapped = DockerSandbox(images_per_task={"matmul": "evoforge-matmul:1"}, client=sandbox.client())
    assert mapped.for_task("matmul").image == "evoforge-matmul:1"
    assert mapped.for_task("optimizer").image == mapped.image
    r = bound.run("def f():\n    return 'hi'\n", "f", [{}], timeout_s=20, memory_mb=128)
    assert r.status == OK and r.outputs == ["hi"]


def test_container_overhead(sandbox, capsys):
    """Reports per-run overhead (create + start + python/numpy startup + read-back + remove)."""
    code = "def f():\n    return 1\n"
    sandbox.run(code, "f", [{}], timeout_s=20, memory_mb=256)
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        r = sandbox.run(code, "f", [{}], timeout_s=20, memory_mb=256)
        times.append(time.perf_counter() - t0)
        assert r.ok
    median_ms = sorted(times)[len(times) // 2] * 1000
    with capsys.disabled():
        print(f"\n[docker sandbox] per-run overhead: median {median_ms:.0f} ms over 5 runs")
    assert median_ms < 10_000


def test_gpu_request_is_honoured_or_refused_loudly(engine_url):
    """podman drops DeviceRequests: the sandbox must refuse instead of running without a GPU."""
    from evoforge.sandbox.docker import DockerSandbox, SandboxUnavailable

    sb = DockerSandbox(base_url=engine_url, gpu=True)
    code = "import os\ndef f():\n    return os.environ['EVOFORGE_DEVICE']\n"
    try:
        r = sb.run(code, "f", [{}], timeout_s=20, memory_mb=512)
    except SandboxUnavailable as exc:
        assert "GPU" in str(exc) or "device" in str(exc).lower(), exc
    else:  # an engine with the NVIDIA toolkit
        assert r.status == OK and r.outputs == ["cuda"], (r.status, r.reason)
    finally:
        sb.close()
    assert sb.client().containers.list(all=True, filters={"label": "evoforge.sandbox"}) == []
