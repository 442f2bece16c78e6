"""worker.runtime.prestart_sandbox: the shared fork-server starts in the background, is the one
shared_sandbox() hands out, survives its starting thread's wait, and close_sandboxes() stops it
(also when it comes before or during the start)."""
import threading
import time

import pytest

from evoforge.worker import runtime


def _keepers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "evoforge-sandbox-start"]


def _wait(cond, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture(autouse=True)
def _clean():
    runtime.close_sandboxes()
    yield
    runtime.close_sandboxes()
    _wait(lambda: not _keepers())


def test_prestarted_server_is_the_shared_one_and_stays_up():
    runtime.prestart_sandbox("fork")
    sb = runtime.shared_sandbox("fork")
    _wait(lambda: sb.server_pid() is not None)
    with sb._lock:  # the start is complete
        proc = sb._proc
    time.sleep(0.3)
    assert proc.poll() is None  # the starting thread waits: no parent-death signal
    r = sb.run("def f(n):\n    return n * 2\n", "f", [{"n": 21}])
    assert r.ok and r.outputs == [42]
    assert sb.server_pid() == proc.pid  # the same server ran it
    runtime.close_sandboxes()
    assert proc.poll() is not None
    _wait(lambda: not _keepers())


def test_close_right_after_prestart_leaves_nothing_running():
    for _ in range(5):
        runtime.prestart_sandbox("fork")
        sbs = list(runtime._sandboxes.values())
        runtime.close_sandboxes()
        _wait(lambda: not _keepers())
        for sb in sbs:
            assert sb._proc is None or sb._proc.poll() is not None
        assert runtime._sandboxes == {}


def test_close_during_the_start_stops_the_server():
    runtime.prestart_sandbox("fork")
    _wait(lambda: "fork" in runtime._sandboxes)
    sb = runtime._sandboxes["fork"]
    time.sleep(0.05)  # most likely inside start()
    runtime.close_sandboxes()
    _wait(lambda: not _keepers())
    assert sb._proc is None or sb._proc.poll() is not None


@pytest.mark.parametrize("kind", ["subprocess", "docker"])
def test_other_kinds_start_on_first_use(kind):
    runtime.prestart_sandbox(kind)
    assert runtime._sandboxes == {} and not _keepers()


def test_a_failed_start_is_left_to_the_first_run(monkeypatch):
    from evoforge import sandbox

    def broken(kind="fork", **kw):
        raise RuntimeError("no sandbox here")

    monkeypatch.setattr(sandbox, "make_sandbox", broken)
    runtime.prestart_sandbox("fork")
    _wait(lambda: not _keepers())  # it gave up
    assert runtime._sandboxes == {}
    with pytest.raises(RuntimeError, match="no sandbox here"):
        runtime.shared_sandbox("fork")
