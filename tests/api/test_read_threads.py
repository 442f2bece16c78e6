"""The read routes share a few threads per API process (api/read_threads.py), real server.

With EVOFORGE_READ_THREADS=2 no more than two program reads run at once however many clients
ask, every request is still answered, and the other routes
are not held up by reads that fill those threads (here /healthz and /tasks).
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from evoforge.api.services import programs as svc
from tests.api.conftest import start_server


def test_reads_queue_on_their_threads_and_leave_other_routes_free(tmp_path, monkeypatch):
    monkeypatch.setenv("EVOFORGE_READ_THREADS", "2")
    running, peak, lock = 0, 0, threading.Lock()
    release = threading.Event()    # the reads hold their threads until the test lets them go
    real = svc.program_detail

    def held_detail(*args, **kw):
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        try:
            release.wait(60)
            return real(*args, **kw)
        finally:
            with lock:
                running -= 1
    monkeypatch.setattr(svc, "program_detail", held_detail)

    srv = start_server(f"sqlite:///{tmp_path / 'reads.db'}", execute=False)
    try:
        with httpx.Client(base_url=srv.url + "/api/v1", timeout=60) as c:
            r = c.post("/evaluations", json={"task": "circle_packing",
                                             "code": "def pack_circles(n):\n    return None\n"})
            assert r.status_code == 200, r.text
            pid = r.json()["program_id"]

        def get(path: str, timeout: float = 60) -> int:
            return httpx.get(srv.url + "/api/v1" + path, timeout=timeout).status_code

        with ThreadPoolExecutor(10) as pool:
            reads = [pool.submit(get, f"/programs/{pid}") for _ in range(10)]
            deadline = time.monotonic() + 30
            while running < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.3)                 # the other 8 have arrived and queue for a slot
            assert running == 2 and peak == 2, (running, peak)
            # the read threads are all taken: other routes still answer
            assert get("/healthz", timeout=20) == 200
            assert get("/tasks", timeout=20) == 200
            assert running == 2 and not any(f.done() for f in reads)
            release.set()
            codes = [f.result() for f in reads]
        assert codes == [200] * 10
        assert peak == 2, peak
    finally:
        release.set()
        srv.stop()
