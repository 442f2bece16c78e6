"""Plain stochastic gradient descent: the simplest optimizer the harness can run."""
import numpy as np


def init(param):
    return None


def update(param, grad, state, t, lr):
    return param - lr * grad, state
