"""Driver of the alpha_factors task. Trusted code that runs INSIDE the sandbox (numpy only).

Each input is {"panel": {field: dates x assets nested list}, "checks": [[start, end], ...]}.
The factor is computed once on the full panel FIRST (so the candidate cannot know the check
dates yet), then again on the history truncated after each check row `end`; rows start..end of
every truncated run come back beside the full factor. The trusted scorer compares them with the
full run: any difference means the factor used data from after the cut (lookahead). The trusted
side chooses the ranges so that together they cover every row.
Each call gets fresh copies of the arrays, and results are copied at once, so a candidate can
neither change the data of a later call nor edit a result after returning it.
"""
from __future__ import annotations

import numpy as np


def _call(alpha, fields, n_rows):
    panel = {name: values[:n_rows].copy() for name, values in fields.items()}
    n_assets = fields["close"].shape[1]
    out = alpha(panel)
    arr = np.array(out, dtype=np.float64, copy=True)
    if arr.shape != (n_rows, n_assets):
        raise ValueError(f"alpha returned shape {arr.shape}, expected (dates, assets) = {(n_rows, n_assets)}")
    return arr


def drive(module, inputs, seed):
    alpha = getattr(module, "alpha", None)
    if not callable(alpha):
        raise AttributeError("the program must define alpha(panel)")
    outputs = []
    for spec in inputs:
        fields = {name: np.array(values, dtype=np.float64) for name, values in spec["panel"].items()}
        n_dates = fields["close"].shape[0]
        full = _call(alpha, fields, n_dates)
        checks = []
        for start, end in spec.get("checks", []):
            part = _call(alpha, fields, int(end) + 1)
            checks.append(part[int(start):].copy())
        outputs.append({"factor": full, "checks": checks})
    return outputs
