"""A campaign's mutator.top_p / timeout_s / max_retries / retry_delay_s reach the wire: the
worker's LLM mutator (worker/llm.py) against a real loopback OpenAI-compatible server."""
from __future__ import annotations

import random
import time

import pytest

from evoforge.db.campaign_config import CampaignConfig, MutatorSpec
from evoforge.evaluators.openevolve import TASK
from evoforge.worker.llm import make_llm_mutator
from evoforge.worker.llm_client import TransientLLMError
from tests.llm.conftest import selection
from tests.llm.fake_openai import Reply, diff_reply

MSGS = [{"role": "user", "content": "hi"}]


def mutator_for(fake, **fields):
    spec = CampaignConfig(task="openevolve", mutator=MutatorSpec(
        kind="llm", base_url=fake.base_url, models=[{"name": "fake-a"}], **fields))
    # The local CLI's own URL (operator_url): the only way a stored base_url is called as is.
    return make_llm_mutator(spec, TASK, TASK.Params(), None, 1, operator_url=fake.base_url)


def test_top_p_is_sent_only_when_set(fake):
    fake.script(Reply(diff_reply("    step = 0.25", "    step = 0.5")), Reply("no edit"))
    m = mutator_for(fake, top_p=0.8, temperature=0.3)
    assert m.mutate(selection(), random.Random(0)).error == ""
    mutator_for(fake).mutate(selection(), random.Random(0))
    with_top_p, without = fake.chat_requests()
    assert with_top_p.body["top_p"] == 0.8 and with_top_p.body["temperature"] == 0.3
    assert "top_p" not in without.body


def test_timeout_and_retries_bound_the_request(fake):
    fake.script(Reply("late", delay_s=4.0), Reply("late", delay_s=4.0), Reply("late", delay_s=4.0))
    client = mutator_for(fake, timeout_s=1, max_retries=1, retry_delay_s=0.1)._complete.__self__
    assert (client.timeout_s, client.max_retries, client.backoff_base_s) == (1, 1, 0.1)
    t0 = time.monotonic()
    with pytest.raises(TransientLLMError, match="after 2 attempts"):
        client.complete("fake-a", MSGS)
    assert time.monotonic() - t0 < 3.5  # two 1 s attempts and a 0.1 s backoff, not 4 s replies
    assert len(fake.chat_requests()) == 2
    default = mutator_for(fake)._complete.__self__
    assert (default.timeout_s, default.max_retries, default.hard_limit_s) == (120.0, 4, 300.0)
