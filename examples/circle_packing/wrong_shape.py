"""Invalid on purpose: returns one circle too few (centers (n-1) x 2, radii n-1)."""
import numpy as np


def pack_circles(n):
    side = int(np.ceil(np.sqrt(n)))
    idx = np.arange(n - 1)
    centers = np.stack([(idx % side + 0.5) / side, (idx // side + 0.5) / side], axis=1)
    radii = np.full(n - 1, 0.5 / side)
    return centers, radii
