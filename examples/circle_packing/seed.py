"""Seed program for circle_packing: a staggered grid, radii grown greedily, then shrunk.

pack_circles(n) returns (centers, radii): centers is n x 2, radii has length n. Every circle must
lie inside the unit square and no two may overlap; the score is the sum of the radii.
The construction is deliberately simple (far from the best known packings): evolve the
placement of the centers and the way the radii are chosen.
"""
import math

import numpy as np

# EVOLVE-BLOCK-START


def place_centers(n):
    """Centers on a staggered grid of rows inside a margin."""
    cols = max(1, int(math.ceil(math.sqrt(n) * 1.0)))
    rows = max(1, int(math.ceil(n / cols)))
    margin = 0.1
    stagger = 0.3
    x_stretch = 1.0
    y_stretch = 1.0
    centers = np.zeros((n, 2))
    for idx in range(n):
        row, col = divmod(idx, cols)
        shift = stagger if row % 2 == 1 else 0.0
        x = margin + (1.0 - 2.0 * margin) * x_stretch * (col + 0.5 + shift) / (cols + stagger)
        y = margin + (1.0 - 2.0 * margin) * y_stretch * (row + 0.5) / rows
        centers[idx, 0] = x
        centers[idx, 1] = y
    return np.clip(centers, 0.0, 1.0)


def compute_radii(centers):
    """Radii that keep every circle inside the square and apart from the others."""
    n = len(centers)
    x = centers[:, 0]
    y = centers[:, 1]
    walls = np.minimum(np.minimum(x, 1.0 - x), np.minimum(y, 1.0 - y))
    dist = np.sqrt(((centers[:, None, :] - centers[None, :, :]) ** 2).sum(axis=-1))
    np.fill_diagonal(dist, np.inf)
    # Start from an equal share of the nearest-neighbour gap, then let each circle grow
    # into whatever room its neighbours leave.
    radii = np.minimum(walls, 0.5 * dist.min(axis=1)) * 0.8
    for _ in range(4):
        for i in range(n):
            room = dist[i] - radii
            room[i] = np.inf
            radii[i] = max(0.0, min(walls[i], room.min()))
    return radii * 0.999


# EVOLVE-BLOCK-END


def pack_circles(n):
    centers = place_centers(n)
    radii = compute_radii(centers)
    return centers, radii
