"""`create_app(server=True)` (evoforge serve, and each process of --workers N) settles its
process once the app has started: the start-up's objects frozen out of the GC's walks, and a
GIL switch interval of 1 ms. An app inside someone else's process (tests, embedding) leaves the
process as it found it."""
from __future__ import annotations

import gc
import sys

from fastapi.testclient import TestClient

from evoforge.api.app import SWITCH_INTERVAL_S, create_app


def test_a_serving_process_is_settled_once_started(tmp_path):
    before = sys.getswitchinterval()
    try:
        sys.setswitchinterval(0.005)
        gc.unfreeze()
        app = create_app(f"sqlite:///{tmp_path / 'a.db'}", execute=False)
        with TestClient(app):
            assert sys.getswitchinterval() == 0.005 and gc.get_freeze_count() == 0
        app = create_app(f"sqlite:///{tmp_path / 'b.db'}", execute=False, server=True)
        assert sys.getswitchinterval() == 0.005   # not at build time: once started
        with TestClient(app, base_url="http://127.0.0.1") as c:
            assert c.get("/api/v1/healthz").status_code == 200
            assert sys.getswitchinterval() == SWITCH_INTERVAL_S == 0.001
            assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        sys.setswitchinterval(before)
