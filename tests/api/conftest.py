"""A real uvicorn server on a free loopback port, in a thread, on a fresh SQLite database."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import httpx
import pytest
import uvicorn


@dataclass
class LiveServer:
    url: str
    app: object
    server: uvicorn.Server
    thread: threading.Thread
    db_url: str

    def client(self, key: str | None = None, **kw) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url + "/api/v1", headers=headers, timeout=60, **kw)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(60)


def start_server(db_url: str, **app_kw) -> LiveServer:
    from evoforge.api.app import create_app

    app_kw.setdefault("broker_url", "")
    app_kw.setdefault("poll_s", 0.2)
    app_kw.setdefault("heartbeat_s", 1.0)
    app = create_app(db_url, **app_kw)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True, name="uvicorn-test")
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    return LiveServer(f"http://127.0.0.1:{port}", app, server, thread, db_url)


@pytest.fixture
def live_server(tmp_path):
    """Factory: live_server(**create_app kwargs) -> LiveServer; stopped after the test."""
    servers: list[LiveServer] = []

    def make(db_name: str = "api.db", **kw) -> LiveServer:
        srv = start_server(f"sqlite:///{tmp_path / db_name}", **kw)
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        srv.stop()


@dataclass
class FinishedCampaign:
    """A finished circle-packing campaign of project alpha on a live server (`api.db`), and a
    second project, beta, that owns nothing: the set-up of the prune and transfer tests."""
    server: LiveServer
    sessions: object
    url: str
    cid: int
    alpha: str
    beta: str
    beta_id: int


@pytest.fixture
def finished_campaign(tmp_path, fork_sandbox, live_server):
    """Factory: finished_campaign(evaluations, extend=None) -> FinishedCampaign. Two keyed
    projects (alpha, beta), then a campaign of alpha's (2 islands, `evaluations` evaluations)
    run to its end in process; `extend(sessions, cid)` adds rows before the server starts."""
    from evoforge.db import apikeys
    from evoforge.db.campaign_config import CampaignSpec
    from evoforge.db.engine import session_factory, upgrade
    from evoforge.worker.campaign_service import create_campaign
    from evoforge.worker.embedded import EmbeddedExecutor

    def make(evaluations: int, extend=None) -> FinishedCampaign:
        url = f"sqlite:///{tmp_path / 'api.db'}"
        upgrade(url)
        sessions = session_factory(url)
        alpha, alpha_id = apikeys.create_key(sessions, "alpha")
        beta, beta_id = apikeys.create_key(sessions, "beta")
        spec = CampaignSpec(task="circle_packing", budget={"max_evaluations": evaluations},
                            archive={"islands": 2})
        cid = create_campaign(sessions, spec, project_id=alpha_id).id
        EmbeddedExecutor(sessions, cid, sandbox=fork_sandbox).run()
        if extend is not None:
            extend(sessions, cid)
        return FinishedCampaign(live_server("api.db"), sessions, url, cid, alpha, beta, beta_id)

    return make


def wait_for(predicate, timeout_s: float = 120, interval_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s")
        time.sleep(interval_s)
