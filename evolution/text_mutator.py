"""Text-level edits for candidates that are not Python (Rust, C++, R, shell...): no parser needed.

The local AST mutator cannot parse another language, so for those it perturbs one numeric
literal inside the EVOLVE-BLOCKs (the whole program when there are none), chosen and changed
with the `rng` passed in (a seed fixes the result). A literal is a decimal number standing
alone: not part of a name (`x1`, `u32`), of a typed literal (`10usize`, `1_000`), of a range
(`0..n`) or of a version-like `1.2.3`; numbers on comment lines and inside double-quoted
strings are left alone. Floats get a gaussian relative change at a random scale, ints +-step
(never a sign flip of a non-negative int, which could turn a size into a negative one).
"""
from __future__ import annotations

import random
import re

from evoforge.evolution.program import COMMENT_LEADERS, evolvable_regions

_NUMBER = re.compile(r"(?<![\w.])(\d+\.\d+|\d+\.(?![\w.])|\.\d+|\d+)([eE][+-]?\d+)?(?![\w.])")


def _unquoted(line: str, starts: list[int]) -> list[bool]:
    """For each of `starts` (ascending columns of `line`), whether it lies outside a
    double-quoted string (escapes respected). One pass over the line: a long line of numbers
    stays linear."""
    out: list[bool] = []
    inside, i = False, 0
    for col in starts:
        while i < col:
            c = line[i]
            if c == "\\" and inside:
                i += 2
                continue
            if c == '"':
                inside = not inside
            i += 1
        out.append(not inside)
    return out


def literal_sites(code: str) -> list[tuple[int, int]]:
    """(start, end) offsets of the numeric literals that may be perturbed (module doc)."""
    regions = evolvable_regions(code) or None
    spans = [(r.start, r.end) for r in regions] if regions else [(0, len(code))]
    sites = []
    for lo, hi in spans:
        offset = lo
        for line in code[lo:hi].splitlines(keepends=True):
            if not line.strip().startswith(COMMENT_LEADERS):
                found = [m.span() for m in _NUMBER.finditer(line)]
                keep = _unquoted(line, [a for a, _ in found])
                sites += [(offset + a, offset + b) for (a, b), k in zip(found, keep) if k]
            offset += len(line)
    return sites


def perturb_literal(code: str, rng: random.Random, *, scales: tuple[float, ...] = (0.001, 0.01, 0.1),
                    int_step: int = 1) -> tuple[str, str] | None:
    """(new code, detail) with one literal changed, or None when there is none to change."""
    sites = literal_sites(code)
    if not sites:
        return None
    start, end = rng.choice(sites)
    old = code[start:end]
    if re.fullmatch(r"\d+", old):
        value = int(old)
        step = rng.randint(1, max(1, int_step))
        new_value = value + step if value < step or rng.random() < 0.5 else value - step
        new = str(new_value)
    else:
        value = float(old)
        scale = rng.choice(scales)
        new_value = value * (1.0 + rng.gauss(0.0, scale)) + rng.gauss(0.0, scale * 0.1)
        new = repr(abs(float(f"{new_value:.8g}")))  # the sign stays outside the literal
        if "e" not in new and "." not in new:
            new += ".0"
        if float(new) == value:
            return None
    line = code.count("\n", 0, start) + 1
    return code[:start] + new + code[end:], f"line {line}: {old} -> {new}"
