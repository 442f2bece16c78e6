"""The schoolbook algorithm for any <n,m,p>: one product A[i,j] * B[j,k] per (i, j, k), rank n*m*p."""
import numpy as np


def decompose(n, m, p):
    rank = n * m * p
    u = np.zeros((n * m, rank), dtype=np.int64)
    v = np.zeros((m * p, rank), dtype=np.int64)
    w = np.zeros((p * n, rank), dtype=np.int64)
    r = 0
    for i in range(n):
        for j in range(m):
            for k in range(p):
                u[i * m + j, r] = 1
                v[j * p + k, r] = 1
                w[k * n + i, r] = 1
                r += 1
    return u, v, w
