"""Server-sent events: campaign progress, read from the database.

The stream polls the campaign row every `poll_s` and sends a `progress` event (the campaign
summary) whenever its evaluations or status change, a comment line as a heartbeat when nothing
changed for `heartbeat_s`, and a final `end` event once the campaign is completed, cancelled,
failed or deleted. It works the same whether the campaign runs in-process or on Celery workers.

Streams hold a connection and poll the database, so they are bounded: at most
`EVOFORGE_SSE_MAX_STREAMS` (8) at once per project (in open mode, per client address) and
`EVOFORGE_SSE_MAX_STREAMS_TOTAL` (256) in all; beyond that the request is answered 429. A stream
whose campaign has not changed for `EVOFORGE_SSE_IDLE_S` (300 s; heartbeats do not count) ends
with `end` {"reason": "idle"}. The slot is released when the stream ends for any reason, the
client's disconnect included (`SlotStreamingResponse`).

The limits hold for the whole server when it has a Redis broker (`RedisStreamSlots`: the slots
are leases in Redis shared by every API process, `serve --workers N` or processes on several
hosts), and per process without one (`StreamSlots`: one process, embedded mode).
"""
from __future__ import annotations

import hashlib
import json
import logging
import secrets
import threading
import time
from typing import Any, AsyncIterator, Callable, Union

import anyio
from starlette.requests import Request
from starlette.responses import StreamingResponse

from evoforge.db.campaign_rows import FINAL
from evoforge.worker.leases import env_positive

log = logging.getLogger(__name__)
MAX_STREAMS_ENV = "EVOFORGE_SSE_MAX_STREAMS"
MAX_TOTAL_ENV = "EVOFORGE_SSE_MAX_STREAMS_TOTAL"
IDLE_ENV = "EVOFORGE_SSE_IDLE_S"
LEASE_ENV = "EVOFORGE_SSE_LEASE_S"  # RedisStreamSlots: a slot's lease, refreshed every third (45)


def idle_timeout_s() -> float:
    return env_positive(IDLE_ENV, 300.0)


def owner_refusal(mine: int, limit: int) -> str:
    return (f"too many event streams open ({mine}; the limit is {limit} per project or client): "
            "close one first")


def total_refusal(limit: int) -> str:
    return f"the server has {limit} event streams open, its limit: try again later"


class StreamSlots:
    """Counts open event streams per owner (a project, or a client address) and in all, in this
    process: the slots of a server without a broker."""

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
                return owner_refusal(mine, self.per_owner)
            if sum(self._open.values()) >= self.total:
                return total_refusal(self.total)
            self._open[owner] = mine + 1
            return None

    def release(self, owner: str) -> None:
        with self._lock:
            left = self._open.get(owner, 0) - 1
            if left > 0:
                self._open[owner] = left
            else:
                self._open.pop(owner, None)


# A slot: (the owner's set, the total set) <- lease id, scored by its expiry in Redis's clock
# (TIME: the API hosts' clocks may disagree). Expired leases are dropped before counting, so a
# process that died holding slots frees them within a lease.
_ACQUIRE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local mine = redis.call('ZCARD', KEYS[1])
if mine >= tonumber(ARGV[2]) then return {1, mine} end
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then return {2, 0} end
redis.call('ZADD', KEYS[1], now + lease, ARGV[4])
redis.call('ZADD', KEYS[2], now + lease, ARGV[4])
redis.call('PEXPIRE', KEYS[1], lease)
redis.call('PEXPIRE', KEYS[2], lease)
return {0, mine + 1}
"""
# KEYS: the total set, then each lease's owner set; ARGV: the lease (ms), then the lease ids in
# the order of KEYS[2..]. An upsert: a lease that ran out while this process was stalled (or
# Redis was away) is counted again, since its stream is still open.
_RENEW_LUA = """
local t = redis.call('TIME')
local expiry = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
for i = 2, #KEYS do
  redis.call('ZADD', KEYS[i], expiry, ARGV[i])
  redis.call('ZADD', KEYS[1], expiry, ARGV[i])
  redis.call('PEXPIRE', KEYS[i], ARGV[1])
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return #KEYS - 1
"""
KEY_PREFIX = "evoforge:sse:"
TOTAL_KEY = KEY_PREFIX + "total"
REDIS_SCHEMES = ("redis", "rediss", "unix")


class RedisStreamSlots:
    """Stream slots shared by every API process of a server, as leases in Redis (the broker).

    A slot is a lease, not a counter, so a process that crashed or was killed cannot hold slots
    forever: one sorted set per owner (`evoforge:sse:owner:<sha256 of the owner>`: no owner
    string, however odd, can name another key) and one for the server (`evoforge:sse:total`),
    member = a random id per stream, score = its expiry. `acquire` is one Lua script (atomic: two
    processes cannot both take the last slot): drop expired members, check both counts, add.
    Each process renews what it holds every lease/3 in one round trip (a thread, not one timer
    per stream), `release` removes the member, `close` (the app's shutdown) removes them all.
    `lease_s` ($EVOFORGE_SSE_LEASE_S, 45 s: three heartbeat periods) bounds how long a dead
    process's slots stay taken.

    Redis unreachable: each process falls back to counting its own streams, with a warning,
    rather than refusing every stream (503). The per-process limits still bound what each
    process holds (its connections, its database polling), which is today's guarantee without
    a broker; what is lost for the outage is only the sharing across processes (at most N times
    the limits with N processes). Refusing instead would blind the dashboard exactly when an
    operator watches a degraded server, and Redis being down already stops campaign dispatch, so
    nobody gains by it. The streams admitted meanwhile hold lease ids too; the renewer writes
    them to Redis as soon as it answers again, so the shared count catches up within a renew
    period. While Redis is down, acquires skip it for `retry_s` (no connect timeout per request).
    """

    def __init__(self, url: str, per_owner: int, total: int, *, lease_s: float = 45.0,
                 retry_s: float = 5.0):
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.per_owner, self.total = per_owner, total
        self.lease_ms = max(1, int(lease_s * 1000))
        self.renew_s, self.retry_s = lease_s / 3, retry_s
        self._errors = (redis.exceptions.RedisError, OSError)
        self._redis = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2,
                                           retry=Retry(NoBackoff(), 1))
        self._acquire = self._redis.register_script(_ACQUIRE_LUA)
        self._renew = self._redis.register_script(_RENEW_LUA)
        self._held: dict[str, list[str]] = {}   # owner -> lease ids of this process's streams
        self._lock = threading.Lock()           # _held, the renewer thread, the degraded flag
        self._io = threading.Lock()             # a renew and a release never interleave
        self._down_until = 0.0                  # monotonic: skip Redis until then
        self._degraded = False
        self._renewer: tuple[threading.Thread, threading.Event] | None = None

    @classmethod
    def from_env(cls, url: str) -> "RedisStreamSlots":
        return cls(url, int(env_positive(MAX_STREAMS_ENV, 8)), int(env_positive(MAX_TOTAL_ENV, 256)),
                   lease_s=env_positive(LEASE_ENV, 45.0))

    @staticmethod
    def owner_key(owner: str) -> str:
        return KEY_PREFIX + "owner:" + hashlib.sha256(owner.encode("utf-8", "surrogatepass")).hexdigest()

    def acquire(self, owner: str) -> str | None:
        """Take a slot; None when taken, else why not (the 429 message)."""
        lease = secrets.token_hex(16)
        if time.monotonic() >= self._down_until:
            try:
                verdict, count = self._acquire(keys=[self.owner_key(owner), TOTAL_KEY],
                                               args=[self.lease_ms, self.per_owner, self.total, lease])
            except self._errors as exc:
                self._went_down(exc)
            else:
                self._came_back()
                if verdict == 1:
                    return owner_refusal(int(count), self.per_owner)
                if verdict == 2:
                    return total_refusal(self.total)
                self._hold(owner, lease)
                return None
        with self._lock:  # Redis unreachable: this process's own streams, today's counting
            mine = len(self._held.get(owner, ()))
            if mine >= self.per_owner:
                return owner_refusal(mine, self.per_owner)
            if sum(map(len, self._held.values())) >= self.total:
                return total_refusal(self.total)
        self._hold(owner, lease)  # written to Redis by the renewer once it answers
        return None

    def release(self, owner: str) -> None:
        with self._lock:
            held = self._held.get(owner)
            if not held:
                return
            lease = held.pop()  # an owner's leases are interchangeable
            if not held:
                del self._held[owner]
        self._forget([(owner, lease)])

    def renew(self) -> int:
        """Push every lease this process holds another lease length ahead; how many."""
        with self._io:
            with self._lock:
                pairs = [(o, lease) for o, leases in self._held.items() for lease in leases]
            if not pairs:
                return 0
            try:
                self._renew(keys=[TOTAL_KEY] + [self.owner_key(o) for o, _ in pairs],
                            args=[self.lease_ms] + [lease for _, lease in pairs])
            except self._errors as exc:
                self._went_down(exc)
                return 0
        self._came_back()
        return len(pairs)

    def open_here(self) -> int:
        """Streams open in this process."""
        with self._lock:
            return sum(map(len, self._held.values()))

    def close(self) -> None:
        """Stop renewing and give back every slot of this process (its shutdown)."""
        with self._lock:
            renewer, self._renewer = self._renewer, None
            pairs = [(o, lease) for o, leases in self._held.items() for lease in leases]
            self._held.clear()
        if renewer is not None:
            renewer[1].set()
            renewer[0].join(5)
        self._forget(pairs)
        self._redis.close()

    # -- internals ---------------------------------------------------------------------------
    def _hold(self, owner: str, lease: str) -> None:
        with self._lock:
            self._held.setdefault(owner, []).append(lease)
            if self._renewer is None or not self._renewer[0].is_alive():
                stop = threading.Event()
                thread = threading.Thread(target=self._renew_loop, args=(stop,), daemon=True,
                                          name="sse-slot-leases")
                self._renewer = (thread, stop)
                thread.start()

    def _renew_loop(self, stop: threading.Event) -> None:
        while not stop.wait(self.renew_s):
            try:
                self.renew()
            except Exception:  # never let the renewer die: the leases would run out
                log.exception("renewing event-stream slot leases failed")

    def _forget(self, pairs: list[tuple[str, str]]) -> None:
        if not pairs:
            return
        with self._io:
            try:
                pipe = self._redis.pipeline(transaction=True)
                for owner, lease in pairs:
                    pipe.zrem(self.owner_key(owner), lease)
                    pipe.zrem(TOTAL_KEY, lease)
                pipe.execute()
            except self._errors as exc:  # the leases run out by themselves
                log.warning("could not release %d event-stream slot(s) in Redis (%s); they "
                            "expire within %.0f s", len(pairs), exc, self.lease_ms / 1000)

    def _went_down(self, exc: BaseException) -> None:
        with self._lock:
            self._down_until = time.monotonic() + self.retry_s
            first, self._degraded = not self._degraded, True
        if first:
            log.warning("Redis is unreachable (%s): event-stream slots are counted per process "
                        "until it answers again", exc)

    def _came_back(self) -> None:
        with self._lock:
            was, self._degraded, self._down_until = self._degraded, False, 0.0
        if was:
            log.warning("Redis answers again: event-stream slots are shared by the server's "
                        "processes again")


Slots = Union[StreamSlots, RedisStreamSlots]
_slots_guard = threading.Lock()


def slots_of(app: Any) -> Slots:
    """The app's stream slots, made from the environment on first use: leases in Redis when the
    app has a Redis broker (every API process sees the same slots), else counted here."""
    with _slots_guard:
        slots = getattr(app.state, "event_streams", None)
        if slots is None:
            broker = getattr(getattr(app.state, "evo", None), "broker_url", None)
            if broker and broker.split(":", 1)[0].lower() in REDIS_SCHEMES:
                slots = RedisStreamSlots.from_env(broker)
            else:
                if broker:
                    log.warning("the broker is not Redis: event-stream slots are counted per process")
                slots = StreamSlots.from_env()
            app.state.event_streams = slots
        return slots


def close_slots(app: Any) -> None:
    """The app's shutdown: give back the slots this process holds in Redis (they would otherwise
    stay taken until their leases run out)."""
    with _slots_guard:
        slots = getattr(app.state, "event_streams", None)
        if not isinstance(slots, RedisStreamSlots):
            return
        app.state.event_streams = None
    slots.close()


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
            with anyio.CancelScope(shield=True):
                # off the event loop: releasing a slot in Redis is a round trip
                await anyio.to_thread.run_sync(self._release)
                aclose = getattr(self.body_iterator, "aclose", None)
                if aclose is not None:
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
