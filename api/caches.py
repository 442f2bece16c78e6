"""Per-process read caches of the API (one set per app, on `AppState.caches`).

Several API processes (`evoforge serve --workers N`, or one per host behind a balancer) each
keep their own caches, so nothing here may answer a question whose answer another process (or
a Celery worker, or `evoforge run`) can change without this process hearing of it. Hence:

- Principals: the project of an API key, by the key's sha256, for `key_ttl_s` (default 5 s,
  $EVOFORGE_KEY_CACHE_TTL).
  A revoked key therefore keeps working in a process that saw it for at most that long (in every
  process: revocation is the one bounded-staleness read left, docs/service.md).
  Invalid keys are never cached (a flood of random keys cannot fill memory or hide a new key).
- Campaign versions are never cached. Each request of /elites or /programs reads the campaign's
  version, (id, created_at, evaluations, revision) as the caller's project sees it, from the
  database: one query by primary key (`fresh`). Concurrent requests share that query, but only
  a query that began after the request arrived (`fresh`, below): so a request sent after a write committed,
  through any process, sees a version at least as new as that write.
- Bodies: the ready-made JSON bytes of `/elites` and of `/programs` pages, keyed by endpoint,
  version and the raw query string the route validated (`body_key`); an LRU of `body_entries`.
  A version names one state of what these endpoints show: elite cells and programs change only
  in an iteration's commit (ring migration included), which bumps `evaluations` in the same
  transaction, and in a prune (worker/prune.py), which bumps `revision` in its own;
  created_at tells a new campaign from a deleted one whose id SQLite handed out again. So a
  body cached under the version just read is exactly what the database holds.
  THE CONTRACT: any other write that changes what /elites or /programs return must change the
  version in its own transaction (docs/service.md lists the writes and what each does).

These are the read path's only caches: the services below the routes (api/services/programs.py)
do not cache. bench/api_latency.py measures what they buy (docs/benchmarks.md).
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from collections import OrderedDict
from typing import Any

_MISS = object()


class LRU:
    """A small thread-safe least-recently-used map; `get` returns None on a miss."""

    def __init__(self, size: int):
        self.size = size
        self._data: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> Any:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: tuple, value: Any) -> None:
        with self._lock:
            self._data[key] = value
            while len(self._data) > self.size:
                self._data.popitem(last=False)


def _env_float(name: str, default: float) -> float:
    try:
        return max(0.0, float(os.environ.get(name, default)))
    except ValueError:
        return default


class _Fresh:
    """One key of `ApiCaches.fresh`: the read in flight, and the future of the read to start
    when it ends (shared by everyone who arrived while it ran)."""

    __slots__ = ("running", "waiting", "fn")

    def __init__(self) -> None:
        self.running: asyncio.Future | None = None
        self.waiting: asyncio.Future | None = None
        self.fn = None


class ApiCaches:
    """The key TTL defaults from $EVOFORGE_KEY_CACHE_TTL (5 s); 0 turns that cache off."""

    def __init__(self, *, key_ttl_s: float | None = None, body_entries: int = 256,
                 max_keys: int = 10_000):
        if key_ttl_s is None:
            key_ttl_s = _env_float("EVOFORGE_KEY_CACHE_TTL", 5.0)
        self.key_ttl_s = key_ttl_s
        self.body_entries, self.max_keys = body_entries, max_keys
        self._keys: dict[str, tuple[float, int]] = {}
        self._bodies = LRU(body_entries)
        self._lock = threading.Lock()
        self._inflight: dict[tuple, asyncio.Future] = {}
        self._fresh: dict[tuple, _Fresh] = {}
        self._tasks: set[asyncio.Task] = set()
        self.fresh_reads = 0  # queries `fresh` sent (tests, bench)
        # where version reads run (loop, inline, thread): set by the routes from the database's
        # dialect and $EVOFORGE_VERSION_READ; the loop's reader (api/version_reader.py)
        self.version_read_mode: str | None = None
        self.async_reader = None

    # -- API keys -------------------------------------------------------------------------------
    @staticmethod
    def key_id(token: str) -> str:
        return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()

    def project_of(self, key_id: str) -> Any:
        """The cached project id of a key, or _MISS."""
        hit = self._keys.get(key_id)
        if hit is None or hit[0] < time.monotonic():
            return _MISS
        return hit[1]

    def remember_key(self, key_id: str, project_id: int) -> None:
        if self.key_ttl_s <= 0:
            return
        with self._lock:
            if len(self._keys) >= self.max_keys:
                now = time.monotonic()
                self._keys = {k: v for k, v in self._keys.items() if v[0] >= now}
                if len(self._keys) >= self.max_keys:
                    self._keys.clear()
            self._keys[key_id] = (time.monotonic() + self.key_ttl_s, project_id)

    def forget_keys(self) -> None:
        with self._lock:
            self._keys.clear()

    # -- response bodies (keys from `body_key`) -------------------------------------------------
    def body(self, key: tuple) -> bytes | None:
        return self._bodies.get(key)

    def remember_body(self, key: tuple, body: bytes) -> None:
        self._bodies.put(key, body)

    async def single_flight(self, key: tuple, fn):
        """Run blocking `fn` on a read thread (api/read_threads.py) once for concurrent callers of the same key
        (event-loop side only). Only for answers that cannot go stale while shared: an API key's
        project, a body under a version read for this request (the version names the data)."""
        from evoforge.api.read_threads import run_read

        fut = self._inflight.get(key)
        if fut is not None:
            return await asyncio.shield(fut)
        fut = asyncio.get_running_loop().create_future()
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())  # never "not retrieved"
        self._inflight[key] = fut
        try:
            value = await run_read(fn)
        except BaseException as exc:
            fut.set_exception(exc if isinstance(exc, Exception) else RuntimeError("cancelled"))
            raise
        else:
            fut.set_result(value)
            return value
        finally:
            self._inflight.pop(key, None)

    # -- reads that must not be stale -----------------------------------------------------------
    async def fresh(self, key: tuple, fn, *, inline: bool = False):
        """The value of blocking `fn` (in the thread pool) read by a query that STARTED AFTER
        this call: so it reflects every write committed before the request arrived, in any
        process. Concurrent callers share reads: one in flight per key at a time; who arrives
        while one runs waits for the next, which starts when it ends and serves all of them.
        Under 50 clients that is a query per query-time for a campaign, not one per request,
        and a request waits for at most two of them. (`single_flight` would hand a newcomer the
        answer of a query that began before it arrived, possibly before the write it follows.)
        The reads run as tasks of their own: a caller that goes away cancels nothing shared.
        `inline`: run `fn` on the event loop (in that task, so everyone who arrived before it
        ran still shares it) instead of the thread pool: for a read of microseconds (SQLite by
        primary key) the hop to a thread and back costs more than the read, and under load far
        more (the GIL handoff: docs/benchmarks.md). A coroutine function `fn` is awaited on the
        loop (PostgreSQL's version reads: api/version_reader.py)."""
        loop = asyncio.get_running_loop()
        slot = self._fresh.get(key)
        if slot is None:
            slot = self._fresh[key] = _Fresh()
        if slot.running is None:
            fut = slot.running = loop.create_future()
            slot.fn = fn
            self._spawn(self._read(key, slot, fut, inline))
        else:
            if slot.waiting is None:
                slot.waiting = loop.create_future()
                slot.fn = fn
            fut = slot.waiting
        return await asyncio.shield(fut)

    async def _read(self, key: tuple, slot: _Fresh, fut: asyncio.Future, inline: bool) -> None:
        from evoforge.api.read_threads import run_read

        try:
            self.fresh_reads += 1
            if asyncio.iscoroutinefunction(slot.fn):   # a read on the loop (version_reader)
                value = await slot.fn()
            else:
                value = slot.fn() if inline else await run_read(slot.fn)
        except BaseException as exc:
            fut.set_exception(exc if isinstance(exc, Exception) else RuntimeError("cancelled"))
            if not isinstance(exc, Exception):
                raise
        else:
            fut.set_result(value)
        finally:
            fut.add_done_callback(lambda f: f.cancelled() or f.exception())  # never "not retrieved"
            if slot.waiting is not None:  # the callers that arrived meanwhile: their own read
                slot.running, slot.waiting = slot.waiting, None
                self._spawn(self._read(key, slot, slot.running, inline))
            else:
                slot.running = slot.fn = None
                if self._fresh.get(key) is slot:
                    del self._fresh[key]

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


MISS = _MISS


def body_key(endpoint: str, version: Any, raw_query: bytes | str) -> tuple:
    """The key of a cached response body: the endpoint, the campaign version and the query
    string exactly as sent. Only the route stores bodies, after validating that query, so the
    fast path serves only requests the route has accepted, whatever their parameters."""
    if isinstance(raw_query, str):
        raw_query = raw_query.encode("latin-1")
    return (endpoint, version, raw_query)
