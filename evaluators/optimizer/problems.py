"""Proxy problems of the optimizer task (trusted side): data splits, sandbox inputs, losses.

The training split of each data set goes into the sandbox inside the input dict; the held-out
split stays here and is only used by `evaluate_params`. Every loss the score uses is computed
here from the parameters the sandbox returned, with the harness's own model code.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

import evoforge.evaluators.optimizer.harness as harness

PROBLEMS = ("rosenbrock", "quadratic", "logistic", "mlp")
LR_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0)

# Per-problem floor added to both losses before taking the ratio to Adam's loss: below it,
# differences are numerical noise (Rosenbrock and the quadratic have minimum 0).
LOSS_FLOOR = {"rosenbrock": 1e-6, "quadratic": 1e-6, "logistic": 1e-3, "mlp": 1e-3}


@dataclass(frozen=True)
class Split:
    x_train: np.ndarray  # sent into the sandbox
    y_train: np.ndarray
    x_val: np.ndarray    # trusted: chooses the learning rate
    y_val: np.ndarray
    x_test: np.ndarray   # trusted: scored
    y_test: np.ndarray


@lru_cache(maxsize=4)
def dataset(name: str, seed: int = 0, val_frac: float = 0.2, test_frac: float = 0.2) -> Split:
    """breast_cancer or digits from scikit-learn (bundled files, no network), standardised
    with training statistics, split with a fixed seed."""
    from sklearn.datasets import load_breast_cancer, load_digits

    data = load_breast_cancer() if name == "logistic" else load_digits()
    x = np.asarray(data.data, dtype=float)
    y = np.asarray(data.target)
    perm = np.random.default_rng(seed).permutation(len(y))
    n_test, n_val = int(round(test_frac * len(y))), int(round(val_frac * len(y)))
    test, val, train = perm[:n_test], perm[n_test:n_test + n_val], perm[n_test + n_val:]
    mu, sd = x[train].mean(axis=0), x[train].std(axis=0)
    sd[sd == 0] = 1.0
    x = (x - mu) / sd
    return Split(x[train], y[train], x[val], y[val], x[test], y[test])


def problem_specs(steps_scale: float = 1.0, lrs: tuple[float, ...] = LR_GRID) -> list[dict[str, Any]]:
    """The sandbox inputs of the full suite: one dict per problem, training data only."""
    def n(steps: int) -> int:
        return max(1, int(round(steps * steps_scale)))

    lr_list = [float(v) for v in lrs]
    cancer, digits = dataset("logistic"), dataset("mlp")
    return [
        {"problem": "rosenbrock", "lrs": lr_list, "steps": n(500), "seed": 0,
         "x0": [-1.2, 1.0, -1.2, 1.0, -1.2, 1.0]},
        {"problem": "quadratic", "lrs": lr_list, "steps": n(300), "seed": 1, "dim": 40, "cond": 1e3},
        {"problem": "logistic", "lrs": lr_list, "steps": n(80), "seed": 2, "batch_size": 32,
         "x": np.round(cancer.x_train, 6).tolist(), "y": cancer.y_train.astype(int).tolist()},
        {"problem": "mlp", "lrs": lr_list, "steps": n(120), "seed": 3, "batch_size": 64,
         "hidden": 32, "classes": 10,
         "x": np.round(digits.x_train, 6).tolist(), "y": digits.y_train.astype(int).tolist()},
    ]


def probe_specs() -> list[dict[str, Any]]:
    """A tiny deterministic problem: a few steps on a small quadratic at two learning rates."""
    return [{"problem": "quadratic", "lrs": [0.01, 0.1], "steps": 12, "seed": 7, "dim": 5, "cond": 10.0}]


def evaluate_params(spec: dict[str, Any], params: list[np.ndarray]) -> dict[str, float]:
    """Trusted losses of one trained parameter set: `val_loss` chooses the learning rate,
    `loss` (held-out test split) is scored, `accuracy` on the test split where it applies.
    Rosenbrock and the quadratic have no data: all three losses are the objective itself."""
    kind = spec["problem"]
    with np.errstate(all="ignore"):
        if kind == "rosenbrock":
            loss = harness.rosenbrock_loss_grad(params)[0]
            return {"train_loss": loss, "val_loss": loss, "loss": loss}
        if kind == "quadratic":
            a_mat, _ = harness.quadratic_matrix(int(spec["dim"]), float(spec["cond"]), int(spec["seed"]))
            loss = harness.quadratic_loss_grad(params, a_mat)[0]
            return {"train_loss": loss, "val_loss": loss, "loss": loss}
        s = dataset(kind)
        if kind == "logistic":
            def lossf(x, y):
                return harness.logistic_loss_grad(params, x, y.astype(float))[0]
            pred = (s.x_test @ params[0] + params[1][0]) > 0
        else:
            def lossf(x, y):
                return harness.mlp_loss_grad(params, x, y)[0]
            pred = harness.mlp_logits(params, s.x_test).argmax(axis=1)
        return {"train_loss": lossf(s.x_train, s.y_train), "val_loss": lossf(s.x_val, s.y_val),
                "loss": lossf(s.x_test, s.y_test), "accuracy": float(np.mean(pred == s.y_test))}


def param_shapes(spec: dict[str, Any]) -> list[tuple[int, ...]]:
    kind = spec["problem"]
    if kind == "rosenbrock":
        return [(len(spec["x0"]),)]
    if kind == "quadratic":
        return [(int(spec["dim"]),)]
    n_in = len(spec["x"][0])
    if kind == "logistic":
        return [(n_in,), (1,)]
    h, c = int(spec["hidden"]), int(spec["classes"])
    return [(n_in, h), (h,), (h, c), (c,)]


def finite(x: float) -> bool:
    return isinstance(x, float) and math.isfinite(x)
