"""Invalid on purpose: one radius is NaN (NaN compares False, so naive checks would pass it)."""
import numpy as np


def pack_circles(n):
    side = int(np.ceil(np.sqrt(n)))
    idx = np.arange(n)
    centers = np.stack([(idx % side + 0.5) / side, (idx // side + 0.5) / side], axis=1)
    radii = np.full(n, 0.5 / side)
    radii[0] = float("nan")
    return centers, radii
