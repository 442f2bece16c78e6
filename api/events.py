"""Server-sent events: campaign progress, read from the database.

The stream polls the campaign row every `poll_s` and sends a `progress` event (the campaign
summary) whenever its evaluations or status change, a comment line as a heartbeat when nothing
changed for `heartbeat_s`, and a final `end` event once the campaign is completed, cancelled,
failed or deleted. It works the same whether the campaign runs in-process or on Celery workers.
"""
from __future__ import annotations

import json
import time
from typing import Any, AsyncIterator, Callable

import anyio
from starlette.requests import Request

from db.campaigns import FINAL


def sse(event: str, data: Any, event_id: str | None = None) -> str:
    lines = [f"event: {event}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines += [f"data: {line}" for line in json.dumps(data, default=str).splitlines() or [""]]
    return "\n".join(lines) + "\n\n"


async def progress_stream(request: Request, load: Callable[[], dict[str, Any] | None], *,
                          poll_s: float = 0.5, heartbeat_s: float = 15.0,
                          max_seconds: float | None = None) -> AsyncIterator[str]:
    """`load()` returns the campaign's public dict, or None once it is gone."""
    yield "retry: 2000\n\n"
    started = last_sent = time.monotonic()
    last_key = None
    while True:
        state = await anyio.to_thread.run_sync(load)
        now = time.monotonic()
        if state is None:
            yield sse("end", {"reason": "deleted"})
            return
        key = (state["evaluations"], state["status"], state["best_score"], state["failures"])
        if key != last_key:
            last_key, last_sent = key, now
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
        if await request.is_disconnected():
            return
        await anyio.sleep(poll_s)
