import numpy as np

from evoforge.evolution.novelty import (IslandNovelty, MinHasher, NoveltyIndex, jaccard, shingles,
                                        tokens)

BASE = '''import numpy as np


def pack_circles(n):
    centers = np.zeros((n, 2))
    radii = np.full(n, 0.05)
    for i in range(n):
        row, col = divmod(i, 6)
        centers[i] = [0.08 + 0.16 * col, 0.08 + 0.16 * row]
    for _ in range(10):
        radii = np.minimum(radii * 1.01, 0.08)
    return centers, radii
'''

OTHER = '''def optimise(f, x0, steps=100, lr=0.1):
    x = list(x0)
    for step in range(steps):
        g = [(f(x[:i] + [v + 1e-6] + x[i + 1:]) - f(x)) / 1e-6 for i, v in enumerate(x)]
        x = [v - lr * gi for v, gi in zip(x, g)]
        if step % 10 == 0:
            lr *= 0.9
    return x
'''


def test_tokens_ignore_comments_and_formatting():
    assert tokens("x=1+2  # c\n") == tokens("x = 1 + 2\n") == ["x", "=", "1", "+", "2"]
    assert "**=" in tokens("x **= 2\n") and "<=" in tokens("a <= b\n")


def test_signatures_are_deterministic_across_instances():
    a, b = MinHasher(seed=1), MinHasher(seed=1)
    assert np.array_equal(a.signature(BASE), b.signature(BASE))
    assert not np.array_equal(MinHasher(seed=2).signature(BASE), a.signature(BASE))


def test_minhash_estimates_jaccard():
    h = MinHasher(num_perm=256)
    edited = BASE.replace("for _ in range(10):\n        radii = np.minimum(radii * 1.01, 0.08)\n",
                          "radii = radii * 0.9\n")
    exact = jaccard(shingles(BASE), shingles(edited))
    est = h.similarity(h.signature(BASE), h.signature(edited))
    assert 0.3 < exact < 0.95
    assert abs(est - exact) < 0.1


def test_reformatted_copy_is_not_novel_and_different_program_is():
    idx = NoveltyIndex()
    assert idx.is_novel(BASE)
    idx.add(BASE, key=1)
    reformatted = "# a comment\n" + BASE.replace("0.05)", "0.05 )  # start")
    assert not idx.is_novel(reformatted)
    assert idx.nearest(reformatted) == (1.0, 1)
    assert idx.is_novel(OTHER)
    assert len(idx) == 1


def test_threshold_controls_small_edits():
    idx = NoveltyIndex()
    idx.add(BASE)
    one_const = BASE.replace("1.01", "1.02")
    sim = idx.similarity(one_const)
    assert 0.8 < sim < 1.0
    assert not idx.is_novel(one_const, threshold=0.7)
    assert idx.is_novel(one_const, threshold=1.01)


def test_index_grows_and_finds_the_right_neighbour():
    idx = NoveltyIndex()
    for i in range(100):
        idx.add(OTHER.replace("steps=100", f"steps={i}").replace("0.9", f"0.{i + 1}"), key=i)
    idx.add(BASE, key="base")
    assert len(idx) == 101
    sim, key = idx.nearest(BASE + "\n")
    assert (sim, key) == (1.0, "base")


def test_islands_are_separate():
    gate = IslandNovelty()
    gate.add(0, BASE)
    assert not gate.is_novel(0, BASE)
    assert gate.is_novel(1, BASE)


def test_tiny_programs():
    idx = NoveltyIndex()
    idx.add("x = 1\n")
    assert not idx.is_novel("x = 1\n")
    assert idx.is_novel("y = 2\n")
