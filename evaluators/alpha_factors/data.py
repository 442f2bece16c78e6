"""Market panels of the alpha_factors task (trusted side).

`sp500_panel()`: real daily closes of 20 US large caps, 1990-01-02 .. 2022-12-28 (8313 dates),
shipped inside skfolio (`skfolio.datasets.load_sp500_dataset`, read from the installed package,
no network). Closes only: this data set has no volume, open, high or low.

`synthetic_market(...)`: a generated market with a planted signal of known strength: the next
day's return of asset i is `vol * (signal_ic * g[t, i] + sqrt(1 - signal_ic**2) * eps)` plus a
market-wide move, where the hidden feature `g` is published as `volume = 1e6 * exp(0.5 * g)`.
So the factor `log(volume)` has an expected cross-sectional IC of `signal_ic` (Pearson on log
returns; rank IC is the same in expectation up to the small exp() distortion).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np


@dataclass(frozen=True)
class Market:
    dates: tuple[str, ...]              # ISO dates (or "d0000" for synthetic days)
    assets: tuple[str, ...]
    fields: dict[str, np.ndarray]       # name -> dates x assets float64


@lru_cache(maxsize=1)
def sp500_panel() -> Market:
    try:
        from skfolio.datasets import load_sp500_dataset
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError("the sp500 panel needs the skfolio package (pip install skfolio); "
                           "use --param data=synthetic without it") from exc
    frame = load_sp500_dataset()
    close = frame.to_numpy(dtype=np.float64)
    close.setflags(write=False)
    return Market(tuple(d.strftime("%Y-%m-%d") for d in frame.index), tuple(map(str, frame.columns)),
                  {"close": close})


@lru_cache(maxsize=8)
def synthetic_market(n_dates: int = 1500, n_assets: int = 50, *, signal_ic: float = 0.05,
                     seed: int = 0, vol: float = 0.02) -> Market:
    if not -1.0 < signal_ic < 1.0:
        raise ValueError("signal_ic must be in (-1, 1)")
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((n_dates, n_assets))
    eps = rng.standard_normal((n_dates, n_assets))
    market = 0.5 * vol * rng.standard_normal(n_dates)
    # log return from close[t] to close[t+1], driven by the feature known at t
    log_ret = vol * (signal_ic * g + np.sqrt(1.0 - signal_ic ** 2) * eps) + market[:, None]
    log_close = np.log(100.0) + np.vstack([np.zeros((1, n_assets)), np.cumsum(log_ret[:-1], axis=0)])
    close = np.exp(log_close)
    open_ = close * np.exp(0.002 * rng.standard_normal((n_dates, n_assets)))
    open_[1:] = close[:-1] * np.exp(0.002 * rng.standard_normal((n_dates - 1, n_assets)))
    high = np.maximum(open_, close) * np.exp(np.abs(0.005 * rng.standard_normal((n_dates, n_assets))))
    low = np.minimum(open_, close) * np.exp(-np.abs(0.005 * rng.standard_normal((n_dates, n_assets))))
    volume = 1e6 * np.exp(0.5 * g)
    fields = {"close": close, "open": open_, "high": high, "low": low, "volume": volume}
    for arr in fields.values():
        arr.setflags(write=False)
    return Market(tuple(f"d{i:05d}" for i in range(n_dates)), tuple(f"S{i:03d}" for i in range(n_assets)),
                  fields)


def forward_returns(close: np.ndarray, horizon: int) -> np.ndarray:
    """Simple return from the close of date t to the close of date t + horizon (NaN at the end).
    Trusted side only: these never enter the sandbox."""
    out = np.full_like(close, np.nan)
    with np.errstate(all="ignore"):
        out[:-horizon] = close[horizon:] / close[:-horizon] - 1.0
    return out
