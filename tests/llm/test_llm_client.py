"""OpenAIClient against a real loopback HTTP server: retries, limits, malformed replies, secrecy."""
from __future__ import annotations

import logging
import socket
import time

import pytest

from tests.llm.fake_openai import Raw, Reply, Stall, Status, Trickle
from evoforge.worker.llm_client import (MalformedLLMReply, OpenAIClient, PermanentLLMError,
                                        TransientLLMError, resolve_api_key)

MSGS = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
KEY = "sk-test-SECRET-0123456789abcdef"


def client(fake, **kw) -> OpenAIClient:
    opts = dict(api_key=KEY, timeout_s=5.0, max_retries=3, hard_limit_s=10.0,
                backoff_base_s=0.05, backoff_max_s=0.2)
    opts.update(kw)
    return OpenAIClient(fake.base_url, **opts)


def test_normal_reply_records_text_tokens_and_request(fake):
    fake.script(Reply("hello there", prompt_tokens=321, completion_tokens=17))
    out = client(fake).complete("fake-a", MSGS, temperature=0.3, max_tokens=77)
    assert (out.text, out.prompt_tokens, out.completion_tokens) == ("hello there", 321, 17)
    [req] = fake.chat_requests()
    assert req.body["model"] == "fake-a" and req.body["messages"] == MSGS
    assert req.body["temperature"] == 0.3 and req.body["max_tokens"] == 77
    assert req.headers["authorization"] == f"Bearer {KEY}"


def test_missing_usage_is_estimated(fake):
    fake.script(Reply("x" * 400, prompt_tokens=None, completion_tokens=None))
    out = client(fake).complete("fake-a", MSGS)
    assert out.completion_tokens == 100 and out.prompt_tokens > 0


def test_500s_are_retried_with_growing_backoff(fake):
    fake.script(Status(500), Status(502), Status(503), Reply("ok"))
    c = client(fake, backoff_base_s=0.1, backoff_max_s=5.0)
    assert c.complete("fake-a", MSGS).text == "ok"
    times = [r.t for r in fake.chat_requests()]
    assert len(times) == 4
    gaps = [b - a for a, b in zip(times, times[1:])]
    # jitter keeps each wait within [0.5, 1] x base * 2^k
    assert 0.05 <= gaps[0] < 0.5 and 0.1 <= gaps[1] < 0.6 and 0.2 <= gaps[2] < 0.9


def test_retries_are_bounded_by_max_retries(fake):
    fake.default = Status(500)
    with pytest.raises(TransientLLMError) as info:
        client(fake, max_retries=2).complete("fake-a", MSGS)
    assert len(fake.chat_requests()) == 3
    assert info.value.status == 500 and "3 attempts" in str(info.value)


def test_retry_after_is_honoured(fake):
    fake.script(Status(429, headers={"Retry-After": "1"}), Reply("after wait"))
    t0 = time.monotonic()
    out = client(fake, backoff_base_s=0.01).complete("fake-a", MSGS)
    assert out.text == "after wait"
    first, second = fake.chat_requests()
    assert second.t - first.t >= 1.0
    assert time.monotonic() - t0 < 3.0


def test_retry_after_ms_is_honoured(fake):
    fake.script(Status(429, headers={"retry-after-ms": "600"}), Reply("ok"))
    client(fake, backoff_base_s=0.01).complete("fake-a", MSGS)
    first, second = fake.chat_requests()
    assert second.t - first.t >= 0.6


def test_retry_after_beyond_hard_limit_gives_up_at_once(fake):
    fake.script(Status(429, headers={"Retry-After": "30"}), Reply("never reached"))
    t0 = time.monotonic()
    with pytest.raises(TransientLLMError, match="hard limit"):
        client(fake, hard_limit_s=3.0).complete("fake-a", MSGS)
    assert time.monotonic() - t0 < 1.0
    assert len(fake.chat_requests()) == 1


@pytest.mark.parametrize("code", [400, 401, 403, 404, 422])
def test_other_4xx_are_permanent_and_not_retried(fake, code):
    fake.script(Status(code), Reply("never reached"))
    with pytest.raises(PermanentLLMError) as info:
        client(fake).complete("fake-a", MSGS)
    assert info.value.status == code
    assert len(fake.chat_requests()) == 1


@pytest.mark.parametrize("behaviour, match", [
    (Raw(b"{not json"), "not JSON"),
    (Raw(b'{"id": "x", "object": "chat.completion"}'), "no choices"),
    (Raw(b'{"choices": []}'), "no choices"),
    (Reply(""), "empty content"),
    (Reply(None), "empty content"),
    (Raw(b'["a list"]'), "not an object"),
    (Raw(b'{"error": {"message": "upstream exploded"}}'), "upstream exploded"),
])
def test_malformed_replies_raise_malformed_without_retry(fake, behaviour, match):
    fake.script(behaviour, Reply("never reached"))
    with pytest.raises(MalformedLLMReply, match=match):
        client(fake).complete("fake-a", MSGS)
    assert len(fake.chat_requests()) == 1


def test_slow_reply_within_timeout_succeeds(fake):
    fake.script(Reply("slow but fine", delay_s=0.5))
    assert client(fake, timeout_s=3.0).complete("fake-a", MSGS).text == "slow but fine"


def test_slow_reply_beyond_timeout_is_retried_then_fails(fake):
    fake.default = Reply("too slow", delay_s=3.0)
    t0 = time.monotonic()
    with pytest.raises(TransientLLMError):
        client(fake, timeout_s=0.4, max_retries=1, hard_limit_s=10.0).complete("fake-a", MSGS)
    elapsed = time.monotonic() - t0
    assert len(fake.chat_requests()) == 2
    assert elapsed < 2.0


def test_reply_that_never_ends_respects_hard_limit(fake):
    fake.default = Stall()
    t0 = time.monotonic()
    with pytest.raises(TransientLLMError):
        client(fake, timeout_s=30.0, max_retries=5, hard_limit_s=1.5).complete("fake-a", MSGS)
    elapsed = time.monotonic() - t0
    assert 1.4 <= elapsed < 2.2


def test_trickling_reply_respects_hard_limit(fake):
    """A body that sends a byte every 0.1 s never trips a per-read timeout; the deadline holds."""
    fake.default = Trickle(0.1)
    t0 = time.monotonic()
    with pytest.raises(TransientLLMError):
        client(fake, timeout_s=30.0, max_retries=5, hard_limit_s=1.5).complete("fake-a", MSGS)
    assert time.monotonic() - t0 < 2.2


def test_hard_limit_covers_all_retries(fake):
    fake.default = Status(500)
    t0 = time.monotonic()
    with pytest.raises(TransientLLMError):
        client(fake, max_retries=1000, backoff_base_s=0.2, backoff_max_s=0.2,
               hard_limit_s=1.0).complete("fake-a", MSGS)
    elapsed = time.monotonic() - t0
    assert elapsed < 1.3
    assert 3 <= len(fake.chat_requests()) <= 8


def test_connection_refused_is_transient_and_bounded():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = OpenAIClient(f"http://127.0.0.1:{port}/v1", api_key=KEY, timeout_s=1.0, max_retries=2,
                     hard_limit_s=5.0, backoff_base_s=0.05, backoff_max_s=0.1)
    t0 = time.monotonic()
    with pytest.raises(TransientLLMError, match="connection"):
        c.complete("fake-a", MSGS)
    assert time.monotonic() - t0 < 3.0


def test_list_models(fake):
    assert client(fake).list_models() == ["fake-a", "fake-b"]


def test_key_never_leaks_into_errors_repr_or_logs(fake, caplog):
    caplog.set_level(logging.DEBUG)
    echo = lambda req: {"error": {"message": "bad key: " + req.headers["authorization"]}}
    fake.script(Status(500, body=echo), Status(401, body=echo))
    c = client(fake)
    with pytest.raises(PermanentLLMError) as info:
        c.complete("fake-a", MSGS)
    assert "bad key" in str(info.value)          # the server's message does come through
    assert KEY not in str(info.value) and KEY not in repr(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert KEY not in repr(c) and KEY not in str(c) and "key=set" in repr(c)
    assert KEY not in caplog.text and "retrying" in caplog.text


def test_key_is_scrubbed_from_reply_text(fake):
    fake.script(Reply(f"the key is {KEY}!"))
    assert KEY not in client(fake).complete("fake-a", MSGS).text


def test_password_in_base_url_is_hidden(fake):
    url = fake.base_url.replace("http://", "http://user:hunter2secret@")
    c = OpenAIClient(url, api_key=KEY)
    assert "hunter2secret" not in repr(c)


def test_key_resolution_order(monkeypatch, fake):
    assert resolve_api_key() == "none"
    monkeypatch.setenv("OPENAI_API_KEY", "from-openai")
    assert resolve_api_key() == "from-openai"
    monkeypatch.setenv("EVOFORGE_LLM_API_KEY", "from-evoforge")
    assert resolve_api_key() == "from-evoforge"
    assert resolve_api_key("explicit") == "explicit"
    fake.script(Reply("ok"))
    OpenAIClient(fake.base_url).complete("fake-a", MSGS)
    assert fake.chat_requests()[0].headers["authorization"] == "Bearer from-evoforge"
