"""Server-sent events: campaign progress, read from the database.

The stream polls the campaign row every `poll_s` and sends a `progress` event (the campaign
summary) whenever its evaluations or status change, a comment line as a heartbeat when nothing
changed for `heartbeat_s`, and a final `end` event once the campaign is completed, cancelled,
failed or deleted. It works the same whether the campaign runs in-process or on Celery workers.

Streams hold a connection and poll the database, so they are bounded (`StreamSlots`): at most
`EVOFORGE_SSE_MAX_STREAMS` (8) at once per project (in open mode, per client address) and
`EVOFORGE_SSE_MAX_STREAMS_TOTAL` (256) in all; beyond that the request is answered 429. A stream
whose campaign has not changed for `EVOFORGE_SSE_IDLE_S` (300 s; heartbeats do not count) ends
with `end` {"reason": "idle"}. The slot is released when the stream ends for any reason, the
client's disconnect included (`SlotStreamingResponse`).
"""
from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, AsyncIterator, Callable

import anyio
from starlette.requests import Request
from starlette.responses import StreamingResponse

from evoforge.db.campaign_rows import FINAL
from evoforge.worker.leases import env_positive

log = logging.getLogger(__name__)
MAX_STREAMS_ENV = "EVOFORGE_SSE_MAX_STREAMS"
MAX_TOTAL_ENV = "EVOFORGE_SSE_MAX_STREAMS_TOTAL"
IDLE_ENV = "EVOFORGE_SSE_IDLE_S"


def idle_timeout_s() -> float:
    return env_positive(IDLE_ENV, 300.0)


class StreamSlots:
    """Counts open event streams per owner (a project, or a client address) and in all."""

    def __init__(self, per_owner: int, total: int):
        self.per_owner, self.total = per_owner, total
        self._open: dict[str, int] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls) -> "StreamSlots":
        return cls(int(env_positive(MAX_STREAMS_ENV, 8)), int(env_positive(MAX_TOTAL_ENV, 256)))

    def acquire(self, owner: str) -> str | None:
        """Take a slot; None when taken, else why not (the 429 message)."""
        with self._lock:
            mine = self._open.get(owner, 0)
            if mine >= self.per_owner:
                return (f"too many event streams open ({mine}; the limit is {self.per_owner} per "
                        "project or client): close one first")
            if sum(self._open.values()) >= self.total:
                return f"the server has {self.total} event streams open, its limit: try again later"
            self._open[owner] = mine + 1
            return None

    def release(self, owner: str) -> None:
        with self._lock:
            left = self._open.get(owner, 0) - 1
            if left > 0:
                self._open[owner] = left
            else:
                self._open.pop(owner, None)


_slots_guard = threading.Lock()


def slots_of(app: Any) -> StreamSlots:
    """The app's stream slots, made from the environment on first use."""
    with _slots_guard:
        slots = getattr(app.state, "event_streams", None)
        if slots is None:
            slots = app.state.event_streams = StreamSlots.from_env()
        return slots


class SlotStreamingResponse(StreamingResponse):
    """A StreamingResponse that calls `release` once it is over, however it ends (the stream's
    end, an error, the client going away), and closes the stream's generator."""

    def __init__(self, content: AsyncIterator[str], release: Callable[[], None], **kw: Any):
        super().__init__(content, **kw)
        self._release = release

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    try:
                        await aclose()
                    except Exception:  # already closed or still unwinding: nothing to free
                        pass


def sse(event: str, data: Any, event_id: str | None = None) -> str:
    lines = [f"event: {event}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines += [f"data: {line}" for line in json.dumps(data, default=str).splitlines() or [""]]
    return "\n".join(lines) + "\n\n"


async def progress_stream(request: Request, load: Callable[[], dict[str, Any] | None], *,
                          poll_s: float = 0.5, heartbeat_s: float = 15.0,
                          max_seconds: float | None = None,
                          idle_s: float | None = None) -> AsyncIterator[str]:
    """`load()` returns the campaign's public dict, or None once it is gone. `idle_s`: end the
    stream once the campaign has not changed for this long."""
    yield "retry: 2000\n\n"
    started = last_sent = last_change = time.monotonic()
    last_key = None
    while True:
        state = await anyio.to_thread.run_sync(load)
        now = time.monotonic()
        if state is None:
            yield sse("end", {"reason": "deleted"})
            return
        key = (state["evaluations"], state["status"], state["best_score"], state["failures"])
        if key != last_key:
            last_key, last_sent, last_change = key, now, now
            yield sse("progress", state, event_id=str(state["evaluations"]))
        elif now - last_sent >= heartbeat_s:
            last_sent = now
            yield f": heartbeat {int(now - started)}s\n\n"
        if state["status"] in FINAL:
            yield sse("end", {"reason": state["status"], "campaign_id": state["id"]})
            return
        if max_seconds is not None and now - started >= max_seconds:
            yield sse("end", {"reason": "max_seconds", "campaign_id": state["id"]})
            return
        if idle_s is not None and now - last_change >= idle_s:
            yield sse("end", {"reason": "idle", "campaign_id": state["id"]})
            return
        if await request.is_disconnected():
            return
        await anyio.sleep(poll_s)
