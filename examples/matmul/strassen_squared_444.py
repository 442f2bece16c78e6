"""<4,4,4> in 49 multiplications: Strassen's algorithm applied to 2x2 blocks of 2x2 blocks.

Built by code as the tensor (Kronecker) product of two Strassen decompositions, with the block
index i = i1*2 + i2 (and likewise for j, k) mapped onto the task's row conventions.
"""
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


def strassen():
    u = np.array([a for a, _, _ in PRODUCTS]).T
    v = np.array([b for _, b, _ in PRODUCTS]).T
    w = np.array([c for _, _, c in PRODUCTS]).T[[0, 2, 1, 3]]
    return u, v, w


def tensor_product(first, second, dims1, dims2):
    """Decomposition of <n1 n2, m1 m2, p1 p2> from decompositions of <n1,m1,p1> and <n2,m2,p2>."""
    (u1, v1, w1), (u2, v2, w2) = first, second
    (n1, m1, p1), (n2, m2, p2) = dims1, dims2
    n, m, p = n1 * n2, m1 * m2, p1 * p2
    r1, r2 = u1.shape[1], u2.shape[1]
    u = np.zeros((n * m, r1 * r2), dtype=np.int64)
    v = np.zeros((m * p, r1 * r2), dtype=np.int64)
    w = np.zeros((p * n, r1 * r2), dtype=np.int64)
    for i1 in range(n1):
        for i2 in range(n2):
            for j1 in range(m1):
                for j2 in range(m2):
                    row = (i1 * n2 + i2) * m + (j1 * m2 + j2)
                    u[row] = np.outer(u1[i1 * m1 + j1], u2[i2 * m2 + j2]).ravel()
    for j1 in range(m1):
        for j2 in range(m2):
            for k1 in range(p1):
                for k2 in range(p2):
                    row = (j1 * m2 + j2) * p + (k1 * p2 + k2)
                    v[row] = np.outer(v1[j1 * p1 + k1], v2[j2 * p2 + k2]).ravel()
    for k1 in range(p1):
        for k2 in range(p2):
            for i1 in range(n1):
                for i2 in range(n2):
                    row = (k1 * p2 + k2) * n + (i1 * n2 + i2)
                    w[row] = np.outer(w1[k1 * n1 + i1], w2[k2 * n2 + i2]).ravel()
    return u, v, w


def decompose(n, m, p):
    assert (n, m, p) == (4, 4, 4), "this construction is for 4x4 times 4x4"
    s = strassen()
    return tensor_product(s, s, (2, 2, 2), (2, 2, 2))
