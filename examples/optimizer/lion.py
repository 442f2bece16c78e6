"""Lion (Chen et al., 2023, "Symbolic Discovery of Optimization Algorithms", arXiv:2302.06675).

Sign of an interpolation between momentum and gradient; momentum tracks the gradient more
slowly. The paper's defaults: beta1 = 0.9, beta2 = 0.99, no weight decay here.
"""
import numpy as np

BETA1, BETA2 = 0.9, 0.99


def init(param):
    return np.zeros_like(param)


def update(param, grad, state, t, lr):
    m = state
    direction = np.sign(BETA1 * m + (1.0 - BETA1) * grad)
    m = BETA2 * m + (1.0 - BETA2) * grad
    return param - lr * direction, m
