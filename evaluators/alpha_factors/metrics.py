"""Cross-sectional factor metrics (trusted side, plain numpy/scipy on dates x assets arrays).

IC on date t is the correlation, across the assets where both are finite, between the factor at
t and the forward return from t; rank IC uses ranks instead. Dates with fewer than `min_assets`
usable assets (or a constant factor) have no IC and count as 0 in the period means, so a factor
that is mostly NaN cannot score well on the few dates it chooses.
"""
from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def _masked(f: np.ndarray, r: np.ndarray, min_assets: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mask = np.isfinite(f) & np.isfinite(r)
    rows_ok = mask.sum(axis=1) >= min_assets
    mask &= rows_ok[:, None]
    return np.where(mask, f, np.nan), np.where(mask, r, np.nan), rows_ok


def row_corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation per row over entries finite in both; NaN where undefined."""
    mask = np.isfinite(a) & np.isfinite(b)
    n = mask.sum(axis=1)
    a0, b0 = np.where(mask, a, 0.0), np.where(mask, b, 0.0)
    with np.errstate(all="ignore"):
        am = a0.sum(axis=1) / n
        bm = b0.sum(axis=1) / n
        da = np.where(mask, a0 - am[:, None], 0.0)
        db = np.where(mask, b0 - bm[:, None], 0.0)
        num = (da * db).sum(axis=1)
        den = np.sqrt((da * da).sum(axis=1) * (db * db).sum(axis=1))
        out = num / den
    out[(n < 2) | ~(den > 1e-300)] = np.nan
    return out


def rank_rows(a: np.ndarray, method: str = "average") -> np.ndarray:
    return rankdata(a, method=method, axis=1, nan_policy="omit")


def daily_ic(f: np.ndarray, r: np.ndarray, min_assets: int) -> tuple[np.ndarray, np.ndarray]:
    fm, rm, _ = _masked(f, r, min_assets)
    return row_corr(fm, rm), row_corr(rank_rows(fm), rank_rows(rm))


def long_short(f: np.ndarray, r: np.ndarray, min_assets: int, quantile: float) -> tuple[np.ndarray, np.ndarray]:
    """Daily return of an equal-weight top-minus-bottom quantile portfolio and its weights
    (long leg sums to +1, short leg to -1). Dates without a portfolio return NaN, weight 0."""
    fm, rm, rows_ok = _masked(f, r, min_assets)
    n = np.isfinite(fm).sum(axis=1)
    k = np.maximum(1, np.floor(quantile * n)).astype(int)
    rank = rank_rows(fm, method="ordinal")  # 1..n among usable assets, NaN elsewhere
    with np.errstate(invalid="ignore"):
        longs = rank > (n - k)[:, None]
        shorts = rank <= k[:, None]
    w = (longs.astype(float) - shorts.astype(float)) / k[:, None]
    w[~rows_ok] = 0.0
    ret = np.where(rows_ok, (w * np.nan_to_num(rm)).sum(axis=1), np.nan)
    return ret, w


def period_metrics(f: np.ndarray, r: np.ndarray, *, min_assets: int, quantile: float,
                   horizon: int) -> dict[str, float]:
    n_dates = len(f)
    ic, ric = daily_ic(f, r, min_assets)
    defined = np.isfinite(ic)
    ls, w = long_short(f, r, min_assets, quantile)
    ls_ok = ls[np.isfinite(ls)]
    per_year = 252.0 / horizon
    ic_def = ic[defined]
    out = {
        "ic": float(np.nansum(ic) / n_dates) if n_dates else 0.0,
        "rank_ic": float(np.nansum(ric) / n_dates) if n_dates else 0.0,
        "icir": float(ic_def.mean() / ic_def.std()) if len(ic_def) > 1 and ic_def.std() > 0 else 0.0,
        "coverage": float(defined.mean()) if n_dates else 0.0,
        "ls_return": float(ls_ok.mean() * per_year) if len(ls_ok) else 0.0,
        "ls_sharpe": (float(ls_ok.mean() / ls_ok.std() * np.sqrt(per_year))
                      if len(ls_ok) > 1 and ls_ok.std() > 0 else 0.0),
        "turnover": float(0.25 * np.abs(np.diff(w, axis=0)).sum(axis=1).mean()) if n_dates > 1 else 0.0,
    }
    return out


def mean_rank_corr(a: np.ndarray, b: np.ndarray, min_assets: int) -> float:
    """Average over dates of the cross-sectional rank correlation of two factors (0 if never defined)."""
    am, bm, _ = _masked(a, b, min_assets)
    c = row_corr(rank_rows(am), rank_rows(bm))
    return float(np.nanmean(c)) if np.isfinite(c).any() else 0.0


def momentum(close: np.ndarray, lookback: int) -> np.ndarray:
    out = np.full_like(close, np.nan)
    with np.errstate(all="ignore"):
        out[lookback:] = close[lookback:] / close[:-lookback] - 1.0
    return out


def reference_factors(close: np.ndarray) -> dict[str, np.ndarray]:
    """Fixed reference set for the behaviour features: 20-day momentum and 5-day reversal."""
    return {"momentum": momentum(close, 20), "reversal": -momentum(close, 5)}
