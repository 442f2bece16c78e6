"""Invalid on purpose: a grid packing whose first circle sticks out of the square by 1e-12."""
import numpy as np


def pack_circles(n):
    side = int(np.ceil(np.sqrt(n)))
    idx = np.arange(n)
    centers = np.stack([(idx % side + 0.5) / side, (idx // side + 0.5) / side], axis=1)
    radii = np.full(n, 0.5 / side) * 0.99
    centers[0, 0] = radii[0] - 1e-12  # x - r = -1e-12 < 0
    return centers, radii
