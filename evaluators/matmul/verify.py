"""Exact verification of matrix multiplication tensor decompositions (trusted, no tolerance).

Entries are converted to integers exactly: in the `integer` field they must be integral; in
`half_integer` twice the entry must be integral (everything is doubled, so a product of three
factors, and the target tensor, are scaled by 8); in `complex_half_integer` the real and imaginary
parts are half-integers, handled as separate int64 arrays of Gaussian integers. A value that is
not representable (0.3 in the integer field, 0.25 in a half-integer field, NaN, a string) is
rejected with a reason. Reconstruction is int64 arithmetic; the bounds below keep it from
overflowing: |scaled entry| <= 2**16 and rank <= 1000 give |sum| < 2**60.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

FIELDS = ("integer", "half_integer", "complex_half_integer")
MAX_ABS_SCALED = 2 ** 16   # bound on |entry * scale| (and on each part of a complex entry)
MAX_RANK = 1000


class DecompositionError(ValueError):
    """The output is not a decomposition this task can verify; the message says why."""


@dataclass(frozen=True)
class ExactFactors:
    """Integer factors after scaling: entry = (re + i*im) / scale."""

    re: tuple[np.ndarray, np.ndarray, np.ndarray]
    im: tuple[np.ndarray, np.ndarray, np.ndarray] | None  # None unless the field is complex
    scale: int

    @property
    def rank(self) -> int:
        return int(self.re[0].shape[1])


@dataclass(frozen=True)
class Check:
    exact: bool
    wrong_entries: int    # tensor positions where the reconstruction differs from T
    abs_error: float      # sum of |difference| over all positions, in unscaled units


def matmul_tensor(n: int, m: int, p: int) -> np.ndarray:
    t = np.zeros((n * m, m * p, p * n), dtype=np.int64)
    for i in range(n):
        for j in range(m):
            for k in range(p):
                t[i * m + j, j * p + k, k * n + i] = 1
    return t


def field_scale(field: str) -> int:
    if field not in FIELDS:
        raise ValueError(f"unknown field {field!r}; expected one of {FIELDS}")
    return 1 if field == "integer" else 2


def _scaled_integers(part: np.ndarray, scale: int, what: str, field: str) -> np.ndarray:
    """Exactly part * scale as int64, or DecompositionError naming the first bad entry."""
    if part.dtype.kind in "iu":
        too_big = np.abs(part.astype(np.float64)) * scale > MAX_ABS_SCALED
        if too_big.any():
            idx = tuple(int(i) for i in np.argwhere(too_big)[0])
            raise DecompositionError(f"{what}{list(idx)} = {part[idx]} exceeds the entry bound "
                                     f"{MAX_ABS_SCALED // scale}")
        return part.astype(np.int64) * scale
    # floats (float16/32/64): multiplying by 1 or 2 is exact in binary floating point
    x = part.astype(np.float64)
    bad = ~np.isfinite(x)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DecompositionError(f"{what}{list(idx)} is {x[idx]} (entries must be finite)")
    y = x * scale
    too_big = np.abs(y) > MAX_ABS_SCALED
    if too_big.any():
        idx = tuple(int(i) for i in np.argwhere(too_big)[0])
        raise DecompositionError(f"{what}{list(idx)} = {x[idx]!r} exceeds the entry bound "
                                 f"{MAX_ABS_SCALED // scale}")
    off_grid = y != np.round(y)
    if off_grid.any():
        idx = tuple(int(i) for i in np.argwhere(off_grid)[0])
        kind = "an integer" if scale == 1 else "a multiple of 1/2"
        raise DecompositionError(f"{what}{list(idx)} = {float(x[idx])!r} is not {kind} "
                                 f"(field {field})")
    return y.astype(np.int64)


def _as_array(value: Any, what: str) -> np.ndarray:
    if value is None or isinstance(value, (str, bytes, dict, set)):
        raise DecompositionError(f"{what} must be a 2-D array of numbers, got {type(value).__name__}")
    try:
        arr = np.asarray(value)
    except Exception as exc:
        raise DecompositionError(f"{what} is not a rectangular array of numbers "
                                 f"({type(exc).__name__})")
    kind, size = arr.dtype.kind, arr.dtype.itemsize
    if not (kind in "iu" or (kind == "f" and size <= 8) or (kind == "c" and size <= 16)):
        raise DecompositionError(f"{what} must hold numbers (int, float or complex), "
                                 f"got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise DecompositionError(f"{what} must be 2-D, got shape {arr.shape}")
    return arr


def parse_factors(output: Any, n: int, m: int, p: int, field: str) -> ExactFactors:
    """Turn decompose()'s return value into exact integer factors, or raise DecompositionError."""
    scale = field_scale(field)
    if not isinstance(output, (tuple, list)) or len(output) != 3:
        kind = type(output).__name__
        size = f" of length {len(output)}" if isinstance(output, (tuple, list)) else ""
        raise DecompositionError(f"decompose must return (U, V, W), got {kind}{size}")
    names, rows = ("U", "V", "W"), (n * m, m * p, p * n)
    arrays = [_as_array(value, name) for value, name in zip(output, names)]
    rank = arrays[0].shape[1]
    for arr, name, r in zip(arrays, names, rows):
        if arr.shape != (r, rank):
            raise DecompositionError(f"{name} must have shape ({r}, R) with the same R for U, V "
                                     f"and W (R = {rank} from U), got {arr.shape}")
    if rank < 1:
        raise DecompositionError("rank R must be at least 1")
    if rank > MAX_RANK:
        raise DecompositionError(f"rank {rank} exceeds the limit {MAX_RANK}")
    complex_field = field == "complex_half_integer"
    re, im = [], []
    for arr, name in zip(arrays, names):
        if arr.dtype.kind == "c":
            imag = arr.imag
            if not complex_field and np.any(imag != 0):
                idx = tuple(int(i) for i in np.argwhere(imag != 0)[0])
                raise DecompositionError(f"{name}{list(idx)} = {complex(arr[idx])} is complex; "
                                         "complex entries need field complex_half_integer")
            re.append(_scaled_integers(arr.real, scale, name, field))
            im.append(_scaled_integers(imag, scale, name + ".imag", field))
        else:
            re.append(_scaled_integers(arr, scale, name, field))
            im.append(np.zeros(arr.shape, dtype=np.int64))
    return ExactFactors(re=tuple(re), im=tuple(im) if complex_field else None, scale=scale)


def reconstruct(f: ExactFactors) -> tuple[np.ndarray, np.ndarray | None]:
    """sum_r U[:,r] (x) V[:,r] (x) W[:,r] in exact int64 arithmetic (scaled by scale**3)."""
    (ur, vr, wr), rank = f.re, f.rank
    shape = (ur.shape[0], vr.shape[0], wr.shape[0])
    if f.im is None:
        uv = (ur[:, None, :] * vr[None, :, :]).reshape(-1, rank)
        return (uv @ wr.T).reshape(shape), None
    ui, vi, wi = f.im
    uv_re = (ur[:, None, :] * vr[None, :, :] - ui[:, None, :] * vi[None, :, :]).reshape(-1, rank)
    uv_im = (ur[:, None, :] * vi[None, :, :] + ui[:, None, :] * vr[None, :, :]).reshape(-1, rank)
    t_re = uv_re @ wr.T - uv_im @ wi.T
    t_im = uv_re @ wi.T + uv_im @ wr.T
    return t_re.reshape(shape), t_im.reshape(shape)


def check(f: ExactFactors, n: int, m: int, p: int) -> Check:
    target = matmul_tensor(n, m, p) * f.scale ** 3
    t_re, t_im = reconstruct(f)
    wrong = t_re != target
    abs_diff = np.abs(t_re - target)
    if t_im is not None:
        wrong |= t_im != 0
        abs_diff = abs_diff + np.abs(t_im)
    errors = int(np.count_nonzero(wrong))
    return Check(exact=errors == 0, wrong_entries=errors,
                 abs_error=float(abs_diff.sum()) / f.scale ** 3)


def sparsity(f: ExactFactors) -> float:
    """Fraction of zero entries over U, V and W."""
    parts = f.re if f.im is None else tuple(r | i for r, i in zip(f.re, f.im))
    total = sum(x.size for x in parts)
    zeros = sum(int(np.count_nonzero(x == 0)) for x in parts)
    return zeros / total if total else 0.0
