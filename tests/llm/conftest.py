from __future__ import annotations

import pytest

from evoforge.evolution.step import Selection
from evoforge.evolution.types import OK, ProgramRef
from tests.llm.fake_openai import FakeOpenAI

PROGRAM = '''import math

# EVOLVE-BLOCK-START
def solve(n):
    step = 0.25
    return [i * step for i in range(n)]
# EVOLVE-BLOCK-END


def run():
    return solve(26)
'''


def program(id: int = 1, code: str = PROGRAM, score: float | None = 0.5, status: str = OK,
            **kw) -> ProgramRef:
    return ProgramRef(id=id, code=code, score=score, status=status, island=0,
                      generation=kw.pop("generation", 3), **kw)


def selection(parent: ProgramRef | None = None, **kw) -> Selection:
    return Selection(island=0, parent=parent or program(), **kw)


@pytest.fixture
def fake():
    with FakeOpenAI() as server:
        yield server


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch):
    monkeypatch.delenv("EVOFORGE_LLM_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
