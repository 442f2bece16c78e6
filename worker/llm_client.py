"""An OpenAI-compatible chat client with a hard wall-clock limit, honest retries and a secret key.

Works with any server speaking `/v1/chat/completions`: OpenAI, vLLM, Ollama, llama.cpp server,
OpenRouter, LiteLLM. Built on the `openai` package with its own retries switched off:

- `hard_limit_s` bounds each `complete()` call including all retries and backoff. Every attempt
  runs in a daemon thread (reused from a small pool; a new one when all are busy, say with a
  reply that never ends) and reads the body as a stream, checking the deadline between chunks;
  the caller waits at most until the deadline, so a reply that never ends cannot hang a worker.
- Retries only on 429, 5xx, timeouts and connection errors: exponential backoff with jitter,
  or the server's Retry-After (seconds, milliseconds or an HTTP date) when it sends one. A
  Retry-After beyond the deadline ends the call at once.
- Errors are `LLMError` subclasses: `TransientLLMError` (retries spent or deadline reached),
  `PermanentLLMError` (other 4xx: bad key, unknown model, bad request), `MalformedLLMReply`
  (not JSON, no choices, empty content). Messages never contain the API key.
- The key: `api_key`, else `EVOFORGE_LLM_API_KEY`, else `OPENAI_API_KEY`, else "none" (local
  servers). It is kept only inside the SDK client and scrubbed from every message we raise/log.
  `credentials=False` sends no key at all (worker/endpoints.py decides who gets one).
- Redirects are never followed (a 3xx is a `PermanentLLMError`); `guard` limits the addresses
  a connection may reach (worker/llm_http.py).
"""
from __future__ import annotations

import email.utils
import json
import logging
import math
import os
import queue
import random
import threading
import time
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

import openai

from evoforge.evolution.llm_mutator import Completion
from evoforge.worker.endpoints import BlockedAddress

log = logging.getLogger("evoforge.llm")

KEY_ENV_VARS = ("EVOFORGE_LLM_API_KEY", "OPENAI_API_KEY")


class LLMError(Exception):
    """A failed LLM call. `status` is the HTTP status when there was one."""

    def __init__(self, message: str, *, status: int | None = None, attempts: int = 0):
        super().__init__(message)
        self.status, self.attempts = status, attempts


class TransientLLMError(LLMError):
    """429, 5xx, timeout or connection error: retries spent, or the hard limit reached."""


class PermanentLLMError(LLMError):
    """A 4xx other than 429 (bad key, unknown model, bad request): retrying will not help."""


class MalformedLLMReply(LLMError):
    """HTTP 200 but not a usable chat completion: bad JSON, no choices, empty content."""


class _Retryable(Exception):
    def __init__(self, message: str, status: int | None = None, retry_after_s: float | None = None):
        super().__init__(message)
        self.status, self.retry_after_s = status, retry_after_s


class _AttemptThreads:
    """Daemon threads for attempts, reused: starting a thread per attempt costs a start-up
    handshake (a GIL hand-off) on every call. A job goes to an idle thread when there is one,
    else to a new thread, so an attempt stuck in a read never delays the next one."""

    def __init__(self, name: str = "llm-call"):
        self._name = name
        self._reset()
        if hasattr(os, "register_at_fork"):  # a forked child (Celery prefork) has no threads
            os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._idle:
                self._idle -= 1
                self._jobs.put(job)
                return
        threading.Thread(target=self._loop, args=(job,), name=self._name, daemon=True).start()

    def _loop(self, job: Callable[[], None]) -> None:
        while True:
            try:
                job()
            except BaseException:  # jobs report their own outcome; keep the thread alive
                pass
            job = None  # drop references before idling
            with self._lock:
                self._idle += 1
            job = self._jobs.get()


_threads = _AttemptThreads()


class _Box:
    """One attempt's outcome, handed from its thread to the waiting caller."""

    __slots__ = ("done", "ok", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.ok, self.value = False, None


def resolve_api_key(api_key: str | None = None) -> str:
    if api_key:
        return api_key
    for var in KEY_ENV_VARS:
        v = os.environ.get(var)
        if v:
            return v
    return "none"


def _safe_url(url: str) -> str:
    """The base URL without user:password@."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
        parts = parts._replace(netloc=host)
    return urlunsplit(parts)


class OpenAIClient:
    """`complete(model, messages, *, temperature, max_tokens) -> Completion`, thread-safe."""

    def __init__(self, base_url: str, api_key: str | None = None, *, timeout_s: float = 120.0,
                 max_retries: int = 4, hard_limit_s: float = 300.0, backoff_base_s: float = 1.0,
                 backoff_max_s: float = 30.0, rng: random.Random | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic, credentials: bool = True,
                 guard: Any = None, top_p: float | None = None):
        """`top_p`: sent with every request when set (the server's default otherwise).
        `credentials=False`: no key at all, not even one from the environment (a URL the
        operator did not configure). `guard` (an `AddressPolicy`): connect only to addresses
        it allows, checked at connect time. Redirects are never followed."""
        from evoforge.worker.llm_http import make_http_client

        if timeout_s <= 0 or hard_limit_s <= 0 or max_retries < 0:
            raise ValueError("timeout_s and hard_limit_s must be > 0, max_retries >= 0")
        self.base_url = _safe_url(base_url)
        self.timeout_s, self.max_retries, self.hard_limit_s = timeout_s, max_retries, hard_limit_s
        self.backoff_base_s, self.backoff_max_s = backoff_base_s, max(backoff_max_s, backoff_base_s)
        self.top_p = top_p
        key = resolve_api_key(api_key) if credentials else "none"  # "none": stripped on the wire
        password = urlsplit(base_url).password
        self._secrets = tuple(s for s in (key, password) if s and s != "none")
        self._has_key = key != "none"
        self._http = make_http_client(timeout_s=timeout_s, credentials=credentials, guard=guard)
        self._sdk = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0,
                                  timeout=timeout_s, http_client=self._http)
        self._rng = rng or random.Random()
        self._rng_lock = threading.Lock()
        self._sleep, self._clock = sleep, clock

    def __repr__(self) -> str:
        key = "set" if self._has_key else "none"
        return (f"OpenAIClient(base_url={self.base_url!r}, key={key}, timeout_s={self.timeout_s},"
                f" max_retries={self.max_retries}, hard_limit_s={self.hard_limit_s})")

    __str__ = __repr__

    def close(self) -> None:
        self._sdk.close()
        self._http.close()

    # ------------------------------------------------------------------ public
    def complete(self, model: str, messages: list[dict[str, str]], *, temperature: float = 0.7,
                 max_tokens: int = 4096) -> Completion:
        body = {"model": model, "messages": messages, "temperature": temperature,
                "max_tokens": max_tokens}
        if self.top_p is not None:
            body["top_p"] = self.top_p
        raw = self._with_retries(model, lambda left: self._post_chat(body, left))
        return self._completion(raw, messages)

    def list_models(self) -> list[str]:
        """GET /models: a quick check that the server answers and knows the model names."""
        def attempt(left: float) -> Any:
            try:
                page = self._sdk.models.list(timeout=left)
                return [m.id for m in page.data]
            except BlockedAddress as exc:
                raise PermanentLLMError(f"connection refused by the address policy: {exc}") \
                    from None
            except openai.APIError as exc:
                self._raise_for(exc)
        return self._with_retries("(models)", attempt)

    # ------------------------------------------------------------------ retries and deadline
    def _with_retries(self, model: str, attempt: Callable[[float], Any]) -> Any:
        deadline = self._clock() + self.hard_limit_s
        last = "no attempt made"
        status = None
        for n in range(1, self.max_retries + 2):
            left = deadline - self._clock()
            if left <= 0:
                break
            try:
                return self._bounded(attempt, min(self.timeout_s, left), deadline)
            except _Retryable as exc:
                last, status = str(exc), exc.status
                if n > self.max_retries:
                    raise TransientLLMError(self._scrub(
                        f"{model}: gave up after {n} attempts: {last}"),
                        status=status, attempts=n) from None
                delay = self._delay(n, exc.retry_after_s)
                if self._clock() + delay >= deadline:
                    raise TransientLLMError(self._scrub(
                        f"{model}: hard limit {self.hard_limit_s:g} s leaves no time for a retry "
                        f"in {delay:.2f} s after {n} attempts: {last}"),
                        status=status, attempts=n) from None
                log.warning("LLM %s attempt %d failed (%s); retrying in %.2f s",
                            model, n, self._scrub(last), delay)
                self._sleep(delay)
        raise TransientLLMError(self._scrub(
            f"{model}: hard limit {self.hard_limit_s:g} s reached: {last}"),
            status=status) from None

    def _delay(self, attempt: int, retry_after_s: float | None) -> float:
        if retry_after_s is not None:
            return max(0.0, retry_after_s)
        cap = min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1))
        with self._rng_lock:
            return cap * (0.5 + 0.5 * self._rng.random())

    def _bounded(self, attempt: Callable[[float], Any], timeout_s: float, deadline: float) -> Any:
        """Run one attempt in a daemon thread; wait for it at most until the deadline."""
        box = _Box()

        def run() -> None:
            try:
                box.value, box.ok = attempt(timeout_s), True
            except BaseException as exc:  # handed to the caller below
                box.value = exc
            box.done.set()

        _threads.submit(run)
        if not box.done.wait(max(0.0, deadline - self._clock()) + 0.05):
            raise _Retryable(f"no complete reply within the hard limit "
                             f"({self.hard_limit_s:g} s)") from None
        value = box.value
        if box.ok:
            return value
        raise value

    # ------------------------------------------------------------------ one attempt
    def _post_chat(self, body: dict[str, Any], timeout_s: float) -> bytes:
        """POST /chat/completions; read the body as a stream, bounded by `timeout_s` in total."""
        started = time.monotonic()
        try:
            # The body goes as `extra_body`, which the SDK sends as is (it takes precedence over
            # the typed arguments): its per-call type-driven transform of the messages costs
            # more CPU than the rest of the request. `messages=[]` only satisfies the signature.
            with self._sdk.chat.completions.with_streaming_response.create(
                    model=body["model"], messages=[], extra_body=body, timeout=timeout_s) as resp:
                chunks = []
                for chunk in resp.iter_bytes():
                    chunks.append(chunk)
                    if time.monotonic() - started > timeout_s:
                        raise _Retryable(f"reply still streaming after {timeout_s:.3g} s")
                return b"".join(chunks)
        except _Retryable:
            raise
        except BlockedAddress as exc:
            raise PermanentLLMError(f"connection refused by the address policy: {exc}") from None
        except openai.APIError as exc:
            self._raise_for(exc)
        except Exception as exc:  # transport errors while reading the streamed body
            name = type(exc).__name__
            if "Timeout" in name or "Network" in name or "Protocol" in name or \
                    "Connect" in name or "Read" in name or isinstance(exc, OSError):
                raise _Retryable(f"{name} while reading the reply") from None
            raise MalformedLLMReply(self._scrub(f"could not read the reply: {name}: {exc}")) \
                from None
        raise AssertionError("unreachable")

    def _raise_for(self, exc: openai.APIError) -> None:
        if isinstance(exc, openai.APITimeoutError):
            raise _Retryable("request timed out") from None
        if isinstance(exc, openai.APIConnectionError):
            raise _Retryable(f"connection error: {self._scrub(str(exc))}") from None
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            detail = self._scrub(_short(exc.message))
            if 300 <= status < 400:
                raise PermanentLLMError(
                    f"HTTP {status}: the endpoint answered with a redirect, which is never "
                    f"followed (fix the base URL)", status=status, attempts=1) from None
            if status == 429 or status >= 500:
                raise _Retryable(f"HTTP {status}: {detail}", status,
                                 _retry_after(exc.response.headers)) from None
            raise PermanentLLMError(f"HTTP {status}: {detail}", status=status,
                                    attempts=1) from None
        raise MalformedLLMReply(self._scrub(f"{type(exc).__name__}: {_short(str(exc))}")) \
            from None

    # ------------------------------------------------------------------ parsing
    def _completion(self, raw: bytes, messages: list[dict[str, str]]) -> Completion:
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise MalformedLLMReply(self._scrub(
                f"reply is not JSON: {_short(raw.decode('utf-8', 'replace'))!r}")) from None
        if not isinstance(data, dict):
            raise MalformedLLMReply("reply JSON is not an object")
        if "error" in data and not data.get("choices"):
            raise MalformedLLMReply(self._scrub(f"reply is an error: {_short(str(data['error']))}"))
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices:
            raise MalformedLLMReply("reply has no choices")
        choice = choices[0] if isinstance(choices[0], dict) else {}
        message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
        text = message.get("content")
        if isinstance(text, list):  # content parts
            text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
        if not isinstance(text, str) or not text.strip():
            reason = choice.get("finish_reason")
            raise MalformedLLMReply(f"reply has empty content (finish_reason={reason!r})")
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        pt, ct = _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens"))
        if pt is None:
            pt = sum(len(m.get("content") or "") for m in messages) // 4
        if ct is None:
            ct = len(text) // 4
        return Completion(text=self._scrub(text), prompt_tokens=pt, completion_tokens=ct)

    def _scrub(self, text: str) -> str:
        for s in self._secrets:
            if len(s) >= 4:
                text = text.replace(s, "[redacted]")
        return text


def _retry_after(headers: Any) -> float | None:
    """Retry-After-Ms, or Retry-After in seconds or as an HTTP date; None when absent/odd."""
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            v = float(ms) / 1000
            return v if math.isfinite(v) and v >= 0 else None
        ra = headers.get("retry-after")
    except (AttributeError, ValueError):
        return None
    if ra is None:
        return None
    try:
        v = float(ra)
        return v if math.isfinite(v) and v >= 0 else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(ra)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None


def _short(text: str, n: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n] + "..."


def build_llm_mutator(base_url: str, models: list[Any], task_context: str, *,
                      api_key: str | None = None, temperature: float = 0.7,
                      max_tokens: int = 4096, diff_mode: bool = True, budget: Any = None,
                      prices: Any = None, bandit: bool = False, cooldown_s: float = 30.0,
                      ideas: Any = None, timeout_s: float = 120.0, max_retries: int = 4,
                      hard_limit_s: float = 300.0, seed: int | None = None,
                      credentials: bool = True, guard: Any = None, top_p: float | None = None,
                      backoff_base_s: float = 1.0, language: str = "python") -> Any:
    """One call for the CLI/worker: `--llm-base-url`, the models (`ModelSpec`s, or
    `NAME[:WEIGHT]` strings), ... ->
    an `evolution.llm_mutator.LLMMutator` (its bandit learns from the database through
    `learn_from`, worker/llm.py; `._complete.__self__` is the client, to `close()`)."""
    from evoforge.evolution.ensemble import Ensemble
    from evoforge.evolution.llm_mutator import LLMMutator
    from evoforge.evolution.prompts import PromptConfig

    client = OpenAIClient(base_url, api_key, timeout_s=timeout_s, max_retries=max_retries,
                          hard_limit_s=hard_limit_s, credentials=credentials, guard=guard,
                          top_p=top_p, backoff_base_s=backoff_base_s,
                          rng=random.Random(seed) if seed is not None else None)
    ensemble = Ensemble(models, prices=prices, bandit=bandit,
                        cooldown_s=cooldown_s)
    return LLMMutator(client.complete, task_context, ensemble, diff_mode=diff_mode,
                      budget=budget, temperature=temperature, max_tokens=max_tokens,
                      ideas=ideas, prompt_config=PromptConfig(diff_mode=diff_mode, language=language))
