"""The step's two halves: a proposal is a self-contained message, and complete(propose(..)) is
the whole iteration."""
from __future__ import annotations

import math

from evoforge.evolution.step import Proposal, Selection, island_of, propose
from evoforge.evolution.types import Mutation, ProgramRef


def test_a_proposal_round_trips_through_json():
    p = Proposal(iteration=5, island=2, parent_id=17, parent_generation=3, parent_score=1.25,
                 mutation=Mutation(code="x = 2\n", kind="llm:diff", model="m", prompt="p",
                                   response="r", prompt_tokens=10, completion_tokens=4,
                                   cost_usd=0.5, extra={"variant": "diff", "calls": 1}))
    text = p.to_json()
    assert isinstance(text, str)
    assert Proposal.from_json(text) == p
    assert p.generation == 4


def test_values_json_cannot_hold_are_written_as_strings():
    p = Proposal(iteration=1, island=0, parent_id=None, parent_generation=None,
                 parent_score=math.inf, mutation=Mutation(code=None, kind="error",
                                                          extra={"when": {1, 2}}))
    back = Proposal.from_json(p.to_json())
    assert back.parent_score == math.inf and back.generation == 0
    assert isinstance(back.mutation.extra["when"], str)


def test_island_of_puts_the_seed_on_island_0_then_round_robin():
    assert [island_of(i, 3) for i in range(8)] == [0, 0, 1, 2, 0, 1, 2, 0]
    assert island_of(9, 1) == 0


class _Store:
    def __init__(self, parent):
        self.parent = parent

    def select(self, island, rng):
        return Selection(island=island, parent=self.parent)


class _Boom:
    def mutate(self, selection, rng):
        raise RuntimeError("model exploded")


def test_propose_records_a_mutator_failure_and_carries_the_parent():
    parent = ProgramRef(id=3, code="x = 1\n", score=0.5, status="ok", island=1, generation=2)
    p = propose(4, 1, store=_Store(parent), mutator=_Boom(), seed=0)
    assert (p.iteration, p.island, p.parent_id, p.parent_score, p.generation) == (4, 1, 3, 0.5, 3)
    assert p.mutation.code is None and "model exploded" in p.mutation.error
