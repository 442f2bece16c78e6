"""20-day price momentum: the return over the last 20 trading days (Jegadeesh & Titman, 1993,
use months; this is the short daily version)."""
import numpy as np

LOOKBACK = 20


def alpha(panel):
    close = panel["close"]
    factor = np.full(close.shape, np.nan)
    factor[LOOKBACK:] = close[LOOKBACK:] / close[:-LOOKBACK] - 1.0
    return factor
