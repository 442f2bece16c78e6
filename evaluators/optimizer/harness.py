"""Training harness for the optimizer task. Trusted code that runs INSIDE the sandbox.

The task sends this file's source as the sandbox `driver`; it is exec'd next to the candidate
module and `drive(module, inputs, seed)` is called. It needs only numpy and must stay
self-contained (no imports from evaluators/). The trusted side also imports it as a module to
compute losses with the very same model code (evaluators/optimizer/task.py).

Each input is one proxy problem trained over a learning-rate grid:

    {"problem": "rosenbrock" | "quadratic" | "logistic" | "mlp", "lrs": [...], "steps": int,
     "seed": int, ...problem data (training split only)...}

and the output is {"problem", "lrs", "params": [list of arrays per lr, or None if diverged],
"curve": [[train loss every few steps] per lr], "diverged_at": [step or 0 per lr]}.
Losses in `curve` are informational only: the trusted scorer recomputes every loss it uses.
"""
from __future__ import annotations

import math

import numpy as np

CURVE_POINTS = 10


# ----------------------------------------------------------------------------- problems
def rosenbrock_loss_grad(params, batch=None):
    x = params[0]
    a, b = x[:-1], x[1:]
    loss = float(np.sum(100.0 * (b - a * a) ** 2 + (1.0 - a) ** 2))
    g = np.zeros_like(x)
    g[:-1] += -400.0 * a * (b - a * a) - 2.0 * (1.0 - a)
    g[1:] += 200.0 * (b - a * a)
    return loss, [g]


def quadratic_matrix(dim, cond, seed):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    eig = np.logspace(0.0, math.log10(cond), dim)
    return (q * eig) @ q.T, rng.standard_normal(dim)


def quadratic_loss_grad(params, a_mat):
    x = params[0]
    ax = a_mat @ x
    return 0.5 * float(x @ ax), [ax]


def logistic_loss_grad(params, x, y):
    w, b = params
    z = x @ w + b[0]
    # log(1 + exp(z)) - y z, computed stably
    loss = float(np.mean(np.logaddexp(0.0, z) - y * z))
    p = 0.5 * (1.0 + np.tanh(0.5 * z))
    d = (p - y) / len(y)
    return loss, [x.T @ d, np.array([d.sum()])]


def mlp_init(n_in, n_hidden, n_out, seed):
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((n_in, n_hidden)) * math.sqrt(1.0 / n_in)
    w2 = rng.standard_normal((n_hidden, n_out)) * math.sqrt(1.0 / n_hidden)
    return [w1, np.zeros(n_hidden), w2, np.zeros(n_out)]


def mlp_logits(params, x):
    w1, b1, w2, b2 = params
    return np.tanh(x @ w1 + b1) @ w2 + b2


def mlp_loss_grad(params, x, y):
    w1, b1, w2, b2 = params
    h = np.tanh(x @ w1 + b1)
    logits = h @ w2 + b2
    logits = logits - logits.max(axis=1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    n = len(y)
    loss = float(-logp[np.arange(n), y].mean())
    d = np.exp(logp)
    d[np.arange(n), y] -= 1.0
    d /= n
    gw2 = h.T @ d
    gb2 = d.sum(axis=0)
    dh = (d @ w2.T) * (1.0 - h * h)
    return loss, [x.T @ dh, dh.sum(axis=0), gw2, gb2]


def build_problem(spec):
    """Returns (initial params, loss_grad(params, step) -> (loss, grads))."""
    kind = spec["problem"]
    if kind == "rosenbrock":
        x0 = np.array(spec["x0"], dtype=float)
        return [x0], lambda p, t: rosenbrock_loss_grad(p)
    if kind == "quadratic":
        a_mat, x0 = quadratic_matrix(int(spec["dim"]), float(spec["cond"]), int(spec["seed"]))
        return [x0], lambda p, t: quadratic_loss_grad(p, a_mat)
    x = np.array(spec["x"], dtype=float)
    y = np.array(spec["y"], dtype=int if kind == "mlp" else float)
    batches = _batch_schedule(len(y), int(spec["batch_size"]), int(spec["steps"]), int(spec["seed"]))
    if kind == "logistic":
        p0 = [np.zeros(x.shape[1]), np.zeros(1)]
        return p0, lambda p, t: logistic_loss_grad(p, x[batches[t - 1]], y[batches[t - 1]])
    if kind == "mlp":
        p0 = mlp_init(x.shape[1], int(spec["hidden"]), int(spec["classes"]), int(spec["seed"]))
        return p0, lambda p, t: mlp_loss_grad(p, x[batches[t - 1]], y[batches[t - 1]])
    raise ValueError(f"unknown problem {kind!r}")


def _batch_schedule(n, batch_size, steps, seed):
    """Minibatch indices for every step: shuffled epochs, fixed by the problem's seed."""
    rng = np.random.default_rng(seed + 1)
    out = []
    while len(out) < steps:
        perm = rng.permutation(n)
        out.extend(perm[i:i + batch_size] for i in range(0, n - batch_size + 1, batch_size))
    return out[:steps]


def lr_at(base_lr, t, steps):
    """Cosine decay from base_lr (t=1) towards 0 (t=steps+1)."""
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * (t - 1) / steps))


# ----------------------------------------------------------------------------- training
def train(init, update, spec, base_lr):
    params, loss_grad = build_problem(spec)
    steps = int(spec["steps"])
    states = [init(p.copy()) for p in params]
    every = max(1, steps // CURVE_POINTS)
    curve = []
    for t in range(1, steps + 1):
        loss, grads = loss_grad(params, t)
        if not math.isfinite(loss):
            return None, curve, t
        if t % every == 1 or every == 1:
            curve.append(loss)
        lr = lr_at(base_lr, t, steps)
        for i, (p, g) in enumerate(zip(params, grads)):
            new = update(p.copy(), g, states[i], t, lr)
            if not isinstance(new, tuple) or len(new) != 2:
                raise TypeError("update must return a tuple (new_param, new_state)")
            new_p = np.asarray(new[0], dtype=np.float64)
            if new_p.shape != p.shape:
                raise ValueError(f"update returned shape {new_p.shape} for a parameter of shape {p.shape}")
            if not np.all(np.isfinite(new_p)):
                return None, curve, t
            params[i] = new_p.copy()
            states[i] = new[1]
    return params, curve, 0


def drive(module, inputs, seed):
    init = getattr(module, "init", None)
    update = getattr(module, "update", None)
    if not callable(init) or not callable(update):
        raise AttributeError("the program must define init(param) and update(param, grad, state, t, lr)")
    outputs = []
    with np.errstate(all="ignore"):
        for spec in inputs:
            row = {"problem": spec["problem"], "lrs": list(spec["lrs"]),
                   "params": [], "curve": [], "diverged_at": []}
            for lr in spec["lrs"]:
                params, curve, diverged_at = train(init, update, spec, float(lr))
                row["params"].append(params)
                row["curve"].append(curve)
                row["diverged_at"].append(diverged_at)
            outputs.append(row)
    return outputs
