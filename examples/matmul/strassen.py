"""Strassen's algorithm (1969): <2,2,2> in 7 multiplications, written in the task's convention.

U rows index A as i*m+j, V rows index B as j*p+k, W rows index C as k*n+i (C = A @ B).
"""
import numpy as np

# (coefficients of A11, A12, A21, A22), (of B11, B12, B21, B22), (contribution to C11, C12, C21, C22)
PRODUCTS = [
    ((1, 0, 0, 1), (1, 0, 0, 1), (1, 0, 0, 1)),     # M1 = (A11 + A22)(B11 + B22)
    ((0, 0, 1, 1), (1, 0, 0, 0), (0, 0, 1, -1)),    # M2 = (A21 + A22) B11
    ((1, 0, 0, 0), (0, 1, 0, -1), (0, 1, 0, 1)),    # M3 = A11 (B12 - B22)
    ((0, 0, 0, 1), (-1, 0, 1, 0), (1, 0, 1, 0)),    # M4 = A22 (B21 - B11)
    ((1, 1, 0, 0), (0, 0, 0, 1), (-1, 1, 0, 0)),    # M5 = (A11 + A12) B22
    ((-1, 0, 1, 0), (1, 1, 0, 0), (0, 0, 0, 1)),    # M6 = (A21 - A11)(B11 + B12)
    ((0, 1, 0, -1), (0, 0, 1, 1), (1, 0, 0, 0)),    # M7 = (A12 - A22)(B21 + B22)
]


def decompose(n, m, p):
    assert (n, m, p) == (2, 2, 2), "Strassen's algorithm is for 2x2 times 2x2"
    u = np.array([a for a, _, _ in PRODUCTS]).T            # row i*2+j  <-> A[i, j]
    v = np.array([b for _, b, _ in PRODUCTS]).T            # row j*2+k  <-> B[j, k]
    c = np.array([c for _, _, c in PRODUCTS]).T            # row i*2+k  <-> C[i, k]
    w = c[[0, 2, 1, 3]]                                    # reorder to row k*2+i
    return u, v, w
