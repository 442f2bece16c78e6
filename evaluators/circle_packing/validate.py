"""Trusted validation of one packing, with zero tolerance.

Everything here runs outside the sandbox on plain data and never trusts the candidate: shapes are
exact, values must be finite float64-representable reals, and the geometric constraints are
evaluated in IEEE float64 exactly as written below, with no epsilon:

    x_i - r_i >= 0,  x_i + r_i <= 1,  y_i - r_i >= 0,  y_i + r_i <= 1,  r_i >= 0
    sqrt((x_i - x_j)**2 + (y_i - y_j)**2) >= r_i + r_j        for every i < j

A packing that touches (equality) is valid; one that is outside or overlapping by 1e-12 is not.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

_NUMERIC_KINDS = "iuf"  # signed/unsigned integers and floats; no bool, complex, object or str


class PackingError(ValueError):
    """The output is not a valid packing; the message is a short reason."""


@dataclass(frozen=True)
class Packing:
    centers: np.ndarray  # (n, 2) float64
    radii: np.ndarray    # (n,) float64


def _as_real_array(value: Any, what: str) -> np.ndarray:
    if isinstance(value, (str, bytes, dict, set)) or value is None:
        raise PackingError(f"{what} must be an array of numbers, got {type(value).__name__}")
    try:
        arr = np.asarray(value)
    except Exception as exc:  # ragged lists, objects whose __array__ raises, ...
        raise PackingError(f"{what} is not a rectangular array of numbers ({type(exc).__name__})")
    if arr.dtype.kind not in _NUMERIC_KINDS:
        raise PackingError(f"{what} must hold real numbers, got dtype {arr.dtype}")
    try:
        out = arr.astype(np.float64)
    except Exception:
        raise PackingError(f"{what} could not be converted to float64")
    if not np.all(np.isfinite(out)):
        raise PackingError(f"{what} contains NaN or infinite values")
    return out


def parse_packing(output: Any, n: int) -> Packing:
    """Turn a candidate's return value into a Packing, or raise PackingError."""
    if not isinstance(output, (tuple, list)) or len(output) != 2:
        kind = type(output).__name__
        size = f" of length {len(output)}" if isinstance(output, (tuple, list)) else ""
        raise PackingError(f"pack_circles must return (centers, radii), got {kind}{size}")
    centers = _as_real_array(output[0], "centers")
    radii = _as_real_array(output[1], "radii")
    if centers.shape != (n, 2):
        raise PackingError(f"centers must have shape ({n}, 2), got {centers.shape}")
    if radii.shape != (n,):
        raise PackingError(f"radii must have shape ({n},), got {radii.shape}")
    return Packing(centers=centers, radii=radii)


def check_packing(packing: Packing) -> None:
    """Raise PackingError with the first violated constraint (zero tolerance)."""
    c, r = packing.centers, packing.radii
    x, y = c[:, 0], c[:, 1]
    neg = np.flatnonzero(r < 0)
    if neg.size:
        i = int(neg[0])
        raise PackingError(f"circle {i} has negative radius {float(r[i])!r}")
    for label, bad in (("left", x - r < 0), ("right", x + r > 1), ("bottom", y - r < 0),
                       ("top", y + r > 1)):
        idx = np.flatnonzero(bad)
        if idx.size:
            i = int(idx[0])
            raise PackingError(f"circle {i} (center {float(x[i])!r}, {float(y[i])!r}, "
                               f"radius {float(r[i])!r}) "
                               f"crosses the {label} side of the unit square")
    n = len(r)
    if n < 2:
        return
    i_idx, j_idx = np.triu_indices(n, k=1)
    dx = x[i_idx] - x[j_idx]
    dy = y[i_idx] - y[j_idx]
    dist = np.sqrt(dx * dx + dy * dy)
    overlap = np.flatnonzero(dist < r[i_idx] + r[j_idx])
    if overlap.size:
        k = int(overlap[0])
        i, j = int(i_idx[k]), int(j_idx[k])
        gap = float(dist[k] - (r[i] + r[j]))
        raise PackingError(f"circles {i} and {j} overlap (center distance minus radii sum = {gap:.3g})")
