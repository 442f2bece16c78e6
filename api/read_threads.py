"""The worker threads of the read routes: a few, apart from the default pool's 40.

A read (a page of programs, one program, a lineage, an elites document, a version or API key
lookup) is a few milliseconds of CPU around one or two database round trips. Run on the default
thread pool, 50 concurrent clients put up to 40 of them in threads at once, all taking turns on
the GIL: no more throughput than a few threads give (the CPU is the limit either way), but each
request waits through many other requests' switch intervals, so the slowest requests wait far
longer than the median. With a few threads the others queue in order on the limiter instead:
under 50 clients on 2 cores, p99 fell from 2.2-2.9x the median to about 1.5x at the same
requests per second (docs/benchmarks.md, "A million programs"). Slow routes (uploads,
campaign creation, event streams) stay on the default pool, so they never hold a read slot.

`$EVOFORGE_READ_THREADS` (default 4, 1-256) sets the slots per API process.
"""
from __future__ import annotations

import asyncio
import os
import weakref
from typing import Any, Callable

import anyio

from evoforge.db.engine import retry_dropped

READ_THREADS_ENV = "EVOFORGE_READ_THREADS"
DEFAULT_READ_THREADS = 4
_limiters: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.CapacityLimiter]" = \
    weakref.WeakKeyDictionary()


def read_threads() -> int:
    raw = os.environ.get(READ_THREADS_ENV, "").strip()
    if raw.isdigit() and 1 <= int(raw) <= 256:
        return int(raw)
    return DEFAULT_READ_THREADS


def _limiter() -> anyio.CapacityLimiter:
    loop = asyncio.get_running_loop()   # a limiter belongs to its event loop
    limiter = _limiters.get(loop)
    if limiter is None:
        limiter = _limiters[loop] = anyio.CapacityLimiter(read_threads())
    return limiter


async def run_read(fn: Callable[..., Any], *args: Any) -> Any:
    """Blocking `fn(*args)` on one of the read threads; a read whose database connection had
    died runs once more on a new one (db/engine.py `retry_dropped`). Only for reads: `fn` may
    run twice, so it must write nothing."""
    return await anyio.to_thread.run_sync(retry_dropped, fn, *args, limiter=_limiter())
