"""A scriptable OpenAI-compatible server on 127.0.0.1 for tests: real HTTP, real sockets.

    with FakeOpenAI() as fake:
        fake.script(Status(429, headers={"Retry-After": "1"}), Reply("hello"))
        client = OpenAIClient(fake.base_url, ...)

Each POST /v1/chat/completions takes the next scripted behaviour; when the script is empty the
model's behaviour from `fake.per_model`, else `fake.default`. GET /v1/models lists `fake.models`.
Every request is recorded (`fake.requests`) with its arrival time, headers and JSON body.
"""
from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Union


@dataclass(frozen=True)
class Request:
    t: float
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass(frozen=True)
class Reply:
    """A normal chat completion (after `delay_s`)."""

    text: str
    prompt_tokens: int | None = 123
    completion_tokens: int | None = 45
    delay_s: float = 0.0


@dataclass(frozen=True)
class Status:
    """An HTTP error. `body` may be a callable taking the Request (to echo headers, say)."""

    code: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Raw:
    """Arbitrary bytes with a status (malformed JSON, a 200 without choices, ...)."""

    body: bytes
    code: int = 200
    content_type: str = "application/json"


@dataclass(frozen=True)
class Stall:
    """Send 200 headers with a Content-Length, then never send the body."""


@dataclass(frozen=True)
class Trickle:
    """Send 200 headers, then one byte of a never-finished body every `interval_s`."""

    interval_s: float = 0.2


Behaviour = Union[Reply, Status, Raw, Stall, Trickle, Callable[[Request], Any]]


def completion_json(text: Any, model: str, prompt_tokens: int | None = 123,
                    completion_tokens: int | None = 45) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": text}}],
    }
    if prompt_tokens is not None and completion_tokens is not None:
        out["usage"] = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                        "total_tokens": prompt_tokens + completion_tokens}
    return out


def diff_reply(search: str, replace: str, note: str = "Changed it.") -> str:
    return f"{note}\n<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE\n"


class FakeOpenAI:
    def __init__(self, models: tuple[str, ...] = ("fake-a", "fake-b")):
        self.models = list(models)
        self.default: Behaviour = Reply("No change.")
        self.per_model: dict[str, Behaviour] = {}
        self.requests: list[Request] = []
        self._script: deque[Behaviour] = deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -------------------------------------------------------------- lifecycle
    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "FakeOpenAI":
        fake = self

        class Handler(_Handler):
            owner = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,),
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> "FakeOpenAI":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -------------------------------------------------------------- scripting
    def script(self, *behaviours: Behaviour) -> None:
        with self._lock:
            self._script.extend(behaviours)

    def chat_requests(self, model: str | None = None) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path.endswith("/chat/completions")
                    and (model is None or (r.body or {}).get("model") == model)]

    def _next(self, req: Request) -> Behaviour:
        with self._lock:
            self.requests.append(req)
            if self._script:
                return self._script.popleft()
        model = (req.body or {}).get("model") if isinstance(req.body, dict) else None
        return self.per_model.get(model, self.default)


class _Handler(BaseHTTPRequestHandler):
    owner: FakeOpenAI
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _record(self, body: Any) -> Request:
        return Request(time.monotonic(), self.command, self.path,
                       {k.lower(): v for k, v in self.headers.items()}, body)

    def _send(self, code: int, payload: bytes, ctype: str = "application/json",
              headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(payload)
        self.wfile.flush()

    def do_GET(self) -> None:
        with self.owner._lock:
            self.owner.requests.append(self._record(None))
        if self.path.rstrip("/").endswith("/models"):
            data = [{"id": m, "object": "model", "owned_by": "fake"} for m in self.owner.models]
            self._send(200, json.dumps({"object": "list", "data": data}).encode())
        else:
            self._send(404, b'{"error": {"message": "not found"}}')

    def do_POST(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n)
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = None
        req = self._record(body)
        if not self.path.rstrip("/").endswith("/chat/completions"):
            with self.owner._lock:
                self.owner.requests.append(req)
            self._send(404, b'{"error": {"message": "not found"}}')
            return
        behaviour = self.owner._next(req)
        if callable(behaviour) and not isinstance(behaviour, (Reply, Status, Raw, Stall, Trickle)):
            behaviour = behaviour(req)
        self._play(behaviour, req)

    def _play(self, b: Any, req: Request) -> None:
        stop = self.owner._stop
        model = (req.body or {}).get("model", "fake")
        try:
            if isinstance(b, Reply):
                if b.delay_s and stop.wait(b.delay_s):
                    return
                payload = completion_json(b.text, model, b.prompt_tokens, b.completion_tokens)
                self._send(200, json.dumps(payload).encode())
            elif isinstance(b, Status):
                body = b.body(req) if callable(b.body) else b.body
                if body is None:
                    body = {"error": {"message": f"fake error {b.code}", "type": "fake"}}
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self._send(b.code, data, headers=b.headers)
            elif isinstance(b, Raw):
                self._send(b.code, b.body, b.content_type)
            elif isinstance(b, Stall):
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "100000")
                self.end_headers()
                self.wfile.write(b'{"id": "chatcmpl-stall", ')
                self.wfile.flush()
                stop.wait(60)
                self.close_connection = True
            elif isinstance(b, Trickle):
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "100000")
                self.end_headers()
                deadline = time.monotonic() + 60
                while not stop.is_set() and time.monotonic() < deadline:
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    stop.wait(b.interval_s)
                self.close_connection = True
            else:
                raise TypeError(f"unknown behaviour {b!r}")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
