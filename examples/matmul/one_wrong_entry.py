"""Invalid on purpose: Strassen's decomposition with a single factor entry changed (W[0, 3] = 0)."""
import numpy as np

PRODUCTS = [
    ((1, 0, 0, 1), (1, 0, 0, 1), (1, 0, 0, 1)),
    ((0, 0, 1, 1), (1, 0, 0, 0), (0, 0, 1, -1)),
    ((1, 0, 0, 0), (0, 1, 0, -1), (0, 1, 0, 1)),
    ((0, 0, 0, 1), (-1, 0, 1, 0), (1, 0, 1, 0)),
    ((1, 1, 0, 0), (0, 0, 0, 1), (-1, 1, 0, 0)),
    ((-1, 0, 1, 0), (1, 1, 0, 0), (0, 0, 0, 1)),
    ((0, 1, 0, -1), (0, 0, 1, 1), (1, 0, 0, 0)),
]


def decompose(n, m, p):
    u = np.array([a for a, _, _ in PRODUCTS]).T
    v = np.array([b for _, b, _ in PRODUCTS]).T
    w = np.array([c for _, _, c in PRODUCTS]).T[[0, 2, 1, 3]]
    w[0, 3] = 0  # M4 no longer contributes to C11: the reconstruction is wrong in 2 entries
    return u, v, w
