"""Near-duplicate gate: MinHash over token shingles of normalised code.

A program is normalised (`hashing.normalize_code`: no comments, docstrings or formatting),
tokenised (names, numbers, operators), cut into `shingle`-token windows, and each window hashed
to 32 bits (blake2b, stable across processes). The signature is the minimum of `num_perm`
universal hashes `(a*x + b) mod (2^31 - 1)` with a, b drawn from a fixed seed, so signatures are
comparable across workers and runs. The fraction of equal signature slots estimates the Jaccard
similarity of the shingle sets.

`NoveltyIndex` (one per island) finds candidates through LSH bands (default 16 bands of 8
rows: a pair at similarity 0.9 shares a band with probability > 0.9999, one at 0.5 about
0.06) and checks each with the full signature, so a lookup costs O(bands + candidates), not
O(programs on the island).

Scale of the numbers: changing one token of a program of N tokens changes at most `shingle`
shingles, so the similarity is about (N - s) / (N + s): for N = 300 tokens and s = 5 that is
about 0.967. A threshold of 0.95 therefore also rejects single-constant edits of programs
longer than ~200 tokens; gate only where near-identical re-proposals are the problem (LLM
mutations), or raise the threshold.
"""
from __future__ import annotations

import hashlib
import re

import numpy as np

from evoforge.evolution.hashing import normalize_code

_PRIME = (1 << 31) - 1  # Mersenne prime: a*x + b < 2^63, no uint64 overflow
_TOKEN = re.compile(r"[A-Za-z_]\w*|\d[\d_]*\.?[\d_]*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?|"
                    r"\*\*=?|//=?|<<=?|>>=?|[-+*/%&|^<>=!]=|->|\S")


def tokens(code: str) -> list[str]:
    return _TOKEN.findall(normalize_code(code))


def shingles(code: str, size: int = 5) -> set[str]:
    toks = tokens(code)
    if len(toks) <= size:
        return {" ".join(toks)}
    return {" ".join(toks[i:i + size]) for i in range(len(toks) - size + 1)}


def jaccard(a: set, b: set) -> float:
    """Exact Jaccard similarity (1.0 for two empty sets)."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def _hash32(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"),
                                          digest_size=4).digest(), "little")


class MinHasher:
    def __init__(self, num_perm: int = 128, shingle: int = 5, seed: int = 1):
        self.num_perm = num_perm
        self.shingle = shingle
        gen = np.random.default_rng(seed)
        # a universal family over Z_p: x, a, b < p, so each (a*x + b) mod p is a proper
        # random-like permutation (a, x up to 2^32 against a 2^61 prime would mostly keep the
        # order of x and bias the estimate upwards)
        self.a = gen.integers(1, _PRIME, size=num_perm, dtype=np.uint64)
        self.b = gen.integers(0, _PRIME, size=num_perm, dtype=np.uint64)

    def signature(self, code: str) -> np.ndarray:
        hashed = np.fromiter((_hash32(s) % _PRIME for s in shingles(code, self.shingle)),
                             dtype=np.uint64)
        values = (hashed[:, None] * self.a[None, :] + self.b[None, :]) % np.uint64(_PRIME)
        return values.min(axis=0)

    @staticmethod
    def similarity(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
        return float(np.mean(sig_a == sig_b))


class NoveltyIndex:
    """MinHash signatures of one island's programs, with an LSH index for fast lookups."""

    def __init__(self, num_perm: int = 128, shingle: int = 5, bands: int = 16, seed: int = 1):
        if num_perm % bands:
            raise ValueError("num_perm must be a multiple of bands")
        self.hasher = MinHasher(num_perm, shingle, seed)
        self.bands = bands
        self.rows = num_perm // bands
        self._sigs = np.zeros((16, num_perm), dtype=np.uint64)  # grows by doubling
        self._n = 0
        self._keys: list[object] = []
        self._buckets: list[dict[bytes, list[int]]] = [{} for _ in range(bands)]

    def __len__(self) -> int:
        return self._n

    def _band_keys(self, sig: np.ndarray) -> list[bytes]:
        return [sig[i * self.rows:(i + 1) * self.rows].tobytes() for i in range(self.bands)]

    def nearest(self, code: str) -> tuple[float, object | None]:
        """(estimated Jaccard, key) of the most similar indexed program; (0.0, None) if none
        shares an LSH band with it."""
        sig = self.hasher.signature(code)
        candidates: set[int] = set()
        for bucket, key in zip(self._buckets, self._band_keys(sig)):
            candidates.update(bucket.get(key, ()))
        if not candidates:
            return 0.0, None
        idx = np.array(sorted(candidates))
        sims = np.mean(self._sigs[idx] == sig[None, :], axis=1)
        best = int(np.argmax(sims))
        return float(sims[best]), self._keys[int(idx[best])]

    def similarity(self, code: str) -> float:
        return self.nearest(code)[0]

    def is_novel(self, code: str, threshold: float = 0.95) -> bool:
        """False when an indexed program's estimated similarity reaches `threshold`."""
        return self.similarity(code) < threshold

    def add(self, code: str, key: object = None) -> None:
        sig = self.hasher.signature(code)
        idx = self._n
        if idx == len(self._sigs):
            self._sigs = np.concatenate([self._sigs, np.zeros_like(self._sigs)])
        self._sigs[idx] = sig
        self._n += 1
        self._keys.append(key)
        for bucket, bkey in zip(self._buckets, self._band_keys(sig)):
            bucket.setdefault(bkey, []).append(idx)


class IslandNovelty:
    """One `NoveltyIndex` per island."""

    def __init__(self, **index_kwargs):
        self._kwargs = index_kwargs
        self._islands: dict[int, NoveltyIndex] = {}

    def index(self, island: int) -> NoveltyIndex:
        if island not in self._islands:
            self._islands[island] = NoveltyIndex(**self._kwargs)
        return self._islands[island]

    def is_novel(self, island: int, code: str, threshold: float = 0.95) -> bool:
        return self.index(island).is_novel(code, threshold)

    def add(self, island: int, code: str, key: object = None) -> None:
        self.index(island).add(code, key)
