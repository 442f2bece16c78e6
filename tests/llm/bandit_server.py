"""A loopback OpenAI-compatible server with one good and one useless model, for bandit tests.

`good` answers every prompt with a SEARCH/REPLACE edit that applies to circle_packing's programs
(a new comment line in `compute_radii`, numbered, so every child is new code); `bad` answers
in prose, with no edit at all: a well-formed reply (no rest, no retry) that never makes a
program. Only the bandit can learn to avoid it.
"""
from __future__ import annotations

import itertools
import threading

from tests.llm.fake_openai import FakeOpenAI, Reply, diff_reply

ANCHOR = "def compute_radii(centers):"


def bandit_server() -> FakeOpenAI:
    fake = FakeOpenAI(models=("good", "bad"))
    counter, lock = itertools.count(1), threading.Lock()

    def good(_request):
        with lock:
            n = next(counter)
        return Reply(diff_reply(ANCHOR, f"{ANCHOR}\n    # variant {n}"))

    fake.per_model = {"good": good, "bad": Reply("I would rather not change anything.")}
    return fake


def endpoints_toml(base_url: str) -> str:
    return f'[endpoints.fake]\nbase_url = "{base_url}"\nmodels = ["good", "bad"]\n'


BANDIT_MUTATOR = {"kind": "llm", "endpoint": "fake", "bandit": True,
                  "models": [{"name": "good"}, {"name": "bad"}]}


def thirds(models: list[str], name: str) -> tuple[int, int, int]:
    """(how often `name` is in the first third of `models`, in the last third, a third's size)."""
    third = max(1, len(models) // 3)
    return models[:third].count(name), models[-third:].count(name), third
