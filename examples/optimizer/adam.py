"""Adam (Kingma & Ba, 2015, arXiv:1412.6980) with the paper's default constants."""
import numpy as np

BETA1, BETA2, EPS = 0.9, 0.999, 1e-8


def init(param):
    return (np.zeros_like(param), np.zeros_like(param))


def update(param, grad, state, t, lr):
    m, v = state
    m = BETA1 * m + (1.0 - BETA1) * grad
    v = BETA2 * v + (1.0 - BETA2) * grad * grad
    m_hat = m / (1.0 - BETA1 ** t)
    v_hat = v / (1.0 - BETA2 ** t)
    return param - lr * m_hat / (np.sqrt(v_hat) + EPS), (m, v)
