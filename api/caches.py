"""Per-process read caches of the API (one set per app, on `AppState.caches`).

- Principals: the project of an API key, by the key's sha256, for `key_ttl_s` (default 5 s,
  $EVOFORGE_KEY_CACHE_TTL).
  A revoked key therefore keeps working in a process that saw it for at most that long.
  Invalid keys are never cached (a flood of random keys cannot fill memory or hide a new key).
- Campaign versions: (id, created_at, evaluations) of a campaign as the caller's project sees it
  (None: not found / not theirs), for `version_ttl_s` (default 0.15 s, $EVOFORGE_VERSION_CACHE_TTL;
  once expired, api/fastpath.py serves the last one for at most 0.25 s more while one query
  re-reads it, so a state is never served more than 0.4 s after it changed). Elite cells and programs
  change only in an iteration's commit, which bumps `evaluations` in the same transaction, so the
  version names one state of the archive; a read of the campaign row in this process (GET
  /campaigns/{id}, pause, ...) refreshes it at once, and a delete drops it.
- Bodies: the ready-made JSON bytes of `/elites` and of `/programs` pages, keyed by endpoint,
  version and the raw query string the route validated (`body_key`); an LRU of `body_entries`.
  A new version is a new key, so a progressing campaign is never served an old archive beyond
  the version TTL. api/fastpath.py serves a request whose key is here without the framework.

These are the read path's only caches: the services below the routes (api/services/programs.py)
do not cache. bench/api_latency.py measures what they buy (docs/benchmarks.md).
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
import time
from collections import OrderedDict
from typing import Any

_MISS = object()
log = logging.getLogger("evoforge.api")


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


class ApiCaches:
    """TTLs default from $EVOFORGE_KEY_CACHE_TTL (5 s) and $EVOFORGE_VERSION_CACHE_TTL (0.15 s);
    0 turns a cache off."""

    def __init__(self, *, key_ttl_s: float | None = None, version_ttl_s: float | None = None,
                 body_entries: int = 256, max_keys: int = 10_000):
        if key_ttl_s is None:
            key_ttl_s = _env_float("EVOFORGE_KEY_CACHE_TTL", 5.0)
        if version_ttl_s is None:
            version_ttl_s = _env_float("EVOFORGE_VERSION_CACHE_TTL", 0.15)
        self.key_ttl_s, self.version_ttl_s = key_ttl_s, version_ttl_s
        self.body_entries, self.max_keys = body_entries, max_keys
        self._keys: dict[str, tuple[float, int]] = {}
        self._versions: dict[tuple, tuple[float, Any]] = {}
        self._bodies = LRU(body_entries)
        self._lock = threading.Lock()
        self._inflight: dict[tuple, asyncio.Future] = {}
        self._tasks: set[asyncio.Task] = set()

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

    # -- campaign versions ----------------------------------------------------------------------
    def version(self, project_id: int | None, campaign_id: int) -> Any:
        hit = self._versions.get((project_id, campaign_id))
        if hit is None or hit[0] < time.monotonic():
            return _MISS
        return hit[1]

    def version_entry(self, project_id: int | None, campaign_id: int):
        """(expires, version) even when expired, or None."""
        return self._versions.get((project_id, campaign_id))

    def remember_version(self, project_id: int | None, campaign_id: int, version: Any) -> None:
        if self.version_ttl_s <= 0:
            return
        with self._lock:
            if len(self._versions) >= 4096:
                self._versions.clear()
            self._versions[(project_id, campaign_id)] = (time.monotonic() + self.version_ttl_s, version)

    def forget_campaign(self, campaign_id: int) -> None:
        with self._lock:
            for k in [k for k in self._versions if k[1] == campaign_id]:
                del self._versions[k]

    # -- response bodies (keys from `body_key`) -------------------------------------------------
    def body(self, key: tuple) -> bytes | None:
        return self._bodies.get(key)

    def remember_body(self, key: tuple, body: bytes) -> None:
        self._bodies.put(key, body)

    async def single_flight(self, key: tuple, fn):
        """Run blocking `fn` in the thread pool once for concurrent callers of the same key
        (event-loop side only): when a version expires or a campaign progresses, the 50 requests
        in flight wait for one query instead of sending 50."""
        from starlette.concurrency import run_in_threadpool

        fut = self._inflight.get(key)
        if fut is not None:
            return await asyncio.shield(fut)
        fut = asyncio.get_running_loop().create_future()
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())  # never "not retrieved"
        self._inflight[key] = fut
        try:
            value = await run_in_threadpool(fn)
        except BaseException as exc:
            fut.set_exception(exc if isinstance(exc, Exception) else RuntimeError("cancelled"))
            raise
        else:
            fut.set_result(value)
            return value
        finally:
            self._inflight.pop(key, None)


    def refreshing(self, key: tuple) -> bool:
        return key in self._inflight

    def in_background(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)

        def done(t: asyncio.Task) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:  # the next request retries
                log.warning("background cache refresh failed: %r", t.exception())

        task.add_done_callback(done)


MISS = _MISS


def body_key(endpoint: str, version: Any, raw_query: bytes | str) -> tuple:
    """The key of a cached response body: the endpoint, the campaign version and the query
    string exactly as sent. Only the route stores bodies, after validating that query, so the
    fast path serves only requests the route has accepted, whatever their parameters."""
    if isinstance(raw_query, str):
        raw_query = raw_query.encode("latin-1")
    return (endpoint, version, raw_query)
