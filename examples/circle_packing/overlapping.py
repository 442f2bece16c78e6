"""Invalid on purpose: circles 0 and 1 overlap by 1e-12 (everything else is fine)."""
import numpy as np


def pack_circles(n):
    centers = np.zeros((n, 2))
    radii = np.zeros(n)
    # Two circles of radius 0.25 whose centers are 0.5 - 1e-12 apart.
    centers[0] = (0.25, 0.25)
    centers[1] = (0.75 - 1e-12, 0.25)
    radii[0] = radii[1] = 0.25
    # The rest: zero-radius circles in the top half (valid on their own).
    for i in range(2, n):
        centers[i] = (0.5, 0.75)
    return centers, radii
