"""Example programs that are copies of what a task ships (its seed, its baselines) must not drift:
users read examples/, the tasks load their own package files."""
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAIRS = [
    ("evaluators/circle_packing/seed.py", "examples/circle_packing/seed.py"),
    ("evaluators/matmul/seed.py", "examples/matmul/seed.py"),
    ("evaluators/optimizer/baselines/adam.py", "examples/optimizer/adam.py"),
    ("evaluators/optimizer/baselines/lion.py", "examples/optimizer/lion.py"),
    ("evaluators/optimizer/baselines/sgd.py", "examples/optimizer/sgd.py"),
]


@pytest.mark.parametrize("shipped,example", PAIRS)
def test_example_is_the_shipped_program(shipped, example):
    assert (ROOT / shipped).read_text() == (ROOT / example).read_text(), f"{example} drifted from {shipped}"
