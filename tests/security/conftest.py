"""Fixtures for the security suite: the real server, and a listener standing in for an attacker.

- `live_server(**create_app kwargs)`: uvicorn on a free loopback port, in a thread, on a fresh
  SQLite database (tests/api/conftest.py's).
- `serve_process(*args, env=...)`: `evoforge serve` as its own process (for memory figures and
  for what the CLI wires up: bind host, environment, endpoint files).
- `listener`: a real HTTP server on loopback that records every request it gets (method, path,
  headers, body) and answers as an OpenAI-compatible endpoint would. A test points the server at
  it and checks what reached it: a key must never arrive where the operator did not send it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.api.conftest import LiveServer, live_server, start_server, wait_for  # noqa: F401
from tests.integration.services import free_port, stop_process, wait_port

ROOT = Path(__file__).resolve().parents[2]

# -- the attacker's (or operator's) HTTP listener ---------------------------------------------


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Listener:
    """What reached it, and how it answers. `reply` is the chat content it sends back;
    `status`/`location` make it answer an error or a redirect instead."""
    server: ThreadingHTTPServer
    requests: list[Recorded] = field(default_factory=list)
    reply: str = "no change"
    status: int = 200
    location: str | None = None

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def authorizations(self) -> list[str]:
        return [r.headers.get("authorization", "") for r in self.requests]


def _handler(listener: Listener):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet
            pass

        def _record(self) -> None:
            n = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(n) if n else b""
            listener.requests.append(Recorded(self.command, self.path,
                                              {k.lower(): v for k, v in self.headers.items()}, body))

        def _answer(self) -> None:
            self._record()
            if listener.location:
                self.send_response(listener.status if 300 <= listener.status < 400 else 307)
                self.send_header("Location", listener.location)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if self.path.rstrip("/").endswith("/models"):
                data = {"object": "list", "data": [{"id": "m", "object": "model"}]}
            else:
                data = {"id": "x", "object": "chat.completion", "model": "m",
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": listener.reply}}],
                        "usage": {"prompt_tokens": 10, "completion_tokens": 5}}
            raw = json.dumps(data).encode()
            self.send_response(listener.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        do_GET = do_POST = do_PUT = _answer

    return Handler


@pytest.fixture
def listener_factory():
    made: list[Listener] = []

    def make(host: str = "127.0.0.1") -> Listener:
        srv = ThreadingHTTPServer((host, 0), None)  # type: ignore[arg-type]
        lst = Listener(srv)
        srv.RequestHandlerClass = _handler(lst)
        threading.Thread(target=srv.serve_forever, daemon=True, name="listener").start()
        made.append(lst)
        return lst

    yield make
    for lst in made:
        lst.server.shutdown()
        lst.server.server_close()


@pytest.fixture
def listener(listener_factory) -> Listener:
    return listener_factory()


# -- `evoforge serve` as a process ------------------------------------------------------------


@dataclass
class ServeProcess:
    proc: subprocess.Popen
    port: int
    db_url: str
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss_mb(self) -> float:
        """Peak resident set size (VmHWM) of the server process, in MiB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmHWM")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def serve_process(tmp_path):
    """Factory: serve_process(*extra_args, env={...}, db_url=None) -> ServeProcess."""
    started: list[ServeProcess] = []

    def start(*args: str, env: dict[str, str] | None = None, db_url: str | None = None,
              host: str = "127.0.0.1") -> ServeProcess:
        port = free_port()
        db_url = db_url or f"sqlite:///{tmp_path / f'serve-{port}.db'}"
        full_env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("EVOFORGE_", "OPENAI_"))}
        full_env["EVOFORGE_HOME"] = str(tmp_path / "home")
        full_env.update(env or {})
        log = tmp_path / f"serve-{port}.log"
        cmd = [sys.executable, "-m", "evoforge.cli", "serve", "--host", host, "--port", str(port),
               "--db", db_url, "--log-level", "warning", *args]
        proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=log.open("wb"),
                                stderr=subprocess.STDOUT)
        sp = ServeProcess(proc, port, db_url, log)
        started.append(sp)
        try:
            wait_port(port, 60, proc)
        except Exception:
            raise AssertionError(f"evoforge serve did not start:\n{sp.log_text()[-3000:]}")
        return sp

    yield start
    for sp in started:
        stop_process(sp.proc)
